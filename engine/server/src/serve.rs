//! `candela serve`: load the model, size the KV pools, start the engine thread
//! and serve the HTTP API until Ctrl-C / SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use candela_core::{CacheConfig, Scheduler, SchedulerConfig};
use candela_model::{ChatTemplate, ExecPath, LoadedModel, ModelRunner, RunnerConfig};
use tracing::info;

use crate::api::{self, AppState, ChatMessage};
use crate::cli::{self, ServeArgs};
use crate::engine::{Engine, EngineClient};
use crate::grpc;
use crate::metrics::{self, CacheInfo, EngineMetrics};
use crate::profiler::Profiler;

/// KV memory on CPU when `--kv-cache-memory` is absent (vLLM's `VLLM_CPU_KVCACHE_SPACE` default).
pub const DEFAULT_CPU_KV_BYTES: u64 = 4 << 30;

/// GPU memory kept free for activations and the CUDA context when the KV pool is
/// sized from `--gpu-memory-utilization` (vLLM measures a profiling run instead).
pub const GPU_ACTIVATION_RESERVE_BYTES: u64 = 2 << 30;

/// Token budget per step with chunked prefill when `--max-num-batched-tokens` is absent.
pub const DEFAULT_CHUNKED_BATCH_TOKENS: usize = 2048;

/// A started engine plus what the API needs to know about its model.
pub struct Started {
    pub engine: EngineClient,
    pub engine_thread: std::thread::JoinHandle<()>,
    pub state: AppState,
}

