//! `candela-operator`: runs the InferenceDeployment controller with leader election,
//! serves `/metrics`, `/healthz` and `/readyz`, and, on a listener of its own, the
//! Alertmanager webhook of the alerts autoscaling backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use candela_operator::alerts::Scaler;
use candela_operator::builders::BuildConfig;
use candela_operator::controller::apply::MANAGER;
use candela_operator::controller::{self, Context, RunConfig};
use candela_operator::crd::IssuerRef;
use candela_operator::http::{self, HttpState};
use candela_operator::leader::{LeaderElector, LeaseConfig};
use candela_operator::metrics::Metrics;
use candela_operator::webhook::{self, WebhookState};
use clap::Parser;
use kube::runtime::events::Reporter;
use tracing_subscriber::EnvFilter;

/// Kubernetes operator for Candela InferenceDeployments.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(
        long,
        env = "CANDELA_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CANDELA_OPERATOR_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,

    /// Engine image for InferenceDeployments that do not set spec.engine.image.
    #[arg(
        long,
        env = "CANDELA_ENGINE_IMAGE",
        default_value = candela_contract::images::ENGINE
    )]
    engine_image: String,

    /// Prometheus URL for KEDA triggers when spec.autoscaling.prometheusAddress is unset.
    #[arg(
        long,
        env = "CANDELA_PROMETHEUS_URL",
        default_value = "http://prometheus-operated.monitoring.svc:9090"
    )]
    prometheus_url: String,

    /// Labels every generated ServiceMonitor and PrometheusRule gets, as `key=value`
    /// (repeat the flag, or comma-separate in the env var), e.g. `release=kube-prometheus-stack`
    /// so that stack's Prometheus selects them. A custom resource's own labels win.
    #[arg(long = "monitoring-label", env = "CANDELA_MONITORING_LABELS", value_delimiter = ',', value_parser = parse_label)]
    monitoring_labels: Vec<(String, String)>,

    /// The cert-manager issuer of the certificates of InferenceDeployments whose `spec.tls`
    /// or `spec.monitoring.tls` names neither a Secret nor an issuer: `KIND/NAME`
    /// (`ClusterIssuer/candela-ca`) or `NAME` (an Issuer in each InferenceDeployment's
    /// namespace). Unset: such a spec gets an InvalidSpec condition.
    #[arg(long, env = "CANDELA_CERT_MANAGER_ISSUER", value_parser = IssuerRef::parse_flag)]
    cert_manager_issuer: Option<IssuerRef>,

    /// Address of the Alertmanager webhook `POST /alertmanager` (the alerts autoscaling
    /// backend); a bearer token on its own port (HTTPS with `--ssl-certfile`), so a
    /// NetworkPolicy can open it to Alertmanager only.
    #[arg(long, env = "CANDELA_WEBHOOK_LISTEN", default_value = "0.0.0.0:8081")]
    webhook_listen: SocketAddr,

    /// Bearer token Alertmanager must send to `POST /alertmanager`. Unset: the webhook
    /// answers 503.
    #[arg(long, env = "CANDELA_WEBHOOK_TOKEN", hide_env_values = true)]
    webhook_token: Option<String>,

    /// Most reconciles in flight (0: unbounded).
    #[arg(long, env = "CANDELA_OPERATOR_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,

    /// Elect a leader on a Lease before reconciling (run several replicas safely).
    #[arg(long, env = "CANDELA_OPERATOR_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,

    /// Namespace of the leader Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "candela-system")]
    lease_namespace: String,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "CANDELA_OPERATOR_LEASE_NAME",
        default_value = "candela-operator"
    )]
    lease_name: String,

    /// This replica's identity in the Lease (default: the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Seconds a lease stays valid without renewal.
    #[arg(long, env = "CANDELA_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,

    /// HTTPS on both listeners (`--http-addr`, `--webhook-listen`), the engine's flags:
    /// `--ssl-certfile`, `--ssl-keyfile`, and with `--ssl-cert-reqs 1` and `--ssl-ca-certs`
    /// `/metrics` only for clients with a certificate that CA signed (the probes and the
    /// token-protected webhook stay open to clients without one). The files are re-read
    /// when they change.
    #[command(flatten)]
    tls: candela_tls::TlsArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        // Colours only on a terminal: `kubectl logs` stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    args.tls
        .validate()
        .map_err(|e| anyhow::anyhow!("TLS flags: {e}"))?;
    let tls = candela_tls::ServerTls::from_args(&args.tls).context("loading the TLS files")?;
    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client")?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let http_state = HttpState {
        metrics: Arc::clone(&metrics),
        ready: Arc::clone(&ready),
        metrics_need_client_cert: args.tls.client_cert_reqs() != candela_tls::ClientCertReqs::None,
    };
    let http1 = candela_tls::Alpn::Http1;
    let http_listener =
        candela_tls::Listener::bind(&args.http_addr.to_string(), tls.as_ref(), http1)
            .await
            .with_context(|| format!("binding --http-addr {}", args.http_addr))?;
    let webhook_listener =
        candela_tls::Listener::bind(&args.webhook_listen.to_string(), tls.as_ref(), http1)
            .await
            .with_context(|| format!("binding --webhook-listen {}", args.webhook_listen))?;
    let server = tokio::spawn(http::serve(http_listener, http_state));

    let build = BuildConfig {
        engine_image: args.engine_image,
        prometheus_url: args.prometheus_url,
        monitoring_labels: args.monitoring_labels.into_iter().collect(),
        cert_manager_issuer: args.cert_manager_issuer,
    };
    let ctx = Arc::new(Context::new(client.clone(), build, Arc::clone(&metrics)));
    // Every replica answers Alertmanager, the standbys too: the decisions serialize on the
    // custom resource's resourceVersion, not on the lease.
    let webhook_state = WebhookState {
        token: args
            .webhook_token
            .filter(|t| !t.is_empty())
            .map(|t| Arc::from(t.as_str())),
        scaler: Some(Scaler::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
            Arc::clone(&metrics),
        )),
        metrics: Arc::clone(&metrics),
    };
    let webhook_server = tokio::spawn(webhook::serve(webhook_listener, webhook_state));
    let run_config = RunConfig {
        namespace: args.watch_namespace,
        concurrency: args.concurrency,
    };

    if !args.leader_elect {
        ready.store(true, Ordering::Relaxed);
        metrics.leader.set(1);
        controller::run(ctx, run_config).await;
        server.abort();
        webhook_server.abort();
        return Ok(());
    }

    let identity = match args.identity {
        Some(id) => id,
        None => std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("candela-operator-{}", std::process::id())),
    };
    let lease_duration = Duration::from_secs(args.lease_seconds.max(2));
    let elector = LeaderElector::new(
        client,
        LeaseConfig {
            namespace: args.lease_namespace,
            name: args.lease_name,
            identity,
            lease_duration,
            retry_period: lease_duration / 3,
        },
    );
    // Standbys are ready: they serve health and wait for the lease.
    ready.store(true, Ordering::Relaxed);
    elector.acquire().await?;
    metrics.leader.set(1);
    tokio::select! {
        () = controller::run(ctx, run_config) => Ok(()),
        lost = elector.hold() => {
            metrics.leader.set(0);
            Err(anyhow::Error::new(lost).context("stopping: leadership lost"))
        }
    }
}

