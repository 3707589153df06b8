//! One model builder over any checkpoint format: a [`WeightSource`] answers
//! "is tensor `name` there?" and "give me tensor `name`", its [`TensorNames`]
//! says what the format calls each tensor, and [`build_llama`] assembles the
//! decoder from them (candle's `VarBuilder` over `SimpleBackend` is the model).
//! GGUF files (`load_gguf.rs`) and safetensors directories (`load_hf.rs`)
//! differ only in their source, their name table, and the rope table and
//! embedding tying they read from their own metadata.
//!
//! Invariants: every linear weight is held as a `QTensor` (quantized blocks
//! stay quantized, `f16`/`bf16` stay 16-bit, everything else `f32`; see
//! `llama.rs` for why never a dense
//! tensor); norms and biases are read once into `f32` vectors. Costs: each
//! tensor is read once into host memory; `weight_bytes` counts what is held.

use std::sync::Arc;

use candle_core::Device;
use candle_core::quantized::QTensor;

use crate::llama::{Embedding, Fused, Layer, Linear, Llama, ModelConfig, Weight, flat};
use crate::rope::RopeTable;
use crate::{Error, Result};

/// A checkpoint's tensors by name, read into host memory.
pub(crate) trait WeightSource {
    /// The format in messages: "GGUF tensor `x` is missing".
    const FORMAT: &'static str;
    /// What this format calls each tensor.
    const NAMES: TensorNames;

    /// Whether the checkpoint holds tensor `name`.
    fn has(&self, name: &str) -> bool;

    /// Tensor `name` (which [`WeightSource::has`]) as a host `QTensor`: quantized
    /// blocks as stored, any other dtype widened to `f32`.
    ///
    /// # Errors
    /// [`Error::Candle`] when its data cannot be read or converted.
    fn tensor(&mut self, name: &str) -> Result<QTensor>;
}

/// Where a format keeps the decoder's tensors: module names, to which the builder
/// appends `.weight` (and `.bias` where the checkpoint has one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorNames {
    /// The token embedding `[vocab, hidden]`.
    pub embed: &'static str,
    /// The final RMSNorm.
    pub output_norm: &'static str,
    /// The output projection; absent (or ignored) when tied to the embedding.
    pub lm_head: &'static str,
    /// Layer `i`'s modules are `{layer_prefix}{i}.{module}`.
    pub layer_prefix: &'static str,
    pub layer: LayerNames,
}

/// The module names inside one decoder layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerNames {
    pub attn_norm: &'static str,
    pub q: &'static str,
    pub k: &'static str,
    pub v: &'static str,
    pub o: &'static str,
    pub ffn_norm: &'static str,
    pub gate: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

impl TensorNames {
    /// Layer `i`'s `module` (e.g. `blk.3.attn_q`).
    pub fn in_layer(&self, i: usize, module: &str) -> String {
        format!("{}{i}.{module}", self.layer_prefix)
    }
}

/// Builds the decoder from `src`: layers by the name table, the LM head from
/// its own weight unless `tie_embeddings` (or the checkpoint has none), with the
/// rope table the format's metadata gave.
///
/// # Errors
/// [`Error::InvalidModel`] naming the first missing tensor; [`Error::Candle`] for
/// unreadable or misshapen tensor data.
pub(crate) fn build_llama<S: WeightSource>(
    src: &mut S,
    cfg: ModelConfig,
    rope: RopeTable,
    tie_embeddings: bool,
) -> Result<Llama> {
    let names = S::NAMES;
    let mut w = Weights { src, bytes: 0 };
    let embed = Arc::new(w.tensor(&format!("{}.weight", names.embed))?);
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let (n, p) = (&names.layer, |m: &str| names.in_layer(i, m));
        layers.push(Layer {
            attn_norm: w.vector(&p(n.attn_norm))?,
            qkv: Fused::new(vec![
                w.linear(&p(n.q))?,
                w.linear(&p(n.k))?,
                w.linear(&p(n.v))?,
            ]),
            o: w.linear(&p(n.o))?,
            ffn_norm: w.vector(&p(n.ffn_norm))?,
            gate_up: Fused::new(vec![w.linear(&p(n.gate))?, w.linear(&p(n.up))?]),
            down: w.linear(&p(n.down))?,
        });
    }
    let norm = w.vector(names.output_norm)?;
    let (embed, lm_head) = if !tie_embeddings && w.src.has(&format!("{}.weight", names.lm_head)) {
        (Embedding::Table(embed), w.linear(names.lm_head)?)
    } else {
        let head = Linear::new(embed.clone(), None)?;
        match head.w {
            // The head copied the table into its matrix: look rows up there.
            Weight::Quant(_) => (Embedding::TiedToHead, head),
            Weight::Candle(_) => (Embedding::Table(embed), head),
        }
    };
    Ok(Llama {
        cfg,
        embed,
        layers,
        norm,
        lm_head,
        rope,
        weight_bytes: w.bytes,
    })
}

