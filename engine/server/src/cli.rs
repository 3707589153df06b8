//! Command line of the `candela` binary (clap derive).
//!
//! `candela serve` takes vLLM's flag spellings so existing manifests and muscle
//! memory carry over; every flag also reads an env var `CANDELA_<FLAG>`. Flags are
//! grouped into typed structs ([`ServerArgs`], [`ModelArgs`], [`CacheArgs`],
//! [`SchedulerArgs`], [`LogArgs`]) that constructors take whole. Parsing checks
//! types and ranges of single values; [`ServeArgs::validate`] checks the rest that
//! needs no model, so bad values fail at start with one line.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

pub use candela_model::{DEFAULT_MODEL_FILE, default_model_path};

/// vLLM's env var for the profiler output directory, honoured as a fallback.
const VLLM_PROFILER_DIR_ENV: &str = "VLLM_TORCH_PROFILER_DIR";

/// Candela: an OpenAI-compatible LLM inference server on candle.
#[derive(Debug, Parser)]
#[command(name = "candela", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a model over the OpenAI HTTP API.
    Serve(ServeArgs),
    /// Relay the engine's metrics (gRPC WatchStats) with device metrics on a secured /metrics.
    Sidecar(crate::sidecar::SidecarArgs),
    /// Benchmarks against any OpenAI-compatible server (`bench serve`: vLLM's serving benchmark).
    #[command(subcommand)]
    Bench(candela_tools::bench::BenchCommand),
    /// KV-cache capacity plan: pool tokens, concurrency, recommended --max-num-seqs.
    Plan(candela_tools::plan::PlanArgs),
    /// Read a server's metrics over a window and name the causes of its symptoms.
    Doctor(candela_tools::doctor::DoctorArgs),
}

/// `candela serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The model, positionally as in `vllm serve MODEL` (same as `--model`).
    #[arg(value_name = "MODEL", conflicts_with = "model")]
    pub model_tag: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Where and how the server listens.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// Address to bind.
    #[arg(long, env = "CANDELA_HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// HTTP port (OpenAI API, /metrics).
    #[arg(long, env = "CANDELA_PORT", default_value_t = 8000)]
    pub port: u16,
    /// gRPC port (Generate, Health, WatchStats, profiling).
    #[arg(long, env = "CANDELA_GRPC_PORT", default_value_t = 50051)]
    pub grpc_port: u16,
    /// Require `Authorization: Bearer <key>` on /v1/*.
    #[arg(long, env = "CANDELA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Names the API accepts as `model` (default: the model file's stem).
    #[arg(long, env = "CANDELA_SERVED_MODEL_NAME", num_args = 1.., value_delimiter = ',')]
    pub served_model_name: Vec<String>,
}

/// Which model, where it runs and in what precision.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Model")]
pub struct ModelArgs {
    /// A GGUF file, or a directory with config.json, *.safetensors and tokenizer.json
    /// [default: ~/.cache/candela/models/SmolLM2-135M-Instruct.Q4_1.gguf].
    #[arg(long, env = "CANDELA_MODEL")]
    pub model: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "CANDELA_DEVICE", default_value = "cpu")]
    pub device: Device,
    /// Weight and activation precision.
    #[arg(long, env = "CANDELA_DTYPE", value_enum, default_value_t = Dtype::Auto)]
    pub dtype: Dtype,
    /// Devices to shard the model over (only 1 is supported yet).
    #[arg(long, env = "CANDELA_TENSOR_PARALLEL_SIZE", default_value_t = 1)]
    pub tensor_parallel_size: usize,
    /// CPU compute threads for the model, the engine thread included (llama.cpp's
    /// `-t`). Default: every available core.
    #[arg(long, env = "CANDELA_NUM_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// The paged KV cache.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "KV cache")]
