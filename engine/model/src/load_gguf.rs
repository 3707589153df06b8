//! Loading a llama-family decoder from a GGUF file.
//!
//! Tensor names follow llama.cpp (`token_embd`, `blk.N.attn_q`, ...). Quantized
//! weights stay quantized (`QMatMul` runs the quantized vec-dot); `f16`/`bf16`
//! matrices are widened to `f32` so activations are never rounded to half
//! precision. Rope pairing: llama.cpp permutes llama q/k for interleaved rope;
//! qwen2 is stored unpermuted (NeoX-style half rope).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::llama::{Fused, Layer, Linear, Llama, ModelConfig, flat};
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

struct Reader<'a> {
    md: &'a Content,
    file: &'a mut File,
    device: &'a Device,
    bytes: u64,
}

impl Reader<'_> {
    fn has(&self, name: &str) -> bool {
        self.md.tensor_infos.contains_key(name)
    }

    fn qtensor(&mut self, name: &str) -> Result<Arc<QTensor>> {
        if !self.has(name) {
            return Err(Error::InvalidModel(format!(
                "GGUF tensor `{name}` is missing"
            )));
        }
        let mut t = self.md.tensor(self.file, name, self.device)?;
        if matches!(t.dtype(), GgmlDType::F16 | GgmlDType::BF16) {
            t = QTensor::quantize(&t.dequantize(self.device)?, GgmlDType::F32)?;
        }
        self.bytes += t.storage_size_in_bytes() as u64;
        Ok(Arc::new(t))
    }

    fn dense(&mut self, name: &str) -> Result<Tensor> {
        let t = self.qtensor(name)?;
        Ok(t.dequantize(self.device)?.to_dtype(DType::F32)?)
    }

    fn linear(&mut self, name: &str) -> Result<Linear> {
        let w = self.qtensor(&format!("{name}.weight"))?;
        let bias = format!("{name}.bias");
        let b = if self.has(&bias) {
            Some(self.dense(&bias)?)
        } else {
            None
        };
        Linear::new(w, b)
    }
}

/// Builds the model from an opened GGUF file.
///
/// # Errors
/// [`Error::Unsupported`] off CPU or for unknown architectures, [`Error::InvalidModel`]
/// for missing tensors, [`Error::Candle`] for unreadable tensor data.
pub fn load_gguf_model(md: &Content, file: &mut File, device: &Device) -> Result<Llama> {
    if !device.is_cpu() {
        return Err(Error::Unsupported(
            "models load into host memory (Device::Cpu); ModelRunner::with_path puts them on a device".into(),
        ));
    }
    let cfg = gguf_config(md)?;
    let mut r = Reader {
        md,
        file,
        device,
        bytes: 0,
    };
    let embed = r.qtensor("token_embd.weight")?;
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        layers.push(Layer {
            attn_norm: flat(&r.dense(&p("attn_norm.weight"))?)?,
            qkv: Fused::new(vec![
                r.linear(&p("attn_q"))?,
                r.linear(&p("attn_k"))?,
                r.linear(&p("attn_v"))?,
            ]),
            o: r.linear(&p("attn_output"))?,
            ffn_norm: flat(&r.dense(&p("ffn_norm.weight"))?)?,
            gate_up: Fused::new(vec![r.linear(&p("ffn_gate"))?, r.linear(&p("ffn_up"))?]),
            down: r.linear(&p("ffn_down"))?,
        });
    }
    let norm = flat(&r.dense("output_norm.weight")?)?;
    let lm_head = if r.has("output.weight") {
        r.linear("output")?
    } else {
        Linear::new(embed.clone(), None)?
    };
    let mut inv_freq = RopeTable::default_inv_freq(cfg.head_dim, cfg.rope_theta);
    if r.has("rope_freqs.weight") {
        // llama 3.1+ frequency factors: divide each frequency by its factor.
        let f = r.dense("rope_freqs.weight")?.to_vec1::<f32>()?;
        if f.len() != inv_freq.len() {
            return Err(Error::InvalidModel(
                "rope_freqs.weight has the wrong length".into(),
            ));
        }
        inv_freq.iter_mut().zip(f).for_each(|(x, d)| *x /= d);
    }
    let interleaved = cfg.architecture != "qwen2";
    let rope = RopeTable::new(&inv_freq, cfg.max_position_embeddings, interleaved);
    let weight_bytes = r.bytes;
    Ok(Llama {
        cfg,
        embed,
        layers,
        norm,
        lm_head,
        rope,
        device: device.clone(),
        weight_bytes,
    })
}
