//! Quantized matmuls with SIMD kernels (AVX2, AVX-512 VNNI) for the GGUF formats users
//! download: Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K and Q6_K (a Q4_K_M file is Q4_K and Q6_K, with
//! Q5_0 / Q8_0 for tensors whose width is not a multiple of 256). candle 0.11 has only
//! scalar or re-reading paths for these (Q4_1's vec-dot is ~10× slower than memory
//! bandwidth allows; its batched Q8_0 path re-reads the LM head per row group).
//!
//! Weights keep their GGUF bytes:
//! - Q4_0 `{d: f16, qs: [u8; 16]}` per 32 inputs, value `d * (q - 8)`;
//! - Q4_1 `{d: f16, m: f16, qs: [u8; 16]}` per 32 inputs, value `d * q + m`;
//! - Q5_0 `{d: f16, qh: u32, qs: [u8; 16]}` per 32 inputs, value `d * (q - 16)` with
//!   bit `j` of `qh` the fifth bit of element `j`;
//!   in all three `qs[j]` holds element `j` in its low nibble and `j + 16` in its high one;
//! - Q8_0 `{d: f16, qs: [i8; 32]}` per 32 inputs, value `d * q`;
//! - Q4_K `{d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]}` per 256 inputs: eight
//!   sub-blocks of 32 with 6-bit scales `sc` and mins `m`, value `d * sc * q - dmin * m`;
//!   sub-block `2i` is the low nibbles of `qs[32i..32i + 32]`, `2i + 1` their high ones;
//! - Q5_K as Q4_K with `qh: [u8; 32]` between `scales` and `qs` (176 bytes): bit `j` of
//!   `qh[l]` is the fifth bit of element `l` of sub-block `j`;
//! - Q6_K `{ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16}` per 256 inputs:
//!   6-bit `q` (4 low bits in `ql`, 2 high in `qh`), value `d * sc * (q - 32)` with one
//!   8-bit scale per 16 inputs (the rest of a Q4_K_M file).
//!
//! Activations are quantized per row to 8-bit blocks of 32 (ggml's Q8_1: scale
//! `d = amax / 127`, `s = d * Σq`, both rounded through f16), so one block's
//! contribution is `d_w * d_x * Σ q_w q_x` plus, for formats with an offset,
//! `m_w * s_x` (Q4_1) or `−dmin * m * s_x` (Q4_K) — ggml's `vec_dot_q4_0_q8_0`,
//! `vec_dot_q5_0_q8_0`,
//! `vec_dot_q4_1_q8_1`, `vec_dot_q8_0_q8_0`, and `vec_dot_q4_K_q8_K` /
//! `vec_dot_q6_K_q8_K` with the activations in blocks of 32 instead of 256.
//!
//! Layout: a matrix whose output width is a multiple of 8 is held in the
//! column-interleaved [`panels`] layout (every format but F16/BF16), where one SIMD
//! instruction feeds 8 columns; otherwise (and for 16-bit weights) in GGUF's own
//! column-after-column layout, one column's blocks at a time ([`Kernel`]).
//!
//! Exactness: each output element is one dot product in a fixed block order,
//! computed by the same code whatever the number of rows or how columns are
//! split across threads, so results do not depend on batch composition.
//! Work is split over column chunks ([`crate::pool`]); each chunk walks the rows
//! tile by tile while its weights stay in cache.

mod panels;

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::GgmlDType;

use panels::{NC, Panel};

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
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
    /// IEEE half weights, multiplied with `f32` activations (no quantization).
    F16,
    /// bfloat16 weights, multiplied with `f32` activations.
    BF16,
}

impl QFormat {
    /// Every format, in declaration order.
    pub const ALL: [QFormat; 9] = [
        QFormat::Q4_0,
        QFormat::Q4_1,
        QFormat::Q5_0,
        QFormat::Q8_0,
        QFormat::Q4K,
        QFormat::Q5K,
        QFormat::Q6K,
        QFormat::F16,
        QFormat::BF16,
    ];

    /// The format of a GGUF tensor type these kernels multiply, if they do.
    pub fn from_ggml(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_0 => Some(QFormat::Q4_0),
            GgmlDType::Q4_1 => Some(QFormat::Q4_1),
            GgmlDType::Q5_0 => Some(QFormat::Q5_0),
            GgmlDType::Q8_0 => Some(QFormat::Q8_0),
            GgmlDType::Q4K => Some(QFormat::Q4K),
            GgmlDType::Q5K => Some(QFormat::Q5K),
            GgmlDType::Q6K => Some(QFormat::Q6K),
            GgmlDType::F16 => Some(QFormat::F16),
            GgmlDType::BF16 => Some(QFormat::BF16),
            _ => None,
        }
    }

    /// The GGUF tensor type of this format (for candle's device kernels).
    pub fn ggml(self) -> GgmlDType {
        match self {
            QFormat::Q4_0 => GgmlDType::Q4_0,
            QFormat::Q4_1 => GgmlDType::Q4_1,
            QFormat::Q5_0 => GgmlDType::Q5_0,
            QFormat::Q8_0 => GgmlDType::Q8_0,
            QFormat::Q4K => GgmlDType::Q4K,
            QFormat::Q5K => GgmlDType::Q5K,
            QFormat::Q6K => GgmlDType::Q6K,
            QFormat::F16 => GgmlDType::F16,
            QFormat::BF16 => GgmlDType::BF16,
        }
    }

    /// Whether rows of `k` inputs fit this format's kernels (a whole number of
    /// blocks: 32 inputs, 256 for the K-quants, 16 for 16-bit weights).
    pub fn fits(self, k: usize) -> bool {
        k.is_multiple_of(self.geometry().0)
    }

    /// Inputs per weight block and the block's bytes.
    fn geometry(self) -> (usize, usize) {
        fn of<X: Activation, K: Kernel<X>>() -> (usize, usize) {
            (X::INPUTS * K::X_BLOCKS, K::W_BLOCK)
        }
        match self {
            QFormat::Q4_0 => of::<XBlock, Q40>(),
            QFormat::Q4_1 => of::<XBlock, Q41>(),
            QFormat::Q5_0 => of::<XBlock, Q50>(),
            QFormat::Q8_0 => of::<XBlock, Q80>(),
            QFormat::Q4K => of::<XBlock, Q4K>(),
            QFormat::Q5K => of::<XBlock, Q5K>(),
            QFormat::Q6K => of::<XBlock, Q6K>(),
            QFormat::F16 => of::<f32, F16>(),
            QFormat::BF16 => of::<f32, BF16>(),
        }
    }
}

