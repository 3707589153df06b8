//! `candela serve`'s command line: flag names, the clap definition the engine parses with,
//! its validation, and [`ServeFlags`], the typed values the operator turns into argv.
//!
//! Flags use vLLM's spellings so manifests and muscle memory carry over; every flag also
//! reads an env var `CANDELA_<FLAG>` (the hub ones read the hub's own `HF_*` variables).
//! Flags are grouped into typed structs ([`ServerArgs`], [`ModelArgs`], [`HubArgs`],
//! [`CacheArgs`], [`SchedulerArgs`], [`LogArgs`]) that the engine's constructors take
//! whole. Parsing checks types and ranges of single values; [`ServeArgs::validate`] checks
//! what needs no model, so bad values fail at start with one line — and, because the
//! operator runs the same check on the argv it builds, before a pod exists.

use std::path::PathBuf;

use clap::{ArgAction, Args};

use crate::lora::{DEFAULT_MAX_LORA_RANK, DEFAULT_MAX_LORAS, LoraModule, MAX_LORA_RANKS};
use crate::speculative::SpeculativeConfig;
use crate::tiers::TierCap;
use crate::tls::{TlsArgs, TlsFlags};
use crate::values::{ByteSize, Device, Dtype, KvCacheDtype, SchedulingPolicy};
use crate::{env, ports};

/// Long names of the flags that cross the operator/engine boundary (without `--`).
pub mod flag {
    pub const MODEL: &str = "model";
    pub const REVISION: &str = "revision";
    pub const DOWNLOAD_DIR: &str = "download-dir";
    pub const HF_TOKEN: &str = "hf-token";
    pub const GGUF_FILE: &str = "gguf-file";
    pub const SERVED_MODEL_NAME: &str = "served-model-name";
    pub const HOST: &str = "host";
    pub const PORT: &str = "port";
    pub const GRPC_PORT: &str = "grpc-port";
    pub const API_KEY: &str = "api-key";
    pub const API_KEY_TIERS: &str = "api-key-tiers";
    pub const DEVICE: &str = "device";
    pub const DTYPE: &str = "dtype";
    pub const TENSOR_PARALLEL_SIZE: &str = "tensor-parallel-size";
    pub const THREADS: &str = "threads";
    pub const BLOCK_SIZE: &str = "block-size";
    pub const GPU_MEMORY_UTILIZATION: &str = "gpu-memory-utilization";
    pub const KV_CACHE_MEMORY: &str = "kv-cache-memory";
    pub const SWAP_SPACE: &str = "swap-space";
    pub const ENABLE_PREFIX_CACHING: &str = "enable-prefix-caching";
    pub const KV_CACHE_DTYPE: &str = "kv-cache-dtype";
    pub const MAX_MODEL_LEN: &str = "max-model-len";
    pub const MAX_NUM_SEQS: &str = "max-num-seqs";
    pub const MAX_NUM_SEQS_PER_TIER: &str = "max-num-seqs-per-tier";
    pub const MAX_NUM_BATCHED_TOKENS: &str = "max-num-batched-tokens";
    pub const ENABLE_CHUNKED_PREFILL: &str = "enable-chunked-prefill";
    pub const SCHEDULER_DELAY_FACTOR: &str = "scheduler-delay-factor";
    pub const SCHEDULING_POLICY: &str = "scheduling-policy";
    pub const MAX_WAITING: &str = "max-waiting";
    pub const DISABLE_LOG_STATS: &str = "disable-log-stats";
    pub const LOG_STATS_INTERVAL: &str = "log-stats-interval";
    pub const ENFORCE_EAGER: &str = "enforce-eager";
    pub const PROFILER_DIR: &str = "profiler-dir";
    pub const ENABLE_AUTO_TOOL_CHOICE: &str = "enable-auto-tool-choice";
    pub const TOOL_CALL_PARSER: &str = "tool-call-parser";
    pub const SPECULATIVE_CONFIG: &str = "speculative-config";
    pub const ENABLE_LORA: &str = "enable-lora";
    pub const LORA_MODULES: &str = "lora-modules";
    pub const MAX_LORAS: &str = "max-loras";
    pub const MAX_LORA_RANK: &str = "max-lora-rank";
    pub const MAX_CPU_LORAS: &str = "max-cpu-loras";
}

