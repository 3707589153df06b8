#!/usr/bin/env bash
# Compiles Candela's own CUDA kernels (engine/model/src/cuda/*.cu) to PTX with nvcc
# from NVIDIA's PyPI wheels — no GPU needed — with warnings as errors, for the
# oldest CUDA 13 target (sm_75) and the GPUs the docs name (A100 sm_80, H100/H200 sm_90), and checks each
# kernel's entry point is in the PTX. The full `cuda` build is scripts/build-cuda.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
CUDA_WHEELS="nvcc,cudart,crt,nvvm" source "$root/scripts/cuda-toolkit.sh"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
n=0
for src in "$root"/engine/model/src/cuda/*.cu; do
  for arch in 75 80 90; do
    ptx="$out/$(basename "$src" .cu).sm_$arch.ptx"
    nvcc -ptx -O3 -arch="sm_$arch" --Werror all-warnings "$src" -o "$ptx"
    for entry in $(grep -oE '__global__ void [a-z_0-9]+' "$src" | awk '{print $3}'); do
      grep -q "\.entry $entry(" "$ptx" || { echo "FAIL: $entry missing from $ptx"; exit 1; }
    done
    n=$((n + 1))
  done
done
echo "cuda kernels: $n passed, 0 failed ($(nvcc --version | tail -1))"
