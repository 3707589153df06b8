//! The engine loop and the handle the HTTP/gRPC side uses to reach it.
//!
//! One OS thread owns the [`candela_core::Scheduler`] and the model runner and
//! runs `schedule() → execute() → update_from_output()` while there is work,
//! blocking on its command channel when idle. Callers talk to it only through
//! [`EngineClient`]: `submit` returns one [`RequestStream`] per sequence, and
//! dropping that stream aborts the request and frees its KV blocks at once.

use std::time::Instant;

use candela_core::{FinishReason, SamplingParams, TokenLogprobs};

/// What a caller submits for one sequence (the API layer fans `n > 1` out into `n` of these).
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_token_ids: Vec<u32>,
    pub params: SamplingParams,
    /// Lower runs first under `--scheduling-policy priority`.
    pub priority: i32,
    /// When the HTTP request arrived (TTFT and queue time count from here).
    pub arrival: Instant,
}

/// One event on a request's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent {
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
    /// Set on the last event of the stream.
    pub finish: Option<FinishReason>,
}

/// Why the engine refused a request at submission.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// Invalid parameters or a prompt that does not fit (client error, 400).
    #[error(transparent)]
    Rejected(#[from] candela_core::Error),
    /// The engine loop has stopped (503).
    #[error("the engine is not running")]
    EngineDead,
}
