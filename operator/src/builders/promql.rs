//! Engine metric names and the PromQL the operator generates from them.
//!
//! Metric names are defined once, here. Every query is scoped to one InferenceDeployment
//! by a `namespace` + `model_name` matcher ([`Scope`]) and aggregated with `sum(...)` or
//! `avg(...)`, so it means the same with one replica or fifty.

use std::fmt;

/// `vllm:num_requests_running` — sequences in the running batch.
pub const RUNNING: &str = "vllm:num_requests_running";
/// `vllm:num_requests_waiting` — requests queued for prefill.
pub const WAITING: &str = "vllm:num_requests_waiting";
/// `vllm:num_requests_swapped` — sequences swapped to host memory (older vLLM name).
pub const SWAPPED: &str = "vllm:num_requests_swapped";
/// `vllm:kv_cache_usage_perc` — KV pool usage, 0-1.
pub const KV_USAGE: &str = "vllm:kv_cache_usage_perc";
/// `vllm:num_preemptions_total` — preemptions (recompute or swap).
pub const PREEMPTIONS: &str = "vllm:num_preemptions_total";
/// `vllm:prompt_tokens_total` — prefilled prompt tokens.
pub const PROMPT_TOKENS: &str = "vllm:prompt_tokens_total";
/// `vllm:generation_tokens_total` — generated tokens.
pub const GENERATION_TOKENS: &str = "vllm:generation_tokens_total";
/// `vllm:request_success_total{finished_reason}` — finished requests (stop|length|abort).
pub const REQUEST_SUCCESS: &str = "vllm:request_success_total";
/// `vllm:time_to_first_token_seconds` histogram.
pub const TTFT: &str = "vllm:time_to_first_token_seconds";
/// `vllm:time_per_output_token_seconds` histogram (TPOT; older name kept by the engine).
pub const TPOT: &str = "vllm:time_per_output_token_seconds";
/// `vllm:inter_token_latency_seconds` histogram.
pub const ITL: &str = "vllm:inter_token_latency_seconds";
/// `vllm:e2e_request_latency_seconds` histogram.
pub const E2E: &str = "vllm:e2e_request_latency_seconds";
/// `vllm:request_queue_time_seconds` histogram.
pub const QUEUE_TIME: &str = "vllm:request_queue_time_seconds";
/// `vllm:request_prefill_time_seconds` histogram.
pub const PREFILL_TIME: &str = "vllm:request_prefill_time_seconds";
/// `vllm:request_decode_time_seconds` histogram.
pub const DECODE_TIME: &str = "vllm:request_decode_time_seconds";
/// `vllm:request_prompt_tokens` histogram.
pub const PROMPT_LEN: &str = "vllm:request_prompt_tokens";
/// `vllm:request_generation_tokens` histogram.
pub const GENERATION_LEN: &str = "vllm:request_generation_tokens";
/// `vllm:prefix_cache_queries_total`.
pub const PREFIX_QUERIES: &str = "vllm:prefix_cache_queries_total";
/// `vllm:prefix_cache_hits_total`.
pub const PREFIX_HITS: &str = "vllm:prefix_cache_hits_total";
/// DCGM-compatible GPU utilization (percent) from the sidecar.
pub const GPU_UTIL: &str = "DCGM_FI_DEV_GPU_UTIL";
/// DCGM-compatible framebuffer memory used (MiB) from the sidecar.
pub const GPU_FB_USED: &str = "DCGM_FI_DEV_FB_USED";

/// Custom-metrics API name of the per-pod waiting requests (prometheus-adapter rule in the
/// chart maps `vllm:num_requests_waiting` to it).
pub const ADAPTER_WAITING: &str = "candela_num_requests_waiting";
/// Custom-metrics API name of the per-pod KV-cache usage.
pub const ADAPTER_KV_USAGE: &str = "candela_kv_cache_usage_perc";

/// The label matcher of one InferenceDeployment's series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// Kubernetes namespace (the `namespace` target label Prometheus adds).
    pub namespace: String,
    /// Served model name (the engine's `model_name` label).
    pub model_name: String,
}

impl Scope {
    /// A scope for `namespace` / `model_name`.
    pub fn new(namespace: impl Into<String>, model_name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            model_name: model_name.into(),
        }
    }

    /// `metric{namespace="…",model_name="…"}`.
    pub fn sel(&self, metric: &str) -> String {
        format!("{metric}{{{self}}}")
    }

    /// `metric{namespace="…",model_name="…",<extra>}`.
    pub fn sel_with(&self, metric: &str, extra: &str) -> String {
        format!("{metric}{{{self},{extra}}}")
    }

    /// `sum(metric{scope})`.
    pub fn sum(&self, metric: &str) -> String {
        format!("sum({})", self.sel(metric))
    }

    /// `avg(metric{scope})`.
    pub fn avg(&self, metric: &str) -> String {
        format!("avg({})", self.sel(metric))
    }

    /// `sum(rate(metric{scope}[window]))`.
    pub fn sum_rate(&self, metric: &str, window: &str) -> String {
        format!("sum(rate({}[{window}]))", self.sel(metric))
    }

    /// `sum(rate(metric{scope,<extra>}[window]))`.
    pub fn sum_rate_with(&self, metric: &str, extra: &str, window: &str) -> String {
        format!("sum(rate({}[{window}]))", self.sel_with(metric, extra))
    }

    /// `sum(rate(metric{scope}[window] offset <offset>))`: the same rate some time ago.
    pub fn sum_rate_offset(&self, metric: &str, window: &str, offset: &str) -> String {
        format!("sum(rate({}[{window}] offset {offset}))", self.sel(metric))
    }

    /// `histogram_quantile(q, sum by (le) (rate(metric_bucket{scope}[window])))`.
    pub fn quantile(&self, q: f64, histogram: &str, window: &str) -> String {
        format!(
            "histogram_quantile({q}, sum by (le) (rate({}[{window}])))",
            self.sel(&format!("{histogram}_bucket"))
        )
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "namespace=\"{}\",model_name=\"{}\"",
            escape(&self.namespace),
            escape(&self.model_name)
        )
    }
}

/// Escapes a PromQL string literal body.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_queries() {
        let s = Scope::new("ml", "org/m\"x");
        assert_eq!(
            s.sum(WAITING),
            r#"sum(vllm:num_requests_waiting{namespace="ml",model_name="org/m\"x"})"#
        );
        assert_eq!(
            s.quantile(0.95, TTFT, "5m"),
            r#"histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{namespace="ml",model_name="org/m\"x"}[5m])))"#
        );
    }
}
