"""The files in deploy/ and the chart against live data: deploy/local/stack.sh starts a real
`candela serve` + `candela sidecar` + Prometheus (with deploy/rules) + Alertmanager on
loopback, `candela bench serve` load runs (queueing, preemption and swapping in a small KV
pool, stop/length finishes, shared prefixes) beside clients that hang up streams (aborts), then every query the project ships is evaluated
against that Prometheus and must return data:

- every panel query of deploy/dashboards/*.json ($namespace, $model_name, $__rate_interval
  substituted) and the dashboards' variable queries;
- every recording rule of deploy/rules/candela.rules.yaml (and all rule groups healthy);
- the prometheus-adapter rules of the chart (seriesQuery and metricsQuery, as the adapter
  expands them) and the operator's KEDA triggers, HPA metric names, PrometheusRule and
  per-InferenceDeployment dashboards for an InferenceDeployment scoped to this stack
  (rendered by `crdgen render`);
- the seed handbooks' own queries (seed 000's panels, seed 001's series via the recording
  rules).

GPU panels read DCGM_* gauges, which the sidecar exports only where NVML finds a GPU; on a
machine without one the test asserts that the sidecar exports no DCGM_* series and that the
same panels' engine CPU/RSS queries return data (reported, not skipped silently).

With CANDELA_DASHBOARD_PNG=<path> it also renders the full dashboard from this run's
query_range results (scripts/render_dashboard.py): that is how docs/dashboard-full.png is made.

Env: CANDELA_BIN (candela binary), CANDELA_CRDGEN (crdgen binary). Run by scripts/test.sh.
"""

import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import pytest
from live import free_port
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = os.environ.get("CANDELA_BIN", str(ROOT / "target/debug/candela"))
CRDGEN = os.environ.get("CANDELA_CRDGEN", str(ROOT / "target/debug/crdgen"))
SERVED = "smollm2"
# What the two hang-up clients address: a LoRA adapter the stack serves, and the base.
LORA_MODELS = ("sql", SERVED)
NAMESPACE = "local"
RATE_INTERVAL = "30s"
LOAD_SECONDS = float(os.environ.get("CANDELA_E2E_LOAD_SECONDS", "75"))
SYSTEM = ("You are the assistant of a bakery that sells bread, cakes, croissants and pastries. "
          "Answer in one or two short sentences. ")


@pytest.fixture(scope="module")
def stack():
    for tool in ("prometheus", "promtool", "amtool"):
        assert subprocess.run(["which", tool], capture_output=True).returncode == 0, \
            f"{tool} is required (apt-get install prometheus prometheus-alertmanager)"
    assert os.access(BIN, os.X_OK), f"CANDELA_BIN={BIN} is not executable"
    state = tempfile.mkdtemp(prefix="candela-stack-")
    # Two LoRA adapters (the hang-up clients use one: the LoRA panel and the seed's
    # per-adapter count have data).
    hf_config = os.path.expanduser("~/.cache/candela/models/SmolLM2-135M-Instruct-hf/config.json")
    subprocess.run(["python3", str(ROOT / "scripts/make-lora-adapters.py"), "--config", hf_config,
                    "--out", state, "--names", "sql,chat"], check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ,
               CANDELA_BIN=BIN, CANDELA_STACK_DIR=state, CANDELA_SERVED_NAME=SERVED,
               CANDELA_HTTP_PORT=str(free_port()), CANDELA_GRPC_PORT=str(free_port()),
               CANDELA_SIDECAR_PORT=str(free_port()), CANDELA_PROMETHEUS_PORT=str(free_port()),
               CANDELA_ALERTMANAGER_PORT=str(free_port()), CANDELA_SCRAPE_INTERVAL="1s",
               # A small KV pool with a host swap pool: 10 clients on 6 sequences queue,
               # and long generations preempt (by swapping) each other. Prompt-lookup
               # speculation runs under all of it (its panel and the seed's gauges).
               CANDELA_SERVE_ARGS="--max-model-len 256 --kv-cache-memory 12MiB --max-num-seqs 6 "
                                  "--swap-space 0.05 --log-stats-interval 5 --speculative-config "
                                  '{"method":"ngram","num_speculative_tokens":3,"prompt_lookup_min":1,"prompt_lookup_max":3}'
                                  f" --enable-lora --max-loras 2 --max-lora-rank 8"
                                  f" --lora-modules sql={state}/sql chat={state}/chat")
    script = str(ROOT / "deploy/local/stack.sh")
    up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    info = dict(line.split("=", 1) for line in
                subprocess.run([script, "env"], env=env, capture_output=True, text=True).stdout.split())
    yield {"env": env, "state": state, **info}
    down = subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    shutil.rmtree(state, ignore_errors=True)


