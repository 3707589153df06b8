//! The engine Deployment: one pod per replica with the `candela serve` engine container
//! and the `candela sidecar` metrics container.
//!
//! Pods run non-root with a read-only root filesystem, no privilege escalation and no
//! capabilities; everything that must be writable is an emptyDir (model cache, /tmp,
//! profiles, /dev/shm). Changing any engine setting changes the pod template and so rolls
//! the Deployment; the LoRA adapter list is the exception (see [`super::lora`]). A
//! replaced pod loses no request: a `preStop` sleep lets the endpoint removal reach
//! kube-proxy before SIGTERM, then the engine drains (see the constants). With TLS
//! ([`super::tls`]) the certificates are Secret volumes, the probes speak HTTPS and the
//! sidecar dials the engine over TLS.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext, SleepAction, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use candela_contract::ports::{
    self, ENGINE_CONTAINER, GRPC_PORT_NAME, HEALTH_PATH, HTTP_PORT_NAME, METRICS_PORT_NAME,
    SIDECAR_CONTAINER,
};
use candela_contract::{Device, ServeFlags, SidecarFlags, env};

use super::lora::Lora;
use super::tls::Tls;
use super::{BuildConfig, GRPC_PORT, HTTP_PORT, METRICS_PORT, Owner, labels, selector_labels};
use crate::crd::{EngineSpec, ModelSource};
use crate::{Error, Result};

const CACHE_DIR: &str = "/var/cache/candela";
const PROFILE_DIR: &str = "/var/cache/candela/profiles";
/// Where the model's claim is mounted in the engine container.
pub(super) const PVC_MOUNT: &str = "/models";
/// UID/GID of the engine image's non-root user.
const RUN_AS: i64 = 65532;
/// Seconds the kubelet waits before SIGTERM: the pod is already off the Service's
/// endpoints, so kube-proxy stops sending it new connections first. Then the engine
/// drains (`candela::drain`: 5 s of `Connection: close`, then in-flight requests finish).
const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// preStop + drain window + the longest generation a rolling update waits for.
const TERMINATION_GRACE_SECONDS: i64 = 120;

