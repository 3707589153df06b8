//! The Alertmanager webhook receiver of the `alerts` autoscaling backend: `POST
//! /alertmanager` on its own listener (`--webhook-listen`, default `0.0.0.0:8081`), apart
//! from `/metrics` and the probes, so a NetworkPolicy can open it to Alertmanager alone.
//!
//! The listener is HTTPS with the operator's `--ssl-*` flags (the token then never
//! crosses the network in clear; Alertmanager verifies the operator with the CA in its
//! receiver's `tls_config.ca_file`). Clients authenticate with the token, with or without
//! a client certificate.
//!
//! The webhook scales workloads, so it is closed unless a token is configured
//! (`--webhook-token`): Alertmanager must send `Authorization: Bearer <token>` (its
//! receiver's `http_config.authorization`); the token is checked before the body is read.
//! Every request gets a JSON answer:
//!
//! | answer | when |
//! |--------|------|
//! | 200 `{targets: [...]}` | at least one named InferenceDeployment uses the alerts backend; each target says `scaled_up`, `scaled_down` or `unchanged`, with the reason |
//! | 400 `{error}` | not a version-4 Alertmanager payload, or an alert without a valid `status`/`startsAt` (nothing changes) |
//! | 401 `{error}` | missing or wrong bearer token |
//! | 404 `{targets}` | no named InferenceDeployment exists |
//! | 409 `{targets}` | they exist, but none uses the alerts backend (each says which backend) |
//! | 422 `{error}` | no alert carries `namespace` and `inference_deployment` labels |
//! | 500 `{targets}` | an API call failed (Alertmanager retries; retries are safe) |
//! | 503 `{error}` | no token configured |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use crate::alerts::{Scaler, Verdict, payload};
use crate::metrics::Metrics;

/// Shared state of the webhook.
#[derive(Clone)]
pub struct WebhookState {
    /// Bearer token Alertmanager must send (absent: every request gets 503).
    pub token: Option<Arc<str>>,
    /// Applies the decisions (absent: 503 after the token and payload checks).
    pub scaler: Option<Scaler>,
    /// Operator metrics (answers by code, decisions by result).
    pub metrics: Arc<Metrics>,
}

/// The webhook's router.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/alertmanager", post(alertmanager))
        .with_state(state)
}

/// Serves [`router`] on `listener` until the process exits.
///
/// # Errors
/// I/O errors serving.
pub async fn serve(listener: candela_tls::Listener, state: WebhookState) -> std::io::Result<()> {
    tracing::info!(
        addr = %listener.local_addr(),
        https = listener.is_tls(),
        "serving the Alertmanager webhook POST /alertmanager"
    );
    axum::serve(listener, router(state)).await
}

async fn alertmanager(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A task of its own: Alertmanager gives up on a request after its group_interval and
    // closes the connection, which drops this handler; the decision (state write, then
    // scale write) must still run to its end.
    let task = tokio::spawn(async move {
        let (status, answer) = answer(&state, &headers, &body).await;
        state.metrics.webhook_request(status.as_u16());
        (status, answer)
    });
    match task.await {
        Ok((status, answer)) => (status, Json(answer)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": format!("the webhook task failed: {e}") })),
        )
            .into_response(),
    }
}

async fn answer(
    state: &WebhookState,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, serde_json::Value) {
    let error = |status: StatusCode, message: String| (status, json!({ "error": message }));
    let Some(token) = state.token.as_deref() else {
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
    let notification = match payload::parse(body) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if notification.targets.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({
                "error": "no alert names an InferenceDeployment (labels namespace and \
                          inference_deployment): nothing to scale",
                "unlabelledAlerts": notification.unlabelled,
            }),
        );
    }
    let Some(scaler) = &state.scaler else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no Kubernetes client".into(),
        );
    };
    let mut outcomes = Vec::with_capacity(notification.targets.len());
    for (target, alerts) in &notification.targets {
        outcomes.push(
            scaler
                .evaluate(&target.namespace, &target.name, alerts)
                .await,
        );
    }
    let any = |v: Verdict| outcomes.iter().any(|o| o.result == v);
    let status = if any(Verdict::Failed) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else if any(Verdict::ScaledUp) || any(Verdict::ScaledDown) || any(Verdict::Unchanged) {
        StatusCode::OK
    } else if any(Verdict::Ignored) {
        StatusCode::CONFLICT
    } else {
        StatusCode::NOT_FOUND
    };
    (
        status,
        json!({ "targets": outcomes, "unlabelledAlerts": notification.unlabelled }),
    )
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

    fn state(token: Option<&str>) -> WebhookState {
        WebhookState {
            token: token.map(Arc::from),
            scaler: None,
            metrics: Arc::new(Metrics::default()),
        }
    }

    async fn post(state: WebhookState, auth: Option<&str>, body: &str) -> (StatusCode, String) {
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
    async fn webhook_answers_malformed_and_unlabelled_payloads() {
        let s = || state(Some("secret"));
        let (status, body) = post(s(), Some("Bearer secret"), "{").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.contains("not an Alertmanager webhook payload"),
            "{body}"
        );
        let (status, body) = post(
            s(),
            Some("Bearer secret"),
            r#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"X"},"startsAt":"2026-01-01T00:00:00Z"}]}"#,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body.contains("\"unlabelledAlerts\":1"), "{body}");
        let metrics = s().metrics;
        let m = WebhookState {
            metrics: Arc::clone(&metrics),
            ..s()
        };
        post(m, Some("Bearer nope"), "{}").await;
        assert!(
            metrics
                .encode()
                .contains("candela_operator_alertmanager_webhook_requests_total{code=\"401\"} 1")
        );
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
