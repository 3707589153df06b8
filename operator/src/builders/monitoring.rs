//! ServiceMonitor and PrometheusRule (prometheus-operator) for one InferenceDeployment.
//!
//! Alert thresholds are the seed's: waiting > 10 sustained, KV usage > 90% sustained,
//! swapped > 0 for 5 minutes, rising preemptions, TTFT p95 > 500 ms, a generation
//! throughput drop, and an error ratio. Recording rules give the seed-001 style series
//! (request count by status, latency histogram, generation throughput, running/waiting).

use serde_json::{Value, json};

use super::Owner;
use super::promql::{self, Scope};
use super::thirdparty::ThirdParty;

pub(super) fn service_monitor(owner: &Owner<'_>) -> kube::api::DynamicObject {
    let mon = &owner.infd.spec.monitoring;
    let mut endpoint = json!({
        "port": "metrics",
        "path": "/metrics",
        "scheme": "http",
        "interval": mon.service_monitor.interval,
        "honorLabels": true,
    });
    if let Some(sel) = &mon.metrics_auth_secret_ref {
        endpoint["bearerTokenSecret"] = json!({ "name": sel.name, "key": sel.key });
    }
    let mut obj = ThirdParty::ServiceMonitor.object(&owner.name, &owner.namespace);
    obj.metadata = owner.meta(owner.name.clone(), &mon.service_monitor.labels);
    obj.data = json!({
        "spec": {
            "selector": { "matchLabels": super::selector_labels(&owner.name) },
            "namespaceSelector": { "matchNames": [owner.namespace] },
            "endpoints": [endpoint],
        }
    });
    obj
}

pub(super) fn prometheus_rule(owner: &Owner<'_>) -> kube::api::DynamicObject {
    let mon = &owner.infd.spec.monitoring;
    let scope = Scope::new(&owner.namespace, &owner.served_name);
    let mut obj = ThirdParty::PrometheusRule.object(&owner.name, &owner.namespace);
    obj.metadata = owner.meta(owner.name.clone(), &mon.rules.labels);
    obj.data = json!({
        "spec": {
            "groups": [
                { "name": format!("candela.{}.{}.recording", owner.namespace, owner.name),
                  "interval": "30s",
                  "rules": recording_rules(&scope) },
                { "name": format!("candela.{}.{}.alerts", owner.namespace, owner.name),
                  "rules": alert_rules(owner, &scope) },
            ]
        }
    });
    obj
}

/// Recording rules. Output series keep `namespace` and `model_name` so one Prometheus can
/// hold many InferenceDeployments.
fn recording_rules(s: &Scope) -> Vec<Value> {
    let by = "sum by (namespace, model_name)";
    let rec = |record: &str, expr: String| json!({ "record": record, "expr": expr });
    let finished = s.sel(promql::REQUEST_SUCCESS);
    vec![
        rec(
            "namespace_model:vllm_request_count:rate5m",
            format!(
                "label_replace({by} (rate({sel}[5m])), \"status\", \"SUCCESS\", \"\", \"\") \
                 or label_replace({by} (rate({fail}[5m])), \"status\", \"FAILED\", \"\", \"\")",
                sel = s.sel_with(promql::REQUEST_SUCCESS, "finished_reason!=\"abort\""),
                fail = s.sel_with(promql::REQUEST_SUCCESS, "finished_reason=\"abort\""),
            ),
        ),
        rec(
            "namespace_model:vllm_request_latency_seconds_bucket:rate5m",
            format!(
                "sum by (namespace, model_name, le) (rate({}[5m]))",
                s.sel(&format!("{}_bucket", promql::E2E))
            ),
        ),
        rec(
            "namespace_model:vllm_request_latency_seconds:p95_5m",
            format!(
                "histogram_quantile(0.95, sum by (namespace, model_name, le) (rate({}[5m])))",
                s.sel(&format!("{}_bucket", promql::E2E))
            ),
        ),
        rec(
            "namespace_model:vllm_time_to_first_token_seconds:p95_5m",
            format!(
                "histogram_quantile(0.95, sum by (namespace, model_name, le) (rate({}[5m])))",
                s.sel(&format!("{}_bucket", promql::TTFT))
            ),
        ),
        rec(
            "namespace_model:vllm_generation_throughput:rate1m",
            format!("{by} (rate({}[1m]))", s.sel(promql::GENERATION_TOKENS)),
        ),
        rec(
            "namespace_model:vllm_prompt_throughput:rate1m",
            format!("{by} (rate({}[1m]))", s.sel(promql::PROMPT_TOKENS)),
        ),
        rec(
            "namespace_model:vllm_running_requests:sum",
            format!("{by} ({})", s.sel(promql::RUNNING)),
        ),
        rec(
            "namespace_model:vllm_waiting_requests:sum",
            format!("{by} ({})", s.sel(promql::WAITING)),
        ),
        rec(
            "namespace_model:vllm_kv_cache_usage_perc:avg",
            format!(
                "avg by (namespace, model_name) ({})",
                s.sel(promql::KV_USAGE)
            ),
        ),
        rec(
            "namespace_model:vllm_num_preemptions:rate5m",
            format!("{by} (rate({}[5m]))", s.sel(promql::PREEMPTIONS)),
        ),
        rec(
            "namespace_model:vllm_request_errors:ratio_rate5m",
            format!(
                "{by} (rate({fail}[5m])) / clamp_min({by} (rate({finished}[5m])), 1e-9)",
                fail = s.sel_with(promql::REQUEST_SUCCESS, "finished_reason=\"abort\""),
            ),
        ),
    ]
}

