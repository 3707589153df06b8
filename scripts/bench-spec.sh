#!/usr/bin/env bash
# What speculative decoding buys: output tokens/s of the same model with speculation off
# and with prompt lookup (`--speculative-config '{"method": "ngram", ...}'`), at
# max-concurrency 1 and 8, streamed and not, on two datasets from
# scripts/bench-spec-data.py: input-grounded rewrites of given code and text (what prompt
# lookup is for) and open-ended stories (nothing to copy; speculation must not cost more
# than 10%).
#
# Both servers run side by side on the same model, idle while the other is measured;
# runs alternate off/on (the first mode alternates by round too) so machine drift hits
# both. Requests are greedy with `ignore_eos` and 128 output tokens, so off and on must
# produce the same texts: the report checks it. Around every run /metrics is scraped:
# `vllm:generation_tokens_total` must grow by exactly the benchmark's output tokens (no
# warm-up requests inside a run; each server gets one unrecorded run first), and
# the spec-decode counters give the run's acceptance rate and mean acceptance length.
# The client runs under `nice -n 19` and `/usr/bin/time`; the report states its CPU share.
# Results (vLLM-format JSON, metric deltas) and a Markdown table go to docs/bench/spec/
# (or $OUT).
#
#   scripts/bench-spec.sh                 # about 15 minutes on 2 cores
#   SMOKE=1 OUT=/tmp/spec scripts/bench-spec.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
OUT="${OUT:-docs/bench/spec}"
CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}"
TARGET="${CARGO_TARGET_DIR:-target}"
MODEL="${MODEL:-$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
SERVED=bench-model
DEFAULT_SPEC='{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}'
SPEC="${SPEC:-$DEFAULT_SPEC}"

./scripts/setup.sh --test-deps >/dev/null
cargo build --release --locked -p candela >&2
CANDELA="$TARGET/release/candela"
PY="$CACHE/venv/bin/python"

if [ -n "${SMOKE:-}" ]; then
  N1=2; N8=8; ROUNDS=1
else
  N1=8; N8=32; ROUNDS="${ROUNDS:-2}"
fi

rm -rf "$OUT/raw" "$OUT/data" && mkdir -p "$OUT/raw"
python3 scripts/bench-spec-data.py . "$OUT/data"
PIDS=()
stop() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap stop EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

declare -A PORT
for mode in off on; do
  PORT[$mode]=$(free_port)
  extra=()
  [ "$mode" = on ] && extra=(--speculative-config "$SPEC")
  "$CANDELA" serve --threads "$THREADS" --model "$MODEL" --host 127.0.0.1 --port "${PORT[$mode]}" \
    --grpc-port "$(free_port)" --served-model-name "$SERVED" --max-num-seqs 32 --max-model-len 2048 \
    --kv-cache-memory 1GiB "${extra[@]}" >"$OUT/serve-$mode.log" 2>&1 &
  PIDS+=($!)
done

scrape() { curl -sf "http://127.0.0.1:$1/metrics" | grep -E '^vllm:(generation_tokens_total|spec_decode_num)' || true; }

run() {  # name mode dataset extra-args...
  local name=$1 mode=$2 data=$3; shift 3
  local port=${PORT[$mode]}
  scrape "$port" >"$OUT/raw/$name-$mode.before"
  nice -n 19 /usr/bin/time -f '%e %U %S' -o "$OUT/raw/$name-$mode.time" \
    "$CANDELA" bench serve --base-url "http://127.0.0.1:$port" --model "$SERVED" \
    --tokenizer "$MODEL" --disable-tqdm --ready-check-timeout-sec "$READY" --num-warmups 0 \
    --dataset-name sharegpt --dataset-path "$OUT/data/$data.json" --sharegpt-output-len 128 \
    --ignore-eos --temperature 0 --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,99 \
    --save-result --save-detailed --result-dir "$OUT/raw" --result-filename "$name-$mode.json" \
    --label "$mode" --metadata "run=$name" "mode=$mode" "$@" >"$OUT/raw/$name-$mode.txt"
  scrape "$port" >"$OUT/raw/$name-$mode.after"
  grep -E "Output token throughput" "$OUT/raw/$name-$mode.txt" | sed "s/^/  $mode $name: /" >&2
}

# One unrecorded run per server first (waiting until it is up), so neither meets the
# rounds cold; recorded runs send no ready-check request, so the servers' counters
# count exactly the benchmark's requests.
READY=120
for mode in off on; do
  run warmup "$mode" grounded --num-prompts 2 --max-concurrency 1 --seed 0 2>/dev/null
done
rm -f "$OUT"/raw/warmup-*
READY=0

for r in $(seq 1 "$ROUNDS"); do
  modes=(off on)
  [ $((r % 2)) -eq 0 ] && modes=(on off)
  for data in grounded free; do
    for mode in "${modes[@]}"; do
      run "$data-c1-r$r" "$mode" "$data" --num-prompts "$N1" --max-concurrency 1 --seed "$r"
      run "$data-c1-nostream-r$r" "$mode" "$data" --num-prompts "$N1" --max-concurrency 1 --no-stream --seed "$((r + 100))"
      run "$data-c8-r$r" "$mode" "$data" --num-prompts "$N8" --max-concurrency 8 --seed "$((r + 200))"
      run "$data-c8-nostream-r$r" "$mode" "$data" --num-prompts "$N8" --max-concurrency 8 --no-stream --seed "$((r + 300))"
    done
  done
done
stop

"$PY" scripts/bench-spec-report.py "$OUT" "$THREADS" \
  "$("$CANDELA" --version) at $(git rev-parse --short HEAD), $(date -u +%F)" "$SPEC" "$(basename "$MODEL")"
