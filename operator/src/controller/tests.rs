//! Reconcile branches against the mock API server (controller-rs `Scenario` pattern).

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use kube::runtime::controller::Action;

use super::{Context, PROGRESS_POLL, RESYNC, error_policy, reconcile};
use crate::Error;
use crate::builders::BuildConfig;
use crate::fixtures::{MockServer, Scenario, infd};
use crate::metrics::Metrics;

const NS: &str = "/namespaces/ns";

fn context(client: kube::Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        BuildConfig::default(),
        Arc::new(Metrics::default()),
    ))
}

fn status_patch(mock: &MockServer) -> serde_json::Value {
    let call = mock
        .find(
            &Method::PATCH,
            &format!("/apis/candela.dev/v1alpha1{NS}/inferencedeployments/test/status"),
        )
        .expect("status was patched");
    assert!(
        call.query.contains("fieldManager=candela-operator"),
        "{}",
        call.query
    );
    call.body["status"].clone()
}

fn condition(status: &serde_json::Value, type_: &str) -> (String, String) {
    let c = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .expect(type_);
    (
        c["status"].as_str().unwrap_or_default().into(),
        c["reason"].as_str().unwrap_or_default().into(),
    )
}

#[tokio::test]
async fn fresh_object_without_third_party_crds() {
    let (mock, client) = MockServer::start(Scenario::Fresh);
    let ctx = context(client);
    let obj = Arc::new(infd("spec: {model: {source: hf://org/m}}"));
    let action = reconcile(obj, ctx).await.expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(PROGRESS_POLL));

    let lines = mock.lines();
    for expected in [
        format!("PATCH /apis/apps/v1{NS}/deployments/test"),
        format!("PATCH /api/v1{NS}/services/test"),
        format!("PATCH /api/v1{NS}/configmaps/test-dashboards"),
        format!("GET /apis/autoscaling/v2{NS}/horizontalpodautoscalers/test"),
        "GET /apis/monitoring.coreos.com/v1".to_owned(),
        "GET /apis/keda.sh/v1alpha1".to_owned(),
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected} in {lines:#?}"
        );
    }
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("servicemonitors") || l.contains("prometheusrules")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("DELETE")),
        "nothing to delete: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("POST /apis/events.k8s.io/v1")),
        "events published: {lines:#?}"
    );

    let status = status_patch(&mock);
    assert_eq!(
        condition(&status, "MonitoringReady"),
        ("False".into(), "CRDMissing".into())
    );
    assert_eq!(
        condition(&status, "Ready"),
        ("False".into(), "NoReplicasAvailable".into())
    );
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["autoscaling"], "off");
}

#[tokio::test]
async fn all_crds_installed_and_deployment_available() {
    let (mock, client) = MockServer::start(Scenario::AllCrdsAvailable);
    let obj = Arc::new(infd(
        "spec: {model: {source: hf://org/m}, autoscaling: {backend: keda, maxReplicas: 4}}",
    ));
    let action = reconcile(obj, context(client))
        .await
        .expect("reconcile succeeds");
    assert_eq!(action, Action::requeue(RESYNC));

    let lines = mock.lines();
    for expected in [
        format!("PATCH /apis/monitoring.coreos.com/v1{NS}/servicemonitors/test"),
        format!("PATCH /apis/monitoring.coreos.com/v1{NS}/prometheusrules/test"),
        format!("PATCH /apis/keda.sh/v1alpha1{NS}/scaledobjects/test"),
        // Unwanted kinds whose CRDs exist are checked for stale children.
        format!("GET /apis/grafana.integreatly.org/v1beta1{NS}/grafanadashboards/test-dashboards"),
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected} in {lines:#?}"
        );
    }
    let so = mock
        .find(
            &Method::PATCH,
            &format!("/apis/keda.sh/v1alpha1{NS}/scaledobjects/test"),
        )
        .expect("ScaledObject");
    assert_eq!(
        so.body["spec"]["scaleTargetRef"]["kind"],
        "InferenceDeployment"
    );
    assert_eq!(so.body["metadata"]["ownerReferences"][0]["uid"], "uid-1");

    let status = status_patch(&mock);
    assert_eq!(
        condition(&status, "Ready"),
        ("True".into(), "ReplicasAvailable".into())
    );
    assert_eq!(
        condition(&status, "MonitoringReady"),
        ("True".into(), "Applied".into())
    );
    assert_eq!(
        condition(&status, "AutoscalingReady"),
        ("True".into(), "ScaledObjectApplied".into())
    );
    assert_eq!(status["autoscaling"], "keda 1-4");
}

#[tokio::test]
async fn stale_owned_hpa_is_deleted_when_autoscaling_is_off() {
    let (mock, client) = MockServer::start(Scenario::StaleHpa);
    let obj = Arc::new(infd("spec: {model: {source: hf://org/m}}"));
    reconcile(obj, context(client))
        .await
        .expect("reconcile succeeds");
    let delete = format!("DELETE /apis/autoscaling/v2{NS}/horizontalpodautoscalers/test");
    assert!(mock.lines().contains(&delete), "{:#?}", mock.lines());
}

