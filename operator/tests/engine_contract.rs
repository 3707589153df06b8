//! The operator only emits what the engine accepts: the argv of every engine and sidecar
//! container the operator builds — for every example in `deploy/examples/`, every snapshot
//! spec and a generated range of specs within the CRD's schema — goes through the
//! `candela` binary's own parser (`candela::cli::Cli`) and validation, and the parsed
//! values must be the spec's. Then the two example kinds (a hub model and a PVC model) and
//! the LoRA example (its sidecar loading the adapters its ConfigMap lists) and the TLS
//! example (HTTPS everywhere, `/metrics` only with Prometheus's client certificate) are
//! started for real with the operator's exact argv and env, substituting only what a pod
//! provides itself: its network namespace (ports) and its volumes (paths).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use candela::cli::{Cli, Command as Sub, ProcessCommand, ServeArgs, SidecarArgs};
use candela_operator::builders::{self, BuildConfig, ENGINE_CONTAINER, SIDECAR_CONTAINER};
use candela_operator::crd::InferenceDeployment;
use clap::Parser;
use k8s_openapi::api::core::v1::Container;
use proptest::prelude::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(path: &Path) -> InferenceDeployment {
    let text = std::fs::read_to_string(path).unwrap();
    let mut infd: InferenceDeployment =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    infd.metadata.namespace.get_or_insert_with(|| "ns".into());
    infd.metadata.uid = Some("00000000-0000-0000-0000-000000000001".into());
    infd
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn containers(infd: &InferenceDeployment) -> (Container, Container) {
    let children = builders::build(infd, &BuildConfig::default())
        .unwrap_or_else(|e| panic!("{:?}: {e}", infd.metadata.name));
    let pod = children.deployment.spec.unwrap().template.spec.unwrap();
    let find = |name: &str| {
        pod.containers
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} container"))
    };
    (find(ENGINE_CONTAINER), find(SIDECAR_CONTAINER))
}

/// The container's argv through the binary's parser (as `candela ARGS…` in the pod).
fn parse(c: &Container) -> ProcessCommand {
    assert_eq!(c.command.as_deref(), Some(&["candela".to_owned()][..]));
    let argv = std::iter::once("candela".to_owned()).chain(c.args.clone().unwrap_or_default());
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Sub::Process(p),
        }) => p,
        Ok(other) => panic!("{} parsed as {other:?}", c.name),
        Err(e) => panic!("the engine refuses {:?}: {e}", c.args),
    }
}

fn serve(c: &Container) -> ServeArgs {
    match parse(c) {
        ProcessCommand::Serve(a) => {
            a.validate()
                .unwrap_or_else(|e| panic!("validation refuses {:?}: {e}", c.args));
            a
        }
        other => panic!("engine container runs {other:?}"),
    }
}

fn sidecar(c: &Container) -> SidecarArgs {
    match parse(c) {
        ProcessCommand::Sidecar(a) => {
            a.validate().unwrap();
            a
        }
        other => panic!("sidecar container runs {other:?}"),
    }
}

