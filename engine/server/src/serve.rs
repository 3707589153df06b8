//! `candela serve`: resolve the model (a local path or a Hugging Face Hub repository,
//! downloaded into the hub cache), load it, size the KV pools, start the engine thread and
//! serve the HTTP API until Ctrl-C / SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candela_contract::{ModelRef, SpeculativeConfig};
use candela_core::spec_decode::NgramConfig;
use candela_core::{CacheConfig, Scheduler, SchedulerConfig};
use candela_model::{
    ChatTemplate, DraftModel, Drafter, ExecPath, LoadedModel, ModelRunner, RunnerConfig,
};
use candela_structured::Grammars;
use tracing::{info, warn};

use crate::api::{self, AppState, ChatMessage, TemplateOptions};
use crate::cli::{self, ServeArgs};
use crate::engine::{self, EngineClient};
use crate::error::{Error, Result};
use crate::frontend::tool_calls::ToolParser;
use crate::grpc;
use crate::lora::LoraRegistry;
use crate::metrics::{self, CacheInfo, EngineMetrics};
use crate::profiler::Profiler;

/// KV memory on CPU when `--kv-cache-memory` is absent (vLLM's `VLLM_CPU_KVCACHE_SPACE` default).
pub const DEFAULT_CPU_KV_BYTES: u64 = 4 << 30;

/// GPU memory kept free for activations and the CUDA context when the KV pool is
/// sized from `--gpu-memory-utilization` (vLLM measures a profiling run instead).
pub const GPU_ACTIVATION_RESERVE_BYTES: u64 = 2 << 30;

/// Token budget per step with chunked prefill when `--max-num-batched-tokens` is absent.
pub const DEFAULT_CHUNKED_BATCH_TOKENS: usize = 2048;

/// The model `--model` named, on local disk, and the names the API answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    /// A GGUF file or a Hugging Face directory.
    pub path: PathBuf,
    /// `--served-model-name`, else the model's name then `--model` as typed (vLLM's
    /// default, so clients that send the path or repository keep working).
    pub served_model_names: Vec<String>,
    /// The draft model of `--speculative-config '{"method": "draft_model", ...}'`, resolved
    /// like `--model`.
    pub draft_model: Option<PathBuf>,
}

/// Resolves `--model`: a local path as it is, a hub reference through the Hugging Face
/// cache (downloading what is missing, or from the cache alone with `HF_HUB_OFFLINE=1`),
/// nothing at all as the default model `scripts/setup.sh` fetches.
///
/// # Errors
/// One line: a missing path or default model, a hub flag on a local model, a hub error.
pub async fn resolve_model(args: &ServeArgs) -> Result<ModelSource> {
    let (path, served_model_names) = resolve_served_model(args).await?;
    Ok(ModelSource {
        path,
        served_model_names,
        draft_model: resolve_draft_model(args).await?,
    })
}

/// `--model`'s path and its served names.
async fn resolve_served_model(args: &ServeArgs) -> Result<(PathBuf, Vec<String>)> {
    let Some(typed) = args.model_value() else {
        if args.hub.revision.is_some() || args.hub.gguf_file.is_some() {
            return Err(Error::Config(
                "--revision and --gguf-file need a hub model (--model hf://org/name)".into(),
            ));
        }
        let path = cli::default_model_path().ok_or_else(|| {
            Error::Config("no --model given and $HOME is not set to find the default model".into())
        })?;
        if !path.exists() {
            return Err(Error::Config(format!(
                "no --model given and the default model {} is missing; run `scripts/setup.sh` to download it",
                path.display()
            )));
        }
        let names = served_model_names(args, &path, None);
        return Ok((path, names));
    };
    let model = ModelRef::parse(typed, Path::exists).map_err(Error::Config)?;
    let request = candela_hub::Request {
        revision: args.hub.revision.as_deref(),
        gguf_file: args.hub.gguf_file.as_deref(),
    };
    let resolved = candela_hub::resolve(&model, &request, &hub_options(args)).await?;
    if let Some(origin) = &resolved.hub {
        info!(
            repo = %origin.repo,
            revision = %origin.revision,
            commit = %origin.commit,
            path = %resolved.path.display(),
            "hub model ready"
        );
    }
    let repo = resolved.hub.as_ref().map(|o| o.repo.as_str());
    let names = served_model_names(args, &resolved.path, repo);
    Ok((resolved.path, names))
}

