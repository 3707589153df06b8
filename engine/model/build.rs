//! With the `cuda` feature: compiles `src/cuda/*.cu` to PTX with nvcc into
//! `$OUT_DIR`, where `paged_decode.rs` embeds it. The target is
//! `CUDA_COMPUTE_CAP` (what candle's own kernels are built for) or else
//! compute 7.5, the oldest CUDA 13 supports: the driver compiles PTX forward to
//! newer GPUs. Without the feature there is nothing to build.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=src/cuda");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "75".into());
    let src = "src/cuda/paged_attention.cu";
    let status = Command::new("nvcc")
        .args(["-ptx", "-O3", &format!("-arch=compute_{cap}"), src, "-o"])
        .arg(out.join("paged_attention.ptx"))
        .status()
        .unwrap_or_else(|e| {
            panic!("running nvcc for {src} (scripts/build-cuda.sh puts it on PATH): {e}")
        });
    assert!(status.success(), "nvcc failed on {src}");
}
