#!/usr/bin/env bash
# Candela against llama.cpp's llama-server on CPU, side by side in one session.
#
# For each model (SmolLM2-135M-Instruct Q4_1, then Qwen2.5-Coder-0.5B-Instruct Q4_K_M),
# serves the same GGUF with the same thread count by `candela serve --max-num-seqs 32` and by
# `llama-server -np 32 --cont-batching -c 16384`, then drives both with the same
# `candela bench serve` runs, alternating servers run by run so machine noise hits both:
#   - random 128-in / 128-out prompts at max-concurrency 1, 8, 32 (request rate inf),
#     streamed as vLLM's benchmark does;
#   - the same at max-concurrency 1 and 32 with `--no-stream` (`c1-nostream`, `c32-nostream`):
#     whole answers, a lighter client that measures throughput and E2EL only;
#   - first model only: request rates 1, 2, 4, 8 (max-concurrency 32), and the ShareGPT-format
#     sample at max-concurrency 32 (llama-server restarted with -c 65536 so its prompts fit a slot).
# The client shares the machine with the servers: it runs under `nice -n 19` and
# `/usr/bin/time`, so each run records the client's wall, user and system seconds and the report
# states its CPU share. Both servers hold KV for the same number of tokens (llama-server's
# `-c`; Candela's `--kv-cache-memory` is that many tokens of its f16 K/V, per `candela plan`).
# Once both servers are up their peak RSS is reset (/proc/PID/clear_refs), and after the
# concurrency-32 runs it is read (VmHWM): each server's peak while serving. Results (vLLM-format JSON per run, in raw/<model-key>/), a Markdown table
# per model with the Candela/peer ratios and the issue's targets, and charts go to
# docs/bench/peer/ (or $OUT).
#
#   scripts/bench-peer.sh                        # full sweep (about an hour on 2 cores)
#   QUICK=1 scripts/bench-peer.sh                # fewer prompts per run
#   SMOKE=1 OUT=/tmp/peer scripts/bench-peer.sh  # pipeline check: 4 prompts, c1 and c32 rows only
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
OUT="${OUT:-docs/bench/peer}"
CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}"
TARGET="${CARGO_TARGET_DIR:-target}"
# key | GGUF | served model name
MODELS=(
  "smollm2-135m|$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf|SmolLM2-135M-Instruct"
  "qwen2.5-coder-0.5b|$CACHE/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf|qwen2.5-coder-0.5b-instruct"
)

./scripts/setup.sh --test-deps >/dev/null
cargo build --release --locked -p candela >&2
CANDELA="$TARGET/release/candela"
LLAMA="$(scripts/build-llama-server.sh)"
PY="$CACHE/venv/bin/python"
"$PY" -c "import matplotlib" 2>/dev/null || "$PY" -m pip install -q matplotlib >&2

if [ -n "${SMOKE:-}" ]; then
  N1=4; N8=4; N32=4
elif [ -n "${QUICK:-}" ]; then
  N1=8; N8=32; N32=64
else
  N1=24; N8=64; N32=160
fi

rm -rf "$OUT/raw" && mkdir -p "$OUT/raw"
rm -f "$OUT"/throughput*.png "$OUT"/throughput*.svg "$OUT"/latency*.png "$OUT"/latency*.svg
CANDELA_PID=""
LLAMA_PID=""
stop() {  # pid: kill one server and wait for it
  if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}
cleanup() { stop "$CANDELA_PID"; stop "$LLAMA_PID"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {  # url
  for _ in $(seq 1 600); do
    curl -sf "$1/v1/models" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "server at $1 did not come up" >&2; return 1
}

# KV bytes per token of $MODEL in Candela's CPU pool (f16 K and V), from `candela plan`.
kv_bytes_per_token() {
  "$CANDELA" plan --gguf "$MODEL" --gpu-memory-gib 64 --kv-cache-dtype fp16 --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["kv_bytes_per_token"])'
}
# Resets each process's VmHWM to its current RSS (Linux `clear_refs` 5), so the peak read after
# the concurrency-32 runs is the peak while serving, not a loading transient.
reset_peak_rss() {
  for pid in "$@"; do echo 5 >"/proc/$pid/clear_refs"; done
}
start_candela() {  # KV tokens: the same as llama-server's -c, so both pools hold as much
  stop "$CANDELA_PID"
  CPORT=$(free_port)
  "$CANDELA" serve --threads "$THREADS" --model "$MODEL" --host 127.0.0.1 --port "$CPORT" \
    --grpc-port "$(free_port)" --served-model-name "$SERVED" --max-num-seqs 32 --max-model-len 4096 \
    --kv-cache-memory "$((KV_BYTES_PER_TOKEN * $1))" \
    >>"$OUT/$KEY-candela-serve.log" 2>&1 &
  CANDELA_PID=$!
}
start_llama() {  # ctx-size: llama-server splits it evenly over its 32 slots
  stop "$LLAMA_PID"
  LPORT=$(free_port)
  "$LLAMA" -m "$MODEL" -t "$THREADS" -c "$1" -np 32 --cont-batching --host 127.0.0.1 --port "$LPORT" \
    >>"$OUT/$KEY-llama-server.log" 2>&1 &
  LLAMA_PID=$!
  wait_ready "http://127.0.0.1:$LPORT"
}