/// Loads the model and starts the engine thread (no sockets); used by `run` and by tests.
///
/// # Errors
/// One clear line for a missing model, an unsupported device, or limits that do not fit.
pub fn start(args: &ServeArgs) -> anyhow::Result<Started> {
    args.validate().map_err(anyhow::Error::msg)?;
    let path = match args.model.device {
        cli::Device::Cpu => ExecPath::Cpu,
        cli::Device::Cuda(n) => ExecPath::Tensor(cuda_device(n)?),
    };
    let model_path = args.model_path().map_err(anyhow::Error::msg)?;
    if args.cache.kv_cache_dtype == cli::KvCacheDtype::Fp8 {
        bail!("--kv-cache-dtype fp8 is not supported yet (the KV cache is f32); use auto");
    }
    if let Some(n) = args.model.threads {
        candela_model::pool::set_threads(n.into())?;
    }
    // Weights are read into host memory; the runner copies them to the GPU.
    let loaded = candela_model::load(
        &model_path,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )
    .with_context(|| format!("loading {}", model_path.display()))?;
    let LoadedModel {
        model,
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
        engine_configs(args, &config, config.kv_bytes_per_token(), default_kv_bytes)?;
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
    let scheduler =
        Scheduler::new(scheduler_config, cache_config.clone()).map_err(anyhow::Error::msg)?;
    let runner = ModelRunner::with_path(
        model,
        path,
        RunnerConfig {
            num_device_blocks: cache_config.num_device_blocks,
            num_host_blocks: cache_config.num_host_blocks,
            block_size: cache_config.block_size,
        },
        eos_token_ids.clone(),
    )
    .context("placing the model and its KV pool on the device")?;
    let served_model_names = args.served_model_names(&model_path);
    let cache_info = CacheInfo {
        block_size: cache_config.block_size,
        num_gpu_blocks: cache_config.num_device_blocks,
        num_cpu_blocks: cache_config.num_host_blocks,
        enable_prefix_caching: cache_config.enable_prefix_caching,
        cache_dtype: "auto".into(),
        gpu_memory_utilization: args.cache.gpu_memory_utilization,
        swap_space_gib: args.cache.swap_space,
    };
    let metrics = EngineMetrics::new(
        served_model_names.first().map_or("", String::as_str),
        max_model_len,
        cache_info,
    );
    let (engine, engine_thread) = Engine::spawn(scheduler, runner, eos_token_ids.clone(), metrics)
        .context("starting the engine thread")?;

    let template = match chat_template {
        Some(source) => Some(
            ChatTemplate::new(&source, bos_token.as_deref(), eos_token.as_deref())
                .context("the model's chat template does not compile")?,
        ),
        None => None,
    };
    let render = move |messages: &[ChatMessage], add_generation_prompt: bool| match &template {
        Some(t) => t
            .render(&messages, add_generation_prompt)
            .map_err(|e| e.to_string()),
        None => Err("this model has no chat template; use /v1/completions".to_owned()),
    };
    let state = AppState {
        engine: engine.clone(),
        tokenizer: Arc::new(tokenizer),
        chat_template: Arc::new(render),
        served_model_names,
        max_model_len,
        eos_token_ids,
        api_key: args.server.api_key.clone(),
        model_root: model_path.display().to_string(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    Ok(Started {
        engine,
        engine_thread,
        state,
    })
}

/// The CUDA device `--device cuda:N` names.
///
/// # Errors
/// One line when this build lacks the `cuda` feature or the device cannot be opened.
fn cuda_device(n: usize) -> anyhow::Result<candle_core::Device> {
    if !cfg!(feature = "cuda") {
        bail!(
            "--device cuda:{n}: this build has no CUDA support; build it with scripts/build-cuda.sh (cargo feature `cuda`)"
        );
    }
    candle_core::Device::new_cuda(n)
        .with_context(|| format!("--device cuda:{n}: cannot open the GPU"))
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
) -> anyhow::Result<u64> {
    let total = nvml_wrapper::Nvml::init()
        .and_then(|nvml| nvml.device_by_index(n as u32)?.memory_info())
        .map(|m| m.total)
        .with_context(|| {
            format!("reading GPU {n}'s memory through NVML (or pass --kv-cache-memory)")
        })?;
    let embed = (model.vocab_size * model.hidden_size * 4) as u64;
    let used = weight_bytes + embed + GPU_ACTIVATION_RESERVE_BYTES;
    let budget = (total as f64 * utilization) as u64;
    if budget <= used {
        bail!(
            "--gpu-memory-utilization {utilization}: {budget} bytes of GPU {n} leave nothing for the KV cache after ~{used} bytes of weights and activations; raise it or pass --kv-cache-memory"
        );
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
    kv_bytes_per_token: u64,
    default_kv_bytes: u64,
) -> anyhow::Result<(SchedulerConfig, CacheConfig)> {
    let s = &args.scheduler;
    let c = &args.cache;
    let max_model_len = s.max_model_len.unwrap_or(model.max_position_embeddings);
    if max_model_len > model.max_position_embeddings {
        bail!(
            "--max-model-len {max_model_len} is larger than the model's context length {}",
            model.max_position_embeddings
        );
    }
    let block_bytes = kv_bytes_per_token * c.block_size as u64;
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
        policy: s.scheduling_policy.into(),
        delay_factor: s.scheduler_delay_factor,
        max_waiting: s.max_waiting,
    };
    let cache = CacheConfig {
        block_size: c.block_size,
        num_device_blocks,
        num_host_blocks,
        enable_prefix_caching: c.enable_prefix_caching(),
    };
    scheduler.validate(&cache).map_err(|e| {
        anyhow::anyhow!("{e} (KV memory {kv_bytes} bytes, {block_bytes} bytes per block)")
    })?;
    Ok((scheduler, cache))
}

/// Runs `candela serve` until a shutdown signal.
///
/// # Errors
/// Start-up failures (one line each) and socket errors.
pub async fn run(args: ServeArgs, profiler: Profiler) -> anyhow::Result<()> {
    let started = tokio::task::block_in_place(|| start(&args))?;
    let addr = format!("{}:{}", args.server.host, args.server.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    info!(%addr, "serving the OpenAI API");
    if !args.log.disable_log_stats {
        let interval = std::time::Duration::from_secs_f64(args.log.log_stats_interval);
        tokio::spawn(metrics::stats_log::run(started.engine.clone(), interval));
    }
    let grpc_addr = format!("{}:{}", args.server.host, args.server.grpc_port);
    let grpc_task = grpc::spawn(
        &grpc_addr,
        grpc::EngineService::new(&started.state, profiler.clone()),
    )
    .await?;
    let app = api::router(started.state)
        .merge(metrics::router(started.engine.clone()))
        .merge(crate::profiler::router(profiler));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Open WatchStats streams never end by themselves: stop gRPC with HTTP.
    grpc_task.abort();
    drop(started.engine);
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (shared with `candela sidecar`).
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    info!("shutting down");
}

/// True when `path` looks like a model Candela can load (used in error hints).
pub fn looks_like_model(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gguf") || path.join("config.json").exists()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn serve_args(args: &[&str]) -> ServeArgs {
        let argv = ["candela", "serve"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(s) => s,
            other => panic!("parsed `serve` as {other:?}"),
        }
    }

    /// Without the `cuda` feature `--device cuda` stops before loading anything,
    /// with one line that says how to get a CUDA build.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_one_clear_line() {
        let err = start(&serve_args(&[
            "--device",
            "cuda:1",
            "--model",
            "/nonexistent.gguf",
        ]))
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
        let per_token = cfg.kv_bytes_per_token();
        let block = per_token * 16;
        let (_, c) = engine_configs(&serve_args(&[]), &cfg, per_token, 100 * block).unwrap();
        assert_eq!(c.num_device_blocks, 100);
        let (_, c) = engine_configs(
            &serve_args(&["--kv-cache-memory", &(7 * block).to_string()]),
            &cfg,
            per_token,
            100 * block,
        )
        .unwrap();
        assert_eq!(c.num_device_blocks, 7);
    }
}
