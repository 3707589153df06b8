//! Quantized matmuls with SIMD kernels (AVX2, AVX-512 VNNI) for the GGUF formats Candela's default
//! model uses: Q4_1 (every projection; candle 0.11 only has a scalar Q4_1 vec-dot,
//! ~10× slower than memory bandwidth allows) and Q8_0 (the tied embedding used as
//! LM head; candle's batched path re-reads it per row group at ~half this speed).
//!
//! Weights keep their GGUF bytes, per 32 inputs one block:
//! - Q4_1 `{d: f16, m: f16, qs: [u8; 16]}`, value `d * q + m`, `qs[j]` holding
//!   element `j` in its low nibble and `j + 16` in its high one;
//! - Q8_0 `{d: f16, qs: [i8; 32]}`, value `d * q`.
//!
//! Activations are quantized per row to 8-bit blocks (ggml's Q8_1: scale
//! `d = amax / 127`, `s = d * Σq`, both rounded through f16), so one Q4_1 block's
//! contribution is `d_w * d_x * Σ q_w q_x + m_w * s_x` and one Q8_0 block's
//! `d_w * d_x * Σ q_w q_x` — ggml's `vec_dot_q4_1_q8_1` and `vec_dot_q8_0_q8_0`.
//!
//! Exactness: each output element is one dot product in a fixed block order,
//! computed by the same code whatever the number of rows or how columns are
//! split across threads, so results do not depend on batch composition.
//! Work is split over column chunks ([`crate::pool`]); each chunk walks the rows
//! tile by tile while its weights stay in cache.

use std::sync::Arc;

use crate::pool::{self, SendPtr};
use crate::weight_buf::WeightBuf;
use crate::{Error, Result};

const QK: usize = 32;
/// Columns per pool job.
const COLS_PER_JOB: usize = 32;
/// Activation rows walked per pass over a job's columns.
const ROW_TILE: usize = 64;

/// The block formats [`QMatrix`] multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QFormat {
    Q4_1,
    Q8_0,
}

impl QFormat {
    fn block_bytes(self) -> usize {
        match self {
            QFormat::Q4_1 => Q41::W_BLOCK,
            QFormat::Q8_0 => Q80::W_BLOCK,
        }
    }
}

/// A `[n, k]` quantized weight matrix in GGUF layout.
#[derive(Debug, Clone)]
pub struct QMatrix {
    format: QFormat,
    /// Shared: cloning a model does not copy its weights.
    data: Arc<WeightBuf>,
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

impl XBlock {
    const ZERO: Self = Self {
        d: 0.0,
        s: 0.0,
        qs: [0; QK],
    };
}

impl QMatrix {
    /// Wraps raw GGUF bytes of an `[n, k]` matrix in `format`.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] when `k` is not a multiple of 32 or the byte count is off.
    pub fn new(format: QFormat, data: &[u8], n: usize, k: usize) -> Result<Self> {
        if !k.is_multiple_of(QK) || data.len() != n * (k / QK) * format.block_bytes() {
            return Err(Error::InvalidModel(format!(
                "{format:?} matrix [{n}, {k}] with {} bytes",
                data.len()
            )));
        }
        Ok(Self {
            format,
            data: Arc::new(WeightBuf::copy_from(data)),
            n,
            k,
        })
    }

    /// Output width `n`.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Input width `k`.
    pub fn cols(&self) -> usize {
        self.k
    }

    pub fn format(&self) -> QFormat {
        self.format
    }

    /// The raw GGUF blocks, row after row.
    pub fn raw(&self) -> &[u8] {
        &self.data
    }

