#!/usr/bin/env bash
# Builds `candela` with the `cuda` feature on a machine without a GPU or a system CUDA.
#
# The CUDA 13 toolkit pieces candle needs at build time (nvcc + cicc/nvvm, crt and
# runtime headers; cuBLAS/cuRAND/NVRTC libraries for run time) come from NVIDIA's
# PyPI wheels, installed once into ~/.cache/candela/cuda-venv. The binary links the
# CUDA libraries dynamically (cudarc), so it starts on any machine and only needs
# the driver and those libraries where `--device cuda` is used.
#
#   scripts/build-cuda.sh                 # release build, kernels for sm_90 (H100/H200)
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh   # A100
#
# Output: target/cuda/release/candela and target/cuda/release/examples/device_check
# (CARGO_TARGET_DIR overrides target/cuda).
# The tests never need this; see docs/cuda.md for running it on a GPU.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
CUDA_WHEELS="nvcc,cudart,nvrtc,cublas,curand,cccl,crt,nvvm" source "$root/scripts/cuda-toolkit.sh"
export LD_LIBRARY_PATH="$CUDA_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# cudarc links the CUDA libraries by their unversioned names, which the wheels do
# not ship, and libcuda (the driver) is not in any wheel: add the symlinks and a
# link-time stub of libcuda (SONAME libcuda.so.1, every cu* entry point of cuda.h,
# each returning CUDA_ERROR_NO_DEVICE) under lib/stubs, where cudarc looks. At run
# time the real driver is loaded; the stub also lets the binary start here.
stubs="$CUDA_ROOT/lib/stubs"
if [[ ! -e "$stubs/libcuda.so.1" ]]; then
  mkdir -p "$stubs"
  for lib in cublas cublasLt cudart curand nvrtc; do
    real="$(cd "$CUDA_ROOT/lib" && ls lib$lib.so.* | grep -v alt | head -1)"
    ln -sf "../$real" "$stubs/lib$lib.so"
  done
  grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$CUDA_ROOT/include/cuda.h" | sort -u \
    | sed 's/.*/int &(void) { return 100; }/' > "$stubs/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda_stub.c"
  ln -sf libcuda.so "$stubs/libcuda.so.1"
fi
# No GPU here to ask for its compute capability: say which one to build for.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/cuda}"

nvcc --version | tail -1 >&2
cd "$root"
# One invocation so candle is built once for both: the server, and the GPU check
# (docs/cuda.md: tensor path vs CPU kernels, TPOT, throughput).
cargo build --release -p candela -p candela-model --features candela/cuda \
  --bin candela --example device_check "$@"
echo "$CARGO_TARGET_DIR/release/candela"
echo "$CARGO_TARGET_DIR/release/examples/device_check"
