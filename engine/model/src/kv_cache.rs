//! The paged KV cache: per layer, K and V as flat storage laid out
//! `[num_blocks, block_size, num_kv_heads, head_dim]`, of a [`KvElem`]: `f16` for
//! the CPU runner's pools (half the memory and half the bytes attention reads per
//! token, like vLLM's `auto` KV dtype on a half-precision model and llama.cpp's
//! default), `f32` for the GPU runner's host swap pool (its device pool is `f32`).
//!
//! A *slot* is `block_id * block_size + offset`; a token's K (or V) row for
//! one KV head lives at `(slot * num_kv_heads + kv_head) * head_dim`. The
//! cache is plain memory owned by the runner, never by the model; the block
//! pool in `candela-core` decides which blocks a sequence owns. The same type
//! serves as the device pool and the host (swap) pool; swapping is
//! [`PagedKvCache::copy_blocks_to`]. Allocation is zeroed memory the allocator
//! maps lazily ([`KvElem::zeroed`]), so an idle pool costs address space, not RSS.

use crate::{Error, Result};

/// An element of KV storage: stored from and read as `f32`.
pub trait KvElem: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// `n` zeros, lazily mapped (a zeroed allocation, never written here).
    fn zeroed(n: usize) -> Vec<Self>;
    /// `dst[i] = src[i]`, rounded to nearest.
    fn store(src: &[f32], dst: &mut [Self]);
    fn to_f32(self) -> f32;
    /// Eight elements at `p` as `f32` lanes.
    ///
    /// # Safety
    /// `p` must point at 8 readable elements.
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl KvElem for f32 {
    fn zeroed(n: usize) -> Vec<Self> {
        vec![0.0; n]
    }
    fn store(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        // SAFETY: as the caller vouches.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

impl KvElem for half::f16 {
    fn zeroed(n: usize) -> Vec<Self> {
        // `vec![0u16; n]` is a zeroed allocation; `f16` is a transparent `u16`.
        use half::vec::HalfBitsVecExt;
        vec![0u16; n].reinterpret_into()
    }
    fn store(src: &[f32], dst: &mut [Self]) {
        use half::slice::HalfFloatSliceExt;
        dst.convert_from_f32_slice(src);
    }
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: as the caller vouches (8 halves are 16 bytes).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
}

/// One layer's K and V storage plus the geometry needed to index it.
#[derive(Debug, Clone)]
pub struct LayerKv<T: KvElem> {
    /// `[num_blocks * block_size * num_kv_heads * head_dim]`.
    pub k: Vec<T>,
    /// Same layout as `k`.
    pub v: Vec<T>,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl<T: KvElem> LayerKv<T> {
    /// Elements per slot (one token, all KV heads).
    pub fn slot_stride(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Number of slots (tokens) the layer can hold.
    pub fn num_slots(&self) -> usize {
        self.k.len() / self.slot_stride().max(1)
    }
}

/// A pool of KV blocks for every layer of one model, elements `T`.
#[derive(Debug, Clone)]
pub struct PagedKvCache<T: KvElem> {
    layers: Vec<LayerKv<T>>,
    num_blocks: usize,
    block_size: usize,
}

impl<T: KvElem> PagedKvCache<T> {
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
                k: T::zeroed(n),
                v: T::zeroed(n),
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

    /// Bytes one block takes across all layers (K and V of `T`): size pools from memory with it.
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
            * std::mem::size_of::<T>() as u64
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
    pub fn layer(&self, layer: usize) -> &LayerKv<T> {
        &self.layers[layer]
    }

    /// One layer's storage, mutably.
    ///
    /// # Panics
    /// When `layer >= num_layers()`.
    pub fn layer_mut(&mut self, layer: usize) -> &mut LayerKv<T> {
        &mut self.layers[layer]
    }

    fn block_floats(&self) -> usize {
        self.layers
            .first()
            .map_or(0, |l| self.block_size * l.slot_stride())
    }

    fn same_geometry(&self, other: &PagedKvCache<T>) -> bool {
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
    pub fn copy_blocks_to(&self, other: &mut PagedKvCache<T>, pairs: &[(u32, u32)]) -> Result<()> {
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
            PagedKvCache::<f32>::bytes_per_block(30, 16, 3, 64),
            2 * 30 * 16 * 3 * 64 * 4
        );
        assert_eq!(
            PagedKvCache::<half::f16>::bytes_per_block(30, 16, 3, 64),
            2 * 30 * 16 * 3 * 64 * 2
        );
    }

    #[test]
    fn swap_out_and_in_round_trip_blocks() {
        let mut dev = PagedKvCache::<f32>::new(2, 4, 2, 1, 3);
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

    #[test]
    fn f16_elements_store_rounded_and_read_back() {
        let mut cache = PagedKvCache::<half::f16>::new(1, 2, 2, 1, 4);
        assert!(cache.layer(0).k.iter().all(|x| x.to_f32() == 0.0));
        let src = [1.0, -0.5, 1.0 / 3.0, 70000.0];
        half::f16::store(&src, &mut cache.layer_mut(0).v[4..8]);
        let back: Vec<f32> = cache.layer(0).v[4..8].iter().map(|x| x.to_f32()).collect();
        assert_eq!(back[..2], [1.0, -0.5]);
        assert!((back[2] - 1.0 / 3.0).abs() < 1e-3 && back[2] != 1.0 / 3.0);
        assert!(back[3].is_infinite(), "beyond f16's range");
    }
}
