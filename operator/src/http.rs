//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (process is
//! alive), `/readyz` (the controller or the leader-election standby loop is running) and
//! `POST /alertmanager` (the alerts autoscaling backend, see [`crate::webhook`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
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
    Json(payload): Json<Payload>,
) -> impl IntoResponse {
    let Some(client) = state.client else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "no Kubernetes client" })),
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
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": e.to_string() })),
            )
        }
    }
}
