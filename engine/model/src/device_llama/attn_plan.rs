//! The attention plan of one step on the candle path: which cache slots each
//! sequence's queries attend to and with which mask, built once on the host
//! from the batch's block tables and used by every layer.
//!
//! Decode sequences (one query each) go as one padded batch — gathered slots
//! and a padding mask, or the fused CUDA kernel reading the cache in place when
//! [`check_fused_decode`] agreed with the gather path at start-up — and prefill
//! chunks one sequence at a time with a causal mask. Costs: per step, host
//! vectors of `Σ context` slot indices and `Σ group · len · context` mask
//! values, copied to the device once.

use candle_core::{Device, Tensor};

use crate::Result;
use crate::batch::ForwardBatch;
use crate::paged_decode::paged_decode_attention;

/// Largest absolute difference between the fused decode kernel and the gather
/// path on random queries and caches: three sequences (contexts 1, 37 and 300
/// over scattered 16-token blocks) with the model's head layout.
///
/// # Errors
/// [`crate::Error::Candle`] when the kernel cannot run on `device` (e.g. on the CPU).
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
pub(super) struct AttnPlan {
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
    pub(super) fn new(
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
    pub(super) fn attend(
        &self,
        q: &Tensor,
        kc: &Tensor,
        vc: &Tensor,
        scale: f64,
    ) -> Result<Tensor> {
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
    use super::super::{max_abs_diff, values};
    use super::*;

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
        let mut cache = PagedKvCache::<f32>::new(1, nblocks, bs, nkv, hd);
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

    /// The fused kernel is CUDA-only: on the CPU the check errors (the model then keeps
    /// the gather path), and a CPU model never enables it.
    #[test]
    fn fused_decode_is_refused_off_cuda() {
        assert!(check_fused_decode(&Device::Cpu, 4, 2, 16).is_err());
    }
}