/// A source plus the byte count of what has been taken from it.
struct Weights<'a, S> {
    src: &'a mut S,
    bytes: u64,
}

impl<S: WeightSource> Weights<'_, S> {
    /// The one refusal of a missing tensor, whatever the format.
    fn tensor(&mut self, name: &str) -> Result<QTensor> {
        if !self.src.has(name) {
            return Err(Error::InvalidModel(format!(
                "{} tensor `{name}` is missing",
                S::FORMAT
            )));
        }
        let t = self.src.tensor(name)?;
        self.bytes += t.storage_size_in_bytes() as u64;
        Ok(t)
    }

    /// `{module}.weight` as a flat `f32` vector (norms).
    fn vector(&mut self, module: &str) -> Result<Vec<f32>> {
        self.dense(&format!("{module}.weight"))
    }

    fn dense(&mut self, name: &str) -> Result<Vec<f32>> {
        flat(&self.tensor(name)?.dequantize(&Device::Cpu)?)
    }

    /// `{module}.weight` and, when present, `{module}.bias`.
    fn linear(&mut self, module: &str) -> Result<Linear> {
        let w = Arc::new(self.tensor(&format!("{module}.weight"))?);
        let bias = format!("{module}.bias");
        let b = if self.src.has(&bias) {
            Some(self.dense(&bias)?)
        } else {
            None
        };
        Linear::new(w, b)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::Tensor;
    use candle_core::quantized::GgmlDType;

    use super::*;

    /// Tensors in a map, named like a tiny GGUF.
    struct MapSource(HashMap<String, Tensor>);

    impl WeightSource for MapSource {
        const FORMAT: &'static str = "test";
        const NAMES: TensorNames = crate::load_gguf::GGUF_NAMES;
        fn has(&self, name: &str) -> bool {
            self.0.contains_key(name)
        }
        fn tensor(&mut self, name: &str) -> Result<QTensor> {
            Ok(QTensor::quantize(&self.0[name], GgmlDType::F32)?)
        }
    }

    fn tiny() -> (MapSource, ModelConfig) {
        let cfg = ModelConfig {
            num_layers: 1,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 4,
            hidden_size: 8,
            intermediate_size: 16,
            vocab_size: 10,
            max_position_embeddings: 16,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            architecture: "llama".into(),
        };
        let t =
            |shape: &[usize]| Tensor::ones(shape, candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut m = HashMap::new();
        m.insert("token_embd.weight".into(), t(&[10, 8]));
        m.insert("output_norm.weight".into(), t(&[8]));
        for (name, shape) in [
            ("attn_norm", &[8][..]),
            ("ffn_norm", &[8]),
            ("attn_q", &[8, 8]),
            ("attn_k", &[4, 8]),
            ("attn_v", &[4, 8]),
            ("attn_output", &[8, 8]),
            ("ffn_gate", &[16, 8]),
            ("ffn_up", &[16, 8]),
            ("ffn_down", &[8, 16]),
        ] {
            m.insert(format!("blk.0.{name}.weight"), t(shape));
        }
        m.insert("blk.0.attn_q.bias".into(), t(&[8]));
        (MapSource(m), cfg)
    }

    fn rope(cfg: &ModelConfig) -> RopeTable {
        RopeTable::new(
            &RopeTable::default_inv_freq(cfg.head_dim, cfg.rope_theta),
            cfg.max_position_embeddings,
            true,
        )
    }

    #[test]
    fn builds_from_any_source_and_counts_what_it_holds() {
        let (mut src, cfg) = tiny();
        let elems: usize = src.0.values().map(Tensor::elem_count).sum();
        let m = build_llama(&mut src, cfg.clone(), rope(&cfg), false).unwrap();
        assert_eq!(m.weight_bytes(), 4 * elems as u64, "every tensor once, f32");
        assert_eq!(m.layers.len(), 1);
        assert!(m.layers[0].o.b.is_none());
        match &m.layers[0].qkv {
            Fused::Separate(p) => assert_eq!(p[0].b.as_deref(), Some(&[1.0f32; 8][..])),
            Fused::Stacked { .. } => panic!("f32 projections are not stacked"),
        }
    }

    #[test]
    fn a_missing_tensor_is_named() {
        let (mut src, cfg) = tiny();
        src.0.remove("blk.0.ffn_up.weight");
        let err = build_llama(&mut src, cfg.clone(), rope(&cfg), false).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidModel(m) if m == "test tensor `blk.0.ffn_up.weight` is missing"),
            "{err}"
        );
    }
}
