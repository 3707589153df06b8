//! TLS of an InferenceDeployment's pods, resolved from `spec.tls` (engine HTTP and gRPC)
//! and `spec.monitoring.tls` (the sidecar's `/metrics`, mutual TLS): which Secret each
//! listener reads, where it is mounted, the flags that point the processes at the files,
//! and the cert-manager Certificates that fill the Secrets the user did not name.
//!
//! Invariants:
//! - A set block never degrades to plain HTTP: without a Secret it needs an issuer (the
//!   spec's or the operator's `--cert-manager-issuer`), else [`Error::InvalidSpec`]; the
//!   reconciler refuses it too when cert-manager's CRD is not installed
//!   ([`Tls::cert_manager_fields`]).
//! - Secrets are mounted as whole volumes (never `subPath`), so the kubelet swaps rotated
//!   files in place and the engine and sidecar reload them without a restart. The sidecar
//!   gets only the `ca.crt` of the engine's Secret, never the engine's key.
//! - Every certificate names the Service (`<name>`, `<name>.<ns>`, `<name>.<ns>.svc`,
//!   `<name>.<ns>.svc.cluster.local`), `localhost` and `127.0.0.1`; the sidecar and
//!   Prometheus verify the name `<name>.<ns>.svc` ([`Tls::server_name`]), which user
//!   Secrets must carry too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume, VolumeMount};
use kube::api::DynamicObject;
use serde_json::{Value, json};

use candela_contract::tls::{ClientCertReqs, TlsFlags};

use super::thirdparty::ThirdParty;
use super::{BuildConfig, Owner};
use crate::crd::{CertManagerSpec, IssuerRef};
use crate::{Error, Result};

/// Where the engine container reads its certificate, key and CA (the API Secret).
pub const API_DIR: &str = "/etc/candela/tls";
/// Where the sidecar reads the CA that signed the engine's certificate.
pub const ENGINE_CA_DIR: &str = "/etc/candela/engine-ca";
/// Where the sidecar reads its metrics certificate, key and the client CA.
pub const METRICS_DIR: &str = "/etc/candela/metrics-tls";
/// Keys of a `kubernetes.io/tls` Secret (cert-manager writes the same).
pub const CERT_KEY: &str = "tls.crt";
/// See [`CERT_KEY`].
pub const KEY_KEY: &str = "tls.key";
/// See [`CERT_KEY`].
pub const CA_KEY: &str = "ca.crt";
/// Owner-only read of the key files (the pod's fsGroup makes them the engine user's).
const SECRET_MODE: i32 = 0o440;
/// The common name of the client certificate the operator issues for Prometheus.
pub const PROMETHEUS_CLIENT_NAME: &str = "prometheus";

const API_VOLUME: &str = "tls";
const ENGINE_CA_VOLUME: &str = "engine-ca";
const METRICS_VOLUME: &str = "metrics-tls";

/// Name of the Secret (and Certificate) cert-manager fills for the engine's API.
pub fn api_secret_name(instance: &str) -> String {
    format!("{instance}-tls")
}

/// Name of the Secret (and Certificate) cert-manager fills for the sidecar's `/metrics`.
pub fn metrics_secret_name(instance: &str) -> String {
    format!("{instance}-metrics-tls")
}

/// Name of the Secret (and Certificate) cert-manager fills with Prometheus's client
/// certificate.
pub fn metrics_client_secret_name(instance: &str) -> String {
    format!("{instance}-metrics-client")
}

/// Every Certificate name the operator may create for `instance` (to delete the ones the
/// spec no longer wants).
pub fn certificate_names(instance: &str) -> [String; 3] {
    [
        api_secret_name(instance),
        metrics_secret_name(instance),
        metrics_client_secret_name(instance),
    ]
}

/// The Secrets of the sidecar's metrics TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSecrets {
    /// The sidecar's certificate, key and the CA of client certificates.
    pub server: String,
    /// Prometheus's client certificate (what the ServiceMonitor sends); `None` only when
    /// there is no ServiceMonitor to send it.
    pub client: Option<String>,
}

/// The resolved TLS of one InferenceDeployment.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// The Secret of the engine's HTTP and gRPC certificate (`spec.tls`).
    pub api: Option<String>,
    /// The Secrets of `/metrics` (`spec.monitoring.tls`).
    pub metrics: Option<MetricsSecrets>,
    /// The name the sidecar and Prometheus verify: `<name>.<namespace>.svc`.
    pub server_name: String,
    /// The cert-manager Certificates to apply.
    pub certificates: Vec<DynamicObject>,
    /// The spec fields whose certificates cert-manager issues (the reconciler refuses
    /// them when its CRD is not installed).
    pub cert_manager_fields: Vec<&'static str>,
}

