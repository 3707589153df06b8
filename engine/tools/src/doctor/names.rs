//! The vLLM metric names `candela doctor` reads, grouped as it reads them; the names
//! themselves come from the contract crate (both vLLM generations). Where the two
//! generations name the same signal, the current name is listed first and wins.

use candela_contract::metrics as m;

// Gauges.
pub const RUNNING: &str = m::NUM_REQUESTS_RUNNING;
pub const WAITING: &str = m::NUM_REQUESTS_WAITING;
pub const SWAPPED: &str = m::NUM_REQUESTS_SWAPPED;
/// Device KV usage, 0–1: current name first, the seed's older one second.
pub const KV_USAGE: [&str; 2] = [m::KV_CACHE_USAGE_PERC, m::GPU_CACHE_USAGE_PERC];
pub const CPU_KV_USAGE: &str = m::CPU_CACHE_USAGE_PERC;
/// Older vLLM's cumulative prefix-cache hit rate gauge (used when the counters are absent).
pub const PREFIX_HIT_RATE: &str = m::GPU_PREFIX_CACHE_HIT_RATE;
/// Info gauge whose labels carry the cache config (`enable_prefix_caching`, `num_gpu_blocks`).
pub const CACHE_CONFIG_INFO: &str = m::CACHE_CONFIG_INFO;

// Counters.
pub const PROMPT_TOKENS: &str = m::PROMPT_TOKENS_TOTAL;
pub const GENERATION_TOKENS: &str = m::GENERATION_TOKENS_TOTAL;
pub const PREEMPTIONS: &str = m::NUM_PREEMPTIONS_TOTAL;
pub const PREFIX_QUERIES: &str = m::PREFIX_CACHE_QUERIES_TOTAL;
pub const PREFIX_HITS: &str = m::PREFIX_CACHE_HITS_TOTAL;
pub const REQUEST_SUCCESS: &str = m::REQUEST_SUCCESS_TOTAL;

// Histograms (family names; samples add `_bucket`, `_sum`, `_count`).
pub const TTFT: &str = m::TIME_TO_FIRST_TOKEN;
/// Per-token decode latency: current name first, the seed's older one second.
pub const TPOT: [&str; 2] = [m::INTER_TOKEN_LATENCY, m::TIME_PER_OUTPUT_TOKEN];
pub const E2E: &str = m::E2E_REQUEST_LATENCY;
pub const QUEUE_TIME: &str = m::REQUEST_QUEUE_TIME;
pub const PREFILL_TIME: &str = m::REQUEST_PREFILL_TIME;
pub const REQUEST_PROMPT_TOKENS: &str = m::REQUEST_PROMPT_TOKENS;
pub const REQUEST_GENERATION_TOKENS: &str = m::REQUEST_GENERATION_TOKENS;
pub const REQUEST_MAX_TOKENS: &str = m::REQUEST_PARAMS_MAX_TOKENS;

/// Every family doctor reads: what a recording keeps and a Prometheus query asks for.
pub const FAMILIES: &[&str] = &[
    RUNNING,
    WAITING,
    SWAPPED,
    KV_USAGE[0],
    KV_USAGE[1],
    CPU_KV_USAGE,
    PREFIX_HIT_RATE,
    CACHE_CONFIG_INFO,
    PROMPT_TOKENS,
    GENERATION_TOKENS,
    PREEMPTIONS,
    PREFIX_QUERIES,
    PREFIX_HITS,
    REQUEST_SUCCESS,
    TTFT,
    TPOT[0],
    TPOT[1],
    E2E,
    QUEUE_TIME,
    PREFILL_TIME,
    REQUEST_PROMPT_TOKENS,
    REQUEST_GENERATION_TOKENS,
    REQUEST_MAX_TOKENS,
];

/// The family a sample name belongs to, if doctor reads it (`x_bucket` → `x`).
pub fn family_of(sample: &str) -> Option<&'static str> {
    FAMILIES.iter().copied().find(|f| {
        sample == *f
            || sample
                .strip_prefix(f)
                .is_some_and(|s| matches!(s, "_bucket" | "_sum" | "_count"))
    })
}
