//! The llama-family decoder as candle tensor ops on any candle [`Device`]: the
//! path `--device cuda` runs (candle's CUDA kernels, its quantized matmuls and
//! cuBLAS), built from a loaded [`Llama`] by copying its weights to the device.
//! It runs on the CPU device too, which is how every CI run tests it against
//! the native CPU path ([`Llama::forward`]) on the real model.
//!
//! One [`DeviceLlama::forward`] is one engine step over a flattened
//! [`ForwardBatch`], like the CPU path: the linear layers see all `T` tokens as
//! one matrix (quantized GGUF weights stay quantized on the device), rope takes
//! each token's own position, K/V rows are scattered into the [`DeviceKvCache`]
//! at the batch's slots, and paged attention reads every sequence's context
//! through its block table: the slots of the context are gathered
//! (`index_select`) and attended with a masked softmax. Decode sequences
//! (one query each) go as one padded batch — a handful of kernels per layer
//! whatever the batch size — and prefill chunks one sequence at a time.
//!
//! Numerics: `f32` activations and KV cache, as on the CPU path; logits agree
//! with the CPU path to float rounding (different summation orders), not bit
//! for bit, and are not batch-invariant on CUDA (cuBLAS picks kernels by shape).

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::batch::ForwardBatch;
use crate::device_kv::DeviceKvCache;
use crate::llama::{Fused, Linear, Llama, ModelConfig, Weight, check_batch};
use crate::paged_decode::paged_decode_attention;
use crate::qmatmul::QFormat;
use crate::{Error, Result};

/// `x @ W^T (+ b)` with the weight on the device.
#[derive(Debug, Clone)]
struct DLinear {
    w: QMatMul,
    b: Option<Tensor>,
}