/// Resolves `spec.tls` and `spec.monitoring.tls`.
///
/// # Errors
/// [`Error::InvalidSpec`] when cert-manager would issue a certificate but neither the
/// spec nor `--cert-manager-issuer` names an issuer, or when `monitoring.tls.secretName`
/// is set without `clientSecretName` while a ServiceMonitor would need it.
pub fn resolve(owner: &Owner<'_>, config: &BuildConfig) -> Result<Tls> {
    let spec = &owner.infd.spec;
    let mut tls = Tls {
        server_name: format!("{}.{}.svc", owner.name, owner.namespace),
        ..Tls::default()
    };
    if let Some(api) = &spec.tls {
        tls.api = Some(match &api.secret_name {
            Some(secret) => secret.clone(),
            None => {
                let field = "spec.tls";
                let issuer = issuer(api.cert_manager.as_ref(), config, field)?;
                let name = api_secret_name(&owner.name);
                tls.certificates.push(certificate(
                    owner,
                    &name,
                    &issuer,
                    api.cert_manager.as_ref(),
                    Usage::Server,
                ));
                tls.cert_manager_fields.push(field);
                name
            }
        });
    }
    let mon = &spec.monitoring;
    if let Some(m) = &mon.tls {
        let field = "spec.monitoring.tls";
        let cm = m.cert_manager.as_ref();
        let issued_before = tls.certificates.len();
        let server = match &m.secret_name {
            Some(secret) => secret.clone(),
            None => {
                let issuer = issuer(cm, config, field)?;
                let name = metrics_secret_name(&owner.name);
                tls.certificates
                    .push(certificate(owner, &name, &issuer, cm, Usage::Server));
                name
            }
        };
        let client = match (&m.client_secret_name, &m.secret_name) {
            (Some(secret), _) => Some(secret.clone()),
            // The user's CA signed the server certificate: cert-manager cannot sign a
            // client certificate the sidecar would admit.
            (None, Some(_)) if mon.service_monitor.enabled => {
                return Err(Error::InvalidSpec(format!(
                    "{field}.clientSecretName is required with {field}.secretName: the \
                     ServiceMonitor must send Prometheus a client certificate signed by the \
                     CA in the Secret {server:?} (or set monitoring.serviceMonitor.enabled=false)"
                )));
            }
            (None, Some(_)) => None,
            (None, None) => {
                let issuer = issuer(cm, config, field)?;
                let name = metrics_client_secret_name(&owner.name);
                tls.certificates
                    .push(certificate(owner, &name, &issuer, cm, Usage::Client));
                Some(name)
            }
        };
        if tls.certificates.len() > issued_before {
            tls.cert_manager_fields.push(field);
        }
        tls.metrics = Some(MetricsSecrets { server, client });
    }
    Ok(tls)
}

