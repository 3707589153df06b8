//! A Q4_1 matmul with an AVX2 kernel (candle 0.11 only has a scalar Q4_1
//! vec-dot, which made a Q4_1 model ~10× slower than its memory bandwidth
//! allows).
//!
//! Weights keep their GGUF bytes: per 32 inputs one block
//! `{d: f16, m: f16, qs: [u8; 16]}` with value `d * q + m`, where `qs[j]`
//! holds element `j` in its low nibble and `j + 16` in its high one.
//! Activations are quantized per row to 8-bit blocks (ggml's Q8_1: scale
//! `d = amax / 127`, `s = d * Σq`, both rounded through f16), so one block's contribution is
//! `d_w * d_x * Σ q_w q_x + m_w * s_x`.
//!
//! Exactness: each output element is one dot product in a fixed block order,
//! computed by the same code whatever the number of rows or how columns are
//! split across threads, so results do not depend on batch composition.
//! Work is split over column chunks (rayon); each chunk walks all rows while
//! its weights stay in cache.

use rayon::prelude::*;

use crate::{Error, Result};

const QK: usize = 32;
const W_BLOCK: usize = 20;
/// Columns per rayon job.
const COLS_PER_JOB: usize = 32;

/// A `[n, k]` Q4_1 weight matrix in GGUF layout.
#[derive(Debug, Clone)]
pub struct Q41Matrix {
    data: Vec<u8>,
    n: usize,
    k: usize,
}

/// One row of activations quantized to 8-bit blocks.
#[derive(Clone, Copy)]
struct XBlock {
    d: f32,
    s: f32,
    qs: [i8; QK],
}

impl Q41Matrix {
    /// Wraps raw GGUF Q4_1 bytes of an `[n, k]` matrix.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] when `k` is not a multiple of 32 or the byte count is off.
    pub fn new(data: Vec<u8>, n: usize, k: usize) -> Result<Self> {
        if !k.is_multiple_of(QK) || data.len() != n * (k / QK) * W_BLOCK {
            return Err(Error::InvalidModel(format!(
                "Q4_1 matrix [{n}, {k}] with {} bytes",
                data.len()
            )));
        }
        Ok(Self { data, n, k })
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// `x [m, k]` (row-major) times `W^T` → `[m, n]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `x.len()` is not a multiple of `k`.
    pub fn matmul(&self, x: &[f32]) -> Result<Vec<f32>> {
        let (n, k) = (self.n, self.k);
        if !x.len().is_multiple_of(k) {
            return Err(Error::InvalidInput(format!(
                "Q4_1 matmul: {} inputs for k = {k}",
                x.len()
            )));
        }
        let m = x.len() / k;
        let kb = k / QK;
        let xq: Vec<XBlock> = x.chunks_exact(QK).map(quantize_block).collect();
        let avx2 = has_avx2();
        // Transposed result: each job owns a contiguous [cols, m] slab.
        let mut out_t = vec![0.0f32; n * m];
        let job = |(ci, slab): (usize, &mut [f32])| {
            let c0 = ci * COLS_PER_JOB;
            for (j, col_out) in slab.chunks_mut(m).enumerate() {
                let c = c0 + j;
                let w = &self.data[c * kb * W_BLOCK..(c + 1) * kb * W_BLOCK];
                let row = |r: usize| &xq[r * kb..(r + 1) * kb];
                let mut r = 0;
                if avx2 {
                    // Four rows share each unpacked weight block; per row the arithmetic is
                    // exactly `dot_avx2`'s, so results stay bit-identical to one row alone.
                    while r + 4 <= m {
                        let v =
                            unsafe { dot4_avx2(w, [row(r), row(r + 1), row(r + 2), row(r + 3)]) };
                        col_out[r..r + 4].copy_from_slice(&v);
                        r += 4;
                    }
                }
                for (i, o) in col_out.iter_mut().enumerate().skip(r) {
                    *o = if avx2 {
                        unsafe { dot_avx2(w, row(i)) }
                    } else {
                        dot_scalar(w, row(i))
                    };
                }
            }
        };
        if n * m * kb < 4096 {
            out_t.chunks_mut(COLS_PER_JOB * m).enumerate().for_each(job);
        } else {
            out_t
                .par_chunks_mut(COLS_PER_JOB * m)
                .enumerate()
                .for_each(job);
        }
        if m == 1 {
            return Ok(out_t);
        }
        let mut out = vec![0.0f32; m * n];
        for (c, col) in out_t.chunks_exact(m).enumerate() {
            for (r, &v) in col.iter().enumerate() {
                out[r * n + c] = v;
            }
        }
        Ok(out)
    }
}

fn quantize_block(x: &[f32]) -> XBlock {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
        sum += *q as i32;
    }
    // Rounded through f16 like ggml's `block_q8_1`, so results track llama.cpp's.
    let r = |v: f32| half::f16::from_f32(v).to_f32();
    XBlock {
        d: r(d),
        s: r(d * sum as f32),
        qs,
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn dot_scalar(w: &[u8], x: &[XBlock]) -> f32 {
    let mut acc = 0.0f32;
    let mut summs = 0.0f32;
    for (wb, xb) in w.chunks_exact(W_BLOCK).zip(x) {
        let (d, m) = (f16_at(wb, 0), f16_at(wb, 2));
        let mut isum = 0i32;
        for j in 0..16 {
            let q = wb[4 + j];
            isum += (q & 0x0F) as i32 * xb.qs[j] as i32 + (q >> 4) as i32 * xb.qs[j + 16] as i32;
        }
        acc += d * xb.d * isum as f32;
        summs += m * xb.s;
    }
    acc + summs
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot_avx2(w: &[u8], x: &[XBlock]) -> f32 {
    dot_scalar(w, x)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot4_avx2(w: &[u8], x: [&[XBlock]; 4]) -> [f32; 4] {
    x.map(|x| dot_scalar(w, x))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn hsum(acc: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let hi = _mm256_extractf128_ps(acc, 1);
    let s4 = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
    _mm_cvtss_f32(s1)
}

/// [`dot_avx2`] for four activation rows at once, same per-row operation order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(w: &[u8], x: [&[XBlock]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut summs = [0.0f32; 4];
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    for (b, wb) in w.chunks_exact(W_BLOCK).enumerate() {
        let (d, m) = (f16_at(wb, 0), f16_at(wb, 2));
        // SAFETY: as in `dot_avx2`.
        let tmp = unsafe { _mm_loadu_si128(wb.as_ptr().add(4) as *const __m128i) };
        let qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp), low);
        for i in 0..4 {
            let xb = &x[i][b];
            summs[i] += m * xb.s;
            let qx = unsafe { _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i) };
            let dot32 = _mm256_madd_epi16(_mm256_maddubs_epi16(qw, qx), ones);
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(dot32), acc[i]);
        }
    }
    [0, 1, 2, 3].map(|i| hsum(acc[i]) + summs[i])
}

