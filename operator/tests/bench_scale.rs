//! Benchmark (not a timed test; ignored by default): the real `candela-operator` binary,
//! running under its ClusterRole with leader election, against the real control plane.
//! Measures the time from creating N InferenceDeployments to all their children being
//! present with a status, and the operator's peak RSS.
//!
//! `cargo test --release -p candela-operator --test bench_scale -- --ignored --nocapture`
//! (N from `CANDELA_BENCH_N`, default 200).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use candela_operator::crd::InferenceDeployment;
use candela_operator::rbac;
use common::{testenv, wait_for};

const MANAGED: &str = "app.kubernetes.io/managed-by=candela-operator";

async fn grant(admin: &Client) {
    let pp = PatchParams::apply("candela-bench").force();
    Api::<ClusterRole>::all(admin.clone())
        .patch(rbac::CLUSTER_ROLE, &pp, &Patch::Apply(rbac::cluster_role()))
        .await
        .expect("ClusterRole");
    let subject = json!([{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": testenv::OPERATOR_USER }]);
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": { "name": rbac::CLUSTER_ROLE },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac::CLUSTER_ROLE },
        "subjects": subject,
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(rbac::CLUSTER_ROLE, &pp, &Patch::Apply(crb))
        .await
        .expect("ClusterRoleBinding");
    common::create_namespace(admin, "candela-system").await;
    Api::<Role>::namespaced(admin.clone(), "candela-system")
        .patch(
            rbac::LEADER_ROLE,
            &pp,
            &Patch::Apply(rbac::leader_election_role("candela-system")),
        )
        .await
        .expect("Role");
    let rb: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": rbac::LEADER_ROLE, "namespace": "candela-system" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": rbac::LEADER_ROLE },
        "subjects": subject,
    }))
    .expect("role binding");
    Api::<RoleBinding>::namespaced(admin.clone(), "candela-system")
        .patch(rbac::LEADER_ROLE, &pp, &Patch::Apply(rb))
        .await
        .expect("RoleBinding");
}

/// Peak resident set size of `pid` in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn count<K>(api: &Api<K>) -> usize
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list_metadata(&ListParams::default().labels(MANAGED))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_apply_many_inference_deployments() {
    let n: usize = std::env::var("CANDELA_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let env = testenv::shared();
    let admin = env.admin().await;
    common::install_candela_crd(&admin).await;
    grant(&admin).await;
    let ns = "bench";
    common::create_namespace(&admin, ns).await;

    let log = std::fs::File::create(env.dir.join("operator.log")).expect("log");
    let mut operator = Command::new(env!("CARGO_BIN_EXE_candela-operator"))
        .env("KUBECONFIG", env.dir.join("operator.kubeconfig"))
        .env("RUST_LOG", "warn")
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--lease-namespace",
            "candela-system",
            "--identity",
            "bench",
        ])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("operator starts");

    let infds: Api<InferenceDeployment> = Api::namespaced(admin.clone(), ns);
    let start = Instant::now();
    for i in 0..n {
        let obj: InferenceDeployment = serde_json::from_value(json!({
            "apiVersion": "candela.dev/v1alpha1", "kind": "InferenceDeployment",
            "metadata": { "name": format!("model-{i:03}"), "namespace": ns },
            "spec": {
                "model": { "source": format!("hf://org/model-{i}") },
                "engine": { "maxNumSeqs": 64 },
                "autoscaling": { "minReplicas": 1, "maxReplicas": 4 },
            },
        }))
        .expect("object");
        infds
            .create(&PostParams::default(), &obj)
            .await
            .expect("create");
    }
    let created = start.elapsed();

    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    let services: Api<Service> = Api::namespaced(admin.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(admin.clone(), ns);
    wait_for(
        &format!("children of {n} InferenceDeployments"),
        Duration::from_secs(600),
        || async {
            let done = count(&deployments).await == n
                && count(&services).await == n
                && count(&config_maps).await == n
                && count(&hpas).await == n;
            done.then_some(())
        },
    )
    .await;
    let children_at = start.elapsed();
    wait_for("every status written", Duration::from_secs(600), || async {
        let list = infds.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .all(|i| {
                i.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation == Some(1))
            })
            .then_some(())
    })
    .await;
    let status_at = start.elapsed();
    let rss = peak_rss_kib(operator.id());
    let _ = operator.kill();
    let _ = operator.wait();

    println!(
        "bench: {n} InferenceDeployments created in {:.1}s; all {} children present after {:.1}s; \
         all statuses after {:.1}s; operator peak RSS {} MiB",
        created.as_secs_f64(),
        n * 4,
        children_at.as_secs_f64(),
        status_at.as_secs_f64(),
        rss.map_or_else(
            || "?".to_owned(),
            |kib| format!("{:.1}", kib as f64 / 1024.0)
        ),
    );
}
