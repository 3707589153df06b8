"""A real Prometheus scrapes `candela sidecar` (bearer token) while `candela serve`
serves load; the seed's four Grafana panel queries and the HPA signals return
non-empty, plausible values. The server also serves two LoRA adapters (made by
scripts/make-lora-adapters.py) that take part of the load: their
`vllm:lora_requests_total{lora_name}` and `vllm:lora_requests_info` series are live in
Prometheus.

Run by scripts/test.sh (env CANDELA_BIN = the candela binary; `prometheus` from
Debian's package on PATH). Everything listens on 127.0.0.1 and is stopped at the end.
"""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import pytest
from live import free_port, start_prometheus, stop

BIN = os.environ.get("CANDELA_BIN", "target/debug/candela")
TOKEN = "prom-scrape-token"
ADAPTERS = ("sql", "chat")
# What the load's clients address, in turn: the base model and each adapter.
MODELS = ("smol",) + ADAPTERS


def wait_http(url: str, timeout: float = 60, headers=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered 200")


@pytest.fixture(scope="module")
def stack():
    assert shutil.which("prometheus"), "prometheus is required (apt-get install prometheus)"
    tmp = tempfile.mkdtemp(prefix="candela-prom-")
    http, grpc, side = free_port(), free_port(), free_port()
    procs = []
    log = open(os.path.join(tmp, "log.txt"), "w")
    hf_config = os.path.expanduser("~/.cache/candela/models/SmolLM2-135M-Instruct-hf/config.json")
    subprocess.run(["python3", "scripts/make-lora-adapters.py", "--config", hf_config, "--out", tmp,
                    "--names", ",".join(ADAPTERS)], check=True, stdout=subprocess.DEVNULL)
    procs.append(subprocess.Popen(
        [BIN, "serve", "--host", "127.0.0.1", "--port", str(http), "--grpc-port", str(grpc),
         "--max-model-len", "1024", "--kv-cache-memory", "64MiB", "--max-num-seqs", "4",
         "--served-model-name", "smol", "--enable-lora", "--max-loras", "2", "--max-lora-rank", "8",
         "--lora-modules", *(f"{a}={tmp}/{a}" for a in ADAPTERS)], stdout=log, stderr=subprocess.STDOUT))
    wait_http(f"http://127.0.0.1:{http}/health")
    procs.append(subprocess.Popen(
        [BIN, "sidecar", "--engine-grpc", f"http://127.0.0.1:{grpc}", "--listen", f"127.0.0.1:{side}",
         "--metrics-token", TOKEN], stdout=log, stderr=subprocess.STDOUT))
    wait_http(f"http://127.0.0.1:{side}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    # The seed's scrape config, pointed at the sidecar, with the token.
    prometheus, prom = start_prometheus(tmp, f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: 'vllm'
    scrape_interval: 1s
    metrics_path: '/metrics'
    authorization:
      credentials: '{TOKEN}'
    static_configs:
      - targets: ['127.0.0.1:{side}']
""", log)
    procs.append(prometheus)
    yield {"http": http, "prom": prom, "side": side}
    stop(procs)
    log.close()
    shutil.rmtree(tmp, ignore_errors=True)


def query(stack, expr: str):
    url = f"http://127.0.0.1:{stack['prom']}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return [float(s["value"][1]) for s in body["data"]["result"]]


def load(stack, seconds: float, concurrency: int = 8) -> tuple[int, int, dict]:
    """Keeps `concurrency` completions in flight (more than --max-num-seqs, so some wait),
    client `i` on model `MODELS[i % 3]`; returns (requests, completion tokens, requests per
    adapter) as the clients saw them."""
    done = []
    tokens = []
    per_model = {m: 0 for m in MODELS}
    lock = threading.Lock()
    stop = time.time() + seconds

    def worker(i):
        n = 0
        model = MODELS[i % len(MODELS)]
        while time.time() < stop:
            body = json.dumps({"model": model, "prompt": f"Tell me a story about the number {i}.",
                               "max_tokens": 24, "temperature": 0.8, "seed": n}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{stack['http']}/v1/completions", data=body,
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                assert r.status == 200
                tokens.append(json.load(r)["usage"]["completion_tokens"])
            n += 1
        with lock:
            done.append(n)
            per_model[model] += n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done), sum(tokens), per_model


def test_seed_panels_and_hpa_signals_have_plausible_values(stack):
    # The scrape target is up before load starts.
    deadline = time.time() + 30
    while time.time() < deadline and query(stack, 'up{job="vllm"}') != [1.0]:
        time.sleep(0.5)
    assert query(stack, 'up{job="vllm"}') == [1.0]
    requests, generated, per_model = load(stack, seconds=25)
    assert requests >= 8
    time.sleep(3)  # two more scrapes after the last request

    # Panel 1: TTFT and TPOT p95 (seconds): present, positive, below a minute.
    for metric in ("vllm:time_to_first_token_seconds_bucket", "vllm:time_per_output_token_seconds_bucket"):
        (p95,) = query(stack, f"histogram_quantile(0.95, rate({metric}[5m]))")
        assert 0 < p95 < 60, (metric, p95)
    # Panel 2: generated tokens per second over the last minute.
    (tps,) = query(stack, "rate(vllm:generation_tokens_total[1m])")
    assert tps > 0.5, tps
    (total,) = query(stack, "vllm:generation_tokens_total")
    assert total == generated, (total, generated)
    # Panel 3: waiting + running, stacked; during the load both were non-zero at some point.
    assert query(stack, "vllm:num_requests_waiting + vllm:num_requests_running") == [0.0]
    (max_running,) = query(stack, "max_over_time(vllm:num_requests_running[1m])")
    assert 1 <= max_running <= 4, max_running
    (max_waiting,) = query(stack, "max_over_time(vllm:num_requests_waiting[1m])")
    assert max_waiting >= 1, "8 clients on 4 seqs must queue"
    # Panel 4: KV usage line and preemption-rate bars.
    (max_kv,) = query(stack, "max_over_time(vllm:gpu_cache_usage_perc[1m])")
    assert 0 < max_kv <= 1, max_kv
    (preempt_rate,) = query(stack, "rate(vllm:num_preemptions_total[5m])")
    assert preempt_rate >= 0

    # HPA / KEDA signals, as the operator's rules write them.
    assert query(stack, "sum(vllm:num_requests_waiting)") == [0.0]
    (kv,) = query(stack, "avg(vllm:kv_cache_usage_perc)")
    assert 0 <= kv <= 1
    for metric in ("vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket"):
        (p95,) = query(stack, f"histogram_quantile(0.95, sum by (le) (rate({metric}[5m])))")
        assert 0 < p95 < 60, (metric, p95)
    (success,) = query(stack, 'sum(vllm:request_success_total{finished_reason=~"stop|length"})')
    assert success == requests

    # LoRA: requests per adapter, and vLLM's info gauge with the adapters that ran.
    for adapter in ADAPTERS:
        (count,) = query(stack, f'vllm:lora_requests_total{{lora_name="{adapter}"}}')
        assert count == per_model[adapter] > 0, (adapter, count, per_model)
    assert len(query(stack, "vllm:lora_requests_total")) == len(ADAPTERS), "one series per adapter"
    # Idle after the load: one live series, no adapter running or waiting.
    (when,) = query(stack, 'vllm:lora_requests_info{max_lora="2", running_lora_adapters="", '
                           'waiting_lora_adapters=""}')
    assert when > 1.7e9, "the value is the Unix time of the last change"
    (busy,) = query(stack, 'count(count_over_time(vllm:lora_requests_info{running_lora_adapters=~".+"}[1m]))')
    assert busy >= 1, "adapters showed up as running during the load"


def doctor(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([BIN, "doctor", *flags], capture_output=True, text=True, timeout=120)


def test_doctor_reads_the_window_from_prometheus_and_the_sidecar(stack):
    """`candela doctor` against the same live stack: the Prometheus query path sees the
    traffic of a fresh load, and the sidecar path needs its bearer token."""
    requests, generated, _ = load(stack, seconds=10)
    time.sleep(3)  # the last scrapes after the load
    out = doctor("--prometheus", f"http://127.0.0.1:{stack['prom']}", "--selector", '{job="vllm"}',
                 "--window", "20s", "--interval", "1s", "--max-num-seqs", "4", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    facts = report["facts"]
    assert facts["snapshots"] >= 15, facts["snapshots"]
    assert facts["targets"] == 1
    # The window covers the whole load (and maybe the end of the previous test's).
    assert facts["finished"] >= requests, (facts["finished"], requests)
    assert facts["generation_tokens"]["total"] >= generated
    assert facts["ttft"]["count"] >= requests and 0 < facts["ttft"]["p95"] < 60
    assert 1 <= facts["running"]["max"] <= 4
    assert report["healthy"] == (report["findings"] == [])
    for f in report["findings"]:
        assert f["severity"] in ("critical", "warning", "info") and f["turn"], f

    side = f"http://127.0.0.1:{stack['side']}/metrics"
    out = doctor("--url", side, "--bearer-token", TOKEN, "--window", "2s", "--interval", "1s", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["facts"]["snapshots"] == 3
    out = doctor("--url", side, "--window", "2s", "--interval", "1s")
    assert out.returncode == 1
    assert out.stderr.strip().endswith(
        "401 Unauthorized: it wants a bearer token (--bearer-token or CANDELA_METRICS_TOKEN)"), out.stderr
