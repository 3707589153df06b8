//! The capacity formula of seed 000, pure: KV pool = GPU memory × utilization −
//! weights; pool tokens = pool / KV bytes per token (whole blocks); theoretical
//! concurrency = pool tokens / (avg prompt + avg output); recommended
//! `--max-num-seqs` = ⌊concurrency × (1 − buffer)⌋.
//!
//! Per-token KV bytes = layers × KV heads × (key dim + value dim) × dtype bytes,
//! i.e. 2 × layers × KV heads × head_dim × bytes for llama-family models. With
//! tensor parallelism each GPU holds its share of the KV heads (at least one:
//! vLLM replicates KV heads when there are fewer than GPUs) and of the weights.
//! Like the seed, the formula leaves out activation and CUDA-graph memory, so
//! its pool is an upper bound on what vLLM's profiler will find.

use serde::Serialize;

use super::gpus::Dtype;
use super::model::ModelShape;
use crate::error::{Error, Result};

const GIB: f64 = (1u64 << 30) as f64;

/// Everything the formula takes, already resolved from flags and the model.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub model: ModelShape,
    /// `--num-kv-heads`: replaces the model's KV head count.
    pub num_kv_heads_override: Option<u64>,
    /// `--gpu` name, when given.
    pub gpu_name: Option<String>,
    /// Memory of one GPU, bytes.
    pub gpu_memory_bytes: u64,
    pub tensor_parallel_size: u64,
    pub gpu_memory_utilization: f64,
    /// All weights, bytes (split evenly over the tensor-parallel GPUs).
    pub weight_bytes: u64,
    /// How `weight_bytes` was obtained, for the report.
    pub weight_source: String,
    pub kv_dtype: Dtype,
    /// How the KV dtype was chosen (`auto → bf16 (torch_dtype)`), for the report.
    pub kv_dtype_source: String,
    pub max_model_len: u64,
    pub block_size: u64,
    pub avg_prompt_len: u64,
    pub avg_output_len: u64,
    pub buffer: f64,
}

/// The plan: every number the report prints, and the notes that qualify them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub model: String,
    pub model_source: String,
    pub architecture: String,
    pub num_layers: u64,
    pub num_attention_heads: u64,
    /// KV heads the plan uses (the override when given).
    pub num_kv_heads: u64,
    /// KV heads the model has.
    pub num_kv_heads_model: u64,
    pub head_dim: u64,
    pub value_head_dim: u64,
    pub params: u64,
    pub gpu: Option<String>,
    pub gpu_memory_gib: f64,
    pub tensor_parallel_size: u64,
    pub gpu_memory_utilization: f64,
    /// Memory × utilization, one GPU.
    pub usable_gib_per_gpu: f64,
    pub weights_gib: f64,
    pub weights_gib_per_gpu: f64,
    pub weights_source: String,
    pub kv_cache_dtype: String,
    pub kv_cache_dtype_source: String,
    /// KV bytes one token occupies on one GPU.
    pub kv_bytes_per_token_per_gpu: u64,
    /// KV bytes one token occupies over all GPUs (replicated heads counted).
    pub kv_bytes_per_token: u64,
    pub kv_pool_gib_per_gpu: f64,
    pub kv_pool_gib: f64,
    pub block_size: u64,
    pub kv_pool_blocks: u64,
    pub kv_pool_tokens: u64,
    pub avg_prompt_len: u64,
    pub avg_output_len: u64,
    pub avg_request_tokens: u64,
    pub theoretical_concurrency: f64,
    pub buffer: f64,
    pub recommended_max_num_seqs: u64,
    pub max_model_len: u64,
    /// One request of `max_model_len` tokens fits in the pool.
    pub max_model_len_fits: bool,
    /// Requests of `max_model_len` tokens the pool holds at once (worst case).
    pub max_model_len_concurrency: u64,
    pub notes: Vec<String>,
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgs(msg)
}