/// The parsed engine flags mean what the spec says.
fn check_meaning(infd: &InferenceDeployment, a: &ServeArgs) {
    let spec = &infd.spec;
    let e = &spec.engine;
    let source = &spec.model.source;
    let model = a.model_value().expect("--model is set");
    match source.split_once("://") {
        Some(("hf", rest)) => assert_eq!(model, format!("hf://{rest}")),
        Some(("pvc", rest)) => assert_eq!(
            model,
            format!("/models/{}", rest.split_once('/').unwrap().1)
        ),
        Some(("file", rest)) => assert_eq!(model, rest),
        _ => panic!("source {source}"),
    }
    assert_eq!(
        a.server.served_model_name,
        vec![spec.served_name().unwrap()]
    );
    let hub = source.starts_with("hf://");
    assert_eq!(a.hub.revision, spec.model.revision.clone().filter(|_| hub));
    assert_eq!((a.server.port, a.server.grpc_port), (8000, 50051));
    assert_eq!(
        a.model.device.to_string(),
        if spec.resources.gpus > 0 {
            "cuda:0"
        } else {
            "cpu"
        }
    );
    let n = |v: Option<i32>| v.map(|v| v as usize);
    if let Some(v) = n(e.max_num_seqs) {
        assert_eq!(a.scheduler.max_num_seqs, v);
    }
    assert_eq!(a.scheduler.max_model_len, n(e.max_model_len));
    assert_eq!(
        a.scheduler.max_num_batched_tokens,
        n(e.max_num_batched_tokens)
    );
    if let Some(v) = n(e.block_size) {
        assert_eq!(a.cache.block_size, v);
    }
    if let Some(v) = e.gpu_memory_utilization {
        assert_eq!(a.cache.gpu_memory_utilization, v);
    }
    if let Some(v) = e.swap_space_gib {
        assert_eq!(a.cache.swap_space, v);
    }
    if let Some(v) = e.scheduler_delay_factor {
        assert_eq!(a.scheduler.scheduler_delay_factor, v);
    }
    if let Some(v) = e.scheduling_policy {
        assert_eq!(
            candela_contract::SchedulingPolicy::from(v),
            a.scheduler.scheduling_policy
        );
    }
    if let Some(v) = e.enable_prefix_caching {
        assert_eq!(a.cache.enable_prefix_caching(), v);
    }
    if let Some(v) = e.enable_chunked_prefill {
        assert_eq!(a.scheduler.enable_chunked_prefill(), v);
    }
    if let Some(q) = &e.kv_cache_memory {
        assert_eq!(a.cache.kv_cache_memory, Some(q.0.parse().unwrap()));
    }
    // LoRA: on exactly when the spec lists adapters (even none), which the sidecar loads;
    // the list itself never reaches argv.
    assert_eq!(a.lora.enable_lora, spec.lora_adapters.is_some());
    assert!(a.lora.lora_modules.is_empty());
    if let Some(v) = n(e.max_loras) {
        assert_eq!(a.lora.max_loras, v);
    }
    if let Some(v) = n(e.max_lora_rank) {
        assert_eq!(a.lora.max_lora_rank, v);
    }
    assert_eq!(a.lora.max_cpu_loras, n(e.max_cpu_loras));
    // Secrets travel in env, never in argv.
    assert!(a.server.api_key.is_none() && a.hub.hf_token.is_none());
    // spec.tls: HTTPS and gRPC over TLS from the mounted Secret, no client certificates
    // (clients authenticate with the API key).
    assert_eq!(a.tls.enabled(), spec.tls.is_some());
    assert_eq!(
        a.tls.client_cert_reqs(),
        candela_contract::tls::ClientCertReqs::None
    );
}

/// The parsed sidecar flags mean what the spec says: `https://` engine URIs verified with
/// the engine Secret's CA and the Service name under `spec.tls`; `/metrics` over HTTPS with
/// optional client certificates (probes open) under `monitoring.tls`.
fn check_sidecar_meaning(infd: &InferenceDeployment, s: &SidecarArgs) {
    let spec = &infd.spec;
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    assert_eq!(s.engine_grpc, format!("{scheme}://127.0.0.1:50051"));
    // The engine's HTTP API is the sidecar's business only with LoRA.
    let http_scheme = if spec.lora_adapters.is_some() {
        scheme
    } else {
        "http"
    };
    assert_eq!(s.engine_http, format!("{http_scheme}://127.0.0.1:8000"));
    assert_eq!(s.listen_addr(), "0.0.0.0:9090");
    assert!(s.metrics_token.is_none());
    let service = format!(
        "{}.{}.svc",
        infd.metadata.name.as_deref().unwrap(),
        infd.metadata.namespace.as_deref().unwrap()
    );
    assert_eq!(
        s.engine_server_name,
        spec.tls.as_ref().map(|_| service.clone())
    );
    assert_eq!(s.engine_ca_certs.is_some(), spec.tls.is_some());
    assert_eq!(s.tls.enabled(), spec.monitoring.tls.is_some());
    assert_eq!(
        s.tls.client_cert_reqs(),
        if spec.monitoring.tls.is_some() {
            candela_contract::tls::ClientCertReqs::Optional
        } else {
            candela_contract::tls::ClientCertReqs::None
        }
    );
    assert_eq!(s.lora_adapters_file.is_some(), spec.lora_adapters.is_some());
}

