//! Every metric name the engine and the sidecar export, with the engine's bucket layouts —
//! the one place they are spelled. Names are vLLM's, current and older generations, so
//! dashboards and alerts written for either work unchanged; the engine adds its per-tier
//! `candela_*` gauges, the sidecar its own `candela_*` series and DCGM-exporter-named GPU
//! gauges. The operator's PromQL (alerts,
//! dashboards, autoscalers) and `candela doctor` read these constants.

/// Declares a counter's family name and its `_total` sample name from one literal.
macro_rules! counter {
    ($family:ident, $total:ident = $name:literal) => {
        #[doc = concat!("`", $name, "` (family name; samples are `", $name, "_total`).")]
        pub const $family: &str = $name;
        #[doc = concat!("`", $name, "_total`.")]
        pub const $total: &str = concat!($name, "_total");
    };
}

// Gauges.
pub const NUM_REQUESTS_RUNNING: &str = "vllm:num_requests_running";
pub const NUM_REQUESTS_WAITING: &str = "vllm:num_requests_waiting";
pub const NUM_REQUESTS_SWAPPED: &str = "vllm:num_requests_swapped";
pub const KV_CACHE_USAGE_PERC: &str = "vllm:kv_cache_usage_perc";
pub const GPU_CACHE_USAGE_PERC: &str = "vllm:gpu_cache_usage_perc";
pub const CPU_CACHE_USAGE_PERC: &str = "vllm:cpu_cache_usage_perc";
pub const GPU_PREFIX_CACHE_HIT_RATE: &str = "vllm:gpu_prefix_cache_hit_rate";
pub const CACHE_CONFIG_INFO: &str = "vllm:cache_config_info";
pub const LORA_REQUESTS_INFO: &str = "vllm:lora_requests_info";
pub const SPEC_DECODE_DRAFT_ACCEPTANCE_RATE: &str = "vllm:spec_decode_draft_acceptance_rate";
/// The seed article's name for speculative decoding's system efficiency; vLLM v0 itself
/// exports [`SPEC_DECODE_EFFICIENCY`] (same value, both are exported).
pub const SPEC_DECODE_SYSTEM_EFFICIENCY: &str = "vllm:spec_decode_system_efficiency";
pub const SPEC_DECODE_EFFICIENCY: &str = "vllm:spec_decode_efficiency";

// Counters: the family name (what the engine registers) and the `_total` sample name
// (what PromQL reads).
counter!(PROMPT_TOKENS, PROMPT_TOKENS_TOTAL = "vllm:prompt_tokens");
counter!(
    GENERATION_TOKENS,
    GENERATION_TOKENS_TOTAL = "vllm:generation_tokens"
);
counter!(
    NUM_PREEMPTIONS,
    NUM_PREEMPTIONS_TOTAL = "vllm:num_preemptions"
);
counter!(
    PREFIX_CACHE_QUERIES,
    PREFIX_CACHE_QUERIES_TOTAL = "vllm:prefix_cache_queries"
);
counter!(
    PREFIX_CACHE_HITS,
    PREFIX_CACHE_HITS_TOTAL = "vllm:prefix_cache_hits"
);
// The older names of the two above (same values), still read by vLLM production-stack's
// "GPU KV Cache Hit Rate" panel and its router's engine scraper.
counter!(
    GPU_PREFIX_CACHE_QUERIES,
    GPU_PREFIX_CACHE_QUERIES_TOTAL = "vllm:gpu_prefix_cache_queries"
);
counter!(
    GPU_PREFIX_CACHE_HITS,
    GPU_PREFIX_CACHE_HITS_TOTAL = "vllm:gpu_prefix_cache_hits"
);
counter!(
    REQUEST_SUCCESS,
    REQUEST_SUCCESS_TOTAL = "vllm:request_success"
);
counter!(
    SPEC_DECODE_NUM_DRAFTS,
    SPEC_DECODE_NUM_DRAFTS_TOTAL = "vllm:spec_decode_num_drafts"
);
counter!(
    SPEC_DECODE_NUM_DRAFT_TOKENS,
    SPEC_DECODE_NUM_DRAFT_TOKENS_TOTAL = "vllm:spec_decode_num_draft_tokens"
);
counter!(
    SPEC_DECODE_NUM_ACCEPTED_TOKENS,
    SPEC_DECODE_NUM_ACCEPTED_TOKENS_TOTAL = "vllm:spec_decode_num_accepted_tokens"
);
counter!(
    SPEC_DECODE_NUM_ACCEPTED_TOKENS_PER_POS,
    SPEC_DECODE_NUM_ACCEPTED_TOKENS_PER_POS_TOTAL = "vllm:spec_decode_num_accepted_tokens_per_pos"
);
counter!(LORA_REQUESTS, LORA_REQUESTS_TOTAL = "vllm:lora_requests");

