//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (process is
//! alive), `/readyz` (the controller or the leader-election standby loop is running) and
//! `POST /alertmanager` (the alerts autoscaling backend, see [`crate::webhook`]).
//!
//! The webhook scales workloads, so it is closed unless a token is configured
//! (`--webhook-token`): Alertmanager must send `Authorization: Bearer <token>` (its
//! receiver's `http_config.authorization`). The token is checked before the body is read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use serde_json::json;

use crate::metrics::Metrics;
use crate::webhook::{self, Payload};

/// Shared state of the endpoints.
#[derive(Clone)]
pub struct HttpState {
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Set once the operator finished starting.
    pub ready: Arc<AtomicBool>,
    /// Client for the Alertmanager webhook (absent: the webhook answers 503).
    pub client: Option<kube::Client>,
    /// Bearer token the Alertmanager webhook requires (absent: the webhook answers 503).
    pub webhook_token: Option<Arc<str>>,
}

/// The router with all endpoints.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/alertmanager", post(alertmanager))
        .with_state(state)
}

/// Serves [`router`] on `addr` until the process exits.
///
/// # Errors
/// I/O errors binding or serving.
pub async fn serve(addr: SocketAddr, state: HttpState) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, router(state)).await
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn alertmanager(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let error = |status: StatusCode, message: String| (status, Json(json!({ "error": message })));
    let Some(token) = state.webhook_token.as_deref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the Alertmanager webhook is disabled: start the operator with --webhook-token \
             (env CANDELA_WEBHOOK_TOKEN)"
                .into(),
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <webhook token>)".into(),
        );
    }
    let payload: Payload = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("not an Alertmanager webhook payload: {e}"),
            );
        }
    };
    let Some(client) = state.client else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no Kubernetes client".into(),
        );
    };
    match webhook::handle(&client, &payload).await {
        Ok(changes) => {
            let scaled: Vec<_> = changes
                .into_iter()
                .map(|(namespace, name, replicas)| json!({ "namespace": namespace, "name": name, "replicas": replicas }))
                .collect();
            (StatusCode::OK, Json(json!({ "scaled": scaled })))
        }
        Err(e) => {
            state.metrics.reconcile_failed(&e);
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// Compares without an early exit, so response timing does not reveal the token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn state(token: Option<&str>) -> HttpState {
        HttpState {
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(true)),
            client: None,
            webhook_token: token.map(Arc::from),
        }
    }

    async fn post(state: HttpState, auth: Option<&str>, body: &str) -> (StatusCode, String) {
        let mut req =
            axum::http::Request::post("/alertmanager").header("content-type", "application/json");
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let response = router(state)
            .oneshot(req.body(Body::from(body.to_owned())).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn webhook_is_closed_without_a_configured_token() {
        let (status, body) = post(state(None), Some("Bearer x"), r#"{"alerts":[]}"#).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("--webhook-token"), "{body}");
    }

    #[tokio::test]
    async fn webhook_rejects_a_missing_or_wrong_token_before_reading_the_body() {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Basic c2VjcmV0"),
            Some("secret"),
        ] {
            let (status, body) = post(state(Some("secret")), auth, "not json").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
        }
    }

    #[tokio::test]
    async fn webhook_answers_a_malformed_payload_with_400() {
        let (status, body) = post(state(Some("secret")), Some("Bearer secret"), "{").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.contains("not an Alertmanager webhook payload"),
            "{body}"
        );
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