/// The issuer of `field`'s certificates: the spec's, else the operator's default.
fn issuer(cm: Option<&CertManagerSpec>, config: &BuildConfig, field: &str) -> Result<IssuerRef> {
    cm.and_then(|c| c.issuer_ref.clone())
        .or_else(|| config.cert_manager_issuer.clone())
        .ok_or_else(|| {
            Error::InvalidSpec(format!(
                "{field}: no secretName, and no cert-manager issuer to issue a certificate: \
                 set {field}.secretName (a kubernetes.io/tls Secret with tls.crt, tls.key and \
                 ca.crt) or {field}.certManager.issuerRef (or start the operator with \
                 --cert-manager-issuer)"
            ))
        })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Usage {
    Server,
    Client,
}

/// A cert-manager Certificate filling the Secret `name`. Keys are ECDSA P-256 in PKCS#8
/// (what every TLS stack reads), rotated with each renewal.
fn certificate(
    owner: &Owner<'_>,
    name: &str,
    issuer: &IssuerRef,
    cm: Option<&CertManagerSpec>,
    usage: Usage,
) -> DynamicObject {
    let (n, ns) = (&owner.name, &owner.namespace);
    let mut spec = json!({
        "secretName": name,
        "issuerRef": {
            "name": issuer.name,
            "kind": issuer.kind.as_deref().unwrap_or("Issuer"),
            "group": issuer.group.as_deref().unwrap_or("cert-manager.io"),
        },
        "privateKey": {
            "algorithm": "ECDSA",
            "size": 256,
            "encoding": "PKCS8",
            "rotationPolicy": "Always",
        },
    });
    match usage {
        Usage::Server => {
            spec["commonName"] = json!(format!("{n}.{ns}.svc"));
            spec["dnsNames"] = json!([
                n,
                format!("{n}.{ns}"),
                format!("{n}.{ns}.svc"),
                format!("{n}.{ns}.svc.cluster.local"),
                "localhost",
            ]);
            spec["ipAddresses"] = json!(["127.0.0.1"]);
            spec["usages"] = json!(["server auth", "digital signature", "key encipherment"]);
        }
        Usage::Client => {
            spec["commonName"] = json!(PROMETHEUS_CLIENT_NAME);
            spec["usages"] = json!(["client auth", "digital signature", "key encipherment"]);
        }
    }
    if let Some(cm) = cm {
        for (key, value) in [
            ("duration", &cm.duration),
            ("renewBefore", &cm.renew_before),
        ] {
            if let Some(v) = value {
                spec[key] = Value::String(v.clone());
            }
        }
    }
    let mut obj = ThirdParty::Certificate.object(name, ns);
    obj.metadata = owner.meta(name.to_owned(), &BTreeMap::new());
    obj.data = json!({ "spec": spec });
    obj
}

impl Tls {
    /// The engine's `--ssl-*` flags (server TLS only: clients authenticate with the API
    /// key).
    pub fn engine_flags(&self) -> TlsFlags {
        match &self.api {
            Some(_) => TlsFlags {
                certfile: Some(path(API_DIR, CERT_KEY)),
                keyfile: Some(path(API_DIR, KEY_KEY)),
                ..TlsFlags::default()
            },
            None => TlsFlags::default(),
        }
    }

    /// The sidecar's `--ssl-*` flags: `/metrics` and `/profiles` admit only clients with a
    /// certificate signed by the Secret's CA (`--ssl-cert-reqs 1`, so the kubelet's probes
    /// of `/health` and `/ready` still pass without one).
    pub fn sidecar_flags(&self) -> TlsFlags {
        match &self.metrics {
            Some(_) => TlsFlags {
                certfile: Some(path(METRICS_DIR, CERT_KEY)),
                keyfile: Some(path(METRICS_DIR, KEY_KEY)),
                ca_certs: Some(path(METRICS_DIR, CA_KEY)),
                cert_reqs: ClientCertReqs::Optional,
            },
            None => TlsFlags::default(),
        }
    }

    /// The scheme of the engine's URIs (`https` with `spec.tls`).
    pub fn engine_scheme(&self) -> &'static str {
        if self.api.is_some() { "https" } else { "http" }
    }

    /// `--engine-ca-certs` of the sidecar, with `spec.tls`.
    pub fn engine_ca(&self) -> Option<PathBuf> {
        self.api.as_ref().map(|_| path(ENGINE_CA_DIR, CA_KEY))
    }

    /// The pod's Secret volumes.
    pub fn volumes(&self) -> Vec<Volume> {
        let mut volumes = Vec::new();
        if let Some(secret) = &self.api {
            volumes.push(secret_volume(API_VOLUME, secret, None));
            volumes.push(secret_volume(ENGINE_CA_VOLUME, secret, Some(CA_KEY)));
        }
        if let Some(m) = &self.metrics {
            volumes.push(secret_volume(METRICS_VOLUME, &m.server, None));
        }
        volumes
    }

    /// The engine container's mounts.
    pub fn engine_mounts(&self) -> Vec<VolumeMount> {
        self.api
            .iter()
            .map(|_| read_only(API_VOLUME, API_DIR))
            .collect()
    }

    /// The sidecar container's mounts.
    pub fn sidecar_mounts(&self) -> Vec<VolumeMount> {
        let mut mounts = Vec::new();
        if self.api.is_some() {
            mounts.push(read_only(ENGINE_CA_VOLUME, ENGINE_CA_DIR));
        }
        if self.metrics.is_some() {
            mounts.push(read_only(METRICS_VOLUME, METRICS_DIR));
        }
        mounts
    }
}

fn path(dir: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("{dir}/{key}"))
}

fn secret_volume(name: &str, secret: &str, only: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            default_mode: Some(SECRET_MODE),
            items: only.map(|key| {
                vec![KeyToPath {
                    key: key.to_owned(),
                    path: key.to_owned(),
                    mode: None,
                }]
            }),
            optional: None,
        }),
        ..Volume::default()
    }
}