    /// The matrices stacked along `n` (one matmul for projections that share an
    /// input), or `None` when their formats or input widths differ.
    pub fn stack(parts: &[&QMatrix]) -> Option<QMatrix> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.format != first.format || p.k != first.k)
        {
            return None;
        }
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        parts.iter().for_each(|p| data.extend_from_slice(&p.data));
        let n = parts.iter().map(|p| p.n).sum();
        QMatrix::new(first.format, &data, n, first.k).ok()
    }

    /// `x [m, k]` (row-major) times `W^T` → `[m, n]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `x.len()` is not a multiple of `k`.
    pub fn matmul(&self, x: &[f32]) -> Result<Vec<f32>> {
        Ok(self.matmul_split(x, &[self.n])?.remove(0))
    }

    /// [`QMatrix::matmul`] with the output columns cut into consecutive parts of
    /// `widths` (summing to `n`), each returned as its own `[m, width]` matrix: a
    /// stacked q/k/v or gate/up projection in one parallel pass, no copying apart.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `x.len()` is not a multiple of `k` or the widths
    /// do not add up to `n`.
    pub fn matmul_split(&self, x: &[f32], widths: &[usize]) -> Result<Vec<Vec<f32>>> {
        if widths.iter().sum::<usize>() != self.n {
            return Err(Error::InvalidInput(format!(
                "quantized matmul: parts {widths:?} do not add up to {} columns",
                self.n
            )));
        }
        match self.format {
            QFormat::Q4_1 => self.matmul_with::<Q41>(x, widths),
            QFormat::Q8_0 => self.matmul_with::<Q80>(x, widths),
        }
    }

    fn matmul_with<K: Kernel>(&self, x: &[f32], widths: &[usize]) -> Result<Vec<Vec<f32>>> {
        let k = self.k;
        if !x.len().is_multiple_of(k) {
            return Err(Error::InvalidInput(format!(
                "quantized matmul: {} inputs for k = {k}",
                x.len()
            )));
        }
        let m = x.len() / k;
        let kb = k / QK;
        let pool = pool::global();
        let mut xq = vec![XBlock::ZERO; m * kb];
        if m >= 64 {
            pool.for_chunks_mut(&mut xq, kb, |r, blocks| {
                quantize_row(&x[r * k..(r + 1) * k], blocks)
            });
        } else {
            xq.chunks_exact_mut(kb)
                .zip(x.chunks_exact(k))
                .for_each(|(blocks, x)| quantize_row(x, blocks));
        }
        let level = simd_level();
        let mut outs: Vec<Vec<f32>> = widths.iter().map(|&w| vec![0.0f32; m * w]).collect();
        // Jobs: `COLS_PER_JOB` columns of one part, as (part, first local column).
        let mut jobs = Vec::new();
        let mut first_col = Vec::with_capacity(widths.len());
        let mut start = 0;
        for (p, &w) in widths.iter().enumerate() {
            jobs.extend((0..w).step_by(COLS_PER_JOB).map(|c| (p, c)));
            first_col.push(start);
            start += w;
        }
        let ptrs: Vec<SendPtr<f32>> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();
        let job = |ji: usize| {
            let (p, c0) = jobs[ji];
            let (n, out) = (widths[p], ptrs[p]);
            let cols = c0..(c0 + COLS_PER_JOB).min(n);
            let row = |r: usize| &xq[r * kb..(r + 1) * kb];
            let (first, g0) = (first_col[p], first_col[p] + cols.start);
            let g1 = first + cols.end;
            // Row tiles keep a tile's quantized activations in L1/L2 while every
            // column of the job passes over them (prefill has thousands of rows).
            for r0 in (0..m).step_by(ROW_TILE) {
                let r1 = (r0 + ROW_TILE).min(m);
                let mut r = r0;
                // SAFETY (both calls): `level` is what this CPU supports; jobs own
                // disjoint column ranges, so every (r, c) element of a part is
                // written by exactly one job, and the parts outlive the jobs.
                // Four rows share each unpacked weight block.
                while r + 4 <= r1 {
                    let rows = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                    unsafe {
                        dot_cols::<K, 4>(
                            level,
                            &self.data,
                            g0..g1,
                            kb,
                            rows,
                            ColsOut {
                                out: out.get().add(r * n),
                                n,
                                first,
                            },
                        )
                    };
                    r += 4;
                }
                for i in r..r1 {
                    unsafe {
                        dot_cols::<K, 1>(
                            level,
                            &self.data,
                            g0..g1,
                            kb,
                            [row(i)],
                            ColsOut {
                                out: out.get().add(i * n),
                                n,
                                first,
                            },
                        )
                    };
                }
            }
        };
        if self.n * m * kb < 4096 {
            (0..jobs.len()).for_each(job);
        } else {
            pool.for_each(jobs.len(), job);
        }
        Ok(outs)
    }
}