impl DLinear {
    fn new(l: &Linear, dev: &Device) -> Result<Self> {
        Ok(Self {
            w: device_weight(&l.w, dev)?,
            b: l.b
                .as_ref()
                .map(|b| Tensor::from_slice(b, b.len(), dev))
                .transpose()?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.w.forward(x)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// A quantized (or dense) weight copied to `dev`; quantized blocks stay quantized.
fn device_weight(w: &Weight, dev: &Device) -> Result<QMatMul> {
    let q = match w {
        Weight::Quant(m) => {
            let dtype = match m.format() {
                QFormat::Q4_1 => GgmlDType::Q4_1,
                QFormat::Q8_0 => GgmlDType::Q8_0,
            };
            qtensor(m.raw(), dtype, (m.rows(), m.cols()), dev)?
        }
        Weight::Candle(QMatMul::QTensor(t)) => {
            qtensor(&t.data()?, t.dtype(), t.shape().dims2()?, dev)?
        }
        Weight::Candle(QMatMul::Tensor(t)) => return Ok(QMatMul::Tensor(t.to_device(dev)?)),
        Weight::Candle(QMatMul::TensorF16(t)) => return Ok(QMatMul::TensorF16(t.to_device(dev)?)),
    };
    // Dense (f32/f16) weights become plain tensors: cuBLAS rather than a vec-dot.
    Ok(QMatMul::from_arc(Arc::new(q))?)
}

fn qtensor(
    bytes: &[u8],
    dtype: GgmlDType,
    (n, k): (usize, usize),
    dev: &Device,
) -> Result<QTensor> {
    Ok(QTensor::new(
        QStorage::from_data(Cow::Borrowed(bytes), dev, dtype)?,
        (n, k),
    )?)
}

/// Projections of one input: one stacked matmul split by width, or one matmul each.
#[derive(Debug, Clone)]
enum DProj {
    Stacked { lin: DLinear, widths: Vec<usize> },
    Separate(Vec<DLinear>),
}

impl DProj {
    fn new(f: &Fused, dev: &Device) -> Result<Self> {
        Ok(match f {
            Fused::Stacked { w, widths, biases } => {
                let b = if biases.iter().any(Option::is_some) {
                    let mut all = Vec::with_capacity(widths.iter().sum());
                    for (b, &n) in biases.iter().zip(widths) {
                        match b {
                            Some(b) => all.extend_from_slice(b),
                            None => all.extend(std::iter::repeat_n(0.0, n)),
                        }
                    }
                    Some(Tensor::from_vec(all, widths.iter().sum::<usize>(), dev)?)
                } else {
                    None
                };
                let lin = DLinear {
                    w: device_weight(&Weight::Quant(w.clone()), dev)?,
                    b,
                };
                DProj::Stacked {
                    lin,
                    widths: widths.clone(),
                }
            }
            Fused::Separate(parts) => DProj::Separate(
                parts
                    .iter()
                    .map(|p| DLinear::new(p, dev))
                    .collect::<Result<_>>()?,
            ),
        })
    }

    /// Each part's `[T, width]` output, contiguous.
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            DProj::Separate(parts) => parts.iter().map(|p| p.forward(x)).collect(),
            DProj::Stacked { lin, widths } => {
                let y = lin.forward(x)?;
                let mut off = 0;
                widths
                    .iter()
                    .map(|&w| {
                        let part = y.narrow(1, off, w)?.contiguous()?;
                        off += w;
                        Ok(part)
                    })
                    .collect()
            }
        }
    }
}

#[derive(Debug, Clone)]
struct DLayer {
    attn_norm: Tensor,
    qkv: DProj,
    o: DLinear,
    ffn_norm: Tensor,
    gate_up: DProj,
    down: DLinear,
}

/// A llama-family decoder whose weights live on a candle device.
#[derive(Debug, Clone)]
pub struct DeviceLlama {
    cfg: ModelConfig,
    device: Device,
    /// `[vocab, hidden]` `f32`.
    embed: Tensor,
    layers: Vec<DLayer>,
    norm: Tensor,
    lm_head: DLinear,
    /// `[max_positions, head_dim / 2]`.
    cos: Tensor,
    sin: Tensor,
    interleaved: bool,
    weight_bytes: u64,
    /// Decode attention through the fused CUDA kernel (CUDA, and it passed
    /// [`check_fused_decode`] at start-up); the gather path otherwise.
    fused_decode: bool,
}

impl DeviceLlama {
    /// Copies `model`'s weights to `device` (quantized matrices stay quantized; the
    /// embedding table is widened to `f32`).
    ///
    /// # Errors
    /// [`Error::Candle`] when the device cannot hold the weights or lacks a kernel.
    pub fn new(model: &Llama, device: &Device) -> Result<Self> {
        let vec = |v: &[f32]| Tensor::from_slice(v, v.len(), device);
        let layers = model
            .layers
            .iter()
            .map(|l| {
                Ok(DLayer {
                    attn_norm: vec(&l.attn_norm)?,
                    qkv: DProj::new(&l.qkv, device)?,
                    o: DLinear::new(&l.o, device)?,
                    ffn_norm: vec(&l.ffn_norm)?,
                    gate_up: DProj::new(&l.gate_up, device)?,
                    down: DLinear::new(&l.down, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (cos, sin) = model.rope.tables();
        let half = model.cfg.head_dim / 2;
        let rows = model.rope.max_positions();
        Ok(Self {
            cfg: model.cfg.clone(),
            device: device.clone(),
            embed: model
                .embed
                .dequantize(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .to_device(device)?,
            layers,
            norm: vec(&model.norm)?,
            lm_head: DLinear::new(&model.lm_head, device)?,
            cos: Tensor::from_slice(cos, (rows, half), device)?,
            sin: Tensor::from_slice(sin, (rows, half), device)?,
            interleaved: model.rope.interleaved(),
            weight_bytes: model.weight_bytes,
            fused_decode: device.is_cuda() && fused_decode_ok(device, &model.cfg),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Whether decode attention runs the fused CUDA kernel.
    pub fn fused_decode(&self) -> bool {
        self.fused_decode
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes of weights as loaded (the quantized size; see [`Llama::weight_bytes`]).
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// A KV pool on this model's device.
    ///
    /// # Errors
    /// [`Error::Candle`] when the device cannot allocate it.
    pub fn new_cache(&self, num_blocks: usize, block_size: usize) -> Result<DeviceKvCache> {
        DeviceKvCache::new(
            &self.device,
            self.cfg.num_layers,
            num_blocks,
            block_size,
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
        )
    }

    /// Runs one step: writes the batch's K/V into `cache` and returns `f32` logits
    /// `[batch.logits_indices.len(), vocab]` on the device (an empty host tensor when
    /// the step samples nothing), rows in `logits_indices` order.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the batch does not fit the cache or the model
    /// (checked before anything is written); [`Error::Candle`] from tensor ops.
    pub fn forward(&self, batch: &ForwardBatch, cache: &DeviceKvCache) -> Result<Tensor> {
        let c = &self.cfg;
        if cache.num_layers() != c.num_layers
            || cache.num_kv_heads() != c.num_kv_heads
            || cache.head_dim() != c.head_dim
        {
            return Err(Error::InvalidInput(
                "KV cache geometry does not match the model".into(),
            ));
        }
        check_batch(
            c,
            self.cos.dim(0)?,
            batch,
            cache.block_size(),
            cache.num_blocks(),
        )?;
        let t = batch.num_tokens();
        if t == 0 {
            return Ok(no_logits(c.vocab_size)?);
        }
        let dev = &self.device;
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let ids = Tensor::from_slice(&batch.token_ids, t, dev)?;
        let pos = Tensor::from_slice(&batch.positions, t, dev)?;
        let cos = self.cos.index_select(&pos, 0)?.reshape((t, 1, hd / 2))?;
        let sin = self.sin.index_select(&pos, 0)?.reshape((t, 1, hd / 2))?;
        let slots: Vec<u32> = batch.slot_mapping.iter().map(|&s| s as u32).collect();
        let write_index = cache.row_index(&Tensor::from_vec(slots, t, dev)?)?;
        let plan = AttnPlan::new(batch, cache.block_size(), nh / nkv, dev, self.fused_decode)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let eps = c.rms_norm_eps as f32;

        let mut x = self.embed.index_select(&ids, 0)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let _layer = tracing::trace_span!("layer", index = li).entered();
            let attn_span = tracing::trace_span!("attention").entered();
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let [q, k, v]: [Tensor; 3] = layer
                .qkv
                .forward(&h)?
                .try_into()
                .map_err(|_| Error::InvalidModel("q/k/v projections".into()))?;
            let q = rope(&q, nh, self.interleaved, &cos, &sin)?;
            let k = rope(&k, nkv, self.interleaved, &cos, &sin)?;
            let v = v.reshape((t, nkv, hd))?;
            cache.write(li, &write_index, &k, &v)?;
            let (kc, vc) = cache.layer(li);
            let attn = plan.attend(&q, kc, vc, scale)?;
            x = (x + layer.o.forward(&attn)?)?;
            drop(attn_span);
            let _mlp = tracing::trace_span!("mlp").entered();
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let [g, u]: [Tensor; 2] = layer
                .gate_up
                .forward(&h)?
                .try_into()
                .map_err(|_| Error::InvalidModel("gate/up projections".into()))?;
            x = (x + layer.down.forward(&(g.silu()? * u)?)?)?;
        }
        if batch.logits_indices.is_empty() {
            return Ok(no_logits(c.vocab_size)?);
        }
        let _head = tracing::trace_span!("lm_head").entered();
        let rows: Vec<u32> = batch.logits_indices.iter().map(|&i| i as u32).collect();
        let rows = Tensor::from_vec(rows, batch.logits_indices.len(), dev)?;
        let h = candle_nn::ops::rms_norm(&x.index_select(&rows, 0)?, &self.norm, eps)?;
        Ok(self.lm_head.forward(&h)?.to_dtype(DType::F32)?)
    }
}

/// The logits of a step that samples nothing: `[0, vocab]`, on the host (CUDA
/// refuses zero-byte allocations).
fn no_logits(vocab: usize) -> candle_core::Result<Tensor> {
    Tensor::zeros((0, vocab), DType::F32, &Device::Cpu)
}

/// Rotates `x` (`[T, heads * head_dim]`) with each token's own cos/sin rows
/// (`[T, 1, head_dim / 2]`); returns `[T, heads, head_dim]`.
fn rope(x: &Tensor, heads: usize, interleaved: bool, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let t = x.dim(0)?;
    let hd = x.dim(1)? / heads;
    // Each token is its own rope "batch" of one position: [T, heads, 1, head_dim].
    let x = x.reshape((t, heads, 1, hd))?;
    let y = if interleaved {
        candle_nn::rotary_emb::rope_i(&x, cos, sin)?
    } else {
        candle_nn::rotary_emb::rope(&x, cos, sin)?
    };
    Ok(y.reshape((t, heads, hd))?)
}

/// Runs [`check_fused_decode`] for this model's head layout and logs the outcome;
/// `false` (gather path) on any error or disagreement.
fn fused_decode_ok(device: &Device, c: &ModelConfig) -> bool {
    match check_fused_decode(device, c.num_heads, c.num_kv_heads, c.head_dim) {
        Ok(diff) if diff < 1e-3 => {
            tracing::info!(max_abs_diff = diff, "fused paged decode attention enabled");
            true
        }
        Ok(diff) => {
            tracing::warn!(
                max_abs_diff = diff,
                "fused paged decode attention disagrees with the gather path; using the gather path"
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "fused paged decode attention unavailable; using the gather path");
            false
        }
    }
}

/// Largest absolute difference between the fused decode kernel and the gather
/// path on random queries and caches: three sequences (contexts 1, 37 and 300
/// over scattered 16-token blocks) with the model's head layout.
///
/// # Errors
/// [`Error::Candle`] when the kernel cannot run on `device` (e.g. on the CPU).
pub fn check_fused_decode(device: &Device, nh: usize, nkv: usize, hd: usize) -> Result<f32> {
    use crate::batch::SeqInput;
    let bs = 16;
    let nblocks = 40;
    let slots = nblocks * bs;
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut rand = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    };
    let kc = Tensor::from_vec(rand(slots * nkv * hd), (slots, nkv, hd), device)?;
    let vc = Tensor::from_vec(rand(slots * nkv * hd), (slots, nkv, hd), device)?;
    let tok = [0u32];
    let tables: [Vec<u32>; 3] = [
        vec![7],
        vec![39, 3, 20],
        (0..19).map(|i| (i * 7 + 5) % 40).collect(),
    ];
    let seqs: Vec<SeqInput<'_>> = [0usize, 36, 299]
        .iter()
        .zip(&tables)
        .map(|(&start, table)| SeqInput {
            tokens: &tok,
            start,
            block_table: table,
            sample: true,
        })
        .collect();
    let batch = ForwardBatch::build(&seqs, bs)?;
    let q = Tensor::from_vec(rand(3 * nh * hd), (3, nh, hd), device)?;
    let scale = 1.0 / (hd as f64).sqrt();
    let attend = |fused| -> Result<Vec<f32>> {
        let plan = AttnPlan::new(&batch, bs, nh / nkv, device, fused)?;
        Ok(plan
            .attend(&q, &kc, &vc, scale)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let (fused, gather) = (attend(true)?, attend(false)?);
    Ok(fused
        .iter()
        .zip(&gather)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max))
}

/// How one step's attention is computed: the gather indices and masks, built once
/// on the host and used by every layer.
struct AttnPlan {
    decode: Option<DecodeGroup>,
    prefill: Vec<PrefillSeq>,
    /// Row `i` of the output is row `order[i]` of the concatenated group outputs;
    /// `None` when the groups already come in token order.
    order: Option<Tensor>,
    /// Query heads per KV head.
    group: usize,
    block_size: usize,
}

/// Sequences with one query token each, padded to the longest context `l`.
struct DecodeGroup {
    /// `[B]` token rows of the queries.
    rows: Tensor,
    b: usize,
    how: DecodeHow,
}

enum DecodeHow {
    /// Gather each context's slots and attend with a padding mask.
    Gather {
        /// `[B * l]` cache slots of each context (slot 0 as padding).
        gather: Tensor,
        /// `[B, 1, 1, l]`: 0 inside a context, -inf on padding.
        mask: Tensor,
        l: usize,
    },
    /// The fused CUDA kernel ([`crate::paged_decode`]) reading the cache in place.
    Fused {
        /// `[B, 1 + max_blocks]` context lengths and block tables.
        meta: Tensor,
    },
}

/// One sequence with several query tokens (a prefill chunk).
struct PrefillSeq {
    start: usize,
    len: usize,
    /// `[ctx]` cache slots of the context.
    gather: Tensor,
    ctx: usize,
    /// `[group * len, ctx]` causal mask (0 or -inf), repeated for the query heads of a KV head.
    mask: Tensor,
}

/// The slots of a sequence's first `ctx` tokens through its block table.
fn context_slots(table: &[u32], ctx: usize, bs: usize, out: &mut Vec<u32>) {
    out.extend((0..ctx).map(|j| table[j / bs] * bs as u32 + (j % bs) as u32));
}

impl AttnPlan {
    /// `fused`: decode through the fused CUDA kernel instead of gathering.
    fn new(
        batch: &ForwardBatch,
        bs: usize,
        group: usize,
        dev: &Device,
        fused: bool,
    ) -> Result<Self> {
        let (decode, prefill): (Vec<_>, Vec<_>) = batch.seqs.iter().partition(|s| s.query_len == 1);
        let mut plan_rows = Vec::with_capacity(batch.num_tokens());
        let decode = if decode.is_empty() {
            None
        } else {
            let b = decode.len();
            let l = decode.iter().map(|s| s.context_len).max().unwrap_or(1);
            plan_rows.extend(decode.iter().map(|s| s.query_start as u32));
            let how = if fused {
                let stride = 1 + l.div_ceil(bs);
                let mut meta = Vec::with_capacity(b * stride);
                for s in &decode {
                    let blocks = s.context_len.div_ceil(bs);
                    meta.push(s.context_len as u32);
                    meta.extend_from_slice(&s.block_table[..blocks]);
                    meta.extend(std::iter::repeat_n(0, stride - 1 - blocks));
                }
                DecodeHow::Fused {
                    meta: Tensor::from_vec(meta, (b, stride), dev)?,
                }
            } else {
                let mut gather = Vec::with_capacity(b * l);
                let mut mask = Vec::with_capacity(b * l);
                for s in &decode {
                    context_slots(&s.block_table, s.context_len, bs, &mut gather);
                    gather.extend(std::iter::repeat_n(0, l - s.context_len));
                    mask.extend(std::iter::repeat_n(0f32, s.context_len));
                    mask.extend(std::iter::repeat_n(f32::NEG_INFINITY, l - s.context_len));
                }
                DecodeHow::Gather {
                    gather: Tensor::from_vec(gather, b * l, dev)?,
                    mask: Tensor::from_vec(mask, (b, 1, 1, l), dev)?,
                    l,
                }
            };
            Some(DecodeGroup {
                rows: Tensor::from_vec(plan_rows.clone(), b, dev)?,
                b,
                how,
            })
        };
        let prefill = prefill
            .into_iter()
            .map(|s| {
                let (len, ctx) = (s.query_len, s.context_len);
                let first = ctx - len;
                let mut gather = Vec::with_capacity(ctx);
                context_slots(&s.block_table, ctx, bs, &mut gather);
                let mut mask = Vec::with_capacity(group * len * ctx);
                for _ in 0..group {
                    for i in 0..len {
                        let seen = first + i + 1;
                        mask.extend(std::iter::repeat_n(0f32, seen));
                        mask.extend(std::iter::repeat_n(f32::NEG_INFINITY, ctx - seen));
                    }
                }
                plan_rows.extend((s.query_start..s.query_start + len).map(|r| r as u32));
                Ok(PrefillSeq {
                    start: s.query_start,
                    len,
                    gather: Tensor::from_vec(gather, ctx, dev)?,
                    ctx,
                    mask: Tensor::from_vec(mask, (group * len, ctx), dev)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let in_order = plan_rows.iter().enumerate().all(|(i, &r)| r as usize == i);
        let order = if in_order {
            None
        } else {
            let mut order = vec![0u32; plan_rows.len()];
            for (i, &r) in plan_rows.iter().enumerate() {
                order[r as usize] = i as u32;
            }
            Some(Tensor::from_vec(order, plan_rows.len(), dev)?)
        };
        Ok(Self {
            decode,
            prefill,
            order,
            group,
            block_size: bs,
        })
    }

    /// Attention output `[T, heads * head_dim]` for rotated queries `q` (`[T, heads,
    /// head_dim]`) over the layer's cache `kc`, `vc` (`[slots, kv_heads, head_dim]`).
    fn attend(&self, q: &Tensor, kc: &Tensor, vc: &Tensor, scale: f64) -> Result<Tensor> {
        let (_, nh, hd) = q.dims3()?;
        let nkv = nh / self.group;
        let mut parts = Vec::with_capacity(self.prefill.len() + 1);
        if let Some(d) = &self.decode {
            let q = q.index_select(&d.rows, 0)?;
            match &d.how {
                DecodeHow::Fused { meta } => {
                    let out =
                        paged_decode_attention(&q, kc, vc, meta, self.block_size, scale as f32)?;
                    parts.push(out.reshape((d.b, nh * hd))?);
                }
                DecodeHow::Gather { gather, mask, l } => {
                    let q = q.reshape((d.b, nkv, self.group, hd))?;
                    let gather = |c: &Tensor| -> Result<Tensor> {
                        Ok(c.index_select(gather, 0)?
                            .reshape((d.b, *l, nkv, hd))?
                            .transpose(1, 2)?
                            .contiguous()?)
                    };
                    let (k, v) = (gather(kc)?, gather(vc)?);
                    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
                    let p = candle_nn::ops::softmax_last_dim(&scores)?;
                    parts.push(p.matmul(&v)?.reshape((d.b, nh * hd))?);
                }
            }
        }
        for s in &self.prefill {
            let q = q
                .narrow(0, s.start, s.len)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((nkv, self.group * s.len, hd))?;
            let gather = |c: &Tensor| -> Result<Tensor> {
                Ok(c.index_select(&s.gather, 0)?
                    .reshape((s.ctx, nkv, hd))?
                    .transpose(0, 1)?
                    .contiguous()?)
            };
            let (k, v) = (gather(kc)?, gather(vc)?);
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&s.mask)?;
            let p = candle_nn::ops::softmax_last_dim(&scores)?;
            let out = p
                .matmul(&v)?
                .reshape((nh, s.len, hd))?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((s.len, nh * hd))?;
            parts.push(out);
        }
        let out = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(&parts, 0)?
        };
        Ok(match &self.order {
            Some(order) => out.index_select(order, 0)?,
            None => out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    }

    fn random_linear(fmt: GgmlDType, n: usize, k: usize, seed: u64) -> Linear {
        let vals: Vec<f32> = (0..n * k)
            .map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let w = Tensor::from_vec(vals, (n, k), &Device::Cpu).unwrap();
        Linear::new(Arc::new(QTensor::quantize(&w, fmt).unwrap()), None).unwrap()
    }

    /// Both paths quantize activations to 8 bits (candle: Q8_1 for Q4_1 weights as
    /// ours, Q8_0 for Q8_0 weights where ours keeps f32 scales), so each is compared
    /// with the exact product of the dequantized weights: the device linear must be
    /// as close to it as Candela's kernels are.
    #[test]
    fn device_linear_is_as_exact_as_the_cpu_kernels() {
        let (m, n, k) = (3, 64, 256);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let xt = Tensor::from_slice(&x, (m, k), &Device::Cpu).unwrap();
        for fmt in [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::F32] {
            let lin = random_linear(fmt, n, k, 7);
            let cpu = lin.forward(&x, m).unwrap();
            let dev = values(
                &DLinear::new(&lin, &Device::Cpu)
                    .unwrap()
                    .forward(&xt)
                    .unwrap(),
            );
            let dense = match &lin.w {
                Weight::Quant(q) => {
                    let dt = match q.format() {
                        QFormat::Q4_1 => GgmlDType::Q4_1,
                        QFormat::Q8_0 => GgmlDType::Q8_0,
                    };
                    qtensor(q.raw(), dt, (n, k), &Device::Cpu)
                        .unwrap()
                        .dequantize(&Device::Cpu)
                        .unwrap()
                }
                Weight::Candle(w) => w.dequantize_f16().unwrap().to_dtype(DType::F32).unwrap(),
            };
            let exact = values(&xt.matmul(&dense.t().unwrap()).unwrap());
            let err = |y: &[f32]| max_abs_diff(y, &exact);
            let scale = exact.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let (e_cpu, e_dev) = (err(&cpu), err(&dev));
            assert!(
                e_dev <= 1.5 * e_cpu.max(2e-3 * scale),
                "{fmt:?}: device error {e_dev}, CPU kernels {e_cpu}, outputs up to {scale}"
            );
        }
    }

    /// The gather-and-mask attention equals Candela's CPU paged-attention kernel on a
    /// step mixing decodes (before and after) with a prefill chunk, over scattered
    /// block tables and grouped-query heads.
    #[test]
    fn plan_attention_matches_the_cpu_kernel() {
        use crate::attention::{paged_attention, write_kv};
        use crate::batch::SeqInput;
        use crate::kv_cache::PagedKvCache;
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        let (nh, nkv, hd, bs, nblocks) = (6, 2, 16, 4, 32);
        let mut rng = StdRng::seed_from_u64(3);
        let mut cache = PagedKvCache::new(1, nblocks, bs, nkv, hd);
        let lk = cache.layer_mut(0);
        for x in lk.k.iter_mut().chain(lk.v.iter_mut()) {
            *x = rng.random_range(-2.0f32..2.0);
        }
        let toks = [1u32; 16];
        let (ta, tb, tc): (Vec<u32>, Vec<u32>, Vec<u32>) = (
            vec![31, 2, 17, 9, 4],
            vec![5, 30, 11],
            vec![0, 21, 13, 8, 25, 6],
        );
        let batch = ForwardBatch::build(
            &[
                SeqInput {
                    tokens: &toks[..1],
                    start: 10,
                    block_table: &tb,
                    sample: true,
                },
                SeqInput {
                    tokens: &toks[..7],
                    start: 9,
                    block_table: &ta,
                    sample: true,
                },
                SeqInput {
                    tokens: &toks[..1],
                    start: 22,
                    block_table: &tc,
                    sample: true,
                },
            ],
            bs,
        )
        .unwrap();
        let t = batch.num_tokens();
        let q: Vec<f32> = (0..t * nh * hd)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect();
        // the step's own K/V rows are written first, as the forward pass does
        let k: Vec<f32> = (0..t * nkv * hd)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect();
        let v: Vec<f32> = (0..t * nkv * hd)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect();
        write_kv(cache.layer_mut(0), &k, &v, &batch.slot_mapping).unwrap();
        let scale = 0.25;
        let mut want = vec![0.0f32; q.len()];
        paged_attention(&q, cache.layer(0), &batch, scale, &mut want).unwrap();

        let dev = Device::Cpu;
        let l = cache.layer(0);
        let kc = Tensor::from_slice(&l.k, (nblocks * bs, nkv, hd), &dev).unwrap();
        let vc = Tensor::from_slice(&l.v, (nblocks * bs, nkv, hd), &dev).unwrap();
        let plan = AttnPlan::new(&batch, bs, nh / nkv, &dev, false).unwrap();
        assert!(
            plan.order.is_some(),
            "decode rows on both sides of the chunk are reordered"
        );
        let qt = Tensor::from_slice(&q, (t, nh, hd), &dev).unwrap();
        let got = values(&plan.attend(&qt, &kc, &vc, scale as f64).unwrap());
        let max_diff = max_abs_diff(&got, &want);
        assert!(max_diff < 1e-4, "max abs diff {max_diff}");
    }

    #[test]
    fn rope_matches_the_cpu_table_in_both_pairings() {
        use crate::rope::RopeTable;
        let (heads, hd) = (3, 8);
        let positions = [0u32, 5, 2, 17];
        let t = positions.len();
        let x: Vec<f32> = (0..t * heads * hd)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        for interleaved in [true, false] {
            let table = RopeTable::new(&RopeTable::default_inv_freq(hd, 10000.0), 32, interleaved);
            let mut want = x.clone();
            table.apply(&mut want, &positions).unwrap();
            let dev = Device::Cpu;
            let (c, s) = table.tables();
            let pos = Tensor::from_slice(&positions, t, &dev).unwrap();
            let pick = |v: &[f32]| {
                Tensor::from_slice(v, (32, hd / 2), &dev)
                    .unwrap()
                    .index_select(&pos, 0)
                    .unwrap()
                    .reshape((t, 1, hd / 2))
                    .unwrap()
            };
            let xt = Tensor::from_slice(&x, (t, heads * hd), &dev).unwrap();
            let got = values(&rope(&xt, heads, interleaved, &pick(c), &pick(s)).unwrap());
            let max_diff = max_abs_diff(&got, &want);
            assert!(max_diff < 1e-6, "interleaved={interleaved}: {max_diff}");
        }
    }

    /// The fused kernel is CUDA-only: on the CPU the check errors (the model then keeps
    /// the gather path), and a CPU model never enables it.
    #[test]
    fn fused_decode_is_refused_off_cuda() {
        assert!(check_fused_decode(&Device::Cpu, 4, 2, 16).is_err());
    }
}
