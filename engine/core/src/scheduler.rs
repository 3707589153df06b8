//! Continuous-batching scheduler (vLLM v1 shape, with v0's swap queue).

use crate::{BlockId, FinishReason, RequestId};

/// One request's share of a step: compute KV for `token_ids()[start..start + num_tokens]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledRequest {
    pub id: RequestId,
    /// Tokens already in the cache (the position of the first new token).
    pub start: usize,
    /// New tokens computed this step (a prefill chunk, or 1 when decoding).
    pub num_tokens: usize,
    /// The step reaches the end of the known tokens, so the runner samples the next one.
    pub sample: bool,
}

/// The plan of one engine step; plain data for the model runner.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerOutput {
    pub scheduled: Vec<ScheduledRequest>,
    pub num_batched_tokens: usize,
    /// Copy these device blocks to host blocks *before* the forward pass.
    pub swap_out: Vec<(BlockId, BlockId)>,
    /// Copy these host blocks to device blocks *before* the forward pass.
    pub swap_in: Vec<(BlockId, BlockId)>,
    /// Requests that ended since the last step; the runner drops their state.
    pub finished: Vec<RequestId>,
}

/// Log-probability of the sampled token and the top alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    /// `(token, logprob)`, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// What the runner sampled for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub id: RequestId,
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
}

/// One new token (and possibly the end) of one request, for the server.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutput {
    pub id: RequestId,
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
    pub finish: Option<FinishReason>,
}

/// Live values of the scheduler and the KV pools (the metrics' gauges).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerStats {
    pub num_running: usize,
    pub num_waiting: usize,
    pub num_swapped: usize,
    /// Used fraction of the device pool, 0–1.
    pub device_cache_usage: f64,
    /// Used fraction of the host (swap) pool, 0–1.
    pub host_cache_usage: f64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub num_preemptions: u64,
}
