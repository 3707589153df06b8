#!/usr/bin/env python3
"""Checks behind scripts/chart-tests.sh (run with the venv of scripts/setup.sh --test-deps).

Subcommands:
  validate [--kube-version V] [--crds DIR]... [--expect-kind K] FILE...
      Every object of the YAML streams: built-in kinds through the `kubernetes-validate
      -k V --strict` CLI (each must be reported as passed), custom resources against the
      openAPIV3Schema of their CRD from the --crds directories, made strict (unknown
      fields are errors, as `kubectl apply --validate=strict` makes them). A kind that is
      neither is an error.
  chart-rbac RENDERED RBAC_YAML   the chart's ClusterRole/Role rules equal the operator's
  rules-of RENDERED OUTDIR        writes each PrometheusRule's .spec as a rules file
  expect-kinds RENDERED K[:NAME]... each kind (ending in NAME) is in the stream
  chart-files RENDERED FILES_DIR  ConfigMaps carry files/ byte for byte
  notes-snippet NOTES_CM OUT      the Alertmanager snippet of the rendered NOTES.txt (in a
      ConfigMap, see chart-tests.sh) as a full Alertmanager config
  webhook-wiring RENDERED AM_CONFIG [--disabled]  the Alertmanager webhook's port is the
      same in the container flag, the container port, the Service, the NetworkPolicy and
      the NOTES' receiver URL, and differs from the metrics port (--disabled: no webhook
      port is exposed anywhere, the flag still is)
  tls-wiring RENDERED [AM_CONFIG] [--disabled]  HTTPS on the operator: --ssl-* flags point
      into the mounted Secret, probes, Service and ServiceMonitor say https with the CA,
      server name and client certificate Secrets, the NOTES' receiver uses https with
      ca_file from a Secret rendered in Alertmanager's namespace; certificates the chart
      generates chain to its CA (openssl verify) and name the Service (--disabled: plain
      HTTP everywhere, no TLS flag)
  ha-values VALUES CHART_VALUES RULES OUT  deploy/prometheus/ha-values.yaml (kube-prometheus-stack
      values) says what docs/security.md promises: 2+ Prometheus replicas one per node with a
      replica external label and external labels, a Thanos sidecar on object storage, 2+
      Alertmanagers, selectors that pick the Candela chart's monitoring.release label; no
      Candela rule names an external label; OUT is a Prometheus config with that global
      section and the rules, for promtool check config
  prometheusrule-spec FILE OUT    .spec of a PrometheusRule file
  yaml-json FILE                  canonical JSON of a YAML file (for comparisons)
  merge-values BASE OVERLAY OUT   values.yaml overlaid with a values file, as Helm merges
  alert-tests-cover RULES TEST... every alert has promtool tests: firing after its `for`,
      silent before it, silent below the threshold
  dashboards-ts OUT [--break] JSON_OR_YAML...  a TypeScript file asserting every dashboard
      `satisfies Dashboard` (dashboards inside rendered ConfigMaps and GrafanaDashboards
      too); --break writes one with a wrongly typed field, which tsc must reject
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys

import jsonschema
import yaml


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def fail(msg):
    print(f"chart_checks: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


# ----------------------------------------------------------------------------- CRD schemas

META = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

COPIED = ("type", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
          "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "required",
          "minProperties", "maxProperties", "multipleOf")


def strict_schema(s, stats):
    """OpenAPI v3 (structural, Kubernetes flavour) -> JSON Schema, unknown fields rejected."""
    if not isinstance(s, dict):
        return s
    if s.get("x-kubernetes-int-or-string"):
        out = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    else:
        out = {k: s[k] for k in COPIED if k in s}
    if "x-kubernetes-validations" in s:
        stats["cel"] += len(s["x-kubernetes-validations"])
    if "properties" in s:
        out["properties"] = {k: strict_schema(v, stats) for k, v in s["properties"].items()}
    if isinstance(s.get("additionalProperties"), dict):
        out["additionalProperties"] = strict_schema(s["additionalProperties"], stats)
    elif s.get("type") == "object" and not s.get("x-kubernetes-preserve-unknown-fields") \
            and "additionalProperties" not in s:
        # Structural schemas prune unknown fields; strict field validation rejects them.
        out["additionalProperties"] = False
    if "items" in s:
        out["items"] = strict_schema(s["items"], stats)
    for key in ("allOf", "anyOf", "oneOf"):
        if key in s:
            out[key] = [strict_schema(x, stats) for x in s[key]]
    if "not" in s:
        out["not"] = strict_schema(s["not"], stats)
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def crd_schemas(dirs, stats):
    """{(apiVersion, kind): JSON schema of the whole object}"""
    schemas = {}
    for d in dirs:
        for path in sorted(pathlib.Path(d).glob("*.yaml")):
            for crd in load_all(path):
                if crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for v in crd["spec"]["versions"]:
                    root = strict_schema(v["schema"]["openAPIV3Schema"], stats)
                    root.setdefault("properties", {})
                    root["properties"].update({
                        "apiVersion": {"const": f"{group}/{v['name']}"},
                        "kind": {"const": kind},
                        "metadata": META,
                    })
                    root["required"] = sorted(set(root.get("required", [])) | {"apiVersion", "kind", "metadata"})
                    root["additionalProperties"] = False
                    schemas[(f"{group}/{v['name']}", kind)] = root
    return schemas


def cmd_validate(args):
    stats = {"cel": 0}
    schemas = crd_schemas(args.crds, stats)
    builtin, custom = [], []
    for path in args.files:
        for doc in load_all(path):
            if args.expect_kind and doc.get("kind") != args.expect_kind:
                fail(f"{path}: expected only {args.expect_kind}, found {doc.get('kind')}")
            key = (doc.get("apiVersion"), doc.get("kind"))
            (custom if key in schemas else builtin).append((path, doc))
    # Built-in kinds: the kubernetes-validate CLI, strict.
    if builtin:
        tmp = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"candela-kv-{os.getpid()}.yaml"
        tmp.write_text(yaml.safe_dump_all([d for _, d in builtin], sort_keys=False))
        exe = pathlib.Path(sys.executable).with_name("kubernetes-validate")
        proc = subprocess.run([str(exe), "-k", args.kube_version, "--strict", str(tmp)],
                              capture_output=True, text=True)
        tmp.unlink()
        out = proc.stdout + proc.stderr
        passed = len(re.findall(r"^INFO .* passed for resource", out, re.M))
        if proc.returncode != 0 or passed != len(builtin):
            fail(f"kubernetes-validate --strict: {passed}/{len(builtin)} passed\n{out}")
    # Custom resources: their CRD's schema.
    for path, doc in custom:
        validator = jsonschema.Draft202012Validator(schemas[(doc["apiVersion"], doc["kind"])])
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            lines = [f"  {'.'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}" for e in errors[:10]]
            fail(f"{path}: {doc['kind']}/{doc['metadata'].get('name')} does not match its CRD:\n" + "\n".join(lines))
    kinds = sorted({d["kind"] for _, d in builtin + custom})
    print(f"  validated {len(builtin)} built-in objects (kubernetes-validate -k {args.kube_version} --strict) "
          f"and {len(custom)} custom resources (their CRD schemas, strict; CEL rules are left to a real "
          f"apiserver): {', '.join(kinds)}")


# ----------------------------------------------------------------------------- chart checks

def rules_of_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def cmd_chart_rbac(args):
    rendered = load_all(args.rendered)
    operator = load_all(args.rbac)
    want_cluster = next(d for d in operator if d["kind"] == "ClusterRole")["rules"]
    want_role = next(d for d in operator if d["kind"] == "Role")["rules"]
    roles = [d for d in rendered if d.get("kind") == "ClusterRole"]
    if not roles:
        return  # rbac.create=false
    if roles[0]["rules"] != want_cluster:
        fail("the chart's ClusterRole differs from operator/rbac/rbac.yaml")
    role = next(d for d in rendered if d.get("kind") == "Role")
    if role["rules"] != want_role:
        fail("the chart's leader-election Role differs from operator/rbac/rbac.yaml")
    print(f"  ClusterRole ({len(want_cluster)} rules) and Role ({len(want_role)}) equal operator/rbac/rbac.yaml")


def cmd_rules_of(args):
    out = pathlib.Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for d in load_all(args.rendered):
        if d.get("kind") == "PrometheusRule":
            (out / f"{d['metadata'].get('namespace', 'x')}-{d['metadata']['name']}.yaml").write_text(
                yaml.safe_dump(d["spec"], sort_keys=False))
            n += 1
    print(f"  {n} PrometheusRule specs extracted")


def cmd_expect_kinds(args):
    docs = load_all(args.rendered)
    for want in args.kinds:
        kind, _, name = want.partition(":")
        if not any(d.get("kind") == kind and (not name or d["metadata"]["name"].endswith(name)) for d in docs):
            fail(f"{args.rendered}: no {want}")


def cmd_chart_files(args):
    files = pathlib.Path(args.files)
    docs = load_all(args.rendered)
    dash = next(d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"].endswith("-dashboards"))
    want = {p.name: p.read_text() for p in (files / "dashboards").glob("*.json")}
    if dash["data"] != want:
        fail("the dashboards ConfigMap does not carry files/dashboards/*.json byte for byte")
    adapter = next(d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"].endswith("-prometheus-adapter"))
    if adapter["data"]["config.yaml"].strip() != (files / "prometheus-adapter-rules.yaml").read_text().strip():
        fail("the prometheus-adapter ConfigMap does not carry files/prometheus-adapter-rules.yaml")
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    names = sorted(r["name"]["as"] for r in rules)
    if names != ["candela_kv_cache_usage_perc", "candela_num_requests_waiting"]:
        fail(f"adapter rules expose {names}")
    print(f"  dashboards ConfigMap carries {sorted(want)}; adapter ConfigMap exposes {names}")


def cmd_notes_snippet(args):
    (doc,) = load_all(args.install_out)
    lines = doc["data"]["notes"].splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "route:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = []
    for line in lines[start:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line[indent:])
    snippet = yaml.safe_load("\n".join(block))
    config = {
        "route": {"receiver": "default", "routes": snippet["route"]["routes"]},
        "receivers": [{"name": "default"}] + snippet["receivers"],
    }
    url = snippet["receivers"][0]["webhook_configs"][0]["url"]
    if not re.match(r"^https?://[a-z0-9-]+\.[a-z0-9-]+\.svc:\d+/alertmanager$", url):
        fail(f"webhook URL {url!r}")
    open(args.out, "w").write(yaml.safe_dump(config, sort_keys=False))
    print(f"  NOTES route/receiver -> {url}")


def cmd_webhook_wiring(args):
    docs = load_all(args.rendered)
    kind = lambda k: next(d for d in docs if d.get("kind") == k)
    container = kind("Deployment")["spec"]["template"]["spec"]["containers"][0]
    flags = dict(a.split("=", 1) for a in container["args"] if a.startswith("--") and "=" in a)
    listen = int(flags["--webhook-listen"].rsplit(":", 1)[1])
    metrics = int(flags["--http-addr"].rsplit(":", 1)[1])
    if listen == metrics:
        fail(f"--webhook-listen and --http-addr share port {listen}")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = {p["name"]: p for p in kind("Service")["spec"]["ports"]}
    policy = kind("NetworkPolicy")["spec"]["ingress"]
    policy_ports = [p["port"] for rule in policy for p in rule["ports"]]
    if args.disabled:
        if "webhook" in ports or "webhook" in service or "webhook" in policy_ports:
            fail(f"the webhook port is exposed while alertsWebhook is off: {ports} {list(service)} {policy_ports}")
        print(f"  webhook off: only --webhook-listen=:{listen} (answers 503), no port exposed")
        return
    if ports.get("webhook") != listen:
        fail(f"container port webhook {ports.get('webhook')} != --webhook-listen {listen}")
    svc = service.get("webhook") or fail("the Service has no webhook port")
    if svc["targetPort"] != "webhook":
        fail(f"Service webhook targetPort {svc['targetPort']}")
    rule = next((r for r in policy if any(p["port"] == "webhook" for p in r["ports"])), None) \
        or fail("the NetworkPolicy does not open the webhook port")
    allowed = rule["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    if any(p["port"] == "webhook" for r in policy if r is not rule for p in r["ports"]):
        fail("the webhook port is opened twice")
    if any(p["port"] == "http" for p in rule["ports"]):
        fail("the webhook rule also opens the metrics port")
    config = yaml.safe_load(open(args.am_config))
    url = next(r for r in config["receivers"] if r["name"] == "candela-operator")["webhook_configs"][0]["url"]
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    if int(host_port.rsplit(":", 1)[1]) != svc["port"]:
        fail(f"the NOTES' receiver URL {url} does not use the Service's webhook port {svc['port']}")
    if not host_port.startswith(kind("Service")["metadata"]["name"] + "."):
        fail(f"the NOTES' receiver URL {url} does not name the Service")
    route = config["route"]["routes"][0]
    if route.get("matchers") != ['candela_autoscaling="scale-up"'] or \
            route.get("group_by") != ["namespace", "inference_deployment"]:
        fail(f"the NOTES' route must send the scale-up alerts grouped per InferenceDeployment: {route}")
    if not config["receivers"][1]["webhook_configs"][0].get("send_resolved"):
        fail("send_resolved must be on (the resolved notification starts the scale-down cooldown)")
    print(f"  webhook: --webhook-listen :{listen}, Service port {svc['port']}, NetworkPolicy from {allowed}, NOTES -> {url}")


def cmd_tls_wiring(args):
    docs = load_all(args.rendered)
    kind = lambda k: next(d for d in docs if d.get("kind") == k)
    deployment = kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    flags = dict(a.split("=", 1) for a in container["args"] if a.startswith("--ssl-"))
    probes = [container[p]["httpGet"].get("scheme", "HTTP") for p in ("livenessProbe", "readinessProbe")]
    service = kind("Service")["spec"]["ports"]
    monitors = [d for d in docs if d.get("kind") == "ServiceMonitor"]
    if args.disabled:
        if flags or set(probes) != {"HTTP"} or any(p["appProtocol"] != "http" for p in service) \
                or any(e["scheme"] != "http" for m in monitors for e in m["spec"]["endpoints"]):
            fail(f"TLS is off but something speaks https: {flags} {probes} {service}")
        print("  tls off: plain HTTP in flags, probes, Service and ServiceMonitor")
        return
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    if "subPath" in mount:
        fail("the TLS Secret is mounted with subPath: rotated files would never reach the pod")
    secret_name = volume["secret"]["secretName"]
    # The files belong to root: without "other" read the pod's fsGroup must own them (a
    # real kubelet found this: the operator could not read its key).
    mode = volume["secret"].get("defaultMode", 0o644)
    if not mode & 0o004 and not (mode & 0o040 and pod.get("securityContext", {}).get("fsGroup") is not None):
        fail(f"the TLS Secret's files (mode {mode:o}) are unreadable for the operator's user: set the pod's fsGroup")
    for flag, key in (("--ssl-certfile", "tls.crt"), ("--ssl-keyfile", "tls.key")):
        if flags.get(flag) != f"{mount['mountPath']}/{key}":
            fail(f"{flag}={flags.get(flag)} is not {key} of the mounted Secret")
    client_auth = "--ssl-ca-certs" in flags
    if client_auth and (flags["--ssl-ca-certs"] != f"{mount['mountPath']}/ca.crt" or flags.get("--ssl-cert-reqs") != "1"):
        fail(f"client certificates must be --ssl-ca-certs=<mount>/ca.crt --ssl-cert-reqs=1 (probes stay open): {flags}")
    if set(probes) != {"HTTPS"}:
        fail(f"probes must use HTTPS: {probes}")
    if any(p["appProtocol"] != "https" for p in service):
        fail(f"Service ports must say https: {service}")
    svc = kind("Service")["metadata"]
    server_name = f"{svc['name']}.{svc['namespace']}.svc"
    secrets = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Secret" and d["metadata"]["namespace"] == svc["namespace"]}
    for m in monitors:
        (endpoint,) = m["spec"]["endpoints"]
        tls = endpoint.get("tlsConfig") or fail("the ServiceMonitor has no tlsConfig")
        if endpoint["scheme"] != "https" or tls["serverName"] != server_name \
                or tls["ca"]["secret"] != {"name": secret_name, "key": "ca.crt"}:
            fail(f"ServiceMonitor endpoint {endpoint}")
        if client_auth:
            client = tls["cert"]["secret"]["name"]
            if tls["keySecret"] != {"name": client, "key": "tls.key"} or tls["cert"]["secret"]["key"] != "tls.crt":
                fail(f"ServiceMonitor client certificate {tls}")
    # Certificates the chart generated: they chain to its CA and name the Service.
    if secret_name in secrets:
        import base64, tempfile
        tmp = pathlib.Path(tempfile.mkdtemp())
        def pem(name, key):
            path = tmp / f"{name}-{key}"
            path.write_bytes(base64.b64decode(secrets[name]["data"][key]))
            return str(path)
        ca = pem(secret_name, "ca.crt")
        leaves = [pem(secret_name, "tls.crt")]
        if client_auth:
            leaves.append(pem(tls["cert"]["secret"]["name"], "tls.crt"))
        subprocess.run(["openssl", "verify", "-CAfile", ca, *leaves], check=True, capture_output=True)
        sans = subprocess.run(["openssl", "x509", "-in", leaves[0], "-noout", "-ext", "subjectAltName"],
                              check=True, capture_output=True, text=True).stdout
        if f"DNS:{server_name}" not in sans:
            fail(f"the generated certificate does not name {server_name}: {sans}")
        print(f"  generated certificates verify against the chart's CA; the server's names {server_name}")
    if args.am_config:
        config = yaml.safe_load(open(args.am_config))
        (hook,) = next(r for r in config["receivers"] if r["name"] == "candela-operator")["webhook_configs"]
        if not hook["url"].startswith(f"https://{server_name}:"):
            fail(f"the NOTES' receiver URL {hook['url']} is not https://{server_name}")
        tls_config = hook["http_config"].get("tls_config") or fail("the NOTES' receiver has no tls_config")
        ca_secret = tls_config["ca_file"].split("/etc/alertmanager/secrets/", 1)[1].split("/")[0]
        if tls_config.get("server_name") != server_name:
            fail(f"tls_config.server_name {tls_config.get('server_name')} != {server_name}")
        am_ns = [d["metadata"]["namespace"] for d in docs if d.get("kind") == "Secret" and d["metadata"]["name"] == ca_secret]
        if secret_name in secrets and not am_ns:
            fail(f"the NOTES' ca_file names Secret {ca_secret}, which the chart does not render")
        print(f"  NOTES receiver {hook['url']} verifies with ca.crt of {ca_secret} (rendered in {am_ns or 'none: existing Secret'})")
    print(f"  tls on: --ssl-* from Secret {secret_name}, client certificates {'on' if client_auth else 'off'}, probes/Service/ServiceMonitor https")


def cmd_ha_values(args):
    values = yaml.safe_load(open(args.values))
    spec = values["prometheus"]["prometheusSpec"]
    am = values["alertmanager"]["alertmanagerSpec"]
    release = yaml.safe_load(open(args.chart_values))["monitoring"]["release"]
    replica_label = spec.get("replicaExternalLabelName")
    external = spec.get("externalLabels") or {}
    problems = []
    if spec.get("replicas", 1) < 2:
        problems.append("prometheus replicas < 2")
    if spec.get("podAntiAffinity") != "hard":
        problems.append("prometheus replicas may share a node (podAntiAffinity is not hard)")
    if not replica_label or not external or replica_label in external:
        problems.append(f"external labels {external} and replica label {replica_label!r}")
    if not spec.get("thanos", {}).get("objectStorageConfig", {}).get("existingSecret", {}).get("name"):
        problems.append("no Thanos sidecar with object storage")
    if am.get("replicas", 1) < 2:
        problems.append("alertmanager replicas < 2")
    for sel in ("serviceMonitorSelector", "ruleSelector"):
        if spec.get(f"{sel}NilUsesHelmValues", True) or spec.get(sel, {}).get("matchLabels") != {"release": release}:
            problems.append(f"{sel} does not select release={release} (the Candela chart's monitoring.release)")
    rules = yaml.safe_load(open(args.rules))
    names = set(external) | {replica_label}
    for group in rules["groups"]:
        for rule in group["rules"]:
            used = [n for n in names if re.search(rf"\b{re.escape(n)}\b", rule["expr"])]
            if used:
                problems.append(f"rule {rule.get('alert') or rule.get('record')} uses external labels {used}")
    if problems:
        fail("deploy/prometheus/ha-values.yaml: " + "; ".join(problems))
    config = {
        "global": {"scrape_interval": spec["scrapeInterval"], "evaluation_interval": spec["evaluationInterval"],
                   "external_labels": {**external, replica_label: "prometheus-0"}},
        "rule_files": [os.path.abspath(args.rules)],
    }
    open(args.out, "w").write(yaml.safe_dump(config, sort_keys=False))
    print(f"  {spec['replicas']} Prometheus replicas (one per node, {replica_label}), external labels {external}, "
          f"Thanos bucket {spec['thanos']['objectStorageConfig']['existingSecret']['name']}, "
          f"{am['replicas']} Alertmanagers, selecting release={release}")


def cmd_prometheusrule_spec(args):
    (doc,) = load_all(args.file)
    assert doc["kind"] == "PrometheusRule"
    open(args.out, "w").write(yaml.safe_dump(doc["spec"], sort_keys=False))


def merged(base, overlay):
    out = dict(base)
    for k, v in (overlay or {}).items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def cmd_merge_values(args):
    """values.yaml overlaid with a values file, as Helm merges them (maps deep, lists replaced)."""
    base = yaml.safe_load(open(args.base))
    overlay = yaml.safe_load(open(args.overlay))
    open(args.out, "w").write(yaml.safe_dump(merged(base, overlay), sort_keys=False))


def cmd_yaml_json(args):
    print(json.dumps(yaml.safe_load(open(args.file)), sort_keys=True))


def duration_s(text):
    total = 0
    for value, unit in re.findall(r"(\d+)(ms|s|m|h|d)", text):
        total += int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return total


def cmd_alert_tests_cover(args):
    rules = yaml.safe_load(open(args.rules))
    alerts = {r["alert"]: duration_s(r.get("for", "0s"))
              for g in rules["groups"] for r in g["rules"] if "alert" in r}
    seen = {a: {"fires": False, "pending": False, "below": False} for a in alerts}
    for path in args.tests:
        tests = yaml.safe_load(open(path))
        for t in tests["tests"]:
            kind = t.get("name", "").split(":", 1)[0]
            cases = t.get("alert_rule_test", [])
            for case in cases:
                name = case["alertname"]
                if name not in alerts:
                    fail(f"{path}: test for unknown alert {name}")
                at, hold = duration_s(case["eval_time"]), alerts[name]
                if kind == "above" and case.get("exp_alerts") and at >= hold:
                    seen[name]["fires"] = True
                    # Pending: silent at an earlier time, less than `for` before it fires.
                    if any(c["alertname"] == name and not c.get("exp_alerts")
                           and 0 < at - duration_s(c["eval_time"]) <= hold for c in cases):
                        seen[name]["pending"] = True
                elif kind == "below" and not case.get("exp_alerts") and at > hold:
                    seen[name]["below"] = True
    missing = [f"{a}: {k}" for a, v in seen.items() for k, ok in v.items() if not ok]
    if missing:
        fail("alerts without the three promtool tests (fires / pending before `for` / below threshold): "
             + ", ".join(missing))
    print(f"  {len(alerts)} alerts, each tested firing after its `for`, silent before it and silent below its threshold")


# ----------------------------------------------------------------------------- dashboards

def dashboards_in(path):
    if path.endswith(".json"):
        return [(os.path.basename(path), json.load(open(path)))]
    found = []
    for d in load_all(path):
        if d.get("kind") == "ConfigMap":
            for key, value in (d.get("data") or {}).items():
                parsed = json.loads(value) if key.endswith(".json") else None
                # The other JSON ConfigMap children are LoRA adapter lists ({"adapters": [...]}).
                if parsed is not None and set(parsed) != {"adapters"}:
                    found.append((f"{d['metadata']['name']}/{key}", parsed))
        elif d.get("kind") == "GrafanaDashboard":
            found.append((d["metadata"]["name"], json.loads(d["spec"]["json"])))
    return found


# Fields whose TypeScript type is a string enum: a JSON string literal does not satisfy a
# string enum in TypeScript, so these values are written as the enum's members (an unknown
# value is an error here, as it would be for the type).
STRING_ENUMS = {("thresholds", "mode"): ("ThresholdsMode", {"absolute": "Absolute", "percentage": "Percentage"})}


def typescript_literal(dashboard):
    marks = {}

    def walk(value, parent=None):
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                enum = STRING_ENUMS.get((parent, k))
                if enum and isinstance(v, str):
                    if v not in enum[1]:
                        fail(f"{parent}.{k} = {v!r} is not a {enum[0]}")
                    mark = f"@@enum{len(marks)}@@"
                    marks[mark] = f"{enum[0]}.{enum[1][v]}"
                    out[k] = mark
                else:
                    out[k] = walk(v, k)
            return out
        if isinstance(value, list):
            return [walk(v, parent) for v in value]
        return value

    text = json.dumps(walk(dashboard), indent=2)
    for mark, member in marks.items():
        text = text.replace(json.dumps(mark), member)
    return text


def cmd_dashboards_ts(args):
    dashboards = [x for p in args.inputs for x in dashboards_in(p)]
    if not dashboards:
        fail("no dashboards found")
    if args.brk:
        name, d = dashboards[0]
        d["panels"][0]["gridPos"]["w"] = "twelve"  # a string where Grafana wants a number
        dashboards = [(name + " (broken on purpose)", d)]
    body = ["import { ThresholdsMode, type Dashboard } from '@grafana/schema';", ""]
    for i, (name, d) in enumerate(dashboards):
        body.append(f"// {name}")
        body.append(f"export const dashboard{i} = ({typescript_literal(d)}) satisfies Dashboard;")
        body.append("")
    open(args.out, "w").write("\n".join(body))
    print(f"  {len(dashboards)} dashboards written for tsc: {', '.join(n for n, _ in dashboards)}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate")
    v.add_argument("--kube-version", default="1.33.0")
    v.add_argument("--crds", action="append", default=[])
    v.add_argument("--expect-kind")
    v.add_argument("files", nargs="+")
    s = sub.add_parser("chart-rbac"); s.add_argument("rendered"); s.add_argument("rbac")
    s = sub.add_parser("rules-of"); s.add_argument("rendered"); s.add_argument("outdir")
    s = sub.add_parser("expect-kinds"); s.add_argument("rendered"); s.add_argument("kinds", nargs="+")
    s = sub.add_parser("chart-files"); s.add_argument("rendered"); s.add_argument("files")
    s = sub.add_parser("notes-snippet"); s.add_argument("install_out"); s.add_argument("out")
    s = sub.add_parser("webhook-wiring"); s.add_argument("rendered"); s.add_argument("am_config", nargs="?")
    s.add_argument("--disabled", action="store_true")
    s = sub.add_parser("tls-wiring"); s.add_argument("rendered"); s.add_argument("am_config", nargs="?")
    s.add_argument("--disabled", action="store_true")
    s = sub.add_parser("ha-values"); s.add_argument("values"); s.add_argument("chart_values")
    s.add_argument("rules"); s.add_argument("out")
    s = sub.add_parser("prometheusrule-spec"); s.add_argument("file"); s.add_argument("out")
    s = sub.add_parser("yaml-json"); s.add_argument("file")
    s = sub.add_parser("merge-values"); s.add_argument("base"); s.add_argument("overlay"); s.add_argument("out")
    s = sub.add_parser("alert-tests-cover"); s.add_argument("rules"); s.add_argument("tests", nargs="+")
    s = sub.add_parser("dashboards-ts"); s.add_argument("out")
    s.add_argument("--break", dest="brk", action="store_true"); s.add_argument("inputs", nargs="+")
    args = p.parse_args()
    globals()["cmd_" + args.cmd.replace("-", "_")](args)


if __name__ == "__main__":
    main()
