"""What the live-stack suites (prometheus_e2e, tls_e2e, deploy_e2e) share: free ports,
a real Prometheus started on a config, and stopping what they started."""

import os
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_prometheus(tmp: str, config: str, log) -> tuple[subprocess.Popen, int]:
    """Prometheus on `config` (YAML text) with its data under `tmp`, ready to query."""
    path = os.path.join(tmp, "prometheus.yml")
    with open(path, "w") as f:
        f.write(config)
    port = free_port()
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={path}", f"--storage.tsdb.path={tmp}/data",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("Prometheus never became ready")


def stop(procs: list) -> None:
    """SIGTERM in reverse start order, SIGKILL after 10 s."""
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
