//! The Helm chart installed with the real `helm` binary into the real kube-apiserver of the
//! test control plane (server-side validation of every object, the upstream ServiceMonitor
//! CRD installed first): the CRD it ships is served, the ClusterRole is the operator's own,
//! the monitoring labels reach the operator, the webhook token and the quick-start CA and
//! certificates survive `helm upgrade` (Helm's `lookup` against a real cluster), an example
//! InferenceDeployment is accepted, and `helm uninstall` removes what the chart created.
//!
//! helm comes from `CANDELA_HELM` or `$CANDELA_CACHE/helm/3.19.0/helm` (default cache
//! `~/.cache/candela`; installed by
//! `scripts/chart-tests.sh install`, which `operator/test.sh` runs when it is missing).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::testenv;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn helm_binary() -> PathBuf {
    let cache = || {
        std::env::var_os("CANDELA_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/candela")))
    };
    let path = std::env::var_os("CANDELA_HELM")
        .map(PathBuf::from)
        .or_else(|| cache().map(|c| c.join("helm/3.19.0/helm")))
        .expect("HOME, CANDELA_CACHE or CANDELA_HELM is set");
    assert!(
        path.exists(),
        "helm not found at {}: run `scripts/chart-tests.sh install` (operator/test.sh does)",
        path.display()
    );
    path
}

/// Runs helm against the test apiserver as admin; panics with its output on failure.
fn helm(args: &[&str]) -> String {
    let env = testenv::shared();
    let out = Command::new(helm_binary())
        .args(args)
        .arg("--kubeconfig")
        .arg(env.dir.join("admin.kubeconfig"))
        .env("HELM_CACHE_HOME", env.dir.join("helm/cache"))
        .env("HELM_CONFIG_HOME", env.dir.join("helm/config"))
        .env("HELM_DATA_HOME", env.dir.join("helm/data"))
        .output()
        .expect("helm runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {args:?} failed:\n{text}");
    text
}

fn token(secret: &Secret) -> Vec<u8> {
    secret.data.as_ref().expect("data")["token"].0.clone()
}

