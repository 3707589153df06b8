#!/usr/bin/env bash
# Candela's monitoring stack on this machine, without a cluster, everything on 127.0.0.1:
#   candela serve     OpenAI API  :8000, gRPC :50051
#   candela sidecar   /metrics    :9090 (bearer token; vllm: series + engine CPU/RSS + GPU gauges)
#   Prometheus                    :9091 (scrapes the sidecar; deploy/rules/candela.rules.yaml)
#   Alertmanager                  :9093 (route and receivers below)
#
#   deploy/local/stack.sh up        start (idempotent: a running stack is left alone)
#   deploy/local/stack.sh status    what runs, and where
#   deploy/local/stack.sh env       shell variables of the running stack (eval "$(... env)")
#   deploy/local/stack.sh down      stop everything this script started (by PID)
#
# Then load it (e.g. `candela bench serve --base-url http://127.0.0.1:8000 ...`), open
# Prometheus at http://127.0.0.1:9091 and try the dashboards' queries (substitute
# $namespace=local, $model_name=<served name>, $__rate_interval=1m), or import
# deploy/dashboards/*.json into a Grafana that has this Prometheus as a data source.
#
# Settings (environment): CANDELA_BIN (default: candela on PATH, else target/release or
# target/debug), CANDELA_MODEL (default: the model scripts/setup.sh fetches),
# CANDELA_SERVED_NAME (smollm2), CANDELA_SERVE_ARGS (extra `candela serve` flags),
# CANDELA_STACK_DIR (state: configs, logs, TSDB, PIDs; default /tmp/candela-stack),
# ports CANDELA_HTTP_PORT CANDELA_GRPC_PORT CANDELA_SIDECAR_PORT CANDELA_PROMETHEUS_PORT
# CANDELA_ALERTMANAGER_PORT, CANDELA_SCRAPE_INTERVAL (5s, the seed's),
# CANDELA_RULE_FILES (more rules files for Prometheus, space-separated, e.g. the output of
# `crdgen rules` for an InferenceDeployment in namespace `local` whose servedName is
# $CANDELA_SERVED_NAME: its scale-up alerts if it uses the alerts backend), and
# CANDELA_OPERATOR_WEBHOOK (e.g. http://127.0.0.1:8081/alertmanager: route the scale-up
# alerts (candela_autoscaling="scale-up") to a candela-operator running with
# --webhook-token, whose token is read from $CANDELA_STACK_DIR/webhook-token).
#
# Needs: prometheus and prometheus-alertmanager (Debian packages; their services need not run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${CANDELA_STACK_DIR:-/tmp/candela-stack}"
HTTP_PORT="${CANDELA_HTTP_PORT:-8000}"
GRPC_PORT="${CANDELA_GRPC_PORT:-50051}"
SIDECAR_PORT="${CANDELA_SIDECAR_PORT:-9090}"
PROM_PORT="${CANDELA_PROMETHEUS_PORT:-9091}"
AM_PORT="${CANDELA_ALERTMANAGER_PORT:-9093}"
SERVED_NAME="${CANDELA_SERVED_NAME:-smollm2}"
SCRAPE_INTERVAL="${CANDELA_SCRAPE_INTERVAL:-5s}"
NAMESPACE=local

die() { echo "stack.sh: $*" >&2; exit 1; }

candela_bin() {
  if [ -n "${CANDELA_BIN:-}" ]; then echo "$CANDELA_BIN"; return; fi
  if command -v candela >/dev/null; then command -v candela; return; fi
  for b in "$ROOT/target/release/candela" "$ROOT/target/debug/candela"; do
    [ -x "$b" ] && { echo "$b"; return; }
  done
  die "no candela binary: build it (cargo build --release -p candela) or set CANDELA_BIN"
}

alertmanager_bin() {
  for b in alertmanager prometheus-alertmanager; do
    command -v "$b" >/dev/null && { command -v "$b"; return; }
  done
  die "Alertmanager is required (apt-get install prometheus-alertmanager)"
}

