//! The column-interleaved ("panel") layout of a quantized matrix and its kernels.
//!
//! A panel is [`NC`] = 8 consecutive output columns. Its blocks run along `k`; each
//! holds one GGUF block's worth of inputs for all 8 columns, quants interleaved so
//! that one 32-byte vector is 4 consecutive inputs of each of the 8 columns: one
//! `vpdpbusd` (or AVX2 `maddubs` + `madd`) against 4 activation bytes broadcast to
//! every lane adds 32 products into the 8 columns' sums at once, and a block's float
//! work (convert, scale, accumulate) is one vector op per 8 columns instead of one
//! per column, with no horizontal sums. This is the layout llama.cpp's and candle's
//! repacked CPU kernels use; here it is integer-exact, so every SIMD level (and the
//! scalar kernel, which does the same float ops) gives the same bits, alone or in
//! any batch.
//!
//! A panel block of format `P`, 8 columns, `P::SUBS` sub-blocks of 32 inputs:
//! - `d: [f16; 8]` — the columns' block scales;
//! - [`Kind::Offset`] (Q4_1): `m: [f16; 8]`; [`Kind::KMin`] (Q4_K, Q5_K): `dmin: [f16; 8]`,
//!   then 6-bit scales `sc: [[u8; 8]; 8]` and mins `[[u8; 8]; 8]` per sub-block;
//!   [`Kind::KSigned`] (Q6_K): scales `[[i8; 8]; 16]`, one per 16 inputs;
//! - per sub-block, the quants as planes: vector `g` (0..8) holds inputs `4g..4g + 4`,
//!   byte `4c + i` for column `c`, input `4g + i`.
//!   - 8 bits (Q8_0): the 8 vectors as they are (signed);
//!   - 4 bits: 4 vectors of nibbles, the low ones vector `g`, the high ones `g + 4`;
//!   - 5 bits: the nibbles, then 32 bytes whose bit `g` is vector `g`'s fifth bit;
//!   - 6 bits: the nibbles, then two 32-byte planes whose bits `2i..2i + 2` are bits
//!     4 and 5 of vector `4h + i` (`h` the plane).
//!
//! Every format's panel block holds exactly its 8 GGUF blocks' information (Q4_K's and
//! Q5_K's are 32 bytes larger, their scales unpacked to bytes), so [`to_gguf`] gives the GGUF bytes
//! back (for the GPU path and for stacking matrices).

use super::{QK, XBlock, f16_at, scale_min_k4};

/// Output columns per panel.
pub(super) const NC: usize = 8;

/// What a format's block stores besides its quants.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `d * (q - zp)` (Q4_0, Q5_0, Q8_0).
    Plain,
    /// `d * q + m` (Q4_1).
    Offset,
    /// `d * sc * q - dmin * m` per sub-block of 32 (Q4_K, Q5_K).
    KMin,
    /// `d * sc * (q - 32)` with `sc` per 16 inputs (Q6_K).
    KSigned,
}

/// One GGUF block of one column, decoded.
pub(super) struct Decoded {
    /// `d` as f16 bits.
    d: u16,
    /// Q4_1's `m` or Q4_K's `dmin` as f16 bits.
    m: u16,
    /// Q4_K: the 8 sub-block scales; Q6_K: the 16 scales (`i8` bits).
    sc: [u8; 16],
    /// Q4_K: the 8 sub-block mins.
    mins: [u8; 8],
    /// The quants in input order (Q8_0: `i8` bits).
    q: [u8; 256],
}

impl Decoded {
    const ZERO: Self = Self {
        d: 0,
        m: 0,
        sc: [0; 16],
        mins: [0; 8],
        q: [0; 256],
    };
}