/// Where hub models are cached and how the hub is reached (`--download-dir`,
/// `--hf-token`, the hub's own environment variables), for every model the server loads.
fn hub_options(args: &ServeArgs) -> candela_hub::HubOptions {
    candela_hub::HubOptions::from_env(
        args.hub.download_dir.as_deref(),
        args.hub.hf_token.as_deref(),
    )
}

/// The draft model's path: its `model` as `--model` takes it (a path, or a hub
/// reference resolved through the same cache; `:QUANT` picks its GGUF file).
///
/// # Errors
/// One line naming the draft model.
async fn resolve_draft_model(args: &ServeArgs) -> Result<Option<PathBuf>> {
    let Some(SpeculativeConfig::DraftModel { model, .. }) = &args.scheduler.speculative_config
    else {
        return Ok(None);
    };
    let what = |e: String| Error::Config(format!("--speculative-config draft model {model}: {e}"));
    let parsed = ModelRef::parse(model, Path::exists).map_err(what)?;
    let resolved = candela_hub::resolve(
        &parsed,
        &candela_hub::Request::default(),
        &hub_options(args),
    )
    .await
    .map_err(|e| what(e.to_string()))?;
    Ok(Some(resolved.path))
}

/// `--served-model-name` values, else the model's name (`org/name` of a hub model, the
/// file stem of a GGUF, the directory name) followed by `--model` as typed.
pub fn served_model_names(args: &ServeArgs, path: &Path, hub_repo: Option<&str>) -> Vec<String> {
    if !args.server.served_model_name.is_empty() {
        return args.server.served_model_name.clone();
    }
    let name = match hub_repo {
        Some(repo) => repo.to_owned(),
        None => path
            .file_stem()
            .filter(|_| path.extension().is_some_and(|e| e == "gguf"))
            .or_else(|| path.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string()),
    };
    let mut names = vec![name];
    if let Some(typed) = args.model_value()
        && !names.iter().any(|n| n == typed)
    {
        names.push(typed.to_owned());
    }
    names
}

/// A started engine plus what the API needs to know about its model.
pub struct Started {
    pub engine: EngineClient,
    pub engine_thread: std::thread::JoinHandle<()>,
    pub state: AppState,
}

