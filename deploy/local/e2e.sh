#!/usr/bin/env bash
# The end-to-end suite on a real one-node cluster (deploy/local/e2e/test_cluster.py):
# brings the cluster up with deploy/local/cluster.sh, runs the suite with the official
# openai client from the test venv, and takes the cluster down again (also on failure).
# Prints the timelines and numbers each scenario measured, and the total time.
#
#   deploy/local/e2e.sh [pytest args...]      (CANDELA_KEEP_CLUSTER=1 leaves it running)
set -euo pipefail
cd "$(dirname "$0")/../.."
t0=$(date +%s)
VENV="${CANDELA_CACHE:-$HOME/.cache/candela}/venv"
scripts/setup.sh --test-deps >/dev/null
"$VENV/bin/python" -c "import yaml" 2>/dev/null || "$VENV/bin/pip" install --quiet "pyyaml>=6"
if [ -z "${CANDELA_BIN:-}" ]; then
  cargo build --locked -p candela >&2
  CANDELA_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/candela"
fi
export CANDELA_BIN
status=0
"$VENV/bin/python" -m pytest -x -s -q -p no:cacheprovider deploy/local/e2e/test_cluster.py "$@" || status=$?
echo "e2e: finished in $(( $(date +%s) - t0 )) s (status $status)"
exit $status
