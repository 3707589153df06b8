//! Candela's server process: the engine loop, the OpenAI-compatible HTTP API and
//! the CLI around them. `main.rs` only parses flags and calls [`serve::run`].

pub mod api;
pub mod cli;
pub mod detokenizer;
pub mod drain;
pub mod engine;
pub mod error;
pub mod frontend;
pub mod grpc;
pub mod lora;
pub mod metrics;
pub mod profiler;
pub mod serve;
pub mod sidecar;

pub use error::{Error, Result};
