"""The whole loop on a real one-node Kubernetes (deploy/local/cluster.sh): the chart
installed with helm, InferenceDeployments applied with kubectl, engine + sidecar pods that
really start, load their model (a PVC and an hf:// repository on the local hub), become
Ready through their probes and answer the official `openai` client through their
Service's ClusterIP (kube-proxy); LoRA adapters served next to the base model and swapped
in the running pod by editing the CR; Prometheus scraping them through the generated
ServiceMonitor, alerts, dashboards; both autoscaling backends adding a pod that really
starts and takes traffic; TLS everywhere (the operator's listeners from the chart's
quick-start CA, an InferenceDeployment whose API and /metrics speak HTTPS, Prometheus
scraping both with a client certificate, a scrape without one refused, a rotated Secret
served without a restart, Alertmanager calling the webhook over HTTPS); and the faults: an
engine killed mid-load, the leader operator pod deleted, a helm upgrade and an engine flag
change rolling the pods under load, a CR deleted.

Run by deploy/local/e2e.sh (from scripts/test.sh). Tests run in file order and share one
cluster; each prints what it measured (timelines, reaction times, failed requests).
"""

import base64
import functools
import json
import os
import pathlib
import re
import subprocess
import tempfile
import threading
import time

import openai
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[3]
CACHE = pathlib.Path(os.environ.get("CANDELA_CACHE", pathlib.Path.home() / ".cache/candela"))
TOOLS = CACHE / "helm/3.19.0"
KUBECTL = str(TOOLS / "kubectl")
HELM = str(TOOLS / "helm")
BIN = os.environ.get("CANDELA_BIN", str(REPO / "target/debug/candela"))
NODE_IP = "10.244.0.1"
NS = "llm"
RELEASE = "candela"
OPERATOR_NS = "candela-system"
# What fits two engine pods beside the operator and the monitoring stack on 2 cores.
ENGINE_RESOURCES = {"gpus": 0, "cpu": "700m", "memory": "1536Mi"}
ENGINE_TUNING = {"maxNumSeqs": 8, "maxModelLen": 1024, "kvCacheMemory": "128Mi",
                 "extraArgs": ["--threads=1"]}

KUBECONFIG = None


# ------------------------------------------------------------------------------ helpers
def run(*args, check=True, timeout=600, input=None):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                       input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout


def k(*args, **kw):
    return run(KUBECTL, "--kubeconfig", KUBECONFIG, *args, **kw)


def kj(*args):
    return json.loads(k(*args, "-o", "json"))


def apply(obj):
    k("apply", "-f", "-", input=yaml.safe_dump(obj))