#[test]
fn every_example_and_snapshot_spec_builds_argv_the_engine_accepts() {
    let mut files = yaml_files(&repo().join("deploy/examples"));
    files.extend(yaml_files(&repo().join("operator/tests/data/specs")));
    assert!(files.len() >= 13, "{files:?}");
    for path in files {
        let infd = load(&path);
        let (engine, side) = containers(&infd);
        check_meaning(&infd, &serve(&engine));
        check_sidecar_meaning(&infd, &sidecar(&side));
    }
}

/// The CRD's own `model.source` rules (its `self.matches(...)` pattern, read from the
/// generated schema, and its `--`/`..` rule), so generated sources are exactly what the
/// apiserver admits: loosening the CRD widens what this test feeds the engine.
fn crd_admits_source() -> impl Fn(&String) -> bool {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(InferenceDeployment::crd()).unwrap();
    let rules = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["model"]["properties"]["source"]["x-kubernetes-validations"];
    let rule = rules[0]["rule"].as_str().unwrap();
    let pattern = rule
        .strip_prefix("self.matches('")
        .and_then(|r| r.strip_suffix("')"))
        .unwrap_or_else(|| panic!("unexpected source rule {rule}"));
    assert_eq!(
        rules[1]["rule"],
        "!self.startsWith('hf://') || !(self.contains('--') || self.contains('..'))"
    );
    let re = regex::Regex::new(pattern).unwrap();
    move |s: &String| {
        re.is_match(s) && !(s.starts_with("hf://") && (s.contains("--") || s.contains("..")))
    }
}

