//! Where a model comes from: a local path, or a repository on the Hugging Face Hub.
//!
//! [`resolve`] turns `candela serve --model` (a [`ModelRef`]) into a local path the loader
//! reads: the path itself, or a snapshot directory / GGUF file in the hub's cache. The hub
//! client speaks the protocol of Hugging Face's own clients — repository info
//! (`/api/models/{repo}/revision/{rev}?blobs=true`), file downloads
//! (`/{repo}/resolve/{commit}/{file}` with `Range`), `X-Error-Code` on failures — and
//! writes the cache in their layout (`models--org--name/{blobs,snapshots,refs}`, locks in
//! `.locks/`), so Python tools and Candela share one cache.
//!
//! Downloads resume (`Range` from a `.incomplete` file, across retries and restarts), are
//! verified against the hub's metadata (size, and sha256 for LFS files / the git blob
//! sha1 for small ones) before they become blobs, log a progress line, and hold a file
//! lock (`flock`, as Python's `filelock`) so two pods sharing a cache volume download once.
//! `HF_HUB_OFFLINE=1` never touches the network; when the hub is unreachable a complete
//! cached snapshot is used with a warning.
//!
//! Modules: [`options`] (env and flags), [`cache`] (the layout, no network), [`select`]
//! (which files of a repository to fetch, pure), `api` (HTTP and error mapping),
//! `download` (one file), [`resolve`] (the whole flow). Why not the `hf-hub` crate:
//! 1.0 pulls ~290 crates through `hf-xet` and neither resumes nor verifies; 0.4 resumes but
//! does not verify and loses the hub's error codes (gated, revision not found).

mod api;
pub mod cache;
mod download;
mod error;
#[cfg(feature = "fake-hub")]
pub mod fake;
pub mod options;
mod resolve;
pub mod select;

pub use candela_contract::{HubRef, ModelRef};
pub use error::{Error, Result};
pub use options::HubOptions;
pub use resolve::{Request, Resolved, resolve};