def wait(what, timeout, fn, interval=1.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            value = fn()
        except Exception as e:  # noqa: BLE001 - report the last failure on timeout
            value, last = None, e
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


def ts(s):
    """RFC 3339 (as the apiserver writes it) to epoch seconds."""
    from datetime import datetime
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def cluster_ip(name, ns=NS):
    return k("-n", ns, "get", "svc", name, "-o", "jsonpath={.spec.clusterIP}")


def prom(expr):
    ip = cluster_ip("prometheus", "monitoring")
    out = run("curl", "-sf", "--max-time", "10", "--data-urlencode", f"query={expr}",
              f"http://{ip}:9090/api/v1/query")
    return json.loads(out)["data"]["result"]


def pods(instance):
    return kj("-n", NS, "get", "pods", "-l", f"app.kubernetes.io/instance={instance}")["items"]


def ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


def ready_pods(instance):
    return [p for p in pods(instance) if ready(p) and not p["metadata"].get("deletionTimestamp")]


def example(name, **spec_overrides):
    """A deploy/examples/ InferenceDeployment, resized for this 2-core node."""
    obj = yaml.safe_load((REPO / "deploy/examples" / name).read_text())
    spec = obj["spec"]
    spec["resources"] = dict(ENGINE_RESOURCES)
    spec.setdefault("engine", {}).update(ENGINE_TUNING)
    for key, value in spec_overrides.items():
        spec[key] = value
    return obj


class Timeline:
    """apply → Scheduled → image ready → model loaded → Ready, per pod, from the pod's
    conditions, its events and the engine's log."""

    def __init__(self):
        self.rows = []

    def record(self, pod, applied):
        name = pod["metadata"]["name"]
        conds = {c["type"]: ts(c["lastTransitionTime"]) for c in pod["status"]["conditions"]}
        events = kj("-n", NS, "get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
        pulled = [ts(e.get("firstTimestamp") or e["eventTime"]) for e in events
                  if e["reason"] == "Pulled" and "engine" in e["involvedObject"].get("fieldPath", "")]
        log = k("-n", NS, "logs", name, "-c", "engine", "--timestamps", check=False)
        loaded = next((ts(line.split(" ", 1)[0]) for line in log.splitlines() if "model loaded" in line), None)
        row = {"pod": name, "scheduled": conds.get("PodScheduled"), "image": min(pulled) if pulled else None,
               "loaded": loaded, "ready": conds.get("Ready")}
        row = {key: (v - applied if isinstance(v, float) else v) for key, v in row.items()}
        self.rows.append(row)
        return row

    def print(self, title):
        print(f"\n{title}: seconds after apply (or after the scale-up decision)")
        print(f"  {'pod':45} {'Scheduled':>9} {'image':>7} {'loaded':>7} {'Ready':>7}")
        for r in self.rows:
            f = lambda v: "-" if v is None else f"{v:7.1f}"  # noqa: E731
            print(f"  {r['pod']:45} {f(r['scheduled']):>9} {f(r['image']):>7} {f(r['loaded']):>7} {f(r['ready']):>7}")


class Load:
    """`candela bench serve` against a Service's ClusterIP at a steady rate, in the
    background, under `nice -n 19` (a light client: the engines need the 2 cores)."""

    def __init__(self, instance, served, seconds, rate, concurrency, output_len=48):
        self.dir = tempfile.mkdtemp(prefix="candela-e2e-load-")
        ip = cluster_ip(instance)
        n = max(4, int(seconds * rate))
        self.proc = subprocess.Popen(
            ["nice", "-n", "19", BIN, "bench", "serve", "--base-url", f"http://{ip}:8000",
             "--model", served, "--dataset-name", "random", "--random-input-len", "32",
             "--random-output-len", str(output_len), "--num-prompts", str(n),
             "--request-rate", str(rate), "--max-concurrency", str(concurrency),
             "--ready-check-timeout-sec", "0", "--disable-tqdm", "--save-result",
             "--result-dir", self.dir, "--result-filename", "load.json"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.started = time.time()

    def result(self, timeout=900):
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, out
        return json.loads(pathlib.Path(self.dir, "load.json").read_text())


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session", autouse=True)
def cluster():
    global KUBECONFIG
    if os.environ.get("KUBECONFIG_E2E"):
        KUBECONFIG = os.environ["KUBECONFIG_E2E"]
    else:
        t0 = time.time()
        # A fresh cluster every run: objects from an earlier run would change what is measured.
        run(REPO / "deploy/local/cluster.sh", "down", timeout=600)
        out = run(REPO / "deploy/local/cluster.sh", "up", timeout=3600)
        KUBECONFIG = out.strip().splitlines()[-1].split("=", 1)[1]
        print(f"\ncluster up in {time.time() - t0:.0f} s")
    yield
    if not os.environ.get("KUBECONFIG_E2E") and not os.environ.get("CANDELA_KEEP_CLUSTER"):
        run(REPO / "deploy/local/cluster.sh", "down", timeout=600)


@pytest.fixture(scope="session")
def hub():
    """The local hub (engine/hub/tests/fake_hub.py) on the node's bridge address, serving the
    default model as the Hugging Face repository deploy/examples/smollm2-hf.yaml names."""
    hf_dir = CACHE / "models/SmolLM2-135M-Instruct-hf"
    assert (hf_dir / ".complete").exists(), "run scripts/setup.sh --test-deps first"
    work = tempfile.mkdtemp(prefix="candela-e2e-hub-")
    config = {"host": NODE_IP, "port": 0,
              "repos": {"HuggingFaceTB/SmolLM2-135M-Instruct": {"revisions": {"main": str(hf_dir)}}}}
    pathlib.Path(work, "hub.json").write_text(json.dumps(config))
    proc = subprocess.Popen(["python3", REPO / "engine/hub/tests/fake_hub.py", pathlib.Path(work, "hub.json")],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline().split()[1])
    yield f"http://{NODE_IP}:{port}"
    proc.kill()


# -------------------------------------------------------------------------------- tests
def test_chart_installs_the_operator_from_its_image():
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    # HTTPS on the operator from the chart's quick-start CA (its probes pass over HTTPS).
    run(HELM, "--kubeconfig", KUBECONFIG, "upgrade", "--install", RELEASE, REPO / "charts/candela",
        "-n", OPERATOR_NS, "--create-namespace", "--set", "alertsWebhook.enabled=true",
        "--set", "alertsWebhook.alertmanagerNamespace=monitoring",
        "--set", "tls.enabled=true", "--set", "selfSignedCA.enabled=true",
        "--set", "prometheusAdapter.rules.enabled=true", "--wait", "--timeout", "5m")
    ops = kj("-n", OPERATOR_NS, "get", "pods", "-l", "app.kubernetes.io/name=candela-operator")["items"]
    assert len(ops) == 2 and all(ready(p) for p in ops), [p["status"] for p in ops]
    assert "--ssl-cert-reqs=1" in ops[0]["spec"]["containers"][0]["args"]
    assert {p["spec"]["containers"][0]["image"] for p in ops} == {"localhost/candela-operator:dev"}
    holder = wait("a Lease holder", 60, lambda: kj("-n", OPERATOR_NS, "get", "lease", RELEASE)["spec"].get("holderIdentity"))
    assert holder in {p["metadata"]["name"] for p in ops}, holder
    crd = kj("get", "crd", "inferencedeployments.candela.dev")
    assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
    print(f"\noperator pods {[p['metadata']['name'] for p in ops]}, leader {holder}")


def models_claim():
    """The PVC the CPU examples name, holding the default GGUF (a hostPath volume here)."""
    models = str(CACHE / "models")
    apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "candela-models"},
           "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "",
                    "hostPath": {"path": models, "type": "Directory"}, "persistentVolumeReclaimPolicy": "Retain"}})
    apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models", "namespace": NS},
           "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": "candela-models",
                    "resources": {"requests": {"storage": "1Gi"}}}})


