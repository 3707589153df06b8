//! Grafana dashboards: the seed's 4-panel overview (TTFT/TPOT p95, token throughput,
//! stacked queue depth, KV usage + preemption-rate bars) and a full one (request rate by
//! finish reason, success rate, KV gauge, latency heatmaps, mean/p50/p99 latency,
//! queue/prefill/decode time, prompt/generation length, prefix cache, swap, GPU or CPU,
//! speculative decoding's acceptance).
//!
//! One panel set, two scopes: [`dashboard_json`] pins one InferenceDeployment's series
//! (the operator's ConfigMap or GrafanaDashboard), [`template_dashboard`] selects them with
//! the `namespace` / `model_name` template variables (the static files in
//! `deploy/dashboards/` and the chart, which `crdgen` writes). Every query is scoped, every
//! rate uses `$__rate_interval`, and the datasource is always the `${datasource}` variable,
//! never a fixed uid. Thresholds are the seed's (TTFT p95 500 ms, TPOT 30 ms, KV 90%,
//! prefix hit rate 40%).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

use super::promql::{self, Scope};
use super::thirdparty::ThirdParty;
use super::{Owner, dashboard_name};
use crate::crd::DashboardMode;

/// Which dashboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DashboardKind {
    /// The seed's four-panel minimum.
    Overview,
    /// Everything.
    Full,
}

impl DashboardKind {
    fn slug(self) -> &'static str {
        match self {
            Self::Overview => "overview",
            Self::Full => "full",
        }
    }
}

pub(super) enum Built {
    ConfigMap(Box<ConfigMap>),
    GrafanaDashboard(Box<kube::api::DynamicObject>),
}

pub(super) fn build(owner: &Owner<'_>) -> Built {
    let spec = &owner.infd.spec.monitoring.dashboards;
    let scope = Scope::new(&owner.namespace, &owner.served_name);
    let name = dashboard_name(&owner.name);
    match spec.mode {
        DashboardMode::Configmap => {
            let mut extra = spec.labels.clone();
            extra.insert("grafana_dashboard".into(), "1".into());
            let mut metadata = owner.meta(name, &extra);
            if let Some(folder) = &spec.folder {
                metadata.annotations = Some(BTreeMap::from([(
                    "grafana_folder".to_owned(),
                    folder.clone(),
                )]));
            }
            let data = [DashboardKind::Overview, DashboardKind::Full]
                .into_iter()
                .map(|kind| {
                    let file = format!(
                        "candela-{}-{}-{}.json",
                        owner.namespace,
                        owner.name,
                        kind.slug()
                    );
                    (
                        file,
                        pretty(&dashboard_json(kind, &owner.namespace, &owner.name, &scope)),
                    )
                })
                .collect();
            Built::ConfigMap(Box::new(ConfigMap {
                metadata,
                data: Some(data),
                ..ConfigMap::default()
            }))
        }
        DashboardMode::GrafanaOperator => {
            let mut obj = ThirdParty::GrafanaDashboard.object(&name, &owner.namespace);
            obj.metadata = owner.meta(name, &BTreeMap::new());
            let mut gd = json!({
                "instanceSelector": { "matchLabels": spec.labels },
                "allowCrossNamespaceImport": false,
                "json": pretty(&dashboard_json(DashboardKind::Full, &owner.namespace, &owner.name, &scope)),
            });
            if let Some(folder) = &spec.folder {
                gd["folder"] = json!(folder);
            }
            obj.data = json!({ "spec": gd });
            Built::GrafanaDashboard(Box::new(obj))
        }
    }
}

