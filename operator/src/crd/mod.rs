//! The `InferenceDeployment` custom resource (`candela.dev/v1alpha1`, short name `infd`).
//!
//! The Rust types are the source of truth for the CRD: `crdgen` renders them to
//! `crds/inferencedeployment.yaml`, and every `///` comment on a field becomes the
//! `kubectl explain` text of that field. Validation that the apiserver can enforce lives
//! in the schema (OpenAPI bounds and CEL `x-kubernetes-validations` rules); what it cannot
//! catch is reported by the reconciler as a status condition.

mod autoscaling;
mod monitoring;
mod status;
mod tls;

use std::collections::BTreeMap;

use candela_contract::HubRef;
use k8s_openapi::api::core::v1::{Affinity, EnvVar, SecretKeySelector, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use autoscaling::{
    AlertsScaling, AutoscalingBackend, AutoscalingSpec, AutoscalingTargets, HpaScaling, KedaScaling,
};
pub use monitoring::{
    DashboardMode, DashboardsSpec, MonitoringSpec, RulesSpec, ServiceMonitorSpec,
};
pub use status::{
    AlertRecord, AlertScalingStatus, AlertState, CapacityStatus, ConditionType,
    InferenceDeploymentStatus,
};
pub use tls::{CertManagerSpec, IssuerRef, MetricsTlsSpec, TlsSpec};

/// The CEL rule a source URI (`model.source`, `loraAdapters[].source`) must match;
/// `$quant` is what may follow a hub reference (`:<QUANT>` for models, nothing for adapters).
macro_rules! source_rule {
    ($quant:literal) => {
        concat!(
            "self.matches('^(hf://[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?",
            $quant,
            "|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.+|file:///.+)$')"
        )
    };
}

/// The CEL rule of hub repository ids beyond the pattern (the hub's own rule).
const HUB_ID_RULE: &str =
    "!self.startsWith('hf://') || !(self.contains('--') || self.contains('..'))";

/// API group of the CRD.
pub const GROUP: &str = "candela.dev";
/// API version of the CRD.
pub const VERSION: &str = "v1alpha1";

/// Desired state of an LLM inference service: a model, the engine that serves it, and the
/// monitoring and autoscaling around it.
// Clippy mistakes the repeated `printcolumn(...)` arguments for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "candela.dev",
    version = "v1alpha1",
    kind = "InferenceDeployment",
    plural = "inferencedeployments",
    shortname = "infd",
    category = "candela",
    namespaced,
    status = "InferenceDeploymentStatus",
    derive = "PartialEq",
    doc = "An LLM served by the Candela engine, with its monitoring and autoscaling.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model.source"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Autoscaling",
        type_ = "string",
        json_path = ".status.autoscaling"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct InferenceDeploymentSpec {
    /// The model to serve and where to load it from.
    pub model: ModelSpec,

    /// Engine image and `candela serve` tuning flags. Unset fields keep the engine's defaults.
    #[serde(default)]
    pub engine: EngineSpec,

    /// Compute resources of each replica's engine container.
    #[serde(default)]
    pub resources: ResourcesSpec,

    /// Number of engine replicas. When autoscaling is enabled the autoscaler writes this
    /// field through the scale subresource.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Node labels the pods must match (e.g. a GPU product label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations of the pods, e.g. for tainted GPU nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Scheduling affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub affinity: Option<Affinity>,

    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// RuntimeClass of the pods (e.g. `nvidia`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,

    /// Autoscaling on queue depth and KV-cache usage. Absent: the replica count is fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// ServiceMonitor, alert and recording rules, and Grafana dashboards.
    #[serde(default)]
    pub monitoring: MonitoringSpec,

    /// Secret key holding the API key clients must send as `Authorization: Bearer <key>`.
    /// Absent: the OpenAI API is open to anyone who can reach the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeySelector>,

    /// TLS on the engine's OpenAI HTTP port and gRPC port (HTTPS only: the API key and the
    /// prompts never cross the network in clear). The kubelet probes over HTTPS, the
    /// sidecar dials the engine over TLS, and `status.endpoint` says `https://`. Rotated
    /// certificates are picked up without a restart. Absent: plain HTTP. TLS on
    /// `/metrics` is `monitoring.tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// LoRA adapters served on top of the model: a request whose `model` names an adapter
    /// runs the model with it, and requests of different adapters share batches. Setting
    /// this field (even to `[]`) starts the engine with `--enable-lora` (CPU engines only
    /// yet), which restarts the pods once. After that, adding, removing or changing
    /// adapters does not restart pods: the list is written to the ConfigMap
    /// `<name>-lora-adapters`, and each pod's sidecar loads and unloads adapters in its
    /// running engine once the kubelet has refreshed the mounted file (about a minute).
    /// Only an adapter on a PersistentVolumeClaim that nothing else mounts yet adds a
    /// volume to the pods, and so restarts them. At most 128 adapters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // maxItems bounds the cost of the items' CEL rules, which the apiserver estimates.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"], "maxItems" = 128))]
    pub lora_adapters: Option<Vec<LoraAdapterSpec>>,
}

/// One LoRA adapter: the name requests select it by and where it is loaded from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoraAdapterSpec {
    /// Name clients pass as `model` to use the adapter. Unique in the list, without
    /// whitespace, and not the served model name.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("pattern" = "^\\S+$"))]
    pub name: String,

    /// Adapter location, a PEFT directory (`adapter_config.json`,
    /// `adapter_model.safetensors`), written as `model.source` is: `hf://<org>/<name>`
    /// (downloaded by the engine into the model cache volume; no `:<QUANT>`),
    /// `pvc://<claim>/<path>` (the claim is mounted read-only: at /models when it is the
    /// model's claim, else at /adapters/<claim>) or `file:///<path>` (a path inside the
    /// engine image or an extra mount).
    #[schemars(length(min = 1, max = 1024))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": source_rule!(""),
        "message": "loraAdapters[].source must be hf://<org>/<name>, pvc://<claim>/<path> or file:///<path>"
    }, {
        "rule": HUB_ID_RULE,
        "message": "loraAdapters[].source: hub repository ids contain no `--` or `..`"
    }]))]
    pub source: String,
}

