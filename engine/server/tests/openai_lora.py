"""LoRA adapters end to end through the official `openai` client (and plain HTTP for
vLLM's load/unload endpoints), against a live server started by scripts/api-tests.sh:

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True candela serve --enable-lora --max-loras 1 \
        --max-cpu-loras 2 --lora-modules sql=DIR/sql chat=DIR/chat

Env: CANDELA_LORA_URL, CANDELA_API_KEY, CANDELA_LORA_DIR (where
scripts/make-lora-adapters.py wrote `sql`, `chat` and `poem`). Sampling is greedy
wherever texts are compared.
"""

import concurrent.futures
import json
import os
import re
import threading
import urllib.error
import urllib.request

import openai
import pytest

BASE_URL = os.environ.get("CANDELA_LORA_URL", "http://127.0.0.1:8000").rstrip("/")
API_KEY = os.environ.get("CANDELA_API_KEY", "EMPTY")
LORA_DIR = os.environ.get("CANDELA_LORA_DIR", "")
PROMPT = "The three most important things to know about the ocean are"


@pytest.fixture(scope="module")
def client() -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=API_KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def base(client) -> str:
    return next(m.id for m in client.models.list().data if (m.model_extra or {}).get("parent") is None)


def post(path: str, body: dict) -> tuple[int, str]:
    req = urllib.request.Request(
        f"{BASE_URL}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def complete(client, model: str, max_tokens: int = 16, prompt: str = PROMPT) -> str:
    r = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
    assert r.model == model
    return r.choices[0].text


def metrics() -> str:
    with urllib.request.urlopen(f"{BASE_URL}/metrics", timeout=30) as r:
        return r.read().decode()


def test_models_list_adapters_with_their_parent(client, base):
    cards = {m.id: m for m in client.models.list().data}
    for name in ("sql", "chat"):
        assert name in cards
        extra = cards[name].model_extra or {}
        assert extra["parent"] == base
        assert extra["root"].endswith(name)
    assert client.models.retrieve("sql").id == "sql"


def test_the_model_field_selects_an_adapter(client, base):
    plain = complete(client, base)
    sql = complete(client, "sql")
    chat = complete(client, "chat")
    assert len({plain, sql, chat}) == 3, (plain, sql, chat)
    assert complete(client, "sql") == sql, "greedy output through an adapter is deterministic"
    r = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
    )
    assert r.model == "chat" and r.choices[0].message.content


def test_an_unknown_adapter_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        complete(client, "no-such-adapter")
    assert "no-such-adapter" in str(e.value)


def test_load_and_unload_errors_are_vllms(client):
    assert post("/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": f"{LORA_DIR}/sql"})[0] == 400
    status, body = post("/v1/load_lora_adapter", {"lora_name": "x"})
    assert status == 400 and "lora_path" in body
    status, body = post("/v1/load_lora_adapter", {"lora_name": "bad", "lora_path": "/nonexistent/adapter"})
    assert status == 400 and "bad" in body
    status, body = post("/v1/unload_lora_adapter", {"lora_name": "never-loaded"})
    assert status == 404 and "never-loaded" in body
    status, body = post("/v1/load_lora_adapter", {"lora_name": "y", "lora_path": "/p", "scale": 2})
    assert status == 400 and "scale" in body, "unknown fields are refused, not ignored"


def test_more_adapters_than_max_loras_queue_and_answer_as_alone(client, base):
    # --max-loras 1: requests of three adapters and the base at once; each must succeed
    # and give what it gives alone.
    status, _ = post("/v1/load_lora_adapter", {"lora_name": "poem", "lora_path": f"{LORA_DIR}/poem"})
    assert status == 200
    try:
        models = [base, "sql", "chat", "poem"] * 4
        alone = {m: complete(client, m, 12) for m in set(models)}
        with concurrent.futures.ThreadPoolExecutor(len(models)) as pool:
            together = list(pool.map(lambda m: (m, complete(client, m, 12)), models))
        for m, text in together:
            assert text == alone[m], m
        # --max-cpu-loras 2 with three adapters: some were read from disk again.
        assert len({alone[m] for m in models}) == 4
    finally:
        assert post("/v1/unload_lora_adapter", {"lora_name": "poem"})[0] == 200


def test_unload_under_load_drops_no_request(client):
    # Eight long streams through `sql`; unload it while they run: every stream ends
    # normally with all its tokens, and only new requests see the 404.
    started = threading.Barrier(9)

    def stream() -> tuple[str, int]:
        s = client.completions.create(model="sql", prompt=PROMPT, max_tokens=48, temperature=0,
                                      stream=True, stream_options={"include_usage": True})
        first, finish, tokens = True, None, 0
        for chunk in s:
            if first:
                started.wait(timeout=120)
                first = False
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return finish, tokens

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(stream) for _ in range(8)]
        started.wait(timeout=120)
        status, body = post("/v1/unload_lora_adapter", {"lora_name": "sql"})
        assert status == 200, body
        results = [f.result() for f in futures]
    for finish, tokens in results:
        assert finish in ("length", "stop")
        assert finish == "stop" or tokens == 48
    with pytest.raises(openai.NotFoundError):
        complete(client, "sql")
    assert "sql" not in {m.id for m in client.models.list().data}
    status, body = post("/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": f"{LORA_DIR}/sql"})
    assert status == 200 and body == "Success: LoRA adapter 'sql' added successfully."
    assert complete(client, "sql")


def test_lora_metrics(client):
    complete(client, "chat")
    text = metrics()
    count = re.search(r'^vllm:lora_requests_total\{[^}]*lora_name="chat"[^}]*\} (\S+)$', text, re.M)
    assert count and float(count.group(1)) >= 1
    info = re.search(r"^vllm:lora_requests_info\{([^}]*)\} (\S+)$", text, re.M)
    assert info and 'max_lora="1"' in info.group(1)
    assert float(info.group(2)) > 1.7e9, "vLLM's value: the Unix time of the last change"
    names = set(re.findall(r'lora_name="([^"]*)"', text))
    assert names <= {"sql", "chat", "poem"}, "only loaded adapters' names appear"
