//! The llama-family decoder (Llama, Mistral, SmolLM, Qwen2) over a flattened
//! batch with a paged KV cache the caller owns.
//!
//! One [`Llama::forward`] runs one engine step: every sequence's new tokens go
//! through each linear layer together as one `[T, hidden]` matrix (the weights
//! are read once per step, whatever the batch), while rope and attention work
//! per token on flat `f32` rows with each token's own position and block table.
//!
//! Exactness: every op is row-wise (RMSNorm, rope, SiLU, residual adds) or
//! computes each output row from its own input row with a fixed summation
//! order (Candela's kernels in `qmatmul.rs`, candle's `QTensor` vec-dot for
//! other formats, the paged attention kernel), so a token's logits do not
//! depend on which other tokens share the batch. Linear weights are therefore
//! always held as quantized blocks or 16-bit/`f32` `QTensor`s rather than a
//! dense tensor whose BLAS path would pick kernels by batch size.
//!
//! Loading lives in `builder.rs` (one builder over `load_gguf.rs`'s and
//! `load_hf.rs`'s weight sources). The model is always in host memory;
//! `device_llama.rs` copies it to a device.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::attention::{paged_attention, write_kv};
use crate::batch::ForwardBatch;
use crate::kv_cache::PagedKvCache;
use crate::lora::{LoraRows, Target};
use crate::qmatmul::{QFormat, QMatrix};
use crate::rope::RopeTable;
use crate::{Error, Result};

/// The shape of a loaded model; enough to size KV pools and validate requests.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f64,
    /// `llama`, `qwen2`, `mistral`, ... (GGUF `general.architecture` or HF `model_type`).
    pub architecture: String,
}

impl ModelConfig {
    /// KV cache bytes of one token across all layers, K and V: `f16` in the CPU
    /// runner's pool, `f32` in a device pool (`on_device`).
    pub fn kv_bytes_per_token(&self, on_device: bool) -> u64 {
        let (l, h, d) = (self.num_layers, self.num_kv_heads, self.head_dim);
        match on_device {
            false => PagedKvCache::<half::f16>::bytes_per_block(l, 1, h, d),
            true => PagedKvCache::<f32>::bytes_per_block(l, 1, h, d),
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        let c = self;
        if c.num_layers == 0 || c.num_heads == 0 || c.num_kv_heads == 0 || c.head_dim == 0 {
            return Err(Error::InvalidModel(format!("degenerate model shape {c:?}")));
        }
        if !c.num_heads.is_multiple_of(c.num_kv_heads) || !c.head_dim.is_multiple_of(2) {
            return Err(Error::InvalidModel(format!(
                "{} heads / {} KV heads / head_dim {} is not a valid attention layout",
                c.num_heads, c.num_kv_heads, c.head_dim
            )));
        }
        Ok(())
    }
}

/// A linear layer's weight: Candela's SIMD kernels where they cover the format,
/// else candle's quantized matmul.
#[derive(Debug, Clone)]
pub(crate) enum Weight {
    /// Other GGUF formats (Q2_K, Q3_K, Q5_1, ...) and `f32`.
    Candle(QMatMul),
    /// Every [`QFormat`]: Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16
    /// ([`crate::qmatmul`]).
    Quant(QMatrix),
}

/// A linear layer `x @ W^T (+ b)` whose weight is a `QTensor` (quantized or `f32`).
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub w: Weight,
    /// The bias as `f32`, read once at load (Qwen2's q/k/v).
    pub b: Option<Vec<f32>>,
}

impl Linear {
    pub fn new(w: Arc<QTensor>, b: Option<Vec<f32>>) -> Result<Self> {
        let (n, k) = w.shape().dims2()?;
        if let Some(format) = QFormat::from_ggml(w.dtype()).filter(|f| f.fits(k)) {
            return Ok(Self {
                w: Weight::Quant(QMatrix::new(format, &w.data()?, n, k)?),
                b,
            });
        }
        // Not `QMatMul::from_arc`: it turns f32/f16 weights into dense tensors (BLAS path).
        Ok(Self {
            w: Weight::Candle(QMatMul::QTensor(w)),
            b,
        })
    }

