//! ServiceMonitor and PrometheusRule (prometheus-operator) for one InferenceDeployment, and
//! the same rules for every model ([`RuleTarget::fleet`]) that `crdgen` writes to
//! `deploy/rules/`: one generator, so the static files never disagree with the operator.
//!
//! Alert thresholds are the seed's: waiting > 10 sustained, KV usage > 90% sustained,
//! swapped > 0 for 5 minutes, rising preemptions, TTFT p95 > 500 ms, a generation
//! throughput drop, and an error ratio; each alert links its section of
//! `docs/runbooks.md`. Recording rules give the seed-001 style series (request count by
//! status, latency histogram, generation throughput, running/waiting).
//!
//! With the `alerts` autoscaling backend the PrometheusRule gets a third group, the
//! scale-up alerts ([`scale_up_group`]): thresholds from `autoscaling.targets` (the same
//! per-replica targets the hpa and keda backends use), `for` and evaluation interval from
//! `autoscaling.alerts`, and the labels the operator's webhook acts on.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::promql::{self, Scope};
use super::thirdparty::ThirdParty;
use super::tls::{self, Tls};
use super::{BuildConfig, Owner};
use crate::alerts::{SCALE_UP_ALERTS, SCALE_UP_LABEL, SCALE_UP_VALUE};
use crate::crd::AutoscalingBackend;

/// The ServiceMonitor of the sidecar's metrics port. With `monitoring.tls` it scrapes over
/// HTTPS: it verifies the sidecar with the CA of the metrics Secret and the Service name,
/// and presents Prometheus's client certificate (Secrets of its own namespace, as
/// prometheus-operator requires).
pub(super) fn service_monitor(owner: &Owner<'_>, config: &BuildConfig, tls: &Tls) -> DynamicObject {
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
    if let Some(m) = &tls.metrics {
        endpoint["scheme"] = json!("https");
        let mut tls_config = json!({
            "ca": { "secret": { "name": m.server, "key": tls::CA_KEY } },
            "serverName": tls.server_name,
        });
        if let Some(client) = &m.client {
            tls_config["cert"] = json!({ "secret": { "name": client, "key": tls::CERT_KEY } });
            tls_config["keySecret"] = json!({ "name": client, "key": tls::KEY_KEY });
        }
        endpoint["tlsConfig"] = tls_config;
    }
    let mut obj = ThirdParty::ServiceMonitor.object(&owner.name, &owner.namespace);
    obj.metadata = owner.meta(
        owner.name.clone(),
        &merged(&config.monitoring_labels, &mon.service_monitor.labels),
    );
    obj.data = json!({
        "spec": {
            "selector": { "matchLabels": super::selector_labels(&owner.name) },
            "namespaceSelector": { "matchNames": [owner.namespace] },
            "endpoints": [endpoint],
        }
    });
    obj
}

pub(super) fn prometheus_rule(owner: &Owner<'_>, config: &BuildConfig) -> DynamicObject {
    let mon = &owner.infd.spec.monitoring;
    let scope = Scope::new(&owner.namespace, &owner.served_name);
    let target = RuleTarget {
        group_prefix: format!("candela.{}.{}", owner.namespace, owner.name),
        alert_labels: BTreeMap::from([
            ("namespace".to_owned(), owner.namespace.clone()),
            ("model_name".to_owned(), owner.served_name.clone()),
            ("inference_deployment".to_owned(), owner.name.clone()),
        ]),
        subject: format!("InferenceDeployment {}/{}", owner.namespace, owner.name),
        recording_interval: Some("30s".to_owned()),
    };
    let mut spec = rule_groups(&scope, &target);
    if let Some(group) = scale_up_group(owner, &scope, &target)
        && let Some(groups) = spec["groups"].as_array_mut()
    {
        groups.push(group);
    }
    let mut obj = ThirdParty::PrometheusRule.object(&owner.name, &owner.namespace);
    obj.metadata = owner.meta(
        owner.name.clone(),
        &merged(&config.monitoring_labels, &mon.rules.labels),
    );
    obj.data = json!({ "spec": spec });
    obj
}

