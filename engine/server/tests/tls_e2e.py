"""TLS everywhere on a live stack: `candela serve` with vLLM's --ssl-* flags (HTTP and
gRPC), `candela sidecar` dialling the engine's gRPC and HTTP API over TLS (verifying the engine's
certificate for the Service name it carries; its LoRA sync loads an adapter) and serving /metrics over HTTPS to client
certificates only, and a real Prometheus scraping it with one. Certificates come from
scripts/make-test-certs.sh (a self-signed CA); a rotation under load (the files
replaced as a Kubernetes Secret volume replaces them) loses no request and reaches new
connections within seconds.

Run by scripts/test.sh (env CANDELA_BIN = the candela binary; `prometheus` on PATH).
Everything listens on 127.0.0.1 and is stopped at the end.
"""

import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import openai
import pytest
from live import free_port, start_prometheus, stop

try:
    import httpx
except ImportError:  # newer openai releases vendor it as httpx2
    import httpx2 as httpx

BIN = os.environ.get("CANDELA_BIN", "target/debug/candela")
# The name the engine's certificate carries besides localhost (a Service's, in a pod).
SERVICE_NAME = "candela.test.svc"


def https_context(ca: str, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 5):
    """(status, body) of a GET; HTTP errors are answers, not exceptions."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_ok(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if get(url, ctx)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered 200")


def served_cert(port: int, ca: str) -> bytes:
    """The DER certificate a fresh TLS connection to `port` is shown."""
    ctx = https_context(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def der(pem_path: str) -> bytes:
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def replace(path: str, source: str) -> None:
    """Replaces `path` at once with `source`'s content (as the kubelet swaps a Secret)."""
    tmp = path + ".new"
    shutil.copyfile(source, tmp)
    os.rename(tmp, path)


