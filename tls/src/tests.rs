//! Real handshakes on loopback: a CA, server and client certificates made with rcgen,
//! served by [`Listener`] under axum, read by reqwest (rustls) as clients do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::*;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A leaf for `names` (DNS names or IPs): (certificate PEM, key PEM, DER).
    fn leaf(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn files(ca: &Ca, leaf: &(String, String, Vec<u8>)) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (cert, key, ca_path) = (path("tls.crt"), path("tls.key"), path("ca.crt"));
    write(&cert, &leaf.0);
    write(&key, &leaf.1);
    write(&ca_path, &ca.pem());
    Files {
        _dir: dir,
        cert,
        key,
        ca: ca_path,
    }
}

/// Writes as the kubelet updates a Secret volume: the new file appears at once.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn serve(tls: Option<&ServerTls>) -> Served {
    let app = Router::new().route("/", get(|| async { "ok" })).route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<PeerInfo>| async move {
            format!("client_cert={}", peer.client_cert)
        }),
    );
    let listener = Listener::bind("127.0.0.1:0", tls, Alpn::Http1)
        .await
        .unwrap();
    let port = listener.local_addr().port();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<PeerInfo>(),
        )
        .await
        .unwrap();
    });
    Served(port)
}

struct Served(u16);

impl Served {
    fn https(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.0)
    }
    fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.0)
    }
}

fn client(ca: Option<&Ca>, identity: Option<&(String, String, Vec<u8>)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .tls_info(true)
        .use_rustls_tls();
    if let Some(ca) = ca {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
    }
    if let Some((cert, key, _)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// The DER of the certificate the server presented on this response's connection.
fn served(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a TLS response")
        .to_vec()
}

#[tokio::test]
async fn https_for_clients_that_trust_the_ca_and_a_clear_answer_to_plain_http() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    let f = files(&ca, &leaf);
    let tls = ServerTls::new(&f.cert, &f.key, None, ClientCertReqs::None).unwrap();
    let addr = serve(Some(&tls)).await;

    let resp = client(Some(&ca), None)
        .get(addr.https("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(served(&resp), leaf.2);
    assert_eq!(resp.text().await.unwrap(), "ok");

    // A client that does not trust the CA refuses the server.
    let e = client(None, None)
        .get(addr.https("/"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");

    // Plain HTTP on the TLS port: a 400 saying what to do, not a reset.
    let resp = reqwest::get(addr.http("/")).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("use https://"));

    // A plain listener speaks HTTP and reports no client certificate.
    let plain = serve(None).await;
    let text = reqwest::get(plain.http("/peer"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "client_cert=false");
}

#[tokio::test]
async fn client_certificates_optional_and_required() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf(&["localhost"]);
    let prometheus = ca.leaf(&["prometheus"]);
    let stranger = Ca::new("other CA").leaf(&["prometheus"]);
    let f = files(&ca, &leaf);

    let optional = ServerTls::new(
        &f.cert,
        &f.key,
        Some(f.ca.clone()),
        ClientCertReqs::Optional,
    )
    .unwrap();
    let addr = serve(Some(&optional)).await;
    let peer = |c: reqwest::Client| {
        let url = addr.https("/peer");
        async move { c.get(url).send().await?.text().await }
    };
    assert_eq!(
        peer(client(Some(&ca), None)).await.unwrap(),
        "client_cert=false"
    );
    assert_eq!(
        peer(client(Some(&ca), Some(&prometheus))).await.unwrap(),
        "client_cert=true"
    );
    // A certificate from another CA is refused even where certificates are optional.
    assert!(peer(client(Some(&ca), Some(&stranger))).await.is_err());

    let required = ServerTls::new(
        &f.cert,
        &f.key,
        Some(f.ca.clone()),
        ClientCertReqs::Required,
    )
    .unwrap();
    let addr = serve(Some(&required)).await;
    let peer = |c: reqwest::Client| {
        let url = addr.https("/peer");
        async move { c.get(url).send().await?.text().await }
    };
    assert!(peer(client(Some(&ca), None)).await.is_err());
    assert_eq!(
        peer(client(Some(&ca), Some(&prometheus))).await.unwrap(),
        "client_cert=true"
    );
}

#[tokio::test]
async fn rotated_files_reach_new_connections_and_open_ones_keep_working() {
    let ca = Ca::new("test CA");
    let old = ca.leaf(&["localhost"]);
    let f = files(&ca, &old);
    let tls = ServerTls::new(&f.cert, &f.key, None, ClientCertReqs::None)
        .unwrap()
        .with_reload_interval(Duration::from_millis(100));
    let addr = serve(Some(&tls)).await;
    let kept = client(Some(&ca), None);
    let resp = kept.get(addr.https("/")).send().await.unwrap();
    assert_eq!(served(&resp), old.2);
    resp.text().await.unwrap();

    // A mismatched key (the cert written before its key): the old certificate stays.
    let new = ca.leaf(&["localhost"]);
    write(&f.cert, &new.0);
    let e = tls.reload().unwrap_err().to_string();
    assert!(e.contains("tls.key with") && e.contains("tls.crt"), "{e}");
    assert_eq!(tls.served_chain()[0].as_ref(), &old.2[..]);

    write(&f.key, &new.1);
    let start = Instant::now();
    loop {
        let resp = client(Some(&ca), None)
            .get(addr.https("/"))
            .send()
            .await
            .unwrap();
        if served(&resp) == new.2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the rotation is still the same one, still served.
    let resp = kept.get(addr.https("/")).send().await.unwrap();
    assert_eq!(served(&resp), old.2, "the pooled connection was dropped");
    assert_eq!(resp.text().await.unwrap(), "ok");
    assert!(!tls.reload().unwrap(), "nothing changed since");
}

#[test]
fn bad_files_are_named() {
    let ca = Ca::new("test CA");
    let f = files(&ca, &ca.leaf(&["localhost"]));
    let missing = f.cert.with_file_name("nope.crt");
    let e = ServerTls::new(&missing, &f.key, None, ClientCertReqs::None).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("reading {}", missing.display())),
        "{e}"
    );
    let e = ServerTls::new(&f.key, &f.key, None, ClientCertReqs::None).unwrap_err();
    assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    let e = ServerTls::new(&f.cert, &f.cert, None, ClientCertReqs::None).unwrap_err();
    assert!(
        e.to_string().starts_with(&f.cert.display().to_string()),
        "{e}"
    );
    let e = ServerTls::new(
        &f.cert,
        &f.key,
        Some(f.key.clone()),
        ClientCertReqs::Required,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    let other = ca.leaf(&["localhost"]);
    write(&f.key, &other.1);
    let e = ServerTls::new(&f.cert, &f.key, None, ClientCertReqs::None).unwrap_err();
    assert!(e.to_string().contains("tls.key with"), "{e}");
}