/// `--tool-call-parser` values: the model families whose tool-call syntax the engine
/// reads (vLLM's names).
pub const TOOL_CALL_PARSERS: [&str; 3] = ["hermes", "llama3_json", "mistral"];

/// `candela serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The model, positionally as in `vllm serve MODEL` (same as `--model`).
    #[arg(value_name = "MODEL", conflicts_with = "model")]
    pub model_tag: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    #[command(flatten)]
    pub lora: LoraArgs,
    /// TLS on the HTTP and gRPC listeners.
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Where and how the server listens.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// Address to bind.
    #[arg(long = flag::HOST, env = "CANDELA_HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// HTTP port (OpenAI API, /metrics).
    #[arg(long = flag::PORT, env = "CANDELA_PORT", default_value_t = ports::HTTP)]
    pub port: u16,
    /// gRPC port (Generate, Health, WatchStats, profiling).
    #[arg(long = flag::GRPC_PORT, env = "CANDELA_GRPC_PORT", default_value_t = ports::GRPC)]
    pub grpc_port: u16,
    /// Require `Authorization: Bearer <key>` on /v1/*.
    #[arg(long = flag::API_KEY, env = env::API_KEY, hide_env_values = true)]
    pub api_key: Option<String>,
    /// A file of `KEY TIER` lines (`flex`, `default`, `priority`; `#` comments): each key is
    /// also a valid API key, and its requests run at most at its tier — a higher
    /// `service_tier` is lowered to it, none (or `auto`) gets it.
    #[arg(long = flag::API_KEY_TIERS, env = "CANDELA_API_KEY_TIERS", value_name = "FILE")]
    pub api_key_tiers: Option<PathBuf>,
    /// Names the API accepts as `model` [default: the model's name — the file stem of a
    /// GGUF, the directory name, or `org/name` of a hub model — then `--model` as typed].
    #[arg(long = flag::SERVED_MODEL_NAME, env = "CANDELA_SERVED_MODEL_NAME", num_args = 1.., value_delimiter = ',')]
    pub served_model_name: Vec<String>,
    /// Let the model decide when to call tools (`tool_choice: "auto"`, the default when
    /// a request has `tools`); needs --tool-call-parser.
    #[arg(long = flag::ENABLE_AUTO_TOOL_CHOICE, env = "CANDELA_ENABLE_AUTO_TOOL_CHOICE")]
    pub enable_auto_tool_choice: bool,
    /// How the model writes tool calls: `hermes` (Qwen2.5, Hermes, ChatML models),
    /// `llama3_json` or `mistral`.
    #[arg(long = flag::TOOL_CALL_PARSER, env = "CANDELA_TOOL_CALL_PARSER",
          value_parser = clap::builder::PossibleValuesParser::new(TOOL_CALL_PARSERS))]
    pub tool_call_parser: Option<String>,
}

/// Which model, where it runs and in what precision.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Model")]
pub struct ModelArgs {
    /// A GGUF file, a directory with config.json, *.safetensors and tokenizer.json,
    /// `hf://org/name[:QUANT]` or `org/name[:QUANT]` (a Hugging Face Hub repository;
    /// `:QUANT` picks a GGUF file by quantization, e.g. `:Q4_K_M`)
    /// [default: ~/.cache/candela/models/SmolLM2-135M-Instruct.Q4_1.gguf].
    #[arg(long = flag::MODEL, env = "CANDELA_MODEL")]
    pub model: Option<String>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long = flag::DEVICE, env = "CANDELA_DEVICE", default_value = "cpu")]
    pub device: Device,
    /// Weight and activation precision.
    #[arg(long = flag::DTYPE, env = "CANDELA_DTYPE", value_enum, default_value_t = Dtype::Auto)]
    pub dtype: Dtype,
    /// Devices to shard the model over (only 1 is supported yet).
    #[arg(long = flag::TENSOR_PARALLEL_SIZE, env = "CANDELA_TENSOR_PARALLEL_SIZE", default_value_t = 1)]
    pub tensor_parallel_size: usize,
    /// CPU compute threads for the model, the engine thread included (llama.cpp's
    /// `-t`). Default: every available core.
    #[arg(long = flag::THREADS, env = "CANDELA_NUM_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// Where hub models come from and where they are cached.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Hugging Face Hub")]
