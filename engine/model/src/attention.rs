//! CPU paged attention over the flat [`LayerKv`] storage.
//!
//! [`write_kv`] stores each new token's K/V row at its slot; [`paged_attention`]
//! then lets every query token at absolute position `p` attend causally over
//! cache positions `0..=p` of its own sequence, reading K/V through the
//! sequence's block table (grouped-query attention: query head `h` reads KV
//! head `h / (num_heads / num_kv_heads)`).
//!
//! Exactness invariant: the output for one (query token, head) is computed by
//! one sequential loop whose order depends only on that query's position and
//! the cache contents — never on how the batch was chunked, which other
//! sequences share it, or how the pool split the work. Two passes per query:
//! scores and their max, then `exp`, sum and the weighted V sum in ascending
//! position order, divided by the sum at the end; all in `f32` (K and V are
//! widened from the cache's element type as they are read).
//!
//! Cost: `O(sum over queries of (p + 1) * num_heads * head_dim)`; work items
//! are (token, KV head) pairs, so the query heads of one group share each K/V
//! row read. Scratch is one buffer per compute thread, grown as needed; nothing
//! is allocated per token.

use crate::batch::ForwardBatch;
use crate::kv_cache::{KvElem, LayerKv};
use crate::{Error, Result};

/// Below this much work (attended positions × query heads) the kernel runs on the
/// calling thread.
const PARALLEL_MIN_WORK: usize = 1024;

/// Writes `k` and `v` (each `[T, num_kv_heads * head_dim]`) into the slots `slot_mapping[t]`.
///
/// # Errors
/// [`Error::InvalidInput`] when the lengths disagree or a slot is outside the layer.
pub fn write_kv<T: KvElem>(
    layer: &mut LayerKv<T>,
    k: &[f32],
    v: &[f32],
    slot_mapping: &[usize],
) -> Result<()> {
    let stride = layer.slot_stride();
    if k.len() != slot_mapping.len() * stride || v.len() != k.len() {
        return Err(Error::InvalidInput(format!(
            "write_kv: {} slots but k/v hold {}/{} floats (stride {stride})",
            slot_mapping.len(),
            k.len(),
            v.len()
        )));
    }
    let slots = layer.num_slots();
    if let Some(&s) = slot_mapping.iter().find(|&&s| s >= slots) {
        return Err(Error::InvalidInput(format!(
            "write_kv: slot {s} outside {slots} slots"
        )));
    }
    for (t, &slot) in slot_mapping.iter().enumerate() {
        let dst = slot * stride..(slot + 1) * stride;
        T::store(&k[t * stride..(t + 1) * stride], &mut layer.k[dst.clone()]);
        T::store(&v[t * stride..(t + 1) * stride], &mut layer.v[dst]);
    }
    Ok(())
}

/// Attention of every query row in `q` (`[T, num_heads * head_dim]`) into `out` (same shape).
///
/// `scale` multiplies the raw `q·k` scores (usually `1/sqrt(head_dim)`). The cache must
/// already hold the K/V of every position the queries attend to, including their own
/// ([`write_kv`] first).
///
/// # Errors
/// [`Error::InvalidInput`] when shapes disagree with the batch and cache geometry, a query's
/// position is not inside its sequence's context, or a block id is outside the cache.
pub fn paged_attention<T: KvElem>(
    q: &[f32],
    layer: &LayerKv<T>,
    batch: &ForwardBatch,
    scale: f32,
    out: &mut [f32],
) -> Result<()> {
    let t = batch.num_tokens();
    let hd = layer.head_dim;
    let nkv = layer.num_kv_heads;
    let bad = |m: String| Err(Error::InvalidInput(format!("paged_attention: {m}")));
    if t == 0 {
        return Ok(());
    }
    if q.len() != out.len() || hd == 0 || nkv == 0 || !q.len().is_multiple_of(t * hd) {
        return bad(format!(
            "q/out of {} floats do not fit {t} tokens × {hd}",
            q.len()
        ));
    }
    let nh = q.len() / (t * hd);
    if !nh.is_multiple_of(nkv) {
        return bad(format!(
            "{nh} query heads are not a multiple of {nkv} KV heads"
        ));
    }
    let group = nh / nkv;
    let num_blocks = layer.num_slots() / layer.block_size.max(1);

    let mut tok_seq = vec![0usize; t];
    let mut work = 0usize;
    for (si, s) in batch.seqs.iter().enumerate() {
        let end = s.query_start + s.query_len;
        if end > t || s.block_table.len() * layer.block_size < s.context_len {
            return bad("a sequence slice does not fit the batch or its block table".into());
        }
        if s.block_table.iter().any(|&b| b as usize >= num_blocks) {
            return bad("a block id is outside the cache".into());
        }
        let range = s.query_start..end;
        for (slot, &p) in tok_seq[range.clone()]
            .iter_mut()
            .zip(&batch.positions[range])
        {
            if p as usize >= s.context_len {
                return bad(format!("position {p} beyond context {}", s.context_len));
            }
            *slot = si;
            work += p as usize + 1;
        }
    }

    // Jobs are (token, KV head) pairs so a group's query heads share each K/V row
    // read; with too few of those to keep every thread busy (small-batch decode)
    // they are (token, query head). Each head's arithmetic is the same either way.
    let pool = crate::pool::global();
    let heads_per_job = if t * nkv >= 4 * pool.threads() {
        group
    } else {
        1
    };
    let chunk = heads_per_job * hd;
    let jobs_per_token = nh / heads_per_job;
    let job = |idx: usize, o: &mut [f32]| {
        let tt = idx / jobs_per_token;
        let head = idx % jobs_per_token * heads_per_job;
        let seq = &batch.seqs[tok_seq[tt]];
        let qrow = &q[(tt * nh + head) * hd..][..chunk];
        SCRATCH.with_borrow_mut(|scratch| {
            attend_group(
                qrow,
                layer,
                &seq.block_table,
                head / group,
                batch.positions[tt] as usize + 1,
                scale,
                scratch,
                o,
            )
        });
    };
    if work * nh < PARALLEL_MIN_WORK {
        out.chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, o)| job(i, o));
    } else {
        pool.for_chunks_mut(out, chunk, job);
    }
    Ok(())
}