    /// `x` (`rows` rows, row-major) times `W^T` (+ b), row-major out.
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let mut y = match &self.w {
            Weight::Quant(w) => w.matmul(x)?,
            Weight::Candle(w) => {
                let k = x.len() / rows.max(1);
                let xt = Tensor::from_slice(x, (rows, k), &Device::Cpu)?;
                w.forward(&xt)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?
            }
        };
        if let Some(b) = &self.b {
            for row in y.chunks_exact_mut(b.len()) {
                add_assign(row, b);
            }
        }
        Ok(y)
    }
}

/// Projections of the same input (q/k/v; gate/up). When their weights share a
/// quantized format they are stacked into one matrix and run as one matmul: the
/// input is quantized once and the step has one parallel region instead of three
/// (or two). Each output element is still the same dot product (its bits can differ
/// from the unstacked run where stacking changes the layout: two 36-column parts are
/// column-major, their 72-column stack is in panels; batch invariance holds either way).
#[derive(Debug, Clone)]
pub(crate) enum Fused {
    Stacked {
        w: QMatrix,
        widths: Vec<usize>,
        biases: Vec<Option<Vec<f32>>>,
    },
    Separate(Vec<Linear>),
}

impl Fused {
    pub fn new(parts: Vec<Linear>) -> Self {
        let quant: Option<Vec<&QMatrix>> = parts
            .iter()
            .map(|p| match &p.w {
                Weight::Quant(w) => Some(w),
                Weight::Candle(_) => None,
            })
            .collect();
        match quant.and_then(|q| Some((QMatrix::stack(&q)?, q.iter().map(|w| w.rows()).collect())))
        {
            Some((w, widths)) => Fused::Stacked {
                w,
                widths,
                biases: parts.into_iter().map(|p| p.b).collect(),
            },
            None => Fused::Separate(parts),
        }
    }

    /// Each part's output for `x` (`rows` rows), in the order given to [`Fused::new`].
    pub fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<Vec<f32>>> {
        match self {
            Fused::Separate(parts) => parts.iter().map(|p| p.forward(x, rows)).collect(),
            Fused::Stacked { w, widths, biases } => {
                let mut outs = w.matmul_split(x, widths)?;
                for (y, b) in outs.iter_mut().zip(biases) {
                    if let Some(b) = b {
                        y.chunks_exact_mut(b.len())
                            .for_each(|row| add_assign(row, b));
                    }
                }
                Ok(outs)
            }
        }
    }
}

/// One decoder block's weights.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    /// RMSNorm weights, `f32`, read once at load (the layer loop uses plain buffers).
    pub attn_norm: Vec<f32>,
    /// q, k, v.
    pub qkv: Fused,
    pub o: Linear,
    pub ffn_norm: Vec<f32>,
    /// gate, up.
    pub gate_up: Fused,
    pub down: Linear,
}

/// The token embedding table: its own tensor, or — tied to the LM head, which
/// Candela's kernels multiply — the LM head's matrix, so the table is held once.
#[derive(Debug, Clone)]
pub(crate) enum Embedding {
    Table(Arc<QTensor>),
    TiedToHead,
}

/// A llama-family decoder in host memory; holds weights only, never a KV cache.
#[derive(Debug, Clone)]
pub struct Llama {
    pub(crate) cfg: ModelConfig,
    pub(crate) embed: Embedding,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: Vec<f32>,
    pub(crate) lm_head: Linear,
    pub(crate) rope: RopeTable,
    pub(crate) weight_bytes: u64,
}