/// Loads the resolved model and starts the engine thread (no sockets); used by `run`
/// and by tests.
///
/// # Errors
/// One clear line for an unsupported device, a model that does not load, or limits that
/// do not fit.
pub fn start(args: &ServeArgs, model: &ModelSource) -> Result<Started> {
    args.validate().map_err(Error::Config)?;
    let api_keys = crate::frontend::keys::ApiKeys::load(
        args.server.api_key.clone(),
        args.server.api_key_tiers.as_deref(),
    )?;
    if args.server.api_key_tiers.is_some() {
        let [priority, default, flex] = api_keys.tier_counts();
        info!(
            priority,
            default, flex, "API keys with service tiers loaded"
        );
    }
    let path = match args.model.device {
        cli::Device::Cpu => ExecPath::Cpu,
        cli::Device::Cuda(n) => ExecPath::CandleOps(cuda_device(n)?),
    };
    let model_path = &model.path;
    candela_model::return_large_buffers_to_os();
    if let Some(n) = args.model.threads {
        candela_model::pool::set_threads(n.into()).map_err(|e| Error::model("--threads", e))?;
    }
    // Weights are read into host memory; the runner copies them to the GPU.
    let loaded = candela_model::load(model_path)
        .map_err(|e| Error::model(format!("loading {}", model_path.display()), e))?;
    let LoadedModel {
        model: weights,
        tokenizer,
        chat_template,
        eos_token_ids,
        bos_token,
        eos_token,
        config,
        weight_bytes,
        ..
    } = loaded;

    let default_kv_bytes = match args.model.device {
        cli::Device::Cpu => DEFAULT_CPU_KV_BYTES,
        cli::Device::Cuda(n) => {
            gpu_kv_budget(n, args.cache.gpu_memory_utilization, &config, weight_bytes)?
        }
    };
    let (scheduler_config, cache_config) =
        engine_configs(args, &config, &eos_token_ids, default_kv_bytes)?;
    let max_model_len = scheduler_config.max_model_len;
    info!(
        model = %model_path.display(),
        device_blocks = cache_config.num_device_blocks,
        host_blocks = cache_config.num_host_blocks,
        block_size = cache_config.block_size,
        kv_tokens = cache_config.num_device_blocks * cache_config.block_size,
        max_model_len,
        "model loaded"
    );
    let scheduler = Scheduler::new(scheduler_config, cache_config.clone())?;
    let mut runner = ModelRunner::with_path(
        weights,
        path,
        RunnerConfig {
            num_device_blocks: cache_config.num_device_blocks,
            num_host_blocks: cache_config.num_host_blocks,
            block_size: cache_config.block_size,
        },
    )
    .map_err(|e| Error::model("placing the model and its KV pool on the device", e))?;
    let spec = &args.scheduler.speculative_config;
    if let Some(spec) = spec {
        runner.set_drafter(drafter(
            spec,
            model,
            &tokenizer,
            config.vocab_size,
            &cache_config,
        )?);
    }
    let served_model_names = model.served_model_names.clone();
    let cache_info = CacheInfo {
        block_size: cache_config.block_size,
        num_gpu_blocks: cache_config.num_device_blocks,
        num_cpu_blocks: cache_config.num_host_blocks,
        enable_prefix_caching: cache_config.enable_prefix_caching,
        cache_dtype: "auto".into(),
        gpu_memory_utilization: args.cache.gpu_memory_utilization,
        swap_space_gib: args.cache.swap_space,
    };
    let mut metrics = EngineMetrics::new(
        served_model_names.first().map_or("", String::as_str),
        max_model_len,
        cache_info,
    );
    metrics.num_speculative_tokens = spec
        .as_ref()
        .map_or(0, SpeculativeConfig::num_speculative_tokens);
    let loras = args.lora.enable_lora.then(|| {
        metrics.lora.max_loras = args.lora.max_loras;
        Arc::new(LoraRegistry::new(
            config.clone(),
            &args.lora,
            hub_options(args),
        ))
    });
    let (engine, engine_thread) = engine::spawn(scheduler, runner, metrics)
        .map_err(|e| Error::io("starting the engine thread", e))?;

    let template = match chat_template {
        Some(source) => Some(
            ChatTemplate::new(&source, bos_token.as_deref(), eos_token.as_deref())
                .map_err(|e| Error::model("the model's chat template does not compile", e))?,
        ),
        None => None,
    };
    let render = move |messages: &[ChatMessage], options: &TemplateOptions| match &template {
        Some(t) => t
            .render_with(&messages, options.add_generation_prompt, options)
            .map_err(|e| e.to_string()),
        None => Err("this model has no chat template; use /v1/completions".to_owned()),
    };
    let auto_tool_parser = match &args.server.tool_call_parser {
        Some(name) if args.server.enable_auto_tool_choice => {
            Some(name.parse::<ToolParser>().map_err(Error::Config)?)
        }
        _ => None,
    };
    let grammars = Grammars::new(&tokenizer, &eos_token_ids, config.vocab_size);
    if let Err(e) = &grammars {
        warn!(error = %e, "structured outputs are unavailable; requests asking for them get a 400");
    }
    let state = AppState {
        engine: engine.clone(),
        grammars: Arc::new(grammars),
        auto_tool_parser,
        tokenizer: Arc::new(tokenizer),
        chat_template: Arc::new(render),
        served_model_names,
        max_model_len,
        api_keys,
        model_root: model_path.display().to_string(),
        created: api::unix_now(),
        loras,
        runtime_lora_updating: runtime_lora_updating(),
    };
    Ok(Started {
        engine,
        engine_thread,
        state,
    })
}

/// Loads the `--lora-modules` adapters into a started server's registry.
///
/// # Errors
/// One line naming the adapter that does not load.
pub async fn load_lora_modules(args: &ServeArgs, state: &AppState) -> Result<()> {
    let Some(loras) = &state.loras else {
        return Ok(());
    };
    for m in &args.lora.lora_modules {
        let parent = m
            .base_model_name
            .as_deref()
            .unwrap_or(state.base_model_name());
        loras.load(&m.name, &m.path, parent).await.map_err(|e| {
            Error::Config(format!(
                "--{}: {e}",
                candela_contract::serve::flag::LORA_MODULES
            ))
        })?;
    }
    Ok(())
}

/// `VLLM_ALLOW_RUNTIME_LORA_UPDATING` is set to `True` or `1` (vLLM reads it so).
fn runtime_lora_updating() -> bool {
    std::env::var(candela_contract::env::ALLOW_RUNTIME_LORA_UPDATING)
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1"))
}

