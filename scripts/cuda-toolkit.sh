#!/usr/bin/env bash
# Sourced by build-cuda.sh and check-cuda-kernels.sh: installs NVIDIA's CUDA 13.0
# toolkit wheels (the extras named in CUDA_WHEELS) from PyPI into
# ~/.cache/candela/cuda-venv once, then exports CUDA_ROOT and puts nvcc on PATH.
cuda_cache="${CANDELA_CACHE:-$HOME/.cache/candela}"
cuda_venv="$cuda_cache/cuda-venv"
cuda_toolkit_version="13.0.2"
if [[ ! -x "$cuda_venv/bin/pip" ]]; then
  python3 -m venv "$cuda_venv"
fi
# pip is a no-op (a second or two) when the wheels are already there.
"$cuda_venv/bin/pip" install --quiet --disable-pip-version-check \
  "cuda-toolkit[${CUDA_WHEELS:-nvcc,cudart,crt,nvvm}]==$cuda_toolkit_version"
cuda_site="$("$cuda_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export CUDA_ROOT="$cuda_site/nvidia/cu13"
export CUDA_PATH="$CUDA_ROOT"
export PATH="$CUDA_ROOT/bin:$PATH"