def test_examples_become_ready_and_answer_through_their_service(hub):
    models_claim()
    hf = example("smollm2-hf.yaml")
    hf["spec"]["engine"]["env"] = [{"name": "HF_ENDPOINT", "value": hub}]
    applied = time.time()
    apply(hf)
    apply(example("smollm2-cpu.yaml"))
    timeline = Timeline()
    for instance in ["smollm2-hf", "smollm2"]:
        pod = wait(f"{instance} Ready", 300, lambda: ready_pods(instance))[0]
        timeline.record(pod, applied)
        infd = kj("-n", NS, "get", "infd", instance)
        conditions = {c["type"]: c["status"] for c in infd["status"]["conditions"]}
        assert conditions["Ready"] == "True", infd["status"]
    timeline.print("kubectl apply → Ready")
    for row in timeline.rows:
        assert row["ready"] is not None and row["loaded"] is not None and row["ready"] >= row["loaded"], row
    for instance, served in [("smollm2-hf", "HuggingFaceTB/SmolLM2-135M-Instruct"), ("smollm2", "SmolLM2-135M-Instruct")]:
        client = openai.OpenAI(base_url=f"http://{cluster_ip(instance)}:8000/v1", api_key="none", max_retries=0)
        chat = client.chat.completions.create(model=served, max_tokens=16,
                                              messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert chat.choices[0].message.content.strip(), chat
        completion = client.completions.create(model=served, prompt="The capital of France is", max_tokens=8,
                                               temperature=0)
        print(f"{instance} via ClusterIP: {completion.choices[0].text!r}")
    # The hf:// model was downloaded by the pod, into its cache volume, from the hub.
    log = k("-n", NS, "logs", "deploy/smollm2-hf", "-c", "engine")
    assert "downloaded hf://HuggingFaceTB/SmolLM2-135M-Instruct/model-00002-of-00002.safetensors" in log


def delete_and_check_nothing_left(instance):
    """Deleting an InferenceDeployment leaves nothing it created (owner references + GC)."""
    k("-n", NS, "delete", "infd", instance, "--wait=true", timeout=300)
    kinds = "deployments,replicasets,pods,services,configmaps,horizontalpodautoscalers,servicemonitors,prometheusrules"

    def gone():
        out = k("-n", NS, "get", kinds, "-l", f"app.kubernetes.io/instance={instance}", "-o", "name")
        return not out.strip()
    wait(f"everything of {instance} gone", 180, gone)


def test_deleting_an_example_leaves_nothing():
    delete_and_check_nothing_left("smollm2-hf")


LORA = "smollm2-lora"


def test_lora_adapters_serve_and_change_without_restarting_the_pod():
    """deploy/examples/smollm2-lora.yaml: PEFT adapters on the `models` claim (made by
    scripts/make-lora-adapters.py) reach the running engine through the operator's ConfigMap
    and the sidecar; each adapter answers under its own name through the Service, next to the
    base model. Editing spec.loraAdapters (one adapter out, one in) changes the engine's
    adapters in place — same pod, no container restart, no Deployment change — once the
    kubelet has refreshed the mounted ConfigMap. Prometheus sees the adapters' request
    counters, vLLM's info gauge and the sidecar's in-sync gauge through the ServiceMonitor."""
    loras = CACHE / "models/loras"
    run("python3", REPO / "scripts/make-lora-adapters.py",
        "--config", CACHE / "models/SmolLM2-135M-Instruct-hf/config.json",
        "--out", loras, "--names", "sql,support,poem", "--rank", "8")
    try:
        lora_scenario()
    finally:
        k("-n", NS, "delete", "infd", LORA, "--ignore-not-found", "--wait=false", check=False)
        run("rm", "-rf", loras)


def lora_scenario():
    infd = example("smollm2-lora.yaml")
    engine = infd["spec"]["engine"]
    assert (engine["maxLoras"], engine["maxCpuLoras"], engine["maxLoraRank"]) == (2, 4, 16), engine
    base = infd["spec"]["model"]["servedName"]
    assert [a["name"] for a in infd["spec"]["loraAdapters"]] == ["smollm2-sql", "smollm2-support"]
    applied = time.time()
    apply(infd)
    pod = wait(f"{LORA} Ready", 300, lambda: ready_pods(LORA))[0]
    timeline = Timeline()
    timeline.record(pod, applied)
    timeline.print("LoRA example: kubectl apply → Ready (the sidecar's /ready waits for the adapters)")
    status = wait("status.loraAdapters", 60, lambda: kj("-n", NS, "get", "infd", LORA)["status"].get("loraAdapters"))
    assert sorted(status) == ["smollm2-sql", "smollm2-support"], status
    cm = kj("-n", NS, "get", "configmap", f"{LORA}-lora-adapters")
    assert sorted(a["name"] for a in json.loads(cm["data"]["adapters.json"])["adapters"]) == sorted(status)

    client = openai.OpenAI(base_url=f"http://{cluster_ip(LORA)}:8000/v1", api_key="none", max_retries=0)

    def models():
        return {m.id: m.to_dict().get("parent") for m in client.models.list().data}

    listed = models()
    assert listed == {base: None, "smollm2-sql": base, "smollm2-support": base}, listed
    prompt = "Write one sentence about databases:"
    sent = {}

    def complete(model):
        text = client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0).choices[0].text
        sent[model] = sent.get(model, 0) + 1
        return text

    texts = {m: complete(m) for m in [base, "smollm2-sql", "smollm2-support"]}
    for m, text in texts.items():
        print(f"{m:>16} (greedy): {text!r}")
    assert any(texts[a] != texts[base] for a in ["smollm2-sql", "smollm2-support"]), texts
    # The same adapter twice gives the same greedy text (the adapter, not noise, changed it).
    assert complete("smollm2-sql") == texts["smollm2-sql"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="smollm2-nope", prompt=prompt, max_tokens=4)

    # Edit the list: support out, poem in. Only the ConfigMap changes; the sidecar follows.
    def identity():
        p = pods(LORA)
        assert len(p) == 1, [x["metadata"]["name"] for x in p]
        restarts = {c["name"]: c["restartCount"] for c in p[0]["status"]["containerStatuses"]}
        return p[0]["metadata"]["name"], p[0]["metadata"]["uid"], restarts

    before = identity()
    generation = kj("-n", NS, "get", "deploy", LORA)["metadata"]["generation"]
    patched = time.time()
    k("-n", NS, "patch", "infd", LORA, "--type", "merge", "-p", json.dumps({"spec": {"loraAdapters": [
        {"name": "smollm2-sql", "source": "pvc://models/loras/sql"},
        {"name": "smollm2-poem", "source": "pvc://models/loras/poem"}]}}))
    wait("the ConfigMap rewritten", 30, lambda: "smollm2-poem" in
         kj("-n", NS, "get", "configmap", f"{LORA}-lora-adapters")["data"]["adapters.json"])
    cm_at = time.time()
    wanted = {base: None, "smollm2-sql": base, "smollm2-poem": base}
    wait("the engine serving sql + poem", 180, lambda: models() == wanted)
    in_sync = time.time()
    print(f"loraAdapters patched (support → poem): ConfigMap rewritten after {cm_at - patched:.1f} s, "
          f"engine in sync after {in_sync - patched:.1f} s (kubelet volume refresh + the sidecar's 5 s sync)")
    assert identity() == before, (before, identity())
    assert kj("-n", NS, "get", "deploy", LORA)["metadata"]["generation"] == generation
    assert sorted(kj("-n", NS, "get", "infd", LORA)["status"]["loraAdapters"]) == ["smollm2-poem", "smollm2-sql"]
    poem = complete("smollm2-poem")
    print(f"{'smollm2-poem':>16} (greedy): {poem!r}; pod {before[0]} unchanged, restarts {before[2]}")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="smollm2-support", prompt=prompt, max_tokens=4)
    complete("smollm2-sql")

    # Prometheus, through the generated ServiceMonitor (the sidecar's /metrics carries the
    # engine's series and its own).
    sel = f'namespace="{NS}",service="{LORA}"'
    t0 = time.time()
    counts = wait("the adapters' request counters in Prometheus", 180, lambda: (
        (c := {r["metric"]["lora_name"]: float(r["value"][1]) for r in prom(f"vllm:lora_requests_total{{{sel}}}")})
        and c.get("smollm2-sql", 0) >= sent["smollm2-sql"] and c.get("smollm2-poem", 0) >= sent["smollm2-poem"]
        and c), interval=3)
    # Exact: nothing else sends requests to this instance.
    assert counts["smollm2-sql"] == sent["smollm2-sql"], (counts, sent)
    assert counts["smollm2-poem"] == sent["smollm2-poem"], (counts, sent)
    assert base not in counts, counts
    assert counts.get("smollm2-support", sent["smollm2-support"]) == sent["smollm2-support"], (counts, sent)
    info = wait("vllm:lora_requests_info", 60, lambda: prom(f'vllm:lora_requests_info{{{sel},max_lora="2"}}'))
    synced = wait("candela_sidecar_lora_in_sync 1", 60, lambda: [
        r for r in prom(f"candela_sidecar_lora_in_sync{{{sel}}}") if r["value"][1] == "1"])
    loaded = prom(f"candela_sidecar_lora_adapters_loaded{{{sel}}}")
    changes = {r["metric"].get("action"): r["value"][1]
               for r in prom(f"candela_sidecar_lora_adapter_changes_total{{{sel}}}")}
    print(f"Prometheus ({time.time() - t0:.0f} s after the last request): vllm:lora_requests_total "
          f"{counts} (sent {sent}); vllm:lora_requests_info max_lora={info[0]['metric'].get('max_lora')} "
          f"running={info[0]['metric'].get('running_lora_adapters', '')!r}; candela_sidecar_lora_in_sync "
          f"{synced[0]['value'][1]}, adapters loaded {loaded[0]['value'][1] if loaded else '-'}, changes {changes}")
    assert loaded and loaded[0]["value"][1] == "2", loaded

    delete_and_check_nothing_left(LORA)
    assert not k("-n", NS, "get", "configmap", f"{LORA}-lora-adapters", "--ignore-not-found", "-o", "name").strip()