// Histograms.
pub const TIME_TO_FIRST_TOKEN: &str = "vllm:time_to_first_token_seconds";
pub const INTER_TOKEN_LATENCY: &str = "vllm:inter_token_latency_seconds";
pub const TIME_PER_OUTPUT_TOKEN: &str = "vllm:time_per_output_token_seconds";
pub const REQUEST_TIME_PER_OUTPUT_TOKEN: &str = "vllm:request_time_per_output_token_seconds";
pub const E2E_REQUEST_LATENCY: &str = "vllm:e2e_request_latency_seconds";
pub const REQUEST_QUEUE_TIME: &str = "vllm:request_queue_time_seconds";
pub const REQUEST_INFERENCE_TIME: &str = "vllm:request_inference_time_seconds";
pub const REQUEST_PREFILL_TIME: &str = "vllm:request_prefill_time_seconds";
pub const REQUEST_DECODE_TIME: &str = "vllm:request_decode_time_seconds";
pub const REQUEST_PROMPT_TOKENS: &str = "vllm:request_prompt_tokens";
pub const REQUEST_GENERATION_TOKENS: &str = "vllm:request_generation_tokens";
pub const REQUEST_MAX_NUM_GENERATION_TOKENS: &str = "vllm:request_max_num_generation_tokens";
pub const REQUEST_PARAMS_MAX_TOKENS: &str = "vllm:request_params_max_tokens";
pub const REQUEST_PARAMS_N: &str = "vllm:request_params_n";
pub const ITERATION_TOKENS: &str = "vllm:iteration_tokens_total";

/// TTFT buckets (seconds), as vLLM.
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// Inter-token latency / TPOT buckets (seconds), as vLLM.
pub const TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// End-to-end, queue, prefill, decode and inference time buckets (seconds), as vLLM.
pub const REQUEST_LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// Tokens per engine step, as vLLM.
pub const ITERATION_TOKENS_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];
/// The `n` request parameter, as vLLM.
pub const PARAMS_N_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0];

// The engine's own series (Candela's names; vLLM has no service tiers). The label `tier`
// takes the three values `priority`, `default` and `flex`, every one always present; vLLM's
// `num_requests_running` / `_waiting` keep vLLM's labels and count every tier.

/// Running requests of one service tier (label `tier`).
pub const NUM_REQUESTS_RUNNING_BY_TIER: &str = "candela_num_requests_running_by_tier";
/// Waiting requests of one service tier (label `tier`; swapped ones not included, as in
/// `vllm:num_requests_waiting`).
pub const NUM_REQUESTS_WAITING_BY_TIER: &str = "candela_num_requests_waiting_by_tier";
/// The label of the two series above.
pub const TIER_LABEL: &str = "tier";

// The sidecar's own series.

/// 1 while the sidecar holds a live `WatchStats` stream from the engine, else 0.
pub const ENGINE_UP: &str = "candela_sidecar_engine_up";
/// Seconds since the last snapshot arrived (absent before the first one).
pub const SNAPSHOT_AGE: &str = "candela_sidecar_snapshot_age_seconds";

// The sidecar's LoRA sync (only with `--lora-adapters-file`).

/// Adapters the adapter list file asks for.
pub const LORA_ADAPTERS_DESIRED: &str = "candela_sidecar_lora_adapters_desired";
/// Adapters the engine reported loaded at the last sync (`GET /v1/models`).
pub const LORA_ADAPTERS_LOADED: &str = "candela_sidecar_lora_adapters_loaded";
/// 1 when the last sync left the engine with exactly the listed adapters, else 0.
pub const LORA_IN_SYNC: &str = "candela_sidecar_lora_in_sync";
// Adapters the sidecar loaded or unloaded, by `action` (`load`, `unload`).
counter!(
    LORA_ADAPTER_CHANGES,
    LORA_ADAPTER_CHANGES_TOTAL = "candela_sidecar_lora_adapter_changes"
);
// Failed sync steps, by `kind` (`file`, `engine`, `load`, `unload`).
counter!(
    LORA_SYNC_ERRORS,
    LORA_SYNC_ERRORS_TOTAL = "candela_sidecar_lora_sync_errors"
);

/// CPU time (user + system) of the engine process, from `/proc/<pid>/stat`.
pub const ENGINE_PROCESS_CPU: &str = "candela_engine_process_cpu_seconds_total";
/// Resident memory of the engine process, from `/proc/<pid>/status`.
pub const ENGINE_PROCESS_RSS: &str = "candela_engine_process_resident_memory_bytes";

/// CPU time of the whole host (all CPUs) by `mode`, from `/proc/stat`.
pub const HOST_CPU: &str = "candela_host_cpu_seconds_total";
/// Online CPUs of the host.
pub const HOST_CPUS: &str = "candela_host_cpus";
/// `MemTotal` of `/proc/meminfo`.
pub const HOST_MEMORY_TOTAL: &str = "candela_host_memory_total_bytes";
/// `MemAvailable` of `/proc/meminfo`.
pub const HOST_MEMORY_AVAILABLE: &str = "candela_host_memory_available_bytes";

/// DCGM exporter names (gauges; labels `gpu`, `UUID`, `device`, `modelName`).
pub const DCGM_GPU_UTIL: &str = "DCGM_FI_DEV_GPU_UTIL";
pub const DCGM_FB_USED: &str = "DCGM_FI_DEV_FB_USED";
pub const DCGM_FB_FREE: &str = "DCGM_FI_DEV_FB_FREE";
pub const DCGM_POWER_USAGE: &str = "DCGM_FI_DEV_POWER_USAGE";
pub const DCGM_GPU_TEMP: &str = "DCGM_FI_DEV_GPU_TEMP";
