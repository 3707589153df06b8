//! `candela serve`: load the model, size the KV pools, start the engine thread
//! and serve the HTTP API until Ctrl-C / SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use candela_core::{CacheConfig, Scheduler, SchedulerConfig};
use candela_model::{ChatTemplate, LoadedModel, ModelRunner, RunnerConfig};
use tracing::info;

use crate::api::{self, AppState, ChatMessage};
use crate::cli::{self, ServeArgs};
use crate::engine::{Engine, EngineClient};
use crate::grpc;
use crate::metrics::{self, CacheInfo, EngineMetrics};
use crate::profiler::Profiler;

/// KV memory on CPU when `--kv-cache-memory` is absent (vLLM's `VLLM_CPU_KVCACHE_SPACE` default).
pub const DEFAULT_CPU_KV_BYTES: u64 = 4 << 30;

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
    let model_path = args.model_path().map_err(anyhow::Error::msg)?;
    let device = match args.model.device {
        cli::Device::Cpu => candle_core::Device::Cpu,
        cli::Device::Cuda(n) => bail!(
            "--device cuda:{n}: this build runs on CPU only (CUDA support is planned behind the `cuda` feature)"
        ),
    };
    if args.cache.kv_cache_dtype == cli::KvCacheDtype::Fp8 {
        bail!("--kv-cache-dtype fp8 is not supported on the CPU backend; use auto");
    }
    if let Some(n) = args.model.threads {
        candela_model::pool::set_threads(n.into())?;
    }
    let loaded = candela_model::load(&model_path, &device, candle_core::DType::F32)
        .with_context(|| format!("loading {}", model_path.display()))?;
    let LoadedModel {
        model,
        tokenizer,
        chat_template,
        eos_token_ids,
        bos_token,
        eos_token,
        config,
        ..
    } = loaded;

    let (scheduler_config, cache_config) =
        engine_configs(args, &config, config.kv_bytes_per_token())?;
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
    let runner = ModelRunner::new(
        model,
        RunnerConfig {
            num_device_blocks: cache_config.num_device_blocks,
            num_host_blocks: cache_config.num_host_blocks,
            block_size: cache_config.block_size,
        },
        eos_token_ids.clone(),
    );
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

/// Scheduler and cache limits from the flags and the model's shape.
///
/// # Errors
/// When `--max-model-len` exceeds the model's context or the KV pool.
pub fn engine_configs(
    args: &ServeArgs,
    model: &candela_model::ModelConfig,
    kv_bytes_per_token: u64,
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
    let kv_bytes = c.kv_cache_memory.map_or(DEFAULT_CPU_KV_BYTES, |b| b.0);
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