running() { [ -s "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

start() {  # name, command...
  local name="$1"; shift
  if running "$name"; then echo "  $name already running (pid $(cat "$DIR/$name.pid"))"; return; fi
  "$@" >>"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/$name.pid"
  echo "  $name started (pid $!, log $DIR/$name.log)"
}

wait_http() {  # url, what, [curl args]
  local url="$1" what="$2"; shift 2
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$@" "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  die "$what did not answer at $url (see the logs in $DIR)"
}

write_configs() {
  [ -s "$DIR/metrics-token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/metrics-token"
  [ -s "$DIR/webhook-token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/webhook-token"
  chmod 600 "$DIR/metrics-token" "$DIR/webhook-token"
  # Seed 000's scrape config (job 'vllm', /metrics), pointed at the sidecar with its token.
  # namespace/pod are what a ServiceMonitor adds in Kubernetes: the dashboards' variables
  # and the prometheus-adapter rules select by them.
  cat >"$DIR/prometheus.yml" <<EOF
global:
  scrape_interval: $SCRAPE_INTERVAL
  evaluation_interval: $SCRAPE_INTERVAL
rule_files:
  - $ROOT/deploy/rules/candela.rules.yaml
$(for f in ${CANDELA_RULE_FILES:-}; do echo "  - $(cd "$(dirname "$f")" && pwd)/$(basename "$f")"; done)
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:$AM_PORT']
scrape_configs:
  - job_name: 'vllm'
    scrape_interval: $SCRAPE_INTERVAL
    metrics_path: '/metrics'
    authorization:
      type: Bearer
      credentials_file: $DIR/metrics-token
    static_configs:
      - targets: ['127.0.0.1:$SIDECAR_PORT']
        labels:
          namespace: $NAMESPACE
          pod: candela-$NAMESPACE-0
EOF
  # The routes of deploy/alertmanager/alertmanager.yml with a receiver that only records
  # (no mail from a laptop): see them at http://127.0.0.1:$AM_PORT.
  {
    cat <<EOF
route:
  receiver: local
  group_by: [alertname, namespace, model_name]
  group_wait: 10s
  group_interval: 1m
  repeat_interval: 1h
EOF
    if [ -n "${CANDELA_OPERATOR_WEBHOOK:-}" ]; then
      cat <<EOF
  routes:
    - receiver: candela-operator
      matchers: ['candela_autoscaling="scale-up"']
      group_by: [namespace, inference_deployment]
      group_wait: 10s
      group_interval: 1m
      repeat_interval: 5m
EOF
    fi
    cat <<EOF
receivers:
  - name: local
EOF
    if [ -n "${CANDELA_OPERATOR_WEBHOOK:-}" ]; then
      cat <<EOF
  - name: candela-operator
    webhook_configs:
      - url: $CANDELA_OPERATOR_WEBHOOK
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: $DIR/webhook-token
EOF
    fi
  } >"$DIR/alertmanager.yml"
  promtool check config "$DIR/prometheus.yml" >/dev/null
  amtool check-config "$DIR/alertmanager.yml" >/dev/null
}

up() {
  command -v prometheus >/dev/null || die "Prometheus is required (apt-get install prometheus)"
  command -v curl >/dev/null || die "curl is required"
  local bin am
  bin="$(candela_bin)"
  am="$(alertmanager_bin)"
  mkdir -p "$DIR"
  write_configs
  echo "stack.sh: state in $DIR"
  local model_args=()
  [ -n "${CANDELA_MODEL:-}" ] && model_args=(--model "$CANDELA_MODEL")
  # shellcheck disable=SC2086 # CANDELA_SERVE_ARGS is a list of flags
  start engine "$bin" serve "${model_args[@]}" --host 127.0.0.1 --port "$HTTP_PORT" \
    --grpc-port "$GRPC_PORT" --served-model-name "$SERVED_NAME" ${CANDELA_SERVE_ARGS:-}
  wait_http "http://127.0.0.1:$HTTP_PORT/health" "candela serve"
  # --engine-pid: on a machine with several engines the sidecar must not guess which one
  # its CPU/RSS series describe.
  start sidecar "$bin" sidecar --engine-grpc "http://127.0.0.1:$GRPC_PORT" \
    --listen "127.0.0.1:$SIDECAR_PORT" --metrics-token "$(cat "$DIR/metrics-token")" \
    --engine-pid "$(cat "$DIR/engine.pid")"
  wait_http "http://127.0.0.1:$SIDECAR_PORT/metrics" "candela sidecar" \
    -H "Authorization: Bearer $(cat "$DIR/metrics-token")"
  start alertmanager "$am" --config.file="$DIR/alertmanager.yml" --storage.path="$DIR/alertmanager" \
    --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address=
  wait_http "http://127.0.0.1:$AM_PORT/-/ready" "Alertmanager"
  start prometheus prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/prometheus" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --web.enable-lifecycle
  wait_http "http://127.0.0.1:$PROM_PORT/-/ready" "Prometheus"
  status
}

status() {
  local name
  for name in engine sidecar alertmanager prometheus; do
    if running "$name"; then echo "  $name: running (pid $(cat "$DIR/$name.pid"))"; else echo "  $name: stopped"; fi
  done
  cat <<EOF
  OpenAI API    http://127.0.0.1:$HTTP_PORT/v1  (model "$SERVED_NAME")
  metrics       http://127.0.0.1:$SIDECAR_PORT/metrics  (Authorization: Bearer \$(cat $DIR/metrics-token))
  Prometheus    http://127.0.0.1:$PROM_PORT  (labels namespace="$NAMESPACE", model_name="$SERVED_NAME")
  Alertmanager  http://127.0.0.1:$AM_PORT
EOF
}

env_vars() {
  cat <<EOF
CANDELA_STACK_DIR=$DIR
CANDELA_HTTP_URL=http://127.0.0.1:$HTTP_PORT
CANDELA_METRICS_URL=http://127.0.0.1:$SIDECAR_PORT/metrics
CANDELA_METRICS_TOKEN=$(cat "$DIR/metrics-token" 2>/dev/null)
CANDELA_PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT
CANDELA_ALERTMANAGER_URL=http://127.0.0.1:$AM_PORT
CANDELA_NAMESPACE=$NAMESPACE
CANDELA_SERVED_NAME=$SERVED_NAME
EOF
}

down() {
  local name pid
  for name in prometheus alertmanager sidecar engine; do
    if running "$name"; then
      pid="$(cat "$DIR/$name.pid")"
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      echo "  $name stopped"
    fi
    rm -f "$DIR/$name.pid"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_vars ;;
  *) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
