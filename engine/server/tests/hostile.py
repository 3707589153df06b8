"""Hostile-client tests of `candela serve`: malformed requests must get OpenAI-shaped
4xx answers, and abusive clients (huge prompts, 200 streams that hang up mid-way)
must leave the server serving and its KV cache empty.

Needs only the standard library and httpx (which the `openai` venv of
`scripts/setup.sh --test-deps` has). Run against a live server, either way:

    CANDELA_URL=http://127.0.0.1:8000 ~/.cache/candela/venv/bin/pytest -q engine/server/tests/hostile.py
    CANDELA_URL=http://127.0.0.1:8000 ~/.cache/candela/venv/bin/python engine/server/tests/hostile.py

Env: CANDELA_URL (default http://127.0.0.1:8000), CANDELA_API_KEY (set it when the
server runs with --api-key; the auth tests are skipped otherwise), CANDELA_MODEL
(default: the first entry of /v1/models), HOSTILE_STREAMS (default 200).
"""

import asyncio
import json
import os
import re
import sys
import time
import urllib.parse

try:
    import httpx
except ImportError:  # newer openai releases vendor it as httpx2
    import httpx2 as httpx

BASE_URL = os.environ.get("CANDELA_URL", "http://127.0.0.1:8000").rstrip("/")
API_KEY = os.environ.get("CANDELA_API_KEY")
NUM_STREAMS = int(os.environ.get("HOSTILE_STREAMS", "200"))


class Skip(Exception):
    """Raised when a check does not apply to this server's configuration."""


_AS_SCRIPT = False


def _skip(reason: str):
    if _AS_SCRIPT:
        raise Skip(reason)
    import pytest

    pytest.skip(reason)


def _headers(key: str | None = API_KEY) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _client() -> httpx.Client:
    return httpx.Client(base_url=BASE_URL, headers=_headers(), timeout=120)


_MODEL: str | None = None


def model() -> str:
    global _MODEL
    if _MODEL is None:
        _MODEL = os.environ.get("CANDELA_MODEL") or _client().get("/v1/models").json()["data"][0]["id"]
    return _MODEL


def max_model_len() -> int:
    return _client().post("/tokenize", json={"prompt": "x"}).json()["max_model_len"]


def assert_openai_error(r: httpx.Response, status: int, needle: str | None = None) -> dict:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]}"
    body = r.json()
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"], body
    assert "type" in err and "param" in err and "code" in err, body
    if needle:
        assert needle.lower() in err["message"].lower(), f"`{needle}` not in {err['message']!r}"
    return err


