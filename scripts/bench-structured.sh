#!/usr/bin/env bash
# What structured outputs cost: output tokens/s of the same server decoding freely and
# under a JSON schema, at max-concurrency 1 and 32, streamed and not.
#
# For each model (SmolLM2-135M-Instruct Q4_1, Qwen2.5-Coder-0.5B-Instruct Q4_K_M: a
# 49k and a 152k vocabulary, the mask's two sizes) one `candela serve` runs, and
# `candela bench serve` sends random 128-token prompts for 128 output tokens
# (`ignore_eos`, greedy), free and with `guided_json`, alternating free and JSON run by
# run and repeating the pair ROUNDS times so machine drift hits both; both modes of a round
# send the same prompts (one seed per round) and prefix caching is off, so neither reuses
# the other's prefill. The schema is an
# array of at least 64 short strings: it cannot complete within 128 tokens, so every
# token is sampled under a live grammar (string lexing, separators, brackets) — the
# mask is never the trivial EOS-only one. The client runs under `nice -n 19` and
# `/usr/bin/time`; the report states its CPU share. Results (vLLM-format JSON per run)
# and a Markdown table with the JSON/free ratios go to docs/bench/structured/ (or $OUT).
#
#   scripts/bench-structured.sh             # about 15 minutes on 2 cores
#   SMOKE=1 OUT=/tmp/so scripts/bench-structured.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
OUT="${OUT:-docs/bench/structured}"
CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}"
TARGET="${CARGO_TARGET_DIR:-target}"
MODELS=(
  "smollm2-135m|$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf|SmolLM2-135M-Instruct"
  "qwen2.5-coder-0.5b|$CACHE/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf|qwen2.5-coder-0.5b-instruct"
)
SCHEMA='{"guided_json": {"type": "array", "minItems": 64, "items": {"type": "string", "maxLength": 24}}}'

./scripts/setup.sh --test-deps >/dev/null
cargo build --release --locked -p candela >&2
CANDELA="$TARGET/release/candela"
PY="$CACHE/venv/bin/python"

if [ -n "${SMOKE:-}" ]; then
  N1=2; N32=8; ROUNDS=1
else
  N1=8; N32=64; ROUNDS="${ROUNDS:-2}"
fi

rm -rf "$OUT/raw" && mkdir -p "$OUT/raw"
PID=""
stop() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; fi; }
trap stop EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() {  # name mode extra-args...
  local name=$1 mode=$2; shift 2
  local extra=()
  [ "$mode" = json ] && extra=(--extra-body "$SCHEMA")
  nice -n 19 /usr/bin/time -f '%e %U %S' -o "$RAW/$name-$mode.time" \
    "$CANDELA" bench serve --base-url "http://127.0.0.1:$PORT" --model "$SERVED" \
    --tokenizer "$MODEL" --disable-tqdm --ready-check-timeout-sec 120 --num-warmups 2 \
    --dataset-name random --random-input-len 128 --random-output-len 128 --temperature 0 \
    --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,99 \
    --save-result --result-dir "$RAW" --result-filename "$name-$mode.json" \
    --label "$mode" --metadata "run=$name" "mode=$mode" "${extra[@]}" "$@" >"$RAW/$name-$mode.txt"
  grep -E "Output token throughput" "$RAW/$name-$mode.txt" | sed "s/^/  $KEY $mode $name: /" >&2
}

for spec in "${MODELS[@]}"; do
  IFS='|' read -r KEY MODEL SERVED <<<"$spec"
  RAW="$OUT/raw/$KEY"
  mkdir -p "$RAW"
  echo "== $KEY" >&2
  PORT=$(free_port)
  "$CANDELA" serve --threads "$THREADS" --model "$MODEL" --host 127.0.0.1 --port "$PORT" \
    --grpc-port "$(free_port)" --served-model-name "$SERVED" --max-num-seqs 32 --max-model-len 1024 \
    --kv-cache-memory 1GiB --enable-prefix-caching false >"$OUT/$KEY-serve.log" 2>&1 &
  PID=$!
  for r in $(seq 1 "$ROUNDS"); do
    # The mode that goes first alternates too (a round's first run meets a colder server).
    modes=(free json)
    [ $((r % 2)) -eq 0 ] && modes=(json free)
    for mode in "${modes[@]}"; do
      run "c1-r$r" "$mode" --num-prompts "$N1" --max-concurrency 1 --seed "$r"
      run "c1-nostream-r$r" "$mode" --num-prompts "$N1" --max-concurrency 1 --no-stream --seed "$((r + 100))"
      run "c32-r$r" "$mode" --num-prompts "$N32" --max-concurrency 32 --seed "$((r + 200))"
      run "c32-nostream-r$r" "$mode" --num-prompts "$N32" --max-concurrency 32 --no-stream --seed "$((r + 300))"
    done
  done
  stop
done

"$PY" scripts/bench-structured-report.py "$OUT" "$THREADS" \
  "$("$CANDELA" --version) at $(git rev-parse --short HEAD), $(date -u +%F)" "$SCHEMA"