/// The runner's proposer for `--speculative-config`.
///
/// # Errors
/// A draft model that does not load or does not share the model's tokenizer (the
/// device was checked by `ServeArgs::validate`).
fn drafter(
    spec: &SpeculativeConfig,
    source: &ModelSource,
    tokenizer: &tokenizers::Tokenizer,
    vocab_size: usize,
    cache: &CacheConfig,
) -> Result<Drafter> {
    match spec {
        SpeculativeConfig::Ngram {
            num_speculative_tokens,
            prompt_lookup_min,
            prompt_lookup_max,
        } => Ok(Drafter::Ngram(NgramConfig {
            num_speculative_tokens: *num_speculative_tokens,
            prompt_lookup_min: *prompt_lookup_min,
            prompt_lookup_max: *prompt_lookup_max,
        })),
        SpeculativeConfig::DraftModel {
            model,
            num_speculative_tokens,
        } => {
            let path = source
                .draft_model
                .as_ref()
                .ok_or_else(|| Error::Config(format!("draft model {model} was not resolved")))?;
            let draft = candela_model::load(path).map_err(|e| {
                Error::model(format!("loading the draft model {}", path.display()), e)
            })?;
            if draft.tokenizer.get_vocab(true) != tokenizer.get_vocab(true)
                || draft.config.vocab_size > vocab_size
            {
                return Err(Error::Config(format!(
                    "--speculative-config: the draft model {model} does not share the model's tokenizer (its vocabulary differs, or it has more token rows than the model)"
                )));
            }
            info!(draft = %path.display(), num_speculative_tokens, "draft model loaded");
            Ok(Drafter::Model(Box::new(DraftModel::new(
                draft.model,
                cache.num_device_blocks,
                cache.block_size,
                *num_speculative_tokens,
            ))))
        }
    }
}

/// The CUDA device `--device cuda:N` names.
///
/// # Errors
/// One line when this build lacks the `cuda` feature or the device cannot be opened.
fn cuda_device(n: usize) -> Result<candle_core::Device> {
    check_cuda_build(n)?;
    candle_core::Device::new_cuda(n).map_err(|e| {
        Error::model(
            format!("--device cuda:{n}: cannot open the GPU"),
            candela_model::Error::Candle(e),
        )
    })
}

/// One line when this build lacks the `cuda` feature.
fn check_cuda_build(n: usize) -> Result<()> {
    if !cfg!(feature = "cuda") {
        return Err(Error::Config(format!(
            "--device cuda:{n}: this build has no CUDA support; build it with scripts/build-cuda.sh (cargo feature `cuda`)"
        )));
    }
    Ok(())
}

/// KV bytes for GPU `n` when `--kv-cache-memory` is absent: `utilization` of its
/// memory (NVML) less the weights (as loaded, plus the embedding table again as
/// `f32`, the form the device keeps it in) and [`GPU_ACTIVATION_RESERVE_BYTES`].
///
/// # Errors
/// When NVML cannot read the GPU's memory or nothing is left for the KV cache.
fn gpu_kv_budget(
    n: usize,
    utilization: f64,
    model: &candela_model::ModelConfig,
    weight_bytes: u64,
) -> Result<u64> {
    let total = nvml_wrapper::Nvml::init()
        .and_then(|nvml| nvml.device_by_index(n as u32)?.memory_info())
        .map(|m| m.total)
        .map_err(|e| {
            Error::Config(format!(
                "reading GPU {n}'s memory through NVML (or pass --kv-cache-memory): {e}"
            ))
        })?;
    let embed = (model.vocab_size * model.hidden_size * 4) as u64;
    let used = weight_bytes + embed + GPU_ACTIVATION_RESERVE_BYTES;
    let budget = (total as f64 * utilization) as u64;
    if budget <= used {
        return Err(Error::Config(format!(
            "--gpu-memory-utilization {utilization}: {budget} bytes of GPU {n} leave nothing for the KV cache after ~{used} bytes of weights and activations; raise it or pass --kv-cache-memory"
        )));
    }
    Ok(budget - used)
}

