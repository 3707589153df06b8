#!/usr/bin/env bash
# Runs every operator test: unit and snapshot tests, the CRD/RBAC drift check, the
# mock-apiserver scenarios, and the integration tests on a real control plane
# (etcd + kube-apiserver + kube-controller-manager built from operator/testenv/).
#
# Idempotent: the control-plane binaries are cached under ~/.cache/candela/k8s keyed by
# the wrapper modules' go.mod/go.sum, so only the first run pays the 10-20 minute Go build.
# Needs: cargo, go (only for a cold cache), openssl, bash, promtool (installed from
# Debian's `prometheus` package when missing and apt-get is usable) and helm (installed by
# scripts/chart-tests.sh install when missing).
#
# Usage: operator/test.sh [extra cargo test args...]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

for tool in cargo openssl; do
  command -v "$tool" >/dev/null || { echo "operator/test.sh: $tool is required" >&2; exit 1; }
done

if ! command -v promtool >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "operator/test.sh: installing promtool (Debian package prometheus)" >&2
    # The package's service is not started in containers without systemd.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  else
    echo "operator/test.sh: promtool is required (apt-get install prometheus)" >&2
    exit 1
  fi
fi

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
