//! `status` of an InferenceDeployment: what the operator observed, written only by the
//! operator through the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceDeploymentStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Replicas of the engine Deployment (the scale subresource's status.replicas).
    #[serde(default)]
    pub replicas: i32,

    /// Replicas whose engine passes its readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Label selector of the engine pods, in string form (the scale subresource's
    /// selector, used by HPA and KEDA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// In-cluster base URL of the OpenAI-compatible API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// The model name clients send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_model_name: Option<String>,

    /// Autoscaling summary, e.g. `keda 1-8` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<String>,

    /// Concurrency the ready replicas admit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityStatus>,

    /// Ready, Progressing, Degraded, AutoscalingReady and MonitoringReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Serving capacity, from `engine.maxNumSeqs` and the ready replicas.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacityStatus {
    /// Concurrent sequences one replica admits (`--max-num-seqs`), when set in the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_num_seqs_per_replica: Option<i32>,

    /// Concurrent sequences all ready replicas admit together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_num_seqs_total: Option<i64>,
}

/// The condition types the operator maintains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// At least one replica serves requests.
    Ready,
    /// A rollout or scale change is under way.
    Progressing,
    /// Something needs a human: a failed rollout or a spec the cluster cannot run.
    Degraded,
    /// The autoscaler object exists and can act.
    AutoscalingReady,
    /// The monitoring objects exist.
    MonitoringReady,
}

impl ConditionType {
    /// All types, in the order they are written.
    pub const ALL: [Self; 5] = [
        Self::Ready,
        Self::Progressing,
        Self::Degraded,
        Self::AutoscalingReady,
        Self::MonitoringReady,
    ];

    /// The `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::AutoscalingReady => "AutoscalingReady",
            Self::MonitoringReady => "MonitoringReady",
        }
    }
}
