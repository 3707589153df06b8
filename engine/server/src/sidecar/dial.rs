//! How the sidecar reaches the engine: the gRPC endpoint (`--engine-grpc`) and the HTTP
//! client (`--engine-http`). `https://` URIs verify the engine's certificate against
//! `--engine-ca-certs` (else the system's roots) for `--engine-server-name` (else the
//! URI's host), so the sidecar dials `127.0.0.1` and still checks the name the
//! certificate was issued for (the Service's).

use std::net::SocketAddr;
use std::time::Duration;

use candela_contract::sidecar::{SidecarArgs, flag};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::error::{Error, Result};

/// The engine's two APIs, ready to dial.
pub struct Engine {
    /// The gRPC endpoint (WatchStats).
    pub grpc: Endpoint,
    /// The HTTP client for the LoRA endpoints.
    pub http: reqwest::Client,
    /// The base URL `http` requests go to (the server name in place of the host when
    /// one is set; the client resolves it to the URI's address).
    pub http_base: String,
}

/// Builds both clients; nothing is dialled yet.
///
/// # Errors
/// An invalid URI or an unreadable `--engine-ca-certs`.
pub async fn engine(args: &SidecarArgs) -> Result<Engine> {
    let ca = match &args.engine_ca_certs {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            Error::io(
                format!("reading --{} {}", flag::ENGINE_CA_CERTS, path.display()),
                e,
            )
        })?),
        None => None,
    };
    let mut grpc = Endpoint::from_shared(args.engine_grpc.clone())
        .map_err(|e| {
            Error::Config(format!(
                "--{} {:?} is not a valid URI: {e}",
                flag::ENGINE_GRPC,
                args.engine_grpc
            ))
        })?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    if args.engine_grpc.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        tls = match &ca {
            Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
            None => tls.with_native_roots(),
        };
        if let Some(name) = &args.engine_server_name {
            tls = tls.domain_name(name.clone());
        }
        grpc = grpc
            .tls_config(tls)
            .map_err(|e| Error::Config(format!("--{}: {e}", flag::ENGINE_GRPC)))?;
    }

    let mut http = reqwest::Client::builder();
    let mut http_base = args.engine_http.clone();
    if args.engine_http.starts_with("https://") {
        if let Some(pem) = &ca {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Config(format!("--{}: {e}", flag::ENGINE_CA_CERTS)))?;
            http = http.tls_built_in_root_certs(false);
            for root in roots {
                http = http.add_root_certificate(root);
            }
        }
        if let Some(name) = &args.engine_server_name {
            let url = reqwest::Url::parse(&args.engine_http).map_err(|e| {
                Error::Config(format!(
                    "--{} {:?}: {e}",
                    flag::ENGINE_HTTP,
                    args.engine_http
                ))
            })?;
            let addr = resolve(&url).await?;
            let mut named = url.clone();
            named.set_host(Some(name)).map_err(|e| {
                Error::Config(format!("--{} {name:?}: {e}", flag::ENGINE_SERVER_NAME))
            })?;
            http = http.resolve(name, addr);
            http_base = named.as_str().trim_end_matches('/').to_owned();
        }
    }
    let http = http
        .build()
        .map_err(|e| Error::Config(format!("--{}: {e}", flag::ENGINE_HTTP)))?;
    Ok(Engine {
        grpc,
        http,
        http_base,
    })
}

/// The socket address of a URL's host and port.
async fn resolve(url: &reqwest::Url) -> Result<SocketAddr> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            Error::Config(format!(
                "--{} {url}: cannot resolve {host}",
                flag::ENGINE_HTTP
            ))
        })
}