thread_local! {
    /// Per-thread score scratch, grown as needed and kept across calls.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Query heads `q` (one or more of KV head `kvh`'s group), over cache positions `0..n`.
#[allow(clippy::too_many_arguments)]
fn attend_group<T: KvElem>(
    q: &[f32],
    layer: &LayerKv<T>,
    block_table: &[u32],
    kvh: usize,
    n: usize,
    scale: f32,
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = layer.head_dim;
    let group = q.len() / hd;
    let bs = layer.block_size;
    let stride = layer.slot_stride();
    let row = |j: usize| (block_table[j / bs] as usize * bs + j % bs) * stride + kvh * hd;
    if scratch.len() < group * n {
        scratch.resize(group * n, 0.0);
    }
    let scores = &mut scratch[..group * n];
    for j in 0..n {
        let k = &layer.k[row(j)..][..hd];
        for g in 0..group {
            scores[g * n + j] = dot(&q[g * hd..(g + 1) * hd], k) * scale;
        }
    }
    out.fill(0.0);
    for g in 0..group {
        let s = &mut scores[g * n..(g + 1) * n];
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for x in s.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        for x in s.iter_mut() {
            *x *= inv;
        }
    }
    for j in 0..n {
        let v = &layer.v[row(j)..][..hd];
        for g in 0..group {
            axpy(scores[g * n + j], v, &mut out[g * hd..(g + 1) * hd]);
        }
    }
}

/// Dot product in a fixed order (two 8-lane FMA accumulators, then the tail), `b`
/// widened from its element type. Written with AVX2 intrinsics where the build
/// targets them: left to the auto-vectorizer, the lane reduction came out as
/// 2-lane shuffles.
#[inline]
pub(crate) fn dot<T: KvElem>(a: &[f32], b: &[T]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    {
        use std::arch::x86_64::*;
        // SAFETY: every load reads 8 elements at `i + 8 <= n` or `i + 16 <= n`.
        unsafe {
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut i = 0;
            while i + 16 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), T::load8(pb.add(i)), s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), T::load8(pb.add(i + 8)), s1);
                i += 16;
            }
            if i + 8 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), T::load8(pb.add(i)), s0);
                i += 8;
            }
            let s = _mm256_add_ps(s0, s1);
            let s4 = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
            let tail: f32 = (i..n).map(|j| a[j] * b[j].to_f32()).sum();
            _mm_cvtss_f32(s1) + tail
        }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    )))]
    {
        let mut acc = [0.0f32; 8];
        for j in 0..n - n % 8 {
            acc[j % 8] += a[j] * b[j].to_f32();
        }
        let tail: f32 = (n - n % 8..n).map(|j| a[j] * b[j].to_f32()).sum();
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
    }
}

/// `out[i] += w * x[i]`, `x` widened from its element type (the weighted V sum).
#[inline]
fn axpy<T: KvElem>(w: f32, x: &[T], out: &mut [f32]) {
    let n = x.len().min(out.len());
    let mut i = 0;
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    {
        use std::arch::x86_64::*;
        // SAFETY: every access covers 8 elements at `i + 8 <= n`.
        unsafe {
            let wv = _mm256_set1_ps(w);
            while i + 8 <= n {
                let o = out.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    o,
                    _mm256_fmadd_ps(wv, T::load8(x.as_ptr().add(i)), _mm256_loadu_ps(o)),
                );
                i += 8;
            }
        }
    }
    for j in i..n {
        out[j] = w.mul_add(x[j].to_f32(), out[j]);
    }
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;