impl Llama {
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Bytes of weights held in memory (for KV pool sizing).
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Rows `ids` of the token embedding, `f32`, row-major.
    pub(crate) fn embed_rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        match (&self.embed, &self.lm_head.w) {
            (Embedding::Table(t), _) => {
                let ids = Tensor::from_slice(ids, ids.len(), &Device::Cpu)?;
                flat(&t.embedding(&ids)?.to_dtype(DType::F32)?)
            }
            (Embedding::TiedToHead, Weight::Quant(head)) => head.dequantize_columns(ids),
            (Embedding::TiedToHead, Weight::Candle(_)) => {
                unreachable!("only an LM head on Candela's kernels holds the embedding")
            }
        }
    }

    /// The whole token embedding as an `f32` `[vocab, hidden]` tensor.
    pub(crate) fn embed_table(&self) -> Result<Tensor> {
        match &self.embed {
            Embedding::Table(t) => Ok(t.dequantize(&Device::Cpu)?.to_dtype(DType::F32)?),
            Embedding::TiedToHead => match &self.lm_head.w {
                // The head's GGUF bytes, dequantized once.
                Weight::Quant(head) => {
                    let storage = candle_core::quantized::QStorage::from_data(
                        head.raw(),
                        &Device::Cpu,
                        head.format().ggml(),
                    )?;
                    let table = QTensor::new(storage, (head.rows(), head.cols()))?;
                    Ok(table.dequantize(&Device::Cpu)?.to_dtype(DType::F32)?)
                }
                Weight::Candle(_) => {
                    unreachable!("only an LM head on Candela's kernels holds the embedding")
                }
            },
        }
    }

    /// A KV pool shaped for this model.
    pub fn new_cache(&self, num_blocks: usize, block_size: usize) -> PagedKvCache<half::f16> {
        PagedKvCache::new(
            self.cfg.num_layers,
            num_blocks,
            block_size,
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
        )
    }

    /// Runs one step: writes the batch's K/V into `cache` and returns `f32` logits
    /// `[batch.logits_indices.len(), vocab]`, rows in `logits_indices` order.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the batch does not fit the cache or the model
    /// (checked before anything is written); [`Error::Candle`] from tensor ops.
    pub fn forward(
        &self,
        batch: &ForwardBatch,
        cache: &mut PagedKvCache<half::f16>,
    ) -> Result<Tensor> {
        self.forward_with_lora(batch, cache, &LoraRows::default())
    }

    /// [`Llama::forward`] with LoRA adapters: after each targeted projection, each row's
    /// adapter (if any) adds its low-rank update.
    ///
    /// # Errors
    /// As [`Llama::forward`].
    pub fn forward_with_lora(
        &self,
        batch: &ForwardBatch,
        cache: &mut PagedKvCache<half::f16>,
        lora: &LoraRows<'_>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let t = batch.num_tokens();
        if cache.num_layers() != c.num_layers
            || cache.layer(0).num_kv_heads != c.num_kv_heads
            || cache.layer(0).head_dim != c.head_dim
        {
            return Err(Error::InvalidInput(
                "KV cache geometry does not match the model".into(),
            ));
        }
        check_batch(
            c,
            self.rope.max_positions(),
            batch,
            cache.block_size(),
            cache.num_blocks(),
        )?;
        if t == 0 {
            return Ok(Tensor::zeros((0, c.vocab_size), DType::F32, &Device::Cpu)?);
        }
        // The layer loop works on plain row-major buffers: one allocation per
        // projection, no tensor-op dispatch per norm, activation or residual add.
        let mut x = self.embed_rows(&batch.token_ids)?;
        let eps = c.rms_norm_eps as f32;
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let mut h = vec![0.0f32; x.len()];
        let mut attn = vec![0.0f32; t * c.num_heads * c.head_dim];
        for (li, layer) in self.layers.iter().enumerate() {
            // Spans feed the engine's profiler (/start_profile); free when it is off.
            let _layer = tracing::trace_span!("layer", index = li).entered();
            let attn_span = tracing::trace_span!("attention").entered();
            rms_norm(&x, &layer.attn_norm, eps, &mut h);
            let [mut q, mut k, mut v]: [Vec<f32>; 3] = layer
                .qkv
                .forward(&h, t)?
                .try_into()
                .map_err(|_| Error::InvalidModel("q/k/v projections".into()))?;
            lora.apply(li, Target::Q, &h, &mut q);
            lora.apply(li, Target::K, &h, &mut k);
            lora.apply(li, Target::V, &h, &mut v);
            self.rope.apply(&mut q, &batch.positions)?;
            self.rope.apply(&mut k, &batch.positions)?;
            let lc = cache.layer_mut(li);
            write_kv(lc, &k, &v, &batch.slot_mapping)?;
            paged_attention(&q, lc, batch, scale, &mut attn)?;
            let mut o = layer.o.forward(&attn, t)?;
            lora.apply(li, Target::O, &attn, &mut o);
            add_assign(&mut x, &o);
            drop(attn_span);
            let _mlp = tracing::trace_span!("mlp").entered();
            rms_norm(&x, &layer.ffn_norm, eps, &mut h);
            let [mut g, mut u]: [Vec<f32>; 2] = layer
                .gate_up
                .forward(&h, t)?
                .try_into()
                .map_err(|_| Error::InvalidModel("gate/up projections".into()))?;
            lora.apply(li, Target::Gate, &h, &mut g);
            lora.apply(li, Target::Up, &h, &mut u);
            silu_mul(&mut g, &u);
            let mut down = layer.down.forward(&g, t)?;
            lora.apply(li, Target::Down, &g, &mut down);
            add_assign(&mut x, &down);
        }
        if batch.logits_indices.is_empty() {
            return Ok(Tensor::zeros((0, c.vocab_size), DType::F32, &Device::Cpu)?);
        }
        let _head = tracing::trace_span!("lm_head").entered();
        let hidden = c.hidden_size;
        let rows = batch.logits_indices.len();
        let mut picked = Vec::with_capacity(rows * hidden);
        for &i in &batch.logits_indices {
            picked.extend_from_slice(&x[i * hidden..(i + 1) * hidden]);
        }
        let mut normed = vec![0.0f32; picked.len()];
        rms_norm(&picked, &self.norm, eps, &mut normed);
        let logits = self.lm_head.forward(&normed, rows)?;
        Ok(Tensor::from_vec(
            logits,
            (rows, c.vocab_size),
            &Device::Cpu,
        )?)
    }
}

