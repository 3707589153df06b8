//! Candela's engine core: the parts of an LLM server that decide *what* to run,
//! with no model, no tensors and no I/O, so every rule is unit-testable.
//!
//! - [`sampling`]: per-request sampling parameters and their validation.
//! - [`request`]: a request's tokens, status, timestamps and block hashes.
//! - [`block_pool`]: the fixed-size KV block pool with ref counts, a free list in
//!   eviction order and the prefix-cache index of full blocks.
//! - [`kv_manager`]: per-request block tables on top of the pool (device and host).
//! - [`scheduler`]: continuous batching — token budget, chunked prefill,
//!   preemption by recompute or swap, fcfs / priority policies.
//! - [`tier`]: service tiers (`priority`, `default`, `flex`) and per-tier running caps.
//! - [`spec_decode`]: speculative decoding's model-free drafts (prompt lookup) and the
//!   per-request pacing of drafts ([`spec_decode::DraftPacer`]).
//!
//! The engine loop (in the server crate) calls [`Scheduler::schedule`], hands the
//! [`SchedulerOutput`] to the model runner, then feeds the sampled tokens back
//! through [`Scheduler::update_from_output`].

pub mod block_pool;
pub mod config;
pub mod error;
pub mod kv_manager;
pub mod request;
pub mod sampling;
pub mod scheduler;
pub mod spec_decode;
pub mod tier;

pub use config::{CacheConfig, SchedulerConfig, SchedulingPolicy};
pub use error::Error;
pub use request::{
    FinishReason, LoraId, NewRequest, Request, RequestId, RequestStatus, StopReason,
};
pub use sampling::{SamplingParams, TokenConstraint};
pub use scheduler::{
    MAX_PROMPT_LOGITS_PER_STEP, PromptLogprob, RequestOutput, SampledToken, ScheduledRequest,
    Scheduler, SchedulerOutput, SchedulerStats, SpecDecodingStats, TokenLogprobs,
};
pub use tier::{ServiceTier, TierCaps, TierStats};

/// Index of a block in a KV pool (device or host).
pub type BlockId = u32;
