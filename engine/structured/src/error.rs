//! The crate's one error type.

/// Why a constraint cannot be compiled or run; the message is what a client reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request's schema, regex, choice list or grammar is not usable.
    #[error("{0}")]
    Invalid(String),
    /// The tokenizer cannot be turned into llguidance's byte trie.
    #[error("structured outputs are unavailable for this tokenizer: {0}")]
    Tokenizer(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