fn quantize_row(x: &[f32], out: &mut [XBlock]) {
    for (o, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
        *o = quantize_block(x);
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

/// The SIMD kernels this CPU runs, detected once. `CANDELA_CPU_KERNEL=avx2` (or
/// `scalar`) forces a lower level, for comparisons and debugging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    Scalar,
    /// AVX2 + FMA: ggml's `maddubs`/`madd` integer dot products.
    Avx2,
    /// AVX-512 VNNI (256-bit `vpdpbusd`): one instruction per 32 products.
    Avx512Vnni,
}

/// The level the quantized matmuls use on this machine.
pub fn simd_level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let detected = detect_simd();
        match std::env::var("CANDELA_CPU_KERNEL").as_deref() {
            Ok("scalar") => SimdLevel::Scalar,
            Ok("avx2") => detected.min(SimdLevel::Avx2),
            _ => detected,
        }
    })
}

fn detect_simd() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return SimdLevel::Avx512Vnni;
        }
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Scalar
}

/// One weight format: its block size and its dot products of a weight row
/// against `R` quantized activation rows, scalar and per SIMD level. For every
/// `R` and SIMD level a row gets exactly the bits it gets alone (the integer
/// products are exact; the float ops per row are the same), so results do not
/// depend on the batch. The column loop around them is [`dot_cols`], shared.
trait Kernel {
    const W_BLOCK: usize;
    fn dot_scalar(w: &[u8], x: &[XBlock]) -> f32;
    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R];
    /// # Safety
    /// As [`Kernel::dot_avx2`], plus AVX-512 F, VL and VNNI.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_vnni<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R];
}

struct Q41;
struct Q80;

impl Kernel for Q41 {
    const W_BLOCK: usize = 20;
    fn dot_scalar(w: &[u8], x: &[XBlock]) -> f32 {
        q41_dot_scalar(w, x)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_avx2<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_avx2::q41_dot(w, x) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_vnni<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_vnni::q41_dot(w, x) }
    }
}

impl Kernel for Q80 {
    const W_BLOCK: usize = 34;
    fn dot_scalar(w: &[u8], x: &[XBlock]) -> f32 {
        let mut acc = 0.0f32;
        for (wb, xb) in w.chunks_exact(Self::W_BLOCK).zip(x) {
            let isum: i32 = wb[2..]
                .iter()
                .zip(&xb.qs)
                .map(|(&q, &p)| q as i8 as i32 * p as i32)
                .sum();
            acc += f16_at(wb, 0) * xb.d * isum as f32;
        }
        acc
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_avx2<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_avx2::q80_dot(w, x) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_vnni<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_vnni::q80_dot(w, x) }
    }
}

/// The dot products of `R` activation rows `x` with every column `c` in `cols`
/// of the matrix `w` (`kb` blocks of format `K` a column), written through
/// `out`, with `level`'s kernels; per row the arithmetic is the same whatever `R`.
///
/// # Safety
/// `level`'s instructions must be available (it comes from [`simd_level`]), and
/// `out` must be valid for those writes with no other access meanwhile.
unsafe fn dot_cols<K: Kernel, const R: usize>(
    level: SimdLevel,
    w: &[u8],
    cols: std::ops::Range<usize>,
    kb: usize,
    x: [&[XBlock]; R],
    out: ColsOut,
) {
    // SAFETY (all three): as the caller vouches.
    #[cfg(target_arch = "x86_64")]
    match level {
        SimdLevel::Avx512Vnni => return unsafe { simd_vnni::cols::<K, R>(w, cols, kb, x, out) },
        SimdLevel::Avx2 => return unsafe { simd_avx2::cols::<K, R>(w, cols, kb, x, out) },
        SimdLevel::Scalar => {}
    }
    let _ = level;
    unsafe {
        each_col(w, cols, kb * K::W_BLOCK, x, out, |wc, x| {
            x.map(|x| K::dot_scalar(wc, x))
        })
    };
}

