//! The paged KV cache as candle tensors on a device (the GPU pool of
//! `--device cuda`), with the same geometry and slot numbering as the host
//! [`PagedKvCache`]: per layer, K and V are `[num_blocks * block_size,
//! num_kv_heads, head_dim]` `f32`, and slot `block_id * block_size + offset` is
//! row `slot`. Writes are `scatter_set` (in place), reads are `index_select`
//! of slot rows, so a sequence's blocks can sit anywhere in the pool.
//!
//! Swapping copies whole blocks between this pool and a host [`PagedKvCache`]
//! (the `--swap-space` pool); [`DeviceKvCache::copy_blocks`] copies within the
//! pool (copy-on-write).

use candle_core::{DType, Device, Tensor};

use crate::kv_cache::PagedKvCache;
use crate::{Error, Result};

/// K and V tensors of every layer, plus their geometry.
#[derive(Debug, Clone)]
pub struct DeviceKvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    num_blocks: usize,
    block_size: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl DeviceKvCache {
    /// Allocates `num_blocks` zeroed blocks per layer on `device`.
    ///
    /// # Errors
    /// [`Error::Candle`] when the device cannot allocate the pool.
    pub fn new(
        device: &Device,
        num_layers: usize,
        num_blocks: usize,
        block_size: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        let shape = (num_blocks * block_size, num_kv_heads, head_dim);
        let mut k = Vec::with_capacity(num_layers);
        let mut v = Vec::with_capacity(num_layers);
        for _ in 0..num_layers {
            k.push(Tensor::zeros(shape, DType::F32, device)?);
            v.push(Tensor::zeros(shape, DType::F32, device)?);
        }
        Ok(Self {
            k,
            v,
            num_blocks,
            block_size,
            num_kv_heads,
            head_dim,
        })
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_layers(&self) -> usize {
        self.k.len()
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_kv_heads
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Layer `layer`'s K and V tensors (`[slots, num_kv_heads, head_dim]`).
    pub fn layer(&self, layer: usize) -> (&Tensor, &Tensor) {
        (&self.k[layer], &self.v[layer])
    }

    /// Writes rows `k`, `v` (`[n, num_kv_heads, head_dim]`) at the slots named by
    /// `index` (see [`DeviceKvCache::row_index`]).
    pub(crate) fn write(&self, layer: usize, index: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
        self.k[layer].scatter_set(index, k, 0)?;
        self.v[layer].scatter_set(index, v, 0)?;
        Ok(())
    }

    /// The scatter index that writes `n = slots.len()` rows at `slots`: each slot
    /// repeated over a row's `num_kv_heads × head_dim` elements.
    pub(crate) fn row_index(&self, slots: &Tensor) -> Result<Tensor> {
        let n = slots.dim(0)?;
        Ok(slots
            .reshape((n, 1, 1))?
            .broadcast_as((n, self.num_kv_heads, self.head_dim))?
            .contiguous()?)
    }

    /// Every slot of `blocks`, in order.
    fn block_slots(&self, blocks: impl Iterator<Item = usize>) -> Vec<u32> {
        let bs = self.block_size;
        blocks
            .flat_map(|b| (b * bs..(b + 1) * bs).map(|s| s as u32))
            .collect()
    }

    fn check_block(&self, b: u32, num_blocks: usize, what: &str) -> Result<usize> {
        let b = b as usize;
        if b >= num_blocks {
            return Err(Error::InvalidInput(format!(
                "{what} block {b} is outside a pool of {num_blocks} blocks"
            )));
        }
        Ok(b)
    }

    fn check_host(&self, host: &PagedKvCache<f32>) -> Result<()> {
        let l = host.layer(0);
        if host.num_layers() != self.num_layers()
            || host.block_size() != self.block_size
            || l.num_kv_heads != self.num_kv_heads
            || l.head_dim != self.head_dim
        {
            return Err(Error::InvalidInput(
                "KV pools have different geometries".into(),
            ));
        }
        Ok(())
    }

    /// Checks `pairs` against a source pool of `src_blocks` and a destination pool of
    /// `dst_blocks` blocks; the block ids as indices, sources and destinations apart.
    fn check_pairs(
        &self,
        pairs: &[(u32, u32)],
        src_blocks: usize,
        dst_blocks: usize,
    ) -> Result<(Vec<usize>, Vec<usize>)> {
        let mut srcs = Vec::with_capacity(pairs.len());
        let mut dsts = Vec::with_capacity(pairs.len());
        for &(s, d) in pairs {
            srcs.push(self.check_block(s, src_blocks, "source")?);
            dsts.push(self.check_block(d, dst_blocks, "destination")?);
        }
        Ok((srcs, dsts))
    }

    /// Swap-out: copies blocks `(src here, dst in host)` across every layer.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the geometries differ or a block id is out of
    /// range (nothing is copied then); [`Error::Candle`] from the device read.
    pub fn copy_to_host(&self, host: &mut PagedKvCache<f32>, pairs: &[(u32, u32)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.check_host(host)?;
        let (srcs, dsts) = self.check_pairs(pairs, self.num_blocks, host.num_blocks())?;
        let slots = self.block_slots(srcs.into_iter());
        let index = Tensor::from_vec(slots, pairs.len() * self.block_size, self.k[0].device())?;
        let bf = self.block_size * self.num_kv_heads * self.head_dim;
        for layer in 0..self.num_layers() {
            let k = self.k[layer]
                .index_select(&index, 0)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let v = self.v[layer]
                .index_select(&index, 0)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let dst = host.layer_mut(layer);
            for (i, &d) in dsts.iter().enumerate() {
                dst.k[d * bf..(d + 1) * bf].copy_from_slice(&k[i * bf..(i + 1) * bf]);
                dst.v[d * bf..(d + 1) * bf].copy_from_slice(&v[i * bf..(i + 1) * bf]);
            }
        }
        Ok(())
    }

    /// Swap-in: copies blocks `(src in host, dst here)` across every layer.
    ///
    /// # Errors
    /// As [`DeviceKvCache::copy_to_host`].
    pub fn copy_from_host(&self, host: &PagedKvCache<f32>, pairs: &[(u32, u32)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        self.check_host(host)?;
        let (srcs, dsts) = self.check_pairs(pairs, host.num_blocks(), self.num_blocks)?;
        let dev = self.k[0].device();
        let rows = pairs.len() * self.block_size;
        let slots = Tensor::from_vec(self.block_slots(dsts.into_iter()), rows, dev)?;
        let index = self.row_index(&slots)?;
        let bf = self.block_size * self.num_kv_heads * self.head_dim;
        let shape = (rows, self.num_kv_heads, self.head_dim);
        for layer in 0..self.num_layers() {
            let src = host.layer(layer);
            let gather = |buf: &[f32]| {
                let mut out = Vec::with_capacity(rows * bf / self.block_size);
                for &s in &srcs {
                    out.extend_from_slice(&buf[s * bf..(s + 1) * bf]);
                }
                Tensor::from_vec(out, shape, dev)
            };
            self.write(layer, &index, &gather(&src.k)?, &gather(&src.v)?)?;
        }
        Ok(())
    }

    /// Copies blocks `(src, dst)` within this pool (all reads happen before any write).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a block id is out of range; nothing is copied then.
    pub fn copy_blocks(&self, pairs: &[(u32, u32)]) -> Result<()> {
        let (srcs, dsts) = self.check_pairs(pairs, self.num_blocks, self.num_blocks)?;
        let pairs: Vec<(usize, usize)> =
            srcs.into_iter().zip(dsts).filter(|(s, d)| s != d).collect();
        if pairs.is_empty() {
            return Ok(());
        }
        let dev = self.k[0].device();
        let rows = pairs.len() * self.block_size;
        let src = Tensor::from_vec(self.block_slots(pairs.iter().map(|p| p.0)), rows, dev)?;
        let dst = Tensor::from_vec(self.block_slots(pairs.iter().map(|p| p.1)), rows, dev)?;
        let index = self.row_index(&dst)?;
        for layer in 0..self.num_layers() {
            let k = self.k[layer].index_select(&src, 0)?;
            let v = self.v[layer].index_select(&src, 0)?;
            self.write(layer, &index, &k, &v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_with_pattern(
        layers: usize,
        blocks: usize,
        bs: usize,
        nkv: usize,
        hd: usize,
    ) -> PagedKvCache<f32> {
        let mut host = PagedKvCache::new(layers, blocks, bs, nkv, hd);
        for l in 0..layers {
            let lk = host.layer_mut(l);
            for (i, x) in lk.k.iter_mut().enumerate() {
                *x = (l * 1000 + i) as f32;
            }
            for (i, x) in lk.v.iter_mut().enumerate() {
                *x = -((l * 1000 + i) as f32);
            }
        }
        host
    }

    #[test]
    fn swap_in_then_out_round_trips_blocks_through_other_slots() {
        let (layers, bs, nkv, hd) = (2, 4, 2, 3);
        let host = host_with_pattern(layers, 3, bs, nkv, hd);
        let dev = DeviceKvCache::new(&Device::Cpu, layers, 5, bs, nkv, hd).unwrap();
        dev.copy_from_host(&host, &[(0, 4), (2, 1)]).unwrap();
        // device block 4 now holds host block 0, device block 1 holds host block 2
        let bf = bs * nkv * hd;
        let k1 = dev
            .layer(1)
            .0
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(&k1[4 * bf..5 * bf], &host.layer(1).k[0..bf]);
        assert_eq!(&k1[bf..2 * bf], &host.layer(1).k[2 * bf..3 * bf]);
        assert!(
            k1[0..bf].iter().all(|&x| x == 0.0),
            "untouched block stays zero"
        );

        let mut back = PagedKvCache::new(layers, 3, bs, nkv, hd);
        dev.copy_to_host(&mut back, &[(4, 2), (1, 0)]).unwrap();
        for l in 0..layers {
            assert_eq!(&back.layer(l).k[2 * bf..3 * bf], &host.layer(l).k[0..bf]);
            assert_eq!(&back.layer(l).v[0..bf], &host.layer(l).v[2 * bf..3 * bf]);
        }
    }

    #[test]
    fn copy_blocks_within_the_pool_and_bad_ids_copy_nothing() {
        let (layers, bs, nkv, hd) = (1, 2, 1, 2);
        let host = host_with_pattern(layers, 2, bs, nkv, hd);
        let dev = DeviceKvCache::new(&Device::Cpu, layers, 4, bs, nkv, hd).unwrap();
        dev.copy_from_host(&host, &[(1, 0)]).unwrap();
        dev.copy_blocks(&[(0, 3), (2, 2)]).unwrap();
        let v = dev
            .layer(0)
            .1
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(&v[12..16], &host.layer(0).v[4..8]);

        let before = dev
            .layer(0)
            .0
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(dev.copy_blocks(&[(0, 1), (0, 4)]).is_err());
        let mut small = PagedKvCache::new(layers, 1, bs, nkv, hd);
        assert!(dev.copy_to_host(&mut small, &[(0, 1)]).is_err());
        let other = PagedKvCache::new(layers, 2, bs + 1, nkv, hd);
        assert!(dev.copy_from_host(&other, &[(0, 0)]).is_err());
        let after = dev
            .layer(0)
            .0
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(before, after);
    }
}
