#!/usr/bin/env bash
# Candela against llama.cpp's llama-server on CPU, side by side in one session.
#
# Serves the default model (same GGUF, same thread count) with `candela serve` and with
# `llama-server -np 32 --cont-batching` (-c 16384; -c 65536 for the ShareGPT run), then drives both with the same
# `candela bench serve` runs, alternating servers run by run so machine noise hits both:
#   - random 128-in / 128-out prompts at max-concurrency 1, 8, 32 (request rate inf);
#   - random prompts at request rates 1, 2, 4, 8 and inf (max-concurrency 32);
#   - the ShareGPT-format sample at max-concurrency 32.
# Results (vLLM-format JSON per run), a Markdown table with the Candela/peer ratios and
# charts go to docs/bench/peer/ (or $OUT).
#
#   scripts/bench-peer.sh            # full sweep (about 25 minutes on 2 cores)
#   QUICK=1 scripts/bench-peer.sh    # fewer prompts per run (about 8 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
OUT="${OUT:-docs/bench/peer}"
CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}"
MODEL="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET="${CARGO_TARGET_DIR:-target}"

./scripts/setup.sh --test-deps >/dev/null
cargo build --release --locked -p candela >&2
CANDELA="$TARGET/release/candela"
LLAMA="$(scripts/build-llama-server.sh)"
PY="$CACHE/venv/bin/python"
"$PY" -c "import matplotlib" 2>/dev/null || "$PY" -m pip install -q matplotlib >&2

RAW="$OUT/raw"
rm -rf "$RAW" && mkdir -p "$RAW"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {  # url
  for _ in $(seq 1 600); do
    curl -sf "$1/v1/models" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "server at $1 did not come up" >&2; return 1
}

CPORT=$(free_port)
"$CANDELA" serve --threads "$THREADS" --model "$MODEL" --host 127.0.0.1 --port "$CPORT" \
  --grpc-port "$(free_port)" --served-model-name SmolLM2-135M-Instruct --max-num-seqs 32 --max-model-len 4096 \
  >"$OUT/candela-serve.log" 2>&1 &
PIDS+=($!)
LLAMA_PID=""
start_llama() {  # ctx-size: llama-server splits it evenly over its 32 slots
  [ -n "$LLAMA_PID" ] && { kill "$LLAMA_PID"; wait "$LLAMA_PID" 2>/dev/null || true; }
  LPORT=$(free_port)
  "$LLAMA" -m "$MODEL" -t "$THREADS" -c "$1" -np 32 --cont-batching --host 127.0.0.1 --port "$LPORT" \
    >>"$OUT/llama-server.log" 2>&1 &
  LLAMA_PID=$!
  PIDS+=($LLAMA_PID)
  wait_ready "http://127.0.0.1:$LPORT"
}
# -c 16384 (512 tokens per slot) as in ../shared/TEST-ASSETS.md: room for 128 + 128, and the
# smallest per-slot KV llama-server attends over.
: >"$OUT/llama-server.log"
start_llama 16384
wait_ready "http://127.0.0.1:$CPORT"

N1=${QUICK:+8};   N1=${N1:-24}
N8=${QUICK:+32};  N8=${N8:-64}
N32=${QUICK:+64}; N32=${N32:-160}

run() {  # name server-label port extra-args...
  local name=$1 label=$2 port=$3; shift 3
  "$CANDELA" bench serve --base-url "http://127.0.0.1:$port" --model SmolLM2-135M-Instruct \
    --tokenizer "$MODEL" --disable-tqdm --ready-check-timeout-sec 60 --num-warmups 2 \
    --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99 --temperature 0 \
    --save-result --result-dir "$RAW" --result-filename "$name-$label.json" \
    --label "$label" --metadata "run=$name" "server=$label" "$@" >"$RAW/$name-$label.txt"
  grep -E "Output token throughput|P99 TTFT|Mean TPOT" "$RAW/$name-$label.txt" | sed "s/^/  $label $name: /" >&2
}
both() {  # name extra-args...
  local name=$1; shift
  run "$name" candela "$CPORT" "$@"
  run "$name" llama-server "$LPORT" "$@"
}

RANDOM_128=(--dataset-name random --random-input-len 128 --random-output-len 128)
both c1  "${RANDOM_128[@]}" --num-prompts "$N1"  --max-concurrency 1
both c8  "${RANDOM_128[@]}" --num-prompts "$N8"  --max-concurrency 8
both c32 "${RANDOM_128[@]}" --num-prompts "$N32" --max-concurrency 32
for rate in 1 2 4 8; do
  both "rate$rate" "${RANDOM_128[@]}" --num-prompts "$N8" --max-concurrency 32 --request-rate "$rate"
done
# ShareGPT pairs reach 1024 prompt tokens: 2048 tokens per slot so every prompt fits.
start_llama 65536
both sharegpt-c32 --dataset-name sharegpt --dataset-path engine/tools/data/sharegpt-sample.json \
  --sharegpt-output-len 128 --num-prompts "$N32" --max-concurrency 32

"$PY" scripts/bench-peer-report.py "$RAW" "$OUT" --threads "$THREADS" \
  --candela-version "$("$CANDELA" --version)" --peer-version "$("$LLAMA" --version 2>&1 | head -1)"
echo "wrote $OUT/README.md" >&2
