//! The sidecar's HTTP side: `GET /metrics`, `GET /profiles`,
//! `GET /profiles/{name}` (behind the bearer token when one is configured, and only for
//! clients with a certificate signed by `--ssl-ca-certs` with `--ssl-cert-reqs` 1 or 2)
//! and an open `GET /health` and `GET /ready` for the kubelet.
//!
//! `/metrics` is the engine's last snapshot rendered by
//! [`crate::metrics::EngineMetrics::render`] — byte for byte what the engine's own
//! `/metrics` shows for the same data — followed by the sidecar's series
//! ([`super::names`]). While the engine is unreachable the `vllm:` series are
//! left out and `candela_sidecar_engine_up` is 0 (see [`super`] for why).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::extract::{ConnectInfo, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::device::{self, DeviceSampler};
use super::watch::Feed;
use super::{lora, names};

/// File endings of finished profiles the sidecar serves.
const PROFILE_SUFFIXES: [&str; 2] = [".json", ".json.gz"];

/// What the handlers share.
pub struct HttpState {
    pub feed: Feed,
    pub device: Arc<DeviceSampler>,
    pub token: Option<String>,
    /// Admit to the guarded paths only clients that proved a certificate.
    pub client_cert: bool,
    pub profiles_dir: Option<PathBuf>,
    /// The LoRA sync's state (`--lora-adapters-file`), when it runs.
    pub lora: Option<lora::Shared>,
}

/// Builds the sidecar's router.
pub fn router(state: HttpState) -> Router {
    let state = Arc::new(state);
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/profiles", get(list_profiles))
        .route("/profiles/{name}", get(download_profile))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_auth));
    Router::new()
        .merge(guarded)
        .route("/health", get(|| async { "ok\n" }))
        .route(candela_contract::sidecar::READY_PATH, get(ready))
        .with_state(state)
}

/// 200 without LoRA sync or once it has applied the list once; 503 before.
async fn ready(State(state): State<Arc<HttpState>>) -> Response {
    let primed = state
        .lora
        .as_ref()
        .is_none_or(|s| s.lock().is_ok_and(|s| s.primed));
    if primed {
        "ok\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the LoRA adapter list has not been applied to the engine yet\n",
        )
            .into_response()
    }
}

async fn require_auth(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let proved = req
        .extensions()
        .get::<ConnectInfo<candela_tls::PeerInfo>>()
        .is_some_and(|ConnectInfo(peer)| peer.client_cert);
    if state.client_cert && !proved {
        return (
            StatusCode::FORBIDDEN,
            "403 Forbidden: this endpoint requires a TLS client certificate signed by the \
             sidecar's --ssl-ca-certs\n",
        )
            .into_response();
    }
    let Some(expected) = &state.token else {
        return next.run(req).await;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            next.run(req).await
        }
        given => {
            let body = if given.is_none() {
                "401 Unauthorized: this endpoint requires `Authorization: Bearer <token>` \
                 (the token configured with the sidecar's --metrics-token / CANDELA_SIDECAR_METRICS_TOKEN)\n"
            } else {
                "401 Unauthorized: the bearer token does not match the sidecar's --metrics-token\n"
            };
            let mut response = (StatusCode::UNAUTHORIZED, body).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"candela-sidecar\""),
            );
            response
        }
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let sampler = state.device.clone();
    let device_text = tokio::task::spawn_blocking(move || {
        let mut out = String::with_capacity(4096);
        sampler.render(&mut out);
        out
    })
    .await
    .unwrap_or_default();
    let mut body = String::with_capacity(32 * 1024);
    let (up, age) = match state.feed.read() {
        Ok(feed) => match &feed.metrics {
            Some(m) => {
                body.push_str(&m.render());
                (1.0, feed.received_at.map(|t| t.elapsed().as_secs_f64()))
            }
            None => (0.0, None),
        },
        Err(_) => (0.0, None),
    };
    device::header(
        &mut body,
        names::ENGINE_UP,
        "1 when the sidecar receives the engine's stats stream, else 0.",
        "gauge",
    );
    device::sample(&mut body, names::ENGINE_UP, &[], up);
    if let Some(age) = age {
        device::header(
            &mut body,
            names::SNAPSHOT_AGE,
            "Seconds since the engine's last stats snapshot arrived.",
            "gauge",
        );
        device::sample(&mut body, names::SNAPSHOT_AGE, &[], age);
    }
    if let Some(status) = state
        .lora
        .as_ref()
        .and_then(|s| s.lock().ok().map(|s| s.clone()))
    {
        lora::render(&status, &mut body);
    }
    body.push_str(&device_text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `GET /profiles`: finished profiles, by name.
#[derive(Debug, Serialize)]
struct ProfileList {
    profiles: Vec<ProfileEntry>,
}

/// One entry of `GET /profiles`.
#[derive(Debug, Serialize)]
struct ProfileEntry {
    name: String,
    size_bytes: u64,
    modified_unix_s: u64,
}

async fn list_profiles(State(state): State<Arc<HttpState>>) -> Response {
    let Some(dir) = state.profiles_dir.clone() else {
        return no_profiles_dir();
    };
    match tokio::task::spawn_blocking(move || read_profiles(&dir)).await {
        Ok(Ok(profiles)) => Json(ProfileList { profiles }).into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot list the profiles directory: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("listing failed: {e}\n"),
        )
            .into_response(),
    }
}