/// The checks every forward pass makes before writing anything: the batch's own
/// invariants against the cache geometry, positions inside the model's context,
/// token ids inside its vocabulary.
///
/// # Errors
/// [`Error::InvalidInput`] naming the first violation.
pub(crate) fn check_batch(
    c: &ModelConfig,
    max_positions: usize,
    batch: &ForwardBatch,
    block_size: usize,
    num_blocks: usize,
) -> Result<()> {
    batch.validate(block_size, num_blocks)?;
    if let Some(&p) = batch
        .positions
        .iter()
        .find(|&&p| p as usize >= max_positions)
    {
        return Err(Error::InvalidInput(format!(
            "position {p} exceeds the model's context of {max_positions}"
        )));
    }
    if let Some(&id) = batch
        .token_ids
        .iter()
        .find(|&&id| id as usize >= c.vocab_size)
    {
        return Err(Error::InvalidInput(format!(
            "token id {id} outside vocab {}",
            c.vocab_size
        )));
    }
    Ok(())
}

/// `out = x / sqrt(mean(x²) + eps) * w` per row of `w.len()` values.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    for (xr, or) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        let inv = 1.0 / (crate::attention::dot(xr, xr) / w.len() as f32 + eps).sqrt();
        for ((o, &x), &w) in or.iter_mut().zip(xr).zip(w) {
            *o = x * inv * w;
        }
    }
}

/// `g = silu(g) * u`, SwiGLU's gate.
fn silu_mul(g: &mut [f32], u: &[f32]) {
    for (g, &u) in g.iter_mut().zip(u) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

fn add_assign(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}

/// An `f32` tensor's values as one flat vector.
pub(crate) fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}