pub(super) fn build(
    owner: &Owner<'_>,
    config: &BuildConfig,
    lora: Option<&Lora>,
    tls: &Tls,
) -> Result<Deployment> {
    let spec = &owner.infd.spec;
    let engine_args = engine_command(owner, lora.is_some(), tls)?;
    let sidecar_args = sidecar_command(lora.is_some(), tls);
    // The engine's and the sidecar's own parser and validation, on exactly this argv.
    for (container, argv) in [
        (ENGINE_CONTAINER, &engine_args),
        (SIDECAR_CONTAINER, &sidecar_args),
    ] {
        candela_contract::parse_process_args(argv).map_err(|e| {
            Error::InvalidSpec(format!(
                "the {container} container would refuse its arguments: {e}"
            ))
        })?;
    }
    let image = spec
        .engine
        .image
        .clone()
        .unwrap_or_else(|| config.engine_image.clone());
    let mut pod_labels = labels(&owner.name);
    pod_labels.insert("candela.dev/model".into(), label_value(&owner.served_name));

    let pod = PodSpec {
        containers: vec![
            engine_container(owner, &image, engine_args, lora, tls),
            sidecar_container(owner, &image, sidecar_args, lora, tls),
        ],
        volumes: Some(volumes(owner, lora, tls)),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        // The sidecar reads the engine process's CPU time and RSS from /proc (the "GPU /
        // engine CPU" and memory panels); without a shared PID namespace it cannot see it.
        share_process_namespace: Some(true),
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        affinity: spec.affinity.clone(),
        priority_class_name: spec.priority_class_name.clone(),
        runtime_class_name: spec.runtime_class_name.clone(),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        ..PodSpec::default()
    };

    Ok(Deployment {
        metadata: owner.meta(owner.name.clone(), &BTreeMap::new()),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                ..LabelSelector::default()
            },
            // GPUs are scarce: replace pods one at a time without surging past the quota.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            // Model loading is slow; a stuck rollout is reported after 15 minutes.
            progress_deadline_seconds: Some(900),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// `candela serve` arguments derived from the spec (typed values written by the
/// contract crate, so every flag is one the engine defines). With LoRA the engine gets
/// `--enable-lora` and the limits but no `--lora-modules`: the sidecar loads the adapters.
/// With `spec.tls`, `--ssl-certfile`/`--ssl-keyfile` (HTTPS and gRPC over TLS).
fn engine_command(owner: &Owner<'_>, lora: bool, tls: &Tls) -> Result<Vec<String>> {
    let spec = &owner.infd.spec;
    let e: &EngineSpec = &spec.engine;
    let kv_cache_memory = e
        .kv_cache_memory
        .as_ref()
        .map(|q| {
            q.0.parse::<candela_contract::ByteSize>()
                .map_err(|why| Error::InvalidSpec(format!("engine.kvCacheMemory {:?}: {why}", q.0)))
        })
        .transpose()?;
    let hub = matches!(owner.source, ModelSource::HuggingFace(_));
    let to_usize = |v: Option<i32>| v.and_then(|v| usize::try_from(v).ok());
    Ok(ServeFlags {
        model: model_arg(&owner.source),
        revision: spec.model.revision.clone().filter(|_| hub),
        served_model_name: Some(owner.served_name.clone()),
        host: Some("0.0.0.0".into()),
        port: Some(ports::HTTP),
        grpc_port: Some(ports::GRPC),
        device: Some(if spec.resources.gpus > 0 {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        dtype: e.dtype.map(Into::into),
        max_model_len: to_usize(e.max_model_len),
        max_num_seqs: to_usize(e.max_num_seqs),
        // Service tiers are not in the CRD yet (`extraArgs` reaches them).
        max_num_seqs_per_tier: Vec::new(),
        api_key_tiers: None,
        max_num_batched_tokens: to_usize(e.max_num_batched_tokens),
        block_size: to_usize(e.block_size),
        gpu_memory_utilization: e.gpu_memory_utilization,
        kv_cache_memory,
        swap_space: e.swap_space_gib,
        kv_cache_dtype: e.kv_cache_dtype.map(Into::into),
        scheduler_delay_factor: e.scheduler_delay_factor,
        scheduling_policy: e.scheduling_policy.map(Into::into),
        enable_prefix_caching: e.enable_prefix_caching,
        enable_chunked_prefill: e.enable_chunked_prefill,
        enable_lora: lora,
        lora_modules: Vec::new(),
        max_loras: to_usize(e.max_loras),
        max_lora_rank: to_usize(e.max_lora_rank),
        max_cpu_loras: to_usize(e.max_cpu_loras),
        tls: tls.engine_flags(),
        extra: e.extra_args.clone(),
    }
    .to_args())
}

/// `candela sidecar` arguments: the engine's gRPC on loopback, metrics on all interfaces;
/// with LoRA, the adapter list file and the engine's HTTP API on loopback. With
/// `spec.tls` the engine URIs are `https://`, verified with the CA of the engine's Secret
/// and the Service name the certificate carries; with `monitoring.tls`, the metrics
/// certificate and the client CA (`--ssl-cert-reqs 1`).
fn sidecar_command(lora: bool, tls: &Tls) -> Vec<String> {
    let scheme = tls.engine_scheme();
    SidecarFlags {
        engine_grpc: Some(format!("{scheme}://127.0.0.1:{}", ports::GRPC)),
        listen: Some(format!("0.0.0.0:{}", ports::METRICS)),
        profiles_dir: Some(PROFILE_DIR.into()),
        engine_http: lora.then(|| format!("{scheme}://127.0.0.1:{}", ports::HTTP)),
        lora_adapters_file: lora.then(Lora::file_path),
        engine_ca_certs: tls.engine_ca(),
        engine_server_name: tls.api.as_ref().map(|_| tls.server_name.clone()),
        tls: tls.sidecar_flags(),
    }
    .to_args()
}

fn model_arg(source: &ModelSource) -> String {
    match source {
        ModelSource::HuggingFace(hub) => hub.uri(),
        ModelSource::Pvc { path, .. } => format!("{PVC_MOUNT}/{path}"),
        ModelSource::File { path } => path.clone(),
    }
}

fn engine_container(
    owner: &Owner<'_>,
    image: &str,
    args: Vec<String>,
    lora: Option<&Lora>,
    tls: &Tls,
) -> Container {
    let spec = &owner.infd.spec;
    let mut env = vec![
        env_value(env::HF_HOME, format!("{CACHE_DIR}/hf")),
        env_value(env::PROFILER_DIR, PROFILE_DIR.into()),
    ];
    if lora.is_some() {
        // The runtime load/unload endpoints the sidecar drives.
        env.push(env_value(env::ALLOW_RUNTIME_LORA_UPDATING, "True".into()));
    }
    // Secrets reach the processes as the env vars their flags read; never in argv.
    if let Some(sel) = &spec.model.hf_token_secret_ref {
        env.push(env_secret(env::HF_TOKEN, sel));
    }
    if let Some(sel) = &spec.api_key_secret_ref {
        env.push(env_secret(env::API_KEY, sel));
    }
    env.extend(spec.engine.env.iter().cloned());

    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if spec.resources.gpus > 0 {
        limits.insert(
            spec.resources.gpu_resource_name.clone(),
            Quantity(spec.resources.gpus.to_string()),
        );
    }
    for (name, value) in [
        ("cpu", &spec.resources.cpu),
        ("memory", &spec.resources.memory),
    ] {
        if let Some(q) = value {
            limits.insert(name.to_owned(), q.clone());
            requests.insert(name.to_owned(), q.clone());
        }
    }

    let mut mounts = vec![
        mount("model-cache", CACHE_DIR, false),
        mount("tmp", "/tmp", false),
        mount("dshm", "/dev/shm", false),
    ];
    if matches!(owner.source, ModelSource::Pvc { .. }) {
        mounts.push(mount("models", PVC_MOUNT, true));
    }
    if let Some(lora) = lora {
        mounts.extend(lora.engine_mounts());
    }
    mounts.extend(tls.engine_mounts());

    // The kubelet does not verify the certificate of an HTTPS probe.
    let health = |period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(HEALTH_PATH.into()),
            port: IntOrString::String(HTTP_PORT_NAME.into()),
            scheme: tls.api.as_ref().map(|_| "HTTPS".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Probe::default()
    };

    Container {
        name: ENGINE_CONTAINER.into(),
        image: Some(image.to_owned()),
        image_pull_policy: spec.engine.image_pull_policy.clone(),
        command: Some(vec!["candela".into()]),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![
            port(HTTP_PORT_NAME, HTTP_PORT),
            port(GRPC_PORT_NAME, GRPC_PORT),
        ]),
        resources: Some(ResourceRequirements {
            limits: (!limits.is_empty()).then_some(limits),
            requests: (!requests.is_empty()).then_some(requests),
            ..ResourceRequirements::default()
        }),
        // Loading weights can take minutes: the startup probe allows 30 of them.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        startup_probe: Some(health(10, 180)),
        readiness_probe: Some(health(5, 3)),
        liveness_probe: Some(health(10, 6)),
        security_context: Some(restricted()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

fn sidecar_container(
    owner: &Owner<'_>,
    image: &str,
    args: Vec<String>,
    lora: Option<&Lora>,
    tls: &Tls,
) -> Container {
    let spec = &owner.infd.spec;
    let mut env = Vec::new();
    if let Some(sel) = &spec.monitoring.metrics_auth_secret_ref {
        env.push(env_secret(env::METRICS_TOKEN, sel));
    }
    // The LoRA sync calls the engine's /v1 endpoints, which want the API key.
    if lora.is_some()
        && let Some(sel) = &spec.api_key_secret_ref
    {
        env.push(env_secret(env::API_KEY, sel));
    }
    let mut mounts = vec![
        mount("model-cache", CACHE_DIR, true),
        mount("tmp", "/tmp", false),
    ];
    if lora.is_some() {
        mounts.push(Lora::sidecar_mount());
    }
    mounts.extend(tls.sidecar_mounts());
    let tcp = |period: i32| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(METRICS_PORT_NAME.into()),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    };
    // With LoRA the pod joins its Service once the sidecar has applied the adapter list
    // (else a new pod would answer "unknown model" for adapters for a few seconds).
    let readiness = if lora.is_some() {
        Probe {
            http_get: Some(HTTPGetAction {
                path: Some(candela_contract::sidecar::READY_PATH.into()),
                port: IntOrString::String(METRICS_PORT_NAME.into()),
                // Open without a client certificate (`--ssl-cert-reqs 1`).
                scheme: tls.metrics.as_ref().map(|_| "HTTPS".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(2),
            ..Probe::default()
        }
    } else {
        tcp(10)
    };
    Container {
        name: SIDECAR_CONTAINER.into(),
        image: Some(image.to_owned()),
        image_pull_policy: spec.engine.image_pull_policy.clone(),
        command: Some(vec!["candela".into()]),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        ports: Some(vec![port(METRICS_PORT_NAME, METRICS_PORT)]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("50m".into())),
                ("memory".to_owned(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("256Mi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        readiness_probe: Some(readiness),
        liveness_probe: Some(tcp(20)),
        security_context: Some(restricted()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

fn volumes(owner: &Owner<'_>, lora: Option<&Lora>, tls: &Tls) -> Vec<Volume> {
    let spec = &owner.infd.spec;
    let empty_dir = |name: &str, medium: Option<&str>, size: Option<Quantity>| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(Into::into),
            size_limit: size,
        }),
        ..Volume::default()
    };
    let cache_size = spec
        .model
        .cache_size
        .clone()
        .unwrap_or_else(|| Quantity("50Gi".into()));
    let mut volumes = vec![
        empty_dir("model-cache", None, Some(cache_size)),
        empty_dir("tmp", None, Some(Quantity("1Gi".into()))),
        empty_dir("dshm", Some("Memory"), Some(Quantity("2Gi".into()))),
    ];
    if let ModelSource::Pvc { claim, .. } = &owner.source {
        volumes.push(Volume {
            name: "models".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        });
    }
    if let Some(lora) = lora {
        volumes.extend(lora.volumes(owner));
    }
    volumes.extend(tls.volumes());
    volumes
}

fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn env_value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    }
}

fn env_secret(name: &str, selector: &SecretKeySelector) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(selector.clone()),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// A served model name turned into a valid label value (`org/name` → `org_name`).
fn label_value(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    trimmed
        .chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::label_value;
    use crate::Error;
    use crate::builders::{BuildConfig, build};
    use crate::fixtures::infd;

    fn refusal(yaml: &str) -> String {
        match build(&infd(yaml), &BuildConfig::default()) {
            Err(Error::InvalidSpec(msg)) => msg,
            other => panic!("{yaml}: expected InvalidSpec, got {other:?}"),
        }
    }

    /// What the engine's parser refuses is refused here, before any pod exists, with the
    /// engine's own words.
    #[test]
    fn argv_the_engine_would_refuse_is_an_invalid_spec() {
        let m =
            refusal("spec: {model: {source: hf://org/m}, engine: {extraArgs: [--max-num-seq=4]}}");
        assert_eq!(
            m,
            "the engine container would refuse its arguments: unexpected argument '--max-num-seq' found (tip: a similar argument exists: '--max-num-seqs')"
        );
        let m = refusal(
            "spec: {model: {source: hf://org/m}, engine: {maxNumSeqs: 4, extraArgs: [--max-num-seqs=8]}}",
        );
        assert!(
            m.contains("'--max-num-seqs <MAX_NUM_SEQS>' cannot be used multiple times"),
            "{m}"
        );
        let m =
            refusal("spec: {model: {source: hf://org/m}, engine: {extraArgs: [--block-size=12]}}");
        assert!(m.contains("--block-size must be a power of two"), "{m}");
        let m = refusal(
            "spec: {model: {source: hf://org/m}, engine: {extraArgs: [--tensor-parallel-size=2]}}",
        );
        assert!(
            m.contains("--tensor-parallel-size 2 is not supported yet"),
            "{m}"
        );
        let m = refusal("spec: {model: {source: hf://org/m}, engine: {kvCacheMemory: lots}}");
        assert!(m.starts_with("engine.kvCacheMemory \"lots\""), "{m}");
        // Speculative decoding's JSON is checked by the engine's own parser too.
        let m = refusal(
            r#"spec: {model: {source: hf://org/m}, engine: {extraArgs: ['--speculative-config={"method": "ngram"}']}}"#,
        );
        assert!(
            m.contains("--speculative-config") && m.contains("num_speculative_tokens is required"),
            "{m}"
        );
        // Flags the engine knows pass, in either spelling.
        for extra in [
            "[--max-waiting, '64', --threads=2]",
            r#"['--speculative-config={"method": "ngram", "num_speculative_tokens": 4}']"#,
        ] {
            let ok = build(
                &infd(&format!(
                    "spec: {{model: {{source: hf://org/m}}, engine: {{kvCacheMemory: 512Mi, extraArgs: {extra}}}}}"
                )),
                &BuildConfig::default(),
            );
            assert!(ok.is_ok(), "{extra}: {ok:?}");
        }
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("Qwen/Qwen2.5-0.5B"), "Qwen_Qwen2.5-0.5B");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
    }
}