/// Scheduler and cache limits from the flags and the model's shape; the KV pool is
/// `--kv-cache-memory` or else `default_kv_bytes`.
///
/// # Errors
/// When `--max-model-len` exceeds the model's context or the KV pool.
pub fn engine_configs(
    args: &ServeArgs,
    model: &candela_model::ModelConfig,
    eos_token_ids: &[u32],
    default_kv_bytes: u64,
) -> Result<(SchedulerConfig, CacheConfig)> {
    let s = &args.scheduler;
    let c = &args.cache;
    let max_model_len = s.max_model_len.unwrap_or(model.max_position_embeddings);
    if max_model_len > model.max_position_embeddings {
        return Err(Error::Config(format!(
            "--max-model-len {max_model_len} is larger than the model's context length {}",
            model.max_position_embeddings
        )));
    }
    let on_device = !matches!(args.model.device, cli::Device::Cpu);
    let block_bytes = model.kv_bytes_per_token(on_device) * c.block_size as u64;
    let kv_bytes = c.kv_cache_memory.map_or(default_kv_bytes, |b| b.0);
    let num_device_blocks = (kv_bytes / block_bytes) as usize;
    let num_host_blocks = ((c.swap_space * (1u64 << 30) as f64) as u64 / block_bytes) as usize;
    let chunked = s.enable_chunked_prefill();
    let max_num_batched_tokens = s.max_num_batched_tokens.unwrap_or(if chunked {
        DEFAULT_CHUNKED_BATCH_TOKENS
    } else {
        max_model_len.max(DEFAULT_CHUNKED_BATCH_TOKENS)
    });
    let scheduler = SchedulerConfig {
        max_num_seqs: s.max_num_seqs,
        max_num_batched_tokens,
        max_model_len,
        enable_chunked_prefill: chunked,
        policy: cli::scheduling_policy(s.scheduling_policy),
        delay_factor: s.scheduler_delay_factor,
        max_waiting: s.max_waiting,
        eos_token_ids: eos_token_ids.to_vec(),
        // A draft model writes its drafts' K/V past each sampled token.
        num_lookahead_tokens: match &s.speculative_config {
            Some(SpeculativeConfig::DraftModel {
                num_speculative_tokens,
                ..
            }) => *num_speculative_tokens,
            _ => 0,
        },
        max_loras: if args.lora.enable_lora {
            args.lora.max_loras
        } else {
            0
        },
        max_num_seqs_per_tier: cli::tier_caps(&s.max_num_seqs_per_tier),
    };
    let cache = CacheConfig {
        block_size: c.block_size,
        num_device_blocks,
        num_host_blocks,
        enable_prefix_caching: c.enable_prefix_caching(),
    };
    scheduler.validate(&cache).map_err(|e| {
        Error::Config(format!(
            "{e} (KV memory {kv_bytes} bytes, {block_bytes} bytes per block)"
        ))
    })?;
    Ok((scheduler, cache))
}