/// The scale-up alerts of the alerts backend (`None` for other backends): the waiting
/// requests per scraped replica above `targets.waitingRequestsPerReplica`, and the average
/// KV-cache usage above `targets.kvCacheUsage`, each for `alerts.for`. They carry
/// `candela_autoscaling="scale-up"` (what the webhook acts on) besides the target labels,
/// and severity `none`: they are a control signal, not a page.
fn scale_up_group(owner: &Owner<'_>, s: &Scope, target: &RuleTarget) -> Option<Value> {
    let a = owner
        .infd
        .spec
        .active_autoscaling()
        .filter(|a| a.backend == AutoscalingBackend::Alerts)?;
    let settings = a.alerts.clone().unwrap_or_default();
    let for_ = settings.for_duration();
    let who = &target.subject;
    let waiting = a.targets.waiting_requests_per_replica;
    let kv = a.targets.kv_cache_usage;
    let mut labels = target.alert_labels.clone();
    labels.insert("severity".to_owned(), "none".to_owned());
    labels.insert(SCALE_UP_LABEL.to_owned(), SCALE_UP_VALUE.to_owned());
    let rule = |name: &str, expr: String, summary: &str, description: String| {
        json!({
            "alert": name,
            "expr": expr,
            "for": for_,
            "labels": labels,
            "annotations": {
                "summary": summary,
                "description": description,
                "runbook_url": format!("{RUNBOOK_BASE}#{}", name.to_lowercase()),
            },
        })
    };
    let mut group = json!({
        "name": format!("{}.autoscaling", target.group_prefix),
        "rules": [
            rule(
                SCALE_UP_ALERTS[0],
                format!(
                    "{BY} ({w}) / count by (namespace, model_name) ({w}) > {waiting}",
                    w = s.sel(promql::WAITING)
                ),
                "Requests queue beyond the autoscaling target: the alerts backend adds replicas",
                format!(
                    "{who}: {{{{ $value }}}} requests waiting per replica (target {waiting}, for {for_}). \
                     The operator steps spec.replicas up (max {max}).",
                    max = a.max_replicas
                ),
            ),
            rule(
                SCALE_UP_ALERTS[1],
                format!(
                    "avg by (namespace, model_name) ({}) > {kv}",
                    s.sel(promql::KV_USAGE)
                ),
                "KV cache usage beyond the autoscaling target: the alerts backend adds replicas",
                format!(
                    "{who}: KV cache {{{{ $value | humanizePercentage }}}} used (target {kv}, for {for_}). \
                     The operator steps spec.replicas up (max {max}).",
                    max = a.max_replicas
                ),
            ),
        ],
    });
    if let Some(interval) = &settings.evaluation_interval {
        group["interval"] = json!(interval);
    }
    Some(group)
}

/// `defaults` overridden by `own` (the custom resource's labels win).
pub(super) fn merged(
    defaults: &BTreeMap<String, String>,
    own: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = defaults.clone();
    labels.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels
}

/// Base of the runbook links in the alerts' `runbook_url` (one section per alert).
pub const RUNBOOK_BASE: &str = "https://github.com/candela-dev/candela/blob/main/docs/runbooks.md";

/// Who a set of rules is about.
#[derive(Clone, Debug)]
pub struct RuleTarget {
    /// Prefix of the group names (`<prefix>.recording`, `<prefix>.alerts`).
    pub group_prefix: String,
    /// Labels added to every alert (besides `severity`).
    pub alert_labels: BTreeMap<String, String>,
    /// How descriptions name the subject, e.g. `InferenceDeployment ml/chat` or a template
    /// over `$labels`.
    pub subject: String,
    /// Evaluation interval of the recording group (`None`: Prometheus' global one).
    pub recording_interval: Option<String>,
}

impl RuleTarget {
    /// The static rules of `deploy/rules/`: every model Prometheus scrapes, one alert per
    /// (namespace, model_name).
    pub fn fleet() -> Self {
        Self {
            group_prefix: "candela".to_owned(),
            alert_labels: BTreeMap::new(),
            subject: "Model {{ $labels.model_name }}{{ with $labels.namespace }} in namespace {{ . }}{{ end }}".to_owned(),
            recording_interval: None,
        }
    }
}

/// A Prometheus rules file (`{groups: [recording, alerts]}`) for the series in `scope`.
pub fn rule_groups(scope: &Scope, target: &RuleTarget) -> Value {
    let mut recording = json!({
        "name": format!("{}.recording", target.group_prefix),
        "rules": recording_rules(scope),
    });
    if let Some(interval) = &target.recording_interval {
        recording["interval"] = json!(interval);
    }
    json!({
        "groups": [
            recording,
            {
                "name": format!("{}.alerts", target.group_prefix),
                "rules": alert_rules(scope, target),
            },
        ]
    })
}

/// Aggregation that keeps one series per served model.
const BY: &str = "sum by (namespace, model_name)";

