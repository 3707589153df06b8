//! Engine metric names and the PromQL the operator generates from them.
//!
//! Metric names come from the contract crate ([`candela_contract::metrics`]), the one
//! place the engine, the sidecar and the operator spell them; the short aliases here are
//! what the query builders read. Every query is scoped by a `namespace` +
//! `model_name` matcher ([`Scope`]: one InferenceDeployment, Grafana template variables,
//! or everything) and aggregated with `sum(...)` or `avg(...)`, so it means the same with
//! one replica or fifty.

use candela_contract::metrics as m;

/// `vllm:num_requests_running` — sequences in the running batch.
pub const RUNNING: &str = m::NUM_REQUESTS_RUNNING;
/// `vllm:num_requests_waiting` — requests queued for prefill.
pub const WAITING: &str = m::NUM_REQUESTS_WAITING;
/// `vllm:num_requests_swapped` — sequences swapped to host memory (older vLLM name).
pub const SWAPPED: &str = m::NUM_REQUESTS_SWAPPED;
/// `vllm:kv_cache_usage_perc` — KV pool usage, 0-1.
pub const KV_USAGE: &str = m::KV_CACHE_USAGE_PERC;
/// `vllm:num_preemptions_total` — preemptions (recompute or swap).
pub const PREEMPTIONS: &str = m::NUM_PREEMPTIONS_TOTAL;
/// `vllm:prompt_tokens_total` — prefilled prompt tokens.
pub const PROMPT_TOKENS: &str = m::PROMPT_TOKENS_TOTAL;
/// `vllm:generation_tokens_total` — generated tokens.
pub const GENERATION_TOKENS: &str = m::GENERATION_TOKENS_TOTAL;
/// `vllm:request_success_total{finished_reason}` — finished requests (stop|length|abort).
pub const REQUEST_SUCCESS: &str = m::REQUEST_SUCCESS_TOTAL;
/// `vllm:time_to_first_token_seconds` histogram.
pub const TTFT: &str = m::TIME_TO_FIRST_TOKEN;
/// `vllm:time_per_output_token_seconds` histogram (TPOT; older name kept by the engine).
pub const TPOT: &str = m::TIME_PER_OUTPUT_TOKEN;
/// `vllm:inter_token_latency_seconds` histogram.
pub const ITL: &str = m::INTER_TOKEN_LATENCY;
/// `vllm:e2e_request_latency_seconds` histogram.
pub const E2E: &str = m::E2E_REQUEST_LATENCY;
/// `vllm:request_queue_time_seconds` histogram.
pub const QUEUE_TIME: &str = m::REQUEST_QUEUE_TIME;
/// `vllm:request_prefill_time_seconds` histogram.
pub const PREFILL_TIME: &str = m::REQUEST_PREFILL_TIME;
/// `vllm:request_decode_time_seconds` histogram.
pub const DECODE_TIME: &str = m::REQUEST_DECODE_TIME;
/// `vllm:request_prompt_tokens` histogram.
pub const PROMPT_LEN: &str = m::REQUEST_PROMPT_TOKENS;
/// `vllm:request_generation_tokens` histogram.
pub const GENERATION_LEN: &str = m::REQUEST_GENERATION_TOKENS;
/// `vllm:prefix_cache_queries_total`.
pub const PREFIX_QUERIES: &str = m::PREFIX_CACHE_QUERIES_TOTAL;
/// `vllm:prefix_cache_hits_total`.
pub const PREFIX_HITS: &str = m::PREFIX_CACHE_HITS_TOTAL;
/// `vllm:spec_decode_num_drafts_total`.
pub const SPEC_DRAFTS: &str = m::SPEC_DECODE_NUM_DRAFTS_TOTAL;
/// `vllm:spec_decode_num_draft_tokens_total`.
pub const SPEC_DRAFT_TOKENS: &str = m::SPEC_DECODE_NUM_DRAFT_TOKENS_TOTAL;
/// `vllm:spec_decode_num_accepted_tokens_total`.
pub const SPEC_ACCEPTED: &str = m::SPEC_DECODE_NUM_ACCEPTED_TOKENS_TOTAL;
/// Requests admitted per LoRA adapter (label `lora_name`).
pub const LORA_REQUESTS: &str = m::LORA_REQUESTS_TOTAL;
/// DCGM-compatible GPU utilization (percent) from the sidecar.
pub const GPU_UTIL: &str = m::DCGM_GPU_UTIL;
/// DCGM-compatible framebuffer memory used (MiB) from the sidecar.
pub const GPU_FB_USED: &str = m::DCGM_FB_USED;

