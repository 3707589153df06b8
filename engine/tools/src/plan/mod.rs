//! `candela plan`: seed 000's capacity formula ("容量规划经验公式") for a model
//! and a GPU, before anything is deployed. Reads the model's shape from a
//! Hugging Face `config.json` or a GGUF file ([`model`]), the GPU's memory from
//! a flag or the built-in table ([`gpus`]), applies the formula ([`formula`],
//! pure) and prints the result as text or JSON ([`render`]).
//!
//! Flags shared with `candela serve` (`--gpu-memory-utilization`,
//! `--max-model-len`, `--dtype`, `--kv-cache-dtype`, `--block-size`,
//! `--tensor-parallel-size`) read the same environment variables, so a plan made
//! in a deployment's environment sees its settings.

pub mod formula;
pub mod gpus;
pub mod model;
pub mod render;

use std::path::PathBuf;

use clap::{ArgGroup, Args};

pub use formula::{Inputs, Plan, compute};
pub use model::ModelShape;

use crate::error::{Error, Result};
use gpus::Dtype;

const GIB: f64 = (1u64 << 30) as f64;

/// `candela plan` flags.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("model_source").required(true).args(["model_config", "gguf"])))]
#[command(group(ArgGroup::new("gpu_memory").required(true).args(["gpu", "gpu_memory_gib"])))]
pub struct PlanArgs {
    /// The model's Hugging Face config.json (or the directory holding it)
    #[arg(long, env = "CANDELA_PLAN_MODEL_CONFIG", value_name = "PATH")]
    pub model_config: Option<PathBuf>,

    /// A GGUF file: shape from its metadata, weights from its size
    #[arg(long, env = "CANDELA_PLAN_GGUF", value_name = "PATH")]
    pub gguf: Option<PathBuf>,

    /// A GPU from the built-in table (A100-40G, A100-80G, H100-80G, H100-NVL, H200, L4, L40S, L40, A10G, A10, T4, RTX4090)
    #[arg(long, env = "CANDELA_PLAN_GPU", value_name = "NAME")]
    pub gpu: Option<String>,

    /// Memory of one GPU in GiB, instead of --gpu
    #[arg(long, env = "CANDELA_PLAN_GPU_MEMORY_GIB", value_name = "GIB")]
    pub gpu_memory_gib: Option<f64>,

    /// Fraction of GPU memory for weights and KV cache, as `candela serve`
    #[arg(long, env = "CANDELA_GPU_MEMORY_UTILIZATION", default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,

    /// GPUs the model is sharded over
    #[arg(long, env = "CANDELA_TENSOR_PARALLEL_SIZE", default_value_t = 1)]
    pub tensor_parallel_size: u64,

    /// Longest sequence [default: the model's context length]
    #[arg(long, env = "CANDELA_MAX_MODEL_LEN")]
    pub max_model_len: Option<u64>,

    /// Weight dtype: auto (config torch_dtype; GGUF: file size), bf16, fp16, fp32, fp8, int8, int4
    #[arg(long, env = "CANDELA_DTYPE", default_value = "auto")]
    pub dtype: String,

    /// KV cache dtype: auto (the activation dtype), fp8, bf16, fp16, fp32
    #[arg(long, env = "CANDELA_KV_CACHE_DTYPE", default_value = "auto")]
    pub kv_cache_dtype: String,

    /// Weights in GiB, instead of computing them from the model
    #[arg(long, env = "CANDELA_PLAN_WEIGHTS_GIB", value_name = "GIB")]
    pub weights_gib: Option<f64>,

    /// KV heads to count instead of the model's (32 for Llama-3-8B reproduces seed 000's example)
    #[arg(long, env = "CANDELA_PLAN_NUM_KV_HEADS")]
    pub num_kv_heads: Option<u64>,

    /// Tokens per KV block (the pool is whole blocks)
    #[arg(long, env = "CANDELA_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: u64,

    /// Average prompt tokens per request
    #[arg(long, env = "CANDELA_PLAN_AVG_PROMPT_LEN", default_value_t = 500)]
    pub avg_prompt_len: u64,

    /// Average output tokens per request
    #[arg(long, env = "CANDELA_PLAN_AVG_OUTPUT_LEN", default_value_t = 300)]
    pub avg_output_len: u64,

    /// Headroom for bursts: recommended --max-num-seqs = concurrency x (1 - buffer)
    #[arg(long, env = "CANDELA_PLAN_BUFFER", default_value_t = 0.3)]
    pub buffer: f64,

    /// Print the plan as JSON
    #[arg(long, env = "CANDELA_PLAN_JSON")]
    pub json: bool,
}

/// Reads the model and resolves the flags into the formula's [`Inputs`].
///
/// # Errors
/// [`Error::Input`] when the model cannot be read; [`Error::InvalidArgs`] for
/// unknown GPUs or dtypes and missing values.
pub fn inputs(args: &PlanArgs) -> Result<Inputs> {
    let model = match (&args.model_config, &args.gguf) {
        (Some(path), None) => model::from_config(path)?,
        (None, Some(path)) => model::from_gguf(path)?,
        _ => {
            return Err(Error::InvalidArgs(
                "give one of --model-config PATH or --gguf PATH".into(),
            ));
        }
    };
    resolve(args, model)
}

