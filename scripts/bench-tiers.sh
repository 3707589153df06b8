#!/usr/bin/env bash
# Issue 22's scenario 2 as a test: offline work beside online chat. 64 `flex` requests
# with long outputs (256 tokens, `ignore_eos`, sent at once) plus a steady stream of short
# `default` chat requests (40 at 2/s, 16 tokens, streamed), on the default model, against
# two servers started from the same binary in the same run:
#
#   capped    --max-num-seqs-per-tier flex=4
#   uncapped  no cap (the contrast)
#
# Each server first serves the chat stream alone (its baseline), then the mixed load.
# Chat TTFT = send → first streamed text (scripts/bench-tiers.py). Asserted: with the cap,
# chat TTFT p99 ≤ 2× the same server's chat-alone p99; on both servers every request
# answers with its tokens (flex: all 256), `vllm:request_success_total` grows by exactly
# the requests sent with no abort, and afterwards vllm:kv_cache_usage_perc,
# vllm:num_requests_running and _waiting are 0. The uncapped p99 is reported, not asserted.
#
# The servers run with --threads $THREADS (default 1: on a 2-core machine the client and
# the rest keep the other core); the client (the `openai` client on asyncio) runs at
# `nice -n 19` and its CPU time is reported. `uptime` is recorded around every phase, as
# other work on the machine moves the numbers. Results go to docs/bench/tiers/ (or $OUT);
# the script exits non-zero when an assertion fails.
#
#   scripts/bench-tiers.sh                   # about 8 minutes on 2 cores
#   SMOKE=1 OUT=/tmp/tiers scripts/bench-tiers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-1}"
OUT="${OUT:-docs/bench/tiers}"
CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}"
TARGET="${CARGO_TARGET_DIR:-target}"
MODEL="${MODEL:-$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
CAP="${CAP:-4}"
if [ -n "${SMOKE:-}" ]; then
  FLEX=16; FLEX_TOKENS=64; CHATS=10
else
  FLEX="${FLEX:-64}"; FLEX_TOKENS="${FLEX_TOKENS:-256}"; CHATS="${CHATS:-40}"
fi
RATE="${RATE:-2}"

./scripts/setup.sh --test-deps >/dev/null
cargo build --release --locked -p candela >&2
CANDELA="$TARGET/release/candela"
PY="$CACHE/venv/bin/python"

rm -rf "$OUT/raw" && mkdir -p "$OUT/raw"
PIDS=()
stop() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap stop EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
load() { echo "$(date -u +%T) $1: $(uptime | sed 's/.*load average/load average/')" >>"$OUT/raw/load.txt"; }

serve() {  # name extra-flags...
  local name=$1; shift
  PORT=$(free_port)
  "$CANDELA" serve --threads "$THREADS" --model "$MODEL" --host 127.0.0.1 --port "$PORT" \
    --grpc-port "$(free_port)" --max-model-len 2048 --kv-cache-memory 1GiB \
    --disable-log-stats "$@" >"$OUT/raw/serve-$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$OUT/raw/serve-$name.log"; exit 1; }
    sleep 0.1
  done
  # Two requests to warm the server (first touch of weights and KV pages; the chat
  # template's head in the prefix cache, as every later chat finds it).
  curl -sf "http://127.0.0.1:$PORT/v1/completions" -H 'content-type: application/json' \
    -d '{"prompt":"Hello","max_tokens":8}' >/dev/null
  curl -sf "http://127.0.0.1:$PORT/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":8}' >/dev/null
}

drive() {  # name phase
  load "$1 start"
  nice -n 19 "$PY" scripts/bench-tiers.py --url "http://127.0.0.1:$PORT" --phase "$2" \
    --label "$1" --out "$OUT/raw/$1.json" --flex "$FLEX" --flex-max-tokens "$FLEX_TOKENS" \
    --chat-count "$CHATS" --chat-rate "$RATE" >&2
  load "$1 end"
}

: >"$OUT/raw/load.txt"
serve capped --max-num-seqs-per-tier "flex=$CAP"
drive alone-capped alone
drive mixed-capped mixed
stop
serve uncapped
drive alone-uncapped alone
drive mixed-uncapped mixed
stop

"$PY" scripts/bench-tiers-report.py "$OUT" \
  "$("$CANDELA" --version) at $(git rev-parse --short HEAD), $(date -u +%F)" \
  "\`scripts/bench-tiers.sh\` (THREADS=$THREADS CAP=$CAP FLEX=$FLEX FLEX_TOKENS=$FLEX_TOKENS CHATS=$CHATS RATE=$RATE)" \
  "$THREADS" "$CAP"