/// Runs `candela serve` until a shutdown signal.
///
/// # Errors
/// Start-up failures (one line each) and socket errors.
pub async fn run(args: ServeArgs, profiler: Profiler) -> Result<()> {
    // Bad flags and a CUDA-less build fail before anything is downloaded.
    args.validate().map_err(Error::Config)?;
    if let cli::Device::Cuda(n) = args.model.device {
        check_cuda_build(n)?;
    }
    // TLS files are checked before the model is fetched: a typo fails in a second.
    let tls = candela_tls::ServerTls::from_args(&args.tls)?;
    let model = resolve_model(&args).await?;
    let started = tokio::task::block_in_place(|| start(&args, &model))?;
    load_lora_modules(&args, &started.state).await?;
    let addr = format!("{}:{}", args.server.host, args.server.port);
    let listener = candela_tls::Listener::bind(&addr, tls.as_ref(), candela_tls::Alpn::Http1)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    info!(%addr, tls = listener.is_tls(), "serving the OpenAI API");
    if !args.log.disable_log_stats {
        let interval = std::time::Duration::from_secs_f64(args.log.log_stats_interval);
        let engine = started.engine.clone();
        let snapshot = move || engine.is_alive().then(|| engine.metrics());
        tokio::spawn(metrics::stats_log::run(snapshot, interval));
    }
    let grpc_addr = format!("{}:{}", args.server.host, args.server.grpc_port);
    let service = grpc::EngineService::new(
        started.engine.clone(),
        started.state.tokenizer.clone(),
        started.state.grammars.clone(),
        started.state.max_model_len,
        started.state.base_model_name().to_owned(),
        profiler.clone(),
        started.state.api_keys.clone(),
    );
    let grpc_task = grpc::spawn(&grpc_addr, tls.as_ref(), service).await?;
    let drain = Arc::new(crate::drain::Drain::default());
    let app = api::router(started.state)
        .merge(metrics::router(started.engine.shared_metrics()))
        .merge(crate::profiler::router(profiler))
        .layer(axum::middleware::from_fn_with_state(
            drain.clone(),
            crate::drain::middleware,
        ));
    axum::serve(listener, app)
        .with_graceful_shutdown(drain.signal(crate::drain::DRAIN_WINDOW))
        .await
        .map_err(|e| Error::io("serving HTTP", e))?;
    // Open WatchStats streams never end by themselves: stop gRPC with HTTP.
    grpc_task.abort();
    drop(started.engine);
    info!("drained: every request in flight finished; exiting");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command, ProcessCommand};

    fn serve_args(args: &[&str]) -> ServeArgs {
        let argv = ["candela", "serve"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Process(ProcessCommand::Serve(s)) => s,
            other => panic!("parsed `serve` as {other:?}"),
        }
    }

    #[test]
    fn served_model_names_default_to_the_model_name_and_the_typed_value() {
        let p = Path::new("/m/SmolLM2.Q4_1.gguf");
        let a = serve_args(&["--model", "/m/SmolLM2.Q4_1.gguf"]);
        assert_eq!(
            served_model_names(&a, p, None),
            vec!["SmolLM2.Q4_1", "/m/SmolLM2.Q4_1.gguf"]
        );
        assert_eq!(
            served_model_names(&serve_args(&[]), p, None),
            vec!["SmolLM2.Q4_1"]
        );
        let a = serve_args(&["--served-model-name", "smol,tiny"]);
        assert_eq!(served_model_names(&a, p, None), vec!["smol", "tiny"]);
        let dir = Path::new("/models/Qwen2-0.5B");
        let a = serve_args(&["/models/Qwen2-0.5B"]);
        assert_eq!(
            served_model_names(&a, dir, None),
            vec!["Qwen2-0.5B", "/models/Qwen2-0.5B"]
        );
        // Hub models answer to `org/name` (what vLLM clients send) and the typed reference.
        let snap = Path::new("/c/models--org--m/snapshots/abc/m.Q4_1.gguf");
        let a = serve_args(&["hf://org/m:Q4_1"]);
        assert_eq!(
            served_model_names(&a, snap, Some("org/m")),
            vec!["org/m", "hf://org/m:Q4_1"]
        );
        let a = serve_args(&["org/m"]);
        assert_eq!(served_model_names(&a, snap, Some("org/m")), vec!["org/m"]);
    }

    #[tokio::test]
    async fn local_models_and_the_default_resolve_without_network() {
        let e = resolve_model(&serve_args(&["/nonexistent/m.gguf"]))
            .await
            .unwrap_err();
        assert_eq!(format!("{e:#}"), "model not found: /nonexistent/m.gguf");
        let e = resolve_model(&serve_args(&["--revision", "v1"]))
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("need a hub model"), "{e:#}");
        let default = cli::default_model_path().unwrap();
        match resolve_model(&serve_args(&[])).await {
            Ok(m) => assert_eq!(m.path, default),
            Err(e) => assert!(format!("{e:#}").contains("scripts/setup.sh"), "{e:#}"),
        }
    }

    /// Without the `cuda` feature `--device cuda` stops before loading anything,
    /// with one line that says how to get a CUDA build.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_one_clear_line() {
        let model = ModelSource {
            path: "/nonexistent.gguf".into(),
            served_model_names: vec!["m".into()],
            draft_model: None,
        };
        let err = start(&serve_args(&["--device", "cuda:1"]), &model)
            .err()
            .expect("no CUDA in this build");
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with("--device cuda:1: this build has no CUDA support")
                && msg.contains("scripts/build-cuda.sh")
                && !msg.contains('\n'),
            "{msg}"
        );
    }

    #[test]
    fn kv_pool_uses_the_flag_or_else_the_device_default() {
        let cfg = candela_model::ModelConfig {
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            hidden_size: 32,
            intermediate_size: 64,
            vocab_size: 100,
            max_position_embeddings: 64,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            architecture: "llama".into(),
        };
        let per_token = cfg.kv_bytes_per_token(false);
        let block = per_token * 16;
        let (s, c) = engine_configs(&serve_args(&[]), &cfg, &[2], 100 * block).unwrap();
        assert_eq!(c.num_device_blocks, 100);
        assert_eq!(s.eos_token_ids, vec![2]);
        let (_, c) = engine_configs(
            &serve_args(&["--kv-cache-memory", &(7 * block).to_string()]),
            &cfg,
            &[2],
            100 * block,
        )
        .unwrap();
        assert_eq!(c.num_device_blocks, 7);
    }
}
