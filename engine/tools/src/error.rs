//! The tools crate's one error type: each variant is one clear line for the CLI.

/// What a tool refuses or fails at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag value or flag combination cannot work.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// An input file (dataset, config.json, GGUF) cannot be read or parsed.
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    /// The server or metrics endpoint could not be reached or answered badly.
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    /// Writing results or charts failed.
    #[error("writing {path}: {message}")]
    Output { path: String, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;
