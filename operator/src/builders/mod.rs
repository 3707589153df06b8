//! Pure builders: `InferenceDeployment` → the child objects the operator applies.
//!
//! Nothing here talks to the API server, so every branch is unit-testable (see the
//! snapshot tests under `operator/tests/snapshots/`). The builders produce the full
//! desired state of every child; whether a third-party child is applied (its CRD must be
//! installed) is the reconciler's decision.
//!
//! Every child is named after the InferenceDeployment (dashboards get a suffix), carries
//! the [`labels`] and a controller owner reference, so deleting the custom resource lets
//! the garbage collector remove everything the operator created.

mod autoscaling;
mod dashboard;
mod deployment;
pub mod lora;
pub mod monitoring;
pub mod promql;
pub mod thirdparty;
pub mod tls;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;
use kube::{Resource, ResourceExt};

use candela_contract::ports::{GRPC_PORT_NAME, HTTP_PORT_NAME, METRICS_PORT_NAME};

use crate::crd::{InferenceDeployment, IssuerRef, ModelSource};
use crate::{Error, Result};

pub use autoscaling::adapter_rules;
pub use candela_contract::ports::{ENGINE_CONTAINER, SIDECAR_CONTAINER};
pub use dashboard::{DashboardKind, dashboard_json, template_dashboard};

/// Port of the OpenAI-compatible HTTP API.
pub const HTTP_PORT: i32 = candela_contract::ports::HTTP as i32;
/// Port of the engine's gRPC API.
pub const GRPC_PORT: i32 = candela_contract::ports::GRPC as i32;
/// Port of the sidecar's `/metrics`.
pub const METRICS_PORT: i32 = candela_contract::ports::METRICS as i32;

/// Operator-wide settings the builders need.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// Engine image used when `spec.engine.image` is unset.
    pub engine_image: String,
    /// Prometheus URL used by KEDA triggers when `spec.autoscaling.prometheusAddress` is unset.
    pub prometheus_url: String,
    /// Labels every ServiceMonitor and PrometheusRule gets (e.g. `release:
    /// kube-prometheus-stack`, which that stack's Prometheus selects by); the custom
    /// resource's own `monitoring.*.labels` override them.
    pub monitoring_labels: BTreeMap<String, String>,
    /// The cert-manager issuer of `spec.tls` / `spec.monitoring.tls` certificates when the
    /// spec names neither a Secret nor an issuer (`--cert-manager-issuer`).
    pub cert_manager_issuer: Option<IssuerRef>,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            engine_image: candela_contract::images::ENGINE.to_owned(),
            prometheus_url: "http://prometheus-operated.monitoring.svc:9090".to_owned(),
            monitoring_labels: BTreeMap::new(),
            cert_manager_issuer: None,
        }
    }
}

/// Everything the operator creates for one InferenceDeployment. `None` means the child is
/// not wanted by the spec (and is deleted if it exists).
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Children {
    /// Engine + sidecar pods.
    pub deployment: Deployment,
    /// ClusterIP service: http 8000, grpc 50051, metrics 9090.
    pub service: Service,
    /// prometheus-operator ServiceMonitor.
    pub service_monitor: Option<DynamicObject>,
    /// prometheus-operator PrometheusRule with alerts and recording rules.
    pub prometheus_rule: Option<DynamicObject>,
    /// autoscaling/v2 HPA (hpa backend).
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// KEDA ScaledObject (keda backend).
    pub scaled_object: Option<DynamicObject>,
    /// Dashboards as a ConfigMap for Grafana's sidecar.
    pub dashboard_config_map: Option<ConfigMap>,
    /// Dashboards as grafana-operator GrafanaDashboard.
    pub grafana_dashboard: Option<DynamicObject>,
    /// The LoRA adapter list the sidecars follow (`spec.loraAdapters` set).
    pub lora_config_map: Option<ConfigMap>,
    /// cert-manager Certificates filling the TLS Secrets the spec does not name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<DynamicObject>,
    /// The spec fields whose certificates cert-manager issues: the reconciler refuses them
    /// (`InvalidSpec`) when cert-manager's Certificate CRD is not installed.
    #[serde(skip)]
    pub cert_manager_fields: Vec<&'static str>,
}

/// Identity of the InferenceDeployment that every builder needs.
#[derive(Clone, Debug)]
pub struct Owner<'a> {
    /// The custom resource.
    pub infd: &'a InferenceDeployment,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The parsed model source.
    pub source: ModelSource,
    /// The served model name (`model_name` label of the engine's metrics).
    pub served_name: String,
    /// Controller owner reference pointing at the custom resource.
    pub owner_ref: OwnerReference,
}

