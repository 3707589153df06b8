#!/usr/bin/env bash
# Starts `candela serve` on the default model (loopback, random port, API key on) and
# a second one on the Qwen2.5 Q4_K_M GGUF with auto tool choice (Hermes parser), runs
# the Python suites against them with the official `openai` client, stops both.
# Usage: scripts/api-tests.sh PYTHON CANDELA_BINARY
set -euo pipefail
PY="$1"; BIN="$2"
QWEN="${CANDELA_QWEN_GGUF:-$HOME/.cache/candela/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}"
[ -s "$QWEN" ] || { echo "api-tests: $QWEN is missing: run scripts/setup.sh --test-deps"; exit 1; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KEY="sk-candela-ci-$RANDOM"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; wait $p 2>/dev/null || true; done' EXIT
wait_healthy() { # PORT PID LOG
  for _ in $(seq 1 900); do
    if curl -sf "http://127.0.0.1:$1/health" >/dev/null; then return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then echo "candela serve exited:"; cat "$3"; exit 1; fi
    sleep 0.1
  done
  echo "candela serve did not become healthy:"; cat "$3"; exit 1
}
LOG=$(mktemp); QLOG=$(mktemp)
PORT=$(free_port); QPORT=$(free_port)
"$BIN" serve --host 127.0.0.1 --port "$PORT" --grpc-port "$(free_port)" --api-key "$KEY" \
  --max-model-len 2048 --max-waiting 512 --max-num-seqs 128 --kv-cache-memory 512MiB >"$LOG" 2>&1 &
PIDS+=($!)
"$BIN" serve --host 127.0.0.1 --port "$QPORT" --grpc-port "$(free_port)" --api-key "$KEY" \
  --model "$QWEN" --max-model-len 4096 --kv-cache-memory 256MiB \
  --enable-auto-tool-choice --tool-call-parser hermes >"$QLOG" 2>&1 &
PIDS+=($!)
wait_healthy "$PORT" "${PIDS[0]}" "$LOG"
wait_healthy "$QPORT" "${PIDS[1]}" "$QLOG"
export CANDELA_URL="http://127.0.0.1:$PORT" CANDELA_QWEN_URL="http://127.0.0.1:$QPORT" CANDELA_API_KEY="$KEY"
status=0
"$PY" -m pytest -q engine/server/tests/openai_client.py engine/server/tests/hostile.py \
  engine/server/tests/openai_structured.py || status=$?
if [ $status -ne 0 ]; then echo "--- server log"; tail -50 "$LOG"; echo "--- qwen server log"; tail -30 "$QLOG"; fi
exit $status
