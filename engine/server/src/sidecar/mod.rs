//! `candela sidecar`: the engine's observability companion, a separate process
//! (its own container in the pod) so that nothing it does can stop serving.
//!
//! It subscribes to the engine's gRPC `WatchStats` ([`watch`]), serves the same
//! `vllm:` series on its own port with the same renderer the engine uses (so the
//! values and text are identical for the same snapshot), adds device metrics
//! ([`device`]: the engine process's CPU/RSS, the host's CPU/memory, NVIDIA GPUs
//! under DCGM-exporter names), guards `/metrics` and `/profiles` with a bearer
//! token when configured, and serves finished profiles for download ([`http`]).
//!
//! While the engine is away (restart, crash, not started yet) the sidecar keeps
//! answering: `candela_sidecar_engine_up` is 0 and the `vllm:` series are omitted
//! rather than frozen at their last values. Stale values would look like a live,
//! idle engine and hide the outage from alerts; absent series are what Prometheus
//! would see scraping the engine directly, and the counters of the restarted
//! engine start from zero, which Prometheus handles as a counter reset.

mod device;
mod http;
pub mod names;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tonic::transport::Endpoint;
use tracing::info;

use device::DeviceSampler;

/// `candela sidecar`.
#[derive(Debug, Clone, Args)]
pub struct SidecarArgs {
    /// The engine's gRPC endpoint (`candela serve --grpc-port`).
    #[arg(
        long,
        env = "CANDELA_SIDECAR_ENGINE_GRPC",
        default_value = "http://127.0.0.1:50051"
    )]
    pub engine_grpc: String,
    /// Address for /metrics and /profiles (`HOST:PORT`, or `:PORT` for all interfaces).
    #[arg(long, env = "CANDELA_SIDECAR_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: String,
    /// Require `Authorization: Bearer <TOKEN>` on /metrics and /profiles.
    #[arg(long, env = "CANDELA_SIDECAR_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Directory the engine writes profiles to (a volume shared with the engine container).
    #[arg(
        long,
        visible_alias = "profiler-dir",
        env = "CANDELA_SIDECAR_PROFILES_DIR"
    )]
    pub profiles_dir: Option<PathBuf>,
    /// PID of the engine process [default: the first `candela serve` found in /proc].
    #[arg(long, env = "CANDELA_SIDECAR_ENGINE_PID")]
    pub engine_pid: Option<u32>,
    /// Milliseconds between the engine's stats snapshots.
    #[arg(long, env = "CANDELA_SIDECAR_STATS_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(10..))]
    pub stats_interval_ms: u32,
}

impl SidecarArgs {
    /// The listen address with `:PORT` expanded to all interfaces.
    pub fn listen_addr(&self) -> String {
        if self.listen.starts_with(':') {
            format!("0.0.0.0{}", self.listen)
        } else {
            self.listen.clone()
        }
    }
}

/// Runs the sidecar until Ctrl-C / SIGTERM.
///
/// # Errors
/// A bad engine URI, an empty token, or a listen address that cannot be bound;
/// never because the engine is down.
pub async fn run(args: SidecarArgs) -> anyhow::Result<()> {
    if args.metrics_token.as_deref().is_some_and(str::is_empty) {
        bail!(
            "--metrics-token is empty (is the secret behind CANDELA_SIDECAR_METRICS_TOKEN missing?)"
        );
    }
    let endpoint = Endpoint::from_shared(args.engine_grpc.clone())
        .with_context(|| format!("--engine-grpc {:?} is not a valid URI", args.engine_grpc))?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let engine_pid = args.engine_pid;
    let device = tokio::task::spawn_blocking(move || DeviceSampler::new(engine_pid))
        .await
        .context("loading device samplers")?;
    let addr = args.listen_addr();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let feed = watch::Feed::default();
    tokio::spawn(watch::run(endpoint, args.stats_interval_ms, feed.clone()));
    info!(%addr, engine = %args.engine_grpc, auth = args.metrics_token.is_some(), "sidecar serving /metrics");
    let app = http::router(http::HttpState {
        feed,
        device: Arc::new(device),
        token: args.metrics_token,
        profiles_dir: args.profiles_dir,
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(crate::serve::shutdown_signal())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn sidecar(args: &[&str]) -> Result<super::SidecarArgs, clap::Error> {
        let argv = ["candela", "sidecar"].iter().chain(args).copied();
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Sidecar(s) => s,
            other => panic!("parsed `sidecar` as {other:?}"),
        })
    }

    #[test]
    fn flags_and_defaults() {
        let a = sidecar(&[]).unwrap();
        assert_eq!(a.engine_grpc, "http://127.0.0.1:50051");
        assert_eq!(a.listen_addr(), "0.0.0.0:9090");
        assert_eq!(a.stats_interval_ms, 1000);
        assert!(a.metrics_token.is_none() && a.profiles_dir.is_none() && a.engine_pid.is_none());
        let a = sidecar(&[
            "--listen",
            ":9191",
            "--metrics-token",
            "t",
            "--engine-pid",
            "42",
        ])
        .unwrap();
        assert_eq!(a.listen_addr(), "0.0.0.0:9191");
        assert_eq!(
            (a.metrics_token.as_deref(), a.engine_pid),
            (Some("t"), Some(42))
        );
        assert!(sidecar(&["--stats-interval-ms", "5"]).is_err());
    }
}
