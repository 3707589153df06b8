//! `spec.monitoring`: what the operator creates so Prometheus scrapes, alerts on and
//! graphs an InferenceDeployment. Third-party kinds (ServiceMonitor, PrometheusRule,
//! GrafanaDashboard) are only created when their CRDs are installed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::SecretKeySelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::tls::MetricsTlsSpec;

/// Monitoring settings. Everything is on by default.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// A prometheus-operator ServiceMonitor for the sidecar's `/metrics` port.
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,

    /// A PrometheusRule with the seed's alerts and recording rules.
    #[serde(default)]
    pub rules: RulesSpec,

    /// Grafana dashboards (overview and full).
    #[serde(default)]
    pub dashboards: DashboardsSpec,

    /// Secret key holding the bearer token the sidecar requires on `/metrics`; the
    /// ServiceMonitor sends it. Absent: `/metrics` is open inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_auth_secret_ref: Option<SecretKeySelector>,

    /// HTTPS on the sidecar's `/metrics`, readable only with a client certificate (mutual
    /// TLS): the ServiceMonitor scrapes with `scheme: https`, the CA and Prometheus's client
    /// certificate. Absent: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<MetricsTlsSpec>,
}

/// ServiceMonitor settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Create the ServiceMonitor.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Scrape interval. The seed recommends 15s-30s.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: String,

    /// Extra labels, e.g. the `release` label your Prometheus selects ServiceMonitors by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for ServiceMonitorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_interval(),
            labels: BTreeMap::new(),
        }
    }
}

/// PrometheusRule settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RulesSpec {
    /// Create the PrometheusRule.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Extra labels, e.g. the label your Prometheus selects rules by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for RulesSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            labels: BTreeMap::new(),
        }
    }
}

/// Grafana dashboard settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardsSpec {
    /// Create the dashboards.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// `configmap`: a ConfigMap labelled `grafana_dashboard: "1"` for Grafana's dashboard
    /// sidecar. `grafana-operator`: a GrafanaDashboard custom resource.
    #[serde(default)]
    pub mode: DashboardMode,

    /// Extra labels (ConfigMap) or the instance selector labels (GrafanaDashboard).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Grafana folder for the dashboards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
}

impl Default for DashboardsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: DashboardMode::default(),
            labels: BTreeMap::new(),
            folder: None,
        }
    }
}

/// How dashboards are delivered to Grafana.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DashboardMode {
    /// ConfigMap picked up by Grafana's dashboard sidecar.
    #[default]
    Configmap,
    /// GrafanaDashboard resource of grafana-operator (grafana.integreatly.org/v1beta1).
    GrafanaOperator,
}

fn default_true() -> bool {
    true
}

fn default_interval() -> String {
    "15s".to_owned()
}