#[tokio::test]
async fn invalid_spec_becomes_a_condition_not_an_error() {
    let (mock, client) = MockServer::start(Scenario::Fresh);
    // The schema rejects this source; the reconciler must still cope if it gets through.
    let obj = Arc::new(infd("spec: {model: {source: s3://bucket/model}}"));
    let action = reconcile(obj, context(client))
        .await
        .expect("no error for an invalid spec");
    assert_eq!(action, Action::requeue(RESYNC));
    let lines = mock.lines();
    assert!(
        !lines.iter().any(|l| l.starts_with("PATCH /apis/apps/v1")),
        "no Deployment applied: {lines:#?}"
    );
    let status = status_patch(&mock);
    assert_eq!(
        condition(&status, "Degraded"),
        ("True".into(), "InvalidSpec".into())
    );
}

/// TLS whose certificates cert-manager must issue, without cert-manager: an `InvalidSpec`
/// naming the field, and nothing applied (no pods waiting for a Secret nothing writes,
/// never plain HTTP).
#[tokio::test]
async fn tls_without_a_secret_or_cert_manager_is_an_invalid_spec() {
    let (mock, client) = MockServer::start(Scenario::Fresh);
    let ctx = Arc::new(Context::new(
        client,
        BuildConfig {
            cert_manager_issuer: Some(
                crate::crd::IssuerRef::parse_flag("ClusterIssuer/ca").unwrap(),
            ),
            ..BuildConfig::default()
        },
        Arc::new(Metrics::default()),
    ));
    let obj = Arc::new(infd(
        "spec: {model: {source: hf://org/m}, monitoring: {tls: {}}}",
    ));
    let action = reconcile(obj, ctx).await.expect("no error");
    assert_eq!(action, Action::requeue(RESYNC));
    let lines = mock.lines();
    assert!(
        !lines.iter().any(|l| l.starts_with("PATCH /apis/apps/v1")),
        "no Deployment applied: {lines:#?}"
    );
    let status = status_patch(&mock);
    assert_eq!(
        condition(&status, "Degraded"),
        ("True".into(), "InvalidSpec".into())
    );
    let message = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("spec.monitoring.tls: no secretName, and cert-manager is not installed (certificates.cert-manager.io"),
        "{message}"
    );
}

/// With cert-manager the Certificates are applied before the Deployment that mounts their
/// Secrets, and `status.endpoint` says https.
#[tokio::test]
async fn tls_with_cert_manager_applies_the_certificates_first() {
    let (mock, client) = MockServer::start(Scenario::AllCrdsAvailable);
    let obj = Arc::new(infd(
        "spec: {model: {source: hf://org/m}, tls: {certManager: {issuerRef: {name: ca}}}, \
         monitoring: {tls: {certManager: {issuerRef: {name: ca}}}}}",
    ));
    reconcile(obj, context(client))
        .await
        .expect("reconcile succeeds");
    let lines = mock.lines();
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("missing {line} in {lines:#?}"))
    };
    let deployment = at(&format!("PATCH /apis/apps/v1{NS}/deployments/test"));
    for cert in ["test-tls", "test-metrics-tls", "test-metrics-client"] {
        assert!(
            at(&format!(
                "PATCH /apis/cert-manager.io/v1{NS}/certificates/{cert}"
            )) < deployment
        );
    }
    let sm = mock
        .find(
            &Method::PATCH,
            &format!("/apis/monitoring.coreos.com/v1{NS}/servicemonitors/test"),
        )
        .expect("ServiceMonitor");
    assert_eq!(sm.body["spec"]["endpoints"][0]["scheme"], "https");
    let status = status_patch(&mock);
    assert_eq!(status["endpoint"], "https://test.ns.svc:8000/v1");
    assert_eq!(
        condition(&status, "Ready"),
        ("True".into(), "ReplicasAvailable".into())
    );
}

#[tokio::test]
async fn api_failures_back_off_exponentially_and_are_counted() {
    let (_mock, client) = MockServer::start(Scenario::ApplyFails(500));
    let ctx = context(client);
    let obj = Arc::new(infd("spec: {model: {source: hf://org/m}}"));
    let err = reconcile(Arc::clone(&obj), Arc::clone(&ctx))
        .await
        .expect_err("apply fails");
    assert!(matches!(err, Error::Kube(_)), "{err}");
    let delays: Vec<Action> = (0..8)
        .map(|_| error_policy(Arc::clone(&obj), &err, Arc::clone(&ctx)))
        .collect();
    let secs = [5, 10, 20, 40, 80, 160, 300, 300];
    assert_eq!(
        delays,
        secs.map(|s| Action::requeue(Duration::from_secs(s)))
            .to_vec()
    );
    assert!(
        ctx.metrics
            .encode()
            .contains("candela_operator_reconcile_failures_total{error=\"kube\"} 8")
    );
}