def api(stack, path, **params):
    url = f"{stack['CANDELA_PROMETHEUS_URL']}{path}?" + urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def instant(stack, expr, at):
    return api(stack, "/api/v1/query", query=expr, time=f"{at:.3f}")["result"]


def substitute(expr):
    return (expr.replace("$__rate_interval", RATE_INTERVAL)
            .replace("$namespace", NAMESPACE).replace("$model_name", SERVED))


def run_load(stack, seconds):
    """`candela bench serve` (random prompts sharing a 32-token prefix for prefix-cache
    hits, natural stops and length limits, up to 10 in flight on 6 sequences: queueing,
    preemption and swapping) while two extra clients hang up streams after the first
    chunk (aborts). The bench is sized to take about `seconds` on this stack."""
    url = stack["CANDELA_HTTP_URL"]
    results = tempfile.mkdtemp(prefix="candela-bench-")
    bench = subprocess.Popen(
        [BIN, "bench", "serve", "--base-url", url, "--model", SERVED, "--dataset-name", "random",
         "--random-input-len", "48", "--random-output-len", "60", "--random-range-ratio", "0.8",
         "--random-prefix-len", "32", "--num-prompts", str(max(40, int(seconds * 0.8))),
         "--max-concurrency", "10", "--extra-body", '{"ignore_eos": false, "temperature": 0.8}',
         "--ready-check-timeout-sec", "0", "--disable-tqdm", "--save-result",
         "--result-dir", results, "--result-filename", "load.json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    counts = {"hung_up": 0}
    errors = []
    lock = threading.Lock()

    def hang_up(i):
        rnd = random.Random(i)
        while bench.poll() is None:
            body = {"model": LORA_MODELS[i], "prompt": SYSTEM + f"Customer {rnd.randint(0, 9999)} asks about cakes.",
                    "max_tokens": 64, "stream": True}
            req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=180) as r:
                    r.readline()  # first SSE chunk, then hang up mid-stream
                    with lock:
                        counts["hung_up"] += 1
            except OSError as e:  # noqa: PERF203 - a failed request fails the test below
                errors.append(repr(e))
            time.sleep(rnd.uniform(1, 4))

    threads = [threading.Thread(target=hang_up, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    out, _ = bench.communicate(timeout=max(600, seconds * 6))
    for t in threads:
        t.join()
    assert bench.returncode == 0, out
    assert not errors, errors[:5]
    result = json.loads(pathlib.Path(results, "load.json").read_text())
    shutil.rmtree(results, ignore_errors=True)
    assert result["failed"] == 0, out
    counts.update(complete=result["completed"], tokens=result["total_output_tokens"])
    print(out)
    return counts


@pytest.fixture(scope="module")
def loaded(stack):
    deadline = time.time() + 60
    while time.time() < deadline and [s["value"][1] for s in instant(stack, 'up{job="vllm"}', time.time())] != ["1"]:
        time.sleep(0.5)
    assert [s["value"][1] for s in instant(stack, 'up{job="vllm"}', time.time())] == ["1"], "sidecar never scraped"
    start = time.time()
    counts = run_load(stack, LOAD_SECONDS)
    end = time.time()
    # Two scrapes and two rule evaluations after the last request.
    time.sleep(4)
    print(f"\nload: {counts['complete']} complete requests ({counts['tokens']} tokens), "
          f"{counts['hung_up']} hung up, {end - start:.0f} s")
    assert counts["complete"] >= 30 and counts["hung_up"] >= 1, counts
    return {"start": start, "end": end, "counts": counts}


def has_data(result):
    return any(s.get("value") and s["value"][1] not in ("NaN",) for s in result)


def test_dashboard_panels_return_data(stack, loaded):
    at = loaded["end"]
    gpu_queries, evaluated, dashboards = [], 0, sorted((ROOT / "deploy/dashboards").glob("*.json"))
    assert [d.name for d in dashboards] == ["candela-full.json", "candela-overview.json"]
    dcgm = instant(stack, 'count({__name__=~"DCGM_.*"})', at)
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            panel_has_data = False
            for target in panel["targets"]:
                expr = substitute(target["expr"])
                assert "$" not in expr, expr
                result = instant(stack, expr, at)
                if "DCGM_" in expr and not dcgm:
                    # No GPU here: the DCGM gauges cannot exist. The panel's CPU-path query
                    # must carry it (checked below).
                    assert result == [], (expr, result)
                    gpu_queries.append(f"{path.name}: {panel['title']}: {target['legendFormat']}")
                    continue
                assert has_data(result), f"{path.name}: panel {panel['title']!r}: no data for {expr}"
                evaluated += 1
                panel_has_data = True
            assert panel_has_data, f"{path.name}: panel {panel['title']!r} shows nothing"
    print(f"\ndashboards: {evaluated} panel queries returned data"
          + (f"; {len(gpu_queries)} GPU (DCGM) queries empty because this machine has no GPU "
             f"(the sidecar exports no DCGM_* series): {gpu_queries}" if gpu_queries else ""))
    assert evaluated >= 35, evaluated


def test_dashboard_variables_list_the_stack(stack, loaded):
    for path in sorted((ROOT / "deploy/dashboards").glob("*.json")):
        variables = {v["name"]: v for v in json.loads(path.read_text())["templating"]["list"]}
        assert set(variables) == {"datasource", "namespace", "model_name"}, path
        assert variables["datasource"]["type"] == "datasource"
        for name, want in (("namespace", NAMESPACE), ("model_name", SERVED)):
            query = variables[name]["query"]["query"]
            m = re.fullmatch(r"label_values\((.*), (\w+)\)", query)
            assert m and m.group(2) == name, query
            values = api(stack, f"/api/v1/label/{name}/values", **{"match[]": substitute(m.group(1))})
            assert want in values, (query, values)


def rules_file():
    return yaml.safe_load((ROOT / "deploy/rules/candela.rules.yaml").read_text())


def test_every_recording_rule_returns_data_and_all_rules_are_healthy(stack, loaded):
    # Recording rules run every second: let them cover the end of the load.
    at = loaded["end"] + 3
    records = [r["record"] for g in rules_file()["groups"] for r in g["rules"] if "record" in r]
    missing = [r for r in records if not has_data(instant(stack, r, at))]
    assert not missing, f"recording rules without data: {missing}"
    groups = api(stack, "/api/v1/rules")["groups"]
    loaded_rules = [r for g in groups for r in g["rules"]]
    assert len(loaded_rules) == sum(len(g["rules"]) for g in rules_file()["groups"])
    unhealthy = [(r["name"], r.get("lastError")) for r in loaded_rules if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    alerts = {r["name"]: r["state"] for r in loaded_rules if r["type"] == "alerting"}
    assert len(alerts) == 7, alerts
    print(f"\nrecording rules: {len(records)} returned data; alert rules: {len(alerts)} evaluated "
          f"without error, states {alerts}")
    # Prometheus found the stack's Alertmanager.
    assert api(stack, "/api/v1/alertmanagers")["activeAlertmanagers"], "no active Alertmanager"


def test_seed_queries(stack, loaded):
    at = loaded["end"] + 3
    seed000 = [  # the handbook's four panels, as written (unscoped)
        "histogram_quantile(0.95, rate(vllm:time_to_first_token_seconds_bucket[5m]))",
        "histogram_quantile(0.95, rate(vllm:time_per_output_token_seconds_bucket[5m]))",
        "rate(vllm:generation_tokens_total[1m])",
        "vllm:num_requests_waiting + vllm:num_requests_running",
        "vllm:gpu_cache_usage_perc",
        "rate(vllm:num_preemptions_total[5m])",
        "vllm:num_requests_swapped", "vllm:cpu_cache_usage_perc",
        # Its fourth group, speculative decoding (the stack runs prompt lookup) and LoRA.
        "vllm:spec_decode_draft_acceptance_rate", "vllm:spec_decode_system_efficiency",
        "sum by (lora_name) (rate(vllm:lora_requests_total[1m]))",
    ]
    seed001 = [  # the article's series, from the recording rules
        'rate(vllm_request_count{status="SUCCESS"}[1m])',
        'rate(vllm_request_count{status="FAILED"}[1m])',
        'sum(rate(vllm_request_count{status="SUCCESS"}[1m])) / sum(rate(vllm_request_count[1m]))',
        "histogram_quantile(0.99, rate(vllm_request_latency_seconds_bucket[1m]))",
        "rate(vllm_request_latency_seconds_sum[1m]) / rate(vllm_request_latency_seconds_count[1m])",
        "vllm_generation_throughput", "vllm_gpu_cache_usage_ratio", "vllm_running_requests",
        "vllm_waiting_requests",
    ]
    for expr in seed000 + seed001:
        assert has_data(instant(stack, expr, at)), expr
    (failed,) = instant(stack, 'max_over_time(rate(vllm_request_count{status="FAILED"}[10s])[2m:1s])', at)
    assert float(failed["value"][1]) > 0, "hung-up clients show as FAILED (aborted) requests"
    (preempted,) = instant(stack, "max_over_time(vllm:num_preemptions_total[3m])", at)
    print(f"\nseed queries: {len(seed000)} (seed 000) + {len(seed001)} (seed 001) returned data; "
          f"{preempted['value'][1]} preemptions during the load")


def test_stats_log_spec_decode_lines_add_up_to_the_counters(stack, loaded):
    """The engine's log carries vLLM's `SpecDecoding metrics:` line beside the seed's stats
    line, and its per-interval Drafted/Accepted counts add up to the live counters."""
    log = pathlib.Path(stack["state"]) / "engine.log"

    def counter(name):
        with urllib.request.urlopen(f"{stack['CANDELA_HTTP_URL']}/metrics", timeout=10) as r:
            text = r.read().decode()
        (value,) = [float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name + "{")]
        return value

    pattern = re.compile(r"SpecDecoding metrics: Mean acceptance length: ([0-9.]+), Accepted throughput: "
                         r"[0-9.]+ tokens/s, Drafted throughput: [0-9.]+ tokens/s, Accepted: (\d+) tokens, "
                         r"Drafted: (\d+) tokens, Per-position acceptance rate: ([0-9., ]+), "
                         r"Avg Draft acceptance rate: [0-9.]+%")
    drafted = counter("vllm:spec_decode_num_draft_tokens_total")
    accepted = counter("vllm:spec_decode_num_accepted_tokens_total")
    assert drafted > 0 and 0 < accepted <= drafted, (drafted, accepted)
    deadline = time.time() + 15  # the last interval (5 s) is logged after the load ends
    while True:
        lines = [m for m in pattern.finditer(log.read_text())]
        if sum(int(m[3]) for m in lines) == drafted or time.time() > deadline:
            break
        time.sleep(1)
    assert lines, "no SpecDecoding metrics line in the engine log"
    assert "Avg prompt throughput:" in log.read_text()
    assert sum(int(m[3]) for m in lines) == drafted
    assert sum(int(m[2]) for m in lines) == accepted
    assert all(len(m[4].split(", ")) == 3 and 1.0 <= float(m[1]) <= 4.0 for m in lines), lines[0][0]
    print(f"\nspec decode: {len(lines)} log lines, {accepted:.0f} of {drafted:.0f} drafted tokens accepted")


def test_prometheus_adapter_rules(stack, loaded):
    at = loaded["end"]
    path = ROOT / "charts/candela/files/prometheus-adapter-rules.yaml"
    rules = yaml.safe_load(path.read_text())["rules"]
    assert {r["name"]["as"] for r in rules} == {"candela_num_requests_waiting", "candela_kv_cache_usage_perc"}
    for rule in rules:
        series = api(stack, "/api/v1/series", **{"match[]": rule["seriesQuery"],
                                                 "start": f"{loaded['start']:.3f}", "end": f"{at:.3f}"})
        assert series, rule["seriesQuery"]
        pods = {s["pod"] for s in series}
        metric = rule["name"]["matches"].strip("^$")
        # What the adapter sends for GET .../namespaces/local/pods/*/<name>.
        expr = (rule["metricsQuery"].replace("<<.Series>>", metric)
                .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"{"|".join(sorted(pods))}"')
                .replace("<<.GroupBy>>", "pod"))
        result = instant(stack, expr, at)
        assert has_data(result), expr
        assert {s["metric"]["pod"] for s in result} == pods, (expr, result)
        assert all(float(s["value"][1]) >= 0 for s in result)
    print(f"\nprometheus-adapter: {len(rules)} rules return per-pod values for pods {sorted(pods)}")


def test_operator_generated_queries(stack, loaded, tmp_path):
    """The operator's own children for an InferenceDeployment in this stack's namespace:
    KEDA triggers, HPA metrics, PrometheusRule, dashboards."""
    assert os.access(CRDGEN, os.X_OK), f"CANDELA_CRDGEN={CRDGEN} is not executable"
    at = loaded["end"] + 3
    counts = {}
    for backend in ("keda", "hpa"):
        spec = tmp_path / f"{backend}.yaml"
        spec.write_text(yaml.safe_dump({
            "apiVersion": "candela.dev/v1alpha1", "kind": "InferenceDeployment",
            "metadata": {"name": "smollm2", "namespace": NAMESPACE},
            "spec": {"model": {"source": "file:///models/SmolLM2-135M-Instruct.Q4_1.gguf", "servedName": SERVED},
                     "resources": {"gpus": 0}, "autoscaling": {"backend": backend, "maxReplicas": 3}},
        }))
        out = subprocess.run([CRDGEN, "render", str(spec)], capture_output=True, text=True, check=True).stdout
        children = {d["kind"]: d for d in yaml.safe_load_all(out) if d}
        if backend == "keda":
            triggers = children["ScaledObject"]["spec"]["triggers"]
            assert len(triggers) == 2
            for trigger in triggers:
                expr = trigger["metadata"]["query"]
                result = instant(stack, expr, loaded["end"])
                assert has_data(result), expr
                counts["keda"] = counts.get("keda", 0) + 1
            exprs = [r["expr"] for g in children["PrometheusRule"]["spec"]["groups"] for r in g["rules"] if "record" in r]
            for expr in exprs:
                assert has_data(instant(stack, expr, at)), expr
            counts["operator recording rules"] = len(exprs)
            for key, text in children["ConfigMap"]["data"].items():
                for panel in json.loads(text)["panels"]:
                    for target in panel["targets"]:
                        expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
                        if "DCGM_" in expr and not instant(stack, 'count({__name__=~"DCGM_.*"})', at):
                            continue
                        assert has_data(instant(stack, expr, loaded["end"])), (key, panel["title"], expr)
                        counts["operator dashboard queries"] = counts.get("operator dashboard queries", 0) + 1
        else:
            metrics = [m["pods"]["metric"]["name"] for m in children["HorizontalPodAutoscaler"]["spec"]["metrics"]]
            adapter = yaml.safe_load((ROOT / "charts/candela/files/prometheus-adapter-rules.yaml").read_text())
            assert sorted(metrics) == sorted(r["name"]["as"] for r in adapter["rules"]), metrics
            counts["hpa metrics served by the adapter rules"] = len(metrics)
    print(f"\noperator-generated queries with data: {counts}")


def test_render_full_dashboard_png(stack, loaded, tmp_path):
    """Every non-GPU panel of the full dashboard has data over the whole run (query_range)
    and renders; CANDELA_DASHBOARD_PNG keeps the picture (docs/dashboard-full.png)."""
    out = os.environ.get("CANDELA_DASHBOARD_PNG") or str(tmp_path / "dashboard-full.png")
    sys.path.insert(0, str(ROOT / "scripts"))
    import render_dashboard  # noqa: E402

    dashboard = json.loads((ROOT / "deploy/dashboards/candela-full.json").read_text())
    empty = render_dashboard.render(
        # Ends with the load, so the gauge shows the KV usage under load, not idle.
        dashboard, stack["CANDELA_PROMETHEUS_URL"], loaded["start"] - 10, loaded["end"], 2,
        {"namespace": NAMESPACE, "model_name": SERVED}, RATE_INTERVAL, out)
    gpu_only = {p["title"] for p in dashboard["panels"] if all("DCGM_" in t["expr"] for t in p["targets"])}
    assert not set(empty) - gpu_only, empty
    assert os.path.getsize(out) > 50_000
