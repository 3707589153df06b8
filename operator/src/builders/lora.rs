//! LoRA adapters (`spec.loraAdapters`): the engine's LoRA flags and env, the adapter list
//! ConfigMap the sidecar follows, and the volumes of adapters on claims.
//!
//! Invariant: the pod template depends on whether the field is set, on the engine's LoRA
//! limits and on the set of claims adapters live on, never on the list itself. Editing
//! the list changes only the ConfigMap `<name>-lora-adapters`; the kubelet refreshes the
//! mounted file in place (within its sync period, about a minute) and each pod's sidecar
//! (`candela sidecar --lora-adapters-file`) loads and unloads the difference through the
//! engine's runtime LoRA endpoints, so no pod restarts. The engine starts with
//! `--enable-lora` and no `--lora-modules`: every adapter, the first ones included, comes
//! from the sidecar, so there is one path for adapters to arrive by.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
};

use candela_contract::sidecar::{LoraAdapter, LoraAdapterList};

use super::Owner;
use super::deployment::PVC_MOUNT;
use crate::crd::ModelSource;
use crate::{Error, Result};

/// Key of the adapter list in the ConfigMap (the file name in the sidecar).
pub const CONFIG_MAP_KEY: &str = "adapters.json";
/// Where the sidecar sees the ConfigMap.
const CONFIG_MOUNT_DIR: &str = "/etc/candela/lora";
/// Volume name of the ConfigMap.
const CONFIG_VOLUME: &str = "lora-adapters";
/// Claims of adapters (other than the model's) are mounted at `/adapters/<claim>`.
const CLAIM_MOUNT_ROOT: &str = "/adapters";

/// Name of the adapter list ConfigMap of `instance`.
pub fn config_map_name(instance: &str) -> String {
    format!("{instance}-lora-adapters")
}

/// `spec.loraAdapters` resolved to what the engine and the sidecar see.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Lora {
    /// The adapters, with their paths inside the engine container.
    pub list: LoraAdapterList,
    /// Claims mounted for adapters (the model's own claim excluded), sorted, unique.
    claims: Vec<String>,
}

/// Resolves and checks `spec.loraAdapters`; `None` when the field is absent (LoRA off).
///
/// # Errors
/// [`Error::InvalidSpec`] for a name the engine would refuse, a name given twice or equal
/// to the served model name, a source that is not a PEFT location, or LoRA limits
/// (`engine.maxLoras`, …) without `loraAdapters`.
pub(super) fn resolve(owner: &Owner<'_>) -> Result<Option<Lora>> {
    let spec = &owner.infd.spec;
    let Some(adapters) = &spec.lora_adapters else {
        let e = &spec.engine;
        for (field, set) in [
            ("maxLoras", e.max_loras.is_some()),
            ("maxLoraRank", e.max_lora_rank.is_some()),
            ("maxCpuLoras", e.max_cpu_loras.is_some()),
        ] {
            if set {
                return Err(Error::InvalidSpec(format!(
                    "engine.{field} is a LoRA setting: set spec.loraAdapters (it may be empty) to enable LoRA"
                )));
            }
        }
        return Ok(None);
    };
    // The sidecar unloads every adapter its list does not name: adapters from argv would
    // load at start and vanish at the first sync.
    let modules = format!("--{}", candela_contract::serve::flag::LORA_MODULES);
    if spec
        .engine
        .extra_args
        .iter()
        .any(|a| a == &modules || a.starts_with(&format!("{modules}=")))
    {
        return Err(Error::InvalidSpec(format!(
            "engine.extraArgs: {modules} conflicts with spec.loraAdapters (the sidecar would unload them); list the adapters in spec.loraAdapters"
        )));
    }
    let model_claim = match &owner.source {
        ModelSource::Pvc { claim, .. } => Some(claim.as_str()),
        _ => None,
    };
    let mut list = Vec::with_capacity(adapters.len());
    let mut claims = Vec::new();
    for (i, a) in adapters.iter().enumerate() {
        let field = format!("loraAdapters[{i}]");
        candela_contract::lora::check_name(&a.name)
            .map_err(|e| Error::InvalidSpec(format!("{field}.name: {e}")))?;
        if a.name == owner.served_name {
            return Err(Error::InvalidSpec(format!(
                "{field}.name {:?} is the served model name: requests could not tell them apart",
                a.name
            )));
        }
        let path = match ModelSource::parse_field(&a.source, &format!("{field}.source"))? {
            ModelSource::HuggingFace(hub) if hub.quant.is_some() => {
                return Err(Error::InvalidSpec(format!(
                    "{field}.source {:?}: `:<QUANT>` picks a GGUF file, an adapter is a PEFT directory",
                    a.source
                )));
            }
            ModelSource::HuggingFace(hub) => hub.uri(),
            ModelSource::Pvc { claim, path } if Some(claim.as_str()) == model_claim => {
                format!("{PVC_MOUNT}/{path}")
            }
            ModelSource::Pvc { claim, path } => {
                let dir = format!("{CLAIM_MOUNT_ROOT}/{claim}/{path}");
                claims.push(claim);
                dir
            }
            ModelSource::File { path } => path,
        };
        list.push(LoraAdapter {
            name: a.name.clone(),
            path,
        });
    }
    let list = LoraAdapterList { adapters: list };
    list.check()
        .map_err(|e| Error::InvalidSpec(format!("loraAdapters: {e}")))?;
    claims.sort_unstable();
    claims.dedup();
    Ok(Some(Lora { list, claims }))
}

