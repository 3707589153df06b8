//! Every metric name, help text and bucket layout the engine exports — the one
//! place they are spelled. Names are vLLM's, current and older generations, so
//! dashboards and alerts written for either work unchanged.

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
pub const SPEC_DECODE_SYSTEM_EFFICIENCY: &str = "vllm:spec_decode_system_efficiency";

// Counters (exposed with the `_total` suffix).
pub const PROMPT_TOKENS: &str = "vllm:prompt_tokens";
pub const GENERATION_TOKENS: &str = "vllm:generation_tokens";
pub const NUM_PREEMPTIONS: &str = "vllm:num_preemptions";
pub const PREFIX_CACHE_QUERIES: &str = "vllm:prefix_cache_queries";
pub const PREFIX_CACHE_HITS: &str = "vllm:prefix_cache_hits";
pub const REQUEST_SUCCESS: &str = "vllm:request_success";
pub const SPEC_DECODE_NUM_DRAFTS: &str = "vllm:spec_decode_num_drafts";
pub const SPEC_DECODE_NUM_DRAFT_TOKENS: &str = "vllm:spec_decode_num_draft_tokens";
pub const SPEC_DECODE_NUM_ACCEPTED_TOKENS: &str = "vllm:spec_decode_num_accepted_tokens";
pub const LORA_REQUESTS: &str = "vllm:lora_requests";

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
