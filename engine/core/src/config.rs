//! Typed configuration of the KV cache and the scheduler.

use crate::{Error, TierCaps};

/// Sizes of the paged KV cache, in blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Tokens per block (vLLM default 16).
    pub block_size: usize,
    /// Blocks in the device pool (where attention reads).
    pub num_device_blocks: usize,
    /// Blocks in the host pool used for swapped-out sequences (`--swap-space`); 0 disables swapping.
    pub num_host_blocks: usize,
    /// Reuse full blocks whose chained hash matches (`--enable-prefix-caching`).
    pub enable_prefix_caching: bool,
}

/// Which waiting request goes first and which running one is preempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchedulingPolicy {
    /// First come, first served; the newest running request is preempted first.
    #[default]
    Fcfs,
    /// Lower `priority` value first (ties by arrival); the lowest-priority running request is preempted first.
    Priority,
}

/// Limits of continuous batching.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Most sequences running at once (`--max-num-seqs`).
    pub max_num_seqs: usize,
    /// Token budget of one step, prefill and decode tokens together (`--max-num-batched-tokens`).
    pub max_num_batched_tokens: usize,
    /// Longest sequence, prompt plus output (`--max-model-len`).
    pub max_model_len: usize,
    /// Split long prompts across steps (`--enable-chunked-prefill`).
    pub enable_chunked_prefill: bool,
    /// `fcfs` or `priority` (`--scheduling-policy`).
    pub policy: SchedulingPolicy,
    /// Hold new prompts until the oldest waited this fraction of the last prompt step (`--scheduler-delay-factor`).
    pub delay_factor: f64,
    /// Most requests allowed to wait; past it `add_request` answers [`Error::QueueFull`].
    pub max_waiting: usize,
    /// The model's end-of-sequence ids: they end every request that does not set
    /// `ignore_eos` (the one place the engine keeps them).
    pub eos_token_ids: Vec<u32>,
    /// KV slots reserved past a step's last token for requests that sample: a draft
    /// model writes the K/V of the drafts it proposes there (`num_speculative_tokens`
    /// with `{"method": "draft_model"}`, else 0).
    pub num_lookahead_tokens: usize,
    /// Most distinct LoRA adapters among running requests (`--max-loras`); requests of
    /// another adapter wait until one leaves. 0 when LoRA is off.
    pub max_loras: usize,
    /// Most running requests per service tier (`--max-num-seqs-per-tier`); requests of
    /// a tier at its cap wait (see [`crate::tier`]).
    pub max_num_seqs_per_tier: TierCaps,
}

impl SchedulerConfig {
    /// Checks the limits against each other and against the cache.
    ///
    /// # Errors
    /// [`Error::Config`] with one line naming the flag to change.
    pub fn validate(&self, cache: &CacheConfig) -> Result<(), Error> {
        let err = |m: String| Err(Error::Config(m));
        if self.max_num_seqs == 0 {
            return err("--max-num-seqs must be at least 1".into());
        }
        if self.max_model_len == 0 {
            return err("--max-model-len must be at least 1".into());
        }
        if cache.block_size == 0 {
            return err("--block-size must be at least 1".into());
        }
        if !self.enable_chunked_prefill && self.max_num_batched_tokens < self.max_model_len {
            return err(format!(
                "--max-num-batched-tokens ({}) is smaller than --max-model-len ({}); enable chunked prefill or raise it",
                self.max_num_batched_tokens, self.max_model_len
            ));
        }
        if self.max_num_batched_tokens == 0 {
            return err("--max-num-batched-tokens must be at least 1".into());
        }
        let pool_tokens = cache.num_device_blocks * cache.block_size;
        if pool_tokens < self.max_model_len {
            return err(format!(
                "the KV cache holds {pool_tokens} tokens ({} blocks of {}), fewer than --max-model-len {}; raise the KV cache memory or lower --max-model-len",
                cache.num_device_blocks, cache.block_size, self.max_model_len
            ));
        }
        if let Some(t) = crate::ServiceTier::ALL
            .into_iter()
            .find(|&t| self.max_num_seqs_per_tier.get(t) == Some(0))
        {
            return err(format!(
                "--max-num-seqs-per-tier {t}=0 would never run a {t} request; the cap must be at least 1"
            ));
        }
        if !(self.delay_factor >= 0.0 && self.delay_factor.is_finite()) {
            return err(format!(
                "--scheduler-delay-factor must be >= 0, got {}",
                self.delay_factor
            ));
        }
        Ok(())
    }
}