def assert_still_serving():
    r = _client().post("/v1/completions", json={"model": model(), "prompt": "Hello", "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1
    assert httpx.get(f"{BASE_URL}/health", timeout=10).status_code == 200


def assert_all_blocks_free(timeout_s: float = 10.0):
    """Every KV block is back in the pool: `vllm:kv_cache_usage_perc` reads 0 on /metrics.

    Until the server exports /metrics this is a no-op that says so.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        r = httpx.get(f"{BASE_URL}/metrics", timeout=10)
        if r.status_code == 404:
            print("TODO(metrics): /metrics is not served yet; KV pool check skipped", file=sys.stderr)
            return
        assert r.status_code == 200, r.text[:300]
        values = [
            float(m.group(1))
            for m in re.finditer(r"^vllm:kv_cache_usage_perc(?:\{[^}]*\})?\s+(\S+)$", r.text, re.MULTILINE)
        ]
        assert values, "vllm:kv_cache_usage_perc missing from /metrics"
        if all(v == 0.0 for v in values):
            running = re.findall(r"^vllm:num_requests_running(?:\{[^}]*\})?\s+(\S+)$", r.text, re.MULTILINE)
            assert all(float(v) == 0.0 for v in running), f"requests still running: {running}"
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"KV cache still in use after {timeout_s}s: {values}")
        time.sleep(0.2)


# --- malformed requests -------------------------------------------------------


def test_invalid_json():
    c = _client()
    for body in [b"{not json", b"", b"[1, 2]", b'{"prompt": "x"', b"\xff\xfe"]:
        r = c.post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
        assert_openai_error(r, 400)
    r = c.post("/v1/chat/completions", content=b"null", headers={"Content-Type": "application/json"})
    assert_openai_error(r, 400)


def test_wrong_types():
    c = _client()
    cases = [
        ("/v1/completions", {"model": model(), "prompt": 42}, "prompt"),
        ("/v1/completions", {"model": model(), "prompt": "x", "max_tokens": "ten"}, "max_tokens"),
        ("/v1/completions", {"model": model(), "prompt": "x", "temperature": "hot"}, "temperature"),
        ("/v1/completions", {"model": model(), "prompt": "x", "stop": 5}, "stop"),
        ("/v1/completions", {"model": model(), "prompt": [1, "a"]}, "prompt"),
        ("/v1/completions", {"model": model(), "prompt": [-1]}, "prompt"),
        ("/v1/chat/completions", {"model": model(), "messages": "hi"}, "messages"),
        ("/v1/chat/completions", {"model": model(), "messages": [{"role": "user", "content": 7}]}, "messages"),
        ("/v1/chat/completions", {"model": model(), "messages": [{"role": "user", "content": "x"}], "logprobs": 3}, "logprobs"),
        ("/v1/chat/completions", {"model": model(), "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ]
    for path, body, needle in cases:
        assert_openai_error(c.post(path, json=body), 400, needle)


def test_out_of_range_params():
    c = _client()
    base = {"model": model(), "prompt": "x"}
    for extra, needle in [
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"logprobs": 50}, "logprobs"),
        ({"presence_penalty": 5}, "presence_penalty"),
        ({"stop": [""]}, "stop"),
        ({"min_tokens": 10, "max_tokens": 2}, "min_tokens"),
        ({"max_tokens": 10**15}, "context length"),
    ]:
        assert_openai_error(c.post("/v1/completions", json={**base, **extra}), 400, needle)
    chat = {"model": model(), "messages": [{"role": "user", "content": "x"}]}
    assert_openai_error(c.post("/v1/chat/completions", json={**chat, "logprobs": True, "top_logprobs": 50}), 400)
    assert_openai_error(c.post("/v1/chat/completions", json={**chat, "messages": []}), 400, "messages")


def test_one_megabyte_prompt_is_refused_as_too_long():
    prompt = "hello " * ((1 << 20) // 6 + 1)
    assert len(prompt) >= 1 << 20
    t = time.monotonic()
    r = _client().post("/v1/completions", json={"model": model(), "prompt": prompt, "max_tokens": 1})
    assert_openai_error(r, 400, "context length")
    assert time.monotonic() - t < 60
    r = _client().post("/v1/chat/completions", json={"model": model(), "messages": [{"role": "user", "content": prompt}]})
    assert_openai_error(r, 400, "context length")
    assert_still_serving()


def test_body_over_limit_is_413():
    body = b'{"prompt": "' + b"a" * (33 * 1024 * 1024) + b'"}'
    try:
        r = _client().post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
    except httpx.HTTPError:
        # The server may close the connection while the client is still sending.
        assert_still_serving()
        return
    assert r.status_code == 413, r.status_code
    assert_still_serving()


def test_prompt_over_max_model_len():
    n = max_model_len()
    r = _client().post("/v1/completions", json={"model": model(), "prompt": [100] * (n + 10), "max_tokens": 1})
    assert_openai_error(r, 400, "context length")
    r = _client().post("/v1/completions", json={"model": model(), "prompt": [100] * n})
    assert_openai_error(r, 400, "context length")
    # Prompt plus max_tokens one past the limit.
    r = _client().post("/v1/completions", json={"model": model(), "prompt": [100] * 10, "max_tokens": n - 9})
    assert_openai_error(r, 400, "context length")
    r = _client().post("/v1/completions", json={"model": model(), "prompt": [100] * 10, "max_tokens": 1})
    assert r.status_code == 200, r.text


def test_unknown_model_is_404():
    r = _client().post("/v1/completions", json={"model": "gpt-17", "prompt": "x"})
    err = assert_openai_error(r, 404)
    assert err["message"] == "The model `gpt-17` does not exist."
    r = _client().post("/v1/chat/completions", json={"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]})
    assert_openai_error(r, 404)


def test_missing_or_wrong_api_key_is_401():
    if not API_KEY:
        _skip("server has no --api-key (set CANDELA_API_KEY to test auth)")
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}]:
        r = httpx.get(f"{BASE_URL}/v1/models", headers=headers, timeout=10)
        assert_openai_error(r, 401)
        r = httpx.post(f"{BASE_URL}/v1/completions", headers=headers, json={"prompt": "x"}, timeout=10)
        assert_openai_error(r, 401)
    # Probes and scrapers need no key, as in vLLM.
    assert httpx.get(f"{BASE_URL}/health", timeout=10).status_code == 200
    assert httpx.get(f"{BASE_URL}/version", timeout=10).status_code == 200


# --- abusive clients ----------------------------------------------------------


async def _stream_and_hang_up(i: int, started: list) -> bool:
    """Opens a streaming completion on a raw socket, reads the first data chunk, then drops the connection."""
    url = urllib.parse.urlsplit(BASE_URL)
    port = url.port or (443 if url.scheme == "https" else 80)
    reader, writer = await asyncio.open_connection(url.hostname, port, ssl=url.scheme == "https" or None)
    body = json.dumps({
        "model": model(), "prompt": f"Story number {i}: once upon a time", "max_tokens": 200,
        "temperature": 0.8, "stream": True, "ignore_eos": True,
    }).encode()
    auth = f"Authorization: Bearer {API_KEY}\r\n" if API_KEY else ""
    writer.write(
        f"POST /v1/completions HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    )
    await writer.drain()
    got_data = False
    try:
        status = await asyncio.wait_for(reader.readline(), 120)
        if b" 200 " not in status:
            return False
        while True:
            line = await asyncio.wait_for(reader.readline(), 300)
            if not line:
                break
            if line.startswith(b"data: {"):
                got_data = True
                started.append(i)
                break
    finally:
        # Hang up without reading the rest: the server must abort this request.
        writer.transport.abort()
    return got_data


async def _many_hangups(n: int) -> list:
    started: list = []
    results = await asyncio.gather(*(_stream_and_hang_up(i, started) for i in range(n)), return_exceptions=True)
    return results


def test_many_streams_hang_up_mid_stream():
    results = asyncio.run(_many_hangups(NUM_STREAMS))
    errors = [r for r in results if isinstance(r, BaseException)]
    ok = sum(1 for r in results if r is True)
    # Some may be refused with 503 when --max-waiting is small; none may crash the server.
    assert not errors, errors[:3]
    assert ok > 0, "no stream produced a chunk"
    assert_still_serving()
    assert_all_blocks_free()


def test_server_still_serves_at_the_end():
    assert_still_serving()
    assert_all_blocks_free()


def main() -> int:
    global _AS_SCRIPT
    _AS_SCRIPT = True
    tests = [(name, fn) for name, fn in globals().items() if name.startswith("test_") and callable(fn)]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"PASS {name}")
        except Skip as s:
            print(f"SKIP {name}: {s}")
        except Exception as e:  # noqa: BLE001 — report every failure, keep going
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
    print(f"{len(tests) - failed}/{len(tests)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
