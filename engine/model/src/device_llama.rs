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
//! Modules: `weights` (the upload of each weight to the device), `attn_plan`
//! (the step's gather indices and masks, and the fused-decode check).
//!
//! Numerics: `f32` activations and KV cache, as on the CPU path; logits agree
//! with the CPU path to float rounding (different summation orders), not bit
//! for bit, and are not batch-invariant on CUDA (cuBLAS picks kernels by shape).

mod attn_plan;
mod weights;

use candle_core::{DType, Device, Tensor};

use crate::batch::ForwardBatch;
use crate::device_kv::DeviceKvCache;
use crate::llama::{Llama, ModelConfig, check_batch};
use crate::{Error, Result};
use attn_plan::AttnPlan;
pub use attn_plan::check_fused_decode;
use weights::{DeviceLayer, DeviceLinear};

/// A llama-family decoder whose weights live on a candle device.
#[derive(Debug, Clone)]
pub struct DeviceLlama {
    cfg: ModelConfig,
    device: Device,
    /// `[vocab, hidden]` `f32`.
    embed: Tensor,
    layers: Vec<DeviceLayer>,
    norm: Tensor,
    lm_head: DeviceLinear,
    /// `[max_positions, head_dim / 2]`.
    cos: Tensor,
    sin: Tensor,
    interleaved: bool,
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
        let layers = model
            .layers
            .iter()
            .map(|l| DeviceLayer::new(l, device))
            .collect::<Result<Vec<_>>>()?;
        let (cos, sin) = model.rope.tables();
        let half = model.cfg.head_dim / 2;
        let rows = model.rope.max_positions();
        Ok(Self {
            cfg: model.cfg.clone(),
            device: device.clone(),
            embed: model.embed_table()?.to_device(device)?,
            layers,
            norm: Tensor::from_slice(&model.norm, model.norm.len(), device)?,
            lm_head: DeviceLinear::new(&model.lm_head, device)?,
            cos: Tensor::from_slice(cos, (rows, half), device)?,
            sin: Tensor::from_slice(sin, (rows, half), device)?,
            interleaved: model.rope.interleaved(),
            fused_decode: device.is_cuda() && fused_decode_ok(device, &model.cfg),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
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

/// A tensor's values, flat (tests of this module and its children).
#[cfg(test)]
fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Largest elementwise difference (tests).
#[cfg(test)]
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
