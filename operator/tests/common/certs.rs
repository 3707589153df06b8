//! Test certificates made with rcgen: a CA, and server and client certificates it signs,
//! written as the files of a `kubernetes.io/tls` Secret volume (`tls.crt`, `tls.key`,
//! `ca.crt`); and reqwest clients that trust the CA, with or without a client certificate.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes `leaf` and this CA into `dir` as a Secret volume holds them.
    pub fn write_secret(&self, dir: &Path, leaf: &Leaf) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("tls.crt"), &leaf.cert).unwrap();
        std::fs::write(dir.join("tls.key"), &leaf.key).unwrap();
        std::fs::write(dir.join("ca.crt"), self.pem()).unwrap();
    }

    /// A client that trusts only this CA, presenting `identity` when given.
    pub fn client(&self, identity: Option<&Leaf>) -> reqwest::ClientBuilder {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem().as_bytes()).unwrap());
        if let Some(leaf) = identity {
            b = b.identity(
                reqwest::Identity::from_pem(format!("{}{}", leaf.cert, leaf.key).as_bytes())
                    .unwrap(),
            );
        }
        b
    }
}
