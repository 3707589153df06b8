//! The core's one error type.

/// What the core refuses, each with the message a client should read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A sampling parameter is out of range.
    #[error("{0}")]
    InvalidParams(String),
    /// Prompt plus requested output does not fit the model's context.
    #[error(
        "This model's maximum context length is {max_model_len} tokens. However, you requested {requested} tokens ({prompt} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion."
    )]
    TooLong {
        max_model_len: usize,
        requested: usize,
        prompt: usize,
        max_tokens: usize,
    },
    /// The prompt has no tokens.
    #[error("the prompt must contain at least one token")]
    EmptyPrompt,
    /// The bounded waiting queue is full; retry later.
    #[error("the server is overloaded: {waiting} requests are already waiting")]
    QueueFull { waiting: usize },
    /// A request id was added twice.
    #[error("request {0} already exists")]
    DuplicateRequest(u64),
    /// The cache or scheduler configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
}