impl<'a> Owner<'a> {
    /// Collects the identity of `infd`.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] without namespace or uid; [`Error::InvalidSpec`] when the
    /// model source cannot be parsed.
    pub fn new(infd: &'a InferenceDeployment) -> Result<Self> {
        let namespace = infd
            .namespace()
            .ok_or(Error::MissingMetadata("metadata.namespace"))?;
        let owner_ref = infd
            .controller_owner_ref(&())
            .ok_or(Error::MissingMetadata("metadata.uid"))?;
        let source = ModelSource::parse(&infd.spec.model.source)?;
        let served_name = match &infd.spec.model.served_name {
            Some(name) => name.clone(),
            None => source.default_served_name(),
        };
        Ok(Self {
            infd,
            name: infd.name_any(),
            namespace,
            source,
            served_name,
            owner_ref,
        })
    }

    /// Metadata for a child named `name` with the common labels plus `extra`.
    pub fn meta(&self, name: String, extra: &BTreeMap<String, String>) -> ObjectMeta {
        let mut labels = labels(&self.name);
        labels.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.owner_ref.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Labels shared by every child and the engine pods.
pub fn labels(instance: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(instance);
    labels.insert("app.kubernetes.io/component".into(), "inference".into());
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "candela-operator".into(),
    );
    labels
}

/// The labels that select an InferenceDeployment's engine pods.
pub fn selector_labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "candela".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), instance.to_owned()),
    ])
}

/// [`selector_labels`] as a label-selector string (`status.selector`).
pub fn selector_string(instance: &str) -> String {
    selector_labels(instance)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Name of the dashboards ConfigMap / GrafanaDashboard.
pub fn dashboard_name(instance: &str) -> String {
    format!("{instance}-dashboards")
}

/// Builds every child of `infd`.
///
/// # Errors
/// [`Error::MissingMetadata`] or [`Error::InvalidSpec`] when the object cannot be built
/// (see [`Owner::new`]), including argv the engine or sidecar would refuse (checked with
/// their own parser, so such a spec never becomes a crash-looping pod).
pub fn build(infd: &InferenceDeployment, config: &BuildConfig) -> Result<Children> {
    let owner = Owner::new(infd)?;
    let spec = &infd.spec;
    let monitoring = &spec.monitoring;
    let dashboards = monitoring
        .dashboards
        .enabled
        .then(|| dashboard::build(&owner));
    let (dashboard_config_map, grafana_dashboard) = match dashboards {
        Some(dashboard::Built::ConfigMap(cm)) => (Some(*cm), None),
        Some(dashboard::Built::GrafanaDashboard(gd)) => (None, Some(*gd)),
        None => (None, None),
    };
    let lora = lora::resolve(&owner)?;
    let tls = tls::resolve(&owner, config)?;
    Ok(Children {
        deployment: deployment::build(&owner, config, lora.as_ref(), &tls)?,
        service: service(&owner, &tls),
        service_monitor: monitoring
            .service_monitor
            .enabled
            .then(|| monitoring::service_monitor(&owner, config, &tls)),
        prometheus_rule: monitoring
            .rules
            .enabled
            .then(|| monitoring::prometheus_rule(&owner, config)),
        hpa: autoscaling::hpa(&owner),
        scaled_object: autoscaling::scaled_object(&owner, config),
        dashboard_config_map,
        grafana_dashboard,
        lora_config_map: lora.map(|l| l.config_map(&owner)),
        certificates: tls.certificates,
        cert_manager_fields: tls.cert_manager_fields,
    })
}

/// In-cluster base URL of the OpenAI API of the InferenceDeployment `name` (`https` when
/// `spec.tls` is set).
pub fn endpoint(name: &str, namespace: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{name}.{namespace}.svc:{HTTP_PORT}/v1")
}

fn service(owner: &Owner<'_>, tls: &tls::Tls) -> Service {
    let port = |name: &str, port: i32| {
        let https = match name {
            HTTP_PORT_NAME => tls.api.is_some(),
            METRICS_PORT_NAME => tls.metrics.is_some(),
            _ => false,
        };
        ServicePort {
            name: Some(name.to_owned()),
            port,
            target_port: Some(IntOrString::String(name.to_owned())),
            protocol: Some("TCP".to_owned()),
            app_protocol: Some(
                match (name, https) {
                    (GRPC_PORT_NAME, _) => "grpc",
                    (_, true) => "https",
                    (_, false) => "http",
                }
                .to_owned(),
            ),
            ..ServicePort::default()
        }
    };
    Service {
        metadata: owner.meta(owner.name.clone(), &BTreeMap::new()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(&owner.name)),
            ports: Some(vec![
                port(HTTP_PORT_NAME, HTTP_PORT),
                port(GRPC_PORT_NAME, GRPC_PORT),
                port(METRICS_PORT_NAME, METRICS_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
