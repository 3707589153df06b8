//! The engine's gRPC API (`candela.engine.v1.Engine`, tonic + prost), served by
//! `candela serve` on `--grpc-port` next to the HTTP API.
//!
//! The generated code stays in the private `pb` module; only the messages a
//! caller needs are re-exported. [`EngineService`] implements the server side over
//! the same pieces the HTTP API uses (one [`crate::engine::RequestStream`] per
//! sequence, the same tokenizer and validation), and [`convert`] maps
//! [`crate::metrics::EngineMetrics`] to and from [`StatsSnapshot`] losslessly, so a
//! `WatchStats` subscriber (the sidecar) renders exactly the engine's `/metrics`.
//!
//! `StartProfile` / `StopProfile` drive the same [`crate::profiler::Profiler`] as
//! `POST /start_profile` / `POST /stop_profile`; the trace lands in the profiler
//! directory, where `candela sidecar --profiles-dir` serves it for download.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod pb {
    tonic::include_proto!("candela.engine.v1");
}

pub mod convert;
mod service;

use candela_tls::{Alpn, Listener, ServerTls};
use tokio::task::JoinHandle;

pub use pb::engine_client::EngineClient as GrpcClient;
pub use pb::generate_request::Prompt;
pub use pb::health_response::ServingStatus;
pub use pb::{
    FinishReason, GenerateRequest, GenerateResponse, HealthRequest, HealthResponse, SamplingParams,
    StartProfileRequest, StatsSnapshot, StopProfileRequest, StopProfileResponse, TokenIds,
    WatchStatsRequest,
};
pub use service::EngineService;

/// Serves the engine API on an already bound listener (plain or TLS) until the task is
/// dropped.
///
/// # Errors
/// Transport failures of the listener.
pub async fn serve(
    listener: Listener,
    service: EngineService,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(pb::engine_server::EngineServer::new(service))
        .serve_with_incoming(listener.into_incoming())
        .await
}

/// Binds `addr` (so a taken port fails start-up with one line) and serves the
/// engine API on it in a background task, over TLS with `tls`; a later transport
/// failure is logged and leaves the HTTP API running.
///
/// # Errors
/// When `addr` cannot be bound.
pub async fn spawn(
    addr: &str,
    tls: Option<&ServerTls>,
    service: EngineService,
) -> crate::error::Result<JoinHandle<()>> {
    let listener = Listener::bind(addr, tls, Alpn::Grpc).await.map_err(|e| {
        crate::error::Error::Config(format!("cannot listen on {addr} (--grpc-port): {e}"))
    })?;
    tracing::info!(%addr, tls = listener.is_tls(), "serving the gRPC engine API");
    Ok(tokio::spawn(async move {
        if let Err(e) = serve(listener, service).await {
            tracing::error!(error = %e, "the gRPC server stopped");
        }
    }))
}