@pytest.fixture(scope="module")
def stack():
    assert shutil.which("prometheus"), "prometheus is required (apt-get install prometheus)"
    tmp = tempfile.mkdtemp(prefix="candela-tls-")
    certs = os.path.join(tmp, "certs")
    subprocess.run(["scripts/make-test-certs.sh", certs, SERVICE_NAME], check=True)
    # The files the processes read: what a mounted Secret would hold.
    live = os.path.join(tmp, "tls")
    os.makedirs(live)
    for src, dst in (("server.crt", "tls.crt"), ("server.key", "tls.key"), ("ca.crt", "ca.crt")):
        shutil.copyfile(os.path.join(certs, src), os.path.join(live, dst))
    c = lambda name: os.path.join(certs, name)  # noqa: E731
    t = lambda name: os.path.join(live, name)  # noqa: E731
    http, grpc, side = free_port(), free_port(), free_port()
    procs = []
    log = open(os.path.join(tmp, "log.txt"), "w")
    # A LoRA adapter the sidecar loads into the engine over HTTPS (its list file, as the
    # operator's ConfigMap holds it).
    hf_config = os.path.expanduser("~/.cache/candela/models/SmolLM2-135M-Instruct-hf/config.json")
    subprocess.run(["python3", "scripts/make-lora-adapters.py", "--config", hf_config, "--out", tmp,
                    "--names", "sql"], check=True, stdout=subprocess.DEVNULL)
    adapters = os.path.join(tmp, "adapters.json")
    with open(adapters, "w") as f:
        json.dump({"adapters": [{"name": "sql", "path": os.path.join(tmp, "sql")}]}, f)
    procs.append(subprocess.Popen(
        [BIN, "serve", "--host", "127.0.0.1", "--port", str(http), "--grpc-port", str(grpc),
         "--max-model-len", "1024", "--kv-cache-memory", "64MiB", "--max-num-seqs", "8",
         "--served-model-name", "smol", "--enable-lora", "--max-lora-rank", "8",
         "--ssl-keyfile", t("tls.key"), "--ssl-certfile", t("tls.crt")],
        env=dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True"), stdout=log, stderr=subprocess.STDOUT))
    wait_ok(f"https://localhost:{http}/health", https_context(c("ca.crt")))
    procs.append(subprocess.Popen(
        [BIN, "sidecar", "--engine-grpc", f"https://127.0.0.1:{grpc}", "--engine-ca-certs", t("ca.crt"),
         "--engine-server-name", SERVICE_NAME, "--listen", f"127.0.0.1:{side}",
         "--engine-http", f"https://127.0.0.1:{http}", "--lora-adapters-file", adapters,
         "--lora-sync-interval-ms", "300",
         "--ssl-keyfile", t("tls.key"), "--ssl-certfile", t("tls.crt"), "--ssl-ca-certs", t("ca.crt"),
         "--ssl-cert-reqs", "1", "--stats-interval-ms", "200"],
        stdout=log, stderr=subprocess.STDOUT))
    prometheus_ctx = https_context(c("ca.crt"), c("prometheus.crt"), c("prometheus.key"))
    wait_ok(f"https://localhost:{side}/metrics", prometheus_ctx)
    # The seed's scrape job over HTTPS with Prometheus's client certificate, and a job
    # without one (its target must be down).
    prometheus, prom = start_prometheus(tmp, f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: 'vllm'
    scheme: https
    tls_config:
      ca_file: '{c("ca.crt")}'
      cert_file: '{c("prometheus.crt")}'
      key_file: '{c("prometheus.key")}'
      server_name: '{SERVICE_NAME}'
    static_configs:
      - targets: ['127.0.0.1:{side}']
  - job_name: 'no-client-cert'
    scheme: https
    tls_config:
      ca_file: '{c("ca.crt")}'
      server_name: '{SERVICE_NAME}'
    static_configs:
      - targets: ['127.0.0.1:{side}']
""", log)
    procs.append(prometheus)
    yield {"http": http, "grpc": grpc, "side": side, "prom": prom, "certs": c, "live": t,
           "prometheus_ctx": prometheus_ctx, "log": os.path.join(tmp, "log.txt")}
    stop(procs)
    log.close()
    shutil.rmtree(tmp, ignore_errors=True)


def query(stack, expr: str) -> list:
    url = f"http://127.0.0.1:{stack['prom']}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_query(stack, expr: str, want, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    values = None
    while time.time() < deadline:
        values = [float(s["value"][1]) for s in query(stack, expr)]
        if values == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"{expr}: {values}, expected {want}")


def client(stack, ca: str | None = None) -> openai.OpenAI:
    verify = https_context(ca or stack["certs"]("ca.crt"))
    return openai.OpenAI(base_url=f"https://localhost:{stack['http']}/v1", api_key="none", max_retries=0,
                         http_client=httpx.Client(verify=verify, timeout=60))


def test_openai_client_over_https_and_plain_http_refused(stack):
    c = client(stack)
    chat = c.chat.completions.create(model="smol", max_tokens=8, temperature=0,
                                     messages=[{"role": "user", "content": "Say hi."}])
    assert chat.choices[0].message.content and chat.usage.completion_tokens >= 1
    chunks = list(c.completions.create(model="smol", prompt="Once upon a time", max_tokens=8,
                                       temperature=0, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices)

    # A client that does not trust the CA refuses the server.
    with pytest.raises(openai.APIConnectionError):
        openai.OpenAI(base_url=f"https://localhost:{stack['http']}/v1", api_key="none",
                      max_retries=0).models.list()
    # Plain HTTP on the TLS port: a 400 that says what to do.
    status, body = get(f"http://127.0.0.1:{stack['http']}/v1/models")
    assert status == 400 and "use https://" in body, (status, body)
    # The gRPC port speaks TLS too: a plain-text connection gets no HTTP/2 answer.
    with socket.create_connection(("127.0.0.1", stack["grpc"]), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        s.settimeout(5)
        reply = s.recv(100)
    assert not reply.startswith(b"\x00"), "a plain HTTP/2 frame came back from the TLS gRPC port"
    assert served_cert(stack["grpc"], stack["certs"]("ca.crt")) == der(stack["certs"]("server.crt"))


def test_bench_serve_over_https_trusts_ssl_cert_file(stack):
    # The benchmark client reads the system's roots, so SSL_CERT_FILE adds the CA (the
    # convention of OpenSSL and of rustls-native-certs).
    cmd = [BIN, "bench", "serve", "--base-url", f"https://localhost:{stack['http']}", "--dataset-name", "random",
           "--num-prompts", "4", "--random-input-len", "16", "--random-output-len", "4"]
    env = dict(os.environ, SSL_CERT_FILE=stack["certs"]("ca.crt"))
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Successful requests:                     4" in run.stdout, run.stdout
    untrusted = subprocess.run(cmd, env={k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"},
                               capture_output=True, text=True, timeout=120)
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr, untrusted.stderr[-2000:]


def test_prometheus_scrapes_the_sidecar_with_a_client_certificate_only(stack):
    # The sidecar reached the engine's gRPC over TLS (vllm: series exist only then) and
    # Prometheus scrapes them over HTTPS with its certificate.
    wait_query(stack, 'up{job="vllm"}', [1.0])
    wait_query(stack, 'candela_sidecar_engine_up{job="vllm"}', [1.0])
    assert query(stack, 'vllm:num_requests_running{job="vllm"}'), "engine series through the TLS sidecar"
    # Its LoRA sync reached the engine's HTTPS API (verifying the Service name) too.
    wait_query(stack, 'candela_sidecar_lora_in_sync{job="vllm"}', [1.0])
    assert "sql" in [m.id for m in client(stack).models.list().data]
    # Without a client certificate the scrape is refused.
    wait_query(stack, 'up{job="no-client-cert"}', [0.0])
    with urllib.request.urlopen(f"http://127.0.0.1:{stack['prom']}/api/v1/targets", timeout=10) as r:
        targets = json.load(r)["data"]["activeTargets"]
    (nocert,) = [t for t in targets if t["labels"]["job"] == "no-client-cert"]
    assert "403" in nocert["lastError"], nocert["lastError"]

    ca = stack["certs"]("ca.crt")
    side = stack["side"]
    status, body = get(f"https://localhost:{side}/metrics", https_context(ca))
    assert status == 403 and "client certificate" in body, (status, body)
    # The kubelet's probes (no client certificate) still reach /health and /ready.
    assert get(f"https://localhost:{side}/health", https_context(ca))[0] == 200
    assert get(f"https://localhost:{side}/ready", https_context(ca))[0] == 200
    # A certificate from another CA fails the handshake.
    stranger = https_context(ca, stack["certs"]("stranger.crt"), stack["certs"]("stranger.key"))
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        get(f"https://localhost:{side}/metrics", stranger)


def test_certificate_rotation_under_load_loses_nothing(stack):
    ca = stack["certs"]("ca.crt")
    old, new = der(stack["certs"]("server.crt")), der(stack["certs"]("server2.crt"))
    assert served_cert(stack["http"], ca) == old
    failures, done = [], []
    stop = threading.Event()

    def worker(i: int, keep_connection: bool):
        # Half the clients keep one connection open across the rotation, half open a new
        # one per request (and so meet the new certificate).
        c = client(stack)
        n = 0
        while not stop.is_set():
            if not keep_connection:
                c = client(stack)
            try:
                stream = c.completions.create(model="smol", prompt=f"Count to ten, {i}:", max_tokens=16,
                                              temperature=0.7, seed=n, stream=True)
                text = "".join(ch.choices[0].text for ch in stream if ch.choices)
                assert text
                done.append(1)
            except Exception as e:  # noqa: BLE001 - every failure is the test's finding
                failures.append(repr(e))
            n += 1

    threads = [threading.Thread(target=worker, args=(i, i % 2 == 0)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(4)
    before = len(done)
    # Key first, then certificate: in between the pair does not match and the old one
    # keeps being served.
    replace(stack["live"]("tls.key"), stack["certs"]("server2.key"))
    time.sleep(0.3)
    replace(stack["live"]("tls.crt"), stack["certs"]("server2.crt"))
    rotated = time.time()
    seen = {}
    while len(seen) < 3 and time.time() - rotated < 15:
        for name, port in (("http", stack["http"]), ("grpc", stack["grpc"]), ("sidecar", stack["side"])):
            if name not in seen and served_cert(port, ca) == new:
                seen[name] = time.time() - rotated
        time.sleep(0.1)
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    assert before >= 3 and len(done) > before + 3, (before, len(done))
    assert set(seen) == {"http", "grpc", "sidecar"}, f"new certificate served by {seen} only"
    assert max(seen.values()) < 5, seen
    print(f"rotation: {len(done)} requests, 0 failed; new certificate served after "
          + ", ".join(f"{k} {v:.1f} s" for k, v in seen.items()))
    # Prometheus keeps scraping through the rotation, and the sidecar's gRPC stream to the
    # engine (opened before it) was not dropped.
    wait_query(stack, 'up{job="vllm"}', [1.0])
    assert [float(s["value"][1]) for s in query(stack, 'min_over_time(up{job="vllm"}[20s])')] == [1.0]
    assert [float(s["value"][1]) for s in
            query(stack, 'min_over_time(candela_sidecar_engine_up{job="vllm"}[20s])')] == [1.0]
    with open(stack["log"]) as f:
        assert "TLS certificate reloaded" in f.read()
