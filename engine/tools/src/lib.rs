//! Candela's companion tools. Each is a subcommand of the `candela` binary and
//! works against any OpenAI-compatible server or vLLM-compatible `/metrics`:
//!
//! - [`bench`]: `candela bench serve`, vLLM's serving benchmark re-implemented
//!   (datasets, arrival process, client-side metrics, result block, JSON, charts).
//! - [`plan`]: `candela plan`, the KV-cache capacity formula (pool tokens,
//!   theoretical concurrency, recommended `--max-num-seqs`).
//! - [`doctor`]: `candela doctor`, the symptom -> cause table applied to metrics
//!   read over a window.
//!
//! No candle: GGUF headers are read with `candela-gguf`, and `bench` takes its
//! tokenizer from the caller through [`bench::Tokenize`] (the `candela` binary
//! passes the model crate's).

pub mod bench;
pub mod doctor;
pub mod error;
pub mod plan;

pub use error::Error;
