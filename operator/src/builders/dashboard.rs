//! Grafana dashboards for one InferenceDeployment: the seed's 4-panel overview (TTFT/TPOT
//! p95, token throughput, stacked queue depth, KV usage + preemption rate) and a full one
//! (success rate, latency heatmaps, prompt/generation length, finish reasons,
//! queue/prefill/decode time, prefix cache, GPU).
//!
//! Every query is scoped by `namespace` and `model_name` and uses `$__rate_interval`.
//! Delivered as a ConfigMap labelled `grafana_dashboard: "1"` or a grafana-operator
//! GrafanaDashboard.

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

/// The dashboard JSON model of `kind` for the series in `scope`.
pub fn dashboard_json(kind: DashboardKind, namespace: &str, name: &str, scope: &Scope) -> Value {
    let mut panels = overview_panels(scope);
    if kind == DashboardKind::Full {
        panels.extend(full_panels(scope, 16));
    }
    let title_suffix = match kind {
        DashboardKind::Overview => "overview",
        DashboardKind::Full => "full",
    };
    json!({
        "uid": uid(namespace, name, kind),
        "title": format!("Candela {namespace}/{name} ({title_suffix})"),
        "tags": ["candela", "llm", "vllm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "refresh": "30s",
        "time": { "from": "now-1h", "to": "now" },
        "templating": { "list": [{
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        }]},
        "annotations": { "list": [] },
        "panels": panels,
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

fn target(expr: String, legend: &str, ref_id: char) -> Value {
    json!({
        "datasource": { "type": "prometheus", "uid": "${datasource}" },
        "expr": expr,
        "legendFormat": legend,
        "refId": ref_id.to_string(),
    })
}

fn targets(queries: Vec<(String, &str)>) -> Vec<Value> {
    queries
        .into_iter()
        .zip('A'..='Z')
        .map(|((expr, legend), id)| target(expr, legend, id))
        .collect()
}

struct Grid {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

fn timeseries(
    id: u32,
    title: &str,
    unit: &str,
    grid: Grid,
    queries: Vec<(String, &str)>,
    stacked: bool,
) -> Value {
    json!({
        "id": id,
        "type": "timeseries",
        "title": title,
        "datasource": { "type": "prometheus", "uid": "${datasource}" },
        "gridPos": { "x": grid.x, "y": grid.y, "w": grid.w, "h": grid.h },
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "fillOpacity": if stacked { 30 } else { 10 },
                    "stacking": { "mode": if stacked { "normal" } else { "none" }, "group": "A" },
                },
            },
            "overrides": [],
        },
        "options": { "legend": { "displayMode": "list", "placement": "bottom", "showLegend": true },
                     "tooltip": { "mode": "multi", "sort": "none" } },
        "targets": targets(queries),
    })
}

fn heatmap(id: u32, title: &str, unit: &str, grid: Grid, expr: String) -> Value {
    let mut t = target(expr, "{{le}}", 'A');
    t["format"] = json!("heatmap");
    json!({
        "id": id,
        "type": "heatmap",
        "title": title,
        "datasource": { "type": "prometheus", "uid": "${datasource}" },
        "gridPos": { "x": grid.x, "y": grid.y, "w": grid.w, "h": grid.h },
        "options": { "calculate": false, "yAxis": { "unit": unit }, "color": { "scheme": "Spectral", "mode": "scheme" } },
        "targets": [t],
    })
}

const RATE: &str = "$__rate_interval";

fn overview_panels(s: &Scope) -> Vec<Value> {
    vec![
        timeseries(
            1,
            "TTFT / TPOT p95",
            "s",
            Grid {
                x: 0,
                y: 0,
                w: 12,
                h: 8,
            },
            vec![
                (s.quantile(0.95, promql::TTFT, RATE), "TTFT p95"),
                (s.quantile(0.95, promql::TPOT, RATE), "TPOT p95"),
            ],
            false,
        ),
        timeseries(
            2,
            "Token throughput",
            "tokens/s",
            Grid {
                x: 12,
                y: 0,
                w: 12,
                h: 8,
            },
            vec![
                (s.sum_rate(promql::PROMPT_TOKENS, RATE), "prompt tokens/s"),
                (
                    s.sum_rate(promql::GENERATION_TOKENS, RATE),
                    "generation tokens/s",
                ),
            ],
            false,
        ),
        timeseries(
            3,
            "Queue depth",
            "short",
            Grid {
                x: 0,
                y: 8,
                w: 12,
                h: 8,
            },
            vec![
                (s.sum(promql::RUNNING), "running"),
                (s.sum(promql::WAITING), "waiting"),
                (s.sum(promql::SWAPPED), "swapped"),
            ],
            true,
        ),
        timeseries(
            4,
            "KV cache usage and preemption rate",
            "percentunit",
            Grid {
                x: 12,
                y: 8,
                w: 12,
                h: 8,
            },
            vec![
                (s.avg(promql::KV_USAGE), "KV cache usage"),
                (s.sum_rate(promql::PREEMPTIONS, RATE), "preemptions/s"),
            ],
            false,
        ),
    ]
}

fn full_panels(s: &Scope, y: u32) -> Vec<Value> {
    let by =
        |label: &str, metric: &str| format!("sum by ({label}) (rate({}[{RATE}]))", s.sel(metric));
    let buckets = |metric: &str| {
        format!(
            "sum by (le) (rate({}[{RATE}]))",
            s.sel(&format!("{metric}_bucket"))
        )
    };
    vec![
        timeseries(
            5,
            "Success rate",
            "percentunit",
            Grid {
                x: 0,
                y,
                w: 8,
                h: 8,
            },
            vec![(
                format!(
                    "{} / clamp_min({}, 1e-9)",
                    s.sum_rate_with(promql::REQUEST_SUCCESS, "finished_reason!=\"abort\"", RATE),
                    s.sum_rate(promql::REQUEST_SUCCESS, RATE)
                ),
                "success ratio",
            )],
            false,
        ),
        timeseries(
            6,
            "Finish reasons",
            "reqps",
            Grid {
                x: 8,
                y,
                w: 8,
                h: 8,
            },
            vec![(
                by("finished_reason", promql::REQUEST_SUCCESS),
                "{{finished_reason}}",
            )],
            true,
        ),
        timeseries(
            7,
            "Prefix cache hit rate",
            "percentunit",
            Grid {
                x: 16,
                y,
                w: 8,
                h: 8,
            },
            vec![(
                format!(
                    "{} / clamp_min({}, 1e-9)",
                    s.sum_rate(promql::PREFIX_HITS, RATE),
                    s.sum_rate(promql::PREFIX_QUERIES, RATE)
                ),
                "hit rate",
            )],
            false,
        ),
        heatmap(
            8,
            "End-to-end latency",
            "s",
            Grid {
                x: 0,
                y: y + 8,
                w: 12,
                h: 8,
            },
            buckets(promql::E2E),
        ),
        heatmap(
            9,
            "Time to first token",
            "s",
            Grid {
                x: 12,
                y: y + 8,
                w: 12,
                h: 8,
            },
            buckets(promql::TTFT),
        ),
        timeseries(
            10,
            "Queue / prefill / decode time p95",
            "s",
            Grid {
                x: 0,
                y: y + 16,
                w: 12,
                h: 8,
            },
            vec![
                (s.quantile(0.95, promql::QUEUE_TIME, RATE), "queue p95"),
                (s.quantile(0.95, promql::PREFILL_TIME, RATE), "prefill p95"),
                (s.quantile(0.95, promql::DECODE_TIME, RATE), "decode p95"),
                (s.quantile(0.95, promql::ITL, RATE), "inter-token p95"),
            ],
            false,
        ),
        timeseries(
            11,
            "Prompt / generation length p50 and p95",
            "short",
            Grid {
                x: 12,
                y: y + 16,
                w: 12,
                h: 8,
            },
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
        timeseries(
            12,
            "GPU utilization",
            "percent",
            Grid {
                x: 0,
                y: y + 24,
                w: 12,
                h: 8,
            },
            vec![(s.avg(promql::GPU_UTIL), "avg GPU util")],
            false,
        ),
        timeseries(
            13,
            "GPU memory used",
            "decmbytes",
            Grid {
                x: 12,
                y: y + 24,
                w: 12,
                h: 8,
            },
            vec![(s.sum(promql::GPU_FB_USED), "framebuffer used")],
            false,
        ),
    ]
}
