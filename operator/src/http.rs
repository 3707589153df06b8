//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (process is
//! alive) and `/readyz` (the controller or the leader-election standby loop is running).
//! The Alertmanager webhook has a listener of its own ([`crate::webhook`]).
//!
//! Both listeners are plain or HTTPS ([`candela_tls::Listener`], the operator's
//! `--ssl-*` flags; certificates reload when the Secret rotates). With client
//! certificates on (`--ssl-cert-reqs 1`) `/metrics` answers only clients that proved a
//! certificate signed by `--ssl-ca-certs` (Prometheus), while the kubelet's probes of
//! `/healthz` and `/readyz` need none.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use candela_tls::{Listener, PeerInfo};

use crate::metrics::Metrics;

/// Shared state of the endpoints.
#[derive(Clone)]
pub struct HttpState {
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Set once the operator finished starting.
    pub ready: Arc<AtomicBool>,
    /// `/metrics` only for clients with a verified certificate (`--ssl-cert-reqs` 1 or 2).
    pub metrics_need_client_cert: bool,
}

/// The router with all endpoints.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves [`router`] on `listener` until the process exits.
///
/// # Errors
/// I/O errors serving.
pub async fn serve(listener: Listener, state: HttpState) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr(), https = listener.is_tls(), "serving /metrics, /healthz, /readyz");
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<PeerInfo>(),
    )
    .await
}

async fn metrics(
    State(state): State<HttpState>,
    peer: Option<Extension<ConnectInfo<PeerInfo>>>,
) -> Response {
    let proved = peer.is_some_and(|Extension(ConnectInfo(p))| p.client_cert);
    if state.metrics_need_client_cert && !proved {
        return (
            StatusCode::FORBIDDEN,
            "/metrics needs a client certificate signed by the operator's --ssl-ca-certs\n",
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn get(path: &str, ready: bool) -> (StatusCode, String) {
        let state = HttpState {
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(ready)),
            metrics_need_client_cert: false,
        };
        let response = router(state)
            .oneshot(
                axum::http::Request::get(path)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn probes_and_metrics() {
        assert_eq!(get("/healthz", false).await.0, StatusCode::OK);
        assert_eq!(
            get("/readyz", false).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get("/readyz", true).await.0, StatusCode::OK);
        let (status, text) = get("/metrics", true).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("candela_operator_reconciliations_total"),
            "{text}"
        );
        // The webhook is not on this listener.
        let response = router(HttpState {
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(true)),
            metrics_need_client_cert: false,
        })
        .oneshot(
            axum::http::Request::post("/alertmanager")
                .body(Body::from("{}"))
                .expect("request"),
        )
        .await
        .expect("response");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    /// With client certificates on, a connection that proved none gets 403 on /metrics;
    /// the probes stay open.
    #[tokio::test]
    async fn metrics_need_a_client_certificate_when_asked() {
        let state = HttpState {
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(true)),
            metrics_need_client_cert: true,
        };
        let call = |path: &str, cert: Option<bool>| {
            let mut request = axum::http::Request::get(path)
                .body(Body::empty())
                .expect("request");
            if let Some(client_cert) = cert {
                request.extensions_mut().insert(ConnectInfo(PeerInfo {
                    remote: ([127, 0, 0, 1], 1).into(),
                    client_cert,
                }));
            }
            router(state.clone()).oneshot(request)
        };
        for cert in [None, Some(false)] {
            let r = call("/metrics", cert).await.expect("response");
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{cert:?}");
        }
        assert_eq!(
            call("/metrics", Some(true))
                .await
                .expect("response")
                .status(),
            StatusCode::OK
        );
        for probe in ["/healthz", "/readyz"] {
            assert_eq!(
                call(probe, Some(false)).await.expect("response").status(),
                StatusCode::OK
            );
        }
    }
}
