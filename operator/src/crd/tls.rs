//! `spec.tls` (the engine's OpenAI HTTP and gRPC ports) and `spec.monitoring.tls` (the
//! sidecar's `/metrics`, with client certificates): where each listener's certificate comes
//! from. Either a `kubernetes.io/tls` Secret the user manages, or a cert-manager
//! `Certificate` the operator creates when cert-manager's CRD is installed. A block that is
//! set never falls back to plain HTTP: without a Secret and without cert-manager the
//! InferenceDeployment gets an `InvalidSpec` condition naming the field.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The CEL rule both TLS blocks share: one source of the certificate, not two.
const ONE_SOURCE_RULE: &str = "!(has(self.secretName) && has(self.certManager))";

/// TLS on the engine's OpenAI HTTP port (8000) and gRPC port (50051).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": ONE_SOURCE_RULE,
    "message": "tls: set secretName or certManager, not both"
}]))]
pub struct TlsSpec {
    /// A `kubernetes.io/tls` Secret in this namespace with `tls.crt`, `tls.key` and
    /// `ca.crt` (the CA that signed `tls.crt`; the sidecar verifies the engine with it).
    /// The certificate must name `<name>.<namespace>.svc`, the name the sidecar checks.
    /// Absent: cert-manager issues the certificate into the Secret `<name>-tls` (see
    /// `certManager`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,

    /// How cert-manager issues the certificate when `secretName` is absent. Absent too:
    /// the operator's default issuer (`--cert-manager-issuer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerSpec>,
}

/// TLS on the sidecar's metrics port (9090): `/metrics` and `/profiles` admit only clients
/// with a certificate signed by the CA in `ca.crt` (Prometheus's); `/health` and `/ready`
/// stay open for the kubelet's probes. The ServiceMonitor scrapes with `scheme: https`,
/// the CA and the client certificate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": ONE_SOURCE_RULE,
    "message": "monitoring.tls: set secretName or certManager, not both"
}]))]
pub struct MetricsTlsSpec {
    /// A `kubernetes.io/tls` Secret in this namespace with `tls.crt`, `tls.key` and
    /// `ca.crt`: the sidecar's serving certificate, and the CA that signs both it and the
    /// client certificates the sidecar admits. The certificate must name
    /// `<name>.<namespace>.svc` (the ServiceMonitor's `serverName`). Absent: cert-manager
    /// issues it into the Secret `<name>-metrics-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,

    /// A `kubernetes.io/tls` Secret in this namespace with the client certificate
    /// Prometheus presents (`tls.crt`, `tls.key`), signed by the same CA; the
    /// ServiceMonitor references it (prometheus-operator reads Secrets of the
    /// ServiceMonitor's own namespace only). Absent: cert-manager issues one into
    /// `<name>-metrics-client`; with `secretName` and a ServiceMonitor it is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub client_secret_name: Option<String>,

    /// How cert-manager issues the certificates that are not given as Secrets. Absent: the
    /// operator's default issuer (`--cert-manager-issuer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerSpec>,
}

/// cert-manager settings of the Certificates the operator creates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerSpec {
    /// The issuer that signs the certificates. It must write `ca.crt` into the Secrets
    /// (a CA or Vault issuer does; ACME issuers do not). Absent: the operator's
    /// `--cert-manager-issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,

    /// Lifetime of the certificates (cert-manager's default: 90 days), e.g. `720h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub duration: Option<String>,

    /// How long before expiry cert-manager renews them (default: a third of the
    /// lifetime). The pods pick the new files up without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub renew_before: Option<String>,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the issuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// `Issuer` (in this namespace), `ClusterIssuer`, or an external issuer's kind.
    /// Default: `Issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,

    /// API group of the issuer. Default: `cert-manager.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl IssuerRef {
    /// Parses the operator's `--cert-manager-issuer`: `KIND/NAME` (`ClusterIssuer/ca`) or
    /// `NAME` (an `Issuer` in each InferenceDeployment's namespace).
    ///
    /// # Errors
    /// A message when a part is empty.
    pub fn parse_flag(text: &str) -> Result<Self, String> {
        let (kind, name) = match text.split_once('/') {
            Some((kind, name)) => (Some(kind.trim()), name.trim()),
            None => (None, text.trim()),
        };
        if name.is_empty() || kind.is_some_and(str::is_empty) {
            return Err(format!(
                "expected KIND/NAME (e.g. ClusterIssuer/candela-ca) or NAME, got {text:?}"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            kind: kind.map(str::to_owned),
            group: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::IssuerRef;

    #[test]
    fn issuer_flag() {
        let i = IssuerRef::parse_flag("ClusterIssuer/candela-ca").unwrap();
        assert_eq!(
            (i.kind.as_deref(), i.name.as_str()),
            (Some("ClusterIssuer"), "candela-ca")
        );
        let i = IssuerRef::parse_flag("ca").unwrap();
        assert_eq!((i.kind, i.name.as_str()), (None, "ca"));
        for bad in ["", "/x", "ClusterIssuer/", " "] {
            assert!(IssuerRef::parse_flag(bad).is_err(), "{bad:?}");
        }
    }
}