/// A format with a panel layout: its GGUF block's geometry, how its quants and
/// scales read, and the conversion of one GGUF block to and from [`Decoded`].
pub(super) trait Panel {
    /// 32-input sub-blocks per GGUF block.
    const SUBS: usize;
    /// Bits per quant: 4, 5, 6 or 8 (8: signed).
    const BITS: u32;
    /// Subtracted from each unsigned quant.
    const ZP: i32;
    const KIND: Kind;
    /// Bytes of one GGUF block.
    const GGUF_BLOCK: usize;
    /// Whether the kernel takes 8 activation rows at a time (else 4): faster for
    /// the formats whose per-row state fits the registers (not Q6_K's two halves
    /// or Q8_0's wider products).
    const WIDE_ROWS: bool = Self::BITS < 6;
    fn decode(b: &[u8], out: &mut Decoded);
    fn encode(v: &Decoded, b: &mut [u8]);

    /// Bytes before the quant planes in a panel block.
    const QUANTS_AT: usize = match Self::KIND {
        Kind::Plain => 16,
        Kind::Offset => 32,
        Kind::KMin => 32 + 2 * 64,
        Kind::KSigned => 16 + 128,
    };
    /// Bytes of one sub-block's quant planes.
    const PLANES: usize = match Self::BITS {
        4 => 128,
        5 => 160,
        6 => 192,
        _ => 256,
    };
    /// Bytes of one panel block.
    const BLOCK: usize = Self::QUANTS_AT + Self::SUBS * Self::PLANES;
}

pub(super) struct Q40;
pub(super) struct Q41;
pub(super) struct Q50;
pub(super) struct Q80;
pub(super) struct Q4K;
pub(super) struct Q5K;
pub(super) struct Q6K;

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// Nibble-packed quants (`qs[j]`: element `j` low, `j + 16` high) in and out.
fn nibbles_in(qs: &[u8], q: &mut [u8]) {
    for j in 0..16 {
        q[j] = qs[j] & 0x0F;
        q[j + 16] = qs[j] >> 4;
    }
}

fn nibbles_out(q: &[u8], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = (q[j] & 0x0F) | (q[j + 16] << 4);
    }
}

impl Panel for Q40 {
    const SUBS: usize = 1;
    const BITS: u32 = 4;
    const ZP: i32 = 8;
    const KIND: Kind = Kind::Plain;
    const GGUF_BLOCK: usize = 18;
    fn decode(b: &[u8], v: &mut Decoded) {
        v.d = u16_at(b, 0);
        nibbles_in(&b[2..18], &mut v.q);
    }
    fn encode(v: &Decoded, b: &mut [u8]) {
        b[..2].copy_from_slice(&v.d.to_le_bytes());
        nibbles_out(&v.q, &mut b[2..18]);
    }
}

impl Panel for Q41 {
    const SUBS: usize = 1;
    const BITS: u32 = 4;
    const ZP: i32 = 0;
    const KIND: Kind = Kind::Offset;
    const GGUF_BLOCK: usize = 20;
    fn decode(b: &[u8], v: &mut Decoded) {
        (v.d, v.m) = (u16_at(b, 0), u16_at(b, 2));
        nibbles_in(&b[4..20], &mut v.q);
    }
    fn encode(v: &Decoded, b: &mut [u8]) {
        b[..2].copy_from_slice(&v.d.to_le_bytes());
        b[2..4].copy_from_slice(&v.m.to_le_bytes());
        nibbles_out(&v.q, &mut b[4..20]);
    }
}

impl Panel for Q50 {
    const SUBS: usize = 1;
    const BITS: u32 = 5;
    const ZP: i32 = 16;
    const KIND: Kind = Kind::Plain;
    const GGUF_BLOCK: usize = 22;
    fn decode(b: &[u8], v: &mut Decoded) {
        v.d = u16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        nibbles_in(&b[6..22], &mut v.q);
        for j in 0..32 {
            v.q[j] |= (((qh >> j) & 1) as u8) << 4;
        }
    }
    fn encode(v: &Decoded, b: &mut [u8]) {
        b[..2].copy_from_slice(&v.d.to_le_bytes());
        let qh = (0..32).fold(0u32, |h, j| h | (((v.q[j] >> 4) & 1) as u32) << j);
        b[2..6].copy_from_slice(&qh.to_le_bytes());
        nibbles_out(&v.q, &mut b[6..22]);
    }
}

