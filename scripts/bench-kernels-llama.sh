#!/usr/bin/env bash
# llama.cpp's own quantized-matmul figures beside Candela's and candle's, on llama.cpp's
# shape: builds `test-backend-ops` from the vendored llama.cpp (the source and ggml build of
# scripts/build-llama-server.sh, reconfigured with its tests), runs its MUL_MAT perf cases
# (weights [4096, 14336] times 1, 4 and 512 f32 rows) for every format Candela has kernels
# for, then Candela's formats bench on the same shape and row counts, and prints one
# Markdown table in GMAC/s (llama.cpp reports GFLOPS = 2 × MAC/s).
#
#   scripts/bench-kernels-llama.sh     # ~2 minutes to build the test the first time, ~6 to run
#
# test-backend-ops gives ggml's CPU backend its default thread count (4, on this 2-core machine)
# and allocates weights in the plain CPU buffer, so its figures are ggml's generic vec-dot
# kernels: llama-server's repacked Q4_0/Q4_K/IQ4_NL kernels (CPU_REPACK buffers) are not in them.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.16
CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}"
DIR="$CACHE/llama.cpp/$VERSION"
scripts/build-llama-server.sh >/dev/null
BIN="$DIR/build/bin/test-backend-ops"
if [ ! -x "$BIN" ]; then
  cmake -S "$DIR/src" -B "$DIR/build" -DLLAMA_BUILD_TESTS=ON >&2
  cmake --build "$DIR/build" --target test-backend-ops -j"${JOBS:-2}" >&2
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
TYPES='q4_0|q4_1|q5_0|q8_0|q4_K|q5_K|q6_K|f16|bf16'
"$BIN" perf -o MUL_MAT -b CPU -p "type_a=($TYPES),type_b=f32,m=4096,n=(1|4|512),k=14336,bs=\[1,1\]" \
  >"$OUT/llama.txt" 2>&1
CANDELA_NUM_THREADS=2 cargo bench -q -p candela-model --bench qmatmul -- \
  formats shape=4096x14336 m=1,4,512 >"$OUT/candela.txt" 2>/dev/null
python3 - "$OUT/llama.txt" "$OUT/candela.txt" <<'EOF'
import re, sys
llama = {}
for line in open(sys.argv[1]):
    m = re.search(r"type_a=(\w+),type_b=f32,m=4096,n=(\d+),k=14336.*?([\d.]+) GFLOPS", line)
    if m:
        llama[(m.group(1).upper().replace("_K", "K"), int(m.group(2)))] = float(m.group(3)) / 2
print("| format | m | Candela GMAC/s | candle 0.11.1 GMAC/s | llama.cpp test-backend-ops GMAC/s | Candela / llama.cpp |")
print("|---|---|---|---|---|---|")
for line in open(sys.argv[2]):
    f = line.split()
    if len(f) == 5 and f[1].isdigit():
        fmt, m, ours, candle = f[0].upper(), int(f[1]), float(f[2]), float(f[3])
        peer = llama.get((fmt, m))
        ratio = f"{ours / peer:.2f}×" if peer else "n/a"
        print(f"| {f[0]} | {m} | {ours:.1f} | {candle:.1f} | {peer:.1f} | {ratio} |" if peer
              else f"| {f[0]} | {m} | {ours:.1f} | {candle:.1f} | n/a | n/a |")
EOF
