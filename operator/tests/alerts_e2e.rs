//! The `alerts` autoscaling loop end to end, every part real: a `candela serve` (the default
//! model, `--max-num-seqs 2`) driven into backlog by `candela bench serve`; Prometheus
//! scraping it with the labels a ServiceMonitor adds and evaluating the PrometheusRule
//! the operator created on the real kube-apiserver (this test plays prometheus-operator's
//! part: it copies the rule's `.spec` into Prometheus' rule file); Alertmanager routing
//! the scale-up alert to the real `candela-operator` binary's webhook with the bearer
//! token, as the chart's NOTES say; the operator scaling the InferenceDeployment through
//! its scale subresource under its own ClusterRole.
//!
//! Asserts: the alert fires under load and the replicas step 1 → 2 → 3 (max), at least a
//! cooldown apart; after the load, the alert resolves and the replicas step back 3 → 2 → 1
//! (min), the first a cooldown after the alert's end; events and `status.alertScaling`
//! record it. Then the notifications Alertmanager really sent (captured by a second
//! webhook of the same receiver) are replayed exactly, out of order and in new episodes,
//! next to malformed, unauthenticated and misaddressed payloads: only the new episode
//! scales, everything else leaves every object's resourceVersion alone and gets a clear
//! JSON answer. Numbers (time to fire, to each step, to scale down) are printed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

use candela_operator::alerts::payload::fingerprint;
use candela_operator::builders::thirdparty::ThirdParty;
use candela_operator::crd::{AlertScalingStatus, InferenceDeployment};
use common::stack::{self, http};
use common::{testenv, wait_for};

const NS: &str = "llm";
const SERVED: &str = "smollm2";
const TOKEN: &str = "e2e-webhook-token";
const COOLDOWN: i64 = 12;
/// Enough load to hold the backlog through the scaling steps: sized to the debug build's
/// speed (the model crate is optimized without overflow checks there, as in release).
const PROMPTS: u32 = 120;

fn crd_file(name: &str) -> CustomResourceDefinition {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/crds")
        .join(name);
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("CRD file")).expect("CRD")
}

fn infd(name: &str, autoscaling: Option<Value>) -> InferenceDeployment {
    let mut spec = json!({
        "model": { "source": "file:///models/SmolLM2-135M-Instruct.Q4_1.gguf", "servedName": SERVED },
        "engine": { "maxNumSeqs": 2 },
        "resources": { "gpus": 0 },
        "replicas": 1,
    });
    if let Some(a) = autoscaling {
        spec["autoscaling"] = a;
    }
    serde_json::from_value(json!({
        "apiVersion": "candela.dev/v1alpha1", "kind": "InferenceDeployment",
        "metadata": { "name": name, "namespace": NS },
        "spec": spec,
    }))
    .expect("InferenceDeployment")
}

/// Notifications Alertmanager posted to the recording webhook.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<Value>>>);

impl Recorded {
    fn all(&self) -> Vec<Value> {
        self.0.lock().expect("lock").clone()
    }
}