fn spec_strategy() -> impl Strategy<Value = serde_json::Value> {
    let source = prop_oneof![
        "[a-zA-Z0-9._-]{1,10}/[A-Za-z0-9._-]{1,18}(:[A-Za-z0-9_.-]{1,8})?"
            .prop_map(|r| format!("hf://{r}")),
        "[a-z0-9-]{1,12}/[a-z0-9/._-]{1,20}".prop_map(|p| format!("pvc://{p}")),
        "/[a-z0-9/._-]{1,20}".prop_map(|p| format!("file://{p}")),
    ]
    .prop_filter("admitted by the CRD", crd_admits_source());
    let engine = (
        proptest::option::of(1i32..=i32::MAX),
        proptest::option::of(1i32..=1 << 20),
        proptest::option::of(1i32..=1 << 20),
        proptest::option::of(prop_oneof![Just(8), Just(16), Just(32)]),
        proptest::option::of((1u32..=1000).prop_map(|p| f64::from(p) / 1000.0)),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of((0u32..=4096).prop_map(|g| f64::from(g) / 16.0)),
        proptest::option::of(prop_oneof![Just("auto"), Just("f32")]),
        proptest::option::of((0u32..=400).prop_map(|d| f64::from(d) / 100.0)),
        proptest::option::of(prop_oneof![Just("fcfs"), Just("priority")]),
        proptest::option::of("[1-9][0-9]{0,3}(Mi|Gi|M|G)"),
    );
    // LoRA (CPU engines only): limits within the CRD's rules, adapters with distinct names.
    let lora = proptest::option::of((
        proptest::option::of(1i32..=8),
        proptest::option::of(proptest::sample::select(
            candela_contract::lora::MAX_LORA_RANKS.to_vec(),
        )),
        proptest::option::of(0i32..=8),
        proptest::collection::btree_map(
            "[a-z][a-z0-9_.-]{0,12}",
            prop_oneof![
                // Within the CRD's source rule (no leading or trailing `-`).
                "[a-z0-9]{1,8}/[a-z0-9]{1,6}(-[a-z0-9]{1,6})?".prop_map(|r| format!("hf://{r}")),
                "[a-z0-9]{1,8}/[a-z0-9/_-]{1,12}".prop_map(|p| format!("pvc://{p}")),
                "/[a-z0-9/_-]{1,12}".prop_map(|p| format!("file://{p}")),
            ],
            0..4,
        ),
    ));
    // TLS from Secrets (cert-manager needs an issuer, which the operator's flag gives).
    let tls = (
        proptest::option::of("[a-z0-9]{1,12}"),
        proptest::option::of(("[a-z0-9]{1,12}", "[a-z0-9]{1,12}")),
    );
    (
        source,
        proptest::option::of("[a-z0-9][a-z0-9._/-]{0,30}"),
        proptest::option::of("[A-Za-z0-9][A-Za-z0-9._/:-]{0,40}"),
        0i32..=1,
        engine,
        lora,
        tls,
    )
        .prop_map(|(source, revision, served, gpus, e, lora, (api_tls, metrics_tls))| {
            let mut engine = serde_json::Map::new();
            let mut put = |k: &str, v: Option<serde_json::Value>| {
                if let Some(v) = v {
                    engine.insert(k.into(), v);
                }
            };
            put("maxNumSeqs", e.0.map(Into::into));
            put("maxModelLen", e.1.map(Into::into));
            // The CRD's CEL rule: maxNumBatchedTokens >= maxNumSeqs when both are set.
            put(
                "maxNumBatchedTokens",
                e.2.filter(|b| e.0.is_none_or(|s| *b >= s)).map(Into::into),
            );
            put("blockSize", e.3.map(Into::into));
            put("gpuMemoryUtilization", e.4.map(Into::into));
            put("enablePrefixCaching", e.5.map(Into::into));
            put("enableChunkedPrefill", e.6.map(Into::into));
            put("swapSpaceGiB", e.7.map(Into::into));
            put("dtype", e.8.map(Into::into));
            put("schedulerDelayFactor", e.9.map(Into::into));
            put("schedulingPolicy", e.10.map(Into::into));
            put("kvCacheMemory", e.11.map(Into::into));
            let (gpus, adapters) = match lora {
                None => (gpus, None),
                Some((max_loras, rank, extra_cpu, adapters)) => {
                    put("maxLoras", max_loras.map(Into::into));
                    put("maxLoraRank", rank.map(|r| (r as i32).into()));
                    // The CRD's CEL rule: maxCpuLoras >= maxLoras (default 1).
                    put(
                        "maxCpuLoras",
                        extra_cpu.map(|x| (max_loras.unwrap_or(1) + x).into()),
                    );
                    let list: Vec<serde_json::Value> = adapters
                        .into_iter()
                        .map(|(name, source)| serde_json::json!({"name": format!("lora-{name}"), "source": source}))
                        .collect();
                    (0, Some(list))
                }
            };
            serde_json::json!({
                "apiVersion": "candela.dev/v1alpha1",
                "kind": "InferenceDeployment",
                "metadata": {"name": "gen", "namespace": "ns", "uid": "u"},
                "spec": {
                    "model": {"source": source, "revision": revision, "servedName": served},
                    "engine": engine,
                    "resources": {"gpus": gpus},
                    "loraAdapters": adapters,
                    "tls": api_tls.map(|s| serde_json::json!({"secretName": s})),
                    "monitoring": {"tls": metrics_tls.map(|(s, c)| serde_json::json!({"secretName": s, "clientSecretName": c}))},
                }
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Any spec the CRD's schema admits builds argv the engine parses, validates and reads
    /// back as the spec's values.
    #[test]
    fn generated_specs_build_argv_the_engine_accepts(spec in spec_strategy()) {
        let infd: InferenceDeployment = serde_json::from_value(spec).unwrap();
        let (engine, side) = containers(&infd);
        check_meaning(&infd, &serve(&engine));
        check_sidecar_meaning(&infd, &sidecar(&side));
    }
}

// ---- the examples started for real with the operator's argv ----------------------------

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a pod provides itself, for a process run on this machine instead: its network
/// namespace (the fixed ports) and its volumes (the PVC and emptyDir mount paths).
struct PodStandIn {
    http: u16,
    grpc: u16,
    metrics: u16,
    models_dir: PathBuf,
    scratch: PathBuf,
}

impl PodStandIn {
    fn arg(&self, a: &str) -> String {
        a.replace("--port=8000", &format!("--port={}", self.http))
            .replace("--grpc-port=50051", &format!("--grpc-port={}", self.grpc))
            .replace("127.0.0.1:50051", &format!("127.0.0.1:{}", self.grpc))
            .replace("127.0.0.1:8000", &format!("127.0.0.1:{}", self.http))
            .replace(
                "=/etc/candela/lora/",
                &format!("={}/lora/", self.scratch.display()),
            )
            // Secret volumes (see `PodStandIn::mount_secrets`).
            .replace(
                "=/etc/candela/",
                &format!("={}/etc/candela/", self.scratch.display()),
            )
            .replace("0.0.0.0:9090", &format!("0.0.0.0:{}", self.metrics))
            .replace("=/models/", &format!("={}/", self.models_dir.display()))
            .replace("/var/cache/candela", &self.scratch.display().to_string())
    }

    /// Writes each Secret volume's files where `container` mounts it, as the kubelet would
    /// (`secrets`: name → key → content; a volume's `items` pick keys).
    fn mount_secrets(
        &self,
        pod: &k8s_openapi::api::core::v1::PodSpec,
        container: &Container,
        secrets: &BTreeMap<String, BTreeMap<String, String>>,
    ) {
        for m in container.volume_mounts.iter().flatten() {
            let Some(secret) = pod
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == m.name)
                .and_then(|v| v.secret.as_ref())
            else {
                continue;
            };
            let name = secret.secret_name.as_deref().unwrap();
            let data = secrets
                .get(name)
                .unwrap_or_else(|| panic!("the pod mounts Secret {name}, which the test lacks"));
            let dir = self.scratch.join(m.mount_path.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).unwrap();
            for (key, text) in data {
                let wanted = secret
                    .items
                    .as_ref()
                    .is_none_or(|items| items.iter().any(|i| &i.key == key));
                if wanted {
                    std::fs::write(dir.join(key), text).unwrap();
                }
            }
        }
    }

    fn command(&self, c: &Container, extra_env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(common::stack::candela_bin());
        cmd.args(c.args.iter().flatten().map(|a| self.arg(a)));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for e in c.env.iter().flatten() {
            let value = e.value.as_deref().expect("the examples set no secret env");
            cmd.env(&e.name, self.arg(value));
        }
        cmd.envs(extra_env.iter().copied());
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        cmd
    }
}

async fn wait_healthy(port: u16, path: &str, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await
            && r.status() == 200
        {
            return;
        }
        if let Ok(Some(status)) = proc.0.try_wait() {
            panic!("exited early: {status}");
        }
        assert!(Instant::now() < deadline, "{path} on {port} never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the example's engine and sidecar as the operator would start them and asks them
/// what a client and Prometheus ask.
async fn run_example(file: &str, extra_env: &[(&str, &str)], scratch: &Path) {
    let infd = load(&repo().join("deploy/examples").join(file));
    let served = infd.spec.served_name().unwrap();
    let (engine, side) = containers(&infd);
    let pod = PodStandIn {
        http: free_port(),
        grpc: free_port(),
        metrics: free_port(),
        models_dir: common::stack::model_path().parent().unwrap().to_path_buf(),
        scratch: scratch.to_path_buf(),
    };
    let mut serve = Proc(pod.command(&engine, extra_env).spawn().unwrap());
    wait_healthy(pod.http, "/health", &mut serve).await;
    let mut side_proc = Proc(pod.command(&side, &[]).spawn().unwrap());
    let client = reqwest::Client::new();
    let answer: serde_json::Value = client
        .post(format!("http://127.0.0.1:{}/v1/chat/completions", pod.http))
        .json(&serde_json::json!({
            "model": served,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 16,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(!content.trim().is_empty(), "{file}: {answer}");
    wait_healthy(pod.metrics, "/metrics", &mut side_proc).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", pod.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let label = format!("model_name=\"{served}\"");
        if text.contains("candela_sidecar_engine_up 1")
            && text
                .lines()
                .any(|l| l.starts_with("vllm:generation_tokens_total") && l.contains(&label))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{file}: sidecar metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_serve_with_the_operators_exact_arguments() {
    let scratch = std::env::temp_dir().join(format!("candela-contract-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    // The PVC example: the default GGUF where the claim would be mounted.
    run_example("smollm2-cpu.yaml", &[], &scratch.join("pvc")).await;

    // The hub example, against the local hub serving the default model as the HF
    // repository the example names (HF_ENDPOINT is what a mirror user sets in engine.env).
    let hf_dir = common::stack::model_path().with_file_name("SmolLM2-135M-Instruct-hf");
    assert!(
        hf_dir.join(".complete").exists(),
        "{} is missing: `scripts/setup.sh --test-deps` exports it",
        hf_dir.display()
    );
    let config = serde_json::json!({
        "repos": {"HuggingFaceTB/SmolLM2-135M-Instruct": {"revisions": {"main": hf_dir}}}
    });
    let hub = candela_hub::fake::FakeHub::start(&config, &scratch);
    run_example(
        "smollm2-hf.yaml",
        &[("HF_ENDPOINT", &hub.url())],
        &scratch.join("hf"),
    )
    .await;
    let cached = scratch.join("hf/hf/hub/models--HuggingFaceTB--SmolLM2-135M-Instruct/refs/main");
    assert!(
        cached.exists(),
        "the download went to the pod's cache volume (HF_HOME)"
    );
    std::fs::remove_dir_all(&scratch).ok();
}

/// The LoRA example as the operator would start it: the engine with its exact argv and env
/// (`--enable-lora`, the limits, `VLLM_ALLOW_RUNTIME_LORA_UPDATING`), the sidecar with its
/// exact argv reading the ConfigMap's exact text where the volume would put it (adapter
/// paths under the claim's mount); the sidecar loads both adapters and they serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lora_example_loads_its_adapters_with_the_operators_exact_arguments() {
    let scratch =
        std::env::temp_dir().join(format!("candela-contract-lora-{}", std::process::id()));
    let models = scratch.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let gguf = common::stack::model_path();
    std::os::unix::fs::symlink(&gguf, models.join(gguf.file_name().unwrap())).unwrap();
    common::peft::write_adapter(&models.join("loras/sql"), 1);
    common::peft::write_adapter(&models.join("loras/support"), 2);

    let infd = load(&repo().join("deploy/examples/smollm2-lora.yaml"));
    let children = builders::build(&infd, &BuildConfig::default()).unwrap();
    let (engine, side) = containers(&infd);
    let pod = PodStandIn {
        http: free_port(),
        grpc: free_port(),
        metrics: free_port(),
        models_dir: models.clone(),
        scratch: scratch.clone(),
    };
    // The ConfigMap volume: the exact text, adapter paths where the claim would be mounted.
    let cm = children
        .lora_config_map
        .expect("the example lists adapters");
    let text = &cm.data.expect("data")[builders::lora::CONFIG_MAP_KEY];
    std::fs::create_dir_all(scratch.join("lora")).unwrap();
    std::fs::write(
        scratch.join("lora").join(builders::lora::CONFIG_MAP_KEY),
        text.replace("\"/models/", &format!("\"{}/", models.display())),
    )
    .unwrap();

    let mut serve = Proc(pod.command(&engine, &[]).spawn().unwrap());
    wait_healthy(pod.http, "/health", &mut serve).await;
    let mut side_proc = Proc(pod.command(&side, &[]).spawn().unwrap());
    wait_healthy(pod.metrics, "/health", &mut side_proc).await;
    let served = infd.spec.served_name().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: serde_json::Value =
            reqwest::get(format!("http://127.0.0.1:{}/v1/models", pod.http))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let mut adapters: Vec<(String, String)> = body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c["id"].as_str()?.to_owned(),
                    c["parent"].as_str()?.to_owned(),
                ))
            })
            .collect();
        adapters.sort();
        if adapters
            == [
                ("smollm2-sql".to_owned(), served.clone()),
                ("smollm2-support".to_owned(), served.clone()),
            ]
        {
            break;
        }
        assert!(Instant::now() < deadline, "adapters never loaded: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/chat/completions", pod.http))
        .json(&serde_json::json!({
            "model": "smollm2-sql",
            "messages": [{"role": "user", "content": "List the tables."}],
            "max_tokens": 8,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", pod.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("\ncandela_sidecar_lora_in_sync 1\n"),
        "{text}"
    );
    // The sidecar's readiness probe (the operator points it at READY_PATH) passes.
    let probe = side
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .and_then(|h| h.path.clone())
        .expect("an HTTP readiness probe");
    let ready = reqwest::get(format!("http://127.0.0.1:{}{probe}", pod.metrics))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    drop(side_proc);
    drop(serve);
    std::fs::remove_dir_all(&scratch).ok();
}

/// The TLS example as the operator would start it, with the Secrets it names: the engine
/// speaks only HTTPS (the kubelet's probe path answers, plain HTTP gets no health), the
/// sidecar dials it over TLS with the CA and the Service name (the certificate does not
/// name 127.0.0.1), and Prometheus, configured exactly as the ServiceMonitor says (CA,
/// server name, client certificate Secrets), scrapes `/metrics`; without the client
/// certificate the scrape is refused while the probe path stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_example_serves_https_with_the_operators_exact_arguments() {
    let scratch = std::env::temp_dir().join(format!("candela-contract-tls-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let infd = load(&repo().join("deploy/examples/smollm2-tls.yaml"));
    let served = infd.spec.served_name().unwrap();
    let children = builders::build(&infd, &BuildConfig::default()).unwrap();
    let pod_spec = children
        .deployment
        .spec
        .clone()
        .unwrap()
        .template
        .spec
        .unwrap();
    let (engine, side) = containers(&infd);

    // The Secrets the example names, from one CA; the server certificate names the Service
    // only, as a user's certificate may.
    let service = format!(
        "smollm2-tls.{}.svc",
        infd.metadata.namespace.as_deref().unwrap()
    );
    let ca = common::certs::Ca::new("test CA");
    let leaf = ca.leaf(&[&service, "smollm2-tls"]);
    let client = ca.leaf(&["prometheus"]);
    let secret = |l: &common::certs::Leaf| {
        BTreeMap::from([
            ("tls.crt".to_owned(), l.cert.clone()),
            ("tls.key".to_owned(), l.key.clone()),
            ("ca.crt".to_owned(), ca.pem()),
        ])
    };
    let secrets = BTreeMap::from([
        ("smollm2-tls".to_owned(), secret(&leaf)),
        ("smollm2-prometheus-client".to_owned(), secret(&client)),
    ]);
    let pod = PodStandIn {
        http: free_port(),
        grpc: free_port(),
        metrics: free_port(),
        models_dir: common::stack::model_path().parent().unwrap().to_path_buf(),
        scratch: scratch.clone(),
    };
    pod.mount_secrets(&pod_spec, &engine, &secrets);
    pod.mount_secrets(&pod_spec, &side, &secrets);
    let localhost = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));

    // The engine: HTTPS for a client that trusts the CA and checks the Service name.
    let api = ca
        .client(None)
        .resolve(&service, localhost(pod.http))
        .build()
        .unwrap();
    let probe = engine
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.scheme.as_deref(), Some("HTTPS"));
    let health = format!(
        "https://{service}:{}{}",
        pod.http,
        probe.path.as_deref().unwrap()
    );
    let mut serve = Proc(pod.command(&engine, &[]).spawn().unwrap());
    wait_for_ok(&api, &health, &mut serve).await;
    let plain = reqwest::get(format!("http://127.0.0.1:{}/health", pod.http)).await;
    assert!(
        plain.as_ref().map_or(true, |r| r.status() != 200),
        "plain HTTP must not reach the engine: {plain:?}"
    );
    let answer: serde_json::Value = api
        .post(format!(
            "https://{service}:{}/v1/chat/completions",
            pod.http
        ))
        .json(&serde_json::json!({
            "model": served,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 16,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .is_empty(),
        "{answer}"
    );

    // The sidecar, scraped as the ServiceMonitor tells Prometheus to.
    let sm = children.service_monitor.expect("a ServiceMonitor");
    let endpoint = &sm.data["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    let tls = &endpoint["tlsConfig"];
    let server_name = tls["serverName"].as_str().unwrap();
    let secret_key = |sel: &serde_json::Value| {
        secrets[sel["name"].as_str().unwrap()][sel["key"].as_str().unwrap()].clone()
    };
    let prom_ca =
        reqwest::Certificate::from_pem(secret_key(&tls["ca"]["secret"]).as_bytes()).unwrap();
    let identity = reqwest::Identity::from_pem(
        format!(
            "{}{}",
            secret_key(&tls["cert"]["secret"]),
            secret_key(&tls["keySecret"])
        )
        .as_bytes(),
    )
    .unwrap();
    let scraper = |with_cert: bool| {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(prom_ca.clone())
            .resolve(server_name, localhost(pod.metrics));
        if with_cert {
            b = b.identity(identity.clone());
        }
        b.build().unwrap()
    };
    let (prometheus, anonymous) = (scraper(true), scraper(false));
    let metrics_url = format!("https://{server_name}:{}/metrics", pod.metrics);
    let mut side_proc = Proc(pod.command(&side, &[]).spawn().unwrap());
    // The probe path answers without a client certificate (the kubelet has none).
    wait_for_ok(
        &anonymous,
        &format!("https://{server_name}:{}/health", pod.metrics),
        &mut side_proc,
    )
    .await;
    let refused = anonymous.get(&metrics_url).send().await.unwrap();
    assert_eq!(
        refused.status(),
        403,
        "a scrape without a client certificate"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = prometheus
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let label = format!("model_name=\"{served}\"");
        // engine_up 1: the sidecar reached the engine's gRPC over TLS.
        if text.contains("candela_sidecar_engine_up 1")
            && text
                .lines()
                .any(|l| l.starts_with("vllm:generation_tokens_total") && l.contains(&label))
        {
            break;
        }
        assert!(Instant::now() < deadline, "sidecar metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(side_proc);
    drop(serve);
    std::fs::remove_dir_all(&scratch).ok();
}

/// Polls `url` with `client` until it answers 200 (the process must stay up).
async fn wait_for_ok(client: &reqwest::Client, url: &str, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        if let Ok(Some(status)) = proc.0.try_wait() {
            panic!("exited early: {status}");
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