TLS = "smollm2-tls"


def curl_tls(url, *args, name, ip, port, ca, cert=None):
    """(HTTP status or None when the handshake fails, body): curl with only `ca` trusted,
    `name` resolved to `ip` (a ClusterIP) so the certificate's Service name is checked."""
    cmd = ["curl", "-s", "--max-time", "10", "--cacert", ca, "--resolve", f"{name}:{port}:{ip}",
           "-o", "-", "-w", "\n%{http_code}", *args]
    if cert:
        cmd += ["--cert", f"{cert}.crt", "--key", f"{cert}.key"]
    p = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        return None, p.stderr
    body, _, code = p.stdout.rpartition("\n")
    return int(code), body


def served_fingerprint(ip, port, name):
    """SHA-256 fingerprint of the certificate a TLS port serves now (a new connection)."""
    pem = subprocess.run(["openssl", "s_client", "-connect", f"{ip}:{port}", "-servername", name],
                         input="", capture_output=True, text=True, timeout=30).stdout
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=pem,
                         capture_output=True, text=True, timeout=30).stdout
    return out.strip().split("=", 1)[-1]


def file_fingerprint(path):
    return run("openssl", "x509", "-in", path, "-noout", "-fingerprint", "-sha256").strip().split("=", 1)[-1]


def targets(job_substring):
    ip = cluster_ip("prometheus", "monitoring")
    data = json.loads(run("curl", "-sf", "--max-time", "10", f"http://{ip}:9090/api/v1/targets?state=active"))
    return [t for t in data["data"]["activeTargets"] if job_substring in t["scrapePool"]]


def test_tls_everywhere_prometheus_scrapes_with_a_client_certificate_only():
    """deploy/examples/smollm2-tls.yaml with Secrets made by scripts/make-test-certs.sh: the
    engine's probes pass over HTTPS, the API answers only HTTPS for the Service name, and the
    in-cluster Prometheus scrapes the sidecar through the generated ServiceMonitor over HTTPS
    with the client certificate (target up, vllm: series present) while a scrape without one
    is refused (403) and one with a stranger's certificate fails its handshake. Rotating the
    Secret reaches the running pod: every port serves the new certificate, no restart. The
    operator's own /metrics is scraped the same way (chart's ServiceMonitor, quick-start CA)."""
    models_claim()
    certs = tempfile.mkdtemp(prefix="candela-e2e-certs-")
    service = f"{TLS}.{NS}.svc"
    run(REPO / "scripts/make-test-certs.sh", certs, service, TLS)
    c = lambda f: str(pathlib.Path(certs, f))  # noqa: E731
    # The Secrets the example names: the server's (API and /metrics) and Prometheus's.
    mon = example("smollm2-tls.yaml")["spec"]["monitoring"]["tls"]
    assert mon["secretName"] == TLS, mon
    for name, leaf in [(TLS, "server"), (mon["clientSecretName"], "prometheus")]:
        secret = k("-n", NS, "create", "secret", "tls", name, f"--cert={c(leaf + '.crt')}",
                   f"--key={c(leaf + '.key')}", "--dry-run=client", "-o", "json")
        obj = json.loads(secret)
        obj["data"]["ca.crt"] = base64.b64encode(pathlib.Path(c("ca.crt")).read_bytes()).decode()
        apply(obj)
    try:
        tls_scenario(certs, service, c)
    finally:
        k("-n", NS, "delete", "infd", TLS, "--ignore-not-found", "--wait=false", check=False)
        run("rm", "-rf", certs)