pub struct HubArgs {
    /// Branch, tag or commit of a hub model [default: main].
    #[arg(long = flag::REVISION, env = "CANDELA_REVISION")]
    pub revision: Option<String>,
    /// Hub cache directory, in the hub's own layout (models--org--name/…) so Python tools
    /// share it [default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub].
    #[arg(long = flag::DOWNLOAD_DIR, env = "CANDELA_DOWNLOAD_DIR")]
    pub download_dir: Option<PathBuf>,
    /// Token for private or gated repositories [default: $HF_HOME/token when present].
    #[arg(long = flag::HF_TOKEN, env = env::HF_TOKEN, hide_env_values = true)]
    pub hf_token: Option<String>,
    /// The GGUF file of a hub repository to serve (instead of picking one by `:QUANT`).
    #[arg(long = flag::GGUF_FILE, env = "CANDELA_GGUF_FILE")]
    pub gguf_file: Option<String>,
}

/// The paged KV cache.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "KV cache")]
pub struct CacheArgs {
    /// Tokens per KV block.
    #[arg(long = flag::BLOCK_SIZE, env = "CANDELA_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: usize,
    /// Fraction of GPU memory for weights, activations and the KV cache.
    #[arg(long = flag::GPU_MEMORY_UTILIZATION, env = "CANDELA_GPU_MEMORY_UTILIZATION", default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// KV cache size in bytes (`512MiB`, `2GiB`, `1000000`); on CPU 4GiB when absent,
    /// on a GPU `--gpu-memory-utilization` of its memory less the weights.
    #[arg(long = flag::KV_CACHE_MEMORY, env = "CANDELA_KV_CACHE_MEMORY")]
    pub kv_cache_memory: Option<ByteSize>,
    /// GiB of host memory for the KV of swapped-out sequences (0 disables swapping).
    #[arg(long = flag::SWAP_SPACE, env = "CANDELA_SWAP_SPACE", default_value_t = 0.0)]
    pub swap_space: f64,
    /// Reuse KV blocks of shared prompt prefixes (`--no-enable-prefix-caching` turns it off).
    #[arg(
        long = flag::ENABLE_PREFIX_CACHING,
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
    #[arg(long = flag::KV_CACHE_DTYPE, env = "CANDELA_KV_CACHE_DTYPE", value_enum, default_value_t = KvCacheDtype::Auto)]
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
    #[arg(long = flag::MAX_MODEL_LEN, env = "CANDELA_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// Most sequences running at once.
    #[arg(long = flag::MAX_NUM_SEQS, env = "CANDELA_MAX_NUM_SEQS", default_value_t = 256)]
    pub max_num_seqs: usize,
    /// Most running requests of a service tier, `TIER=N` (e.g. `flex=4`); more of that
    /// tier wait (never refused) while other tiers pass them. Tiers order admission
    /// under either --scheduling-policy: priority, then default, then flex.
    #[arg(long = flag::MAX_NUM_SEQS_PER_TIER, env = "CANDELA_MAX_NUM_SEQS_PER_TIER",
          value_name = "TIER=N", num_args = 1.., value_delimiter = ',',
          value_parser = crate::tiers::parse_cap)]
    pub max_num_seqs_per_tier: Vec<TierCap>,
    /// Token budget of one engine step [default: 2048 with chunked prefill, else max-model-len].
    #[arg(long = flag::MAX_NUM_BATCHED_TOKENS, env = "CANDELA_MAX_NUM_BATCHED_TOKENS")]
    pub max_num_batched_tokens: Option<usize>,
    /// Split long prompts over several steps (`--no-enable-chunked-prefill` turns it off).
    #[arg(
        long = flag::ENABLE_CHUNKED_PREFILL,
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
    #[arg(long = flag::SCHEDULER_DELAY_FACTOR, env = "CANDELA_SCHEDULER_DELAY_FACTOR", default_value_t = 0.0)]
    pub scheduler_delay_factor: f64,
    /// Which waiting request runs first.
    #[arg(long = flag::SCHEDULING_POLICY, env = "CANDELA_SCHEDULING_POLICY", value_enum, default_value_t = SchedulingPolicy::Fcfs)]
    pub scheduling_policy: SchedulingPolicy,
    /// Most requests allowed to wait; more are refused with 503 and Retry-After.
    #[arg(long = flag::MAX_WAITING, env = "CANDELA_MAX_WAITING", default_value_t = 1024)]
    pub max_waiting: usize,
    /// Speculative decoding, as vLLM's JSON: `{"method": "ngram", "num_speculative_tokens":
    /// 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}` (drafts from the request's own
    /// context) or `{"method": "draft_model", "model": M, "num_speculative_tokens": 4}` (a
    /// smaller model with the same tokenizer).
    #[arg(long = flag::SPECULATIVE_CONFIG, env = "CANDELA_SPECULATIVE_CONFIG", value_name = "JSON",
          value_parser = crate::speculative::parse)]
    pub speculative_config: Option<SpeculativeConfig>,
}