fn default_replicas() -> i32 {
    1
}

/// Where the model comes from and the name it is served under.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Model location: `hf://<org>/<name>` (a Hugging Face Hub repository, downloaded into
    /// the pod's model cache volume; `hf://<org>/<name>:<QUANT>` picks a GGUF file by
    /// quantization, e.g. `:Q4_K_M`), `pvc://<claim>/<path>` (a directory or GGUF file on a
    /// PersistentVolumeClaim, mounted read-only) or `file:///<path>` (a path inside the
    /// engine image or an extra mount).
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": source_rule!("(:[-A-Za-z0-9_.]+)?"),
        "message": "model.source must be hf://<org>/<name>[:<QUANT>], pvc://<claim>/<path> or file:///<path>"
    }, {
        "rule": HUB_ID_RULE,
        "message": "model.source: hub repository ids contain no `--` or `..`"
    }]))]
    #[schemars(length(min = 1, max = 1024))]
    pub source: String,

    /// Git revision (branch, tag or commit) of an `hf://` model. Default: the main branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,

    /// Name clients pass as `model` in OpenAI requests, and the `model_name` label of every
    /// metric. Default: the source without its scheme (`org/name` for hf://, the last path
    /// segment otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!self.contains(',') && self.trim() == self",
        "message": "model.servedName must not contain commas or surrounding spaces"
    }]))]
    pub served_name: Option<String>,

    /// Secret key holding a Hugging Face token, for gated or private `hf://` models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf_token_secret_ref: Option<SecretKeySelector>,

    /// Size limit of the per-pod model cache volume (an emptyDir at /var/cache/candela).
    /// Default: 50Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<Quantity>,
}

/// `candela serve` settings. Every field maps to the vLLM-spelled engine flag of the same
/// name; unset fields are not passed, so the engine's defaults apply.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.maxNumBatchedTokens) || !has(self.maxNumSeqs) || self.maxNumBatchedTokens >= self.maxNumSeqs",
    "message": "engine.maxNumBatchedTokens must be >= engine.maxNumSeqs (every running sequence needs a token per step)"
}, {
    "rule": "!has(self.maxCpuLoras) || self.maxCpuLoras >= (has(self.maxLoras) ? self.maxLoras : 1)",
    "message": "engine.maxCpuLoras must be >= engine.maxLoras (default 1): the adapters of one step must all be in memory"
}]))]
pub struct EngineSpec {
    /// Engine container image. Default: the operator's `--engine-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Image pull policy of the engine and sidecar containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,

