#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (the CPU peer for scripts/bench-peer.sh) from the
# llama.cpp source vendored in the llama-cpp-python sdist on PyPI, cached under
# ~/.cache/candela/llama.cpp/<version>/. Prints the binary's path.
#
#   scripts/build-llama-server.sh        # about 4 minutes on 2 cores the first time
set -euo pipefail
VERSION=0.3.16
CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}"
DIR="$CACHE/llama.cpp/$VERSION"
BIN="$DIR/build/bin/llama-server"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
SDIST="$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
  mkdir -p "$CACHE/sdist"
  python3 -m pip download --no-deps --no-binary :all: --no-build-isolation -q \
    -d "$CACHE/sdist" "llama-cpp-python==$VERSION" >&2
fi
command -v cmake >/dev/null && command -v ninja >/dev/null || python3 -m pip install -q cmake ninja >&2
mkdir -p "$DIR"
if [ ! -d "$DIR/src" ]; then
  tar -xzf "$SDIST" -C "$DIR"
  mv "$DIR/llama_cpp_python-$VERSION/vendor/llama.cpp" "$DIR/src"
  rm -rf "$DIR/llama_cpp_python-$VERSION"
fi
cmake -S "$DIR/src" -B "$DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
  -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "$DIR/build" --target llama-server -j"${JOBS:-2}" >&2
echo "$BIN"