impl SchedulerArgs {
    /// `--enable-chunked-prefill` after `--no-enable-chunked-prefill` is applied.
    pub fn enable_chunked_prefill(&self) -> bool {
        self.enable_chunked_prefill && !self.no_enable_chunked_prefill
    }
}

/// LoRA adapters (vLLM's flags).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "LoRA adapters")]
pub struct LoraArgs {
    /// Serve LoRA adapters: a request's `model` naming an adapter runs the base model
    /// with it; requests of different adapters share a batch.
    #[arg(long = flag::ENABLE_LORA, env = "CANDELA_ENABLE_LORA")]
    pub enable_lora: bool,
    /// Adapters loaded at start: `name=path` or `{"name": .., "path": ..,
    /// "base_model_name": ..}`; `path` is a PEFT directory or `hf://org/name`.
    #[arg(long = flag::LORA_MODULES, env = "CANDELA_LORA_MODULES", num_args = 1..,
          value_parser = crate::lora::parse_module)]
    pub lora_modules: Vec<LoraModule>,
    /// Most distinct adapters in one engine step; requests of other adapters wait.
    #[arg(long = flag::MAX_LORAS, env = "CANDELA_MAX_LORAS", default_value_t = DEFAULT_MAX_LORAS)]
    pub max_loras: usize,
    /// Largest adapter rank accepted (one of 1, 8, 16, 32, 64, 128, 256, 320, 512).
    #[arg(long = flag::MAX_LORA_RANK, env = "CANDELA_MAX_LORA_RANK", default_value_t = DEFAULT_MAX_LORA_RANK)]
    pub max_lora_rank: usize,
    /// Adapters kept loaded in memory; others are read from disk again when a request
    /// needs them [default: --max-loras].
    #[arg(long = flag::MAX_CPU_LORAS, env = "CANDELA_MAX_CPU_LORAS")]
    pub max_cpu_loras: Option<usize>,
}

impl LoraArgs {
    /// `--max-cpu-loras`, defaulting to `--max-loras`.
    pub fn max_cpu_loras(&self) -> usize {
        self.max_cpu_loras.unwrap_or(self.max_loras)
    }

    /// # Errors
    /// One line naming the flag.
    fn validate(&self, device: &Device) -> Result<(), String> {
        if !self.enable_lora {
            if !self.lora_modules.is_empty() {
                return Err(format!(
                    "--{} needs --{}",
                    flag::LORA_MODULES,
                    flag::ENABLE_LORA
                ));
            }
            return Ok(());
        }
        if *device != Device::Cpu {
            return Err(format!(
                "--{} runs on --device cpu only yet",
                flag::ENABLE_LORA
            ));
        }
        if self.max_loras == 0 {
            return Err(format!("--{} must be at least 1", flag::MAX_LORAS));
        }
        if !MAX_LORA_RANKS.contains(&self.max_lora_rank) {
            return Err(format!(
                "--{} must be one of {MAX_LORA_RANKS:?}, got {}",
                flag::MAX_LORA_RANK,
                self.max_lora_rank
            ));
        }
        if self.max_cpu_loras() < self.max_loras {
            return Err(format!(
                "--{} ({}) must be at least --{} ({})",
                flag::MAX_CPU_LORAS,
                self.max_cpu_loras(),
                flag::MAX_LORAS,
                self.max_loras
            ));
        }
        crate::lora::check_adapters(
            self.lora_modules
                .iter()
                .map(|m| (m.name.as_str(), m.path.as_str())),
        )
        .map_err(|e| format!("--{}: {e}", flag::LORA_MODULES))
    }
}