/// Applies the formula.
///
/// # Errors
/// [`Error::InvalidArgs`] for out-of-range inputs, a tensor-parallel size the
/// heads cannot be split over, or weights that leave no room for a KV pool.
pub fn compute(i: &Inputs) -> Result<Plan> {
    let m = &i.model;
    if !(i.gpu_memory_utilization > 0.0 && i.gpu_memory_utilization <= 1.0) {
        return Err(invalid(format!(
            "--gpu-memory-utilization {} is not in (0, 1]",
            i.gpu_memory_utilization
        )));
    }
    if !(0.0..1.0).contains(&i.buffer) {
        return Err(invalid(format!("--buffer {} is not in [0, 1)", i.buffer)));
    }
    for (flag, v) in [
        ("--tensor-parallel-size", i.tensor_parallel_size),
        ("--block-size", i.block_size),
        ("--max-model-len", i.max_model_len),
        ("--num-kv-heads", i.num_kv_heads_override.unwrap_or(1)),
    ] {
        if v == 0 {
            return Err(invalid(format!("{flag} must be at least 1")));
        }
    }
    if i.avg_prompt_len + i.avg_output_len == 0 {
        return Err(invalid(
            "--avg-prompt-len + --avg-output-len must be at least 1".into(),
        ));
    }
    let tp = i.tensor_parallel_size;
    let kv_heads = i.num_kv_heads_override.unwrap_or(m.num_kv_heads);
    if !m.num_heads.is_multiple_of(tp) {
        return Err(invalid(format!(
            "--tensor-parallel-size {tp} does not divide the {} attention heads",
            m.num_heads
        )));
    }
    if !(kv_heads.is_multiple_of(tp) || tp.is_multiple_of(kv_heads)) {
        return Err(invalid(format!(
            "--tensor-parallel-size {tp} and {kv_heads} KV heads: one must divide the other"
        )));
    }
    let kv_heads_per_gpu = (kv_heads / tp).max(1);
    let dims = m.head_dim + m.value_head_dim;
    let per_token_gpu = (m.num_layers * kv_heads_per_gpu * dims) as f64 * i.kv_dtype.bytes;
    let per_token_gpu = per_token_gpu.ceil() as u64;
    let usable = (i.gpu_memory_bytes as f64 * i.gpu_memory_utilization).floor() as u64;
    let weights_gpu = i.weight_bytes.div_ceil(tp);
    if weights_gpu >= usable {
        return Err(invalid(format!(
            "the weights need {:.2} GiB per GPU but {:.2} GiB x {} = {:.2} GiB is all there is: \
             use a bigger GPU, more --tensor-parallel-size or quantized weights",
            weights_gpu as f64 / GIB,
            i.gpu_memory_bytes as f64 / GIB,
            i.gpu_memory_utilization,
            usable as f64 / GIB
        )));
    }
    let pool_gpu = usable - weights_gpu;
    let blocks = pool_gpu / (per_token_gpu * i.block_size);
    let tokens = blocks * i.block_size;
    let avg = i.avg_prompt_len + i.avg_output_len;
    let concurrency = tokens as f64 / avg as f64;
    let recommended = (concurrency * (1.0 - i.buffer)).floor() as u64;
    let fits = tokens >= i.max_model_len;

    let mut notes = Vec::new();
    if let Some(o) = i.num_kv_heads_override.filter(|&o| o != m.num_kv_heads) {
        notes.push(format!(
            "--num-kv-heads {o} replaces the model's {} KV heads: per-token KV is {:.2}x what \
             the model really stores",
            m.num_kv_heads,
            o as f64 / m.num_kv_heads as f64
        ));
    }
    if m.num_kv_heads < m.num_heads {
        let mut note = format!(
            "{} uses grouped-query attention: its {} query heads share {} KV heads, so a token \
             stores {}x less KV than with one KV head per query head",
            m.name,
            m.num_heads,
            m.num_kv_heads,
            m.num_heads / m.num_kv_heads,
        );
        if i.num_kv_heads_override.is_none() {
            note.push_str(&format!(
                ". Seed 000's worked example (A100-80G, Llama-3-8B: 56 GB -> ~110k tokens) \
                 counts all 32 heads; --num-kv-heads {} counts this model that way",
                m.num_heads
            ));
        }
        notes.push(note);
    }
    if kv_heads < tp {
        notes.push(format!(
            "{kv_heads} KV heads over {tp} GPUs: each GPU keeps a replica of one KV head"
        ));
    }
    if !fits {
        notes.push(format!(
            "a single --max-model-len {} request does not fit: the pool holds {tokens} tokens; \
             vLLM refuses to start (lower --max-model-len to at most {tokens}, or add memory)",
            i.max_model_len
        ));
    }
    if let Some(ctx) = m.max_position_embeddings.filter(|&c| i.max_model_len > c) {
        notes.push(format!(
            "--max-model-len {} exceeds the model's context length {ctx}",
            i.max_model_len
        ));
    }
    if avg > i.max_model_len {
        notes.push(format!(
            "the average request ({avg} tokens) is longer than --max-model-len {}",
            i.max_model_len
        ));
    }
    if recommended == 0 {
        notes.push(
            "not even one average request fits with the buffer: add memory or shorten requests"
                .into(),
        );
    }
    notes.push(
        "the formula leaves out activation and CUDA-graph memory (vLLM profiles and subtracts \
         them, typically 1-4 GiB): treat the pool as an upper bound and confirm with \
         `candela bench serve`"
            .into(),
    );

    Ok(Plan {
        model: m.name.clone(),
        model_source: m.source.clone(),
        architecture: m.architecture.clone(),
        num_layers: m.num_layers,
        num_attention_heads: m.num_heads,
        num_kv_heads: kv_heads,
        num_kv_heads_model: m.num_kv_heads,
        head_dim: m.head_dim,
        value_head_dim: m.value_head_dim,
        params: m.params,
        gpu: i.gpu_name.clone(),
        gpu_memory_gib: i.gpu_memory_bytes as f64 / GIB,
        tensor_parallel_size: tp,
        gpu_memory_utilization: i.gpu_memory_utilization,
        usable_gib_per_gpu: usable as f64 / GIB,
        weights_gib: i.weight_bytes as f64 / GIB,
        weights_gib_per_gpu: weights_gpu as f64 / GIB,
        weights_source: i.weight_source.clone(),
        kv_cache_dtype: i.kv_dtype.name.to_string(),
        kv_cache_dtype_source: i.kv_dtype_source.clone(),
        kv_bytes_per_token_per_gpu: per_token_gpu,
        kv_bytes_per_token: per_token_gpu * tp,
        kv_pool_gib_per_gpu: pool_gpu as f64 / GIB,
        kv_pool_gib: (pool_gpu * tp) as f64 / GIB,
        block_size: i.block_size,
        kv_pool_blocks: blocks,
        kv_pool_tokens: tokens,
        avg_prompt_len: i.avg_prompt_len,
        avg_output_len: i.avg_output_len,
        avg_request_tokens: avg,
        theoretical_concurrency: concurrency,
        buffer: i.buffer,
        recommended_max_num_seqs: recommended,
        max_model_len: i.max_model_len,
        max_model_len_fits: fits,
        max_model_len_concurrency: tokens / i.max_model_len,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama-3-8B's shape (the real config: 8 KV heads).
    fn llama3_8b() -> ModelShape {
        ModelShape {
            source: "test".into(),
            name: "Llama-3-8B".into(),
            architecture: "llama".into(),
            num_layers: 32,
            num_heads: 32,
            num_kv_heads: 8,
            head_dim: 128,
            value_head_dim: 128,
            max_position_embeddings: Some(8192),
            params: 8_030_261_248,
            file_bytes: None,
            torch_dtype: Some("bfloat16".into()),
            quantization: None,
        }
    }

    fn inputs() -> Inputs {
        Inputs {
            model: llama3_8b(),
            num_kv_heads_override: None,
            gpu_name: Some("A100-80G".into()),
            gpu_memory_bytes: 80 << 30,
            tensor_parallel_size: 1,
            gpu_memory_utilization: 0.9,
            weight_bytes: 16 << 30,
            weight_source: "--weights-gib 16".into(),
            kv_dtype: Dtype {
                name: "bf16",
                bytes: 2.0,
            },
            kv_dtype_source: "test".into(),
            max_model_len: 8192,
            block_size: 16,
            avg_prompt_len: 500,
            avg_output_len: 300,
            buffer: 0.3,
        }
    }

    #[test]
    fn seed_example_without_gqa_is_reproduced() {
        // 80 x 0.9 - 16 = 56 GiB; 2 x 32 x 32 x 128 x 2 B = 512 KiB per token.
        let p = compute(&Inputs {
            num_kv_heads_override: Some(32),
            ..inputs()
        })
        .unwrap();
        assert_eq!(p.kv_bytes_per_token, 512 * 1024);
        assert!((p.kv_pool_gib - 56.0).abs() < 1e-6, "{}", p.kv_pool_gib);
        assert_eq!(p.kv_pool_tokens, 56 * 2048); // 114,688
        assert_eq!(p.theoretical_concurrency, 143.36);
        assert_eq!(p.recommended_max_num_seqs, 100); // the seed's "建议设 100"
        assert!(p.max_model_len_fits);
        assert_eq!(p.max_model_len_concurrency, 14);
        assert!(
            p.notes[0].contains("replaces the model's 8 KV heads"),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn gqa_stores_a_quarter_of_the_kv() {
        let p = compute(&inputs()).unwrap();
        assert_eq!(p.kv_bytes_per_token, 128 * 1024);
        assert_eq!(p.kv_pool_tokens, 4 * 56 * 2048);
        assert_eq!(p.recommended_max_num_seqs, 401); // 573.44 x 0.7
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("grouped-query") && n.contains("4x less"))
        );
    }

    #[test]
    fn pool_tokens_are_whole_blocks() {
        let p = compute(&Inputs {
            weight_bytes: (16 << 30) + 1,
            ..inputs()
        })
        .unwrap();
        assert_eq!(p.kv_pool_tokens % 16, 0);
        assert_eq!(p.kv_pool_tokens, 4 * 56 * 2048 - 16);
    }

    #[test]
    fn tensor_parallel_splits_weights_and_kv_heads() {
        let p = compute(&Inputs {
            tensor_parallel_size: 2,
            gpu_memory_bytes: 40 << 30,
            ..inputs()
        })
        .unwrap();
        // Each GPU: 36 - 8 = 28 GiB, 4 KV heads -> 64 KiB per token.
        assert_eq!(p.kv_bytes_per_token_per_gpu, 64 * 1024);
        assert_eq!(p.kv_pool_tokens, 28 * 16384);
        assert!((p.kv_pool_gib - 56.0).abs() < 1e-6);
        // 16 GPUs over 8 KV heads: replicated, one head per GPU.
        let p = compute(&Inputs {
            tensor_parallel_size: 16,
            ..inputs()
        })
        .unwrap();
        assert_eq!(p.kv_bytes_per_token_per_gpu, 16 * 1024);
        assert!(p.notes.iter().any(|n| n.contains("replica")));
        let e = compute(&Inputs {
            tensor_parallel_size: 3,
            ..inputs()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("does not divide the 32 attention heads"),
            "{e}"
        );
    }

    #[test]
    fn fp8_kv_doubles_the_pool_tokens() {
        let base = compute(&inputs()).unwrap();
        let fp8 = compute(&Inputs {
            kv_dtype: Dtype {
                name: "fp8",
                bytes: 1.0,
            },
            ..inputs()
        })
        .unwrap();
        assert_eq!(fp8.kv_pool_tokens, 2 * base.kv_pool_tokens);
    }

    #[test]
    fn max_model_len_that_does_not_fit_is_flagged() {
        let p = compute(&Inputs {
            gpu_memory_bytes: 20 << 30,
            num_kv_heads_override: Some(32),
            max_model_len: 8192,
            ..inputs()
        })
        .unwrap();
        // 18 - 16 = 2 GiB -> 4096 tokens.
        assert_eq!(p.kv_pool_tokens, 4096);
        assert!(!p.max_model_len_fits);
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("does not fit") && n.contains("at most 4096"))
        );
    }

    #[test]
    fn weights_that_fill_the_gpu_are_refused() {
        let e = compute(&Inputs {
            gpu_memory_bytes: 16 << 30,
            ..inputs()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("the weights need 16.00 GiB per GPU"), "{e}");
    }

    #[test]
    fn out_of_range_flags_are_refused() {
        for (bad, what) in [
            (
                Inputs {
                    gpu_memory_utilization: 1.5,
                    ..inputs()
                },
                "--gpu-memory-utilization",
            ),
            (
                Inputs {
                    buffer: 1.0,
                    ..inputs()
                },
                "--buffer",
            ),
            (
                Inputs {
                    block_size: 0,
                    ..inputs()
                },
                "--block-size",
            ),
            (
                Inputs {
                    avg_prompt_len: 0,
                    avg_output_len: 0,
                    ..inputs()
                },
                "--avg-prompt-len",
            ),
        ] {
            let e = compute(&bad).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
    }
}
