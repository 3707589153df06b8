//! Loading a llama-family decoder from a GGUF file.
//!
//! Tensor names follow llama.cpp ([`GGUF_NAMES`]: `token_embd`, `blk.N.attn_q`,
//! ...); the model is assembled by [`crate::builder::build_llama`]. Quantized
//! weights stay quantized; `f16`/`bf16` matrices are widened to `f32` so
//! activations are never rounded to half precision. Rope pairing: llama.cpp
//! permutes llama q/k for interleaved rope; qwen2 is stored unpermuted
//! (NeoX-style half rope).

use std::fs::File;
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};

use crate::builder::{LayerNames, TensorNames, WeightSource, build_llama};
use crate::llama::{Llama, ModelConfig, flat};
use crate::rope::RopeTable;
use crate::{Error, Result};

/// Reads the GGUF header (metadata and tensor index) of `path`.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened; [`Error::Candle`] when it is not GGUF.
pub fn read_gguf(path: &Path) -> Result<(Content, File)> {
    let mut f = File::open(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    let content = Content::read(&mut f)?;
    Ok((content, f))
}

/// Any non-negative integer metadata value as `u64`, by candela-gguf's one rule
/// (`candela plan` reads the same keys with it): a negative count is missing, not
/// a wrapped-around huge one.
pub(crate) fn md_u64(md: &Content, key: &str) -> Option<u64> {
    use candela_gguf::Value as V;
    let v = match *md.metadata.get(key)? {
        Value::U8(v) => V::U8(v),
        Value::I8(v) => V::I8(v),
        Value::U16(v) => V::U16(v),
        Value::I16(v) => V::I16(v),
        Value::U32(v) => V::U32(v),
        Value::I32(v) => V::I32(v),
        Value::U64(v) => V::U64(v),
        Value::I64(v) => V::I64(v),
        _ => return None,
    };
    v.as_u64()
}

pub(crate) fn md_f64(md: &Content, key: &str) -> Option<f64> {
    match md.metadata.get(key)? {
        Value::F32(v) => Some(*v as f64),
        Value::F64(v) => Some(*v),
        _ => md_u64(md, key).map(|v| v as f64),
    }
}

pub(crate) fn md_str<'a>(md: &'a Content, key: &str) -> Option<&'a str> {
    match md.metadata.get(key)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn need(md: &Content, key: &str) -> Result<usize> {
    md_u64(md, key)
        .map(|v| v as usize)
        .ok_or_else(|| Error::InvalidModel(format!("GGUF metadata `{key}` is missing")))
}

/// Reads the model shape from GGUF metadata.
///
/// # Errors
/// [`Error::Unsupported`] for architectures other than llama / qwen2 / mistral;
/// [`Error::InvalidModel`] when required keys are missing.
pub fn gguf_config(md: &Content) -> Result<ModelConfig> {
    let arch = md_str(md, "general.architecture")
        .ok_or_else(|| Error::InvalidModel("GGUF has no general.architecture".into()))?
        .to_string();
    if !matches!(arch.as_str(), "llama" | "qwen2" | "mistral") {
        return Err(Error::Unsupported(format!(
            "GGUF architecture `{arch}` (supported: llama, mistral, qwen2)"
        )));
    }
    let k = |s: &str| format!("{arch}.{s}");
    let hidden = need(md, &k("embedding_length"))?;
    let heads = need(md, &k("attention.head_count"))?;
    let kv_heads = md_u64(md, &k("attention.head_count_kv")).map_or(heads, |v| v as usize);
    let head_dim = md_u64(md, &k("attention.key_length"))
        .or_else(|| md_u64(md, &k("rope.dimension_count")))
        .map_or(hidden / heads.max(1), |v| v as usize);
    let vocab = match md.tensor_infos.get("token_embd.weight") {
        Some(info) => info.shape.dims().first().copied().unwrap_or(0),
        None => return Err(Error::InvalidModel("GGUF has no token_embd.weight".into())),
    };
    let cfg = ModelConfig {
        num_layers: need(md, &k("block_count"))?,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        hidden_size: hidden,
        intermediate_size: need(md, &k("feed_forward_length"))?,
        vocab_size: vocab,
        max_position_embeddings: need(md, &k("context_length"))?,
        rope_theta: md_f64(md, &k("rope.freq_base")).unwrap_or(10_000.0) as f32,
        rms_norm_eps: md_f64(md, &k("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
        architecture: arch,
    };
    cfg.check()?;
    Ok(cfg)
}

/// llama.cpp's tensor names.
pub(crate) const GGUF_NAMES: TensorNames = TensorNames {
    embed: "token_embd",
    output_norm: "output_norm",
    lm_head: "output",
    layer_prefix: "blk.",
    layer: LayerNames {
        attn_norm: "attn_norm",
        q: "attn_q",
        k: "attn_k",
        v: "attn_v",
        o: "attn_output",
        ffn_norm: "ffn_norm",
        gate: "ffn_gate",
        up: "ffn_up",
        down: "ffn_down",
    },
};

/// An opened GGUF file's tensors.
struct GgufWeights<'a> {
    md: &'a Content,
    file: &'a mut File,
}

impl WeightSource for GgufWeights<'_> {
    const FORMAT: &'static str = "GGUF";
    const NAMES: TensorNames = GGUF_NAMES;

    fn has(&self, name: &str) -> bool {
        self.md.tensor_infos.contains_key(name)
    }

    fn tensor(&mut self, name: &str) -> Result<QTensor> {
        let t = self.md.tensor(self.file, name, &Device::Cpu)?;
        if matches!(t.dtype(), GgmlDType::F16 | GgmlDType::BF16) {
            return Ok(QTensor::quantize(
                &t.dequantize(&Device::Cpu)?,
                GgmlDType::F32,
            )?);
        }
        Ok(t)
    }
}

/// Builds the model (in host memory) from an opened GGUF file.
///
/// # Errors
/// [`Error::Unsupported`] for unknown architectures, [`Error::InvalidModel`] for
/// missing tensors, [`Error::Candle`] for unreadable tensor data.
pub fn load_gguf_model(md: &Content, file: &mut File) -> Result<Llama> {
    let cfg = gguf_config(md)?;
    let mut src = GgufWeights { md, file };
    let mut inv_freq = RopeTable::default_inv_freq(cfg.head_dim, cfg.rope_theta);
    let freqs = "rope_freqs.weight";
    if src.has(freqs) {
        // llama 3.1+ frequency factors: divide each frequency by its factor.
        let f = flat(&src.tensor(freqs)?.dequantize(&Device::Cpu)?)?;
        if f.len() != inv_freq.len() {
            return Err(Error::InvalidModel(
                "rope_freqs.weight has the wrong length".into(),
            ));
        }
        inv_freq.iter_mut().zip(f).for_each(|(x, d)| *x /= d);
    }
    let interleaved = cfg.architecture != "qwen2";
    let rope = RopeTable::new(&inv_freq, cfg.max_position_embeddings, interleaved);
    // Tied when the file has no `output.weight`.
    build_llama(&mut src, cfg, rope, false)
}