/// Stats logging and profiling.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging and profiling")]
pub struct LogArgs {
    /// Do not log the periodic throughput / queue / KV usage line.
    #[arg(long = flag::DISABLE_LOG_STATS, env = "CANDELA_DISABLE_LOG_STATS")]
    pub disable_log_stats: bool,
    /// Seconds between stats lines.
    #[arg(long = flag::LOG_STATS_INTERVAL, env = "CANDELA_LOG_STATS_INTERVAL", default_value_t = 10.0)]
    pub log_stats_interval: f64,
    /// Accepted for vLLM compatibility: Candela always runs eagerly (no graph capture).
    #[arg(long = flag::ENFORCE_EAGER, env = "CANDELA_ENFORCE_EAGER")]
    pub enforce_eager: bool,
    /// Where /start_profile … /stop_profile writes Chrome traces (also `VLLM_TORCH_PROFILER_DIR`).
    #[arg(long = flag::PROFILER_DIR, env = env::PROFILER_DIR)]
    profiler_dir: Option<PathBuf>,
}

impl LogArgs {
    /// `--profiler-dir`, else `CANDELA_PROFILER_DIR`, else `VLLM_TORCH_PROFILER_DIR`.
    pub fn profiler_dir(&self) -> Option<PathBuf> {
        self.profiler_dir.clone().or_else(|| {
            std::env::var_os(env::VLLM_PROFILER_DIR)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }
}

impl ServeArgs {
    /// The `--model` value as typed (positional or flag), if any.
    pub fn model_value(&self) -> Option<&str> {
        self.model_tag.as_deref().or(self.model.model.as_deref())
    }

    /// Checks the values that need no model (the KV pool fit is checked once it is sized).
    ///
    /// # Errors
    /// One line naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        match (
            self.server.enable_auto_tool_choice,
            &self.server.tool_call_parser,
        ) {
            (true, None) => {
                return Err(format!(
                    "--{} needs --{} (one of {})",
                    flag::ENABLE_AUTO_TOOL_CHOICE,
                    flag::TOOL_CALL_PARSER,
                    TOOL_CALL_PARSERS.join(", ")
                ));
            }
            (false, Some(_)) => {
                return Err(format!(
                    "--{} is only read with --{}",
                    flag::TOOL_CALL_PARSER,
                    flag::ENABLE_AUTO_TOOL_CHOICE
                ));
            }
            _ => {}
        }
        if matches!(
            self.scheduler.speculative_config,
            Some(SpeculativeConfig::DraftModel { .. })
        ) && self.model.device != Device::Cpu
        {
            return Err(format!(
                "--{}: the draft_model method runs on --device cpu only yet; use the ngram method on GPUs",
                flag::SPECULATIVE_CONFIG
            ));
        }
        self.lora.validate(&self.model.device)?;
        self.tls.validate()?;
        if self.model.tensor_parallel_size != 1 {
            return Err(format!(
                "--{} {} is not supported yet; only 1 is",
                flag::TENSOR_PARALLEL_SIZE,
                self.model.tensor_parallel_size
            ));
        }
        if matches!(self.model.dtype, Dtype::Bf16 | Dtype::F16) {
            return Err(format!(
                "--{} {} is not supported yet: Candela computes in f32 (GGUF weights stay quantized); use auto or f32",
                flag::DTYPE,
                self.model.dtype
            ));
        }
        if let Some(model) = self.model_value()
            && let Some(rest) = model.strip_prefix(crate::model_ref::HUB_SCHEME)
        {
            crate::HubRef::parse(rest)?;
        }
        let c = &self.cache;
        if c.block_size == 0 || !c.block_size.is_power_of_two() || c.block_size > 256 {
            return Err(format!(
                "--{} must be a power of two up to 256, got {}",
                flag::BLOCK_SIZE,
                c.block_size
            ));
        }
        if !(c.gpu_memory_utilization > 0.0 && c.gpu_memory_utilization <= 1.0) {
            return Err(format!(
                "--{} must be in (0, 1], got {}",
                flag::GPU_MEMORY_UTILIZATION,
                c.gpu_memory_utilization
            ));
        }
        if !(c.swap_space >= 0.0 && c.swap_space.is_finite()) {
            return Err(format!(
                "--{} must be >= 0 GiB, got {}",
                flag::SWAP_SPACE,
                c.swap_space
            ));
        }
        if matches!(c.kv_cache_memory, Some(ByteSize(0))) {
            return Err(format!("--{} must be larger than 0", flag::KV_CACHE_MEMORY));
        }
        if c.kv_cache_dtype == KvCacheDtype::Fp8 {
            return Err(format!(
                "--{} fp8 is not supported yet (the KV cache is f16 on CPU, f32 on a GPU); use auto",
                flag::KV_CACHE_DTYPE
            ));
        }
        let s = &self.scheduler;
        if s.max_model_len == Some(0) {
            return Err(format!("--{} must be at least 1", flag::MAX_MODEL_LEN));
        }
        if s.max_num_seqs == 0 {
            return Err(format!("--{} must be at least 1", flag::MAX_NUM_SEQS));
        }
        crate::tiers::check_caps(&s.max_num_seqs_per_tier)
            .map_err(|e| format!("--{}: {e}", flag::MAX_NUM_SEQS_PER_TIER))?;
        if s.max_num_batched_tokens == Some(0) {
            return Err(format!(
                "--{} must be at least 1",
                flag::MAX_NUM_BATCHED_TOKENS
            ));
        }
        if !(s.scheduler_delay_factor >= 0.0 && s.scheduler_delay_factor.is_finite()) {
            return Err(format!(
                "--{} must be >= 0, got {}",
                flag::SCHEDULER_DELAY_FACTOR,
                s.scheduler_delay_factor
            ));
        }
        if !(self.log.log_stats_interval > 0.0 && self.log.log_stats_interval.is_finite()) {
            return Err(format!(
                "--{} must be > 0 seconds, got {}",
                flag::LOG_STATS_INTERVAL,
                self.log.log_stats_interval
            ));
        }
        if self
            .server
            .served_model_name
            .iter()
            .any(|n| n.trim().is_empty())
        {
            return Err(format!("--{} must not be empty", flag::SERVED_MODEL_NAME));
        }
        Ok(())
    }
}

