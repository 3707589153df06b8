//! Rotary position embedding applied in place on flat `[T, heads, head_dim]`
//! rows, each token at its own absolute position (tokens of different
//! sequences share one batch).
//!
//! Two pairings: *interleaved* rotates `(x[2i], x[2i+1])` — llama GGUF files
//! store q/k permuted for it (candle's `rope_i`); *half* rotates
//! `(x[i], x[i + d/2])` — Hugging Face llama/qwen2 weights and qwen2 GGUF
//! (candle's `rope`). The cos/sin table is computed once at load for every
//! position up to the model's context length: `2 * max_pos * head_dim/2` floats.

use crate::{Error, Result};

/// Precomputed cos/sin of every (position, frequency) pair.
#[derive(Debug, Clone)]
pub struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    interleaved: bool,
}

impl RopeTable {
    /// Builds the table from per-pair inverse frequencies (`head_dim / 2` of them).
    pub fn new(inv_freq: &[f32], max_pos: usize, interleaved: bool) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for &f in inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Self {
            cos,
            sin,
            half,
            interleaved,
        }
    }

    /// The standard inverse frequencies `1 / theta^(2i / head_dim)`.
    pub fn default_inv_freq(head_dim: usize, theta: f32) -> Vec<f32> {
        (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / theta.powf(i as f32 / head_dim as f32))
            .collect()
    }

    /// Llama 3 frequency scaling (`rope_scaling.rope_type == "llama3"`).
    pub fn llama3_scale(inv_freq: &mut [f32], factor: f32, low: f32, high: f32, orig_ctx: f32) {
        let low_wavelen = orig_ctx / low;
        let high_wavelen = orig_ctx / high;
        for f in inv_freq.iter_mut() {
            let wavelen = 2.0 * std::f32::consts::PI / *f;
            if wavelen < high_wavelen {
                continue;
            } else if wavelen > low_wavelen {
                *f /= factor;
            } else {
                let smooth = (orig_ctx / wavelen - low) / (high - low);
                *f = (1.0 - smooth) * *f / factor + smooth * *f;
            }
        }
    }

    /// The `[max_positions, head_dim / 2]` cos and sin tables, row-major.
    pub fn tables(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }

    /// `true` for the interleaved pairing, `false` for the half pairing.
    pub fn interleaved(&self) -> bool {
        self.interleaved
    }

    /// Largest position + 1 the table covers.
    pub fn max_positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// Rotates `x` (`[positions.len(), heads, 2 * half]`) in place.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a position is beyond the table or the shape is off.
    pub fn apply(&self, x: &mut [f32], positions: &[u32]) -> Result<()> {
        let hd = 2 * self.half;
        let t = positions.len();
        if t == 0 {
            return Ok(());
        }
        if hd == 0 || !x.len().is_multiple_of(t * hd) {
            return Err(Error::InvalidInput(format!(
                "rope: {} floats for {t} tokens",
                x.len()
            )));
        }
        let row = x.len() / t;
        for (xr, &p) in x.chunks_mut(row).zip(positions) {
            let p = p as usize;
            if p >= self.max_positions() {
                return Err(Error::InvalidInput(format!(
                    "position {p} is beyond the model's {} positions",
                    self.max_positions()
                )));
            }
            let cos = &self.cos[p * self.half..(p + 1) * self.half];
            let sin = &self.sin[p * self.half..(p + 1) * self.half];
            for head in xr.chunks_mut(hd) {
                if self.interleaved {
                    for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                        let (a, b) = (pair[0], pair[1]);
                        pair[0] = a * cos[i] - b * sin[i];
                        pair[1] = a * sin[i] + b * cos[i];
                    }
                } else {
                    let (lo, hi) = head.split_at_mut(self.half);
                    for i in 0..self.half {
                        let (a, b) = (lo[i], hi[i]);
                        lo[i] = a * cos[i] - b * sin[i];
                        hi[i] = a * sin[i] + b * cos[i];
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_pairings_differ() {
        let inv = RopeTable::default_inv_freq(4, 10000.0);
        let t_i = RopeTable::new(&inv, 8, true);
        let t_h = RopeTable::new(&inv, 8, false);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        t_i.apply(&mut x, &[0]).unwrap();
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
        let mut a = vec![1.0, 0.0, 0.0, 0.0];
        t_i.apply(&mut a, &[1]).unwrap();
        assert!((a[0] - 1f32.cos()).abs() < 1e-6 && (a[1] - 1f32.sin()).abs() < 1e-6);
        let mut b = vec![1.0, 0.0, 0.0, 0.0];
        t_h.apply(&mut b, &[1]).unwrap();
        assert!((b[0] - 1f32.cos()).abs() < 1e-6 && (b[2] - 1f32.sin()).abs() < 1e-6);
        assert!(t_h.apply(&mut b, &[8]).is_err());
    }

    /// Hand-computed: head_dim 4, theta 100 → inverse frequencies 1 and 0.1; at
    /// position 2 the pairs turn by 2 and 0.2 radians. Half pairing rotates
    /// (x0, x2) and (x1, x3), interleaved (x0, x1) and (x2, x3); with
    /// x = [1, 2, 3, 4]:
    /// half:        [1c₂ − 3s₂, 2c − 4s, 1s₂ + 3c₂, 2s + 4c]
    /// interleaved: [1c₂ − 2s₂, 1s₂ + 2c₂, 3c − 4s, 3s + 4c]
    /// (c₂, s₂ = cos 2, sin 2; c, s = cos 0.2, sin 0.2). Rotations keep the norm.
    #[test]
    fn rotation_gives_known_values_and_preserves_norm() {
        let inv = RopeTable::default_inv_freq(4, 100.0);
        assert!(inv.len() == 2 && inv[0] == 1.0 && (inv[1] - 0.1).abs() < 1e-7);
        let cases = [
            (false, [-3.144_039_1, 1.165_455_8, -0.339_143_08, 4.317_605]),
            (
                true,
                [-2.234_741_7, 0.077_003_754, 2.145_522_4, 4.516_274_3],
            ),
        ];
        for (interleaved, want) in cases {
            let t = RopeTable::new(&inv, 3, interleaved);
            let mut x = vec![1.0f32, 2.0, 3.0, 4.0];
            t.apply(&mut x, &[2]).unwrap();
            for (got, want) in x.iter().zip(want) {
                assert!(
                    (got - want).abs() < 1e-5,
                    "interleaved={interleaved}: {x:?} vs {want:?}"
                );
            }
        }

        let inv = RopeTable::default_inv_freq(8, 100000.0);
        let t = RopeTable::new(&inv, 100, false);
        let mut x: Vec<f32> = (0..16).map(|i| i as f32 * 0.1).collect();
        let n0: f32 = x.iter().map(|v| v * v).sum();
        t.apply(&mut x, &[37]).unwrap();
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-4);
    }
}
