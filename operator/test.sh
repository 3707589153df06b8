#!/usr/bin/env bash
# Runs every operator test: unit and snapshot tests, the CRD/RBAC drift check, the
# mock-apiserver scenarios, the integration tests on a real control plane (etcd +
# kube-apiserver + kube-controller-manager built from operator/testenv/), and the
# autoscaling loops end to end (tests/alerts_e2e.rs: a real `candela serve` under
# `candela bench serve` load, Prometheus, Alertmanager and the operator binary).
#
# Idempotent: the control-plane binaries are cached under ~/.cache/candela/k8s keyed by
# the wrapper modules' go.mod/go.sum, so only the first run pays the 10-20 minute Go build.
# Needs: cargo, go (only for a cold cache), openssl, bash, Prometheus, promtool,
# Alertmanager and amtool (installed from Debian's `prometheus` and
# `prometheus-alertmanager` packages when missing and apt-get is usable), helm (installed
# by scripts/chart-tests.sh install when missing), the default model (scripts/setup.sh)
# and the candela binary (built here; CANDELA_BIN overrides).
#
# Usage: operator/test.sh [extra cargo test args...]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

for tool in cargo openssl; do
  command -v "$tool" >/dev/null || { echo "operator/test.sh: $tool is required" >&2; exit 1; }
done

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null \
  || ! command -v amtool >/dev/null \
  || ! { command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null; }; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "operator/test.sh: installing Prometheus and Alertmanager (Debian packages prometheus, prometheus-alertmanager)" >&2
    # The packages' services are not started in containers without systemd; the tests run
    # their own on loopback.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null; }
  else
    echo "operator/test.sh: Prometheus and Alertmanager are required (apt-get install prometheus prometheus-alertmanager)" >&2
    exit 1
  fi
fi

# The end-to-end autoscaling tests run a real engine on the default model.
scripts/setup.sh >/dev/null
if [ -z "${CANDELA_BIN:-}" ]; then
  cargo build -p candela >&2
  CANDELA_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/candela"
fi
export CANDELA_BIN

# helm for tests/helm_install.rs (the chart installed into the real apiserver).
if [ -z "${CANDELA_HELM:-}" ] && [ ! -x "${CANDELA_CACHE:-$HOME/.cache/candela}/helm/3.19.0/helm" ]; then
  echo "operator/test.sh: installing helm (scripts/chart-tests.sh install)" >&2
  scripts/chart-tests.sh install >&2
fi

# Be polite on shared 2-core machines: one Go package at a time, lowest priority.
bin_dir="$(GOFLAGS="${GOFLAGS:--p=1}" NICE="${NICE:-19}" operator/testenv/build.sh | tail -n 1)"
export CANDELA_K8S_BIN="$bin_dir"
echo "operator/test.sh: control plane binaries in $CANDELA_K8S_BIN" >&2

cargo test -p candela-operator "$@"