/// Custom-metrics API name of the per-pod waiting requests (prometheus-adapter rule in the
/// chart maps `vllm:num_requests_waiting` to it).
pub const ADAPTER_WAITING: &str = "candela_num_requests_waiting";
/// Custom-metrics API name of the per-pod KV-cache usage.
pub const ADAPTER_KV_USAGE: &str = "candela_kv_cache_usage_perc";

/// `candela_engine_process_cpu_seconds_total` — the engine process's CPU time, from the
/// sidecar (the CPU-path counterpart of the GPU gauges).
pub const ENGINE_CPU: &str = m::ENGINE_PROCESS_CPU;
/// `candela_engine_process_resident_memory_bytes` — the engine process's RSS, from the sidecar.
pub const ENGINE_RSS: &str = m::ENGINE_PROCESS_RSS;
/// `vllm:cpu_cache_usage_perc` — host (swap) KV pool usage, 0-1 (older vLLM name).
pub const CPU_KV_USAGE: &str = m::CPU_CACHE_USAGE_PERC;
/// `vllm:request_inference_time_seconds` histogram (prefill + decode).
pub const INFERENCE_TIME: &str = m::REQUEST_INFERENCE_TIME;

/// The label matcher that selects the series a query is about.
///
/// Three shapes, one set of query builders: [`Scope::new`] (one InferenceDeployment: the
/// operator's children), [`Scope::template`] (Grafana template variables: the static
/// dashboards in `deploy/` and the chart) and [`Scope::all`] (every model Prometheus
/// scrapes: the static rules files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// Rendered matchers without braces; empty for [`Scope::all`].
    matchers: String,
}

impl Scope {
    /// The series of one served model in one namespace (exact match).
    pub fn new(namespace: impl Into<String>, model_name: impl Into<String>) -> Self {
        Self {
            matchers: format!(
                "namespace=\"{}\",model_name=\"{}\"",
                escape(&namespace.into()),
                escape(&model_name.into())
            ),
        }
    }

    /// The series picked by the Grafana variables `$namespace` and `$model_name`
    /// (regex match, so multi-value and "All" (`.*`) selections work).
    pub fn template() -> Self {
        Self {
            matchers: "namespace=~\"$namespace\",model_name=~\"$model_name\"".to_owned(),
        }
    }

    /// Every series of the metric.
    pub fn all() -> Self {
        Self {
            matchers: String::new(),
        }
    }

    /// `metric{namespace="…",model_name="…"}` (just `metric` for [`Scope::all`]).
    pub fn sel(&self, metric: &str) -> String {
        if self.matchers.is_empty() {
            metric.to_owned()
        } else {
            format!("{metric}{{{}}}", self.matchers)
        }
    }

    /// `metric{namespace="…",model_name="…",<extra>}`.
    pub fn sel_with(&self, metric: &str, extra: &str) -> String {
        if self.matchers.is_empty() {
            format!("{metric}{{{extra}}}")
        } else {
            format!("{metric}{{{},{extra}}}", self.matchers)
        }
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

    /// `sum(rate(h_sum{scope}[w])) / sum(rate(h_count{scope}[w]))`: the mean of a histogram.
    pub fn mean(&self, histogram: &str, window: &str) -> String {
        format!(
            "{} / {}",
            self.sum_rate(&format!("{histogram}_sum"), window),
            self.sum_rate(&format!("{histogram}_count"), window)
        )
    }

    /// Restricts `expr` (series of the sidecar that carry no `model_name`, e.g. the GPU
    /// gauges) to the scrape targets that serve this scope's model:
    /// `(expr) and on (instance) vllm:num_requests_running{scope}`.
    pub fn same_target(&self, expr: &str) -> String {
        format!("({expr}) and on (instance) {}", self.sel(RUNNING))
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

    #[test]
    fn template_and_all_scopes() {
        let t = Scope::template();
        assert_eq!(
            t.sel_with(REQUEST_SUCCESS, r#"finished_reason="abort""#),
            r#"vllm:request_success_total{namespace=~"$namespace",model_name=~"$model_name",finished_reason="abort"}"#
        );
        let all = Scope::all();
        assert_eq!(all.sum(WAITING), "sum(vllm:num_requests_waiting)");
        assert_eq!(
            all.sel_with(REQUEST_SUCCESS, r#"finished_reason="abort""#),
            r#"vllm:request_success_total{finished_reason="abort"}"#
        );
        assert_eq!(
            all.same_target(GPU_UTIL),
            "(DCGM_FI_DEV_GPU_UTIL) and on (instance) vllm:num_requests_running"
        );
    }
}