fn positive_gib(flag: &str, v: f64) -> Result<u64> {
    if v.is_finite() && v > 0.0 {
        Ok((v * GIB).round() as u64)
    } else {
        Err(Error::InvalidArgs(format!(
            "{flag} {v} must be a positive number of GiB"
        )))
    }
}

/// Resolves the flags against an already-read model (pure).
///
/// # Errors
/// As [`inputs`], without the file reading.
pub fn resolve(args: &PlanArgs, model: ModelShape) -> Result<Inputs> {
    let (gpu_name, gpu_memory_bytes) = match (&args.gpu, args.gpu_memory_gib) {
        (Some(name), None) => {
            let g = gpus::gpu(name)?;
            (Some(g.name.to_string()), g.memory_bytes())
        }
        (None, Some(gib)) => (None, positive_gib("--gpu-memory-gib", gib)?),
        _ => {
            return Err(Error::InvalidArgs(
                "give one of --gpu NAME or --gpu-memory-gib GIB".into(),
            ));
        }
    };
    // The activation dtype: an explicit float --dtype, else the config's
    // torch_dtype as vLLM's `auto` reads it (fp32 checkpoints run in fp16), else bf16.
    let explicit = match args.dtype.as_str() {
        "auto" => None,
        d => Some(gpus::dtype(d, "--dtype")?),
    };
    let (activation, activation_why) = match &explicit {
        Some(d) if d.bytes >= 2.0 => (d.clone(), format!("--dtype {}", d.name)),
        _ => match model.torch_dtype.as_deref() {
            Some(t) => {
                let d = gpus::dtype(t, "torch_dtype").unwrap_or(Dtype {
                    name: "bf16",
                    bytes: 2.0,
                });
                let d = if d.name == "fp32" {
                    Dtype {
                        name: "fp16",
                        bytes: 2.0,
                    }
                } else {
                    d
                };
                let why = format!("torch_dtype {t}");
                (d, why)
            }
            None => (
                Dtype {
                    name: "bf16",
                    bytes: 2.0,
                },
                "GPU default".to_string(),
            ),
        },
    };
    let (weight_bytes, weight_source) = if let Some(gib) = args.weights_gib {
        (
            positive_gib("--weights-gib", gib)?,
            format!("--weights-gib {gib}"),
        )
    } else if let Some(d) = &explicit {
        let b = (model.params as f64 * d.bytes).round() as u64;
        let why = format!(
            "{:.2} B params x {} B, --dtype {}",
            model.params as f64 / 1e9,
            d.bytes,
            d.name
        );
        (b, why)
    } else if let Some(file) = model.file_bytes {
        (file, "GGUF file size".to_string())
    } else if let Some(q) = &model.quantization {
        let rest = model.params.saturating_sub(q.linear_params);
        let b = (q.linear_params as f64 * f64::from(q.bits) / 8.0 + rest as f64 * activation.bytes)
            .round() as u64;
        let why = format!(
            "{} {}-bit linear layers + {} the rest, from quantization_config",
            q.method, q.bits, activation.name
        );
        (b, why)
    } else {
        let b = (model.params as f64 * activation.bytes).round() as u64;
        let why = format!(
            "{:.2} B params x {} B, {} from {activation_why}",
            model.params as f64 / 1e9,
            activation.bytes,
            activation.name
        );
        (b, why)
    };
    let (kv_dtype, kv_dtype_source) = match args.kv_cache_dtype.as_str() {
        "auto" => (
            activation.clone(),
            format!(
                "{} (--kv-cache-dtype auto: the activation dtype, from {activation_why})",
                activation.name
            ),
        ),
        d => {
            let d = gpus::dtype(d, "--kv-cache-dtype")?;
            if d.bytes < 1.0 {
                return Err(Error::InvalidArgs(format!(
                    "--kv-cache-dtype {} is not a KV cache dtype (auto, fp8, bf16, fp16, fp32)",
                    args.kv_cache_dtype
                )));
            }
            let why = format!("{} (--kv-cache-dtype {})", d.name, args.kv_cache_dtype);
            (d, why)
        }
    };
    let max_model_len = match (args.max_model_len, model.max_position_embeddings) {
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => {
            return Err(Error::InvalidArgs(
                "the model states no context length: give --max-model-len".into(),
            ));
        }
    };
    Ok(Inputs {
        model,
        num_kv_heads_override: args.num_kv_heads,
        gpu_name,
        gpu_memory_bytes,
        tensor_parallel_size: args.tensor_parallel_size,
        gpu_memory_utilization: args.gpu_memory_utilization,
        weight_bytes,
        weight_source,
        kv_dtype,
        kv_dtype_source,
        max_model_len,
        block_size: args.block_size,
        avg_prompt_len: args.avg_prompt_len,
        avg_output_len: args.avg_output_len,
        buffer: args.buffer,
    })
}

/// Reads the model, applies the formula, and renders the report (`--json` or text).
///
/// # Errors
/// As [`inputs`] and [`compute`].
pub fn report(args: &PlanArgs) -> Result<String> {
    let plan = compute(&inputs(args)?)?;
    Ok(if args.json {
        render::json(&plan)
    } else {
        render::text(&plan)
    })
}

/// Run `candela plan`.
///
/// # Errors
/// As [`report`].
pub fn run(args: PlanArgs) -> Result<()> {
    print!("{}", report(&args)?);
    Ok(())
}