    /// `--max-num-seqs`: most sequences in one batch (concurrency per replica). Size it
    /// with `candela plan` (KV pool tokens / (avg prompt + avg output), minus 30%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_num_seqs: Option<i32>,

    /// `--max-model-len`: longest prompt + output, in tokens. Must fit the KV pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_model_len: Option<i32>,

    /// `--max-num-batched-tokens`: token budget of one engine step (chunked prefill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_num_batched_tokens: Option<i32>,

    /// `--block-size`: tokens per KV-cache block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [8, 16, 32]))]
    pub block_size: Option<i32>,

    /// `--gpu-memory-utilization`: fraction of GPU memory the engine may use for weights
    /// and KV cache, in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self > 0.0 && self <= 1.0",
        "message": "engine.gpuMemoryUtilization must be in (0, 1]"
    }]))]
    pub gpu_memory_utilization: Option<f64>,

    /// `--enable-prefix-caching`: reuse KV blocks of shared prompt prefixes. Engine default: on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_prefix_caching: Option<bool>,

    /// `--enable-chunked-prefill`: split long prefills across steps. Engine default: on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_chunked_prefill: Option<bool>,

    /// `--kv-cache-memory`: size of the KV cache, e.g. `512Mi` or `2Gi`. Default: 4Gi on CPU,
    /// `gpuMemoryUtilization` of the GPU less the weights on a GPU. On CPU keep it inside
    /// `resources.memory` with the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_memory: Option<Quantity>,

    /// `--swap-space`: GiB of host memory for swapped-out sequences' KV blocks. A
    /// `vllm:num_requests_swapped` above 0 for long means the GPU pool is too small.
    #[serde(
        default,
        rename = "swapSpaceGiB",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0.0))]
    pub swap_space_gib: Option<f64>,

    /// `--kv-cache-dtype`: storage type of the KV cache. Only `auto` is supported yet (the
    /// KV cache is f16 on CPU, f32 on a GPU); `fp8` is refused until it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == 'auto'",
        "message": "engine.kvCacheDtype fp8 is not supported yet (the KV cache is f16 on CPU, f32 on a GPU); use auto"
    }]))]
    pub kv_cache_dtype: Option<KvCacheDtype>,

    /// `--dtype`: compute type of the weights and activations. `auto` and `f32` are
    /// supported (Candela computes in f32; quantized GGUF weights stay quantized); `bf16` and
    /// `f16` are refused until they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == 'auto' || self == 'f32'",
        "message": "engine.dtype bf16 and f16 are not supported yet (Candela computes in f32); use auto or f32"
    }]))]
    pub dtype: Option<Dtype>,

    /// `--scheduler-delay-factor`: wait this fraction of the last step's latency before
    /// scheduling a new prefill, to batch arrivals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub scheduler_delay_factor: Option<f64>,

    /// `--scheduling-policy`: `fcfs` or `priority` (requests' `priority` field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_policy: Option<SchedulingPolicy>,

    /// `--max-loras`: most distinct LoRA adapters in one engine step; requests of other
    /// adapters wait for a later step. Engine default: 1. Needs `loraAdapters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_loras: Option<i32>,

    /// `--max-lora-rank`: largest adapter rank the engine accepts. Engine default: 16.
    /// Needs `loraAdapters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = candela_contract::lora::MAX_LORA_RANKS))]
    pub max_lora_rank: Option<i32>,

    /// `--max-cpu-loras`: adapters kept in memory; others are read from disk again when a
    /// request needs them. At least `maxLoras`. Engine default: `maxLoras`. Needs
    /// `loraAdapters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_cpu_loras: Option<i32>,

    /// Extra `candela serve` arguments, appended after the generated ones. The operator
    /// checks the whole argv with the engine's own parser: a flag the engine does not know,
    /// a bad value or a flag the spec already sets becomes an `InvalidSpec` condition, not a
    /// crash-looping pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,

    /// Extra environment variables of the engine container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

