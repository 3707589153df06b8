//! The generated PromQL checked by the real `promtool` (Debian `prometheus` package):
//! every PrometheusRule compiles, every dashboard query compiles, and the seed's alert
//! expressions fire (and stay quiet) on synthetic series with `promtool test rules`.

use std::path::{Path, PathBuf};
use std::process::Command;

use candela_operator::builders::promql::Scope;
use candela_operator::builders::{self, BuildConfig, DashboardKind};
use candela_operator::crd::InferenceDeployment;
use serde_json::{Value, json};

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool is installed (operator/test.sh installs Debian's prometheus package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("candela-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

fn load(name: &str) -> InferenceDeployment {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/specs/{name}.yaml"));
    let mut infd: InferenceDeployment =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("spec"))
            .expect("spec parses");
    infd.metadata.uid = Some("uid".into());
    infd
}

/// The PrometheusRule's `.spec` (a rules file) of a spec file.
fn rules_of(name: &str) -> Value {
    let children = builders::build(&load(name), &BuildConfig::default()).expect("build");
    children.prometheus_rule.expect("rules enabled").data["spec"].clone()
}

fn write_yaml(name: &str, value: &Value) -> PathBuf {
    let path = scratch(name);
    std::fs::write(&path, serde_yaml_ng::to_string(value).expect("yaml")).expect("write");
    path
}

#[test]
fn prometheus_rules_compile() {
    for spec in ["minimal", "hpa-full", "keda-cpu", "alerts-cpu"] {
        let path = write_yaml(&format!("{spec}-rules.yaml"), &rules_of(spec));
        let (ok, out) = promtool(&["check", "rules", path.to_str().expect("utf-8 path")]);
        assert!(ok, "{spec}: {out}");
    }
}

#[test]
fn dashboard_queries_compile() {
    let scope = Scope::new("ml", "org/model");
    let mut rules = Vec::new();
    for kind in [DashboardKind::Overview, DashboardKind::Full] {
        let dashboard = builders::dashboard_json(kind, "ml", "m", &scope);
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                assert!(
                    expr.contains(r#"namespace="ml",model_name="org/model""#),
                    "unscoped query: {expr}"
                );
                // Grafana substitutes $__rate_interval; any valid duration compiles the same.
                rules.push(json!({ "record": format!("dashboard:q{}", rules.len()), "expr": expr.replace("$__rate_interval", "1m") }));
            }
        }
    }
    let path = write_yaml(
        "dashboard-rules.yaml",
        &json!({ "groups": [{ "name": "dashboards", "rules": rules }] }),
    );
    let (ok, out) = promtool(&["check", "rules", path.to_str().expect("utf-8 path")]);
    assert!(ok, "{out}");
}