/// The `candela serve` settings the operator derives from an InferenceDeployment, as typed
/// values. [`ServeFlags::to_args`] writes them as argv; unset fields are left out so the
/// engine's defaults apply. A property test parses every such argv back with
/// [`ServeArgs`] and compares field by field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServeFlags {
    /// `--model`: a path or a hub reference (`hf://org/name[:QUANT]`).
    pub model: String,
    pub revision: Option<String>,
    pub served_model_name: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub grpc_port: Option<u16>,
    pub device: Option<Device>,
    pub dtype: Option<Dtype>,
    pub max_model_len: Option<usize>,
    pub max_num_seqs: Option<usize>,
    /// `--max-num-seqs-per-tier`, one flag per capped tier.
    pub max_num_seqs_per_tier: Vec<TierCap>,
    /// `--api-key-tiers`: the path of the `KEY TIER` file (a mounted Secret).
    pub api_key_tiers: Option<PathBuf>,
    pub max_num_batched_tokens: Option<usize>,
    pub block_size: Option<usize>,
    pub gpu_memory_utilization: Option<f64>,
    pub kv_cache_memory: Option<ByteSize>,
    pub swap_space: Option<f64>,
    pub kv_cache_dtype: Option<KvCacheDtype>,
    pub scheduler_delay_factor: Option<f64>,
    pub scheduling_policy: Option<SchedulingPolicy>,
    pub enable_prefix_caching: Option<bool>,
    pub enable_chunked_prefill: Option<bool>,
    /// `--enable-lora`, with `--lora-modules` (one flag per adapter) and the limits.
    pub enable_lora: bool,
    pub lora_modules: Vec<LoraModule>,
    pub max_loras: Option<usize>,
    pub max_lora_rank: Option<usize>,
    pub max_cpu_loras: Option<usize>,
    /// `--ssl-*`: TLS on the HTTP and gRPC listeners.
    pub tls: TlsFlags,
    /// Appended verbatim after the generated flags (the user's `extraArgs`).
    pub extra: Vec<String>,
}

