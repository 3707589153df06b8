//! Candela's companion tools. Each is a subcommand of the `candela` binary and
//! works against any OpenAI-compatible server or vLLM-compatible `/metrics`:
//!
//! - [`bench`]: `candela bench serve`, vLLM's serving benchmark re-implemented
//!   (datasets, arrival process, client-side metrics, result block, JSON, charts).
//! - [`plan`]: `candela plan`, the KV-cache capacity formula (pool tokens,
//!   theoretical concurrency, recommended `--max-num-seqs`).
//! - [`doctor`]: `candela doctor`, the symptom -> cause table applied to metrics
//!   read over a window.

pub mod bench;
pub mod doctor;
pub mod error;
pub mod plan;

pub use error::Error;
