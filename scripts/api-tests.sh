#!/usr/bin/env bash
# Starts `candela serve` on the default model (loopback, random port, API key on),
# runs the Python suites against it with the official `openai` client, stops it.
# Usage: scripts/api-tests.sh PYTHON CANDELA_BINARY
set -euo pipefail
PY="$1"; BIN="$2"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
GRPC_PORT=$(free_port)
KEY="sk-candela-ci-$RANDOM"
LOG=$(mktemp)
"$BIN" serve --host 127.0.0.1 --port "$PORT" --grpc-port "$GRPC_PORT" --api-key "$KEY" --max-model-len 2048 \
  --max-waiting 512 --kv-cache-memory 512MiB >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; then break; fi
  if ! kill -0 $PID 2>/dev/null; then echo "candela serve exited:"; cat "$LOG"; exit 1; fi
  sleep 0.1
done
export CANDELA_URL="http://127.0.0.1:$PORT" CANDELA_API_KEY="$KEY"
status=0
"$PY" -m pytest -q engine/server/tests/openai_client.py engine/server/tests/hostile.py || status=$?
if [ $status -ne 0 ]; then echo "--- server log"; tail -50 "$LOG"; fi
exit $status