def tls_scenario(certs, service, c):
    infd = example("smollm2-tls.yaml")
    served = infd["spec"]["model"]["servedName"]
    applied = time.time()
    apply(infd)
    pod = wait(f"{TLS} Ready (HTTPS probes)", 300, lambda: ready_pods(TLS))[0]
    timeline = Timeline()
    timeline.record(pod, applied)
    timeline.print("TLS example: kubectl apply → Ready")
    ip = cluster_ip(TLS)
    api = functools.partial(curl_tls, name=service, ip=ip, port=8000, ca=c("ca.crt"))
    metrics = functools.partial(curl_tls, name=service, ip=ip, port=9090, ca=c("ca.crt"))

    # The OpenAI API: HTTPS for the Service name; plain HTTP gets nothing.
    code, body = api(f"https://{service}:8000/v1/chat/completions", "-H", "Content-Type: application/json",
                     "-d", json.dumps({"model": served, "max_tokens": 16,
                                       "messages": [{"role": "user", "content": "What is the capital of France?"}]}))
    assert code == 200, body
    print(f"\nchat over HTTPS ({service}): {json.loads(body)['choices'][0]['message']['content']!r}")
    plain = subprocess.run(["curl", "-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://{ip}:8000/health"], capture_output=True, text=True)
    assert plain.stdout != "200", plain

    # /metrics: the client certificate or nothing; the probe path stays open.
    code, body = metrics(f"https://{service}:9090/metrics", cert=c("prometheus"))
    assert code == 200 and "vllm:num_requests_running" in body, (code, body[:300])
    code, _ = metrics(f"https://{service}:9090/metrics")
    assert code == 403, code
    stranger, err = metrics(f"https://{service}:9090/metrics", cert=c("stranger"))
    assert stranger is None or stranger >= 400, (stranger, err)
    code, _ = metrics(f"https://{service}:9090/health")
    assert code == 200, code
    print(f"sidecar /metrics: 200 with Prometheus's client certificate, 403 without, "
          f"{'handshake refused' if stranger is None else stranger} with a stranger's; /health open")

    # The in-cluster Prometheus, through the generated ServiceMonitor (scheme https,
    # tlsConfig from the Secrets).
    t0 = time.time()
    up = wait("the TLS target up in Prometheus", 180, lambda: [
        t for t in targets(f"serviceMonitor/{NS}/{TLS}/") if t["health"] == "up"], interval=3)
    assert up[0]["scrapeUrl"].startswith("https://"), up[0]
    series = wait("vllm: series of the TLS instance", 60, lambda: prom(
        f'vllm:generation_tokens_total{{namespace="{NS}",service="{TLS}"}}'), interval=3)
    print(f"Prometheus: target {up[0]['scrapeUrl']} up after {time.time() - t0:.0f} s, "
          f"vllm:generation_tokens_total = {series[0]['value'][1]}")
    op = wait("the operator's own HTTPS target up", 120, lambda: [
        t for t in targets(f"serviceMonitor/{OPERATOR_NS}/{RELEASE}/") if t["health"] == "up"], interval=3)
    assert all(t["scrapeUrl"].startswith("https://") for t in op), op
    op_ip = cluster_ip(RELEASE, OPERATOR_NS)
    op_name = f"{RELEASE}.{OPERATOR_NS}.svc"
    op_ca = pathlib.Path(certs, "operator-ca.crt")
    op_ca.write_text(base64.b64decode(kj("-n", OPERATOR_NS, "get", "secret", f"{RELEASE}-tls")["data"]["ca.crt"]).decode())
    code, _ = curl_tls(f"https://{op_name}:8080/metrics", name=op_name, ip=op_ip, port=8080, ca=str(op_ca))
    assert code == 403, code
    code, _ = curl_tls(f"https://{op_name}:8080/healthz", name=op_name, ip=op_ip, port=8080, ca=str(op_ca))
    assert code == 200, code
    print(f"operator: {len(op)} HTTPS targets up in Prometheus; /metrics without a client certificate 403, /healthz 200")

    # Rotation: a new certificate (new key) in the Secret reaches the running pod.
    before = {cc["name"]: cc["restartCount"] for cc in pod["status"]["containerStatuses"]}
    old = served_fingerprint(ip, 9090, service)
    assert old == file_fingerprint(c("server.crt")), old
    new = file_fingerprint(c("server2.crt"))
    data = kj("-n", NS, "get", "secret", TLS)["data"]
    data["tls.crt"] = base64.b64encode(pathlib.Path(c("server2.crt")).read_bytes()).decode()
    data["tls.key"] = base64.b64encode(pathlib.Path(c("server2.key")).read_bytes()).decode()
    t0 = time.time()
    apply({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": TLS, "namespace": NS}, "data": data})
    ports = {8000: None, 50051: None, 9090: None}
    for port in ports:
        wait(f"port {port} serving the rotated certificate", 240,
             lambda: served_fingerprint(ip, port, service) == new, interval=2)
        ports[port] = time.time() - t0
    after = kj("-n", NS, "get", "pod", pod["metadata"]["name"])
    assert {cc["name"]: cc["restartCount"] for cc in after["status"]["containerStatuses"]} == before
    code, body = metrics(f"https://{service}:9090/metrics", cert=c("prometheus"))
    assert code == 200, code
    print("Secret rotated: new certificate served after "
          + ", ".join(f"{p}: {t:.0f} s" for p, t in ports.items())
          + f" (kubelet volume refresh + 2 s file check); pod {pod['metadata']['name']} not restarted")
    wait("the target still up after the rotation", 60, lambda: [
        t for t in targets(f"serviceMonitor/{NS}/{TLS}/") if t["health"] == "up"
        and ts(re.sub(r"\.\d+", "", t["lastScrape"])) > t0 + ports[9090]], interval=3)
    delete_and_check_nothing_left(TLS)


def test_prometheus_scrapes_with_the_token_rules_load_dashboards_have_data_and_hpa_scales():
    """The CPU example with a metrics token and the hpa backend: Prometheus scrapes the
    sidecar through the generated ServiceMonitor with the token from its Secret, the
    generated PrometheusRule is loaded and its waiting-requests alert fires under load, the
    generated dashboards' queries return data, and the HPA (custom metrics from
    prometheus-adapter) scales 1 → 2: the second pod starts, loads, becomes Ready and takes
    traffic; after the load it scales back to 1."""
    secret = k("-n", NS, "create", "secret", "generic", "candela-metrics",
               "--from-literal=token=e2e-metrics-token", "--dry-run=client", "-o", "yaml")
    k("apply", "-f", "-", input=secret)
    patch = {"spec": {
        "monitoring": {"metricsAuthSecretRef": {"name": "candela-metrics", "key": "token"}},
        "autoscaling": {"enabled": True, "backend": "hpa", "minReplicas": 1, "maxReplicas": 2,
                        "targets": {"waitingRequestsPerReplica": 2, "kvCacheUsage": 0.95},
                        "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0},
                                     "scaleDown": {"stabilizationWindowSeconds": 20,
                                                   "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]}}}}}
    k("-n", NS, "patch", "infd", "smollm2", "--type", "merge", "-p", json.dumps(patch))
    wait("the rolled pod Ready with the token", 300, lambda: [
        p for p in ready_pods("smollm2")
        if any(e["name"] == "CANDELA_SIDECAR_METRICS_TOKEN" for c in p["spec"]["containers"] for e in c.get("env") or [])])
    pod = ready_pods("smollm2")[0]
    ip = pod["status"]["podIP"]
    # The sidecar refuses a scrape without the token; Prometheus has it from the Secret.
    status = run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{ip}:9090/metrics")
    assert status == "401", status
    up = wait("Prometheus scraping the sidecar", 120, lambda: [
        r for r in prom('up{namespace="llm",service="smollm2"}') if r["value"][1] == "1"])
    print(f"\nPrometheus target up: {up[0]['metric']['instance']} (bearer token from Secret candela-metrics)")
    rules = json.loads(run("curl", "-sf", f"http://{cluster_ip('prometheus', 'monitoring')}:9090/api/v1/rules"))
    groups = [g["name"] for g in rules["data"]["groups"] if "llm" in g["file"] and "smollm2" in g["file"]]
    assert groups, [g["file"] for g in rules["data"]["groups"]]
    print(f"rule groups loaded from PrometheusRule llm/smollm2: {groups}")

    # Well past what one CPU pod serves, with more clients than --max-num-seqs (32): requests
    # queue whatever the machine's speed (at 6/s with 32 clients a fast run kept up, the HPA
    # decided after 185 s and the alert never fired).
    load = Load("smollm2", "SmolLM2-135M-Instruct", seconds=200, rate=10, concurrency=48)
    decided = wait("the HPA asking for 2 replicas", 240, lambda: (
        kj("-n", NS, "get", "hpa", "smollm2")["status"].get("desiredReplicas") == 2 and time.time()))
    timeline = Timeline()
    second = wait("a second Ready pod", 300, lambda: len(ready_pods("smollm2")) == 2 and ready_pods("smollm2"))
    newest = max(second, key=lambda p: p["metadata"]["creationTimestamp"])
    timeline.record(newest, decided)
    timeline.print("HPA scale-up: decision → second pod Ready")
    print(f"scale-up reaction: load start → HPA decision {decided - load.started:.1f} s, "
          f"→ second pod Ready {timeline.rows[0]['ready'] + decided - load.started:.1f} s")
    name = newest["metadata"]["name"]
    # Clients keep their keep-alive connections (kube-proxy balances connections, not
    # requests): traffic reaches the new pod from clients that connect after it is Ready.
    more = Load("smollm2", "SmolLM2-135M-Instruct", seconds=30, rate=3, concurrency=8)
    wait(f"{name} taking traffic", 120, lambda: [
        r for r in prom(f'increase(vllm:generation_tokens_total{{namespace="llm",pod="{name}"}}[1m])')
        if float(r["value"][1]) > 0])
    # The seed's alert: requests waiting > 10 for 2 minutes.
    firing = wait("CandelaRequestsWaiting firing", 240, lambda: [
        r for r in prom('ALERTS{alertname="CandelaRequestsWaiting",namespace="llm",alertstate="firing"}')])
    print(f"alert firing: {firing[0]['metric']['alertname']} {firing[0]['metric'].get('model_name')}")
    # Every query of the generated dashboards, under load.
    cm = kj("-n", NS, "get", "configmap", "smollm2-dashboards")
    empty, total = [], 0
    for name_, text in cm["data"].items():
        for panel in json.loads(text).get("panels", []):
            for target in panel.get("targets", []):
                expr = (target["expr"].replace("$__rate_interval", "1m").replace("$namespace", "llm")
                        .replace("$model_name", "SmolLM2-135M-Instruct"))
                total += 1
                if not prom(expr):
                    empty.append(f"{name_}: {panel.get('title')}: {expr}")
    print(f"dashboard queries with data: {total - len(empty)}/{total}; empty: {empty}")
    # Only the GPU (DCGM) series are absent on a CPU node, and the LoRA panel's on an
    # instance without adapters (the LoRA scenario checks that series with adapters).
    assert all("DCGM_FI_DEV" in e or "vllm:lora_requests_total" in e for e in empty), empty
    for label, l in [("first client", load), ("second client", more)]:
        result = l.result()
        print(f"load, {label}: {result['completed']} completed, {result['failed']} failed")
    # After the load: back to one replica.
    t0 = time.time()
    wait("scale back to 1", 300, lambda: kj("-n", NS, "get", "infd", "smollm2")["spec"]["replicas"] == 1
         and len(pods("smollm2")) == 1)
    print(f"scaled back to 1 replica {time.time() - t0:.0f} s after the load ended")
    delete_and_check_nothing_left("smollm2")


def test_alerts_backend_scales_through_alertmanager_and_the_operator_webhook():
    """The alerts backend as the chart's NOTES tell users to wire it: Alertmanager gets the
    printed route and receiver (the webhook's Service DNS name, resolved by CoreDNS) and the
    token Secret the chart copied into its namespace; the CR's scale-up alert fires under
    load, Alertmanager calls the webhook, the operator steps the CR to 2 replicas; the second
    pod becomes Ready and takes traffic; after the load the resolved alert and the cooldown
    bring it back to 1."""
    notes = run(HELM, "--kubeconfig", KUBECONFIG, "get", "notes", RELEASE, "-n", OPERATOR_NS)
    lines = notes.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "route:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) >= indent):
        end += 1
    block = "\n".join(line[indent:] for line in lines[start:end])
    snippet = yaml.safe_load(block)
    # The token Secret and, with TLS, the CA Secret the receiver's ca_file names.
    secrets = sorted(set(re.findall(r"/etc/alertmanager/secrets/([^/]+)/", block)))
    hook = snippet["receivers"][0]["webhook_configs"][0]
    assert hook["url"].startswith("https://") and hook["http_config"]["tls_config"]["ca_file"], hook
    config = {"route": {"receiver": "null", "routes": snippet["route"]["routes"]},
              "receivers": [{"name": "null"}] + snippet["receivers"]}
    print(f"\nAlertmanager route/receiver from the chart's NOTES: {hook['url']} (CA and token from {secrets})")
    apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alertmanager-candela", "namespace": "monitoring"},
           "stringData": {"alertmanager.yaml": yaml.safe_dump(config)}})
    k("-n", "monitoring", "patch", "alertmanager", "candela", "--type", "merge", "-p",
      json.dumps({"spec": {"secrets": secrets}}))
    wait("Alertmanager with the token and the CA mounted", 180, lambda: {
        v.get("secret", {}).get("secretName")
        for v in kj("-n", "monitoring", "get", "pod", "alertmanager-candela-0")["spec"]["volumes"]} >= set(secrets)
        and ready(kj("-n", "monitoring", "get", "pod", "alertmanager-candela-0")))

    infd = example("alerts-autoscaling.yaml")
    infd["spec"]["autoscaling"].update({"maxReplicas": 2, "targets": {"waitingRequestsPerReplica": 2, "kvCacheUsage": 0.95}})
    infd["spec"]["autoscaling"]["alerts"].update({"for": "15s", "evaluationInterval": "5s", "cooldownSeconds": 30})
    applied = time.time()
    apply(infd)
    wait("chat-alerts Ready", 300, lambda: ready_pods("chat-alerts"))
    load = Load("chat-alerts", "smollm2-alerts", seconds=120, rate=6, concurrency=32)
    scaled = wait("the webhook scaling the CR to 2", 300, lambda: (
        kj("-n", NS, "get", "infd", "chat-alerts")["spec"]["replicas"] == 2 and time.time()))
    firing = prom('ALERTS{namespace="llm",inference_deployment="chat-alerts",alertstate="firing"}')
    print(f"alerts firing: {sorted({a['metric']['alertname'] for a in firing})}")
    second = wait("a second Ready pod", 300, lambda: len(ready_pods("chat-alerts")) == 2 and ready_pods("chat-alerts"))
    timeline = Timeline()
    timeline.record(max(second, key=lambda p: p["metadata"]["creationTimestamp"]), scaled)
    timeline.print("alerts backend: webhook decision → second pod Ready")
    print(f"scale-up reaction: load start → decision {scaled - load.started:.1f} s "
          f"(alert for 15s + Alertmanager group_wait), → second pod Ready "
          f"{timeline.rows[0]['ready'] + scaled - load.started:.1f} s")
    status = kj("-n", NS, "get", "infd", "chat-alerts")["status"].get("alertScaling", {})
    print(f"status.alertScaling: {json.dumps(status)[:300]}")
    newest = timeline.rows[0]["pod"]
    more = Load("chat-alerts", "smollm2-alerts", seconds=30, rate=3, concurrency=8)
    wait(f"{newest} taking traffic", 120, lambda: [
        r for r in prom(f'increase(vllm:generation_tokens_total{{namespace="llm",pod="{newest}"}}[1m])')
        if float(r["value"][1]) > 0])
    for label, l in [("first client", load), ("second client", more)]:
        result = l.result()
        print(f"load, {label}: {result['completed']} completed, {result['failed']} failed")
    t0 = time.time()
    wait("scale back to 1", 420, lambda: kj("-n", NS, "get", "infd", "chat-alerts")["spec"]["replicas"] == 1
         and len(pods("chat-alerts")) == 1, interval=2)
    print(f"scaled back to 1 replica {time.time() - t0:.0f} s after the load ended (resolved + cooldown)")
    delete_and_check_nothing_left("chat-alerts")


FAULTS = "chat-faults"
FAULTS_SERVED = "smollm2-faults"


def faults_example():
    infd = example("smollm2-cpu.yaml", replicas=2)
    infd["metadata"]["name"] = FAULTS
    infd["spec"]["model"]["servedName"] = FAULTS_SERVED
    return infd


def test_engine_killed_mid_load_restarts_and_only_its_requests_fail():
    apply(faults_example())
    wait("two Ready pods", 300, lambda: len(ready_pods(FAULTS)) == 2)
    load = Load(FAULTS, FAULTS_SERVED, seconds=60, rate=4, concurrency=8, output_len=64)
    time.sleep(15)
    victim = ready_pods(FAULTS)[0]
    name = victim["metadata"]["name"]
    cid = next(c["containerID"] for c in victim["status"]["containerStatuses"] if c["name"] == "engine")
    cid = cid.split("://", 1)[1]
    sock = "/var/tmp/candela-cluster/containerd/containerd.sock"
    tasks = run("ctr", "--address", os.environ.get("CANDELA_CONTAINERD_SOCK", sock), "-n", "k8s.io", "tasks", "ls")
    pid = next(line.split()[1] for line in tasks.splitlines() if line.startswith(cid))
    killed = time.time()
    run("kill", "-9", pid)
    # The kubelet restarts it; readiness keeps traffic off it until it serves again.
    def restarted():
        p = kj("-n", NS, "get", "pod", name)
        engine = next(c for c in p["status"]["containerStatuses"] if c["name"] == "engine")
        cond = next(c for c in p["status"]["conditions"] if c["type"] == "Ready")
        return engine["restartCount"] >= 1 and cond["status"] == "True" and ts(cond["lastTransitionTime"]) >= killed - 1 and p
    back = wait("the killed engine back and Ready", 180, restarted)
    ready_again = ts(next(c for c in back["status"]["conditions"] if c["type"] == "Ready")["lastTransitionTime"])
    result = load.result()
    errors = [e for e in result.get("errors", []) if e]
    # Every failure is a request on or to the killed engine: one it was answering (its
    # stream ends early), or one sent to its pod that got no answer at all — refused while
    # kube-proxy still routed new connections there before the endpoint was removed, or
    # reset on a keep-alive connection to the dead process. Clients that retry connection
    # errors (the OpenAI SDKs do by default) never see the second kind.
    in_flight = [e for e in errors if e.startswith("reading the stream")]
    unanswered = [e for e in errors if "error sending request" in e]
    print(f"\nengine of {name} killed (SIGKILL pid {pid}); Ready again after {ready_again - killed:.1f} s; "
          f"load: {result['completed']} completed, {result['failed']} failed: {len(in_flight)} in flight "
          f"on the killed engine (at most 8 could be), {len(unanswered)} sent to its pod and unanswered "
          f"({sum('refused' in e for e in unanswered)} refused, {sum('reset' in e for e in unanswered)} reset)")
    assert len(in_flight) + len(unanswered) == len(errors), errors
    assert len(in_flight) <= 8, errors
    # They stop once the endpoint is gone: at most the pooled connections (8) and the
    # requests sent (4/s) until the engine was Ready again.
    assert len(unanswered) <= 8 + 4 * (ready_again - killed), (len(unanswered), ready_again - killed)
    after = Load(FAULTS, FAULTS_SERVED, seconds=10, rate=2, concurrency=4).result()
    assert after["failed"] == 0, after.get("errors")


def test_deleting_the_leader_hands_the_lease_over():
    lease = kj("-n", OPERATOR_NS, "get", "lease", RELEASE)
    holder = lease["spec"]["holderIdentity"]
    duration = lease["spec"]["leaseDurationSeconds"]
    t0 = time.time()
    k("-n", OPERATOR_NS, "delete", "pod", holder, "--wait=false")
    new = wait("another leader", 2 * duration + 30, lambda: (
        (h := kj("-n", OPERATOR_NS, "get", "lease", RELEASE)["spec"].get("holderIdentity")) and h != holder and h))
    took = time.time() - t0
    print(f"\nleader {holder} deleted; {new} holds the Lease after {took:.1f} s (lease duration {duration} s)")
    assert took <= duration + 10, took
    # The new leader reconciles: a spec change reaches the Deployment.
    k("-n", NS, "patch", "infd", FAULTS, "--type", "merge", "-p", json.dumps({"spec": {"engine": {"maxNumSeqs": 6}}}))
    wait("the new leader updating the Deployment", 60, lambda: "--max-num-seqs=6" in
         kj("-n", NS, "get", "deploy", FAULTS)["spec"]["template"]["spec"]["containers"][0]["args"])


def test_helm_upgrade_and_an_engine_flag_change_roll_the_pods_without_failing_a_request():
    """Under one steady load: `helm upgrade` changing the engine image the operator starts
    pods with rolls every engine pod, then a change of an engine flag in the CR
    (`maxNumSeqs` → `--max-num-seqs`) rolls them again; preStop + the engine's drain lose no
    request in either roll."""
    sock = os.environ.get("CANDELA_CONTAINERD_SOCK", "/var/tmp/candela-cluster/containerd/containerd.sock")
    run("ctr", "--address", sock, "-n", "k8s.io", "images", "tag", "--force",
        "localhost/candela:dev", "localhost/candela:e2e-upgrade")
    wait("two Ready pods", 300, lambda: len(ready_pods(FAULTS)) == 2 and all(
        "--max-num-seqs=6" in p["spec"]["containers"][0]["args"] for p in ready_pods(FAULTS)))

    def rolled(before, check):
        def done():
            now = ready_pods(FAULTS)
            return (len(now) == 2 and len(pods(FAULTS)) == 2 and not before & {p["metadata"]["name"] for p in now}
                    and all(check(p["spec"]["containers"][0]) for p in now))
        return done

    load = Load(FAULTS, FAULTS_SERVED, seconds=200, rate=2, concurrency=4, output_len=32)
    time.sleep(10)
    before = {p["metadata"]["name"] for p in pods(FAULTS)}
    t0 = time.time()
    run(HELM, "--kubeconfig", KUBECONFIG, "upgrade", RELEASE, REPO / "charts/candela", "-n", OPERATOR_NS,
        "--reuse-values", "--set", "operator.engineImage=localhost/candela:e2e-upgrade", "--wait", "--timeout", "5m")
    wait("both engine pods replaced (new image)", 600,
         rolled(before, lambda c: c["image"] == "localhost/candela:e2e-upgrade"), interval=2)
    print(f"\nhelm upgrade (engine image) → both engine pods replaced in {time.time() - t0:.0f} s")

    before = {p["metadata"]["name"] for p in pods(FAULTS)}
    t0 = time.time()
    k("-n", NS, "patch", "infd", FAULTS, "--type", "merge", "-p", json.dumps({"spec": {"engine": {"maxNumSeqs": 5}}}))
    wait("both engine pods replaced (new flag)", 600,
         rolled(before, lambda c: "--max-num-seqs=5" in c["args"]), interval=2)
    print(f"engine flag --max-num-seqs 6 → 5 → both engine pods replaced in {time.time() - t0:.0f} s")
    result = load.result()
    print(f"load during both rolling updates: {result['completed']} completed, {result['failed']} failed")
    assert result["failed"] == 0, result.get("errors")
    assert result["completed"] == result["num_prompts"]
    delete_and_check_nothing_left(FAULTS)