/// A `[n, k]` quantized weight matrix in GGUF layout.
#[derive(Debug, Clone)]
pub struct QMatrix {
    format: QFormat,
    /// Shared: cloning a model does not copy its weights.
    data: Arc<WeightBuf>,
    /// Whether `data` is in the column-interleaved layout ([`panels`]) rather than
    /// GGUF's: formats that have one, when `n` is a multiple of its 8 columns.
    panelled: bool,
    n: usize,
    k: usize,
}

/// One row of activations quantized to 8-bit blocks.
#[derive(Clone, Copy)]
struct XBlock {
    d: f32,
    s: f32,
    /// `Σ qs` over each half of 16 (the zero points' share in the panel kernels).
    hs: [i16; 2],
    qs: [i8; QK],
}

impl XBlock {
    const ZERO: Self = Self {
        d: 0.0,
        s: 0.0,
        hs: [0; 2],
        qs: [0; QK],
    };
}

/// `$body` with `$P` the [`Panel`] type of `$format`, or `$none` for the formats
/// without a panel layout.
macro_rules! with_panel {
    ($format:expr, $P:ident => $body:expr, _ => $none:expr) => {
        match $format {
            QFormat::Q4_0 => {
                type $P = panels::Q40;
                $body
            }
            QFormat::Q4_1 => {
                type $P = panels::Q41;
                $body
            }
            QFormat::Q5_0 => {
                type $P = panels::Q50;
                $body
            }
            QFormat::Q8_0 => {
                type $P = panels::Q80;
                $body
            }
            QFormat::Q4K => {
                type $P = panels::Q4K;
                $body
            }
            QFormat::Q5K => {
                type $P = panels::Q5K;
                $body
            }
            QFormat::Q6K => {
                type $P = panels::Q6K;
                $body
            }
            QFormat::F16 | QFormat::BF16 => $none,
        }
    };
}