/// Finds the alert `name` in the rules of the `minimal` spec.
fn alert_expr(rules: &Value, name: &str) -> String {
    rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .find(|r| r["alert"] == name)
        .and_then(|r| r["expr"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no alert {name}"))
}

#[test]
fn seed_alerts_fire_on_synthetic_series() {
    let rules = rules_of("minimal");
    let rules_path = write_yaml("minimal-rules.yaml", &rules);
    let sel = |extra: &str| {
        format!(
            r#"{{namespace="ml",model_name="HuggingFaceTB/SmolLM2-135M-Instruct",pod="{extra}"}}"#
        )
    };
    let series = |metric: &str, pod: &str, values: &str| json!({ "series": format!("vllm:{metric}{}", sel(pod)), "values": values });
    let finished = |reason: &str, values: &str| {
        json!({ "series": format!(
            r#"vllm:request_success_total{{namespace="ml",model_name="HuggingFaceTB/SmolLM2-135M-Instruct",pod="a",finished_reason="{reason}"}}"#
        ), "values": values })
    };
    // (alert, input series, value expected at 10m; None = the expression is empty)
    let cases: Vec<(&str, Vec<Value>, Option<f64>)> = vec![
        // Waiting is summed over pods: 6 + 6 = 12 > 10.
        (
            "CandelaRequestsWaiting",
            vec![
                series("num_requests_waiting", "a", "6x20"),
                series("num_requests_waiting", "b", "6x20"),
            ],
            Some(12.0),
        ),
        (
            "CandelaRequestsWaiting",
            vec![
                series("num_requests_waiting", "a", "4x20"),
                series("num_requests_waiting", "b", "4x20"),
            ],
            None,
        ),
        // KV usage is averaged over pods: (1 + 0.875) / 2 = 0.9375 > 0.9 (exact in binary).
        (
            "CandelaKVCacheNearlyFull",
            vec![
                series("kv_cache_usage_perc", "a", "1x20"),
                series("kv_cache_usage_perc", "b", "0.875x20"),
            ],
            Some(0.9375),
        ),
        (
            "CandelaKVCacheNearlyFull",
            vec![
                series("kv_cache_usage_perc", "a", "0.95x20"),
                series("kv_cache_usage_perc", "b", "0.5x20"),
            ],
            None,
        ),
        (
            "CandelaSequencesSwapped",
            vec![series("num_requests_swapped", "a", "2x20")],
            Some(2.0),
        ),
        (
            "CandelaSequencesSwapped",
            vec![series("num_requests_swapped", "a", "0x20")],
            None,
        ),
        // 1 in 8 finished requests aborted (12.5%) > 5%.
        (
            "CandelaRequestErrors",
            vec![finished("stop", "0+7x20"), finished("abort", "0+1x20")],
            Some(0.125),
        ),
        (
            "CandelaRequestErrors",
            vec![finished("stop", "0+99x20"), finished("abort", "0+1x20")],
            None,
        ),
    ];
    let tests: Vec<Value> = cases
        .iter()
        .map(|(alert, input, expected)| {
            let samples = match expected {
                Some(v) => json!([{ "labels": r#"{model_name="HuggingFaceTB/SmolLM2-135M-Instruct",namespace="ml"}"#, "value": v }]),
                None => json!([]),
            };
            json!({
                "interval": "1m",
                "input_series": input,
                "promql_expr_test": [{ "expr": alert_expr(&rules, alert), "eval_time": "10m", "exp_samples": samples }],
            })
        })
        .collect();
    let file = json!({ "rule_files": [rules_path.file_name().and_then(|n| n.to_str()).expect("name")], "evaluation_interval": "1m", "tests": tests });
    let test_path = write_yaml("alerts-test.yaml", &file);
    let (ok, out) = promtool(&["test", "rules", test_path.to_str().expect("utf-8 path")]);
    assert!(ok, "{out}");
}

/// The alerts backend's scale-up alerts (the `alerts-cpu` spec: waiting per replica > 3, KV
/// usage > 0.8, `for: 30s`, evaluated every 10s) on synthetic series: pending before
/// `for`, firing after it with the labels the webhook acts on, silent at the threshold.
#[test]
fn scale_up_alerts_fire_after_for_with_the_webhook_labels() {
    let rules = rules_of("alerts-cpu");
    let group = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == "candela.llm.smollm2-alerts.autoscaling")
        .expect("autoscaling group");
    assert_eq!(group["interval"], "10s");
    let rules_path = write_yaml("alerts-cpu-rules.yaml", &rules);
    let series = |metric: &str, pod: &str, values: &str| {
        json!({
            "series": format!(r#"vllm:{metric}{{namespace="llm",model_name="smollm2",pod="{pod}"}}"#),
            "values": values,
        })
    };
    let labels = |alert: &str, state: &str| {
        format!(
            r#"{{__name__="ALERTS",alertname="{alert}",alertstate="{state}",candela_autoscaling="scale-up",inference_deployment="smollm2-alerts",model_name="smollm2",namespace="llm",severity="none"}}"#
        )
    };
    let case = |alert: &str, input: Vec<Value>, fires: bool| {
        let at = |t: &str, state: Option<&str>| {
            json!({
                "expr": format!(r#"ALERTS{{alertname="{alert}"}}"#),
                "eval_time": t,
                "exp_samples": state.map_or_else(|| json!([]), |s| json!([{ "labels": labels(alert, s), "value": 1 }])),
            })
        };
        json!({
            "interval": "10s",
            "input_series": input,
            "promql_expr_test": if fires {
                json!([at("20s", Some("pending")), at("40s", Some("firing")), at("2m", Some("firing"))])
            } else {
                json!([at("2m", None)])
            },
        })
    };
    let backlog = candela_operator::alerts::SCALE_UP_ALERTS[0];
    let kv = candela_operator::alerts::SCALE_UP_ALERTS[1];
    let tests = json!([
        // (8 + 0) / 2 pods = 4 waiting per replica > 3.
        case(
            backlog,
            vec![
                series("num_requests_waiting", "a", "8x20"),
                series("num_requests_waiting", "b", "0x20")
            ],
            true
        ),
        // (6 + 0) / 2 = 3: at the target, not above.
        case(
            backlog,
            vec![
                series("num_requests_waiting", "a", "6x20"),
                series("num_requests_waiting", "b", "0x20")
            ],
            false
        ),
        // (1 + 0.75) / 2 = 0.875 > 0.8.
        case(
            kv,
            vec![
                series("kv_cache_usage_perc", "a", "1x20"),
                series("kv_cache_usage_perc", "b", "0.75x20")
            ],
            true
        ),
        case(
            kv,
            vec![
                series("kv_cache_usage_perc", "a", "0.75x20"),
                series("kv_cache_usage_perc", "b", "0.75x20")
            ],
            false
        ),
    ]);
    let file = json!({
        "rule_files": [rules_path.file_name().and_then(|n| n.to_str()).expect("name")],
        "evaluation_interval": "10s",
        "tests": tests,
    });
    let test_path = write_yaml("scale-up-alerts-test.yaml", &file);
    let (ok, out) = promtool(&["test", "rules", test_path.to_str().expect("utf-8 path")]);
    assert!(ok, "{out}");
}