impl Panel for Q80 {
    const SUBS: usize = 1;
    const BITS: u32 = 8;
    const ZP: i32 = 0;
    const KIND: Kind = Kind::Plain;
    const GGUF_BLOCK: usize = 34;
    fn decode(b: &[u8], v: &mut Decoded) {
        v.d = u16_at(b, 0);
        v.q[..32].copy_from_slice(&b[2..34]);
    }
    fn encode(v: &Decoded, b: &mut [u8]) {
        b[..2].copy_from_slice(&v.d.to_le_bytes());
        b[2..34].copy_from_slice(&v.q[..32]);
    }
}

impl Panel for Q4K {
    const SUBS: usize = 8;
    const BITS: u32 = 4;
    const ZP: i32 = 0;
    const KIND: Kind = Kind::KMin;
    const GGUF_BLOCK: usize = 144;
    fn decode(b: &[u8], v: &mut Decoded) {
        k_decode(b, 16, None, v);
    }
    fn encode(v: &Decoded, b: &mut [u8]) {
        k_encode(v, 16, None, b);
    }
}

/// Q4_K's scales and quants (`qs` at `qs_at`), plus Q5_K's fifth bits (`qh[l]` bit
/// `sub` for element `l` of sub-block `sub`) when `qh_at` is given.
fn k_decode(b: &[u8], qs_at: usize, qh_at: Option<usize>, v: &mut Decoded) {
    (v.d, v.m) = (u16_at(b, 0), u16_at(b, 2));
    for sub in 0..8 {
        let (sc, m) = scale_min_k4(sub, &b[4..16]);
        (v.sc[sub], v.mins[sub]) = (sc as u8, m as u8);
        let (qs, shift) = (&b[qs_at + 32 * (sub / 2)..][..32], 4 * (sub % 2));
        for (l, q) in v.q[32 * sub..32 * sub + 32].iter_mut().enumerate() {
            let fifth = qh_at.map_or(0, |at| ((b[at + l] >> sub) & 1) << 4);
            *q = ((qs[l] >> shift) & 0x0F) | fifth;
        }
    }
}

