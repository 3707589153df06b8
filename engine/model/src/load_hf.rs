//! Loading a llama-family decoder from a Hugging Face directory
//! (`config.json` + `*.safetensors`).
//!
//! The safetensors files are memory-mapped; `f16` and `bf16` tensors stay 16-bit
//! (held as `QTensor`s of that dtype, so linear layers run Candela's 16-bit ×
//! `f32` kernels, see `qmatmul.rs`), any other dtype is widened to an `f32`
//! `QTensor`; either way matmuls run a batch-invariant path (see `llama.rs`).
//! Tensor names are [`HF_NAMES`]; the model is assembled by
//! [`crate::builder::build_llama`]. Rope is the non-interleaved "half" pairing
//! of the Hugging Face layout.

use std::path::{Path, PathBuf};

use std::borrow::Cow;

use half::slice::HalfFloatSliceExt;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use serde::Deserialize;

use crate::builder::{LayerNames, TensorNames, WeightSource, build_llama};
use crate::llama::{Llama, ModelConfig};
use crate::rope::RopeTable;
use crate::{Error, Result};

/// The fields of `config.json` we read.
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    pub num_hidden_layers: usize,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// One id or a list.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
}

fn default_max_pos() -> usize {
    4096
}

fn default_eps() -> f64 {
    1e-6
}

/// Reads and parses a JSON file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&s).map_err(|source| Error::Json {
        path: path.into(),
        source,
    })
}

/// Parses `dir/config.json` into the model shape.
///
/// # Errors
/// [`Error::Unsupported`] for other architectures; I/O and JSON errors.
pub fn hf_config(dir: &Path) -> Result<(HfConfig, ModelConfig)> {
    let hf: HfConfig = read_json(&dir.join("config.json"))?;
    let arch = hf.model_type.clone().unwrap_or_else(|| "llama".into());
    let known = matches!(arch.as_str(), "llama" | "mistral" | "qwen2");
    if !known {
        return Err(Error::Unsupported(format!(
            "model_type `{arch}` ({:?}); supported: llama, mistral, qwen2",
            hf.architectures
        )));
    }
    let cfg = ModelConfig {
        num_layers: hf.num_hidden_layers,
        num_heads: hf.num_attention_heads,
        num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        head_dim: hf
            .head_dim
            .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        vocab_size: hf.vocab_size,
        max_position_embeddings: hf.max_position_embeddings,
        rope_theta: hf.rope_theta.unwrap_or(10_000.0) as f32,
        rms_norm_eps: hf.rms_norm_eps,
        architecture: arch,
    };
    cfg.check()?;
    Ok((hf, cfg))
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.into(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::InvalidModel(format!(
            "no *.safetensors in {}",
            dir.display()
        )));
    }
    Ok(files)
}

/// Tensor names of Hugging Face llama-family checkpoints.
pub(crate) const HF_NAMES: TensorNames = TensorNames {
    embed: "model.embed_tokens",
    output_norm: "model.norm",
    lm_head: "lm_head",
    layer_prefix: "model.layers.",
    layer: LayerNames {
        attn_norm: "input_layernorm",
        q: "self_attn.q_proj",
        k: "self_attn.k_proj",
        v: "self_attn.v_proj",
        o: "self_attn.o_proj",
        ffn_norm: "post_attention_layernorm",
        gate: "mlp.gate_proj",
        up: "mlp.up_proj",
        down: "mlp.down_proj",
    },
};

/// Memory-mapped safetensors files; tensors come out as `f16`/`bf16` `QTensor`s
/// when stored so, else as `f32` ones.
struct SafetensorsWeights(MmapedSafetensors);

impl WeightSource for SafetensorsWeights {
    const FORMAT: &'static str = "safetensors";
    const NAMES: TensorNames = HF_NAMES;

    fn has(&self, name: &str) -> bool {
        self.0.get(name).is_ok()
    }

    fn tensor(&mut self, name: &str) -> Result<QTensor> {
        let t = self.0.load(name, &Device::Cpu)?;
        let flat = t.flatten_all()?;
        let (ggml, bytes): (_, Vec<u8>) = match t.dtype() {
            DType::F16 => (
                GgmlDType::F16,
                le_bytes(flat.to_vec1::<half::f16>()?.reinterpret_cast()),
            ),
            DType::BF16 => (
                GgmlDType::BF16,
                le_bytes(flat.to_vec1::<half::bf16>()?.reinterpret_cast()),
            ),
            _ => return Ok(QTensor::quantize(&t.to_dtype(DType::F32)?, GgmlDType::F32)?),
        };
        let storage = QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, ggml)?;
        Ok(QTensor::new(storage, t.shape())?)
    }
}

/// 16-bit values' bits as the little-endian bytes a `QStorage` holds.
fn le_bytes(bits: &[u16]) -> Vec<u8> {
    bits.iter().flat_map(|b| b.to_le_bytes()).collect()
}

fn rope_inv_freq(hf: &HfConfig, cfg: &ModelConfig) -> Result<Vec<f32>> {
    let mut inv = RopeTable::default_inv_freq(cfg.head_dim, cfg.rope_theta);
    let Some(rs) = hf.rope_scaling.as_ref().filter(|v| !v.is_null()) else {
        return Ok(inv);
    };
    let kind = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(|v| v.as_str());
    let num = |k: &str| {
        rs.get(k)
            .and_then(serde_json::Value::as_f64)
            .map(|v| v as f32)
    };
    match kind {
        Some("default") => {}
        Some("llama3") => {
            let (Some(f), Some(lo), Some(hi), Some(orig)) = (
                num("factor"),
                num("low_freq_factor"),
                num("high_freq_factor"),
                num("original_max_position_embeddings"),
            ) else {
                return Err(Error::InvalidModel("incomplete llama3 rope_scaling".into()));
            };
            RopeTable::llama3_scale(&mut inv, f, lo, hi, orig);
        }
        other => return Err(Error::Unsupported(format!("rope_scaling type {other:?}"))),
    }
    Ok(inv)
}

/// Builds the model (in host memory) from a Hugging Face directory.
///
/// # Errors
/// [`Error::Unsupported`] for other architectures or rope scalings;
/// [`Error::InvalidModel`] for missing tensors; I/O errors.
pub fn load_hf_model(dir: &Path) -> Result<(Llama, HfConfig)> {
    let (hf, cfg) = hf_config(dir)?;
    let files = safetensors_files(dir)?;
    // SAFETY: the files are mapped read-only; like every mmap user we rely on nobody
    // truncating them while the model loads (weights are copied out before returning).
    let mut src = SafetensorsWeights(unsafe { MmapedSafetensors::multi(&files)? });
    let rope = RopeTable::new(
        &rope_inv_freq(&hf, &cfg)?,
        cfg.max_position_embeddings,
        false,
    );
    let model = build_llama(&mut src, cfg, rope, hf.tie_word_embeddings)?;
    Ok((model, hf))
}
