//! The operator's own listeners over HTTPS, as the chart starts them (`--ssl-certfile`,
//! `--ssl-keyfile`, `--ssl-ca-certs`, `--ssl-cert-reqs 1`): `/metrics` only for a client
//! certificate the CA signed (Prometheus), the probes open to the kubelet, the Alertmanager
//! webhook over HTTPS with its bearer token, plain HTTP refused, and a rotated certificate
//! served to new connections without a restart. Real handshakes on loopback.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use candela_operator::http::{self, HttpState};
use candela_operator::metrics::Metrics;
use candela_operator::webhook::{self, WebhookState};
use candela_tls::{Alpn, ClientCertReqs, Listener, ServerTls};
use common::certs::Ca;

/// The Service name the chart's certificate carries.
const NAME: &str = "candela.candela-system.svc";

#[tokio::test]
async fn metrics_and_webhook_over_https_with_client_certificates() {
    let dir = std::env::temp_dir().join(format!("candela-operator-tls-{}", std::process::id()));
    let ca = Ca::new("candela quick-start CA");
    ca.write_secret(&dir, &ca.leaf(&[NAME]));
    let tls = ServerTls::new(
        dir.join("tls.crt"),
        dir.join("tls.key"),
        Some(dir.join("ca.crt")),
        ClientCertReqs::Optional,
    )
    .unwrap()
    .with_reload_interval(Duration::from_millis(100));

    let metrics = Arc::new(Metrics::default());
    let http_listener = Listener::bind("127.0.0.1:0", Some(&tls), Alpn::Http1)
        .await
        .unwrap();
    let webhook_listener = Listener::bind("127.0.0.1:0", Some(&tls), Alpn::Http1)
        .await
        .unwrap();
    let (http_port, webhook_port) = (
        http_listener.local_addr().port(),
        webhook_listener.local_addr().port(),
    );
    tokio::spawn(http::serve(
        http_listener,
        HttpState {
            metrics: Arc::clone(&metrics),
            ready: Arc::new(AtomicBool::new(true)),
            metrics_need_client_cert: true,
        },
    ));
    tokio::spawn(webhook::serve(
        webhook_listener,
        WebhookState {
            token: Some(Arc::from("t0ken")),
            scaler: None,
            metrics,
        },
    ));
    let url = |port: u16, path: &str| format!("https://{NAME}:{port}{path}");
    let resolve = |b: reqwest::ClientBuilder| {
        b.resolve(NAME, ([127, 0, 0, 1], http_port).into())
            .resolve(NAME, ([127, 0, 0, 1], webhook_port).into())
            .build()
            .unwrap()
    };
    let prometheus = resolve(ca.client(Some(&ca.leaf(&["prometheus"]))));
    let kubelet = resolve(ca.client(None));

    // Prometheus, with its client certificate, reads /metrics; without one, 403.
    let r = prometheus
        .get(url(http_port, "/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("candela_operator_"));
    let r = kubelet
        .get(url(http_port, "/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A certificate from another CA is refused in the handshake.
    let stranger = Ca::new("someone else");
    let forged = resolve(ca.client(Some(&stranger.leaf(&["prometheus"]))));
    assert!(forged.get(url(http_port, "/metrics")).send().await.is_err());
    // The kubelet's probes need no certificate.
    for probe in ["/healthz", "/readyz"] {
        let r = kubelet.get(url(http_port, probe)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{probe}");
    }
    // Plain HTTP gets no metrics.
    let plain = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics")).await;
    assert!(plain.map_or(true, |r| r.status() != 200));

    // Alertmanager: HTTPS with the bearer token, no client certificate needed.
    let post = |token: &'static str| {
        kubelet
            .post(url(webhook_port, "/alertmanager"))
            .bearer_auth(token)
            .body("{}")
            .send()
    };
    assert_eq!(post("wrong").await.unwrap().status(), 401);
    // Past the token: a payload that is not Alertmanager's.
    assert_eq!(post("t0ken").await.unwrap().status(), 400);

    // A rotated Secret: new connections get the new certificate, no restart.
    let rotated = Ca::new("rotated CA");
    let tmp = dir.join("next");
    rotated.write_secret(&tmp, &rotated.leaf(&[NAME]));
    for file in ["ca.crt", "tls.key", "tls.crt"] {
        std::fs::rename(tmp.join(file), dir.join(file)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = resolve(rotated.client(None));
        if let Ok(r) = fresh.get(url(http_port, "/healthz")).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_dir_all(&dir).ok();
}