fn read_profiles(dir: &Path) -> std::io::Result<Vec<ProfileEntry>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let meta = entry.metadata()?;
        if !meta.is_file() || !is_profile_name(&name) {
            continue;
        }
        let modified_unix_s = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        out.push(ProfileEntry {
            name,
            size_bytes: meta.len(),
            modified_unix_s,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

async fn download_profile(
    State(state): State<Arc<HttpState>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let Some(dir) = &state.profiles_dir else {
        return no_profiles_dir();
    };
    if !is_profile_name(&name) {
        return (
            StatusCode::NOT_FOUND,
            format!("no profile named {name:?}\n"),
        )
            .into_response();
    }
    match tokio::fs::read(dir.join(&name)).await {
        Ok(bytes) => {
            let content_type = if name.ends_with(".gz") {
                "application/gzip"
            } else {
                "application/json"
            };
            let disposition = format!("attachment; filename=\"{name}\"");
            (
                [
                    (header::CONTENT_TYPE, content_type.to_owned()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                bytes,
            )
                .into_response()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            StatusCode::NOT_FOUND,
            format!("no profile named {name:?}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read {name:?}: {e}\n"),
        )
            .into_response(),
    }
}

fn no_profiles_dir() -> Response {
    (
        StatusCode::NOT_FOUND,
        "no profiles directory: start the sidecar with --profiles-dir\n",
    )
        .into_response()
}

/// A plain file name with a profile ending: no path separators, no hidden or partial files.
fn is_profile_name(name: &str) -> bool {
    !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && PROFILE_SUFFIXES
            .iter()
            .any(|s| name.len() > s.len() && name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::{CacheInfo, EngineMetrics};

    async fn scrape(app: Router, token: Option<&str>) -> (StatusCode, String) {
        let mut req = axum::http::Request::get("/metrics");
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn metrics_are_the_engine_rendering_then_the_sidecar_series() {
        let mut engine = EngineMetrics::new(
            "smol",
            128,
            CacheInfo {
                block_size: 16,
                ..Default::default()
            },
        );
        engine.prompt_tokens = 42;
        engine.histograms.time_to_first_token.observe(0.03);
        let feed = Feed::default();
        let state = |feed: &Feed| HttpState {
            feed: feed.clone(),
            device: Arc::new(DeviceSampler::new(Some(std::process::id()))),
            token: Some("t0k".into()),
            client_cert: false,
            profiles_dir: None,
            lora: None,
        };

        let (status, body) = scrape(router(state(&feed)), Some("t0k")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !body.contains("vllm:"),
            "no engine series before the first snapshot"
        );
        assert!(body.contains("\ncandela_sidecar_engine_up 0\n"), "{body}");

        {
            let mut f = feed.write().unwrap();
            f.metrics = Some(engine.clone());
            f.received_at = Some(Instant::now());
        }
        let (status, body) = scrape(router(state(&feed)), Some("t0k")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.starts_with(&engine.render()),
            "the engine's exposition, byte for byte"
        );
        assert!(body.contains("\ncandela_sidecar_engine_up 1\n"), "{body}");
        assert!(
            body.contains("\ncandela_engine_process_resident_memory_bytes "),
            "{body}"
        );

        let (status, body) = scrape(router(state(&feed)), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("Authorization: Bearer"), "{body}");
        assert_eq!(
            scrape(router(state(&feed)), Some("nope")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn ready_waits_for_the_first_lora_sync() {
        let get_ready = |lora: Option<lora::Shared>| async move {
            let app = router(HttpState {
                feed: Feed::default(),
                device: Arc::new(DeviceSampler::new(Some(std::process::id()))),
                token: Some("t0k".into()),
                client_cert: false,
                profiles_dir: None,
                lora,
            });
            let req = axum::http::Request::get("/ready")
                .body(Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        };
        assert_eq!(get_ready(None).await, StatusCode::OK, "no sync, no wait");
        let shared = lora::Shared::default();
        assert_eq!(
            get_ready(Some(shared.clone())).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        shared.lock().unwrap().primed = true;
        assert_eq!(get_ready(Some(shared)).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn client_certificates_guard_metrics_and_profiles_but_not_probes() {
        let app = router(HttpState {
            feed: Feed::default(),
            device: Arc::new(DeviceSampler::new(Some(std::process::id()))),
            token: None,
            client_cert: true,
            profiles_dir: None,
            lora: None,
        });
        let get = |path: &'static str, client_cert: Option<bool>| {
            let app = app.clone();
            async move {
                let mut req = axum::http::Request::get(path).body(Body::empty()).unwrap();
                if let Some(client_cert) = client_cert {
                    req.extensions_mut()
                        .insert(ConnectInfo(candela_tls::PeerInfo {
                            remote: ([127, 0, 0, 1], 1234).into(),
                            client_cert,
                        }));
                }
                app.oneshot(req).await.unwrap().status()
            }
        };
        assert_eq!(get("/metrics", Some(true)).await, StatusCode::OK);
        for peer in [Some(false), None] {
            assert_eq!(get("/metrics", peer).await, StatusCode::FORBIDDEN);
            assert_eq!(get("/profiles", peer).await, StatusCode::FORBIDDEN);
            assert_eq!(get("/health", peer).await, StatusCode::OK);
            assert_eq!(get("/ready", peer).await, StatusCode::OK);
        }
    }

    #[test]
    fn profile_names() {
        assert!(is_profile_name("trace-1700000000.json"));
        assert!(is_profile_name("engine.pt.trace.json.gz"));
        assert!(!is_profile_name("../secret.json"));
        assert!(!is_profile_name(".partial.json"));
        assert!(!is_profile_name("trace.json.tmp"));
        assert!(!is_profile_name(".json"));
        assert!(!is_profile_name("a/b.json"));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
