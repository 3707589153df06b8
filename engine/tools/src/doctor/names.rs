//! The vLLM metric names `candela doctor` reads, spelled as Candela exports them
//! (engine/server/src/metrics/names.rs; both vLLM generations). Where the two
//! generations name the same signal, the current name is listed first and wins.

// Gauges.
pub const RUNNING: &str = "vllm:num_requests_running";
pub const WAITING: &str = "vllm:num_requests_waiting";
pub const SWAPPED: &str = "vllm:num_requests_swapped";
/// Device KV usage, 0–1: current name first, the seed's older one second.
pub const KV_USAGE: [&str; 2] = ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"];
pub const CPU_KV_USAGE: &str = "vllm:cpu_cache_usage_perc";
/// Older vLLM's cumulative prefix-cache hit rate gauge (used when the counters are absent).
pub const PREFIX_HIT_RATE: &str = "vllm:gpu_prefix_cache_hit_rate";
/// Info gauge whose labels carry the cache config (`enable_prefix_caching`, `num_gpu_blocks`).
pub const CACHE_CONFIG_INFO: &str = "vllm:cache_config_info";

// Counters.
pub const PROMPT_TOKENS: &str = "vllm:prompt_tokens_total";
pub const GENERATION_TOKENS: &str = "vllm:generation_tokens_total";
pub const PREEMPTIONS: &str = "vllm:num_preemptions_total";
pub const PREFIX_QUERIES: &str = "vllm:prefix_cache_queries_total";
pub const PREFIX_HITS: &str = "vllm:prefix_cache_hits_total";
pub const REQUEST_SUCCESS: &str = "vllm:request_success_total";

// Histograms (family names; samples add `_bucket`, `_sum`, `_count`).
pub const TTFT: &str = "vllm:time_to_first_token_seconds";
/// Per-token decode latency: current name first, the seed's older one second.
pub const TPOT: [&str; 2] = [
    "vllm:inter_token_latency_seconds",
    "vllm:time_per_output_token_seconds",
];
pub const E2E: &str = "vllm:e2e_request_latency_seconds";
pub const QUEUE_TIME: &str = "vllm:request_queue_time_seconds";
pub const PREFILL_TIME: &str = "vllm:request_prefill_time_seconds";
pub const REQUEST_PROMPT_TOKENS: &str = "vllm:request_prompt_tokens";
pub const REQUEST_GENERATION_TOKENS: &str = "vllm:request_generation_tokens";
pub const REQUEST_MAX_TOKENS: &str = "vllm:request_params_max_tokens";

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