impl Lora {
    /// The adapter list file as the sidecar reads it (`--lora-adapters-file`).
    pub fn file_path() -> PathBuf {
        PathBuf::from(format!("{CONFIG_MOUNT_DIR}/{CONFIG_MAP_KEY}"))
    }

    /// The ConfigMap holding the adapter list.
    pub fn config_map(&self, owner: &Owner<'_>) -> ConfigMap {
        ConfigMap {
            metadata: owner.meta(config_map_name(&owner.name), &BTreeMap::new()),
            data: Some(BTreeMap::from([(
                CONFIG_MAP_KEY.to_owned(),
                self.list.to_json(),
            )])),
            ..ConfigMap::default()
        }
    }

    /// The ConfigMap's volume and one read-only volume per adapter claim.
    pub fn volumes(&self, owner: &Owner<'_>) -> Vec<Volume> {
        let mut volumes = vec![Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(&owner.name),
                // The pod waits for the list rather than starting with none: the sidecar
                // must never mistake a missing list for an empty one.
                optional: Some(false),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }];
        volumes.extend(self.claims.iter().enumerate().map(|(i, claim)| Volume {
            name: claim_volume(i),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        }));
        volumes
    }

    /// The engine container's mounts of the adapter claims.
    pub fn engine_mounts(&self) -> Vec<VolumeMount> {
        self.claims
            .iter()
            .enumerate()
            .map(|(i, claim)| VolumeMount {
                name: claim_volume(i),
                mount_path: format!("{CLAIM_MOUNT_ROOT}/{claim}"),
                read_only: Some(true),
                ..VolumeMount::default()
            })
            .collect()
    }

    /// The sidecar's mount of the ConfigMap (a directory: a `subPath` mount would never
    /// see the kubelet's updates).
    pub fn sidecar_mount() -> VolumeMount {
        VolumeMount {
            name: CONFIG_VOLUME.into(),
            mount_path: CONFIG_MOUNT_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }
    }
}