/// Where the column loop writes: row `i`, column `c` at `out[i * n + c - first]`
/// (`n` the row stride, `first` the first column `out` points at).
#[derive(Clone, Copy)]
struct ColsOut {
    out: *mut f32,
    n: usize,
    first: usize,
}

/// The one column loop: `dot` of each column's `bytes` of `w` with the rows `x`,
/// written through `out`. Always inlined, so inside a target-feature function
/// (`simd_*::cols`) the dot product inlines into the loop with those features:
/// one call per row group and job, not one per column (the call and its
/// by-memory arguments cost ~15 % at prefill sizes).
///
/// # Safety
/// `out` must be valid for rows `0..R` at columns `cols - first` (stride `n`)
/// with no other access meanwhile; `dot` must be safe to call here.
#[inline(always)]
unsafe fn each_col<const R: usize>(
    w: &[u8],
    cols: std::ops::Range<usize>,
    bytes: usize,
    x: [&[XBlock]; R],
    out: ColsOut,
    mut dot: impl FnMut(&[u8], [&[XBlock]; R]) -> [f32; R],
) {
    for c in cols {
        let v = dot(&w[c * bytes..(c + 1) * bytes], x);
        for (i, v) in v.into_iter().enumerate() {
            // SAFETY: as the caller vouches.
            unsafe { *out.out.add(i * out.n + c - out.first) = v };
        }
    }
}