/// Recording rules. The `namespace_model:` series are per served model (they keep
/// `namespace` and `model_name`, so one Prometheus can hold many models); the `vllm_*`
/// series are the names seed 001's dashboards and alerts use (request count by status,
/// latency histogram, generation throughput, KV usage, running/waiting), kept per scrape
/// target so they stay proper counters and gauges.
fn recording_rules(s: &Scope) -> Vec<Value> {
    let rec = |record: &str, expr: String| json!({ "record": record, "expr": expr });
    let ok = s.sel_with(promql::REQUEST_SUCCESS, "finished_reason!=\"abort\"");
    let failed = s.sel_with(promql::REQUEST_SUCCESS, "finished_reason=\"abort\"");
    let e2e = |suffix: &str| s.sel(&format!("{}_{suffix}", promql::E2E));
    vec![
        rec(
            "namespace_model:vllm_request_count:rate5m",
            format!(
                "label_replace({BY} (rate({ok}[5m])), \"status\", \"SUCCESS\", \"\", \"\") \
                 or label_replace({BY} (rate({failed}[5m])), \"status\", \"FAILED\", \"\", \"\")"
            ),
        ),
        rec(
            "namespace_model:vllm_request_latency_seconds_bucket:rate5m",
            format!(
                "sum by (namespace, model_name, le) (rate({}[5m]))",
                e2e("bucket")
            ),
        ),
        rec(
            "namespace_model:vllm_request_latency_seconds:p95_5m",
            format!(
                "histogram_quantile(0.95, sum by (namespace, model_name, le) (rate({}[5m])))",
                e2e("bucket")
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
            format!("{BY} (rate({}[1m]))", s.sel(promql::GENERATION_TOKENS)),
        ),
        rec(
            "namespace_model:vllm_prompt_throughput:rate1m",
            format!("{BY} (rate({}[1m]))", s.sel(promql::PROMPT_TOKENS)),
        ),
        rec(
            "namespace_model:vllm_running_requests:sum",
            format!("{BY} ({})", s.sel(promql::RUNNING)),
        ),
        rec(
            "namespace_model:vllm_waiting_requests:sum",
            format!("{BY} ({})", s.sel(promql::WAITING)),
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
            format!("{BY} (rate({}[5m]))", s.sel(promql::PREEMPTIONS)),
        ),
        rec(
            "namespace_model:vllm_request_errors:ratio_rate5m",
            format!(
                "{BY} (rate({failed}[5m])) / clamp_min({BY} (rate({}[5m])), 1e-9)",
                s.sel(promql::REQUEST_SUCCESS)
            ),
        ),
        // Seed 001's series.
        rec(
            "vllm_request_count",
            format!(
                "label_replace(sum without (finished_reason) ({ok}), \"status\", \"SUCCESS\", \"\", \"\") \
                 or label_replace(sum without (finished_reason) ({failed}), \"status\", \"FAILED\", \"\", \"\")"
            ),
        ),
        rec("vllm_request_latency_seconds_bucket", e2e("bucket")),
        rec("vllm_request_latency_seconds_sum", e2e("sum")),
        rec("vllm_request_latency_seconds_count", e2e("count")),
        rec(
            "vllm_generation_throughput",
            format!("rate({}[1m])", s.sel(promql::GENERATION_TOKENS)),
        ),
        rec("vllm_gpu_cache_usage_ratio", s.sel(promql::KV_USAGE)),
        rec("vllm_running_requests", s.sel(promql::RUNNING)),
        rec("vllm_waiting_requests", s.sel(promql::WAITING)),
    ]
}

/// One alert of [`alert_rules`].
struct AlertDef {
    name: &'static str,
    expr: String,
    for_: &'static str,
    severity: &'static str,
    summary: &'static str,
    description: String,
}

/// The seed's alerts. Each is evaluated per (namespace, model_name).
fn alert_rules(s: &Scope, target: &RuleTarget) -> Vec<Value> {
    let who = &target.subject;
    let rate5m = |metric: &str| format!("{BY} (rate({}[5m]))", s.sel(metric));
    let rate5m_ago =
        |metric: &str, offset: &str| format!("{BY} (rate({}[5m] offset {offset}))", s.sel(metric));
    let defs = [
        AlertDef {
            name: "CandelaRequestsWaiting",
            expr: format!("{BY} ({}) > 10", s.sel(promql::WAITING)),
            for_: "2m",
            severity: "warning",
            summary: "More than 10 requests queue for prefill; TTFT is about to blow up",
            description: format!(
                "{who}: {{{{ $value }}}} requests waiting (threshold 10, for 2m). Add replicas, or \
                 raise --max-num-seqs if KV cache usage leaves room; keep --enable-chunked-prefill on."
            ),
        },
        AlertDef {
            name: "CandelaKVCacheNearlyFull",
            expr: format!(
                "avg by (namespace, model_name) ({}) > 0.9",
                s.sel(promql::KV_USAGE)
            ),
            for_: "5m",
            severity: "warning",
            summary: "KV cache usage above 90% for 5 minutes",
            description: format!(
                "{who}: KV cache {{{{ $value | humanizePercentage }}}} used (threshold 90%, for 5m). \
                 Scale out, lower --max-num-seqs, or free memory (--kv-cache-dtype fp8, a quantized model)."
            ),
        },
        AlertDef {
            name: "CandelaSequencesSwapped",
            expr: format!("{BY} ({}) > 0", s.sel(promql::SWAPPED)),
            for_: "5m",
            severity: "warning",
            summary: "Sequences swapped to host memory for 5 minutes",
            description: format!(
                "{who}: {{{{ $value }}}} sequences swapped out (threshold > 0, for 5m). The device KV \
                 pool is too small for the load: add GPUs or lower concurrency; a larger --swap-space \
                 only hides it."
            ),
        },
        AlertDef {
            name: "CandelaPreemptionsRising",
            // Against the hour before the last 15 minutes, so a step up in preemptions
            // stays visible for about half an hour instead of only while it accelerates.
            expr: format!(
                "({now} > 0) and ({now} > 2 * ({BY} (rate({sel}[1h] offset 15m)) or {now} * 0))",
                now = rate5m(promql::PREEMPTIONS),
                sel = s.sel(promql::PREEMPTIONS),
            ),
            for_: "10m",
            severity: "warning",
            summary: "Preemption rate is rising",
            description: format!(
                "{who}: {{{{ $value | humanize }}}} preemptions/s, more than twice the average of the \
                 hour before (for 10m). The scheduler runs out of KV blocks: add GPUs or lower \
                 concurrency."
            ),
        },
        AlertDef {
            name: "CandelaTTFTHigh",
            expr: format!(
                "histogram_quantile(0.95, sum by (namespace, model_name, le) (rate({}[5m]))) > 0.5",
                s.sel(&format!("{}_bucket", promql::TTFT))
            ),
            for_: "5m",
            severity: "warning",
            summary: "Time to first token p95 above 500 ms",
            description: format!(
                "{who}: TTFT p95 is {{{{ $value | humanizeDuration }}}} (threshold 500ms, for 5m). \
                 Check the waiting queue (scale out), --enable-chunked-prefill, \
                 --max-num-batched-tokens and prefix caching."
            ),
        },
        AlertDef {
            name: "CandelaGenerationThroughputDrop",
            expr: format!(
                "{now} < 0.5 * {before} and {before} > 0 and {BY} (avg_over_time({running}[5m])) > 0",
                now = rate5m(promql::GENERATION_TOKENS),
                before = rate5m_ago(promql::GENERATION_TOKENS, "30m"),
                running = s.sel(promql::RUNNING),
            ),
            for_: "10m",
            severity: "warning",
            summary: "Generation throughput dropped by more than half while requests are running",
            description: format!(
                "{who}: {{{{ $value | humanize }}}} tokens/s, less than half of 30 minutes earlier, with \
                 requests still running (for 10m). Batches are probably filled by small requests: \
                 check the clients' max_tokens."
            ),
        },
        AlertDef {
            name: "CandelaRequestErrors",
            expr: format!(
                "{BY} (rate({}[5m])) / clamp_min({BY} (rate({}[5m])), 1e-9) > 0.05",
                s.sel_with(promql::REQUEST_SUCCESS, "finished_reason=\"abort\""),
                s.sel(promql::REQUEST_SUCCESS),
            ),
            for_: "5m",
            severity: "critical",
            summary: "More than 5% of requests fail",
            description: format!(
                "{who}: {{{{ $value | humanizePercentage }}}} of finished requests were aborted \
                 (threshold 5%, for 5m). Check the engine logs and client timeouts."
            ),
        },
    ];
    defs.into_iter()
        .map(|d| {
            let mut labels = target.alert_labels.clone();
            labels.insert("severity".to_owned(), d.severity.to_owned());
            json!({
                "alert": d.name,
                "expr": d.expr,
                "for": d.for_,
                "labels": labels,
                "annotations": {
                    "summary": d.summary,
                    "description": d.description,
                    "runbook_url": format!("{RUNBOOK_BASE}#{}", d.name.to_lowercase()),
                },
            })
        })
        .collect()
}

/// Names of the alerts [`rule_groups`] generates, in order.
pub const ALERTS: [&str; 7] = [
    "CandelaRequestsWaiting",
    "CandelaKVCacheNearlyFull",
    "CandelaSequencesSwapped",
    "CandelaPreemptionsRising",
    "CandelaTTFTHigh",
    "CandelaGenerationThroughputDrop",
    "CandelaRequestErrors",
];
