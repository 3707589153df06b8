#!/usr/bin/env bash
# Runs every test of the repository on a fresh machine, installing what the tests
# need first (model, Python venv with the openai client, and the operator's
# control plane), all cached outside the repo under ~/.cache/candela.
#
#   scripts/test.sh            # everything
#   SKIP_OPERATOR=1 scripts/test.sh   # engine only (local iteration; CI never sets it)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
# No incremental caches: a full test run builds many test binaries and CI starts clean anyway.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
./scripts/setup.sh --test-deps >/dev/null
VENV="${CANDELA_CACHE:-$HOME/.cache/candela}/venv"
# Prometheus and promtool: `candela doctor`'s tests (cargo test below) and the e2e suites.
if ! command -v prometheus >/dev/null; then
  echo "installing Prometheus (Debian package prometheus; its service is not started)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
fi

echo "== cargo test (contract, engine, hub client against the local hub)"
cargo test --locked -p candela-contract -p candela-tls -p candela-core -p candela-gguf -p candela-model -p candela-hub -p candela-structured -p candela-tools -p candela 2>&1

echo "== CUDA kernels compile (nvcc from NVIDIA's PyPI wheels; no GPU needed)"
./scripts/check-cuda-kernels.sh

echo "== OpenAI client and hostile-input suites against a live candela serve"
cargo build --locked -p candela 2>&1
./scripts/api-tests.sh "$VENV/bin/python" "${CARGO_TARGET_DIR:-target}/debug/candela"

echo "== real Prometheus scraping candela sidecar under load"
CANDELA_BIN="${CARGO_TARGET_DIR:-target}/debug/candela" "$VENV/bin/python" -m pytest -q engine/server/tests/prometheus_e2e.py

echo "== TLS everywhere: HTTPS and gRPC over TLS, the sidecar's client-certificate /metrics under a real Prometheus, rotation under load"
CANDELA_BIN="${CARGO_TARGET_DIR:-target}/debug/candela" "$VENV/bin/python" -m pytest -q engine/server/tests/tls_e2e.py

echo "== container images: scripts/build-images.sh, then both images run read-only as non-root (podman)"
./scripts/image-tests.sh --profile "${IMAGE_PROFILE:-release}"

echo "== Helm chart, deploy/, rules and dashboards: helm, kubernetes-validate, CRD schemas, promtool, amtool, tsc"
./scripts/chart-tests.sh

echo "== deploy/ against a live stack: every dashboard, recording-rule, adapter and KEDA query returns data"
cargo build --locked -p candela-operator --bin crdgen 2>&1
CANDELA_BIN="${CARGO_TARGET_DIR:-target}/debug/candela" CANDELA_CRDGEN="${CARGO_TARGET_DIR:-target}/debug/crdgen" \
  "$VENV/bin/python" -m pytest -q engine/server/tests/deploy_e2e.py

if [ -z "${SKIP_OPERATOR:-}" ] && [ -x operator/test.sh ]; then
  echo "== operator"
  # CI has the machine to itself: let the (cached) control-plane Go build use both cores.
  GOFLAGS="${GOFLAGS:--p=2}" NICE="${NICE:-0}" operator/test.sh
fi
echo "== a real one-node Kubernetes (deploy/local/cluster.sh): the chart, the examples, monitoring, autoscaling and faults end to end"
./deploy/local/e2e.sh

echo "== all tests passed"