fn q41_dot_scalar(w: &[u8], x: &[XBlock]) -> f32 {
    let mut acc = 0.0f32;
    let mut summs = 0.0f32;
    for (wb, xb) in w.chunks_exact(Q41::W_BLOCK).zip(x) {
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

/// The SIMD kernels, written once and compiled per instruction set: `$idot` sums
/// adjacent groups of four `u8 × i8` products into `i32` lanes (AVX2:
/// `maddubs` + `madd`, exact since no pair sum reaches `i16`'s limit here; VNNI:
/// `vpdpbusd`), so both levels produce the same integers and the same floats.
#[cfg(target_arch = "x86_64")]
macro_rules! simd_kernels {
    ($name:ident, $features:literal, $dot:ident, |$a:ident, $b:ident| $idot:expr) => {
        mod $name {
            use super::{ColsOut, Kernel, Q41, Q80, XBlock};
            use std::arch::x86_64::*;

            #[inline]
            #[target_feature(enable = $features)]
            fn idot($a: __m256i, $b: __m256i) -> __m256i {
                $idot
            }

            /// The f16 at `b[i..i + 2]` as f32 (exact, like `f16_at`).
            #[inline]
            #[target_feature(enable = $features)]
            fn f16(b: &[u8], i: usize) -> f32 {
                _mm_cvtss_f32(f16x8(b, i))
            }

            /// The f16 at `b[i..i + 2]` in every lane of a vector: a block scale to
            /// multiply in the vector domain. Loading it into lane 0 alone let LLVM
            /// merge the load (`vpinsrw`) into a live register — in the Q8_0 VNNI
            /// kernel the accumulator — chaining every block behind the last FMA.
            #[inline]
            #[target_feature(enable = $features)]
            fn f16x8(b: &[u8], i: usize) -> __m128 {
                let bits = u16::from_le_bytes([b[i], b[i + 1]]);
                _mm_cvtph_ps(_mm_set1_epi16(bits as i16))
            }

            #[inline]
            #[target_feature(enable = $features)]
            fn hsum(acc: __m256) -> f32 {
                let hi = _mm256_extractf128_ps(acc, 1);
                let s4 = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
                let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
                let s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
                _mm_cvtss_f32(s1)
            }

            /// ggml's `ggml_vec_dot_q4_1_q8_1` for `R` rows sharing each unpacked
            /// weight block.
            #[inline]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q41_dot<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
                let mut acc = [_mm256_setzero_ps(); R];
                let mut summs = [0.0f32; R];
                let low = _mm256_set1_epi8(0x0F);
                for (b, wb) in w.chunks_exact(Q41::W_BLOCK).enumerate() {
                    let (d, m) = (_mm256_broadcastss_ps(f16x8(wb, 0)), f16(wb, 2));
                    // SAFETY: a Q4_1 block is 20 bytes, qs at 4..20.
                    let tmp = unsafe { _mm_loadu_si128(wb.as_ptr().add(4) as *const __m128i) };
                    let qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp), low);
                    for i in 0..R {
                        let xb = &x[i][b];
                        summs[i] += m * xb.s;
                        // SAFETY: qs is 32 bytes.
                        let qx = unsafe { _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i) };
                        let dot32 = idot(qw, qx);
                        acc[i] = _mm256_fmadd_ps(
                            _mm256_mul_ps(d, _mm256_set1_ps(xb.d)),
                            _mm256_cvtepi32_ps(dot32),
                            acc[i],
                        );
                    }
                }
                std::array::from_fn(|i| hsum(acc[i]) + summs[i])
            }

            /// ggml's `ggml_vec_dot_q8_0_q8_0` (the sign trick turns signed ×
            /// signed into unsigned × signed) for `R` rows.
            #[inline]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q80_dot<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
                let mut acc = [_mm256_setzero_ps(); R];
                for (b, wb) in w.chunks_exact(Q80::W_BLOCK).enumerate() {
                    let d = _mm256_broadcastss_ps(f16x8(wb, 0));
                    // SAFETY: a Q8_0 block is 34 bytes, qs at 2..34.
                    let qw = unsafe { _mm256_loadu_si256(wb.as_ptr().add(2) as *const __m256i) };
                    let aw = _mm256_sign_epi8(qw, qw);
                    for i in 0..R {
                        let xb = &x[i][b];
                        // SAFETY: qs is 32 bytes.
                        let qx = unsafe { _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i) };
                        let dot32 = idot(aw, _mm256_sign_epi8(qx, qw));
                        acc[i] = _mm256_fmadd_ps(
                            _mm256_mul_ps(d, _mm256_set1_ps(xb.d)),
                            _mm256_cvtepi32_ps(dot32),
                            acc[i],
                        );
                    }
                }
                acc.map(|a| hsum(a))
            }

            /// [`super::each_col`] with format `K`'s dot product at this level,
            /// compiled with this level's features so the dot inlines into the loop.
            ///
            /// # Safety
            /// This level's instructions must be available; `out` as for `each_col`.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn cols<K: Kernel, const R: usize>(
                w: &[u8],
                cols: std::ops::Range<usize>,
                kb: usize,
                x: [&[XBlock]; R],
                out: ColsOut,
            ) {
                let dot = |wc: &[u8], x: [&[XBlock]; R]| {
                    // SAFETY: this function (so this closure) has the features `$dot` needs.
                    unsafe { K::$dot::<R>(wc, x) }
                };
                // SAFETY: the caller owns `out`.
                unsafe { super::each_col(w, cols, kb * K::W_BLOCK, x, out, dot) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
simd_kernels!(simd_avx2, "avx2,fma,f16c", dot_avx2, |a, b| {
    _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
});
#[cfg(target_arch = "x86_64")]
simd_kernels!(
    simd_vnni,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    dot_vnni,
    |a, b| _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b)
);

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// Multiplies pseudo-random `[n, k]` weights in `format` by `m` rows and checks:
    /// close to candle's quantized matmul (within `tol`), every row alone bit-identical
    /// to the same row in the batch, and the scalar kernel equal to AVX2 to rounding.
    fn check_kernel<K: Kernel>(
        format: QFormat,
        dtype: GgmlDType,
        (n, k, m): (usize, usize, usize),
        tol: f32,
    ) {
        let dev = Device::Cpu;
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 104_729) % 977) as f32 / 300.0 - 1.5)
            .collect();
        let wt = Tensor::from_vec(w, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&wt, dtype).unwrap();
        let ours = QMatrix::new(format, &q.data().unwrap(), n, k).unwrap();
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
            assert!(
                (a - b).abs() < tol * (1.0 + b.abs()),
                "{format:?}: {a} vs {b}"
            );
        }
        for r in 0..m {
            let one = ours.matmul(&x[r * k..(r + 1) * k]).unwrap();
            let batched = &got[r * n..(r + 1) * n];
            assert!(
                one.iter()
                    .zip(batched)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{format:?} row {r}"
            );
        }
        let xq: Vec<XBlock> = x[..k].chunks_exact(QK).map(quantize_block).collect();
        let w0 = &ours.data[..(k / QK) * K::W_BLOCK];
        let s = K::dot_scalar(w0, &xq);
        assert!(
            (s - got[0]).abs() < 1e-3 * (1.0 + s.abs()),
            "{format:?}: {s} vs {}",
            got[0]
        );
        // Every SIMD level this CPU has gives the same bits (AVX2 vs VNNI).
        let levels = [SimdLevel::Avx2, SimdLevel::Avx512Vnni];
        let bits: Vec<u32> = levels
            .iter()
            .filter(|&&l| l <= detect_simd())
            .map(|&l| {
                let mut v = 0.0f32;
                // SAFETY: only levels this CPU has; one row, one column into `v`.
                let out = ColsOut {
                    out: &mut v,
                    n: 1,
                    first: 0,
                };
                unsafe { dot_cols::<K, 1>(l, w0, 0..1, k / QK, [&xq[..]], out) };
                v.to_bits()
            })
            .collect();
        assert!(
            bits.windows(2).all(|b| b[0] == b[1]),
            "{format:?}: {bits:?}"
        );
        assert!(QMatrix::new(format, &[0; 64][..K::W_BLOCK + 1], 1, QK).is_err());
    }

    #[test]
    fn q4_1_matches_candle_closely_and_is_row_invariant() {
        // candle rounds `s` as f16(Σq)·f16(d), ggml (and we) as f16(Σq·d): small differences.
        check_kernel::<Q41>(QFormat::Q4_1, GgmlDType::Q4_1, (70, 128, 7), 1e-2);
    }

    #[test]
    fn q8_0_matches_candle_closely_and_is_row_invariant() {
        check_kernel::<Q80>(QFormat::Q8_0, GgmlDType::Q8_0, (37, 96, 6), 1e-3);
    }

    #[test]
    fn stacked_parts_equal_the_parts_alone() {
        let dev = Device::Cpu;
        let part = |n: usize, seed: usize| {
            let w: Vec<f32> = (0..n * 64)
                .map(|i| ((i * 7919 + seed) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let q = QTensor::quantize(
                &Tensor::from_vec(w, (n, 64), &dev).unwrap(),
                GgmlDType::Q4_1,
            )
            .unwrap();
            QMatrix::new(QFormat::Q4_1, &q.data().unwrap(), n, 64).unwrap()
        };
        let (a, b) = (part(40, 1), part(72, 2));
        let stacked = QMatrix::stack(&[&a, &b]).unwrap();
        let x: Vec<f32> = (0..9 * 64).map(|i| (i % 37) as f32 / 18.0 - 1.0).collect();
        let outs = stacked.matmul_split(&x, &[40, 72]).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&outs[0]), bits(&a.matmul(&x).unwrap()));
        assert_eq!(bits(&outs[1]), bits(&b.matmul(&x).unwrap()));
        assert!(stacked.matmul_split(&x, &[40, 71]).is_err());
        let q8 = QMatrix::new(QFormat::Q8_0, &[0; 34], 1, 32).unwrap();
        assert!(QMatrix::stack(&[&a, &q8]).is_none(), "formats differ");
    }
}