run() {  # name server-label port extra-args...
  local name=$1 label=$2 port=$3; shift 3
  nice -n 19 /usr/bin/time -f '%e %U %S' -o "$RAW/$name-$label.time" \
    "$CANDELA" bench serve --base-url "http://127.0.0.1:$port" --model "$SERVED" \
    --tokenizer "$MODEL" --disable-tqdm --ready-check-timeout-sec 60 --num-warmups 2 \
    --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99 --temperature 0 \
    --save-result --result-dir "$RAW" --result-filename "$name-$label.json" \
    --label "$label" --metadata "run=$name" "server=$label" "$@" >"$RAW/$name-$label.txt"
  grep -E "Output token throughput|P99 TTFT|Mean TPOT|Mean E2EL" "$RAW/$name-$label.txt" \
    | sed "s/^/  $KEY $label $name: /" >&2
}
both() {  # name extra-args...
  local name=$1; shift
  run "$name" candela "$CPORT" "$@"
  run "$name" llama-server "$LPORT" "$@"
}
vm_hwm_kib() {  # pid
  awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}

RANDOM_128=(--dataset-name random --random-input-len 128 --random-output-len 128)
FIRST=1
for spec in "${MODELS[@]}"; do
  IFS='|' read -r KEY MODEL SERVED <<<"$spec"
  RAW="$OUT/raw/$KEY"
  mkdir -p "$RAW"
  printf '{"key": "%s", "served_model_name": "%s", "gguf": "%s"}\n' \
    "$KEY" "$SERVED" "$(basename "$MODEL")" >"$RAW/model.json"
  echo "== $KEY" >&2
  : >"$OUT/$KEY-llama-server.log"
  : >"$OUT/$KEY-candela-serve.log"
  KV_BYTES_PER_TOKEN=$(kv_bytes_per_token)
  # -c 16384 (512 tokens per slot) as in ../shared/TEST-ASSETS.md: room for 128 + 128, and the
  # smallest per-slot KV llama-server attends over; Candela's pool holds as many tokens.
  start_candela 16384
  start_llama 16384
  wait_ready "http://127.0.0.1:$CPORT"
  reset_peak_rss "$CANDELA_PID" "$LLAMA_PID"

  both c1 "${RANDOM_128[@]}" --num-prompts "$N1" --max-concurrency 1
  both c1-nostream "${RANDOM_128[@]}" --num-prompts "$N1" --max-concurrency 1 --no-stream
  [ -n "${SMOKE:-}" ] || both c8 "${RANDOM_128[@]}" --num-prompts "$N8" --max-concurrency 8
  both c32 "${RANDOM_128[@]}" --num-prompts "$N32" --max-concurrency 32
  both c32-nostream "${RANDOM_128[@]}" --num-prompts "$N32" --max-concurrency 32 --no-stream
  # Peak resident memory so far: model, KV cache and buffers at full concurrency.
  printf '{"after": "c32-nostream", "candela_kib": %s, "llama_server_kib": %s}\n' \
    "$(vm_hwm_kib "$CANDELA_PID")" "$(vm_hwm_kib "$LLAMA_PID")" >"$RAW/peak-rss.json"

  if [ -n "$FIRST" ] && [ -z "${SMOKE:-}" ]; then
    for rate in 1 2 4 8; do
      both "rate$rate" "${RANDOM_128[@]}" --num-prompts "$N8" --max-concurrency 32 --request-rate "$rate"
    done
    # ShareGPT pairs reach 1024 prompt tokens: 2048 tokens per slot so every prompt fits.
    start_candela 65536
    start_llama 65536
    wait_ready "http://127.0.0.1:$CPORT"
    both sharegpt-c32 --dataset-name sharegpt --dataset-path engine/tools/data/sharegpt-sample.json \
      --sharegpt-output-len 128 --num-prompts "$N32" --max-concurrency 32
  fi
  stop "$CANDELA_PID"; CANDELA_PID=""
  stop "$LLAMA_PID"; LLAMA_PID=""
  FIRST=""
done

"$PY" scripts/bench-peer-report.py "$OUT/raw" "$OUT" --threads "$THREADS" \
  --models "${MODELS[@]%%|*}" \
  --candela-version "$("$CANDELA" --version)" --peer-version "$("$LLAMA" --version 2>&1 | head -1)"
echo "wrote $OUT/README.md" >&2