impl ServeFlags {
    /// The argv of the engine container: `serve` followed by the set flags as
    /// `--flag=value`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["serve".to_owned()];
        let mut push = |name: &str, value: Option<String>| {
            // `--flag=value`, so a value that starts with `-` stays a value.
            if let Some(value) = value {
                args.push(format!("--{name}={value}"));
            }
        };
        push(flag::MODEL, Some(self.model.clone()));
        push(flag::REVISION, self.revision.clone());
        push(flag::SERVED_MODEL_NAME, self.served_model_name.clone());
        push(flag::HOST, self.host.clone());
        push(flag::PORT, s(&self.port));
        push(flag::GRPC_PORT, s(&self.grpc_port));
        push(flag::DEVICE, s(&self.device));
        push(flag::DTYPE, s(&self.dtype));
        push(flag::MAX_MODEL_LEN, s(&self.max_model_len));
        push(flag::MAX_NUM_SEQS, s(&self.max_num_seqs));
        for cap in &self.max_num_seqs_per_tier {
            push(flag::MAX_NUM_SEQS_PER_TIER, Some(cap.to_string()));
        }
        push(
            flag::API_KEY_TIERS,
            self.api_key_tiers.as_ref().map(|p| p.display().to_string()),
        );
        push(
            flag::MAX_NUM_BATCHED_TOKENS,
            s(&self.max_num_batched_tokens),
        );
        push(flag::BLOCK_SIZE, s(&self.block_size));
        push(
            flag::GPU_MEMORY_UTILIZATION,
            s(&self.gpu_memory_utilization),
        );
        push(flag::KV_CACHE_MEMORY, s(&self.kv_cache_memory));
        push(flag::SWAP_SPACE, s(&self.swap_space));
        push(flag::KV_CACHE_DTYPE, s(&self.kv_cache_dtype));
        push(
            flag::SCHEDULER_DELAY_FACTOR,
            s(&self.scheduler_delay_factor),
        );
        push(flag::SCHEDULING_POLICY, s(&self.scheduling_policy));
        // Boolean flags use vLLM's spelling: `--flag` / `--no-flag`.
        for (name, value) in [
            (flag::ENABLE_PREFIX_CACHING, self.enable_prefix_caching),
            (flag::ENABLE_CHUNKED_PREFILL, self.enable_chunked_prefill),
        ] {
            match value {
                Some(true) => args.push(format!("--{name}")),
                Some(false) => args.push(format!("--no-{name}")),
                None => {}
            }
        }
        if self.enable_lora {
            args.push(format!("--{}", flag::ENABLE_LORA));
        }
        for m in &self.lora_modules {
            args.push(format!("--{}={m}", flag::LORA_MODULES));
        }
        for (name, value) in [
            (flag::MAX_LORAS, self.max_loras),
            (flag::MAX_LORA_RANK, self.max_lora_rank),
            (flag::MAX_CPU_LORAS, self.max_cpu_loras),
        ] {
            if let Some(v) = value {
                args.push(format!("--{name}={v}"));
            }
        }
        self.tls.push_args(&mut args);
        args.extend(self.extra.iter().cloned());
        args
    }
}

fn s<T: ToString>(value: &Option<T>) -> Option<String> {
    value.as_ref().map(ToString::to_string)
}

#[cfg(test)]
mod tests;
