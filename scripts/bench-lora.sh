#!/usr/bin/env bash
# What serving LoRA adapters costs: output tokens/s of one server (`--enable-lora
# --max-loras 4`, four rank-8 adapters on every projection, made by
# scripts/make-lora-adapters.py) at max-concurrency 32, with every request on the base
# model, and with every request on one of the four adapters drawn at random (`candela
# bench serve --lora-modules`, vLLM's flag), so each step mixes all four. Streamed and
# not. Goal: mixed ≥ 0.8× base.
#
# Both modes hit the same server in the same run, alternating (the first mode alternates
# by round too) so machine drift hits both; random prompts of 128 tokens, 128 output
# tokens with `ignore_eos`. The client runs under `nice -n 19` and `/usr/bin/time`; the
# report states its CPU share. Around every run /metrics is scraped: the adapters'
# `vllm:lora_requests_total` must grow by exactly the run's requests in the mixed mode and
# not at all in the base mode. Results (vLLM-format JSON) and a Markdown table go to
# docs/bench/lora/ (or $OUT).
#
#   scripts/bench-lora.sh                 # about 10 minutes on 2 cores
#   SMOKE=1 OUT=/tmp/lora scripts/bench-lora.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
OUT="${OUT:-docs/bench/lora}"
CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}"
TARGET="${CARGO_TARGET_DIR:-target}"
MODEL="${MODEL:-$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
HF_CONFIG="$CACHE/models/SmolLM2-135M-Instruct-hf/config.json"
SERVED=bench-model
ADAPTERS=(a1 a2 a3 a4)

./scripts/setup.sh --test-deps >/dev/null
cargo build --release --locked -p candela >&2
CANDELA="$TARGET/release/candela"
PY="$CACHE/venv/bin/python"

if [ -n "${SMOKE:-}" ]; then
  N=32; ROUNDS=1
else
  N=96; ROUNDS="${ROUNDS:-2}"
fi

rm -rf "$OUT/raw" && mkdir -p "$OUT/raw"
LORA_DIR=$(mktemp -d)
python3 scripts/make-lora-adapters.py --config "$HF_CONFIG" --out "$LORA_DIR" \
  --names "$(IFS=,; echo "${ADAPTERS[*]}")" --rank 8 >/dev/null
PIDS=()
stop() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap 'stop; rm -rf "$LORA_DIR"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PORT=$(free_port)
modules=()
for a in "${ADAPTERS[@]}"; do modules+=("$a=$LORA_DIR/$a"); done
"$CANDELA" serve --threads "$THREADS" --model "$MODEL" --host 127.0.0.1 --port "$PORT" \
  --grpc-port "$(free_port)" --served-model-name "$SERVED" --max-num-seqs 32 --max-model-len 1024 \
  --kv-cache-memory 1GiB --enable-lora --max-loras 4 --max-lora-rank 8 \
  --lora-modules "${modules[@]}" >"$OUT/serve.log" 2>&1 &
PIDS+=($!)

scrape() { curl -sf "http://127.0.0.1:$PORT/metrics" | grep -E '^vllm:(generation_tokens_total|lora_requests_total)' || true; }

run() {  # name mode extra-args...
  local name=$1 mode=$2; shift 2
  local lora=()
  [ "$mode" = lora4 ] && lora=(--lora-modules "${ADAPTERS[@]}")
  scrape >"$OUT/raw/$name-$mode.before"
  nice -n 19 /usr/bin/time -f '%e %U %S' -o "$OUT/raw/$name-$mode.time" \
    "$CANDELA" bench serve --base-url "http://127.0.0.1:$PORT" --model "$SERVED" \
    --tokenizer "$MODEL" --disable-tqdm --ready-check-timeout-sec "$READY" --num-warmups 0 \
    --dataset-name random --random-input-len 128 --random-output-len 128 --temperature 0 \
    --max-concurrency 32 --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,99 \
    --save-result --result-dir "$OUT/raw" --result-filename "$name-$mode.json" \
    --label "$mode" --metadata "run=$name" "mode=$mode" "${lora[@]}" "$@" >"$OUT/raw/$name-$mode.txt"
  scrape >"$OUT/raw/$name-$mode.after"
  grep -E "Output token throughput" "$OUT/raw/$name-$mode.txt" | sed "s/^/  $mode $name: /" >&2
}

# One unrecorded run per mode first, full size (waiting until the server is up): a fresh
# server's first long run measured 10-20% faster than its later ones (the CPU's boost
# fading under sustained load), which would favour whichever mode came first.
READY=300
for mode in base lora4; do
  run warmup "$mode" --num-prompts "$N" --seed 0 2>/dev/null
done
rm -f "$OUT"/raw/warmup-*
READY=0

for r in $(seq 1 "$ROUNDS"); do
  modes=(base lora4)
  [ $((r % 2)) -eq 0 ] && modes=(lora4 base)
  for mode in "${modes[@]}"; do
    run "c32-r$r" "$mode" --num-prompts "$N" --seed "$r"
    run "c32-nostream-r$r" "$mode" --num-prompts "$N" --no-stream --seed "$((r + 100))"
  done
done
stop

"$PY" scripts/bench-lora-report.py "$OUT" "$THREADS" "$N" \
  "$("$CANDELA" --version) at $(git rev-parse --short HEAD), $(date -u +%F)" "$(basename "$MODEL")"