impl QMatrix {
    /// Wraps raw GGUF bytes of an `[n, k]` matrix in `format`.
    ///
    /// # Errors
    /// [`Error::InvalidModel`] when `k` is not a multiple of the format's block (32
    /// inputs; 256 for Q4_K) or the byte count is off.
    pub fn new(format: QFormat, data: &[u8], n: usize, k: usize) -> Result<Self> {
        let (block, bytes) = format.geometry();
        if !k.is_multiple_of(block) || data.len() != n * (k / block) * bytes {
            return Err(Error::InvalidModel(format!(
                "{format:?} matrix [{n}, {k}] with {} bytes",
                data.len()
            )));
        }
        // Formats with a panel layout are converted straight into their buffer.
        let panels = (n.is_multiple_of(NC) && k > 0).then(|| {
            with_panel!(format, P => Some(WeightBuf::filled(panels::len::<P>(n, k), |out| {
                panels::from_gguf::<P>(data, n, k, out)
            })), _ => None)
        });
        let panels = panels.flatten();
        let panelled = panels.is_some();
        Ok(Self {
            format,
            data: Arc::new(panels.unwrap_or_else(|| WeightBuf::copy_from(data))),
            panelled,
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

    /// The raw GGUF blocks, row after row (converted back from the panel layout).
    pub fn raw(&self) -> Cow<'_, [u8]> {
        match self.panelled {
            true => Cow::Owned(with_panel!(self.format,
                P => panels::to_gguf::<P>(&self.data, self.n, self.k),
                _ => unreachable!("panelled formats have a panel layout"))),
            false => Cow::Borrowed(&self.data),
        }
    }

    /// Output columns `ids` as `f32` rows (`[ids.len(), k]`, row-major): the lookup
    /// of an embedding table that is also this (LM head) matrix.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when an id is not below `n`.
    pub fn dequantize_columns(&self, ids: &[u32]) -> Result<Vec<f32>> {
        use candle_core::quantized::{QStorage, QTensor};
        let cpu = candle_core::Device::Cpu;
        let (block, bytes) = self.format.geometry();
        let col_bytes = self.k / block * bytes;
        let mut out = Vec::with_capacity(ids.len() * self.k);
        for &id in ids {
            let c = id as usize;
            if c >= self.n {
                return Err(Error::InvalidInput(format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.n
                )));
            }
            let gguf: Cow<'_, [u8]> = if self.panelled {
                with_panel!(self.format, P => {
                    let panel = panels::len::<P>(NC, self.k);
                    let at = c / NC * panel;
                    Cow::Owned(panels::column_gguf::<P>(&self.data[at..at + panel], c % NC, self.k))
                }, _ => unreachable!("panelled formats have a panel layout"))
            } else {
                Cow::Borrowed(&self.data[c * col_bytes..(c + 1) * col_bytes])
            };
            let storage = QStorage::from_data(gguf, &cpu, self.format.ggml())?;
            let row = QTensor::new(storage, (1, self.k))?.dequantize(&cpu)?;
            out.extend(row.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
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
        let n = parts.iter().map(|p| p.n).sum();
        let len = parts.iter().map(|p| p.data.len()).sum();
        if parts.iter().all(|p| p.panelled) {
            // Panels are whole columns: the stack's panels are the parts'.
            let data = WeightBuf::filled(len, |out| {
                let mut at = 0;
                for p in parts {
                    out[at..at + p.data.len()].copy_from_slice(&p.data);
                    at += p.data.len();
                }
            });
            return Some(Self {
                data: Arc::new(data),
                n,
                ..(*first).clone()
            });
        }
        let mut data = Vec::with_capacity(len);
        parts.iter().for_each(|p| data.extend_from_slice(&p.raw()));
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
        if self.panelled {
            return self.matmul_panels_at(simd_level(), x, widths);
        }
        match self.format {
            QFormat::Q4_0 => self.matmul_with::<XBlock, Q40>(x, widths),
            QFormat::Q4_1 => self.matmul_with::<XBlock, Q41>(x, widths),
            QFormat::Q5_0 => self.matmul_with::<XBlock, Q50>(x, widths),
            QFormat::Q8_0 => self.matmul_with::<XBlock, Q80>(x, widths),
            QFormat::Q4K => self.matmul_with::<XBlock, Q4K>(x, widths),
            QFormat::Q5K => self.matmul_with::<XBlock, Q5K>(x, widths),
            QFormat::Q6K => self.matmul_with::<XBlock, Q6K>(x, widths),
            QFormat::F16 => self.matmul_with::<f32, F16>(x, widths),
            QFormat::BF16 => self.matmul_with::<f32, BF16>(x, widths),
        }
    }

    fn matmul_with<X: Activation, K: Kernel<X>>(
        &self,
        x: &[f32],
        widths: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        let (k, kb) = (self.k, self.k / X::INPUTS);
        let xq = self.prepare::<X>(x)?;
        let m = xq.len() / kb;
        let pool = pool::global();
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
                        dot_cols::<X, K, 4>(
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
                        dot_cols::<X, K, 1>(
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
        if self.n * m * k < 4096 * QK {
            (0..jobs.len()).for_each(job);
        } else {
            pool.for_each(jobs.len(), job);
        }
        Ok(outs)
    }
}

impl QMatrix {
    /// `x` (rows of `k`) prepared as activation units `X`.
    fn prepare<X: Activation>(&self, x: &[f32]) -> Result<Vec<X>> {
        let k = self.k;
        if !x.len().is_multiple_of(k) {
            return Err(Error::InvalidInput(format!(
                "quantized matmul: {} inputs for k = {k}",
                x.len()
            )));
        }
        let (m, kb) = (x.len() / k, k / X::INPUTS);
        let mut xq = vec![X::ZERO; m * kb];
        if m >= 64 {
            pool::global().for_chunks_mut(&mut xq, kb, |r, blocks| {
                X::prepare_row(&x[r * k..(r + 1) * k], blocks)
            });
        } else {
            xq.chunks_exact_mut(kb)
                .zip(x.chunks_exact(k))
                .for_each(|(blocks, x)| X::prepare_row(x, blocks));
        }
        Ok(xq)
    }

    /// [`QMatrix::matmul_split`] of a panelled matrix with `level`'s kernels.
    fn matmul_panels_at(
        &self,
        level: SimdLevel,
        x: &[f32],
        widths: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        with_panel!(self.format,
            P => self.panels_with::<P>(level, x, widths),
            _ => unreachable!("panelled formats have a panel layout"))
    }

    fn panels_with<P: Panel>(
        &self,
        level: SimdLevel,
        x: &[f32],
        widths: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        if widths.iter().any(|w| !w.is_multiple_of(NC)) {
            // Parts that cut a panel: the whole product, then cut.
            let all = self.panels_with::<P>(level, x, &[self.n])?.remove(0);
            let mut outs: Vec<Vec<f32>> = widths.iter().map(|_| Vec::new()).collect();
            for row in all.chunks_exact(self.n) {
                let mut at = 0;
                for (o, &w) in outs.iter_mut().zip(widths) {
                    o.extend_from_slice(&row[at..at + w]);
                    at += w;
                }
            }
            return Ok(outs);
        }
        let xq = self.prepare::<XBlock>(x)?;
        let kb = self.k / QK;
        let m = xq.len() / kb;
        let bytes = kb / P::SUBS * P::BLOCK;
        let mut outs: Vec<Vec<f32>> = widths.iter().map(|&w| vec![0.0f32; m * w]).collect();
        // Jobs: `COLS_PER_JOB` columns (whole panels) of one part, as (part, first
        // local column).
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
            let (n, out, first) = (widths[p], ptrs[p], first_col[p]);
            let c1 = (c0 + COLS_PER_JOB).min(n);
            let panels = (first + c0) / NC..(first + c1) / NC;
            let row = |r: usize| &xq[r * kb..(r + 1) * kb];
            let at = |r: usize| ColsOut {
                // SAFETY: row `r` of part `p`'s output.
                out: unsafe { out.get().add(r * n) },
                n,
                first,
            };
            for r0 in (0..m).step_by(ROW_TILE) {
                let r1 = (r0 + ROW_TILE).min(m);
                let mut r = r0;
                // SAFETY (both calls): `level` is what this CPU supports; jobs own
                // disjoint panels, so every (r, c) element of a part is written by
                // exactly one job, and the parts outlive the jobs.
                while P::WIDE_ROWS && r + 8 <= r1 {
                    let rows = std::array::from_fn(|i| row(r + i));
                    unsafe {
                        panel_cols::<P, 8>(level, &self.data, panels.clone(), bytes, rows, at(r))
                    };
                    r += 8;
                }
                while r + 4 <= r1 {
                    let rows = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                    unsafe {
                        panel_cols::<P, 4>(level, &self.data, panels.clone(), bytes, rows, at(r))
                    };
                    r += 4;
                }
                for i in r..r1 {
                    unsafe {
                        panel_cols::<P, 1>(
                            level,
                            &self.data,
                            panels.clone(),
                            bytes,
                            [row(i)],
                            at(i),
                        )
                    };
                }
            }
        };
        if self.n * m * self.k < 4096 * QK {
            (0..jobs.len()).for_each(job);
        } else {
            pool::global().for_each(jobs.len(), job);
        }
        Ok(outs)
    }
}

/// Panels `panels` (`bytes` each in `w`) against `R` activation rows with `level`'s
/// kernels, written through `out`.
///
/// # Safety
/// As [`dot_cols`].
unsafe fn panel_cols<P: Panel, const R: usize>(
    level: SimdLevel,
    w: &[u8],
    panels: std::ops::Range<usize>,
    bytes: usize,
    x: [&[XBlock]; R],
    out: ColsOut,
) {
    // SAFETY (all three): as the caller vouches.
    #[cfg(target_arch = "x86_64")]
    match level {
        SimdLevel::Avx512Vnni => {
            return unsafe { panels::vnni::cols::<P, R>(w, panels, bytes, x, out) };
        }
        SimdLevel::Avx2 => return unsafe { panels::avx2::cols::<P, R>(w, panels, bytes, x, out) },
        SimdLevel::Scalar => {}
    }
    let _ = level;
    for p in panels {
        let v = panels::dot_scalar::<P, R>(&w[p * bytes..(p + 1) * bytes], x);
        for (r, v) in v.iter().enumerate() {
            for (c, &v) in v.iter().enumerate() {
                // SAFETY: as the caller vouches.
                unsafe { *out.out.add(r * out.n + p * NC + c - out.first) = v };
            }
        }
    }
}

/// What a kernel multiplies weights with: one row of activations prepared as
/// units of `INPUTS` inputs each (8-bit blocks for the quantized formats, the
/// `f32` values themselves for 16-bit weights).
trait Activation: Copy + Send + Sync {
    const INPUTS: usize;
    const ZERO: Self;
    /// `x` (one row, `INPUTS * out.len()` values) into `out`.
    fn prepare_row(x: &[f32], out: &mut [Self]);
}

impl Activation for XBlock {
    const INPUTS: usize = QK;
    const ZERO: Self = XBlock::ZERO;
    fn prepare_row(x: &[f32], out: &mut [Self]) {
        for (o, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
            *o = quantize_block(x);
        }
    }
}

impl Activation for f32 {
    const INPUTS: usize = 1;
    const ZERO: Self = 0.0;
    fn prepare_row(x: &[f32], out: &mut [Self]) {
        out.copy_from_slice(x);
    }
}

fn quantize_block(x: &[f32]) -> XBlock {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK];
    let mut hs = [0i16; 2];
    for (j, (q, &v)) in qs.iter_mut().zip(x).enumerate() {
        *q = (v * id).round() as i8;
        hs[j / 16] += *q as i16;
    }
    let sum = hs[0] as i32 + hs[1] as i32;
    // Rounded through f16 like ggml's `block_q8_1`, so results track llama.cpp's.
    let r = |v: f32| half::f16::from_f32(v).to_f32();
    XBlock {
        d: r(d),
        s: r(d * sum as f32),
        hs,
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
/// against `R` activation rows (quantized to [`XBlock`]s unless `X` says
/// otherwise), scalar and per SIMD level. For every
/// `R` and SIMD level a row gets exactly the bits it gets alone (the integer
/// products are exact; the float ops per row are the same), so results do not
/// depend on the batch. The column loop around them is [`dot_cols`], shared.
trait Kernel<X: Activation = XBlock> {
    /// Bytes of one weight block.
    const W_BLOCK: usize;
    /// Activation units one weight block spans.
    const X_BLOCKS: usize = 1;
    /// Bytes of one column of `kb` activation units.
    fn col_bytes(kb: usize) -> usize {
        kb / Self::X_BLOCKS * Self::W_BLOCK
    }
    fn dot_scalar(w: &[u8], x: &[X]) -> f32;
    /// # Safety
    /// AVX2, FMA and F16C must be available.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const R: usize>(w: &[u8], x: [&[X]; R]) -> [f32; R];
    /// # Safety
    /// As [`Kernel::dot_avx2`], plus AVX-512 F, VL and VNNI.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_vnni<const R: usize>(w: &[u8], x: [&[X]; R]) -> [f32; R];
}

struct Q40;
struct Q41;
struct Q50;
struct Q80;
struct Q4K;
struct Q5K;
struct Q6K;
struct F16;
struct BF16;

impl Kernel<f32> for F16 {
    /// 16 weights a block: two 8-lane vectors.
    const W_BLOCK: usize = 32;
    const X_BLOCKS: usize = 16;
    fn dot_scalar(w: &[u8], x: &[f32]) -> f32 {
        w.chunks_exact(2)
            .zip(x)
            .map(|(b, &x)| half::f16::from_le_bytes([b[0], b[1]]).to_f32() * x)
            .sum()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_avx2<const R: usize>(w: &[u8], x: [&[f32]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_avx2::half_dot::<R, false>(w, x) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_vnni<const R: usize>(w: &[u8], x: [&[f32]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_vnni::half_dot::<R, false>(w, x) }
    }
}

impl Kernel<f32> for BF16 {
    const W_BLOCK: usize = 32;
    const X_BLOCKS: usize = 16;
    fn dot_scalar(w: &[u8], x: &[f32]) -> f32 {
        w.chunks_exact(2)
            .zip(x)
            .map(|(b, &x)| half::bf16::from_le_bytes([b[0], b[1]]).to_f32() * x)
            .sum()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_avx2<const R: usize>(w: &[u8], x: [&[f32]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_avx2::half_dot::<R, true>(w, x) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_vnni<const R: usize>(w: &[u8], x: [&[f32]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_vnni::half_dot::<R, true>(w, x) }
    }
}

impl Kernel for Q40 {
    const W_BLOCK: usize = 18;
    fn dot_scalar(w: &[u8], x: &[XBlock]) -> f32 {
        let mut acc = 0.0f32;
        for (wb, xb) in w.chunks_exact(Self::W_BLOCK).zip(x) {
            let mut isum = 0i32;
            for j in 0..16 {
                let q = wb[2 + j];
                isum += ((q & 0x0F) as i32 - 8) * xb.qs[j] as i32
                    + ((q >> 4) as i32 - 8) * xb.qs[j + 16] as i32;
            }
            acc += f16_at(wb, 0) * xb.d * isum as f32;
        }
        acc
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_avx2<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_avx2::q40_dot(w, x) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_vnni<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_vnni::q40_dot(w, x) }
    }
}

impl Kernel for Q50 {
    const W_BLOCK: usize = 22;
    fn dot_scalar(w: &[u8], x: &[XBlock]) -> f32 {
        let mut acc = 0.0f32;
        for (wb, xb) in w.chunks_exact(Self::W_BLOCK).zip(x) {
            let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
            let mut isum = 0i32;
            for j in 0..16 {
                let q = wb[6 + j];
                let lo = (q & 0x0F) as i32 | (((qh >> j) & 1) as i32) << 4;
                let hi = (q >> 4) as i32 | (((qh >> (j + 16)) & 1) as i32) << 4;
                isum += (lo - 16) * xb.qs[j] as i32 + (hi - 16) * xb.qs[j + 16] as i32;
            }
            acc += f16_at(wb, 0) * xb.d * isum as f32;
        }
        acc
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_avx2<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_avx2::q50_dot(w, x) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_vnni<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_vnni::q50_dot(w, x) }
    }
}

impl Kernel for Q4K {
    const W_BLOCK: usize = 144;
    const X_BLOCKS: usize = 8;
    fn dot_scalar(w: &[u8], x: &[XBlock]) -> f32 {
        k_dot_scalar(w, (Self::W_BLOCK, 16), None, x)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_avx2<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_avx2::q4k_dot(w, x) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_vnni<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_vnni::q4k_dot(w, x) }
    }
}

impl Kernel for Q5K {
    const W_BLOCK: usize = 176;
    const X_BLOCKS: usize = 8;
    fn dot_scalar(w: &[u8], x: &[XBlock]) -> f32 {
        k_dot_scalar(w, (Self::W_BLOCK, 48), Some(16), x)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_avx2<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_avx2::q5k_dot(w, x) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_vnni<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_vnni::q5k_dot(w, x) }
    }
}

impl Kernel for Q6K {
    const W_BLOCK: usize = 210;
    const X_BLOCKS: usize = 8;
    fn dot_scalar(w: &[u8], x: &[XBlock]) -> f32 {
        let mut acc = 0.0f32;
        for (wb, xs) in w
            .chunks_exact(Self::W_BLOCK)
            .zip(x.chunks_exact(Self::X_BLOCKS))
        {
            let d = f16_at(wb, 208);
            for (sub, xb) in xs.iter().enumerate() {
                let q = q6k_group(wb, sub);
                let (h, g) = (sub / 4, sub % 4);
                let sc = |i: usize| wb[192 + 8 * h + 2 * g + i] as i8 as i32;
                let part = |r: std::ops::Range<usize>| -> i32 {
                    r.map(|l| (q[l] as i32 - 32) * xb.qs[l] as i32).sum()
                };
                let isum = sc(0) * part(0..16) + sc(1) * part(16..32);
                acc += d * xb.d * isum as f32;
            }
        }
        acc
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_avx2<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_avx2::q6k_dot(w, x) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn dot_vnni<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
        // SAFETY: as the caller vouches.
        unsafe { simd_vnni::q6k_dot(w, x) }
    }
}

/// The 32 unsigned 6-bit quants (0..64, less 32 for the value) of Q6_K group `sub`
/// (0..8, inputs `32 * sub..32 * sub + 32`) of one block (ggml's `dequantize_row_q6_K`:
/// per half `h` of 128 inputs, group `g` takes nibble `g / 2` of `ql[64h + 32 (g % 2) + l]`
/// and bits `2g..2g + 2` of `qh[32h + l]`).
fn q6k_group(wb: &[u8], sub: usize) -> [u8; 32] {
    let (h, g) = (sub / 4, sub % 4);
    let ql = &wb[64 * h + 32 * (g % 2)..][..32];
    let qh = &wb[128 + 32 * h..][..32];
    std::array::from_fn(|l| ((ql[l] >> (4 * (g / 2))) & 0x0F) | (((qh[l] >> (2 * g)) & 3) << 4))
}

/// Q4_K / Q5_K (`block` bytes a block, quants at `qs_at`, Q5_K's fifth bits at
/// `qh_at`) against 8-bit blocks of 32: per sub-block `d * sc * d_x * Σ q q_x`,
/// less `dmin * m * s_x`.
fn k_dot_scalar(
    w: &[u8],
    (block, qs_at): (usize, usize),
    qh_at: Option<usize>,
    x: &[XBlock],
) -> f32 {
    let mut acc = 0.0f32;
    let mut summs = 0.0f32;
    for (wb, xs) in w.chunks_exact(block).zip(x.chunks_exact(8)) {
        let (d, dmin) = (f16_at(wb, 0), f16_at(wb, 2));
        for (sub, xb) in xs.iter().enumerate() {
            let (sc, m) = scale_min_k4(sub, &wb[4..16]);
            let qs = &wb[qs_at + 32 * (sub / 2)..][..32];
            let shift = 4 * (sub % 2);
            let isum: i32 = (0..32)
                .map(|l| {
                    let fifth = qh_at.map_or(0, |at| ((wb[at + l] >> sub) & 1) << 4);
                    (((qs[l] >> shift) & 0x0F) | fifth) as i32 * xb.qs[l] as i32
                })
                .sum();
            acc += d * sc * xb.d * isum as f32;
            summs += dmin * m * xb.s;
        }
    }
    acc - summs
}

/// Scale and min of Q4_K sub-block `j` (0..8) from the 12 packed bytes, as
/// floats (ggml's `get_scale_min_k4`): 6 bits each, the high two bits of
/// sub-blocks 4..8 in the top bits of the first eight bytes.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (sc as f32, m as f32)
}

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
unsafe fn dot_cols<X: Activation, K: Kernel<X>, const R: usize>(
    level: SimdLevel,
    w: &[u8],
    cols: std::ops::Range<usize>,
    kb: usize,
    x: [&[X]; R],
    out: ColsOut,
) {
    // SAFETY (all three): as the caller vouches.
    #[cfg(target_arch = "x86_64")]
    match level {
        SimdLevel::Avx512Vnni => {
            return unsafe { simd_vnni::cols::<X, K, R>(w, cols, kb, x, out) };
        }
        SimdLevel::Avx2 => return unsafe { simd_avx2::cols::<X, K, R>(w, cols, kb, x, out) },
        SimdLevel::Scalar => {}
    }
    let _ = level;
    unsafe {
        each_col(w, cols, K::col_bytes(kb), x, out, |wc, x| {
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
unsafe fn each_col<X, const R: usize>(
    w: &[u8],
    cols: std::ops::Range<usize>,
    bytes: usize,
    x: [&[X]; R],
    out: ColsOut,
    mut dot: impl FnMut(&[u8], [&[X]; R]) -> [f32; R],
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
            use super::{
                Activation, ColsOut, Kernel, Q4K, Q5K, Q6K, Q40, Q41, Q50, Q80, XBlock,
                scale_min_k4,
            };
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

            /// The signed-block formats (Q4_0, Q5_0, Q8_0: an f16 scale at byte 0, then
            /// 32 quants `signed` unpacks to `i8`s) for `R` rows sharing each unpacked
            /// block, with ggml's sign trick: `|w|` times `x` given `w`'s sign is an
            /// unsigned × signed product `$idot` takes.
            #[inline]
            #[target_feature(enable = $features)]
            fn signed_dot<const R: usize>(
                w: &[u8],
                block: usize,
                x: [&[XBlock]; R],
                signed: impl Fn(&[u8]) -> __m256i,
            ) -> [f32; R] {
                let mut acc = [_mm256_setzero_ps(); R];
                for (b, wb) in w.chunks_exact(block).enumerate() {
                    let d = _mm256_broadcastss_ps(f16x8(wb, 0));
                    let qw = signed(wb);
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

            /// ggml's `ggml_vec_dot_q4_0_q8_0`: the nibbles less 8.
            #[inline]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q40_dot<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
                let (low, eight) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(8));
                signed_dot(w, Q40::W_BLOCK, x, |wb| {
                    // SAFETY: a Q4_0 block is 18 bytes, qs at 2..18.
                    let tmp = unsafe { _mm_loadu_si128(wb.as_ptr().add(2) as *const __m128i) };
                    let nibbles =
                        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp), low);
                    _mm256_sub_epi8(nibbles, eight)
                })
            }

            /// ggml's `ggml_vec_dot_q5_0_q8_0`: `q - 16` as a signed byte is the
            /// nibble when the fifth bit is set, else the nibble with `0xF0` (its
            /// two's complement).
            #[inline]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q50_dot<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
                let low = _mm256_set1_epi8(0x0F);
                // Byte i of the expansion is byte i / 8 of `qh`, then all ones iff bit i % 8.
                let spread = _mm256_set_epi64x(
                    0x0303030303030303,
                    0x0202020202020202,
                    0x0101010101010101,
                    0,
                );
                let others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
                signed_dot(w, Q50::W_BLOCK, x, |wb| {
                    let qh = i32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
                    let bytes =
                        _mm256_or_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(qh), spread), others);
                    let fifth = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
                    // SAFETY: a Q5_0 block is 22 bytes, qs at 6..22.
                    let tmp = unsafe { _mm_loadu_si128(wb.as_ptr().add(6) as *const __m128i) };
                    let nibbles =
                        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp), low);
                    _mm256_or_si256(
                        nibbles,
                        _mm256_andnot_si256(fifth, _mm256_set1_epi8(0xF0u8 as i8)),
                    )
                })
            }

            /// Q4_K and Q5_K against 8-bit blocks of 32 (`block` bytes a block, quants
            /// at `qs_at`; `qh(wb)` is Q5_K's fifth-bit array, zero for Q4_K): per
            /// sub-block the quants' integer dot scaled by `d * sc * d_x`, less
            /// `dmin * m * s_x`, for `R` rows sharing each unpacked weight block.
            /// Quants are below 32, so `$idot`'s `u8 × i8` pair sums stay within `i16`.
            #[inline]
            #[target_feature(enable = $features)]
            fn k_dot<const R: usize>(
                w: &[u8],
                (block, qs_at): (usize, usize),
                x: [&[XBlock]; R],
                qh: impl Fn(&[u8]) -> __m256i,
            ) -> [f32; R] {
                let mut acc = [_mm256_setzero_ps(); R];
                let mut summs = [0.0f32; R];
                let (low, sixteen) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(16));
                for (b, wb) in w.chunks_exact(block).enumerate() {
                    let (d, dmin) = (f16(wb, 0), f16(wb, 2));
                    let qh = qh(wb);
                    for pair in 0..4 {
                        let qs = &wb[qs_at + 32 * pair..][..32];
                        // SAFETY: `qs` is 32 bytes.
                        let raw = unsafe { _mm256_loadu_si256(qs.as_ptr() as *const __m256i) };
                        let halves = [
                            _mm256_and_si256(raw, low),
                            _mm256_and_si256(_mm256_srli_epi16(raw, 4), low),
                        ];
                        for (h, nibbles) in halves.into_iter().enumerate() {
                            let sub = 2 * pair + h;
                            // Bit `sub` of `qh[l]` is the fifth bit of element `l`.
                            let bit = _mm256_set1_epi8(1 << sub);
                            let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                            let qw = _mm256_or_si256(nibbles, _mm256_and_si256(set, sixteen));
                            let (sc, m) = scale_min_k4(sub, &wb[4..16]);
                            let (dsc, dm) = (_mm256_set1_ps(d * sc), dmin * m);
                            for i in 0..R {
                                let xb = &x[i][8 * b + sub];
                                summs[i] += dm * xb.s;
                                // SAFETY: qs is 32 bytes.
                                let qx =
                                    unsafe { _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i) };
                                let dot32 = idot(qw, qx);
                                acc[i] = _mm256_fmadd_ps(
                                    _mm256_mul_ps(dsc, _mm256_set1_ps(xb.d)),
                                    _mm256_cvtepi32_ps(dot32),
                                    acc[i],
                                );
                            }
                        }
                    }
                }
                std::array::from_fn(|i| hsum(acc[i]) - summs[i])
            }

