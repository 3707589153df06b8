//! The `hpa` autoscaling loop end to end on a real control plane: kube-controller-manager's
//! HorizontalPodAutoscaler controller reads `candela_num_requests_waiting` and
//! `candela_kv_cache_usage_perc` per pod from the custom metrics API, served by a real
//! prometheus-adapter (built from Go modules by `testenv/build.sh`, registered as an
//! aggregated API behind the apiserver's front proxy) with the rules the chart ships
//! (`charts/candela/files/prometheus-adapter-rules.yaml`), over a real Prometheus scraping a
//! real `candela serve` that `candela bench serve` drives into backlog. The HPA is the one
//! the `candela-operator` binary creates for the InferenceDeployment, and it scales the
//! custom resource through its scale subresource; the operator turns that into the
//! Deployment's replicas.
//!
//! What is not real: there is no kubelet, so the test marks the engine pods Running and
//! Ready (as a kubelet would), and one `candela serve` process stands for the first pod
//! (Prometheus scrapes it with that pod's name); pods the HPA adds have no metrics, which
//! the HPA controller treats as it does in a cluster (0 when scaling up, the target when
//! scaling down).

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use candela_operator::crd::InferenceDeployment;
use common::stack;
use common::{testenv, wait_for};

const NS: &str = "llm";
const SERVED: &str = "smollm2";
/// Enough load to hold the backlog through the scaling steps: sized to the debug build's
/// speed (the model crate is optimized without overflow checks there, as in release).
const PROMPTS: u32 = 120;

/// Marks every pod of `chat` that is not yet Running as Running and Ready, as a kubelet
/// would; returns the pod names.
async fn kubelet(admin: &Client) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let Ok(list) = pods
        .list(&ListParams::default().labels("app.kubernetes.io/instance=chat"))
        .await
    else {
        return Vec::new();
    };
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let mut names = Vec::new();
    for pod in list.items {
        let name = pod.name_any();
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if !running && pod.metadata.deletion_timestamp.is_none() {
            let status = json!({ "status": {
                "phase": "Running",
                "conditions": [
                    { "type": "Ready", "status": "True", "lastTransitionTime": now },
                    { "type": "ContainersReady", "status": "True", "lastTransitionTime": now },
                ],
            }});
            let _ = pods
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await;
        }
        if pod.metadata.deletion_timestamp.is_none() {
            names.push(name);
        }
    }
    names.sort();
    names
}

async fn get_raw(client: &Client, path: &str) -> Option<Value> {
    let request = http::Request::get(path).body(Vec::new()).ok()?;
    let text = client.request_text(request).await.ok()?;
    serde_json::from_str(&text).ok()
}