fn read_only(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::BuildConfig;
    use crate::fixtures::infd;

    fn resolved(yaml: &str, config: &BuildConfig) -> Result<Tls> {
        let obj = infd(yaml);
        resolve(&Owner::new(&obj).unwrap(), config)
    }

    fn issuer_config() -> BuildConfig {
        BuildConfig {
            cert_manager_issuer: Some(IssuerRef::parse_flag("ClusterIssuer/ca").unwrap()),
            ..BuildConfig::default()
        }
    }

    #[test]
    fn off_without_the_blocks() {
        let t = resolved(
            "spec: {model: {source: hf://org/m}}",
            &BuildConfig::default(),
        )
        .unwrap();
        assert!(t.api.is_none() && t.metrics.is_none() && t.certificates.is_empty());
        assert_eq!(t.engine_flags(), TlsFlags::default());
        assert_eq!(t.sidecar_flags(), TlsFlags::default());
        assert!(t.volumes().is_empty());
        assert_eq!(t.engine_scheme(), "http");
    }

    #[test]
    fn user_secrets_need_no_cert_manager() {
        let t = resolved(
            "spec: {model: {source: hf://org/m}, tls: {secretName: api}, \
             monitoring: {tls: {secretName: mon, clientSecretName: prom}}}",
            &BuildConfig::default(),
        )
        .unwrap();
        assert_eq!(t.api.as_deref(), Some("api"));
        assert_eq!(
            t.metrics,
            Some(MetricsSecrets {
                server: "mon".into(),
                client: Some("prom".into())
            })
        );
        assert!(t.certificates.is_empty() && t.cert_manager_fields.is_empty());
        assert_eq!(t.server_name, "test.ns.svc");
        assert_eq!(t.sidecar_flags().cert_reqs, ClientCertReqs::Optional);
        // The sidecar sees only the CA of the engine's Secret.
        let ca = &t.volumes()[1];
        let items = ca.secret.as_ref().unwrap().items.as_ref().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key, CA_KEY);
    }

    #[test]
    fn cert_manager_fills_what_is_not_given() {
        let t = resolved(
            "spec: {model: {source: hf://org/m}, tls: {}, monitoring: {tls: {}}}",
            &issuer_config(),
        )
        .unwrap();
        let names: Vec<_> = t
            .certificates
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, certificate_names("test"));
        assert_eq!(t.cert_manager_fields, ["spec.tls", "spec.monitoring.tls"]);
        let server = &t.certificates[0].data["spec"];
        assert_eq!(server["issuerRef"]["kind"], "ClusterIssuer");
        assert!(
            server["dnsNames"]
                .as_array()
                .unwrap()
                .contains(&json!("test.ns.svc"))
        );
        assert_eq!(server["ipAddresses"], json!(["127.0.0.1"]));
        assert_eq!(t.certificates[2].data["spec"]["usages"][0], "client auth");

        // The spec's issuer wins over the operator's; a given client Secret is used as is.
        let t = resolved(
            "spec: {model: {source: hf://org/m}, monitoring: {tls: {clientSecretName: prom, \
             certManager: {issuerRef: {name: own}, duration: 720h}}}}",
            &issuer_config(),
        )
        .unwrap();
        assert_eq!(t.certificates.len(), 1);
        let spec = &t.certificates[0].data["spec"];
        assert_eq!(spec["issuerRef"]["name"], "own");
        assert_eq!(spec["issuerRef"]["kind"], "Issuer");
        assert_eq!(spec["duration"], "720h");
        assert_eq!(t.metrics.unwrap().client.as_deref(), Some("prom"));
    }

    #[test]
    fn a_set_block_never_falls_back_to_plain_http() {
        let refusal = |yaml: &str| match resolved(yaml, &BuildConfig::default()) {
            Err(Error::InvalidSpec(m)) => m,
            other => panic!("{yaml}: {other:?}"),
        };
        let m = refusal("spec: {model: {source: hf://org/m}, tls: {}}");
        assert!(m.starts_with("spec.tls: no secretName"), "{m}");
        let m = refusal("spec: {model: {source: hf://org/m}, monitoring: {tls: {}}}");
        assert!(m.starts_with("spec.monitoring.tls: no secretName"), "{m}");
        let m = refusal("spec: {model: {source: hf://org/m}, monitoring: {tls: {secretName: s}}}");
        assert!(
            m.starts_with("spec.monitoring.tls.clientSecretName is required"),
            "{m}"
        );
        // Without a ServiceMonitor nobody needs the client Secret.
        let t = resolved(
            "spec: {model: {source: hf://org/m}, monitoring: {serviceMonitor: {enabled: false}, \
             tls: {secretName: s}}}",
            &BuildConfig::default(),
        )
        .unwrap();
        assert_eq!(t.metrics.unwrap().client, None);
    }
}