pub struct CacheArgs {
    /// Tokens per KV block.
    #[arg(long, env = "CANDELA_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: usize,
    /// Fraction of GPU memory for weights, activations and the KV cache.
    #[arg(long, env = "CANDELA_GPU_MEMORY_UTILIZATION", default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// KV cache size in bytes (`512MiB`, `2GiB`, `1000000`); on CPU 4GiB when absent,
    /// on a GPU `--gpu-memory-utilization` of its memory less the weights.
    #[arg(long, env = "CANDELA_KV_CACHE_MEMORY")]
    pub kv_cache_memory: Option<ByteSize>,
    /// GiB of host memory for the KV of swapped-out sequences (0 disables swapping).
    #[arg(long, env = "CANDELA_SWAP_SPACE", default_value_t = 0.0)]
    pub swap_space: f64,
    /// Reuse KV blocks of shared prompt prefixes (`--no-enable-prefix-caching` turns it off).
    #[arg(
        long,
        env = "CANDELA_ENABLE_PREFIX_CACHING",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = true,
        default_missing_value = "true",
        value_name = "BOOL",
        overrides_with = "no_enable_prefix_caching"
    )]
    enable_prefix_caching: bool,
    #[arg(long, hide = true, overrides_with = "enable_prefix_caching")]
    no_enable_prefix_caching: bool,
    /// KV cache element type.
    #[arg(long, env = "CANDELA_KV_CACHE_DTYPE", value_enum, default_value_t = KvCacheDtype::Auto)]
    pub kv_cache_dtype: KvCacheDtype,
}

impl CacheArgs {
    /// `--enable-prefix-caching` after `--no-enable-prefix-caching` is applied.
    pub fn enable_prefix_caching(&self) -> bool {
        self.enable_prefix_caching && !self.no_enable_prefix_caching
    }
}

/// Continuous batching limits.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Scheduler")]
pub struct SchedulerArgs {
    /// Longest sequence, prompt plus output [default: the model's context length].
    #[arg(long, env = "CANDELA_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// Most sequences running at once.
    #[arg(long, env = "CANDELA_MAX_NUM_SEQS", default_value_t = 256)]
    pub max_num_seqs: usize,
    /// Token budget of one engine step [default: 2048 with chunked prefill, else max-model-len].
    #[arg(long, env = "CANDELA_MAX_NUM_BATCHED_TOKENS")]
    pub max_num_batched_tokens: Option<usize>,
    /// Split long prompts over several steps (`--no-enable-chunked-prefill` turns it off).
    #[arg(
        long,
        env = "CANDELA_ENABLE_CHUNKED_PREFILL",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = true,
        default_missing_value = "true",
        value_name = "BOOL",
        overrides_with = "no_enable_chunked_prefill"
    )]
    enable_chunked_prefill: bool,
    #[arg(long, hide = true, overrides_with = "enable_chunked_prefill")]
    no_enable_chunked_prefill: bool,
    /// Hold new prompts until the oldest waited this fraction of the last prompt step.
    #[arg(long, env = "CANDELA_SCHEDULER_DELAY_FACTOR", default_value_t = 0.0)]
    pub scheduler_delay_factor: f64,
    /// Which waiting request runs first.
    #[arg(long, env = "CANDELA_SCHEDULING_POLICY", value_enum, default_value_t = SchedulingPolicyArg::Fcfs)]
    pub scheduling_policy: SchedulingPolicyArg,
    /// Most requests allowed to wait; more are refused with 503 and Retry-After.
    #[arg(long, env = "CANDELA_MAX_WAITING", default_value_t = 1024)]
    pub max_waiting: usize,
}

impl SchedulerArgs {
    /// `--enable-chunked-prefill` after `--no-enable-chunked-prefill` is applied.
    pub fn enable_chunked_prefill(&self) -> bool {
        self.enable_chunked_prefill && !self.no_enable_chunked_prefill
    }
}