// `--kv-cache-dtype` values. (No `///` here: the field's doc must win in the schema.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KvCacheDtype {
    /// Per device: f16 on CPU, f32 on a GPU.
    Auto,
    /// 8-bit floating point, where the device supports it.
    Fp8,
}

// `--dtype` values. (No `///` here: the field's doc must win in the schema.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// bf16 on GPUs that support it, else f16 on GPU and f32 on CPU.
    Auto,
    /// 32-bit floats.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

// `--scheduling-policy` values. (No `///` here: the field's doc must win in the schema.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SchedulingPolicy {
    /// First come, first served.
    Fcfs,
    /// Lower `priority` values first, then arrival order.
    Priority,
}

impl From<KvCacheDtype> for candela_contract::KvCacheDtype {
    fn from(v: KvCacheDtype) -> Self {
        match v {
            KvCacheDtype::Auto => Self::Auto,
            KvCacheDtype::Fp8 => Self::Fp8,
        }
    }
}

impl From<Dtype> for candela_contract::Dtype {
    fn from(v: Dtype) -> Self {
        match v {
            Dtype::Auto => Self::Auto,
            Dtype::F32 => Self::F32,
            Dtype::Bf16 => Self::Bf16,
            Dtype::F16 => Self::F16,
        }
    }
}

impl From<SchedulingPolicy> for candela_contract::SchedulingPolicy {
    fn from(v: SchedulingPolicy) -> Self {
        match v {
            SchedulingPolicy::Fcfs => Self::Fcfs,
            SchedulingPolicy::Priority => Self::Priority,
        }
    }
}

/// Resources of one replica's engine container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// GPUs per replica: 0 runs the engine on CPU (`--device cpu`), 1 on one GPU
    /// (`--device cuda:0`). More than one needs tensor parallelism, which the engine does
    /// not have yet, so the schema refuses it.
    #[serde(default = "default_gpus")]
    #[schemars(range(min = 0, max = 1))]
    pub gpus: i32,

    /// Extended resource name of the GPUs.
    #[serde(default = "default_gpu_resource_name")]
    #[schemars(length(min = 1))]
    pub gpu_resource_name: String,

    /// CPU request and limit of the engine container, e.g. `4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,

    /// Memory request and limit of the engine container, e.g. `32Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

impl Default for ResourcesSpec {
    fn default() -> Self {
        Self {
            gpus: default_gpus(),
            gpu_resource_name: default_gpu_resource_name(),
            cpu: None,
            memory: None,
        }
    }
}

fn default_gpus() -> i32 {
    1
}

fn default_gpu_resource_name() -> String {
    "nvidia.com/gpu".to_owned()
}

/// Schema of an embedded core type kept opaque, so the CRD stays small; the apiserver
/// validates it again when the operator applies the Deployment.
pub(crate) fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Where the model lives, parsed from `spec.model.source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// `hf://org/name[:QUANT]`: a repository on the Hugging Face Hub, parsed by the
    /// contract crate exactly as the engine parses `--model`.
    HuggingFace(HubRef),
    /// `pvc://claim/path`: a path on a PersistentVolumeClaim.
    Pvc { claim: String, path: String },
    /// `file:///path`: an absolute path inside the container.
    File { path: String },
}

impl ModelSource {
    /// Parses a model source URI.
    ///
    /// # Errors
    /// [`crate::Error::InvalidSpec`] when the scheme is unknown or a part is empty.
    pub fn parse(source: &str) -> crate::Result<Self> {
        Self::parse_field(source, "model.source")
    }

