//! Candela's fused paged decode attention for CUDA (`src/cuda/paged_attention.cu`,
//! compiled to PTX by `build.rs` with the `cuda` feature): each decode query
//! attends over its whole context in one kernel, reading K/V rows in place
//! through the block table — no gathered copy of the context, no padding, no
//! score matrix in memory.
//!
//! The sequence metadata travels as one `u32` tensor `meta` of `[num_seqs,
//! 1 + max_blocks]`: the context length, then the block table. The op has no
//! CPU implementation; [`crate::device_llama`] uses it on CUDA after checking it
//! against the gather path at start-up, and the gather path everywhere else.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use crate::Result;

#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/paged_attention.ptx"));

/// The op: q `[B, heads, head_dim]` with the K and V caches `[slots, kv_heads,
/// head_dim]`, all `f32` and contiguous; out `[B, heads, head_dim]`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct PagedDecode {
    meta: Tensor,
    block_size: usize,
    scale: f32,
}

/// Warps per (sequence, head) block.
#[cfg(feature = "cuda")]
const WARPS: usize = 4;

impl CustomOp3 for PagedDecode {
    fn name(&self) -> &'static str {
        "candela-paged-decode-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("the paged decode attention kernel runs on CUDA only")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::CudaStorage,
        ql: &Layout,
        k: &candle_core::CudaStorage,
        kl: &Layout,
        v: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::WrapErr;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::{CudaStorage, Storage, bail};

        let (b, h, d) = ql.shape().dims3()?;
        let (_, nkv, dk) = kl.shape().dims3()?;
        if !(ql.is_contiguous() && kl.is_contiguous() && vl.is_contiguous()) {
            bail!("paged decode attention: q, K and V must be contiguous");
        }
        if d > 256 || dk != d || vl.shape() != kl.shape() || nkv == 0 || h % nkv != 0 {
            bail!(
                "paged decode attention: q {:?} does not fit the cache {:?} (head_dim ≤ 256)",
                ql.shape(),
                kl.shape()
            );
        }
        let dev = q.device.clone();
        let qs = q.as_cuda_slice::<f32>()?.slice(ql.start_offset()..);
        let ks = k.as_cuda_slice::<f32>()?.slice(kl.start_offset()..);
        let vs = v.as_cuda_slice::<f32>()?.slice(vl.start_offset()..);
        let (meta_storage, ml) = self.meta.storage_and_layout();
        let Storage::Cuda(meta) = &*meta_storage else {
            bail!("paged decode attention: the block tables must be on the GPU");
        };
        let (mb, stride) = ml.shape().dims2()?;
        if mb != b || !ml.is_contiguous() {
            bail!("paged decode attention: {mb} block tables for {b} queries");
        }
        let meta = meta.as_cuda_slice::<u32>()?.slice(ml.start_offset()..);
        let mut out = dev.alloc_zeros::<f32>(b * h * d)?;
        let func = dev.get_or_load_custom_func(
            "paged_decode_attention_f32",
            "candela_paged_attention",
            PTX,
        )?;
        let cfg = LaunchConfig {
            grid_dim: (b as u32, h as u32, 1),
            block_dim: (32 * WARPS as u32, 1, 1),
            shared_mem_bytes: (WARPS * (d + 2) * 4) as u32,
        };
        let ints = [h, nkv, d, self.block_size, stride].map(|x| x as i32);
        let mut launch = func.builder();
        launch.arg(&qs);
        launch.arg(&ks);
        launch.arg(&vs);
        launch.arg(&meta);
        launch.arg(&mut out);
        for x in &ints {
            launch.arg(x);
        }
        launch.arg(&self.scale);
        // SAFETY: the argument list matches the kernel's signature; every index the
        // kernel forms is inside q/out (grid = B × heads, d ≤ 256) or names a slot of
        // the block tables, which `ForwardBatch::validate` keeps inside the cache.
        unsafe { launch.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((b, h, d)),
        ))
    }
}

/// Fused paged attention of one decode query per sequence: `q` `[B, heads,
/// head_dim]` over the caches `kc`, `vc` through `meta` (see the module doc).
///
/// # Errors
/// [`crate::Error::Candle`] on a non-CUDA device or mismatched shapes.
pub(crate) fn paged_decode_attention(
    q: &Tensor,
    kc: &Tensor,
    vc: &Tensor,
    meta: &Tensor,
    block_size: usize,
    scale: f32,
) -> Result<Tensor> {
    let op = PagedDecode {
        meta: meta.clone(),
        block_size,
        scale,
    };
    Ok(q.apply_op3_no_bwd(kc, vc, &op)?)
}