            /// Q4_K: `{d, dmin, scales: [u8; 12], qs: [u8; 128]}`.
            #[inline]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q4k_dot<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
                k_dot(w, (Q4K::W_BLOCK, 16), x, |_| _mm256_setzero_si256())
            }

            /// Q5_K: Q4_K with `qh: [u8; 32]` at 16 and `qs` at 48.
            #[inline]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q5k_dot<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
                k_dot(w, (Q5K::W_BLOCK, 48), x, |wb| {
                    // SAFETY: a Q5_K block is 176 bytes, qh at 16..48.
                    unsafe { _mm256_loadu_si256(wb[16..48].as_ptr() as *const __m256i) }
                })
            }

            /// Q6_K against 8-bit blocks of 32, for `R` rows sharing each unpacked
            /// weight group: `maddubs` of the unsigned quants less `maddubs` of 32,
            /// then `madd` with the two 16-input scales — AVX2 integer ops at both
            /// levels (exact: |pair| ≤ 8128, |lane| < 2^21), so both give the same bits.
            #[inline]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q6k_dot<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
                let mut acc = [_mm256_setzero_ps(); R];
                let (m4, m2, k32) = (
                    _mm256_set1_epi8(0x0F),
                    _mm256_set1_epi8(3),
                    _mm256_set1_epi8(32),
                );
                for (b, wb) in w.chunks_exact(Q6K::W_BLOCK).enumerate() {
                    let d = f16(wb, 208);
                    for h in 0..2 {
                        // SAFETY: a Q6_K block is 210 bytes: ql at 0..128, qh at 128..192.
                        let (ql_a, ql_b, qh) = unsafe {
                            let p = wb.as_ptr();
                            (
                                _mm256_loadu_si256(p.add(64 * h) as *const __m256i),
                                _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i),
                                _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i),
                            )
                        };
                        let high = |shift: i32| {
                            let bits = match shift {
                                0 => qh,
                                2 => _mm256_srli_epi16(qh, 2),
                                4 => _mm256_srli_epi16(qh, 4),
                                _ => _mm256_srli_epi16(qh, 6),
                            };
                            _mm256_slli_epi16(_mm256_and_si256(bits, m2), 4)
                        };
                        let groups = [
                            _mm256_or_si256(_mm256_and_si256(ql_a, m4), high(0)),
                            _mm256_or_si256(_mm256_and_si256(ql_b, m4), high(2)),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(ql_a, 4), m4),
                                high(4),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(ql_b, 4), m4),
                                high(6),
                            ),
                        ];
                        for (g, qw) in groups.into_iter().enumerate() {
                            let sc = |i: usize| wb[192 + 8 * h + 2 * g + i] as i8 as i16;
                            let scales =
                                _mm256_set_m128i(_mm_set1_epi16(sc(1)), _mm_set1_epi16(sc(0)));
                            for i in 0..R {
                                let xb = &x[i][Q6K::X_BLOCKS * b + 4 * h + g];
                                // SAFETY: qs is 32 bytes.
                                let qx =
                                    unsafe { _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i) };
                                let p16 = _mm256_sub_epi16(
                                    _mm256_maddubs_epi16(qw, qx),
                                    _mm256_maddubs_epi16(k32, qx),
                                );
                                let dot32 = _mm256_madd_epi16(p16, scales);
                                acc[i] = _mm256_fmadd_ps(
                                    _mm256_set1_ps(d * xb.d),
                                    _mm256_cvtepi32_ps(dot32),
                                    acc[i],
                                );
                            }
                        }
                    }
                }
                acc.map(|a| hsum(a))
            }

            /// 16-bit weights (bfloat16 when `BF`, else IEEE half) times `f32`
            /// activations for `R` rows: each 8 weights widened once (a shift, or
            /// F16C's `vcvtph2ps`), then one FMA per row into two accumulators a
            /// row (even and odd vectors, so a lone row is not one latency chain).
            #[inline]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn half_dot<const R: usize, const BF: bool>(
                w: &[u8],
                x: [&[f32]; R],
            ) -> [f32; R] {
                let mut acc = [[_mm256_setzero_ps(); 2]; R];
                let widen = |p: *const u8| {
                    // SAFETY: `p` points at 8 weights (16 bytes) of `w`.
                    let h = unsafe { _mm_loadu_si128(p as *const __m128i) };
                    if BF {
                        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                    } else {
                        _mm256_cvtph_ps(h)
                    }
                };
                for (b, wb) in w.chunks_exact(32).enumerate() {
                    let ws = [widen(wb.as_ptr()), widen(wb[16..].as_ptr())];
                    for i in 0..R {
                        let xs = &x[i][16 * b..16 * b + 16];
                        for (h, &wv) in ws.iter().enumerate() {
                            // SAFETY: `xs` has 16 values.
                            let xv = unsafe { _mm256_loadu_ps(xs.as_ptr().add(8 * h)) };
                            acc[i][h] = _mm256_fmadd_ps(wv, xv, acc[i][h]);
                        }
                    }
                }
                acc.map(|[a, b]| hsum(_mm256_add_ps(a, b)))
            }

            /// ggml's `ggml_vec_dot_q8_0_q8_0`: the quants as they are.
            #[inline]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q80_dot<const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [f32; R] {
                signed_dot(w, Q80::W_BLOCK, x, |wb| {
                    // SAFETY: a Q8_0 block is 34 bytes, qs at 2..34.
                    unsafe { _mm256_loadu_si256(wb.as_ptr().add(2) as *const __m256i) }
                })
            }

            /// [`super::each_col`] with format `K`'s dot product at this level,
            /// compiled with this level's features so the dot inlines into the loop.
            ///
            /// # Safety
            /// This level's instructions must be available; `out` as for `each_col`.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn cols<X: Activation, K: Kernel<X>, const R: usize>(
                w: &[u8],
                cols: std::ops::Range<usize>,
                kb: usize,
                x: [&[X]; R],
                out: ColsOut,
            ) {
                let dot = |wc: &[u8], x: [&[X]; R]| {
                    // SAFETY: this function (so this closure) has the features `$dot` needs.
                    unsafe { K::$dot::<R>(wc, x) }
                };
                // SAFETY: the caller owns `out`.
                unsafe { super::each_col(w, cols, K::col_bytes(kb), x, out, dot) }
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
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Module, Tensor};

    /// Multiplies pseudo-random `[n, k]` weights in `format` by `m` rows and checks:
    /// close to the exact product (as close as candle's quantized matmul), every row
    /// alone bit-identical to the same row in the batch, the scalar kernel equal to
    /// the SIMD ones to rounding and the SIMD levels equal bit for bit.
    fn check_kernel<X: Activation, K: Kernel<X>>(
        format: QFormat,
        dtype: GgmlDType,
        (n, k, m): (usize, usize, usize),
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
        let q_bytes = q.data().unwrap().to_vec();
        let ours = QMatrix::new(format, &q_bytes, n, k).unwrap();
        let got = ours.matmul(&x).unwrap();
        let xt = Tensor::from_vec(x.clone(), (m, k), &dev).unwrap();
        let want = candle_core::quantized::QMatMul::QTensor(std::sync::Arc::new(q))
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Against the exact product of the dequantized weights, relative to each
        // output's scale Σ|w x|: ours within `tol`, and no worse than candle's by more
        // than half (activation quantization differs: 32-wide blocks vs Q8_K's 256).
        let wd = q_dequant(&dtype, &ours, n, k);
        let (mut ours_err, mut candle_err) = (0.0f64, 0.0f64);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let (r, c) = (i / n, i % n);
            let (xs, ws) = (&x[r * k..(r + 1) * k], &wd[c * k..(c + 1) * k]);
            let exact: f64 = xs.iter().zip(ws).map(|(&x, &w)| x as f64 * w as f64).sum();
            let scale: f64 = xs
                .iter()
                .zip(ws)
                .map(|(&x, &w)| (x as f64 * w as f64).abs())
                .sum();
            ours_err = ours_err.max((*a as f64 - exact).abs() / scale);
            candle_err = candle_err.max((*b as f64 - exact).abs() / scale);
        }
        assert!(
            ours_err < 1e-2 && ours_err <= 1.5 * candle_err + 1e-6,
            "{format:?}: relative error {ours_err:.2e} (candle {candle_err:.2e})"
        );
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
        let mut xq = vec![X::ZERO; k / X::INPUTS];
        X::prepare_row(&x[..k], &mut xq);
        let raw = ours.raw();
        let w0 = &raw[..K::col_bytes(k / X::INPUTS)];
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
                unsafe { dot_cols::<X, K, 1>(l, w0, 0..1, k / X::INPUTS, [&xq[..]], out) };
                v.to_bits()
            })
            .collect();
        assert!(
            bits.windows(2).all(|b| b[0] == b[1]),
            "{format:?}: {bits:?}"
        );
        if ours.panelled {
            // The panel layout gives the GGUF bytes back, and every level (the
            // scalar kernel too) the same bits for the whole batch.
            assert!(
                ours.raw() == q_bytes.as_slice(),
                "{format:?}: raw round trip"
            );
            let levels = [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512Vnni];
            for l in levels.into_iter().filter(|&l| l <= detect_simd()) {
                let v = ours.matmul_panels_at(l, &x, &[n]).unwrap().remove(0);
                assert!(
                    v.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{format:?} panels at {l:?}"
                );
            }
        } else {
            assert!(!n.is_multiple_of(NC) || X::INPUTS == 1);
        }
        // Columns read back as rows (a tied embedding's lookup) are the dequantized weights.
        let ids = [0u32, (n - 1) as u32, (n / 2) as u32];
        let rows = ours.dequantize_columns(&ids).unwrap();
        for (r, &c) in rows.chunks_exact(k).zip(&ids) {
            assert_eq!(
                r,
                &wd[c as usize * k..(c as usize + 1) * k],
                "{format:?} column {c}"
            );
        }
        assert!(ours.dequantize_columns(&[n as u32]).is_err());
        let (block, bytes) = format.geometry();
        assert!(QMatrix::new(format, &vec![0; bytes + 1], 1, block).is_err());
        assert!(QMatrix::new(format, &vec![0; bytes], 1, block).is_ok());
    }

    /// The f32 weights `[n, k]` that `m`'s blocks encode (candle's dequantization).
    fn q_dequant(dtype: &GgmlDType, m: &QMatrix, n: usize, k: usize) -> Vec<f32> {
        let storage =
            candle_core::quantized::QStorage::from_data(m.raw(), &Device::Cpu, *dtype).unwrap();
        QTensor::new(storage, (n, k))
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    #[test]
    fn q4_1_matches_candle_closely_and_is_row_invariant() {
        check_kernel::<XBlock, Q41>(QFormat::Q4_1, GgmlDType::Q4_1, (70, 128, 7));
        check_kernel::<XBlock, Q41>(QFormat::Q4_1, GgmlDType::Q4_1, (72, 128, 7));
    }

    #[test]
    fn q8_0_matches_candle_closely_and_is_row_invariant() {
        check_kernel::<XBlock, Q80>(QFormat::Q8_0, GgmlDType::Q8_0, (37, 96, 6));
        check_kernel::<XBlock, Q80>(QFormat::Q8_0, GgmlDType::Q8_0, (40, 96, 6));
    }

    #[test]
    fn q4_0_matches_candle_closely_and_is_row_invariant() {
        check_kernel::<XBlock, Q40>(QFormat::Q4_0, GgmlDType::Q4_0, (45, 160, 9));
        check_kernel::<XBlock, Q40>(QFormat::Q4_0, GgmlDType::Q4_0, (48, 160, 9));
    }

    #[test]
    fn q5_0_matches_candle_closely_and_is_row_invariant() {
        // candle's Q5_0 vec-dot wants an even number of blocks.
        check_kernel::<XBlock, Q50>(QFormat::Q5_0, GgmlDType::Q5_0, (41, 128, 5));
        check_kernel::<XBlock, Q50>(QFormat::Q5_0, GgmlDType::Q5_0, (40, 128, 5));
    }

    #[test]
    fn q4_k_matches_candle_closely_and_is_row_invariant() {
        check_kernel::<XBlock, Q4K>(QFormat::Q4K, GgmlDType::Q4K, (33, 512, 7));
        check_kernel::<XBlock, Q4K>(QFormat::Q4K, GgmlDType::Q4K, (32, 512, 7));
    }

    #[test]
    fn q5_k_matches_candle_closely_and_is_row_invariant() {
        check_kernel::<XBlock, Q5K>(QFormat::Q5K, GgmlDType::Q5K, (31, 768, 6));
        check_kernel::<XBlock, Q5K>(QFormat::Q5K, GgmlDType::Q5K, (32, 768, 6));
    }

    #[test]
    fn q6_k_matches_candle_closely_and_is_row_invariant() {
        check_kernel::<XBlock, Q6K>(QFormat::Q6K, GgmlDType::Q6K, (29, 512, 6));
        check_kernel::<XBlock, Q6K>(QFormat::Q6K, GgmlDType::Q6K, (24, 512, 6));
    }

    #[test]
    fn f16_matches_candle_closely_and_is_row_invariant() {
        check_kernel::<f32, F16>(QFormat::F16, GgmlDType::F16, (27, 160, 9));
    }

    #[test]
    fn bf16_matches_candle_closely_and_is_row_invariant() {
        check_kernel::<f32, BF16>(QFormat::BF16, GgmlDType::BF16, (27, 160, 9));
    }

    #[test]
    fn q4_k_scales_unpack_as_ggml_does() {
        // Sub-blocks 0..4: low 6 bits of bytes j (scale) and j + 4 (min); 4..8: a
        // nibble of byte j + 4 with the top two bits of byte j - 4 (scale) or j (min).
        let q = [
            0b11_000001,
            0b10_000010,
            0b01_000011,
            0b00_000100, // scales 0..4 (+ high bits)
            0b11_000101,
            0b10_000110,
            0b01_000111,
            0b00_001000, // mins 0..4 (+ high bits)
            0x9A,
            0xBC,
            0xDE,
            0xF0, // low nibbles: scales 4..8, high: mins 4..8
        ];
        assert_eq!(scale_min_k4(0, &q), (1.0, 5.0));
        assert_eq!(scale_min_k4(3, &q), (4.0, 8.0));
        assert_eq!(scale_min_k4(4, &q), (58.0, 57.0)); // 0xA | 0b11 << 4, 0x9 | 0b11 << 4
        assert_eq!(scale_min_k4(7, &q), (0.0, 15.0));
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
        // A part that is not whole panels: the stack goes through GGUF bytes and
        // comes out column-major (33 + 40 columns), and splits that cut a panel
        // still give each part's bits.
        let c = part(33, 3);
        let mixed = QMatrix::stack(&[&a, &c]).unwrap();
        assert!(a.panelled && !c.panelled && !mixed.panelled);
        let outs = mixed.matmul_split(&x, &[40, 33]).unwrap();
        assert_eq!(bits(&outs[1]), bits(&c.matmul(&x).unwrap()));
        let outs = stacked.matmul_split(&x, &[36, 76]).unwrap();
        let whole = stacked.matmul(&x).unwrap();
        let (left, right): (Vec<f32>, Vec<f32>) = (
            whole.chunks(112).flat_map(|r| r[..36].to_vec()).collect(),
            whole.chunks(112).flat_map(|r| r[36..].to_vec()).collect(),
        );
        assert_eq!(
            (bits(&outs[0]), bits(&outs[1])),
            (bits(&left), bits(&right))
        );
        let q8 = QMatrix::new(QFormat::Q8_0, &[0; 34], 1, 32).unwrap();
        assert!(QMatrix::stack(&[&a, &q8]).is_none(), "formats differ");
    }
}
