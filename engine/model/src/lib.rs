//! Candela's model crate: everything that touches tensors.
//!
//! - [`load`]: a GGUF file or a Hugging Face directory → [`LoadedModel`]
//!   (model, tokenizer, chat template, special ids, shape, weight bytes); one
//!   builder (`builder.rs`) assembles the model from either format's weight source.
//! - [`llama`]: the llama-family decoder (Llama, Mistral, SmolLM, Qwen2) whose
//!   `forward` takes a flattened [`ForwardBatch`] and a [`PagedKvCache`] it does
//!   not own.
//! - [`kv_cache`], [`attention`]: the paged KV pool and the CPU paged-attention
//!   kernel (bit-identical results however a sequence is chunked or batched).
//! - [`device_llama`], [`device_kv`]: the same decoder as candle tensor ops on a
//!   device (CUDA with the `cuda` feature; tested on the CPU device), with its KV
//!   pool as device tensors.
//! - [`sampler`]: vLLM-order sampling with per-request RNGs and raw logprobs;
//!   [`sampler::spec_verify`]: speculative sampling's acceptance rule over its distributions.
//! - [`draft`]: speculative decoding's draft model, on the target's block tables.
//! - [`lora`]: PEFT LoRA adapters and their per-row updates in a mixed batch.
//! - [`runner`]: [`ModelRunner::execute`] — swap copies, forward, sampling for
//!   one scheduler step; [`reference`]: the single-sequence exactness reference.
//! - [`tokenizer`], [`chat_template`]: text in and out.
//!
//! Loading always reads weights into host memory; [`ModelRunner::with_path`] then
//! runs them on Candela's CPU kernels or copies them to a device. Activations and
//! the KV cache are `f32` on both paths (quantized GGUF weights stay quantized).

pub mod attention;
pub mod batch;
mod builder;
pub mod chat_template;
pub mod device_kv;
pub mod device_llama;
pub mod draft;
pub mod error;
pub mod hf_export;
pub mod kv_cache;
pub mod llama;
pub mod load_gguf;
pub mod load_hf;
pub mod lora;
mod paged_decode;
pub mod pool;
pub mod qmatmul;
pub mod reference;
pub mod rope;
pub mod runner;
pub mod sampler;
pub mod tokenizer;
mod weight_buf;

use std::path::Path;

pub use batch::{ForwardBatch, SeqInput, SeqSlice};
pub use chat_template::ChatTemplate;
pub use device_kv::DeviceKvCache;
pub use device_llama::DeviceLlama;
pub use draft::DraftModel;
pub use error::{Error, Result};
pub use kv_cache::{LayerKv, PagedKvCache};
pub use llama::{Llama, ModelConfig};
pub use lora::LoraAdapter;
pub use reference::{ReferenceRun, reference_generate_greedy, reference_logits};
pub use runner::{
    Drafter, ExecPath, ModelRunner, PromptLogprobsArgs, PromptLogprobsChunk, RunnerConfig,
    SampleArgs, StepSeq,
};
pub use sampler::Sampler;
pub use tokenizer::TokenizerBundle;

/// A model ready to serve, with everything the server needs around it.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: Llama,
    pub tokenizer: tokenizers::Tokenizer,
    pub chat_template: Option<String>,
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    /// Token strings for the chat template's `bos_token` / `eos_token`.
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub config: ModelConfig,
    pub weight_bytes: u64,
}

/// Hands the allocator's free memory back to the OS. Loading reads every tensor into a
/// transient buffer before converting it into its weight buffer; glibc keeps those freed
/// buffers (its mmap threshold grows with the first large free), which left a few hundred
/// MB of resident but unused heap behind a loaded model.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free pages of glibc's heaps to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Has the allocator map buffers of 4 MiB and more on their own and unmap them when
/// freed, for the life of the process (a server calls it before loading). glibc's default
/// raises that threshold to the largest buffer freed so far (up to 32 MiB), after which
/// the multi-MB buffers each weight is read into at load stay resident once freed. On
/// Qwen2.5-0.5B Q4_K_M, alternated runs at concurrency 32: idle RSS 785 → 563 MB, serving
/// peak 960 → 865 MB, for about 4 % of output tokens/s (1 MiB cost 7 %: a decode step's
/// gate/up outputs are above it; 8 and 16 MiB kept the load buffers).
pub fn return_large_buffers_to_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets glibc's allocation policy.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Loads a GGUF file (with its embedded tokenizer) or a Hugging Face directory
/// (`config.json`, `*.safetensors`, `tokenizer.json`, `tokenizer_config.json`)
/// into host memory; [`ModelRunner::with_path`] then runs it on Candela's CPU
/// kernels or copies it to a device. Compute is `f32` either way (half-precision
/// checkpoints are widened, quantized GGUF weights stay quantized), which is all
/// `--dtype` accepts (`auto`, `f32`).
///
/// # Errors
/// [`Error::Io`] when `path` does not exist; [`Error::Unsupported`] for unknown
/// architectures or tokenizer kinds; [`Error::InvalidModel`] for missing tensors
/// or metadata.
pub fn load(path: &Path) -> Result<LoadedModel> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    let (model, tk) = if meta.is_dir() {
        let mut tk = tokenizer::tokenizer_from_hf_dir(path)?;
        let (model, hf) = load_hf::load_hf_model(path)?;
        if tk.bos_token_id.is_none() {
            tk.bos_token_id = hf.bos_token_id;
        }
        (model, tk)
    } else {
        let (content, mut file) = load_gguf::read_gguf(path)?;
        let tk = tokenizer::tokenizer_from_gguf(&content)?;
        (load_gguf::load_gguf_model(&content, &mut file)?, tk)
    };
    let config = model.config().clone();
    let weight_bytes = model.weight_bytes();
    release_freed_memory();
    Ok(LoadedModel {
        model,
        tokenizer: tk.tokenizer,
        chat_template: tk.chat_template,
        eos_token_ids: tk.eos_token_ids,
        bos_token_id: tk.bos_token_id,
        bos_token: tk.bos_token,
        eos_token: tk.eos_token,
        config,
        weight_bytes,
    })
}