async fn start_recorder() -> (String, Recorded) {
    let recorded = Recorded::default();
    let sink = recorded.clone();
    let app = axum::Router::new().route(
        "/record",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let value: Value = serde_json::from_slice(&body).expect("Alertmanager posts JSON");
                sink.0.lock().expect("lock").push(value);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/record", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, recorded)
}

/// One observation of the InferenceDeployment.
struct Seen {
    replicas: i32,
    version: String,
    state: AlertScalingStatus,
}

async fn seen(api: &Api<InferenceDeployment>, name: &str) -> Seen {
    let obj = api.get(name).await.expect("get");
    Seen {
        replicas: obj.spec.replicas,
        version: obj.metadata.resource_version.unwrap_or_default(),
        state: obj.status.and_then(|s| s.alert_scaling).unwrap_or_default(),
    }
}

/// POSTs `body` to the operator's webhook; returns the status and the JSON answer.
async fn post(url: &str, auth: Option<&str>, body: String) -> (u16, Value) {
    let mut request = http()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.expect("webhook answers");
    let status = response.status().as_u16();
    let answer: Value = response.json().await.expect("every answer is JSON");
    (status, answer)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn since(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_backend_scales_on_real_alerts_and_ignores_replays() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
    let env = testenv::shared();
    let dir = env.dir.join("alerts-e2e");
    std::fs::create_dir_all(&dir).expect("dir");
    let admin = env.admin().await;
    common::install_candela_crd(&admin).await;
    for file in [
        "monitoring.coreos.com_prometheusrules.yaml",
        "monitoring.coreos.com_servicemonitors.yaml",
    ] {
        common::apply_crd(&admin, &crd_file(file)).await;
    }
    common::grant_operator_rbac(&admin, "candela-system").await;
    common::create_namespace(&admin, NS).await;

    // The operator binary, under its ClusterRole, with leader election.
    let (metrics_port, webhook_port) = (testenv::free_port(), testenv::free_port());
    let kubeconfig = env.dir.join("operator.kubeconfig");
    let _operator = testenv::Watched(testenv::spawn_watched_env(
        std::path::Path::new(env!("CARGO_BIN_EXE_candela-operator")),
        &[
            format!("--http-addr=127.0.0.1:{metrics_port}"),
            format!("--webhook-listen=127.0.0.1:{webhook_port}"),
            "--lease-namespace=candela-system".into(),
            "--identity=alerts-e2e".into(),
        ],
        &[
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("CANDELA_WEBHOOK_TOKEN", TOKEN.as_ref()),
            ("RUST_LOG", "info".as_ref()),
        ],
        &dir.join("operator.log"),
    ));
    let operator_metrics = format!("http://127.0.0.1:{metrics_port}");
    let webhook = format!("http://127.0.0.1:{webhook_port}/alertmanager");
    stack::wait_http_ok(
        "operator /readyz",
        &format!("{operator_metrics}/readyz"),
        Duration::from_secs(60),
    )
    .await;

    let api: Api<InferenceDeployment> = Api::namespaced(admin.clone(), NS);
    let autoscaling = json!({
        "backend": "alerts", "minReplicas": 1, "maxReplicas": 3,
        "targets": { "waitingRequestsPerReplica": 4, "kvCacheUsage": 0.99 },
        "alerts": { "step": 1, "cooldownSeconds": COOLDOWN, "for": "2s", "evaluationInterval": "1s" },
    });
    for obj in [
        infd("chat", Some(autoscaling)),
        infd(
            "chat-hpa",
            Some(json!({ "backend": "hpa", "minReplicas": 1, "maxReplicas": 3 })),
        ),
        infd("chat-fixed", None),
    ] {
        api.create(&PostParams::default(), &obj)
            .await
            .expect("create");
    }

    // prometheus-operator's part: the PrometheusRule the operator created becomes a rules file.
    let rules_api: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        NS,
        &ThirdParty::PrometheusRule.api_resource(),
    );
    let rule = wait_for(
        "the operator's PrometheusRule",
        Duration::from_secs(60),
        || async { rules_api.get_opt("chat").await.ok().flatten() },
    )
    .await;
    let spec = rule.data["spec"].clone();
    let scaling_group = spec["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == "candela.llm.chat.autoscaling")
        .expect("the autoscaling group")
        .clone();
    assert_eq!(scaling_group["interval"], "1s", "{scaling_group}");
    assert_eq!(scaling_group["rules"][0]["for"], "2s");
    std::fs::write(
        dir.join("rules.yaml"),
        serde_yaml_ng::to_string(&spec).expect("yaml"),
    )
    .expect("rules file");

    // The engine, Prometheus, the recording webhook and Alertmanager.
    let engine = stack::start_engine(&dir, SERVED, &["--max-num-seqs", "2"]).await;
    let (recorder_url, recorded) = start_recorder().await;
    std::fs::write(dir.join("webhook-token"), TOKEN).expect("token file");
    let am_config = format!(
        r#"route:
  receiver: default
  group_by: [alertname]
  routes:
    # The chart's NOTES route, with test timings.
    - receiver: candela-operator
      matchers: ['candela_autoscaling="scale-up"']
      group_by: [namespace, inference_deployment]
      group_wait: 1s
      group_interval: 2s
      repeat_interval: 4s
receivers:
  - name: default
  - name: candela-operator
    webhook_configs:
      - url: {webhook}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {token}
      - url: {recorder_url}
        send_resolved: true
"#,
        token = dir.join("webhook-token").display(),
    );
    let (am_url, _am) = stack::start_alertmanager(&dir, &am_config).await;
    let prometheus = stack::start_prometheus(
        &dir,
        &format!(
            r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ['{rules}']
alerting:
  alertmanagers:
    - static_configs: [{{ targets: ['{am}'] }}]
scrape_configs:
  # What the operator's ServiceMonitor yields in a cluster: namespace, pod and service labels.
  - job_name: candela
    static_configs:
      - targets: ['127.0.0.1:{port}']
        labels: {{ namespace: {NS}, pod: chat-0, service: chat }}
"#,
            rules = dir.join("rules.yaml").display(),
            am = am_url.trim_start_matches("http://"),
            port = engine.port,
        ),
    )
    .await;
    prometheus.wait_up("candela").await;
    let groups = prometheus.api("rules", &[]).await;
    assert!(
        groups["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .any(|g| g["name"] == "candela.llm.chat.autoscaling"),
        "Prometheus loaded the operator's scale-up alerts"
    );
    let before = seen(&api, "chat").await;
    assert_eq!(before.replicas, 1);

    // ---- Load: the queue backlog fires the alert, the replicas step up to max.
    let load = Instant::now();
    let mut bench = stack::start_bench(&dir, &engine.url, SERVED, PROMPTS);
    let alert = candela_operator::alerts::SCALE_UP_ALERTS[0];
    let fired = wait_for(
        "the scale-up alert to fire",
        Duration::from_secs(90),
        || async {
            (prometheus.alert_state(alert).await.as_deref() == Some("firing")).then(Instant::now)
        },
    )
    .await;
    let mut steps: Vec<(Instant, i32, AlertScalingStatus)> = Vec::new();
    let mut max_seen = 1;
    let mut bench_out = None;
    let mut last = 1;
    let deadline = Instant::now() + Duration::from_secs(240);
    while bench_out.is_none() || last > 1 {
        assert!(
            Instant::now() < deadline,
            "the loop did not settle; steps so far: {:?}",
            steps.iter().map(|s| s.1).collect::<Vec<_>>()
        );
        let s = seen(&api, "chat").await;
        if s.replicas != last {
            steps.push((Instant::now(), s.replicas, s.state.clone()));
            last = s.replicas;
        }
        max_seen = max_seen.max(s.replicas);
        if bench_out.is_none() {
            bench_out = bench.finished().map(|out| (Instant::now(), out));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (load_end, bench_out) = bench_out.expect("bench finished");
    let succeeded = bench_out
        .lines()
        .find_map(|l| l.strip_prefix("Successful requests:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    assert_eq!(succeeded, Some(PROMPTS), "{bench_out}");
    let replicas: Vec<i32> = steps.iter().map(|s| s.1).collect();
    assert_eq!(
        replicas,
        [2, 3, 2, 1],
        "steps of one: up to max, down to min"
    );
    assert_eq!(max_seen, 3, "never above maxReplicas");
    assert!(
        steps[1].0 < load_end,
        "max reached while the load ran (load ended {:.1}s after start)",
        secs(load_end - load)
    );
    let t = |i: usize| steps[i].2.last_scale_time.clone().expect("lastScaleTime").0;
    let cooldown = COOLDOWN as f64;
    assert!(since(t(0), t(1)) >= cooldown, "steps up a cooldown apart");
    let clear = steps[2]
        .2
        .clear_since
        .clone()
        .expect("clearSince recorded when the alert resolved")
        .0;
    assert!(clear > t(1), "the alert resolved after the last step up");
    assert!(
        since(clear, t(2)) >= cooldown,
        "first step down a cooldown after the alert's end"
    );
    assert!(since(t(2), t(3)) >= cooldown, "steps down a cooldown apart");
    assert!(
        steps[3].2.last_scale_reason.as_deref().is_some_and(|r| r.starts_with("ScaledDown 2 -> 1: all scale-up alerts resolved since")),
        "{:?}",
        steps[3].2.last_scale_reason
    );
    let resolved_in_prometheus = prometheus.alert_state(alert).await;
    assert_eq!(
        resolved_in_prometheus, None,
        "the alert is no longer active"
    );

    // Events record every step.
    let events: Api<Event> = Api::namespaced(admin.clone(), NS);
    let list = events.list(&ListParams::default()).await.expect("events");
    let notes = |reason: &str| -> Vec<String> {
        list.items
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("chat")
            })
            .filter_map(|e| e.note.clone())
            .collect()
    };
    let (ups, downs) = (notes("ScaledUp"), notes("ScaledDown"));
    assert_eq!(ups.len(), 2, "{ups:?}");
    assert_eq!(downs.len(), 2, "{downs:?}");
    assert!(
        ups.iter()
            .any(|n| n.starts_with("ScaledUp 1 -> 2: CandelaScaleUpQueueBacklog firing since")),
        "{ups:?}"
    );

    // What Alertmanager really sent, to both webhooks of the receiver.
    let notifications = recorded.all();
    let firing = notifications
        .iter()
        .find(|n| n["status"] == "firing")
        .expect("a firing notification")
        .clone();
    let resolved = notifications
        .iter()
        .rev()
        .find(|n| n["status"] == "resolved")
        .expect("a resolved notification")
        .clone();
    let am_alert = &firing["alerts"][0];
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_value(am_alert["labels"].clone()).expect("labels");
    assert_eq!(
        am_alert["fingerprint"].as_str(),
        Some(fingerprint(&labels).as_str()),
        "our fingerprint of the labels is Alertmanager's"
    );
    assert_eq!(
        labels.get("inference_deployment").map(String::as_str),
        Some("chat")
    );
    let metrics_text = http()
        .get(format!("{operator_metrics}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let counter = |code: &str| -> u64 {
        let prefix =
            format!("candela_operator_alertmanager_webhook_requests_total{{code=\"{code}\"}} ");
        metrics_text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.trim().parse().expect("counter"))
    };
    // Alertmanager keeps a notification log per integration, so the two webhooks of the
    // receiver may see a different number of resends; both saw the firing and the resolved
    // notifications, and the operator answered every one of its requests 200.
    assert!(
        counter("200") >= 2 && notifications.len() >= 2,
        "{} recorded notifications, {} answered 200: {metrics_text}",
        notifications.len(),
        counter("200")
    );
    for code in ["400", "401", "404", "409", "422", "500", "503"] {
        assert_eq!(
            counter(code),
            0,
            "Alertmanager got a {code}: {metrics_text}"
        );
    }
    println!(
        "alerts e2e: {PROMPTS} prompts; alert firing {:.1}s after the load started; replicas 1 -> 2 at {:.1}s, \
         -> 3 at {:.1}s; load ended at {:.1}s; alert resolved (endsAt) {:.1}s after the last step up; \
         replicas -> 2 at {:.1}s, -> 1 at {:.1}s (first step down {:.1}s after the alert's end, cooldown {COOLDOWN}s); \
         {} notifications from Alertmanager to the operator, all answered 200",
        secs(fired - load),
        secs(steps[0].0 - load),
        secs(steps[1].0 - load),
        secs(load_end - load),
        since(t(1), clear),
        secs(steps[2].0 - load),
        secs(steps[3].0 - load),
        since(clear, t(2)),
        counter("200"),
    );

    // ---- Replays and bad requests: answered clearly, nothing changes.
    let bearer = format!("Bearer {TOKEN}");
    let auth = Some(bearer.as_str());
    let versions = || async {
        let mut v = Vec::new();
        for name in ["chat", "chat-hpa", "chat-fixed"] {
            v.push(seen(&api, name).await.version);
        }
        v
    };
    let quiet = versions().await;

    let (code, answer) = post(&webhook, auth, firing.to_string()).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["targets"][0]["result"], "unchanged", "{answer}");
    assert_eq!(
        answer["targets"][0]["alerts"]["stale"], 1,
        "a resolved episode's firing is stale: {answer}"
    );
    let (code, answer) = post(&webhook, auth, resolved.to_string()).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["targets"][0]["result"], "unchanged", "{answer}");
    assert_eq!(answer["targets"][0]["alerts"]["unchanged"], 1, "{answer}");
    assert_eq!(answer["targets"][0]["stateChanged"], false, "{answer}");

    let bad: Vec<(Option<&str>, String, u16, &str)> = vec![
        (auth, "{".into(), 400, "not an Alertmanager webhook payload"),
        (auth, "{\"alerts\": 5}".into(), 400, "not an Alertmanager webhook payload"),
        (auth, json!({ "version": "3", "alerts": [] }).to_string(), 400, "unsupported payload version"),
        (auth, {
            let mut p = firing.clone();
            p["alerts"][0]["startsAt"] = json!("not a time");
            p.to_string()
        }, 400, "alert 0: startsAt"),
        (Some("Bearer wrong"), firing.to_string(), 401, "missing or wrong bearer token"),
        (None, firing.to_string(), 401, "missing or wrong bearer token"),
        (auth, json!({ "version": "4", "alerts": [{ "status": "firing", "labels": { "alertname": "X" }, "startsAt": "2026-01-01T00:00:00Z" }] }).to_string(), 422, "no alert names an InferenceDeployment"),
    ];
    for (auth, body, want, text) in bad {
        let (code, answer) = post(&webhook, auth, body.clone()).await;
        assert_eq!(code, want, "{body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(text)),
            "{body}: {answer}"
        );
    }
    let retarget = |name: &str| {
        let mut p = firing.clone();
        p["alerts"][0]["labels"]["inference_deployment"] = json!(name);
        p["alerts"][0]["fingerprint"] = json!("");
        p.to_string()
    };
    for (name, want, result, text) in [
        ("nope", 404, "not_found", "no InferenceDeployment llm/nope"),
        (
            "chat-hpa",
            409,
            "ignored",
            "spec.autoscaling.backend is hpa",
        ),
        ("chat-fixed", 409, "ignored", "spec.autoscaling is not set"),
    ] {
        let (code, answer) = post(&webhook, auth, retarget(name)).await;
        assert_eq!(code, want, "{name}: {answer}");
        assert_eq!(answer["targets"][0]["result"], result, "{answer}");
        assert!(
            answer["targets"][0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains(text)),
            "{answer}"
        );
    }
    assert_eq!(
        versions().await,
        quiet,
        "replays and bad requests changed nothing"
    );

    // ---- Out of order: a new episode scales up; the old episode's resolved, arriving
    //      late, does not scale it down; a resend within the cooldown does nothing.
    let last_step = seen(&api, "chat")
        .await
        .state
        .last_scale_time
        .expect("last")
        .0;
    let ready_at = last_step
        .checked_add(SignedDuration::from_secs(COOLDOWN))
        .expect("time");
    let wait = Timestamp::now().duration_until(ready_at);
    if wait.is_positive() {
        tokio::time::sleep(
            Duration::try_from(wait).expect("positive") + Duration::from_millis(100),
        )
        .await;
    }
    let now = Timestamp::now();
    let mut episode = firing.clone();
    episode["alerts"][0]["startsAt"] = json!(now.to_string());
    let (code, answer) = post(&webhook, auth, episode.to_string()).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["targets"][0]["result"], "scaled_up", "{answer}");
    assert_eq!(
        (
            answer["targets"][0]["from"].as_i64(),
            answer["targets"][0]["replicas"].as_i64()
        ),
        (Some(1), Some(2))
    );
    let after_up = seen(&api, "chat").await;
    let (code, answer) = post(&webhook, auth, resolved.to_string()).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["targets"][0]["alerts"]["stale"], 1, "{answer}");
    let (code, answer) = post(&webhook, auth, episode.to_string()).await;
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer["targets"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cooldown")),
        "{answer}"
    );
    let still = seen(&api, "chat").await;
    assert_eq!(
        (still.replicas, &still.version),
        (2, &after_up.version),
        "stale resolved and resend changed nothing"
    );

    // The new episode resolves: the operator's timer steps down a cooldown later.
    let mut end = episode.clone();
    end["status"] = json!("resolved");
    end["alerts"][0]["status"] = json!("resolved");
    let ended = Timestamp::now();
    end["alerts"][0]["endsAt"] = json!(ended.to_string());
    let (code, answer) = post(&webhook, auth, end.to_string()).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["targets"][0]["alerts"]["resolved"], 1, "{answer}");
    assert!(
        answer["targets"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("next step down at")),
        "{answer}"
    );
    let down = wait_for("the timer's step down", Duration::from_secs(60), || async {
        let s = seen(&api, "chat").await;
        (s.replicas == 1).then_some(s)
    })
    .await;
    let stepped = down.state.last_scale_time.expect("time").0;
    assert!(
        since(ended, stepped) >= cooldown,
        "stepped down {:.1}s after the end",
        since(ended, stepped)
    );
    println!(
        "alerts e2e: replays, out-of-order and bad requests changed nothing; a new episode scaled 1 -> 2 and \
         its resolution back to 1 after {:.1}s (cooldown {COOLDOWN}s)",
        since(ended, stepped)
    );
}
