//! [`ServerTls`]: the certificate, key and client CA of a listener, loaded from PEM files
//! and re-read when the files change.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock, Weak};
use std::time::Duration;

use candela_contract::tls::{ClientCertReqs, TlsArgs};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// How often the files are compared with what is loaded. Kubernetes swaps a Secret
/// volume's files at once (a symlink flip), so a rotation is served within this long of
/// the kubelet writing it.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// A listener's TLS material, shared by every listener that serves it; cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerTls {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    source: Source,
    interval: Duration,
    /// What is served now, with the file bytes it was built from.
    current: RwLock<Arc<Material>>,
    /// Bumped on every successful reload; listeners rebuild their config when it moves.
    generation: AtomicU64,
    /// The bytes of the last set that failed to load, so a bad rotation is logged once.
    failed: Mutex<Option<Vec<Vec<u8>>>>,
    watcher: Once,
}

/// The files and what they are checked against.
#[derive(Debug)]
struct Source {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    reqs: ClientCertReqs,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
struct Material {
    key: Arc<CertifiedKey>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    bytes: Vec<Vec<u8>>,
}

impl ServerTls {
    /// Loads the files now; errors name the file.
    ///
    /// # Errors
    /// A file is unreadable, not PEM, has no certificate or key, or the key does not
    /// belong to the certificate.
    pub fn new(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: Option<PathBuf>,
        reqs: ClientCertReqs,
    ) -> Result<Self, Error> {
        let source = Source {
            cert: cert.into(),
            key: key.into(),
            ca,
            reqs,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        let material = source.build(source.read()?)?;
        Ok(Self {
            state: Arc::new(State {
                source,
                interval: RELOAD_INTERVAL,
                current: RwLock::new(Arc::new(material)),
                generation: AtomicU64::new(0),
                failed: Mutex::new(None),
                watcher: Once::new(),
            }),
        })
    }

    /// The material of `--ssl-*`, or `None` when TLS is off. Expects flags that passed
    /// [`TlsArgs::validate`].
    ///
    /// # Errors
    /// See [`ServerTls::new`].
    pub fn from_args(args: &TlsArgs) -> Result<Option<Self>, Error> {
        match (&args.certfile, &args.keyfile) {
            (Some(cert), Some(key)) => Self::new(
                cert.clone(),
                key.clone(),
                args.ca_certs.clone(),
                args.client_cert_reqs(),
            )
            .map(Some),
            _ => Ok(None),
        }
    }

    /// How often the watcher compares the files (tests shorten it).
    #[must_use]
    pub fn with_reload_interval(mut self, interval: Duration) -> Self {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.interval = interval;
        }
        self
    }

    /// What clients must show.
    pub fn client_cert_reqs(&self) -> ClientCertReqs {
        self.state.source.reqs
    }

    /// The certificate file (for log lines).
    pub fn cert_path(&self) -> &Path {
        &self.state.source.cert
    }

    /// Re-reads the files; `Ok(true)` when they changed and the new set is served now.
    ///
    /// # Errors
    /// The new set cannot be used; the previous one stays in use.
    pub fn reload(&self) -> Result<bool, Error> {
        self.state.reload()
    }

    /// The DER of the certificate served now (leaf first).
    pub fn served_chain(&self) -> Vec<CertificateDer<'static>> {
        self.state.material().key.cert.clone()
    }

    /// Starts the file watcher once per set of files (on the current tokio runtime); it
    /// ends when the last clone is dropped.
    pub(crate) fn watch(&self) {
        self.state.watcher.call_once(|| {
            let weak: Weak<State> = Arc::downgrade(&self.state);
            let interval = self.state.interval;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    let Some(state) = weak.upgrade() else { break };
                    if let Err(e) = tokio::task::spawn_blocking(move || state.reload()).await {
                        tracing::warn!("TLS reload task failed: {e}");
                    }
                }
            });
        });
    }

    /// The rustls config for one listener; `cache` holds the last one built for it, rebuilt
    /// only after a reload (so TLS session resumption keeps working between rotations).
    pub(crate) fn config(
        &self,
        alpn: &[&[u8]],
        cache: &mut Option<(u64, Arc<ServerConfig>)>,
    ) -> Result<Arc<ServerConfig>, Error> {
        let generation = self.state.generation.load(Ordering::Acquire);
        if let Some((built, config)) = cache
            && *built == generation
        {
            return Ok(Arc::clone(config));
        }
        let m = self.state.material();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&self.state.source.provider))
            .with_safe_default_protocol_versions()
            .map_err(|source| Error::Rustls {
                what: "TLS protocol versions".into(),
                source,
            })?;
        let builder = match &m.verifier {
            Some(v) => builder.with_client_cert_verifier(Arc::clone(v)),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(Fixed(Arc::clone(&m.key))));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let config = Arc::new(config);
        *cache = Some((generation, Arc::clone(&config)));
        Ok(config)
    }
}

impl State {
    fn material(&self) -> Arc<Material> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn reload(&self) -> Result<bool, Error> {
        let bytes = self.source.read()?;
        if self.material().bytes == bytes {
            return Ok(false);
        }
        match self.source.build(bytes.clone()) {
            Ok(material) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(material);
                self.generation.fetch_add(1, Ordering::AcqRel);
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(cert = %self.source.cert.display(), "TLS certificate reloaded");
                Ok(true)
            }
            Err(e) => {
                let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                if failed.as_ref() != Some(&bytes) {
                    tracing::warn!(
                        "TLS files changed but cannot be used, still serving the previous certificate: {e}"
                    );
                    *failed = Some(bytes);
                }
                Err(e)
            }
        }
    }
}

impl Source {
    /// The bytes of the certificate, key and CA files, in that order.
    fn read(&self) -> Result<Vec<Vec<u8>>, Error> {
        [Some(&self.cert), Some(&self.key), self.ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|path| {
                std::fs::read(path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })
            })
            .collect()
    }

    fn build(&self, bytes: Vec<Vec<u8>>) -> Result<Material, Error> {
        let pem = |path: &Path, e: rustls_pki_types::pem::Error| Error::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let chain = CertificateDer::pem_slice_iter(&bytes[0])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(&self.cert, e))?;
        if chain.is_empty() {
            return Err(Error::Pem {
                path: self.cert.clone(),
                message: "no CERTIFICATE block".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&bytes[1]).map_err(|e| pem(&self.key, e))?;
        let key =
            CertifiedKey::from_der(chain, key, &self.provider).map_err(|source| Error::Rustls {
                what: format!("{} with {}", self.key.display(), self.cert.display()),
                source,
            })?;
        let verifier = match (&self.ca, self.reqs) {
            (Some(ca), ClientCertReqs::Optional | ClientCertReqs::Required) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&bytes[2]) {
                    let cert = cert.map_err(|e| pem(ca, e))?;
                    roots.add(cert).map_err(|source| Error::Rustls {
                        what: ca.display().to_string(),
                        source,
                    })?;
                }
                if roots.is_empty() {
                    return Err(Error::Pem {
                        path: ca.clone(),
                        message: "no CERTIFICATE block".into(),
                    });
                }
                let builder = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&self.provider),
                );
                let builder = if self.reqs == ClientCertReqs::Optional {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                Some(builder.build().map_err(|e| Error::Pem {
                    path: ca.clone(),
                    message: e.to_string(),
                })?)
            }
            _ => None,
        };
        Ok(Material {
            key: Arc::new(key),
            verifier,
            bytes,
        })
    }
}

/// Serves one certificate (SNI is not consulted: a pod has one name set).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}
