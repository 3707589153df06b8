//! The crate's one error type. Every fallible public function returns
//! [`Result<T>`](crate::Result); variants name the boundary that failed so the
//! server can map them to a clear start-up line or an HTTP error.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Reading a model file or directory failed.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON file (config.json, tokenizer_config.json, ...) is malformed.
    #[error("parsing {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// The model files lack something we need, or hold a value we cannot use.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The model uses an architecture, tokenizer kind or device we do not support yet.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Building or running the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template does not compile or failed while rendering.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A caller passed an inconsistent batch, block table or cache geometry.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl Error {
    /// A short, bounded label for failure counters.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Candle(_) => "candle",
            Error::Io { .. } => "io",
            Error::Json { .. } => "json",
            Error::InvalidModel(_) => "invalid_model",
            Error::Unsupported(_) => "unsupported",
            Error::Tokenizer(_) => "tokenizer",
            Error::ChatTemplate(_) => "chat_template",
            Error::InvalidInput(_) => "invalid_input",
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