/// `key=value` → (key, value).
fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_flags_parse() {
        let args = Args::try_parse_from([
            "candela-operator",
            "--http-addr=0.0.0.0:8080",
            "--webhook-listen=0.0.0.0:8081",
            "--monitoring-label",
            "release=kube-prometheus-stack,team=ml",
            "--monitoring-label=tier=gold",
            "--webhook-token",
            "secret",
        ])
        .expect("flags parse");
        assert_eq!(
            args.monitoring_labels,
            [
                ("release".into(), "kube-prometheus-stack".into()),
                ("team".into(), "ml".into()),
                ("tier".into(), "gold".into()),
            ]
        );
        assert_eq!(args.webhook_token.as_deref(), Some("secret"));
        assert_eq!(args.webhook_listen.port(), 8081);
        assert!(
            Args::try_parse_from(["candela-operator", "--monitoring-label", "novalue"]).is_err()
        );
        // The chart's TLS flags.
        let args = Args::try_parse_from([
            "candela-operator",
            "--ssl-certfile=/etc/candela/tls/tls.crt",
            "--ssl-keyfile=/etc/candela/tls/tls.key",
            "--ssl-ca-certs=/etc/candela/tls/ca.crt",
            "--ssl-cert-reqs=1",
            "--cert-manager-issuer=ClusterIssuer/candela-ca",
        ])
        .expect("flags parse");
        args.tls.validate().expect("flags go together");
        assert_eq!(
            args.tls.client_cert_reqs(),
            candela_tls::ClientCertReqs::Optional
        );
        assert_eq!(
            args.cert_manager_issuer.map(|i| i.name).as_deref(),
            Some("candela-ca")
        );
    }
}