/// The inverse of [`k_decode`].
fn k_encode(v: &Decoded, qs_at: usize, qh_at: Option<usize>, b: &mut [u8]) {
    b[..2].copy_from_slice(&v.d.to_le_bytes());
    b[2..4].copy_from_slice(&v.m.to_le_bytes());
    // The inverse of `scale_min_k4`.
    let (sc, mn) = (&v.sc, &v.mins);
    for j in 0..4 {
        b[4 + j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        b[8 + j] = mn[j] | ((mn[j + 4] >> 4) << 6);
        b[12 + j] = (sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4);
    }
    for pair in 0..4 {
        for l in 0..32 {
            let (lo, hi) = (v.q[64 * pair + l], v.q[64 * pair + 32 + l]);
            b[qs_at + 32 * pair + l] = (lo & 0x0F) | ((hi & 0x0F) << 4);
        }
    }
    if let Some(at) = qh_at {
        for l in 0..32 {
            b[at + l] = (0..8).fold(0u8, |h, sub| h | ((v.q[32 * sub + l] >> 4) & 1) << sub);
        }
    }
}

impl Panel for Q5K {
    const SUBS: usize = 8;
    const BITS: u32 = 5;
    const ZP: i32 = 0;
    const KIND: Kind = Kind::KMin;
    const GGUF_BLOCK: usize = 176;
    fn decode(b: &[u8], v: &mut Decoded) {
        k_decode(b, 48, Some(16), v);
    }
    fn encode(v: &Decoded, b: &mut [u8]) {
        k_encode(v, 48, Some(16), b);
    }
}

impl Panel for Q6K {
    const SUBS: usize = 8;
    const BITS: u32 = 6;
    const ZP: i32 = 32;
    const KIND: Kind = Kind::KSigned;
    const GGUF_BLOCK: usize = 210;
    fn decode(b: &[u8], v: &mut Decoded) {
        v.d = u16_at(b, 208);
        v.sc.copy_from_slice(&b[192..208]);
        for sub in 0..8 {
            v.q[32 * sub..32 * sub + 32].copy_from_slice(&super::q6k_group(b, sub));
        }
    }
    fn encode(v: &Decoded, b: &mut [u8]) {
        b[..192].fill(0);
        for sub in 0..8 {
            let (h, g) = (sub / 4, sub % 4);
            for l in 0..32 {
                let q = v.q[32 * sub + l];
                b[64 * h + 32 * (g % 2) + l] |= (q & 0x0F) << (4 * (g / 2));
                b[128 + 32 * h + l] |= ((q >> 4) & 3) << (2 * g);
            }
        }
        b[192..208].copy_from_slice(&v.sc);
        b[208..210].copy_from_slice(&v.d.to_le_bytes());
    }
}

/// Bytes of the panel layout of an `[n, k]` matrix.
pub(super) fn len<P: Panel>(n: usize, k: usize) -> usize {
    n / NC * k / (QK * P::SUBS) * P::BLOCK
}

/// The panel layout of GGUF bytes `raw` (`n` columns, `n` a multiple of [`NC`],
/// `k` inputs a column) into `out` ([`len`] bytes): panels one after another, each
/// its blocks along `k`.
pub(super) fn from_gguf<P: Panel>(raw: &[u8], n: usize, k: usize, out: &mut [u8]) {
    let blocks = k / (QK * P::SUBS);
    let col_bytes = blocks * P::GGUF_BLOCK;
    debug_assert_eq!(out.len(), len::<P>(n, k));
    // Panels in parallel: loading converts every weight once.
    crate::pool::global().for_chunks_mut(out, blocks * P::BLOCK, |p, panel| {
        let mut cols: [Decoded; NC] = std::array::from_fn(|_| Decoded::ZERO);
        for (b, pb) in panel.chunks_exact_mut(P::BLOCK).enumerate() {
            for (c, v) in cols.iter_mut().enumerate() {
                let at = (p * NC + c) * col_bytes + b * P::GGUF_BLOCK;
                P::decode(&raw[at..at + P::GGUF_BLOCK], v);
            }
            pack::<P>(&cols, pb);
        }
    });
}

/// The GGUF bytes of a panel layout made by [`from_gguf`].
pub(super) fn to_gguf<P: Panel>(panels: &[u8], n: usize, k: usize) -> Vec<u8> {
    let blocks = k / (QK * P::SUBS);
    let col_bytes = blocks * P::GGUF_BLOCK;
    let mut out = vec![0u8; n * col_bytes];
    let mut cols: [Decoded; NC] = std::array::from_fn(|_| Decoded::ZERO);
    for (p, panel) in panels.chunks_exact(blocks * P::BLOCK).enumerate() {
        for (b, pb) in panel.chunks_exact(P::BLOCK).enumerate() {
            unpack::<P>(pb, &mut cols);
            for (c, v) in cols.iter().enumerate() {
                let at = (p * NC + c) * col_bytes + b * P::GGUF_BLOCK;
                P::encode(v, &mut out[at..at + P::GGUF_BLOCK]);
            }
        }
    }
    out
}

/// The GGUF bytes of column `c` (0..8) of one panel (`k` inputs).
pub(super) fn column_gguf<P: Panel>(panel: &[u8], c: usize, k: usize) -> Vec<u8> {
    let mut out = vec![0u8; k / (QK * P::SUBS) * P::GGUF_BLOCK];
    let mut cols: [Decoded; NC] = std::array::from_fn(|_| Decoded::ZERO);
    for (pb, gguf) in panel
        .chunks_exact(P::BLOCK)
        .zip(out.chunks_exact_mut(P::GGUF_BLOCK))
    {
        unpack::<P>(pb, &mut cols);
        P::encode(&cols[c], gguf);
    }
    out
}

/// Byte `4c + i` of quant vector `g` of sub-block `sub`: column `c`, input
/// `32 sub + 4g + i` of the block.
fn plane_index(g: usize, byte: usize) -> (usize, usize) {
    (byte / 4, 4 * g + byte % 4)
}

fn pack<P: Panel>(cols: &[Decoded; NC], pb: &mut [u8]) {
    pb.fill(0);
    for (c, v) in cols.iter().enumerate() {
        pb[2 * c..2 * c + 2].copy_from_slice(&v.d.to_le_bytes());
        match P::KIND {
            Kind::Plain => {}
            Kind::Offset => pb[16 + 2 * c..18 + 2 * c].copy_from_slice(&v.m.to_le_bytes()),
            Kind::KMin => {
                pb[16 + 2 * c..18 + 2 * c].copy_from_slice(&v.m.to_le_bytes());
                for s in 0..8 {
                    pb[32 + 8 * s + c] = v.sc[s];
                    pb[96 + 8 * s + c] = v.mins[s];
                }
            }
            Kind::KSigned => (0..16).for_each(|s| pb[16 + 8 * s + c] = v.sc[s]),
        }
    }
    for s in 0..P::SUBS {
        let planes = &mut pb[P::QUANTS_AT + s * P::PLANES..][..P::PLANES];
        for g in 0..8 {
            for byte in 0..32 {
                let (c, i) = plane_index(g, byte);
                let q = cols[c].q[32 * s + i];
                match P::BITS {
                    8 => planes[32 * g + byte] = q,
                    bits => {
                        planes[32 * (g % 4) + byte] |= (q & 0x0F) << (4 * (g / 4));
                        if bits == 5 {
                            planes[128 + byte] |= ((q >> 4) & 1) << g;
                        } else if bits == 6 {
                            planes[128 + 32 * (g / 4) + byte] |= ((q >> 4) & 3) << (2 * (g % 4));
                        }
                    }
                }
            }
        }
    }
}

fn unpack<P: Panel>(pb: &[u8], cols: &mut [Decoded; NC]) {
    for (c, v) in cols.iter_mut().enumerate() {
        *v = Decoded::ZERO;
        v.d = u16_at(pb, 2 * c);
        match P::KIND {
            Kind::Plain => {}
            Kind::Offset => v.m = u16_at(pb, 16 + 2 * c),
            Kind::KMin => {
                v.m = u16_at(pb, 16 + 2 * c);
                for s in 0..8 {
                    (v.sc[s], v.mins[s]) = (pb[32 + 8 * s + c], pb[96 + 8 * s + c]);
                }
            }
            Kind::KSigned => (0..16).for_each(|s| v.sc[s] = pb[16 + 8 * s + c]),
        }
    }
    for s in 0..P::SUBS {
        let planes = &pb[P::QUANTS_AT + s * P::PLANES..][..P::PLANES];
        for g in 0..8 {
            for byte in 0..32 {
                let (c, i) = plane_index(g, byte);
                cols[c].q[32 * s + i] = quant::<P>(planes, g, byte);
            }
        }
    }
}

/// Quant `byte` of vector `g` from a sub-block's planes (unsigned; Q8_0's as `i8` bits).
#[inline(always)]
fn quant<P: Panel>(planes: &[u8], g: usize, byte: usize) -> u8 {
    if P::BITS == 8 {
        return planes[32 * g + byte];
    }
    let low = (planes[32 * (g % 4) + byte] >> (4 * (g / 4))) & 0x0F;
    match P::BITS {
        5 => low | ((planes[128 + byte] >> g) & 1) << 4,
        6 => low | ((planes[128 + 32 * (g / 4) + byte] >> (2 * (g % 4))) & 3) << 4,
        _ => low,
    }
}

/// The 8 columns' scale (and offset: Q4_1's `m`, Q4_K's `-dmin * m`) of sub-block
/// `s`; exact in `f32` (an f16 times a 6-bit integer).
#[inline(always)]
fn scales<P: Panel>(pb: &[u8], s: usize) -> ([f32; NC], [f32; NC]) {
    let d: [f32; NC] = std::array::from_fn(|c| f16_at(pb, 2 * c));
    match P::KIND {
        Kind::Plain | Kind::KSigned => (d, [0.0; NC]),
        Kind::Offset => (d, std::array::from_fn(|c| f16_at(pb, 16 + 2 * c))),
        Kind::KMin => (
            std::array::from_fn(|c| d[c] * pb[32 + 8 * s + c] as f32),
            // `0 - x`, as the SIMD kernels compute it.
            std::array::from_fn(|c| 0.0 - f16_at(pb, 16 + 2 * c) * pb[96 + 8 * s + c] as f32),
        ),
    }
}

/// The integer dot of column `c`'s quants (less the zero point) with one activation
/// block, for sub-block `s` of panel block `pb`: the value the SIMD kernels compute
/// per lane, Q6_K's two 16-input halves weighted by their scales.
fn isum<P: Panel>(pb: &[u8], s: usize, c: usize, xb: &XBlock) -> i32 {
    let planes = &pb[P::QUANTS_AT + s * P::PLANES..][..P::PLANES];
    let mut half = [0i32; 2];
    for g in 0..8 {
        for i in 0..4 {
            let q = quant::<P>(planes, g, 4 * c + i);
            let q = if P::BITS == 8 {
                q as i8 as i32
            } else {
                q as i32 - P::ZP
            };
            half[g / 4] += q * xb.qs[4 * g + i] as i32;
        }
    }
    match P::KIND {
        Kind::KSigned => (0..2)
            .map(|h| half[h] * pb[16 + 8 * (2 * s + h) + c] as i8 as i32)
            .sum(),
        _ => half[0] + half[1],
    }
}

/// Scalar panel kernel: panel `w`'s blocks against `R` rows of activation blocks,
/// the 8 columns' results per row, with exactly the SIMD kernels' float ops.
pub(super) fn dot_scalar<P: Panel, const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [[f32; NC]; R] {
    let mut acc = [[0.0f32; NC]; R];
    for (b, pb) in w.chunks_exact(P::BLOCK).enumerate() {
        for s in 0..P::SUBS {
            let (scale, offset) = scales::<P>(pb, s);
            for (r, acc) in acc.iter_mut().enumerate() {
                let xb = &x[r][b * P::SUBS + s];
                for c in 0..NC {
                    let t = isum::<P>(pb, s, c, xb) as f32;
                    acc[c] = t.mul_add(scale[c] * xb.d, acc[c]);
                    if matches!(P::KIND, Kind::Offset | Kind::KMin) {
                        acc[c] = offset[c].mul_add(xb.s, acc[c]);
                    }
                }
            }
        }
    }
    acc
}

/// The SIMD panel kernels, compiled per level: `$udot(acc, w, x)` adds the `u8 × i8`
/// products of each 4-byte group to `acc`'s `i32` lanes (exact for quants below 64),
/// `$sdot(acc, w, x)` the `i8 × i8` ones for Q8_0 less `$szp * Σx`, which the kernel
/// adds back (VNNI's `vpdpbusd` takes `w + 128`; AVX2 uses ggml's sign trick, exact as
/// long as no activation quant is −128: [`super::quantize_block`] keeps them in ±127).
#[cfg(target_arch = "x86_64")]
macro_rules! panel_kernels {
    ($name:ident, $features:literal, $szp:expr,
     |$a:ident, $w:ident, $x:ident| $udot:expr, $sdot:expr) => {
        pub(super) mod $name {
            use super::{Kind, NC, Panel, XBlock};
            use crate::qmatmul::ColsOut;
            use std::arch::x86_64::*;

            #[inline]
            #[target_feature(enable = $features)]
            fn udot($a: __m256i, $w: __m256i, $x: __m256i) -> __m256i {
                $udot
            }

            #[inline]
            #[target_feature(enable = $features)]
            fn sdot($a: __m256i, $w: __m256i, $x: __m256i) -> __m256i {
                $sdot
            }

            /// Quant vector `g` of the sub-block planes at `q`, as unsigned bytes
            /// (Q8_0's signed).
            ///
            /// # Safety
            /// `q` points at a sub-block's `P::PLANES` bytes.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn group<P: Panel>(q: *const u8, g: usize) -> __m256i {
                // SAFETY: every offset read is inside the planes.
                unsafe {
                    let load = |at: usize| _mm256_loadu_si256(q.add(at) as *const __m256i);
                    if P::BITS == 8 {
                        return load(32 * g);
                    }
                    let nib = load(32 * (g % 4));
                    let low4 = _mm256_set1_epi8(0x0F);
                    let low = if g < 4 {
                        _mm256_and_si256(nib, low4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16(nib, 4), low4)
                    };
                    // Bit `t` of the high plane's byte moved to bit 4 (Q5) or bits
                    // 4..6 (Q6) of the same byte; shifts by at most 4 keep it in the byte.
                    let to4 = |v: __m256i, t: usize| match t {
                        0 => _mm256_slli_epi16(v, 4),
                        1 => _mm256_slli_epi16(v, 3),
                        2 => _mm256_slli_epi16(v, 2),
                        3 => _mm256_slli_epi16(v, 1),
                        4 => v,
                        5 => _mm256_srli_epi16(v, 1),
                        6 => _mm256_srli_epi16(v, 2),
                        _ => _mm256_srli_epi16(v, 3),
                    };
                    match P::BITS {
                        5 => {
                            let high = _mm256_and_si256(to4(load(128), g), _mm256_set1_epi8(0x10));
                            _mm256_or_si256(low, high)
                        }
                        6 => {
                            let plane = load(128 + 32 * (g / 4));
                            let high =
                                _mm256_and_si256(to4(plane, 2 * (g % 4)), _mm256_set1_epi8(0x30));
                            _mm256_or_si256(low, high)
                        }
                        _ => low,
                    }
                }
            }

            /// Eight bytes at `p` widened to `i32` lanes (signed when `SIGNED`).
            ///
            /// # Safety
            /// `p` points at 8 readable bytes.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn bytes8<const SIGNED: bool>(p: *const u8) -> __m256i {
                // SAFETY: as the caller vouches.
                let v = unsafe { _mm_loadl_epi64(p as *const __m128i) };
                if SIGNED {
                    _mm256_cvtepi8_epi32(v)
                } else {
                    _mm256_cvtepu8_epi32(v)
                }
            }

            /// One panel's dot products with `R` activation rows: the 8 columns'
            /// results per row. Per row the same ops whatever `R`, and the same as
            /// [`super::dot_scalar`]'s.
            ///
            /// # Safety
            /// This level's instructions must be available; `w` is whole panel blocks
            /// and each `x[r]` has `P::SUBS` activation blocks per panel block.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn dot<P: Panel, const R: usize>(w: &[u8], x: [&[XBlock]; R]) -> [__m256; R] {
                let mut acc = [_mm256_setzero_ps(); R];
                let offset = matches!(P::KIND, Kind::Offset | Kind::KMin);
                for (b, pb) in w.chunks_exact(P::BLOCK).enumerate() {
                    let p = pb.as_ptr();
                    // SAFETY (all loads): offsets inside the panel block (`P::BLOCK`).
                    let d = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) };
                    let m = if offset {
                        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i)) }
                    } else {
                        _mm256_setzero_ps()
                    };
                    for s in 0..P::SUBS {
                        let xs: [&XBlock; R] = std::array::from_fn(|r| &x[r][b * P::SUBS + s]);
                        let q = unsafe { p.add(P::QUANTS_AT + s * P::PLANES) };
                        let mut iacc = [[_mm256_setzero_si256(); 2]; R];
                        for g in 0..8 {
                            let wv = unsafe { group::<P>(q, g) };
                            let h = usize::from(P::KIND == Kind::KSigned && g >= 4);
                            for r in 0..R {
                                // SAFETY: `qs` is 32 bytes.
                                let xv = _mm256_set1_epi32(unsafe {
                                    (xs[r].qs.as_ptr().add(4 * g) as *const i32).read_unaligned()
                                });
                                iacc[r][h] = if P::BITS == 8 {
                                    sdot(iacc[r][h], wv, xv)
                                } else {
                                    udot(iacc[r][h], wv, xv)
                                };
                            }
                        }
                        let (scale, off) = match P::KIND {
                            Kind::KMin => unsafe {
                                let sc = _mm256_cvtepi32_ps(bytes8::<false>(p.add(32 + 8 * s)));
                                let mn = _mm256_cvtepi32_ps(bytes8::<false>(p.add(96 + 8 * s)));
                                let neg = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(m, mn));
                                (_mm256_mul_ps(d, sc), neg)
                            },
                            _ => (d, m),
                        };
                        for r in 0..R {
                            let xb = xs[r];
                            let [lo, hi] = iacc[r];
                            let isum = match P::KIND {
                                Kind::KSigned => unsafe {
                                    let zp = |sum: i16| _mm256_set1_epi32(P::ZP * sum as i32);
                                    let lo = _mm256_sub_epi32(lo, zp(xb.hs[0]));
                                    let hi = _mm256_sub_epi32(hi, zp(xb.hs[1]));
                                    let sc = |h: usize| bytes8::<true>(p.add(16 + 8 * (2 * s + h)));
                                    _mm256_add_epi32(
                                        _mm256_mullo_epi32(lo, sc(0)),
                                        _mm256_mullo_epi32(hi, sc(1)),
                                    )
                                },
                                _ => {
                                    let zp = if P::BITS == 8 { $szp } else { P::ZP };
                                    if zp == 0 {
                                        lo
                                    } else {
                                        let sum = xb.hs[0] as i32 + xb.hs[1] as i32;
                                        _mm256_sub_epi32(lo, _mm256_set1_epi32(zp * sum))
                                    }
                                }
                            };
                            acc[r] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(isum),
                                _mm256_mul_ps(scale, _mm256_set1_ps(xb.d)),
                                acc[r],
                            );
                            if offset {
                                acc[r] = _mm256_fmadd_ps(off, _mm256_set1_ps(xb.s), acc[r]);
                            }
                        }
                    }
                }
                acc
            }

            /// Panels `panels` (each `bytes` long in `w`) against `R` rows, written
            /// through `out` (whose `first` is a panel boundary).
            ///
            /// # Safety
            /// This level's instructions must be available; `out` must be valid for
            /// rows `0..R` at the panels' columns with no other access meanwhile.
            #[target_feature(enable = $features)]
            pub(in crate::qmatmul) unsafe fn cols<P: Panel, const R: usize>(
                w: &[u8],
                panels: std::ops::Range<usize>,
                bytes: usize,
                x: [&[XBlock]; R],
                out: ColsOut,
            ) {
                for p in panels {
                    // SAFETY: as the caller vouches.
                    let v = unsafe { dot::<P, R>(&w[p * bytes..(p + 1) * bytes], x) };
                    for (r, v) in v.into_iter().enumerate() {
                        // SAFETY: as the caller vouches.
                        unsafe { _mm256_storeu_ps(out.out.add(r * out.n + p * NC - out.first), v) };
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
panel_kernels!(
    avx2,
    "avx2,fma,f16c",
    0,
    |a, w, x| _mm256_add_epi32(
        a,
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
    ),
    _mm256_add_epi32(
        a,
        _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)),
            _mm256_set1_epi16(1)
        )
    )
);
#[cfg(target_arch = "x86_64")]
panel_kernels!(
    vnni,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    128,
    |a, w, x| _mm256_dpbusd_epi32(a, w, x),
    _mm256_dpbusd_epi32(a, _mm256_xor_si256(w, _mm256_set1_epi8(-128)), x)
);