/// Stats logging and profiling.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging and profiling")]
pub struct LogArgs {
    /// Do not log the periodic throughput / queue / KV usage line.
    #[arg(long, env = "CANDELA_DISABLE_LOG_STATS")]
    pub disable_log_stats: bool,
    /// Seconds between stats lines.
    #[arg(long, env = "CANDELA_LOG_STATS_INTERVAL", default_value_t = 10.0)]
    pub log_stats_interval: f64,
    /// Accepted for vLLM compatibility (candle has no graph capture to disable).
    #[arg(long, env = "CANDELA_ENFORCE_EAGER")]
    pub enforce_eager: bool,
    /// Where /start_profile … /stop_profile writes Chrome traces (also `VLLM_TORCH_PROFILER_DIR`).
    #[arg(long, env = "CANDELA_PROFILER_DIR")]
    profiler_dir: Option<PathBuf>,
}

impl LogArgs {
    /// `--profiler-dir`, else `CANDELA_PROFILER_DIR`, else `VLLM_TORCH_PROFILER_DIR`.
    pub fn profiler_dir(&self) -> Option<PathBuf> {
        self.profiler_dir.clone().or_else(|| {
            std::env::var_os(VLLM_PROFILER_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }
}

impl ServeArgs {
    /// The model path: positional, `--model`, or the default one `scripts/setup.sh` fetches.
    ///
    /// # Errors
    /// One line naming the missing path (and `scripts/setup.sh` for the default).
    pub fn model_path(&self) -> Result<PathBuf, String> {
        match self.model_tag.as_ref().or(self.model.model.as_ref()) {
            Some(path) if path.exists() => Ok(path.clone()),
            Some(path) => Err(format!("model not found: {}", path.display())),
            None => {
                let path = default_model_path()
                    .ok_or("no --model given and $HOME is not set to find the default model")?;
                if path.exists() {
                    Ok(path)
                } else {
                    Err(format!(
                        "no --model given and the default model {} is missing; run `scripts/setup.sh` to download it",
                        path.display()
                    ))
                }
            }
        }
    }

    /// Names the API answers to: `--served-model-name` values, else the model file's
    /// stem followed by the model argument as typed (vLLM's default, so clients that
    /// send the path keep working).
    pub fn served_model_names(&self, model_path: &std::path::Path) -> Vec<String> {
        if !self.server.served_model_name.is_empty() {
            return self.server.served_model_name.clone();
        }
        let stem = model_path
            .file_stem()
            .filter(|_| model_path.extension().is_some_and(|e| e == "gguf"))
            .or_else(|| model_path.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| model_path.display().to_string());
        let mut names = vec![stem];
        if let Some(typed) = self.model_tag.as_ref().or(self.model.model.as_ref()) {
            let typed = typed.display().to_string();
            if !names.contains(&typed) {
                names.push(typed);
            }
        }
        names
    }

    /// Checks the values that need no model (the KV pool fit is checked once it is sized).
    ///
    /// # Errors
    /// One line naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.model.tensor_parallel_size != 1 {
            return Err(format!(
                "--tensor-parallel-size {} is not supported yet; only 1 is",
                self.model.tensor_parallel_size
            ));
        }
        let c = &self.cache;
        if c.block_size == 0 || !c.block_size.is_power_of_two() || c.block_size > 256 {
            return Err(format!(
                "--block-size must be a power of two up to 256, got {}",
                c.block_size
            ));
        }
        if !(c.gpu_memory_utilization > 0.0 && c.gpu_memory_utilization <= 1.0) {
            return Err(format!(
                "--gpu-memory-utilization must be in (0, 1], got {}",
                c.gpu_memory_utilization
            ));
        }
        if !(c.swap_space >= 0.0 && c.swap_space.is_finite()) {
            return Err(format!(
                "--swap-space must be >= 0 GiB, got {}",
                c.swap_space
            ));
        }
        if matches!(c.kv_cache_memory, Some(ByteSize(0))) {
            return Err("--kv-cache-memory must be larger than 0".into());
        }
        let s = &self.scheduler;
        if s.max_model_len == Some(0) {
            return Err("--max-model-len must be at least 1".into());
        }
        if s.max_num_seqs == 0 {
            return Err("--max-num-seqs must be at least 1".into());
        }
        if s.max_num_batched_tokens == Some(0) {
            return Err("--max-num-batched-tokens must be at least 1".into());
        }
        if !(s.scheduler_delay_factor >= 0.0 && s.scheduler_delay_factor.is_finite()) {
            return Err(format!(
                "--scheduler-delay-factor must be >= 0, got {}",
                s.scheduler_delay_factor
            ));
        }
        if !(self.log.log_stats_interval > 0.0 && self.log.log_stats_interval.is_finite()) {
            return Err(format!(
                "--log-stats-interval must be > 0 seconds, got {}",
                self.log.log_stats_interval
            ));
        }
        if self
            .server
            .served_model_name
            .iter()
            .any(|n| n.trim().is_empty())
        {
            return Err("--served-model-name must not be empty".into());
        }
        Ok(())
    }
}

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// CUDA device ordinal.
    Cuda(usize),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("expected cpu, cuda or cuda:N, got `{s}`")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// f32 on CPU, bf16 on GPU (quantized GGUF weights stay quantized).
    Auto,
    F32,
    Bf16,
    F16,
}

