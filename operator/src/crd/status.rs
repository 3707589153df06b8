//! `status` of an InferenceDeployment: what the operator observed, written only by the
//! operator through the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime};
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

    /// Names of the LoRA adapters the spec asks for (`spec.loraAdapters`, as listed in the
    /// `<name>-lora-adapters` ConfigMap). Each pod's sidecar loads them into its engine;
    /// its `candela_sidecar_lora_in_sync` gauge says when it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_adapters: Option<Vec<String>>,

    /// Concurrency the ready replicas admit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityStatus>,

    /// What the alerts autoscaling backend knows and did: the scale-up alerts it was told
    /// about, and its last step. Written by the operator's Alertmanager webhook and its
    /// cooldown timer, never by the status computation of the reconciler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_scaling: Option<AlertScalingStatus>,

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

/// State and record of the alerts autoscaling backend for one InferenceDeployment.
///
/// Optional fields are serialized as `null` when absent: the operator writes this object
/// with a JSON merge patch, where `null` removes a field left from an earlier state. Times
/// keep microseconds (metav1.Time keeps only seconds, which would make a resend of an
/// alert look like a newer episode).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertScalingStatus {
    /// The latest known state of every scale-up alert episode seen for this
    /// InferenceDeployment, one entry per alert fingerprint.
    #[serde(default)]
    pub alerts: Vec<AlertRecord>,

    /// When the last firing scale-up alert was resolved (its `endsAt`); absent while one
    /// fires or before any fired. Scale-down steps start `cooldownSeconds` after it.
    #[serde(default)]
    pub clear_since: Option<MicroTime>,

    /// When the backend last changed `spec.replicas`.
    #[serde(default)]
    pub last_scale_time: Option<MicroTime>,

    /// Why, e.g. `ScaledUp 1 -> 2: CandelaScaleUpQueueBacklog firing since ...`.
    #[serde(default)]
    pub last_scale_reason: Option<String>,

    /// `spec.replicas` before the last step.
    #[serde(default)]
    pub last_scale_from: Option<i32>,

    /// `spec.replicas` the last step set.
    #[serde(default)]
    pub last_scale_to: Option<i32>,
}

/// One scale-up alert episode: an alert (fingerprint) from `startsAt` on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRecord {
    /// The alert's name.
    pub alertname: String,

    /// Alertmanager's fingerprint of the alert's labels.
    pub fingerprint: String,

    /// `firing` or `resolved`.
    pub status: AlertState,

    /// Start of the episode.
    pub starts_at: MicroTime,

    /// End of the episode (resolved alerts only).
    #[serde(default)]
    pub ends_at: Option<MicroTime>,
}

// An alert's state in Alertmanager's webhook payload. (No `///`: the field's doc wins.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The alert fires.
    Firing,
    /// The alert was resolved.
    Resolved,
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
