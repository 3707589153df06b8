//! Graceful shutdown that loses no request in a rolling update.
//!
//! On SIGTERM (what the kubelet sends after the pod's `preStop`) the server drains before
//! it stops: for [`DRAIN_WINDOW`] it keeps serving on the connections clients already hold
//! — a kube-proxy'd client keeps its keep-alive connections to this pod even after the
//! endpoint is gone — answering each request with `Connection: close` so the client's next
//! request opens a connection to another pod, and `/health` answers 503 (readiness off).
//! Then the listener closes and axum's graceful shutdown lets every request in flight
//! finish (streams included) before the process exits. Closing idle keep-alive connections
//! at once, as a bare graceful shutdown does, races a client that is sending on one: that
//! request fails. Ctrl-C (SIGINT) skips the window: an operator at a terminal wants out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::info;

/// How long a terminating server keeps answering on existing connections (with
/// `Connection: close`) before it stops listening.
pub const DRAIN_WINDOW: Duration = Duration::from_secs(5);

/// Whether the server is draining; shared by the middleware and the shutdown signal.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
}

impl Drain {
    /// True once a shutdown signal arrived.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts draining (what SIGTERM does first).
    pub fn start(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Resolves when the listener should close: at once on Ctrl-C, after [`DRAIN_WINDOW`]
    /// of draining on SIGTERM.
    pub async fn signal(self: Arc<Self>, window: Duration) {
        match wait_for_signal().await {
            Signal::Interrupt => {
                self.start();
                info!("shutting down");
            }
            Signal::Terminate => {
                self.start();
                info!(
                    window_s = window.as_secs_f64(),
                    "SIGTERM: draining (health 503, Connection: close on every answer)"
                );
                tokio::time::sleep(window).await;
                info!("drain window over: closing the listener, finishing the requests in flight");
            }
        }
    }
}

/// Which shutdown signal arrived.
pub enum Signal {
    /// Ctrl-C at a terminal.
    Interrupt,
    /// SIGTERM: the kubelet (or a service manager) stopping the process.
    Terminate,
}

/// Resolves on Ctrl-C or SIGTERM, saying which.
pub async fn wait_for_signal() -> Signal {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => Signal::Interrupt,
        () = term => Signal::Terminate,
    }
}

/// Resolves on Ctrl-C or SIGTERM (`candela sidecar`: nothing to drain).
pub async fn shutdown_signal() {
    wait_for_signal().await;
    info!("shutting down");
}

/// While draining: `/health` is 503 and every answer carries `Connection: close`.
pub async fn middleware(State(drain): State<Arc<Drain>>, req: Request, next: Next) -> Response {
    if !drain.is_draining() {
        return next.run(req).await;
    }
    let mut response = if req.uri().path() == "/health" {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    } else {
        next.run(req).await
    };
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn app(drain: Arc<Drain>) -> Router {
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/v1/models", get(|| async { "models" }))
            .layer(axum::middleware::from_fn_with_state(drain, middleware))
    }

    async fn get_(app: &Router, path: &str) -> Response {
        app.clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn draining_turns_health_off_and_closes_connections_after_each_answer() {
        let drain = Arc::new(Drain::default());
        let app = app(drain.clone());
        let r = get_(&app, "/health").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get(header::CONNECTION).is_none());
        drain.start();
        let r = get_(&app, "/health").await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::CONNECTION], "close");
        // Requests on existing connections are still served.
        let r = get_(&app, "/v1/models").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONNECTION], "close");
    }
}