/// `--kv-cache-dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KvCacheDtype {
    /// The model's activation dtype.
    Auto,
    /// 8-bit floats where the device supports them.
    Fp8,
}

/// `--scheduling-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchedulingPolicyArg {
    Fcfs,
    Priority,
}

impl From<SchedulingPolicyArg> for candela_core::SchedulingPolicy {
    fn from(p: SchedulingPolicyArg) -> Self {
        match p {
            SchedulingPolicyArg::Fcfs => candela_core::SchedulingPolicy::Fcfs,
            SchedulingPolicyArg::Priority => candela_core::SchedulingPolicy::Priority,
        }
    }
}

/// A size in bytes, written plain (`1048576`) or with a unit: `K`/`KB` = 1000,
/// `KiB` = 1024, and so on up to `T`/`TB`/`TiB`; decimals allowed (`1.5GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        let multiplier: u64 = match unit.as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "ki" | "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mi" | "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gi" | "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "ti" | "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "unknown size unit in `{s}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
                ));
            }
        };
        let bad = || format!("expected a size like 512MiB or 2GiB, got `{s}`");
        if number.is_empty() {
            return Err(bad());
        }
        if let Ok(n) = number.parse::<u64>() {
            return n.checked_mul(multiplier).map(ByteSize).ok_or_else(bad);
        }
        let x: f64 = number.parse().map_err(|_| bad())?;
        let bytes = (x * multiplier as f64).round();
        if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
            return Err(bad());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = ["candela", "serve"].iter().chain(args).copied();
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Serve(s) => s,
            other => panic!("parsed `serve` as {other:?}"),
        })
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_vllm() {
        let a = serve(&[]).unwrap();
        assert_eq!(a.server.port, 8000);
        assert_eq!(a.server.grpc_port, 50051);
        assert_eq!(a.cache.block_size, 16);
        assert_eq!(a.cache.gpu_memory_utilization, 0.9);
        assert!(a.cache.enable_prefix_caching());
        assert!(a.scheduler.enable_chunked_prefill());
        assert_eq!(a.scheduler.scheduling_policy, SchedulingPolicyArg::Fcfs);
        assert_eq!(a.scheduler.max_waiting, 1024);
        assert_eq!(a.log.log_stats_interval, 10.0);
        assert_eq!(a.model.device, Device::Cpu);
        assert_eq!(a.model.tensor_parallel_size, 1);
        assert!(a.validate().is_ok());
    }

    #[test]
    fn every_flag_parses() {
        let a = serve(&[
            "--model",
            "/m.gguf",
            "--served-model-name",
            "a",
            "b",
            "--host",
            "127.0.0.1",
            "--port",
            "9000",
            "--grpc-port",
            "9001",
            "--api-key",
            "k",
            "--device",
            "cuda:1",
            "--dtype",
            "bf16",
            "--tensor-parallel-size",
            "1",
            "--max-model-len",
            "4096",
            "--max-num-seqs",
            "8",
            "--max-num-batched-tokens",
            "512",
            "--block-size",
            "32",
            "--gpu-memory-utilization",
            "0.5",
            "--kv-cache-memory",
            "512MiB",
            "--swap-space",
            "2",
            "--no-enable-prefix-caching",
            "--no-enable-chunked-prefill",
            "--scheduler-delay-factor",
            "0.5",
            "--scheduling-policy",
            "priority",
            "--max-waiting",
            "7",
            "--kv-cache-dtype",
            "fp8",
            "--enforce-eager",
            "--disable-log-stats",
            "--log-stats-interval",
            "2.5",
            "--profiler-dir",
            "/tmp/p",
        ])
        .unwrap();
        assert_eq!(
            a.model.model.as_deref(),
            Some(std::path::Path::new("/m.gguf"))
        );
        assert_eq!(a.server.served_model_name, vec!["a", "b"]);
        assert_eq!(a.server.api_key.as_deref(), Some("k"));
        assert_eq!(a.model.device, Device::Cuda(1));
        assert_eq!(a.model.dtype, Dtype::Bf16);
        assert_eq!(a.scheduler.max_model_len, Some(4096));
        assert_eq!(a.cache.kv_cache_memory, Some(ByteSize(512 << 20)));
        assert!(!a.cache.enable_prefix_caching());
        assert!(!a.scheduler.enable_chunked_prefill());
        assert_eq!(a.scheduler.scheduling_policy, SchedulingPolicyArg::Priority);
        assert_eq!(
            candela_core::SchedulingPolicy::from(a.scheduler.scheduling_policy),
            candela_core::SchedulingPolicy::Priority
        );
        assert_eq!(a.cache.kv_cache_dtype, KvCacheDtype::Fp8);
        assert!(a.log.enforce_eager && a.log.disable_log_stats);
        assert_eq!(a.log.profiler_dir(), Some(PathBuf::from("/tmp/p")));
        assert!(a.validate().is_ok());
    }

    #[test]
    fn boolean_flags_take_both_spellings_last_wins() {
        let a = serve(&["--enable-prefix-caching"]).unwrap();
        assert!(a.cache.enable_prefix_caching());
        let a = serve(&["--enable-prefix-caching=false"]).unwrap();
        assert!(!a.cache.enable_prefix_caching());
        let a = serve(&["--no-enable-prefix-caching", "--enable-prefix-caching"]).unwrap();
        assert!(a.cache.enable_prefix_caching());
        let a = serve(&["--enable-chunked-prefill", "--no-enable-chunked-prefill"]).unwrap();
        assert!(!a.scheduler.enable_chunked_prefill());
    }

    #[test]
    fn positional_model_like_vllm_serve() {
        let a = serve(&["/models/x.gguf"]).unwrap();
        assert_eq!(a.model_tag, Some(PathBuf::from("/models/x.gguf")));
        assert!(serve(&["/a.gguf", "--model", "/b.gguf"]).is_err());
        let err = a.model_path().unwrap_err();
        assert!(err.contains("/models/x.gguf"), "{err}");
    }

    #[test]
    fn served_model_names_default_to_stem_and_typed_path() {
        let p = std::path::Path::new("/m/SmolLM2.Q4_1.gguf");
        let a = serve(&["--model", "/m/SmolLM2.Q4_1.gguf"]).unwrap();
        assert_eq!(
            a.served_model_names(p),
            vec!["SmolLM2.Q4_1", "/m/SmolLM2.Q4_1.gguf"]
        );
        let a = serve(&[]).unwrap();
        assert_eq!(a.served_model_names(p), vec!["SmolLM2.Q4_1"]);
        let a = serve(&["--served-model-name", "smol,tiny"]).unwrap();
        assert_eq!(a.served_model_names(p), vec!["smol", "tiny"]);
        let dir = std::path::Path::new("/models/Qwen2-0.5B");
        let a = serve(&["/models/Qwen2-0.5B"]).unwrap();
        assert_eq!(
            a.served_model_names(dir),
            vec!["Qwen2-0.5B", "/models/Qwen2-0.5B"]
        );
    }

    #[test]
    fn default_model_path_and_its_error() {
        let path = default_model_path().unwrap();
        assert!(path.ends_with(".cache/candela/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
        let a = serve(&[]).unwrap();
        match a.model_path() {
            Ok(p) => assert_eq!(p, path),
            Err(e) => assert!(e.contains("scripts/setup.sh"), "{e}"),
        }
    }

    #[test]
    fn bad_values_fail_parsing_or_validation() {
        assert!(serve(&["--port", "70000"]).is_err());
        assert!(serve(&["--device", "tpu"]).is_err());
        assert!(serve(&["--dtype", "int3"]).is_err());
        assert!(serve(&["--scheduling-policy", "lifo"]).is_err());
        assert!(serve(&["--kv-cache-memory", "lots"]).is_err());
        assert!(serve(&["--max-num-seqs", "-1"]).is_err());
        let tp = serve(&["--tensor-parallel-size", "2"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(tp.contains("--tensor-parallel-size"), "{tp}");
        for (flag, value) in [
            ("--block-size", "12"),
            ("--gpu-memory-utilization", "1.5"),
            ("--max-num-seqs", "0"),
            ("--max-model-len", "0"),
            ("--swap-space=-1", ""),
            ("--log-stats-interval", "0"),
            ("--kv-cache-memory", "0"),
        ] {
            let args: Vec<&str> = [flag, value]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect();
            let e = serve(&args).unwrap().validate().unwrap_err();
            let name = flag.split('=').next().unwrap();
            assert!(e.contains(name), "{flag}: {e}");
        }
    }

    #[test]
    fn profiler_dir_falls_back_to_vllm_env() {
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var(VLLM_PROFILER_DIR_ENV, "/tmp/vllm-prof") };
        let a = serve(&[]).unwrap();
        assert_eq!(a.log.profiler_dir(), Some(PathBuf::from("/tmp/vllm-prof")));
        let a = serve(&["--profiler-dir", "/tmp/mine"]).unwrap();
        assert_eq!(a.log.profiler_dir(), Some(PathBuf::from("/tmp/mine")));
    }

    #[test]
    fn byte_sizes() {
        let p = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(p("1000"), Ok(1000));
        assert_eq!(p("512MiB"), Ok(512 << 20));
        assert_eq!(p("2GiB"), Ok(2 << 30));
        assert_eq!(p("2gib"), Ok(2 << 30));
        assert_eq!(p("1.5 GiB"), Ok(3 << 29));
        assert_eq!(p("4G"), Ok(4_000_000_000));
        assert_eq!(p("10KB"), Ok(10_000));
        assert_eq!(p("1Ti"), Ok(1 << 40));
        assert!(p("").is_err());
        assert!(p("GiB").is_err());
        assert!(p("12 parsecs").is_err());
        assert!(p("-1GiB").is_err());
        assert!(p("99999999999TiB").is_err());
    }

    #[test]
    fn devices() {
        assert_eq!("cpu".parse(), Ok(Device::Cpu));
        assert_eq!("CUDA".parse(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(Device::Cuda(3)));
        assert!("cuda:x".parse::<Device>().is_err());
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }
}