fn alert_rules(owner: &Owner<'_>, s: &Scope) -> Vec<Value> {
    let alert = |name: &str,
                 expr: String,
                 for_: &str,
                 severity: &str,
                 summary: &str,
                 description: String| {
        json!({
            "alert": name,
            "expr": expr,
            "for": for_,
            "labels": {
                "severity": severity,
                "namespace": owner.namespace,
                "model_name": owner.served_name,
                "inference_deployment": owner.name,
            },
            "annotations": { "summary": summary, "description": description },
        })
    };
    let target = format!("InferenceDeployment {}/{}", owner.namespace, owner.name);
    vec![
        alert(
            "CandelaRequestsWaiting",
            format!("{} > 10", s.sum(promql::WAITING)),
            "2m",
            "warning",
            "Requests are queueing for prefill; TTFT is about to blow up",
            format!(
                "{target}: {{{{ $value }}}} requests waiting (> 10). Add replicas or raise --max-num-seqs."
            ),
        ),
        alert(
            "CandelaKVCacheNearlyFull",
            format!("{} > 0.9", s.avg(promql::KV_USAGE)),
            "5m",
            "warning",
            "KV cache usage above 90%",
            format!("{target}: KV cache {{{{ $value | humanizePercentage }}}} used. Scale out."),
        ),
        alert(
            "CandelaSequencesSwapped",
            format!("{} > 0", s.sum(promql::SWAPPED)),
            "5m",
            "warning",
            "Sequences swapped to host memory for 5 minutes",
            format!("{target}: the GPU KV pool is too small; add GPUs or lower concurrency."),
        ),
        alert(
            "CandelaPreemptionsRising",
            format!(
                "({now} > 0) and ({now} > 2 * ({before} or vector(0)))",
                now = s.sum_rate(promql::PREEMPTIONS, "5m"),
                before = s.sum_rate_offset(promql::PREEMPTIONS, "5m", "15m"),
            ),
            "10m",
            "warning",
            "Preemption rate is rising",
            format!("{target}: the scheduler keeps preempting sequences for lack of KV blocks."),
        ),
        alert(
            "CandelaTTFTHigh",
            format!("{} > 0.5", s.quantile(0.95, promql::TTFT, "5m")),
            "5m",
            "warning",
            "Time to first token p95 above 500 ms",
            format!("{target}: TTFT p95 is {{{{ $value | humanizeDuration }}}}."),
        ),
        alert(
            "CandelaGenerationThroughputDrop",
            format!(
                "{now} < 0.5 * {before} and {before} > 0",
                now = s.sum_rate(promql::GENERATION_TOKENS, "5m"),
                before = s.sum_rate_offset(promql::GENERATION_TOKENS, "5m", "30m"),
            ),
            "10m",
            "warning",
            "Generation throughput dropped by more than half",
            format!(
                "{target}: batches may be filled by small requests; check clients' max_tokens."
            ),
        ),
        alert(
            "CandelaRequestErrors",
            format!(
                "{} / clamp_min({}, 1e-9) > 0.05",
                s.sum_rate_with(promql::REQUEST_SUCCESS, "finished_reason=\"abort\"", "5m"),
                s.sum_rate(promql::REQUEST_SUCCESS, "5m"),
            ),
            "5m",
            "critical",
            "More than 5% of requests fail",
            format!(
                "{target}: {{{{ $value | humanizePercentage }}}} of finished requests were aborted."
            ),
        ),
    ]
}