fn pretty(value: &Value) -> String {
    // A `Value` always serializes; fall back to compact output rather than panic.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// The dashboard JSON model of `kind` for the series of one InferenceDeployment.
pub fn dashboard_json(kind: DashboardKind, namespace: &str, name: &str, scope: &Scope) -> Value {
    let title_suffix = match kind {
        DashboardKind::Overview => "overview",
        DashboardKind::Full => "full",
    };
    model(
        &uid(namespace, name, kind),
        &format!("Candela {namespace}/{name} ({title_suffix})"),
        vec![datasource_variable()],
        panels(kind, scope),
    )
}

/// The dashboard JSON model of `kind` for whatever the `namespace` and `model_name`
/// template variables select (multi-value, "All" by default).
pub fn template_dashboard(kind: DashboardKind) -> Value {
    let (uid, title) = match kind {
        DashboardKind::Overview => ("candela-overview", "Candela / overview"),
        DashboardKind::Full => ("candela-full", "Candela / full"),
    };
    let scope = Scope::template();
    model(
        uid,
        title,
        vec![
            datasource_variable(),
            query_variable(
                "namespace",
                "Namespace",
                &format!("label_values({}, namespace)", promql::RUNNING),
            ),
            query_variable(
                "model_name",
                "Model",
                &format!(
                    "label_values({}{{namespace=~\"$namespace\"}}, model_name)",
                    promql::RUNNING
                ),
            ),
        ],
        panels(kind, &scope),
    )
}

fn model(uid: &str, title: &str, variables: Vec<Value>, panels: Vec<Value>) -> Value {
    json!({
        "uid": uid,
        "title": title,
        "description": "Candela engine metrics (vLLM names): latency, throughput, queues, KV cache, requests, device.",
        "tags": ["candela", "llm", "vllm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": { "from": "now-1h", "to": "now" },
        "templating": { "list": variables },
        "annotations": { "list": [] },
        "panels": panels,
    })
}

fn datasource_variable() -> Value {
    json!({
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "hide": 0,
        "includeAll": false,
        "multi": false,
        "options": [],
        "refresh": 1,
        "regex": "",
    })
}

fn query_variable(name: &str, label: &str, query: &str) -> Value {
    json!({
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE.clone(),
        "query": { "query": query, "refId": format!("{name}-variable") },
        "current": { "text": ["All"], "value": ["$__all"] },
        "hide": 0,
        "includeAll": true,
        "allValue": ".*",
        "multi": true,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
    })
}

/// A short stable uid (Grafana allows 40 characters).
fn uid(namespace: &str, name: &str, kind: DashboardKind) -> String {
    // FNV-1a: stable across builds and platforms, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{namespace}/{name}/{}", kind.slug()).bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("candela-{hash:016x}")
}

/// Every panel and query names the datasource through the `datasource` variable.
static DATASOURCE: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| json!({ "type": "prometheus", "uid": "${datasource}" }));

const RATE: &str = "$__rate_interval";

/// One query of a panel: expression and legend.
type Query = (String, &'static str);

fn targets(queries: Vec<Query>) -> Vec<Value> {
    queries
        .into_iter()
        .zip('A'..='Z')
        .map(|((expr, legend), id)| {
            json!({
                "datasource": DATASOURCE.clone(),
                "expr": expr,
                "legendFormat": legend,
                "refId": id.to_string(),
            })
        })
        .collect()
}

/// Grid position (24 columns).
#[derive(Clone, Copy)]
struct Grid {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

const fn at(x: u32, y: u32, w: u32) -> Grid {
    Grid { x, y, w, h: 8 }
}

fn base(id: u32, kind: &str, title: &str, description: &str, grid: Grid) -> Value {
    json!({
        "id": id,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE.clone(),
        "gridPos": { "x": grid.x, "y": grid.y, "w": grid.w, "h": grid.h },
    })
}

fn timeseries(
    id: u32,
    title: &str,
    description: &str,
    unit: &str,
    grid: Grid,
    queries: Vec<Query>,
    stacked: bool,
) -> Value {
    let mut panel = base(id, "timeseries", title, description, grid);
    panel["fieldConfig"] = json!({
        "defaults": {
            "unit": unit,
            "custom": {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": if stacked { 30 } else { 10 },
                "stacking": { "mode": if stacked { "normal" } else { "none" }, "group": "A" },
                "thresholdsStyle": { "mode": "off" },
            },
        },
        "overrides": [],
    });
    panel["options"] = json!({
        "legend": { "displayMode": "list", "placement": "bottom", "showLegend": true },
        "tooltip": { "mode": "multi", "sort": "none" },
    });
    panel["targets"] = json!(targets(queries));
    panel
}

/// Threshold steps: base colour, then (value, colour) pairs.
fn steps(base_colour: &str, marks: &[(f64, &str)]) -> Value {
    let mut steps = vec![json!({ "color": base_colour, "value": null })];
    steps.extend(
        marks
            .iter()
            .map(|(value, colour)| json!({ "color": colour, "value": value })),
    );
    json!({ "mode": "absolute", "steps": steps })
}

/// Draws `marks` as dashed threshold lines on a timeseries panel.
fn with_threshold_lines(mut panel: Value, base_colour: &str, marks: &[(f64, &str)]) -> Value {
    panel["fieldConfig"]["defaults"]["thresholds"] = steps(base_colour, marks);
    panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] = json!({ "mode": "dashed" });
    panel
}

/// Per-series settings: `properties` applied to the series named `legend`.
fn with_override(mut panel: Value, legend: &str, properties: Value) -> Value {
    if let Some(overrides) = panel["fieldConfig"]["overrides"].as_array_mut() {
        overrides.push(json!({
            "matcher": { "id": "byName", "options": legend },
            "properties": properties,
        }));
    }
    panel
}

/// The series `legend` on the right axis in `unit`, optionally as bars.
fn right_axis(panel: Value, legend: &str, unit: &str, bars: bool) -> Value {
    let mut props = vec![
        json!({ "id": "custom.axisPlacement", "value": "right" }),
        json!({ "id": "unit", "value": unit }),
    ];
    if bars {
        props.push(json!({ "id": "custom.drawStyle", "value": "bars" }));
        props.push(json!({ "id": "custom.fillOpacity", "value": 60 }));
    }
    with_override(panel, legend, json!(props))
}

fn heatmap(id: u32, title: &str, description: &str, grid: Grid, expr: String) -> Value {
    let mut panel = base(id, "heatmap", title, description, grid);
    let mut target = targets(vec![(expr, "{{le}}")]).remove(0);
    target["format"] = json!("heatmap");
    panel["options"] = json!({
        "calculate": false,
        "yAxis": { "unit": "s", "axisPlacement": "left" },
        "cellGap": 1,
        "color": { "mode": "scheme", "scheme": "Spectral", "steps": 64, "exponent": 0.5, "fill": "dark-orange" },
        "rowsFrame": { "layout": "auto" },
        "tooltip": { "mode": "single", "yHistogram": true },
    });
    panel["fieldConfig"] = json!({ "defaults": {}, "overrides": [] });
    panel["targets"] = json!([target]);
    panel
}

fn gauge(id: u32, title: &str, description: &str, grid: Grid, expr: String) -> Value {
    let mut panel = base(id, "gauge", title, description, grid);
    panel["fieldConfig"] = json!({
        "defaults": {
            "unit": "percentunit",
            "min": 0,
            "max": 1,
            "thresholds": steps("green", &[(0.8, "orange"), (0.9, "red")]),
        },
        "overrides": [],
    });
    panel["options"] = json!({
        "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false },
        "showThresholdLabels": false,
        "showThresholdMarkers": true,
    });
    panel["targets"] = json!(targets(vec![(expr, "KV cache usage")]));
    panel
}

fn panels(kind: DashboardKind, s: &Scope) -> Vec<Value> {
    let mut panels = overview_panels(s);
    if kind == DashboardKind::Full {
        panels.extend(full_panels(s, 16));
    }
    panels
}

/// The seed's minimal dashboard: four panels cover 80% of troubleshooting.
fn overview_panels(s: &Scope) -> Vec<Value> {
    let latency = timeseries(
        1,
        "Latency p95: TTFT and TPOT",
        "Seed panel 1. Healthy: chat TTFT p95 < 500 ms; TPOT < 30 ms (bf16 70B). TTFT problems \
         are queueing/prefill (scale, chunked prefill); TPOT problems are decode (batch size).",
        "s",
        at(0, 0, 12),
        vec![
            (s.quantile(0.95, promql::TTFT, RATE), "TTFT p95"),
            (s.quantile(0.95, promql::TPOT, RATE), "TPOT p95"),
        ],
        false,
    );
    let latency = with_threshold_lines(latency, "green", &[(0.5, "red")]);
    let latency = with_override(
        latency,
        "TPOT p95",
        json!([{ "id": "thresholds", "value": steps("green", &[(0.03, "orange")]) }]),
    );
    let kv = timeseries(
        4,
        "KV cache usage and preemptions",
        "Seed panel 4. KV pool usage (line, left; sustained > 90% means scale out) and \
         preemptions per second (bars, right; growing fast means add GPUs or lower concurrency).",
        "percentunit",
        at(12, 8, 12),
        vec![
            (s.avg(promql::KV_USAGE), "KV cache usage"),
            (s.sum_rate(promql::PREEMPTIONS, RATE), "preemptions/s"),
        ],
        false,
    );
    let kv = with_threshold_lines(kv, "green", &[(0.9, "red")]);
    let kv = right_axis(kv, "preemptions/s", "ops", true);
    vec![
        latency,
        timeseries(
            2,
            "Token throughput",
            "Seed panel 2: generated tokens per second (and prompt tokens prefilled per second).",
            "suffix: tokens/s",
            at(12, 0, 12),
            vec![
                (
                    s.sum_rate(promql::GENERATION_TOKENS, RATE),
                    "generation tokens/s",
                ),
                (s.sum_rate(promql::PROMPT_TOKENS, RATE), "prompt tokens/s"),
            ],
            false,
        ),
        timeseries(
            3,
            "Queue depth",
            "Seed panel 3, stacked: running (decoding; pinned at --max-num-seqs means full), \
             waiting for prefill (> 10 sustained: add capacity) and swapped to host memory.",
            "short",
            at(0, 8, 12),
            vec![
                (s.sum(promql::RUNNING), "running"),
                (s.sum(promql::WAITING), "waiting"),
                (s.sum(promql::SWAPPED), "swapped"),
            ],
            true,
        ),
        kv,
    ]
}

fn full_panels(s: &Scope, y: u32) -> Vec<Value> {
    let buckets = |metric: &str| {
        format!(
            "sum by (le) (rate({}[{RATE}]))",
            s.sel(&format!("{metric}_bucket"))
        )
    };
    let ratio = |num: String, den: String| format!("{num} / {den}");
    let success = timeseries(
        6,
        "Success rate",
        "Finished requests that were not aborted, over all finished requests (seed 001: \
         success / total). Below 95% the CandelaRequestErrors alert fires.",
        "percentunit",
        at(8, y, 8),
        vec![(
            ratio(
                s.sum_rate_with(promql::REQUEST_SUCCESS, "finished_reason!=\"abort\"", RATE),
                s.sum_rate(promql::REQUEST_SUCCESS, RATE),
            ),
            "success ratio",
        )],
        false,
    );
    let success = with_threshold_lines(success, "red", &[(0.95, "green")]);
    let prefix = timeseries(
        14,
        "Prefix cache hit rate",
        "Prompt tokens served from the prefix cache. Multi-turn chat above 40% is normal; \
         lower means --enable-prefix-caching is off or prompts do not share prefixes.",
        "percentunit",
        at(12, y + 24, 12),
        vec![(
            ratio(
                s.sum_rate(promql::PREFIX_HITS, RATE),
                s.sum_rate(promql::PREFIX_QUERIES, RATE),
            ),
            "hit rate",
        )],
        false,
    );
    let prefix = with_threshold_lines(prefix, "orange", &[(0.4, "green")]);
    let swap = timeseries(
        15,
        "Swap: swapped sequences and host KV usage",
        "Sequences swapped to host memory (left) and host KV pool usage (right). Swapped > 0 \
         for 5 minutes means the device pool is too small (CandelaSequencesSwapped).",
        "short",
        at(0, y + 32, 8),
        vec![
            (s.sum(promql::SWAPPED), "swapped"),
            (s.avg(promql::CPU_KV_USAGE), "host KV usage"),
        ],
        false,
    );
    let swap = right_axis(swap, "host KV usage", "percentunit", false);
    let spec = timeseries(
        18,
        "Speculative decoding: acceptance",
        "Drafted tokens the model accepted (vLLM's acceptance rate, left) and tokens each \
         verification step emits (mean acceptance length: 1 + accepted / drafts, right; at \
         most num_speculative_tokens + 1). Empty without --speculative-config. A falling \
         rate means the traffic no longer repeats its context: prompt lookup then costs \
         verification work for little gain.",
        "percentunit",
        at(0, y + 40, 24),
        vec![
            (
                ratio(
                    s.sum_rate(promql::SPEC_ACCEPTED, RATE),
                    s.sum_rate(promql::SPEC_DRAFT_TOKENS, RATE),
                ),
                "acceptance rate",
            ),
            (
                format!(
                    "1 + {}",
                    ratio(
                        s.sum_rate(promql::SPEC_ACCEPTED, RATE),
                        s.sum_rate(promql::SPEC_DRAFTS, RATE),
                    )
                ),
                "mean acceptance length",
            ),
        ],
        false,
    );
    let spec = right_axis(spec, "mean acceptance length", "short", false);
    let lora = timeseries(
        19,
        "LoRA adapters: requests/s",
        "Requests admitted per second by LoRA adapter (vllm:lora_requests_total, the seed's \
         per-adapter count), stacked. Empty without spec.loraAdapters (--enable-lora). Base-model \
         requests are the rest of the finish-reason panel's total.",
        "reqps",
        at(0, y + 48, 24),
        vec![(
            format!(
                "sum by (lora_name) (rate({}[{RATE}]))",
                s.sel(promql::LORA_REQUESTS)
            ),
            "{{lora_name}}",
        )],
        true,
    );
    vec![
        timeseries(
            5,
            "Requests/s by finish reason",
            "Finished requests per second, stacked by finish reason (stop, length, abort): the \
             total request trend.",
            "reqps",
            at(0, y, 8),
            vec![(
                format!(
                    "sum by (finished_reason) (rate({}[{RATE}]))",
                    s.sel(promql::REQUEST_SUCCESS)
                ),
                "{{finished_reason}}",
            )],
            true,
        ),
        success,
        gauge(
            7,
            "KV cache usage",
            "Average KV pool usage now (seed 001's ring chart); red above 90%.",
            at(16, y, 8),
            s.avg(promql::KV_USAGE),
        ),
        heatmap(
            8,
            "End-to-end latency",
            "Distribution of request latency (arrival to last token).",
            at(0, y + 8, 8),
            buckets(promql::E2E),
        ),
        heatmap(
            9,
            "Time to first token",
            "Distribution of TTFT (arrival to first token, including queueing).",
            at(8, y + 8, 8),
            buckets(promql::TTFT),
        ),
        heatmap(
            10,
            "Inter-token latency",
            "Distribution of the time between consecutive output tokens.",
            at(16, y + 8, 8),
            buckets(promql::ITL),
        ),
        timeseries(
            11,
            "End-to-end latency mean, p50, p99",
            "Mean and percentiles of request latency (seed 001: average and P99).",
            "s",
            at(0, y + 16, 12),
            vec![
                (s.mean(promql::E2E, RATE), "mean"),
                (s.quantile(0.5, promql::E2E, RATE), "p50"),
                (s.quantile(0.99, promql::E2E, RATE), "p99"),
            ],
            false,
        ),
        timeseries(
            12,
            "Queue / prefill / decode time p95",
            "Where a request's time goes: waiting to be scheduled, prefill (first token), \
             decode (remaining tokens), and prefill + decode.",
            "s",
            at(12, y + 16, 12),
            vec![
                (s.quantile(0.95, promql::QUEUE_TIME, RATE), "queue p95"),
                (s.quantile(0.95, promql::PREFILL_TIME, RATE), "prefill p95"),
                (s.quantile(0.95, promql::DECODE_TIME, RATE), "decode p95"),
                (
                    s.quantile(0.95, promql::INFERENCE_TIME, RATE),
                    "inference p95",
                ),
            ],
            false,
        ),
        timeseries(
            13,
            "Prompt / generation length p50 and p95",
            "Tokens per request. Short generations crowding the batch lower throughput: check \
             the clients' max_tokens.",
            "short",
            at(0, y + 24, 12),
            vec![
                (s.quantile(0.5, promql::PROMPT_LEN, RATE), "prompt p50"),
                (s.quantile(0.95, promql::PROMPT_LEN, RATE), "prompt p95"),
                (
                    s.quantile(0.5, promql::GENERATION_LEN, RATE),
                    "generation p50",
                ),
                (
                    s.quantile(0.95, promql::GENERATION_LEN, RATE),
                    "generation p95",
                ),
            ],
            false,
        ),
        prefix,
        swap,
        timeseries(
            16,
            "GPU / engine CPU utilization",
            "GPU utilization from the sidecar's DCGM-compatible gauges (GPU pods), and the \
             engine process's CPU use in percent of one core (every pod).",
            "percent",
            at(8, y + 32, 8),
            vec![
                (
                    format!("avg({})", s.same_target(promql::GPU_UTIL)),
                    "GPU utilization",
                ),
                (
                    format!(
                        "sum({}) * 100",
                        s.same_target(&format!("rate({}[{RATE}])", promql::ENGINE_CPU))
                    ),
                    "engine CPU",
                ),
            ],
            false,
        ),
        timeseries(
            17,
            "GPU memory / engine memory",
            "GPU framebuffer used (DCGM, MiB converted to bytes) and the engine process's \
             resident memory.",
            "bytes",
            at(16, y + 32, 8),
            vec![
                (
                    format!("sum({}) * 1048576", s.same_target(promql::GPU_FB_USED)),
                    "GPU memory used",
                ),
                (
                    format!("sum({})", s.same_target(promql::ENGINE_RSS)),
                    "engine RSS",
                ),
            ],
            false,
        ),
        spec,
        lora,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_panels() -> Vec<Value> {
        let mut out = Vec::new();
        for kind in [DashboardKind::Overview, DashboardKind::Full] {
            let per_cr = dashboard_json(kind, "ml", "m", &Scope::new("ml", "m"));
            let template = template_dashboard(kind);
            for d in [per_cr, template] {
                out.extend(d["panels"].as_array().cloned().unwrap_or_default());
            }
        }
        out
    }

    #[test]
    fn datasource_is_always_the_variable() {
        for panel in all_panels() {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
            for t in panel["targets"].as_array().expect("targets") {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{t}");
            }
        }
    }

    #[test]
    fn every_rate_uses_the_rate_interval_and_every_query_is_scoped() {
        for panel in all_panels() {
            for t in panel["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                for (i, _) in expr.match_indices("rate(") {
                    let close = expr[i..].find(']').expect("range") + i;
                    let open = expr[..close].rfind('[').expect("range");
                    assert_eq!(&expr[open + 1..close], RATE, "{expr}");
                }
                assert!(
                    expr.contains(r#"namespace="ml",model_name="m""#)
                        || expr.contains(r#"namespace=~"$namespace",model_name=~"$model_name""#),
                    "unscoped: {expr}"
                );
            }
        }
    }

    #[test]
    fn panel_ids_are_unique_and_the_full_dashboard_extends_the_overview() {
        let full = template_dashboard(DashboardKind::Full);
        let ids: Vec<u64> = full["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .map(|p| p["id"].as_u64().expect("id"))
            .collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(ids.len(), unique.len(), "{ids:?}");
        assert_eq!(ids.len(), 19);
        assert_eq!(
            template_dashboard(DashboardKind::Overview)["panels"]
                .as_array()
                .map(Vec::len),
            Some(4)
        );
    }
}