    /// Parses a source URI of the spec field `field` (named in the error).
    ///
    /// # Errors
    /// [`crate::Error::InvalidSpec`] when the scheme is unknown or a part is empty.
    pub fn parse_field(source: &str, field: &str) -> crate::Result<Self> {
        let invalid = || {
            crate::Error::InvalidSpec(format!(
                "{field} {source:?} must be hf://<org>/<name>[:<QUANT>], pvc://<claim>/<path> or file:///<path>"
            ))
        };
        if let Some(repo) = source.strip_prefix(candela_contract::model_ref::HUB_SCHEME) {
            HubRef::parse(repo)
                .map(Self::HuggingFace)
                .map_err(|e| crate::Error::InvalidSpec(format!("{field}: {e}")))
        } else if let Some(rest) = source.strip_prefix("pvc://") {
            let (claim, path) = rest.split_once('/').ok_or_else(invalid)?;
            if claim.is_empty() || path.is_empty() {
                return Err(invalid());
            }
            Ok(Self::Pvc {
                claim: claim.to_owned(),
                path: path.to_owned(),
            })
        } else if let Some(path) = source.strip_prefix("file://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(invalid());
            }
            Ok(Self::File {
                path: path.to_owned(),
            })
        } else {
            Err(invalid())
        }
    }

    /// The served model name used when `spec.model.servedName` is unset.
    /// Never empty: a path of slashes only names the claim (`pvc://models//` → `models`)
    /// or `model` (`file:///`).
    pub fn default_served_name(&self) -> String {
        let last = |path: &str| path.rsplit('/').find(|s| !s.is_empty()).map(str::to_owned);
        match self {
            Self::HuggingFace(hub) => hub.repo.clone(),
            Self::Pvc { claim, path } => last(path).unwrap_or_else(|| claim.clone()),
            Self::File { path } => last(path).unwrap_or_else(|| "model".to_owned()),
        }
    }
}

impl InferenceDeploymentSpec {
    /// The name clients use and the `model_name` label of the engine's metrics.
    ///
    /// # Errors
    /// [`crate::Error::InvalidSpec`] when no served name is set and the source is invalid.
    pub fn served_name(&self) -> crate::Result<String> {
        match &self.model.served_name {
            Some(name) => Ok(name.clone()),
            None => Ok(ModelSource::parse(&self.model.source)?.default_served_name()),
        }
    }

    /// The autoscaling settings when autoscaling is enabled.
    pub fn active_autoscaling(&self) -> Option<&AutoscalingSpec> {
        self.autoscaling.as_ref().filter(|a| a.enabled)
    }
}

/// The CRD rendered as YAML, with a header saying how it was made.
///
/// # Errors
/// [`crate::Error::Render`] if the CRD cannot be serialized (a bug).
pub fn crd_yaml() -> crate::Result<String> {
    use kube::CustomResourceExt;
    let body = serde_yaml_ng::to_string(&InferenceDeployment::crd())
        .map_err(|e| crate::Error::Render(format!("the CRD: {e}")))?;
    Ok(format!(
        "# Generated by `cargo run -p candela-operator --bin crdgen -- --write`; do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            ModelSource::parse("hf://Qwen/Qwen2.5-0.5B").unwrap(),
            ModelSource::HuggingFace(HubRef {
                repo: "Qwen/Qwen2.5-0.5B".into(),
                quant: None
            })
        );
        assert_eq!(
            ModelSource::parse("hf://org/m-GGUF:Q4_K_M").unwrap(),
            ModelSource::HuggingFace(HubRef {
                repo: "org/m-GGUF".into(),
                quant: Some("Q4_K_M".into())
            })
        );
        assert_eq!(
            ModelSource::parse("pvc://models/smollm2/model.gguf").unwrap(),
            ModelSource::Pvc {
                claim: "models".into(),
                path: "smollm2/model.gguf".into()
            }
        );
        assert_eq!(
            ModelSource::parse("file:///models/x").unwrap(),
            ModelSource::File {
                path: "/models/x".into()
            }
        );
        for bad in [
            "s3://b/k",
            "hf://org",
            "pvc:///x",
            "file://rel",
            "hf:///x",
            "hf://a/b/c",
            "hf://a/b:",
            "",
        ] {
            assert!(ModelSource::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_served_names() {
        let name = |s: &str| ModelSource::parse(s).unwrap().default_served_name();
        assert_eq!(name("hf://org/name"), "org/name");
        assert_eq!(name("hf://org/name-GGUF:Q4_K_M"), "org/name-GGUF");
        assert_eq!(name("pvc://claim/a/b.gguf"), "b.gguf");
        assert_eq!(name("file:///models/x/"), "x");
        assert_eq!(name("pvc://claim//"), "claim");
        assert_eq!(name("file:////"), "model");
    }
}
