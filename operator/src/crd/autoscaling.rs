//! `spec.autoscaling`: scaling an InferenceDeployment on its engine's queue depth and
//! KV-cache usage. Every backend scales the custom resource through its scale
//! subresource, so the operator stays the only writer of the Deployment.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Autoscaling settings. Exactly one backend is used; its optional settings block
/// (`hpa`, `keda` or `alerts`) must match `backend`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.minReplicas <= self.maxReplicas",
        "message": "autoscaling.minReplicas must be <= autoscaling.maxReplicas"
    },
    {
        "rule": "(has(self.hpa) ? 1 : 0) + (has(self.keda) ? 1 : 0) + (has(self.alerts) ? 1 : 0) <= 1",
        "message": "autoscaling: configure exactly one backend; set only one of hpa, keda, alerts"
    },
    {
        "rule": "(!has(self.hpa) || self.backend == 'hpa') && (!has(self.keda) || self.backend == 'keda') && (!has(self.alerts) || self.backend == 'alerts')",
        "message": "autoscaling: the settings block must match autoscaling.backend"
    },
    {
        "rule": "self.backend != 'hpa' || self.minReplicas >= 1",
        "message": "autoscaling.minReplicas must be >= 1 with the hpa backend (use keda to scale to zero)"
    }
]))]
pub struct AutoscalingSpec {
    /// Turns autoscaling on. False keeps the settings but pins the replica count to
    /// `spec.replicas`.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Fewest replicas. 0 is allowed with the keda backend (scale to zero).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,

    /// Most replicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,

    /// Which autoscaler drives `spec.replicas`: `hpa` (HorizontalPodAutoscaler on
    /// prometheus-adapter custom metrics), `keda` (ScaledObject with Prometheus triggers)
    /// or `alerts` (the operator's Alertmanager webhook scales on firing alerts).
    #[serde(default)]
    pub backend: AutoscalingBackend,

    /// Per-replica targets the autoscaler keeps the engine metrics at.
    #[serde(default)]
    pub targets: AutoscalingTargets,

    /// Scale-up and scale-down behavior (autoscaling/v2 HPA semantics), used by the hpa
    /// and keda backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::preserve_unknown_object")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,

    /// Prometheus base URL the keda backend queries. Default: the operator's
    /// `--prometheus-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_address: Option<String>,

    /// Settings of the hpa backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa: Option<HpaScaling>,

    /// Settings of the keda backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keda: Option<KedaScaling>,

    /// Settings of the alerts backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertsScaling>,
}

fn default_true() -> bool {
    true
}

fn default_min_replicas() -> i32 {
    1
}

/// The autoscaler that drives `spec.replicas`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalingBackend {
    /// HorizontalPodAutoscaler (autoscaling/v2) on prometheus-adapter metrics.
    #[default]
    Hpa,
    /// KEDA ScaledObject with Prometheus triggers.
    Keda,
    /// The operator's Alertmanager webhook receiver.
    Alerts,
}

impl AutoscalingBackend {
    /// Lower-case name, as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hpa => "hpa",
            Self::Keda => "keda",
            Self::Alerts => "alerts",
        }
    }
}

/// Metric targets per replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingTargets {
    /// Target of `sum(vllm:num_requests_waiting)` divided by the replica count. The seed's
    /// rule of thumb: more than 10 waiting means TTFT is about to blow up.
    #[serde(default = "default_waiting")]
    #[schemars(range(min = 1))]
    pub waiting_requests_per_replica: i32,

    /// Target of `avg(vllm:kv_cache_usage_perc)` (0-1). Sustained usage above 0.9 is the
    /// seed's scale-out signal.
    #[serde(default = "default_kv_usage")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self > 0.0 && self <= 1.0",
        "message": "autoscaling.targets.kvCacheUsage must be in (0, 1]"
    }]))]
    pub kv_cache_usage: f64,
}

impl Default for AutoscalingTargets {
    fn default() -> Self {
        Self {
            waiting_requests_per_replica: default_waiting(),
            kv_cache_usage: default_kv_usage(),
        }
    }
}

fn default_waiting() -> i32 {
    5
}

fn default_kv_usage() -> f64 {
    0.9
}

/// Settings of the hpa backend. The metrics come from prometheus-adapter rules that the
/// Candela chart installs (`candela_num_requests_waiting`, `candela_kv_cache_usage_perc`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HpaScaling {
    /// Also scale on KV-cache usage, not only on queue depth. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_on_kv_cache_usage: Option<bool>,
}

/// Settings of the keda backend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KedaScaling {
    /// Seconds between KEDA's metric polls. Default: 15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub polling_interval: Option<i32>,

    /// Seconds after the last active trigger before scaling to minReplicas. Default: 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cooldown_period: Option<i32>,
}

/// Settings of the alerts backend: the operator adds two scale-up alerts to this
/// InferenceDeployment's PrometheusRule (`CandelaScaleUpQueueBacklog` when the waiting
/// requests per replica exceed `targets.waitingRequestsPerReplica`,
/// `CandelaScaleUpKVCachePressure` when the average KV-cache usage exceeds
/// `targets.kvCacheUsage`), and its Alertmanager webhook steps `spec.replicas` up while one
/// fires and down once all have been resolved for `cooldownSeconds`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertsScaling {
    /// Least seconds between two scaling steps, and how long all scale-up alerts must have
    /// been resolved before a step down. Default: 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub cooldown_seconds: Option<i32>,

    /// Replicas added or removed per step. Default: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub step: Option<i32>,

    /// How long a scale-up condition must hold before its alert fires (the alerts' `for`,
    /// a Prometheus duration such as `30s` or `2m`). Default: `1m`.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d|w|y))+$"), length(max = 32))]
    pub for_: Option<String>,

    /// Evaluation interval of the scale-up alert group (a Prometheus duration). Default:
    /// Prometheus' global `evaluation_interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d|w|y))+$"), length(max = 32))]
    pub evaluation_interval: Option<String>,
}

/// Defaults of [`AlertsScaling`].
impl AlertsScaling {
    /// Default of `cooldownSeconds`.
    pub const DEFAULT_COOLDOWN_SECONDS: i32 = 300;
    /// Default of `step`.
    pub const DEFAULT_STEP: i32 = 1;
    /// Default of `for`.
    pub const DEFAULT_FOR: &'static str = "1m";

    /// `cooldownSeconds` or its default.
    pub fn cooldown_seconds(&self) -> i32 {
        self.cooldown_seconds
            .unwrap_or(Self::DEFAULT_COOLDOWN_SECONDS)
            .max(0)
    }

    /// `step` or its default.
    pub fn step(&self) -> i32 {
        self.step.unwrap_or(Self::DEFAULT_STEP).max(1)
    }

    /// `for` or its default.
    pub fn for_duration(&self) -> &str {
        self.for_.as_deref().unwrap_or(Self::DEFAULT_FOR)
    }
}