#[tokio::test]
async fn helm_installs_upgrades_and_uninstalls_the_chart() {
    let env = testenv::shared();
    let admin = env.admin().await;
    // The upstream ServiceMonitor CRD, as kube-prometheus-stack would have installed it.
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(
        &std::fs::read_to_string(
            root().join("operator/tests/data/crds/monitoring.coreos.com_servicemonitors.yaml"),
        )
        .expect("ServiceMonitor CRD"),
    )
    .expect("CRD parses");
    common::apply_crd(&admin, &crd).await;
    common::create_namespace(&admin, "monitoring").await;

    let chart = root().join("charts/candela");
    let chart = chart.to_str().expect("utf-8 path");
    let values = root().join("charts/candela/ci/all-features.yaml");
    let values = values.to_str().expect("utf-8 path");
    let install = helm(&[
        "install",
        "candela",
        chart,
        "-n",
        "candela-system",
        "--create-namespace",
        "-f",
        values,
    ]);
    assert!(install.contains("STATUS: deployed"), "{install}");
    assert!(
        install.contains("receivers:"),
        "NOTES print the Alertmanager receiver:\n{install}"
    );

    // The chart's CRD is served: an example InferenceDeployment is accepted.
    common::create_namespace(&admin, "llm").await;
    let mut example = common::load_dynamic(&root().join("deploy/examples/alerts-autoscaling.yaml"));
    example.metadata.namespace = Some("llm".into());
    common::dynamic_infds(&admin, "llm")
        .create(&PostParams::default(), &example)
        .await
        .expect("example accepted once the chart's CRD is installed");

    // The ClusterRole is exactly the operator's.
    let role = Api::<ClusterRole>::all(admin.clone())
        .get("candela")
        .await
        .expect("ClusterRole");
    assert_eq!(role.rules, candela_operator::rbac::cluster_role().rules);

    // The operator gets the monitoring labels and the webhook token from the Secret.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "candela-system");
    let deployment = deployments.get("candela").await.expect("Deployment");
    let pod = deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    let env_vars = pod.containers[0].env.clone().unwrap_or_default();
    let var = |name: &str| env_vars.iter().find(|e| e.name == name).cloned();
    assert_eq!(
        var("CANDELA_MONITORING_LABELS")
            .and_then(|e| e.value)
            .as_deref(),
        Some("release=prom-stack,team=ml-platform")
    );
    let from_secret = var("CANDELA_WEBHOOK_TOKEN")
        .and_then(|e| e.value_from)
        .and_then(|v| v.secret_key_ref)
        .expect("token from a Secret");
    assert_eq!(from_secret.name, "candela-webhook");
    // The webhook listens on a port of its own, exposed by the Service next to the metrics.
    let args = pod.containers[0].args.clone().unwrap_or_default();
    assert!(
        args.contains(&"--webhook-listen=0.0.0.0:8081".to_owned()),
        "{args:?}"
    );
    let service =
        Api::<k8s_openapi::api::core::v1::Service>::namespaced(admin.clone(), "candela-system")
            .get("candela")
            .await
            .expect("Service");
    let ports: Vec<(String, i32)> = service
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.name.unwrap_or_default(), p.port))
        .collect();
    assert_eq!(
        ports,
        [("http".to_owned(), 8080), ("webhook".to_owned(), 8081)]
    );
    assert!(
        install.contains("https://candela.candela-system.svc:8081/alertmanager"),
        "NOTES name the webhook port, over HTTPS:\n{install}"
    );
    assert!(
        install.contains("NOT FOR PRODUCTION"),
        "NOTES warn about the quick-start CA:\n{install}"
    );
    // HTTPS from the quick-start CA's Secret; no cert-manager here, so no ClusterIssuer and
    // no default issuer.
    assert!(
        args.contains(&"--ssl-certfile=/etc/candela/tls/tls.crt".to_owned())
            && args.contains(&"--ssl-cert-reqs=1".to_owned()),
        "{args:?}"
    );
    assert!(var("CANDELA_CERT_MANAGER_ISSUER").is_none());

    // The ServiceMonitor passed the upstream CRD's validation and carries the release label.
    let sm_api: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        "candela-system",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "monitoring.coreos.com",
            "v1",
            "ServiceMonitor",
        )),
    );
    let sm = sm_api.get("candela").await.expect("ServiceMonitor");
    assert_eq!(
        sm.metadata
            .labels
            .expect("labels")
            .get("release")
            .map(String::as_str),
        Some("prom-stack")
    );

    // One token, in the release namespace and Alertmanager's, kept across upgrades.
    let secrets = |ns: &str| Api::<Secret>::namespaced(admin.clone(), ns);
    let before = token(
        &secrets("candela-system")
            .get("candela-webhook")
            .await
            .expect("Secret"),
    );
    assert_eq!(before.len(), 40);
    assert_eq!(
        before,
        token(
            &secrets("monitoring")
                .get("candela-webhook")
                .await
                .expect("copy")
        )
    );
    let tls_data = |secret: Secret| secret.data.expect("data");
    let tls_before = tls_data(
        secrets("candela-system")
            .get("candela-tls")
            .await
            .expect("TLS Secret"),
    );
    assert!(
        secrets("cert-manager")
            .get_opt("candela-ca")
            .await
            .map_or(true, |s| s.is_none()),
        "the CA is copied for cert-manager only where cert-manager is served"
    );
    helm(&[
        "upgrade",
        "candela",
        chart,
        "-n",
        "candela-system",
        "-f",
        values,
        "--set",
        "replicaCount=4",
    ]);
    let after = token(
        &secrets("candela-system")
            .get("candela-webhook")
            .await
            .expect("Secret"),
    );
    assert_eq!(before, after, "helm upgrade must keep the webhook token");
    let tls_after = tls_data(
        secrets("candela-system")
            .get("candela-tls")
            .await
            .expect("TLS Secret"),
    );
    assert_eq!(
        tls_before, tls_after,
        "helm upgrade must keep the CA and the operator's certificate"
    );
    assert_eq!(
        deployments
            .get("candela")
            .await
            .expect("Deployment")
            .spec
            .and_then(|s| s.replicas),
        Some(4)
    );

    helm(&["uninstall", "candela", "-n", "candela-system"]);
    common::wait_for("the Deployment to go", Duration::from_secs(30), || {
        let deployments = deployments.clone();
        async move {
            deployments
                .get_opt("candela")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    // Helm leaves CRDs (and so the InferenceDeployments) in place on uninstall.
    assert!(
        Api::<CustomResourceDefinition>::all(admin.clone())
            .get_opt("inferencedeployments.candela.dev")
            .await
            .expect("get CRD")
            .is_some()
    );
}
