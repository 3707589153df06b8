//! Helpers shared by the tests that run against the real control plane.

#![allow(dead_code)]

pub mod certs;
pub mod peft;
pub mod stack;
pub mod testenv;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use candela_operator::builders::thirdparty::ThirdParty;
use candela_operator::crd::InferenceDeployment;
use candela_operator::rbac;

/// Polls `check` every 200 ms until it returns `Some`, panicking with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Applies a CRD and waits until it is Established.
pub async fn apply_crd(client: &Client, crd: &CustomResourceDefinition) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().expect("CRD name");
    api.patch(
        &name,
        &PatchParams::apply("candela-tests").force(),
        &Patch::Apply(crd),
    )
    .await
    .expect("CRD applies");
    wait_for(
        &format!("CRD {name} established"),
        Duration::from_secs(30),
        || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await.ok()?;
                let established = crd
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            }
        },
    )
    .await;
}

/// Installs the committed `crds/inferencedeployment.yaml` (the file, not the Rust type, so
/// the test proves the committed artifact works).
pub async fn install_candela_crd(client: &Client) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/inferencedeployment.yaml");
    let text = std::fs::read_to_string(path).expect("CRD file");
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(&text).expect("CRD parses");
    apply_crd(client, &crd).await;
}

/// A permissive stand-in CRD for a third-party kind (ServiceMonitor, ScaledObject, …).
pub fn stand_in_crd(kind: ThirdParty) -> CustomResourceDefinition {
    let ar = kind.api_resource();
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": kind.crd_name() },
        "spec": {
            "group": ar.group,
            "scope": "Namespaced",
            "names": { "kind": ar.kind, "plural": ar.plural, "singular": ar.kind.to_lowercase(), "listKind": format!("{}List", ar.kind) },
            "versions": [{
                "name": ar.version, "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } },
            }],
        },
    }))
    .expect("stand-in CRD")
}

/// Installs cert-manager's real Certificate CRD (`tests/data/crds/`), so the apiserver
/// checks the operator's Certificates against cert-manager's own schema.
pub async fn install_cert_manager_crd(client: &Client) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/crds/cert-manager.io_certificates.yaml");
    let text = std::fs::read_to_string(&path).expect("cert-manager CRD file");
    let crd: CustomResourceDefinition =
        serde_yaml_ng::from_str(&text).expect("cert-manager CRD parses");
    apply_crd(client, &crd).await;
}

/// Creates a namespace (ignoring AlreadyExists).
pub async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name } })).expect("namespace");
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

/// The dynamic API of InferenceDeployments, for objects the typed struct cannot express
/// (invalid ones).
pub fn dynamic_infds(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<InferenceDeployment>(&());
    Api::namespaced_with(client.clone(), namespace, &ar)
}

/// Parses a YAML manifest into a dynamic object.
pub fn load_dynamic(path: &Path) -> DynamicObject {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether `obj` has a controller owner reference to the InferenceDeployment with `uid`.
pub fn owned_by<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.meta().owner_references.iter().flatten().any(|r| {
        r.uid == uid
            && r.controller == Some(true)
            && r.kind == "InferenceDeployment"
            && r.api_version == "candela.dev/v1alpha1"
    })
}

/// Grants the operator's user the generated ClusterRole and leader-election Role.
pub async fn grant_operator_rbac(admin: &Client, lease_ns: &str) {
    let pp = PatchParams::apply("candela-tests").force();
    Api::<ClusterRole>::all(admin.clone())
        .patch(rbac::CLUSTER_ROLE, &pp, &Patch::Apply(rbac::cluster_role()))
        .await
        .expect("ClusterRole");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": { "name": rbac::CLUSTER_ROLE },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac::CLUSTER_ROLE },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": testenv::OPERATOR_USER }],
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(rbac::CLUSTER_ROLE, &pp, &Patch::Apply(binding))
        .await
        .expect("ClusterRoleBinding");
    create_namespace(admin, lease_ns).await;
    let role = rbac::leader_election_role(lease_ns);
    Api::<Role>::namespaced(admin.clone(), lease_ns)
        .patch(rbac::LEADER_ROLE, &pp, &Patch::Apply(role))
        .await
        .expect("Role");
    let role_binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": rbac::LEADER_ROLE, "namespace": lease_ns },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": rbac::LEADER_ROLE },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": testenv::OPERATOR_USER }],
    }))
    .expect("role binding");
    Api::<RoleBinding>::namespaced(admin.clone(), lease_ns)
        .patch(rbac::LEADER_ROLE, &pp, &Patch::Apply(role_binding))
        .await
        .expect("RoleBinding");
    // The RBAC authorizer sees new bindings through an informer: wait until it does
    // (patching the scale of a missing object answers 404 once allowed, 403 before).
    let operator = testenv::shared().operator().await;
    let probe: Api<InferenceDeployment> = Api::namespaced(operator, "default");
    wait_for("RBAC to propagate", Duration::from_secs(60), || async {
        let patch = Patch::Merge(json!({ "spec": { "replicas": 1 } }));
        match probe
            .patch_scale("rbac-probe", &PatchParams::default(), &patch)
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 404 => Some(()),
            _ => None,
        }
    })
    .await;
}

/// Marks every pod of `name` Running and Ready, as a kubelet would.
pub async fn make_pods_ready(admin: &Client, ns: &str, name: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let selector = format!("app.kubernetes.io/instance={name}");
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("pods");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for pod in &list.items {
        let status = json!({ "status": {
            "phase": "Running",
            "conditions": [
                { "type": "Ready", "status": "True", "lastTransitionTime": now },
                { "type": "ContainersReady", "status": "True", "lastTransitionTime": now },
            ],
        }});
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("pod status");
    }
    list.items.len()
}
