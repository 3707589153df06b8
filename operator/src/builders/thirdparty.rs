//! Third-party kinds the operator creates without depending on their crates:
//! prometheus-operator, KEDA, grafana-operator and cert-manager objects are built as
//! `DynamicObject`s from these API resource descriptions.

use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;

/// One third-party kind the operator may create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThirdParty {
    /// `monitoring.coreos.com/v1` ServiceMonitor.
    ServiceMonitor,
    /// `monitoring.coreos.com/v1` PrometheusRule.
    PrometheusRule,
    /// `keda.sh/v1alpha1` ScaledObject.
    ScaledObject,
    /// `grafana.integreatly.org/v1beta1` GrafanaDashboard.
    GrafanaDashboard,
    /// `cert-manager.io/v1` Certificate.
    Certificate,
}

impl ThirdParty {
    /// Every third-party kind.
    pub const ALL: [Self; 5] = [
        Self::ServiceMonitor,
        Self::PrometheusRule,
        Self::ScaledObject,
        Self::GrafanaDashboard,
        Self::Certificate,
    ];

    /// (group, version, kind, plural).
    const fn parts(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Self::ServiceMonitor => (
                "monitoring.coreos.com",
                "v1",
                "ServiceMonitor",
                "servicemonitors",
            ),
            Self::PrometheusRule => (
                "monitoring.coreos.com",
                "v1",
                "PrometheusRule",
                "prometheusrules",
            ),
            Self::ScaledObject => ("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"),
            Self::GrafanaDashboard => (
                "grafana.integreatly.org",
                "v1beta1",
                "GrafanaDashboard",
                "grafanadashboards",
            ),
            Self::Certificate => ("cert-manager.io", "v1", "Certificate", "certificates"),
        }
    }

    /// API group.
    pub fn group(self) -> &'static str {
        self.parts().0
    }

    /// `group/version`.
    pub fn api_version(self) -> String {
        let (group, version, ..) = self.parts();
        format!("{group}/{version}")
    }

    /// Kind.
    pub fn kind(self) -> &'static str {
        self.parts().2
    }

    /// Name of the CRD that serves the kind, e.g. `servicemonitors.monitoring.coreos.com`.
    pub fn crd_name(self) -> String {
        let (group, _, _, plural) = self.parts();
        format!("{plural}.{group}")
    }

    /// The API resource for a dynamic `Api`.
    pub fn api_resource(self) -> ApiResource {
        let (group, version, kind, plural) = self.parts();
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    /// An empty object of this kind named `name` in `namespace`.
    pub fn object(self, name: &str, namespace: &str) -> DynamicObject {
        DynamicObject::new(name, &self.api_resource()).within(namespace)
    }
}
