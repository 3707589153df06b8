//! The paged KV cache: per layer, K and V as flat `f32` storage laid out
//! `[num_blocks, block_size, num_kv_heads, head_dim]`.
//!
//! A *slot* is `block_id * block_size + offset`; a token's K (or V) row for
//! one KV head lives at `(slot * num_kv_heads + kv_head) * head_dim`. The
//! cache is plain memory owned by the runner, never by the model; the block
//! pool in `candela-core` decides which blocks a sequence owns. The same type
//! serves as the device pool and the host (swap) pool; swapping is
//! [`PagedKvCache::copy_blocks_to`]. Allocation is `vec![0.0; n]`, which the
//! allocator maps lazily, so an idle pool costs address space, not RSS.

use crate::{Error, Result};

/// One layer's K and V storage plus the geometry needed to index it.
#[derive(Debug, Clone)]
pub struct LayerKv {
    /// `[num_blocks * block_size * num_kv_heads * head_dim]`.
    pub k: Vec<f32>,
    /// Same layout as `k`.
    pub v: Vec<f32>,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl LayerKv {
    /// Floats per slot (one token, all KV heads).
    pub fn slot_stride(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Number of slots (tokens) the layer can hold.
    pub fn num_slots(&self) -> usize {
        self.k.len() / self.slot_stride().max(1)
    }
}

/// A pool of KV blocks for every layer of one model.
#[derive(Debug, Clone)]
pub struct PagedKvCache {
    layers: Vec<LayerKv>,
    num_blocks: usize,
    block_size: usize,
}

impl PagedKvCache {
    /// Allocates `num_blocks` zeroed blocks per layer.
    ///
    /// # Panics
    /// When the total size overflows `usize`.
    pub fn new(
        num_layers: usize,
        num_blocks: usize,
        block_size: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        let n = num_blocks
            .checked_mul(block_size * num_kv_heads * head_dim)
            .expect("invariant: KV cache size fits in usize");
        let layers = (0..num_layers)
            .map(|_| LayerKv {
                k: vec![0.0; n],
                v: vec![0.0; n],
                block_size,
                num_kv_heads,
                head_dim,
            })
            .collect();
        Self {
            layers,
            num_blocks,
            block_size,
        }
    }

    /// Bytes one block takes across all layers (K and V, `f32`): size pools from memory with it.
    pub fn bytes_per_block(
        num_layers: usize,
        block_size: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> u64 {
        2 * num_layers as u64
            * block_size as u64
            * num_kv_heads as u64
            * head_dim as u64
            * std::mem::size_of::<f32>() as u64
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// One layer's storage.
    ///
    /// # Panics
    /// When `layer >= num_layers()`.
    pub fn layer(&self, layer: usize) -> &LayerKv {
        &self.layers[layer]
    }

    /// One layer's storage, mutably.
    ///
    /// # Panics
    /// When `layer >= num_layers()`.
    pub fn layer_mut(&mut self, layer: usize) -> &mut LayerKv {
        &mut self.layers[layer]
    }

    fn block_floats(&self) -> usize {
        self.layers
            .first()
            .map_or(0, |l| self.block_size * l.slot_stride())
    }

    fn same_geometry(&self, other: &PagedKvCache) -> bool {
        self.layers.len() == other.layers.len()
            && self.block_size == other.block_size
            && self.block_floats() == other.block_floats()
    }

    fn check_block(&self, b: u32, what: &str) -> Result<usize> {
        let b = b as usize;
        if b >= self.num_blocks {
            return Err(Error::InvalidInput(format!(
                "{what} block {b} is outside a pool of {} blocks",
                self.num_blocks
            )));
        }
        Ok(b)
    }

    /// Copies whole blocks `(src in self, dst in other)` across every layer: swap-out
    /// (device → host) and swap-in (host → device).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the geometries differ or a block id is out of range;
    /// nothing is copied then.
    pub fn copy_blocks_to(&self, other: &mut PagedKvCache, pairs: &[(u32, u32)]) -> Result<()> {
        if !self.same_geometry(other) {
            return Err(Error::InvalidInput(
                "KV pools have different geometries".into(),
            ));
        }
        let mut idx = Vec::with_capacity(pairs.len());
        for &(s, d) in pairs {
            idx.push((
                self.check_block(s, "source")?,
                other.check_block(d, "destination")?,
            ));
        }
        let bf = self.block_floats();
        for (src, dst) in self.layers.iter().zip(other.layers.iter_mut()) {
            for &(s, d) in &idx {
                dst.k[d * bf..(d + 1) * bf].copy_from_slice(&src.k[s * bf..(s + 1) * bf]);
                dst.v[d * bf..(d + 1) * bf].copy_from_slice(&src.v[s * bf..(s + 1) * bf]);
            }
        }
        Ok(())
    }

    /// Copies blocks within this pool (copy-on-write of a shared prefix block).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a block id is out of range; nothing is copied then.
    pub fn copy_blocks(&mut self, pairs: &[(u32, u32)]) -> Result<()> {
        let mut idx = Vec::with_capacity(pairs.len());
        for &(s, d) in pairs {
            idx.push((
                self.check_block(s, "source")?,
                self.check_block(d, "destination")?,
            ));
        }
        let bf = self.block_floats();
        for l in &mut self.layers {
            for &(s, d) in &idx {
                if s != d {
                    l.k.copy_within(s * bf..(s + 1) * bf, d * bf);
                    l.v.copy_within(s * bf..(s + 1) * bf, d * bf);
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
    fn bytes_per_block_counts_k_and_v_of_every_layer() {
        assert_eq!(
            PagedKvCache::bytes_per_block(30, 16, 3, 64),
            2 * 30 * 16 * 3 * 64 * 4
        );
    }

    #[test]
    fn swap_out_and_in_round_trip_blocks() {
        let mut dev = PagedKvCache::new(2, 4, 2, 1, 3);
        let mut host = PagedKvCache::new(2, 3, 2, 1, 3);
        for (i, x) in dev.layer_mut(1).k.iter_mut().enumerate() {
            *x = i as f32;
        }
        dev.copy_blocks_to(&mut host, &[(2, 0)]).unwrap();
        assert_eq!(
            &host.layer(1).k[0..6],
            &[12.0, 13.0, 14.0, 15.0, 16.0, 17.0]
        );
        host.copy_blocks_to(&mut dev, &[(0, 3)]).unwrap();
        assert_eq!(
            &dev.layer(1).k[18..24],
            &dev.layer(1).k[12..18].to_vec()[..]
        );
        assert!(dev.copy_blocks_to(&mut host, &[(0, 3)]).is_err());
        let mut other = PagedKvCache::new(2, 3, 4, 1, 3);
        assert!(dev.copy_blocks_to(&mut other, &[(0, 0)]).is_err());
        dev.copy_blocks(&[(2, 0)]).unwrap();
        assert_eq!(&dev.layer(1).k[0..6], &[12.0, 13.0, 14.0, 15.0, 16.0, 17.0]);
    }
}
