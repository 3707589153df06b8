//! Shared helpers of the server's integration tests: the real default model, a
//! live `candela serve` child process, a Prometheus exposition parser.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A local port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET over a fresh connection: `(status, body)`; `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http(port, "GET", path, None)
}

/// POST a JSON body over a fresh connection: `(status, body)`.
pub fn http_post(port: u16, path: &str, body: &str) -> Option<(u16, String)> {
    http(port, "POST", path, Some(body))
}

fn http(port: u16, method: &str, path: &str, json: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let body = json.unwrap_or_default();
    let content = match json {
        Some(b) => format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ),
        None => String::new(),
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{content}Connection: close\r\n\r\n{body}"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// `candela serve --host 127.0.0.1 --port PORT`, to add the model and flags to.
pub fn serve_command(port: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_candela"));
    cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null());
    cmd
}

/// Starts `candela serve --host 127.0.0.1 --port PORT ARGS...` (the args name the model,
/// the gRPC port and any limits) and waits up to 300 s for `/health` to answer 200;
/// panics when the server exits first. Stdout is dropped, stderr goes to `stderr`.
pub fn spawn_serve<S: AsRef<OsStr>>(
    port: u16,
    args: impl IntoIterator<Item = S>,
    stderr: Stdio,
) -> Proc {
    let mut cmd = serve_command(port);
    cmd.args(args).stderr(stderr);
    spawn_healthy(cmd, port)
}

/// Spawns `cmd` (a `candela serve` on `port`) and waits up to 300 s for `/health`.
pub fn spawn_healthy(mut cmd: Command, port: u16) -> Proc {
    let mut server = Proc(cmd.spawn().expect("spawn candela serve"));
    let deadline = Instant::now() + Duration::from_secs(300);
    while http_get(port, "/health").is_none_or(|(s, _)| s != 200) {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("candela serve exited early: {status}");
        }
        assert!(Instant::now() < deadline, "server did not become healthy");
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

/// The default model as a Hugging Face directory (two safetensors shards + index),
/// exported once into `~/.cache/candela/models/SmolLM2-135M-Instruct-hf` (what
/// `scripts/setup.sh --test-deps` also makes).
pub fn default_hf_dir() -> PathBuf {
    static EXPORT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = EXPORT.lock().unwrap_or_else(|e| e.into_inner());
    let gguf = default_model();
    let dir = gguf.with_file_name("SmolLM2-135M-Instruct-hf");
    if !dir.join(".complete").exists() {
        let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
        std::fs::remove_dir_all(&tmp).ok();
        candela_model::hf_export::gguf_to_hf_dir(&gguf, &tmp, 2).expect("export the HF directory");
        std::fs::write(tmp.join(".complete"), "").unwrap();
        std::fs::remove_dir_all(&dir).ok();
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another test process exported it first.
            std::fs::remove_dir_all(&tmp).ok();
        }
    }
    dir
}

/// The synchronous engine the batch-exactness tests drive step by step: 16-token blocks
/// (prefix caching on), up to 32 sequences, a 96-token step budget (long prompts are
/// prefilled in chunks), 512-token context; `lookahead` and `max_loras` as the scheduler
/// takes them.
#[allow(dead_code)] // not every test binary drives the engine directly
pub fn batch_engine(
    model: &candela_model::LoadedModel,
    device_blocks: usize,
    host_blocks: usize,
    lookahead: usize,
    max_loras: usize,
) -> candela::engine::EngineCore {
    use candela_core::{CacheConfig, Scheduler, SchedulerConfig, SchedulingPolicy};
    let config = SchedulerConfig {
        max_num_seqs: 32,
        max_num_batched_tokens: 96,
        max_model_len: 512,
        enable_chunked_prefill: true,
        policy: SchedulingPolicy::Fcfs,
        delay_factor: 0.0,
        max_waiting: 64,
        eos_token_ids: model.eos_token_ids.clone(),
        num_lookahead_tokens: lookahead,
        max_loras,
        max_num_seqs_per_tier: candela_core::TierCaps::default(),
    };
    let cache = CacheConfig {
        block_size: 16,
        num_device_blocks: device_blocks,
        num_host_blocks: host_blocks,
        enable_prefix_caching: true,
    };
    let runner = candela_model::ModelRunner::new(
        model.model.clone(),
        candela_model::RunnerConfig {
            num_device_blocks: device_blocks,
            num_host_blocks: host_blocks,
            block_size: 16,
        },
    );
    candela::engine::EngineCore {
        scheduler: Scheduler::new(config, cache).expect("valid test configuration"),
        runner,
    }
}

/// Eight short questions the batch tests build their prompts from.
#[allow(dead_code)] // not every test binary builds batches
pub const TOPICS: [&str; 8] = [
    "Why is the sky blue?",
    "How do bees make honey?",
    "What is a prime number?",
    "Explain photosynthesis.",
    "What causes tides?",
    "Who wrote Hamlet?",
    "What is gravity?",
    "How does a rainbow form?",
];

