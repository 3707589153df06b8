#!/usr/bin/env bash
# Starts `candela serve` on the default model (loopback, random port, API key on, a
# service-tier key file and a flex cap), a
# second one on the Qwen2.5 Q4_K_M GGUF with auto tool choice (Hermes parser) and a third
# on the default model serving LoRA adapters (made by scripts/make-lora-adapters.py, with
# runtime loading on), runs the Python suites against them with the official `openai`
# client, stops all three.
# Usage: scripts/api-tests.sh PYTHON CANDELA_BINARY
set -euo pipefail
PY="$1"; BIN="$2"
QWEN="${CANDELA_QWEN_GGUF:-$HOME/.cache/candela/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}"
[ -s "$QWEN" ] || { echo "api-tests: $QWEN is missing: run scripts/setup.sh --test-deps"; exit 1; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KEY="sk-candela-ci-$RANDOM"
FLEX_KEY="sk-candela-flex-$RANDOM"; DEFAULT_KEY="sk-candela-default-$RANDOM"
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
HF_DIR="$HOME/.cache/candela/models/SmolLM2-135M-Instruct-hf"
[ -s "$HF_DIR/config.json" ] || { echo "api-tests: $HF_DIR is missing: run scripts/setup.sh --test-deps"; exit 1; }
LORA_DIR=$(mktemp -d)
"$PY" scripts/make-lora-adapters.py --config "$HF_DIR/config.json" --out "$LORA_DIR" --names sql,chat,poem >/dev/null
LOG=$(mktemp); QLOG=$(mktemp); LLOG=$(mktemp); TIERS=$(mktemp)
printf '# key tier\n%s flex\n%s default\n' "$FLEX_KEY" "$DEFAULT_KEY" >"$TIERS"
PORT=$(free_port); QPORT=$(free_port); LPORT=$(free_port)
"$BIN" serve --host 127.0.0.1 --port "$PORT" --grpc-port "$(free_port)" --api-key "$KEY" \
  --api-key-tiers "$TIERS" --max-num-seqs-per-tier flex=1 \
  --max-model-len 2048 --max-waiting 512 --max-num-seqs 128 --kv-cache-memory 512MiB >"$LOG" 2>&1 &
PIDS+=($!)
"$BIN" serve --host 127.0.0.1 --port "$QPORT" --grpc-port "$(free_port)" --api-key "$KEY" \
  --model "$QWEN" --max-model-len 4096 --kv-cache-memory 256MiB \
  --enable-auto-tool-choice --tool-call-parser hermes >"$QLOG" 2>&1 &
PIDS+=($!)
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True "$BIN" serve --host 127.0.0.1 --port "$LPORT" \
  --grpc-port "$(free_port)" --api-key "$KEY" --max-model-len 1024 --kv-cache-memory 256MiB \
  --enable-lora --max-loras 1 --max-cpu-loras 2 --max-lora-rank 8 \
  --lora-modules sql="$LORA_DIR/sql" chat="$LORA_DIR/chat" >"$LLOG" 2>&1 &
PIDS+=($!)
wait_healthy "$PORT" "${PIDS[0]}" "$LOG"
wait_healthy "$QPORT" "${PIDS[1]}" "$QLOG"
wait_healthy "$LPORT" "${PIDS[2]}" "$LLOG"
export CANDELA_URL="http://127.0.0.1:$PORT" CANDELA_QWEN_URL="http://127.0.0.1:$QPORT" CANDELA_API_KEY="$KEY"
export CANDELA_LORA_URL="http://127.0.0.1:$LPORT" CANDELA_LORA_DIR="$LORA_DIR"
export CANDELA_FLEX_KEY="$FLEX_KEY" CANDELA_DEFAULT_KEY="$DEFAULT_KEY" CANDELA_FLEX_CAP=1
status=0
"$PY" -m pytest -q engine/server/tests/openai_client.py engine/server/tests/hostile.py \
  engine/server/tests/openai_structured.py engine/server/tests/openai_lora.py \
  engine/server/tests/openai_tiers.py || status=$?
if [ $status -ne 0 ]; then
  echo "--- server log"; tail -50 "$LOG"; echo "--- qwen server log"; tail -30 "$QLOG"
  echo "--- lora server log"; tail -30 "$LLOG"
fi
rm -rf "$LORA_DIR" "$TIERS"
exit $status
