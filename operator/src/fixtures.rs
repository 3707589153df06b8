//! Test fixtures: InferenceDeployment objects and a mock API server driven by a
//! [`Scenario`] (the controller-rs pattern), so every reconcile branch runs without a
//! cluster. The mock answers each request from the scenario's rules and records it; tests
//! then assert on the recorded calls.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

use crate::builders::thirdparty::ThirdParty;
use crate::crd::InferenceDeployment;

/// An InferenceDeployment `ns/test` (uid set, generation 1) with the spec from `yaml`
/// (e.g. `"spec: {model: {source: hf://org/m}}"`).
pub fn infd(yaml: &str) -> InferenceDeployment {
    let mut value: Value = serde_yaml_ng::from_str(yaml).expect("fixture yaml");
    value["apiVersion"] = json!("candela.dev/v1alpha1");
    value["kind"] = json!("InferenceDeployment");
    value["metadata"] =
        json!({ "name": "test", "namespace": "ns", "uid": "uid-1", "generation": 1 });
    serde_json::from_value(value).expect("fixture parses")
}

/// What the mock API server does.
#[derive(Clone, Debug, PartialEq)]
pub enum Scenario {
    /// No third-party CRDs; the Deployment has no ready pods yet.
    Fresh,
    /// All third-party CRDs installed; the Deployment is fully available.
    AllCrdsAvailable,
    /// Applying the Deployment fails with this HTTP status.
    ApplyFails(u16),
    /// No third-party CRDs; a child the spec no longer wants (HPA) exists and is ours.
    StaleHpa,
}

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// Path without the query string.
    pub path: String,
    /// Query string.
    pub query: String,
    /// JSON body (Null when empty).
    pub body: Value,
}

impl Call {
    /// `"PATCH /apis/apps/v1/namespaces/ns/deployments/test"`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// A client backed by the mock, and the calls it records.
pub struct MockServer {
    /// Recorded calls, in order.
    pub calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Starts the mock for `scenario`; returns it with a client that talks to it.
    pub fn start(scenario: Scenario) -> (Self, Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&calls);
        let task = tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.expect("request body");
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("json body")
                };
                let call = Call {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    body,
                };
                let (status, reply) = respond(&scenario, &call);
                recorded.lock().expect("calls lock").push(call);
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).expect("reply")))
                    .expect("response");
                send.send_response(response);
            }
        });
        (Self { calls, task }, Client::new(service, "default"))
    }

    /// The recorded calls as `METHOD path` lines.
    pub fn lines(&self) -> Vec<String> {
        self.calls
            .lock()
            .expect("calls lock")
            .iter()
            .map(Call::line)
            .collect()
    }

    /// The first recorded call matching `method` and `path`.
    pub fn find(&self, method: &Method, path: &str) -> Option<Call> {
        self.calls
            .lock()
            .expect("calls lock")
            .iter()
            .find(|c| c.method == method && c.path == path)
            .cloned()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" }),
    )
}

fn respond(scenario: &Scenario, call: &Call) -> (StatusCode, Value) {
    let crds = matches!(scenario, Scenario::AllCrdsAvailable);
    // API discovery of third-party groups.
    if call.method == Method::GET
        && call.path.starts_with("/apis/")
        && call.path.matches('/').count() == 3
    {
        let api_version = call.path.trim_start_matches("/apis/");
        let kinds: Vec<Value> = ThirdParty::ALL
            .into_iter()
            .filter(|k| k.api_version() == api_version)
            .map(|k| json!({ "name": k.api_resource().plural, "kind": k.kind(), "namespaced": true, "singularName": "", "verbs": ["get"] }))
            .collect();
        if !crds || kinds.is_empty() {
            return (StatusCode::NOT_FOUND, json!("404 page not found"));
        }
        return (
            StatusCode::OK,
            json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": kinds }),
        );
    }
    match call.method {
        Method::PATCH if call.path.ends_with("/deployments/test") => {
            if let Scenario::ApplyFails(code) = scenario {
                let status =
                    StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return (
                    status,
                    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": "boom", "reason": "InternalError" }),
                );
            }
            let mut obj = call.body.clone();
            obj["metadata"]["generation"] = json!(1);
            let ready = i32::from(crds);
            obj["status"] = json!({
                "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                "readyReplicas": ready, "availableReplicas": ready,
            });
            (StatusCode::OK, obj)
        }
        Method::PATCH if call.path.ends_with("/status") => {
            // Server-side apply of the status returns the whole object.
            let mut obj = call.body.clone();
            obj["metadata"] =
                json!({ "name": "test", "namespace": "ns", "uid": "uid-1", "generation": 1 });
            obj["spec"] = json!({ "model": { "source": "hf://org/m" } });
            (StatusCode::OK, obj)
        }
        Method::PATCH => (StatusCode::OK, call.body.clone()),
        Method::POST if call.path.contains("/events") => (StatusCode::CREATED, call.body.clone()),
        Method::GET
            if call.path.ends_with("/horizontalpodautoscalers/test")
                && *scenario == Scenario::StaleHpa =>
        {
            (
                StatusCode::OK,
                json!({
                    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": { "name": "test", "namespace": "ns", "ownerReferences": [{
                        "apiVersion": "candela.dev/v1alpha1", "kind": "InferenceDeployment", "name": "test", "uid": "uid-1", "controller": true,
                    }]},
                    "spec": { "scaleTargetRef": { "kind": "InferenceDeployment", "name": "test" }, "maxReplicas": 3 },
                }),
            )
        }
        Method::DELETE => (
            StatusCode::OK,
            json!({ "kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200 }),
        ),
        _ => not_found(),
    }
}
