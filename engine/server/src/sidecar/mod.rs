//! `candela sidecar`: the engine's observability companion, a separate process
//! (its own container in the pod) so that nothing it does can stop serving.
//!
//! It subscribes to the engine's gRPC `WatchStats` ([`watch`]), serves the same
//! `vllm:` series on its own port with the same renderer the engine uses (so the
//! values and text are identical for the same snapshot), adds device metrics
//! ([`device`]: the engine process's CPU/RSS, the host's CPU/memory, NVIDIA GPUs
//! under DCGM-exporter names), guards `/metrics` and `/profiles` with a bearer
//! token when configured, and serves finished profiles for download ([`http`]).
//! With `--lora-adapters-file` it also keeps the engine's LoRA adapters equal to that
//! file's list, over the engine's HTTP API ([`lora`]).
//!
//! While the engine is away (restart, crash, not started yet) the sidecar keeps
//! answering: `candela_sidecar_engine_up` is 0 and the `vllm:` series are omitted
//! rather than frozen at their last values. Stale values would look like a live,
//! idle engine and hide the outage from alerts; absent series are what Prometheus
//! would see scraping the engine directly, and the counters of the restarted
//! engine start from zero, which Prometheus handles as a counter reset.

mod device;
mod dial;
mod http;
pub mod lora;
pub use candela_contract::metrics as names;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use candela_tls::{Alpn, Listener, PeerInfo, ServerTls};
use tracing::info;

use device::DeviceSampler;

use crate::error::{Error, Result};

pub use candela_contract::sidecar::SidecarArgs;

/// Runs the sidecar until Ctrl-C / SIGTERM.
///
/// # Errors
/// A bad engine URI, an empty token, or a listen address that cannot be bound;
/// never because the engine is down.
pub async fn run(args: SidecarArgs) -> Result<()> {
    args.validate().map_err(Error::Config)?;
    let tls = ServerTls::from_args(&args.tls)?;
    // Listen first: a taken port fails at once, and clients find the port open early.
    let addr = args.listen_addr();
    let listener = Listener::bind(&addr, tls.as_ref(), Alpn::Http1)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    let engine = dial::engine(&args).await?;
    let engine_pid = args.engine_pid;
    let device = tokio::task::spawn_blocking(move || DeviceSampler::new(engine_pid))
        .await
        .map_err(|e| Error::Internal(format!("loading device samplers: {e}")))?;
    let feed = watch::Feed::default();
    tokio::spawn(watch::run(
        engine.grpc,
        args.stats_interval_ms,
        feed.clone(),
    ));
    let lora = args.lora_adapters_file.clone().map(|file| {
        let status = lora::Shared::default();
        let syncer = lora::Syncer::new(
            lora::SyncConfig {
                file,
                engine: engine.http_base,
                client: engine.http,
                api_key: args.engine_api_key.clone(),
                interval: Duration::from_millis(u64::from(args.lora_sync_interval_ms)),
            },
            status.clone(),
        );
        tokio::spawn(syncer.run());
        status
    });
    let client_cert = args.tls.client_cert_reqs() != candela_tls::ClientCertReqs::None;
    info!(
        %addr,
        engine = %args.engine_grpc,
        auth = args.metrics_token.is_some(),
        tls = listener.is_tls(),
        client_cert,
        "sidecar serving /metrics"
    );
    let app = http::router(http::HttpState {
        feed,
        device: Arc::new(device),
        token: args.metrics_token,
        client_cert,
        profiles_dir: args.profiles_dir,
        lora,
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerInfo>(),
    )
    .with_graceful_shutdown(crate::drain::shutdown_signal())
    .await
    .map_err(|e| Error::io("serving /metrics", e))?;
    Ok(())
}