/// Volume names are DNS labels (63 characters) and claim names may be longer: number them.
fn claim_volume(i: usize) -> String {
    format!("lora-claim-{i}")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodTemplateSpec;

    use crate::Error;
    use crate::builders::{BuildConfig, Children, build};
    use crate::fixtures::infd;

    const TWO: &str = "spec: {model: {source: hf://org/m}, resources: {gpus: 0}, loraAdapters: [{name: sql, source: hf://org/sql-lora}, {name: chat, source: file:///adapters/chat}]}";

    fn children(yaml: &str) -> Children {
        build(&infd(yaml), &BuildConfig::default()).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    fn refusal(yaml: &str) -> String {
        match build(&infd(yaml), &BuildConfig::default()) {
            Err(Error::InvalidSpec(msg)) => msg,
            other => panic!("{yaml}: expected InvalidSpec, got {other:?}"),
        }
    }

    fn template(c: &Children) -> PodTemplateSpec {
        c.deployment.spec.clone().expect("spec").template
    }

    fn args(c: &Children, container: usize) -> Vec<String> {
        template(c).spec.expect("pod").containers[container]
            .args
            .clone()
            .expect("args")
    }

    #[test]
    fn adapters_enable_lora_and_reach_the_sidecar_through_a_config_map() {
        let c = children(TWO);
        let engine = args(&c, 0);
        assert!(engine.contains(&"--enable-lora".to_owned()), "{engine:?}");
        assert!(
            !engine.iter().any(|a| a.starts_with("--lora-modules")),
            "the list never reaches the template: {engine:?}"
        );
        let sidecar = args(&c, 1);
        assert!(
            sidecar.contains(&"--lora-adapters-file=/etc/candela/lora/adapters.json".to_owned()),
            "{sidecar:?}"
        );
        assert!(
            sidecar.contains(&"--engine-http=http://127.0.0.1:8000".to_owned()),
            "{sidecar:?}"
        );
        let cm = c.lora_config_map.expect("ConfigMap");
        assert_eq!(cm.metadata.name.as_deref(), Some("test-lora-adapters"));
        let text = &cm.data.expect("data")["adapters.json"];
        let list = candela_contract::sidecar::LoraAdapterList::parse(text).expect("parses");
        let pairs: Vec<(&str, &str)> = list
            .adapters
            .iter()
            .map(|a| (a.name.as_str(), a.path.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("sql", "hf://org/sql-lora"), ("chat", "/adapters/chat")]
        );

        let pod = template(&children(TWO)).spec.expect("pod");
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "lora-adapters")
            .expect("ConfigMap volume");
        assert_eq!(
            volume.config_map.as_ref().map(|c| c.name.as_str()),
            Some("test-lora-adapters")
        );
        let env = pod.containers[0].env.clone().unwrap_or_default();
        assert!(
            env.iter()
                .any(|e| e.name == "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
                    && e.value.as_deref() == Some("True")),
            "{env:?}"
        );
        let mount = pod.containers[1]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "lora-adapters")
            .expect("sidecar mount");
        assert!(mount.sub_path.is_none() && mount.read_only == Some(true));
        let ready = pod.containers[1]
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.as_deref());
        assert_eq!(ready, Some("/ready"), "the pod waits for its adapters");
    }

    /// Editing the list changes the ConfigMap only: the pod template (and so the pods) stay.
    #[test]
    fn only_the_config_map_changes_when_the_list_changes() {
        let base = children(TWO);
        for other in [
            "spec: {model: {source: hf://org/m}, resources: {gpus: 0}, loraAdapters: []}",
            "spec: {model: {source: hf://org/m}, resources: {gpus: 0}, loraAdapters: [{name: sql, source: hf://org/sql-lora-v2}]}",
            "spec: {model: {source: hf://org/m}, resources: {gpus: 0}, loraAdapters: [{name: a, source: file:///x}, {name: b, source: hf://o/b}, {name: c, source: file:///c}]}",
        ] {
            let changed = children(other);
            assert_eq!(template(&base), template(&changed), "{other}");
            assert_ne!(base.lora_config_map, changed.lora_config_map, "{other}");
        }
        // Without the field LoRA is off: no flag, no ConfigMap, no sidecar sync.
        let off = children("spec: {model: {source: hf://org/m}, resources: {gpus: 0}}");
        assert!(!args(&off, 0).contains(&"--enable-lora".to_owned()));
        assert!(!args(&off, 1).iter().any(|a| a.contains("lora")));
        assert!(off.lora_config_map.is_none());
    }

    #[test]
    fn adapters_on_claims_are_mounted_once_per_claim() {
        let c = children(
            "spec: {model: {source: pvc://models/base.gguf}, resources: {gpus: 0}, loraAdapters: [{name: a, source: pvc://models/lora/a}, {name: b, source: pvc://team-loras/b}, {name: c, source: pvc://team-loras/sub/c}]}",
        );
        let text =
            c.lora_config_map.clone().expect("cm").data.expect("data")["adapters.json"].clone();
        let list = candela_contract::sidecar::LoraAdapterList::parse(&text).expect("parses");
        let paths: Vec<&str> = list.adapters.iter().map(|a| a.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/models/lora/a",
                "/adapters/team-loras/b",
                "/adapters/team-loras/sub/c"
            ]
        );
        let pod = template(&c).spec.expect("pod");
        let claims: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|p| p.claim_name.as_str())
            .collect();
        assert_eq!(claims, ["models", "team-loras"]);
        let mounts: Vec<(String, String)> = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.clone(), m.mount_path.clone()))
            .filter(|(n, _)| n.starts_with("lora-claim"))
            .collect();
        assert_eq!(
            mounts,
            [("lora-claim-0".to_owned(), "/adapters/team-loras".to_owned())]
        );
    }

    #[test]
    fn limits_reach_the_engine() {
        let c = children(
            "spec: {model: {source: hf://org/m}, resources: {gpus: 0}, engine: {maxLoras: 2, maxLoraRank: 8, maxCpuLoras: 4}, loraAdapters: []}",
        );
        let engine = args(&c, 0);
        for flag in ["--max-loras=2", "--max-lora-rank=8", "--max-cpu-loras=4"] {
            assert!(engine.contains(&flag.to_owned()), "{flag}: {engine:?}");
        }
    }

    #[test]
    fn the_api_key_reaches_the_sidecar_only_with_lora() {
        let key = "apiKeySecretRef: {name: s, key: k}";
        let with = children(&format!(
            "spec: {{model: {{source: hf://org/m}}, resources: {{gpus: 0}}, {key}, loraAdapters: []}}"
        ));
        let env = template(&with).spec.expect("pod").containers[1]
            .env
            .clone()
            .unwrap_or_default();
        assert!(env.iter().any(|e| e.name == "CANDELA_API_KEY"), "{env:?}");
        let without = children(&format!(
            "spec: {{model: {{source: hf://org/m}}, resources: {{gpus: 0}}, {key}}}"
        ));
        assert!(
            template(&without).spec.expect("pod").containers[1]
                .env
                .is_none()
        );
    }

    #[test]
    fn bad_adapters_are_invalid_specs() {
        let spec = |adapters: &str| {
            format!(
                "spec: {{model: {{source: hf://org/m}}, resources: {{gpus: 0}}, loraAdapters: {adapters}}}"
            )
        };
        let m = refusal(&spec(
            "[{name: a, source: file:///a}, {name: a, source: file:///b}]",
        ));
        assert_eq!(m, "loraAdapters: LoRA adapter name \"a\" is given twice");
        let m = refusal(&spec("[{name: 'a b', source: file:///a}]"));
        assert!(
            m.starts_with("loraAdapters[0].name:") && m.contains("whitespace"),
            "{m}"
        );
        let m = refusal(&spec("[{name: org/m, source: file:///a}]"));
        assert!(m.contains("is the served model name"), "{m}");
        let m = refusal(&spec("[{name: a, source: 'hf://org/a-GGUF:Q4_K_M'}]"));
        assert!(m.contains("PEFT directory"), "{m}");
        let m = refusal(&spec("[{name: a, source: s3://bucket/a}]"));
        assert!(
            m.starts_with("loraAdapters[0].source \"s3://bucket/a\""),
            "{m}"
        );
        let m = refusal(
            "spec: {model: {source: hf://org/m}, resources: {gpus: 0}, engine: {extraArgs: ['--lora-modules=a=/a']}, loraAdapters: []}",
        );
        assert!(m.contains("conflicts with spec.loraAdapters"), "{m}");
        // Limits without adapters would be silently ignored by the engine.
        let m = refusal("spec: {model: {source: hf://org/m}, engine: {maxLoras: 2}}");
        assert!(m.starts_with("engine.maxLoras is a LoRA setting"), "{m}");
        // The engine's own validation: LoRA runs on CPU only, ranks are vLLM's.
        let m = refusal("spec: {model: {source: hf://org/m}, loraAdapters: []}");
        assert!(m.contains("--enable-lora runs on --device cpu only"), "{m}");
        let m = refusal(
            "spec: {model: {source: hf://org/m}, resources: {gpus: 0}, engine: {maxLoraRank: 12}, loraAdapters: []}",
        );
        assert!(m.contains("--max-lora-rank must be one of"), "{m}");
        let m = refusal(
            "spec: {model: {source: hf://org/m}, resources: {gpus: 0}, engine: {maxLoras: 4, maxCpuLoras: 2}, loraAdapters: []}",
        );
        assert!(
            m.contains("--max-cpu-loras (2) must be at least --max-loras (4)"),
            "{m}"
        );
    }
}