/// PEFT LoRA adapters `names` (comma-separated) for the default model, written into
/// `out/<name>` by the committed `scripts/make-lora-adapters.py` (rank 8, alpha 16;
/// `extra` passes more flags, e.g. `--targets q_proj,v_proj`).
#[allow(dead_code)] // not every test binary makes adapters
pub fn make_lora_adapters(out: &Path, names: &str, extra: &[&str]) -> Vec<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-lora-adapters.py");
    let config = default_hf_dir().join("config.json");
    let status = Command::new("python3")
        .arg(script)
        .args(["--config".as_ref(), config.as_os_str()])
        .args(["--out".as_ref(), out.as_os_str()])
        .args(["--names", names, "--rank", "8", "--alpha", "16"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("python3 runs scripts/make-lora-adapters.py");
    assert!(status.success(), "scripts/make-lora-adapters.py failed");
    names.split(',').map(|n| out.join(n)).collect()
}

/// The default model `scripts/setup.sh` downloads; panics with the fix when it is missing.
pub fn default_model() -> PathBuf {
    let path = candela::cli::default_model_path().expect("$HOME is set");
    assert!(
        path.exists(),
        "the default model {} is missing: run `scripts/setup.sh` first (the README's test command does)",
        path.display()
    );
    path
}

#[allow(unused_imports)] // each test binary uses a different part
pub use candela_tools::doctor::expo::{Exposition, MetricType, Sample};

/// Parses a Prometheus text exposition with the doctor's parser; panics on a bad line.
pub fn parse_exposition(text: &str) -> Exposition {
    candela_tools::doctor::expo::parse(text).unwrap_or_else(|e| panic!("exposition: {e}"))
}

/// Test lookups on a parsed exposition.
pub trait ExpositionExt {
    /// The value of the one sample named `name` whose labels include `with`.
    fn value(&self, name: &str, with: &[(&str, &str)]) -> f64;
    /// The `le` bounds of a histogram, `+Inf` excluded.
    fn bucket_bounds(&self, name: &str) -> Vec<f64>;
}

impl ExpositionExt for Exposition {
    fn value(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        let hits: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && with.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "exactly one sample {name} {with:?}, got {hits:?}"
        );
        hits[0].value
    }

    fn bucket_bounds(&self, name: &str) -> Vec<f64> {
        let bucket = format!("{name}_bucket");
        self.samples
            .iter()
            .filter(|s| s.name == bucket)
            .filter_map(|s| s.label("le").and_then(|le| le.parse::<f64>().ok()))
            .filter(|le| le.is_finite())
            .collect()
    }
}

/// The default model, loaded for the CPU.
pub fn load_default_model() -> candela_model::LoadedModel {
    candela_model::load(&default_model()).expect("load the default model")
}

/// Starts the real engine thread on `m` with a device pool of `num_blocks` blocks of 16
/// tokens (prefix caching on, no swap), chunked prefill under a 256-token budget, and
/// metrics labelled `model_name="smol"`.
pub fn spawn_engine(
    m: &candela_model::LoadedModel,
    num_blocks: usize,
    max_model_len: usize,
    max_num_seqs: usize,
    max_waiting: usize,
) -> candela::engine::EngineClient {
    use candela_core::{CacheConfig, Scheduler, SchedulerConfig, SchedulingPolicy};
    let cache = CacheConfig {
        block_size: 16,
        num_device_blocks: num_blocks,
        num_host_blocks: 0,
        enable_prefix_caching: true,
    };
    let config = SchedulerConfig {
        max_num_seqs,
        max_num_batched_tokens: 256,
        max_model_len,
        enable_chunked_prefill: true,
        policy: SchedulingPolicy::Fcfs,
        delay_factor: 0.0,
        max_waiting,
        eos_token_ids: m.eos_token_ids.clone(),
        num_lookahead_tokens: 0,
        max_loras: 0,
        max_num_seqs_per_tier: candela_core::TierCaps::default(),
    };
    let runner = candela_model::ModelRunner::new(
        m.model.clone(),
        candela_model::RunnerConfig {
            num_device_blocks: num_blocks,
            num_host_blocks: 0,
            block_size: 16,
        },
    );
    let info = candela::metrics::CacheInfo {
        block_size: cache.block_size,
        num_gpu_blocks: num_blocks,
        enable_prefix_caching: cache.enable_prefix_caching,
        cache_dtype: "auto".into(),
        ..Default::default()
    };
    let metrics = candela::metrics::EngineMetrics::new("smol", max_model_len, info);
    let scheduler = Scheduler::new(config, cache).expect("valid test configuration");
    let (client, _thread) =
        candela::engine::spawn(scheduler, runner, metrics).expect("engine thread starts");
    client
}
