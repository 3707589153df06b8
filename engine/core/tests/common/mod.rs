//! What the scheduler suites share: a small configuration, a pool of 4-token blocks and a
//! step that samples every token asked for and checks the invariants.

// Each suite compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use candela_core::{
    CacheConfig, SampledToken, Scheduler, SchedulerConfig, SchedulerOutput, SchedulingPolicy,
    TierCaps,
};

/// Tokens per KV block.
pub const BLOCK: usize = 4;

/// `max_seqs` sequences, a `budget` of tokens per step, 64-token contexts, chunked prefill,
/// fcfs, EOS token 0.
pub fn config(max_seqs: usize, budget: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: max_seqs,
        max_num_batched_tokens: budget,
        max_model_len: 64,
        enable_chunked_prefill: true,
        policy: SchedulingPolicy::Fcfs,
        delay_factor: 0.0,
        max_waiting: 100,
        eos_token_ids: vec![0],
        num_lookahead_tokens: 0,
        max_loras: 0,
        max_num_seqs_per_tier: TierCaps::default(),
    }
}

/// `device` and `host` blocks of [`BLOCK`] tokens, prefix caching on.
pub fn cache(device: usize, host: usize) -> CacheConfig {
    CacheConfig {
        block_size: BLOCK,
        num_device_blocks: device,
        num_host_blocks: host,
        enable_prefix_caching: true,
    }
}

/// Samples token `1000 + id` for every request the step asks a token of.
pub fn sample_all(out: &SchedulerOutput) -> Vec<SampledToken> {
    out.scheduled
        .iter()
        .filter(|s| s.sample)
        .map(|s| SampledToken {
            id: s.id,
            token: 1000 + s.id as u32,
            logprobs: None,
            forced_end: false,
        })
        .collect()
}

/// One engine step at time `t`, then the scheduler's invariants.
pub fn step(s: &mut Scheduler, t: f64) -> SchedulerOutput {
    let out = s.schedule(t);
    s.update_from_output(&sample_all(&out), t);
    s.check_invariants().unwrap();
    out
}