/// ggml's `ggml_vec_dot_q4_1_q8_1` AVX2 path.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[u8], x: &[XBlock]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    for (wb, xb) in w.chunks_exact(W_BLOCK).zip(x) {
        let (d, m) = (f16_at(wb, 0), f16_at(wb, 2));
        summs += m * xb.s;
        // SAFETY: wb has 20 bytes, qs at 4..20 (16 bytes); xb.qs is 32 bytes.
        let tmp = unsafe { _mm_loadu_si128(wb.as_ptr().add(4) as *const __m128i) };
        let qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp), low);
        let qx = unsafe { _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i) };
        let dot16 = _mm256_maddubs_epi16(qw, qx);
        let dot32 = _mm256_madd_epi16(dot16, ones);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(dot32), acc);
    }
    hsum(acc) + summs
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Module, Tensor};

    #[test]
    fn matches_candle_q4_1_matmul_closely_and_is_row_invariant() {
        let dev = Device::Cpu;
        let (n, k, m) = (70, 128, 7);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 104_729) % 977) as f32 / 300.0 - 1.5)
            .collect();
        let wt = Tensor::from_vec(w, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q4_1).unwrap();
        let ours = Q41Matrix::new(q.data().unwrap().to_vec(), n, k).unwrap();
        let got = ours.matmul(&x).unwrap();
        let xt = Tensor::from_vec(x.clone(), (m, k), &dev).unwrap();
        let want = candle_core::quantized::QMatMul::QTensor(std::sync::Arc::new(q))
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in got.iter().zip(&want) {
            // candle rounds `s` as f16(Σq)·f16(d), ggml (and we) as f16(Σq·d): small differences.
            assert!((a - b).abs() < 1e-2 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // each row alone gives the same bits as in the batch
        for r in 0..m {
            let one = ours.matmul(&x[r * k..(r + 1) * k]).unwrap();
            assert!(
                one.iter()
                    .zip(&got[r * n..(r + 1) * n])
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
        // scalar and AVX2 agree to rounding
        let xq: Vec<XBlock> = x[..k].chunks_exact(QK).map(quantize_block).collect();
        let s = dot_scalar(&ours.data[..(k / QK) * W_BLOCK], &xq);
        assert!(
            (s - got[0]).abs() < 1e-3 * (1.0 + s.abs()),
            "{s} vs {}",
            got[0]
        );
    }
}