/// The value of custom metric `metric` for pod `pod`, through the aggregated API.
async fn pod_metric(client: &Client, pod: &str, metric: &str) -> Option<f64> {
    let v = get_raw(
        client,
        &format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NS}/pods/{pod}/{metric}"),
    )
    .await?;
    let q = v["items"][0]["value"].as_str()?.to_owned();
    Some(match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
        None => q.parse().ok()?,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_backend_scales_on_adapter_metrics_from_a_real_engine() {
    let env = testenv::shared_with_hpa();
    let dir = env.dir.join("hpa-e2e");
    std::fs::create_dir_all(&dir).expect("dir");
    let admin = env.admin().await;
    common::install_candela_crd(&admin).await;
    common::grant_operator_rbac(&admin, "candela-system").await;
    common::create_namespace(&admin, NS).await;
    common::create_namespace(&admin, "monitoring").await;

    let metrics_port = testenv::free_port();
    let kubeconfig = env.dir.join("operator.kubeconfig");
    let _operator = testenv::Watched(testenv::spawn_watched_env(
        std::path::Path::new(env!("CARGO_BIN_EXE_candela-operator")),
        &[
            format!("--http-addr=127.0.0.1:{metrics_port}"),
            format!("--webhook-listen=127.0.0.1:{}", testenv::free_port()),
            "--lease-namespace=candela-system".into(),
            "--identity=hpa-e2e".into(),
        ],
        &[
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("RUST_LOG", "info".as_ref()),
        ],
        &dir.join("operator.log"),
    ));
    stack::wait_http_ok(
        "operator /readyz",
        &format!("http://127.0.0.1:{metrics_port}/readyz"),
        Duration::from_secs(60),
    )
    .await;

    let api: Api<InferenceDeployment> = Api::namespaced(admin.clone(), NS);
    let policy = json!([{ "type": "Pods", "value": 1, "periodSeconds": 5 }]);
    let obj: InferenceDeployment = serde_json::from_value(json!({
        "apiVersion": "candela.dev/v1alpha1", "kind": "InferenceDeployment",
        "metadata": { "name": "chat", "namespace": NS },
        "spec": {
            "model": { "source": "file:///models/SmolLM2-135M-Instruct.Q4_1.gguf", "servedName": SERVED },
            "engine": { "maxNumSeqs": 2 },
            "resources": { "gpus": 0 },
            "autoscaling": {
                "backend": "hpa", "minReplicas": 1, "maxReplicas": 3,
                "targets": { "waitingRequestsPerReplica": 4, "kvCacheUsage": 0.9 },
                "behavior": {
                    "scaleUp": { "stabilizationWindowSeconds": 0, "policies": policy },
                    "scaleDown": { "stabilizationWindowSeconds": 0, "policies": policy },
                },
            },
        },
    }))
    .expect("InferenceDeployment");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create");

    // The operator's HPA targets the custom resource; its Deployment's first pod stands
    // for the real engine.
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(admin.clone(), NS);
    let hpa = wait_for("the operator's HPA", Duration::from_secs(60), || async {
        hpas.get_opt("chat").await.ok().flatten()
    })
    .await;
    let spec = hpa.spec.expect("HPA spec");
    assert_eq!(spec.scale_target_ref.kind, "InferenceDeployment");
    let first = wait_for("the first engine pod", Duration::from_secs(60), || async {
        kubelet(&admin).await.into_iter().next()
    })
    .await;
    // Only this pod has an engine behind it (and so metrics): make the ReplicaSet
    // controller remove the metric-less pods first when the HPA scales down, or a
    // scale-down that happened to delete this pod would leave the HPA with no metrics.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let cost = json!({ "metadata": { "annotations": {
        "controller.kubernetes.io/pod-deletion-cost": "1000"
    }}});
    pods.patch(&first, &PatchParams::default(), &Patch::Merge(&cost))
        .await
        .expect("annotate the engine pod");

    let engine = stack::start_engine(&dir, SERVED, &["--max-num-seqs", "2"]).await;
    let prometheus = stack::start_prometheus(
        &dir,
        &format!(
            r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  # What the operator's ServiceMonitor yields in a cluster for this pod.
  - job_name: candela
    static_configs:
      - targets: ['127.0.0.1:{port}']
        labels: {{ namespace: {NS}, pod: {first}, service: chat }}
"#,
            port = engine.port,
        ),
    )
    .await;
    prometheus.wait_up("candela").await;

    // prometheus-adapter with the chart's rules, registered as the custom metrics API.
    let adapter_port = testenv::free_port();
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/candela/files/prometheus-adapter-rules.yaml");
    let admin_kubeconfig = env.dir.join("admin.kubeconfig").display().to_string();
    let bin = std::env::var_os("CANDELA_K8S_BIN").map(std::path::PathBuf::from);
    let adapter_bin = bin
        .map(|b| b.join("prometheus-adapter"))
        .filter(|p| p.exists())
        .expect("prometheus-adapter in $CANDELA_K8S_BIN (operator/testenv/build.sh builds it; operator/test.sh sets the variable)");
    let _adapter = testenv::Watched(testenv::spawn_watched(
        &adapter_bin,
        &[
            format!("--secure-port={adapter_port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--cert-dir={}", dir.join("adapter-certs").display()),
            format!("--lister-kubeconfig={admin_kubeconfig}"),
            format!("--authentication-kubeconfig={admin_kubeconfig}"),
            format!("--authorization-kubeconfig={admin_kubeconfig}"),
            format!("--prometheus-url={}/", prometheus.url),
            format!("--config={}", rules.display()),
            "--metrics-relist-interval=2s".into(),
            "--v=1".into(),
        ],
        &dir.join("prometheus-adapter.log"),
    ));
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "prometheus-adapter", "namespace": "monitoring" },
        "spec": { "type": "ExternalName", "externalName": "localhost",
                  "ports": [{ "name": "https", "port": adapter_port }] },
    }))
    .expect("Service");
    Api::<Service>::namespaced(admin.clone(), "monitoring")
        .create(&PostParams::default(), &service)
        .await
        .expect("adapter Service");
    let api_services = Api::<DynamicObject>::all_with(
        admin.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apiregistration.k8s.io",
            "v1",
            "APIService",
        )),
    );
    for (version, priority) in [("v1beta1", 100), ("v1beta2", 200)] {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": { "name": format!("{version}.custom.metrics.k8s.io") },
            "spec": {
                "group": "custom.metrics.k8s.io", "version": version,
                "service": { "namespace": "monitoring", "name": "prometheus-adapter", "port": adapter_port },
                "insecureSkipTLSVerify": true,
                "groupPriorityMinimum": 100, "versionPriority": priority,
            },
        }))
        .expect("APIService");
        api_services
            .create(&PostParams::default(), &obj)
            .await
            .expect("APIService");
    }
    wait_for(
        "the custom metrics API to serve the engine pod's queue",
        Duration::from_secs(90),
        || async { pod_metric(&admin, &first, "candela_num_requests_waiting").await },
    )
    .await;
    let kv = pod_metric(&admin, &first, "candela_kv_cache_usage_perc").await;
    assert_eq!(kv, Some(0.0), "idle engine: KV usage 0 through the adapter");

    // ---- Load: the HPA controller reads the queue through the adapter and scales up.
    let load = Instant::now();
    let mut bench = stack::start_bench(&dir, &engine.url, SERVED, PROMPTS);
    let mut steps: Vec<(f64, i32)> = Vec::new();
    let (mut last, mut max_seen, mut peak_waiting) = (1, 1, 0.0_f64);
    let mut load_end = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while load_end.is_none() || last > 1 {
        assert!(
            Instant::now() < deadline,
            "the HPA loop did not settle: steps {steps:?}; see {}",
            dir.display()
        );
        kubelet(&admin).await;
        let replicas = api.get("chat").await.expect("get").spec.replicas;
        if replicas != last {
            steps.push((load.elapsed().as_secs_f64(), replicas));
            last = replicas;
        }
        max_seen = max_seen.max(replicas);
        if load_end.is_none() {
            if let Some(w) = pod_metric(&admin, &first, "candela_num_requests_waiting").await {
                peak_waiting = peak_waiting.max(w);
            }
            if let Some(out) = bench.finished() {
                assert!(out.contains("Successful requests:"), "{out}");
                load_end = Some(load.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let load_end = load_end.expect("load ended");
    let replicas: Vec<i32> = steps.iter().map(|s| s.1).collect();
    assert!(
        peak_waiting > 4.0,
        "the adapter served the backlog ({peak_waiting})"
    );
    assert_eq!(
        max_seen, 3,
        "scaled to maxReplicas and never beyond: {steps:?}"
    );
    assert_eq!(replicas.last(), Some(&1), "back to minReplicas: {steps:?}");
    let up_at = steps
        .iter()
        .find(|s| s.1 == 3)
        .map(|s| s.0)
        .expect("reached 3");
    assert!(
        up_at < load_end,
        "max reached under load: {steps:?}, load ended {load_end:.1}s"
    );

    // The HPA's own record: it read the metric and scaled the custom resource.
    let hpa = hpas.get("chat").await.expect("HPA");
    let status = hpa.status.expect("HPA status");
    let conditions = status.conditions.unwrap_or_default();
    let active = conditions
        .iter()
        .find(|c| c.type_ == "ScalingActive")
        .expect("ScalingActive");
    assert_eq!(active.status, "True", "{conditions:?}");
    assert!(status.last_scale_time.is_some());
    let deployment: Api<Deployment> = Api::namespaced(admin.clone(), NS);
    let d = wait_for(
        "the Deployment back at 1",
        Duration::from_secs(60),
        || async {
            let d = deployment.get("chat").await.ok()?;
            (d.spec.as_ref()?.replicas == Some(1)).then_some(d)
        },
    )
    .await;
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(1));
    let infd = api.get("chat").await.expect("get");
    let ready = infd
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "AutoscalingReady"))
        .map(|c| (c.status.clone(), c.reason.clone()));
    assert_eq!(ready, Some(("True".into(), "HPAApplied".into())));
    let down_at = steps.last().map(|s| s.0).unwrap_or_default();
    println!(
        "hpa e2e: {PROMPTS} prompts; peak {peak_waiting} waiting per the custom metrics API; replica steps \
         (seconds after the load started, replicas) {steps:?}; load ended at {load_end:.1}s; back at 1 replica \
         {:.1}s after the load ended",
        down_at - load_end
    );
}
