"""Service tiers through the official `openai` Python client: `service_tier` echoed in
answers and chunks, an unknown tier refused naming the field, the keys of
`--api-key-tiers` bounding their requests' tier, `--max-num-seqs-per-tier` holding a
tier's running requests at its cap while nothing is lost, and the per-tier gauges.

Run by scripts/api-tests.sh against a server started with
`--api-key KEY --api-key-tiers FILE --max-num-seqs-per-tier flex=1`, FILE holding
`FLEX_KEY flex` and `DEFAULT_KEY default`.

Env: CANDELA_URL, CANDELA_API_KEY (the --api-key key), CANDELA_FLEX_KEY and
CANDELA_DEFAULT_KEY (keys of the tier file); CANDELA_FLEX_CAP (the flex cap, 1).
"""

import concurrent.futures
import os
import re
import threading
import time
import urllib.request

import openai
import pytest

BASE_URL = os.environ.get("CANDELA_URL", "http://127.0.0.1:8000").rstrip("/")
API_KEY = os.environ.get("CANDELA_API_KEY", "EMPTY")
FLEX_KEY = os.environ.get("CANDELA_FLEX_KEY")
DEFAULT_KEY = os.environ.get("CANDELA_DEFAULT_KEY")
FLEX_CAP = int(os.environ.get("CANDELA_FLEX_CAP", "1"))

pytestmark = pytest.mark.skipif(
    not (FLEX_KEY and DEFAULT_KEY), reason="needs a server with --api-key-tiers (scripts/api-tests.sh)"
)

CHAT = [{"role": "user", "content": "Say hello."}]


def client_for(key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model() -> str:
    return client_for(API_KEY).models.list().data[0].id


def metrics() -> str:
    with urllib.request.urlopen(f"{BASE_URL}/metrics", timeout=10) as r:
        return r.read().decode()


def gauge(text: str, name: str, tier: str | None = None) -> float:
    label = f',tier="{tier}"' if tier else ""
    m = re.search(rf'^{re.escape(name)}{{[^}}]*model_name="[^"]*"{re.escape(label)}}} (\S+)$', text, re.M)
    assert m, f"{name}{label} not exported"
    return float(m.group(1))


def test_answers_echo_the_tier_they_ran_at(model):
    c = client_for(API_KEY)
    r = c.chat.completions.create(model=model, messages=CHAT, max_tokens=4, temperature=0)
    assert r.service_tier == "default"
    for tier in ("auto", "default", "flex", "priority"):
        r = c.chat.completions.create(model=model, messages=CHAT, max_tokens=4, temperature=0, service_tier=tier)
        assert r.service_tier == ("default" if tier == "auto" else tier), tier
    chunks = list(
        c.chat.completions.create(
            model=model, messages=CHAT, max_tokens=4, temperature=0, stream=True, service_tier="flex"
        )
    )
    assert chunks and all(ch.service_tier == "flex" for ch in chunks)
    r = c.completions.create(
        model=model, prompt="The capital of France is", max_tokens=4, extra_body={"service_tier": "priority"}
    )
    assert (r.model_extra or {}).get("service_tier") == "priority"


def test_an_unknown_tier_is_a_400_naming_the_field(model):
    with pytest.raises(openai.BadRequestError) as e:
        client_for(API_KEY).chat.completions.create(
            model=model, messages=CHAT, max_tokens=4, service_tier="scale"
        )
    assert e.value.body["param"] == "service_tier"
    assert "service_tier" in e.value.body["message"]


def test_a_keys_tier_is_its_default_and_its_ceiling(model):
    flex = client_for(FLEX_KEY)
    assert any(m.id == model for m in flex.models.list().data), "a tier file key is an API key"
    for asked in (None, "auto", "default", "priority"):
        kw = {"service_tier": asked} if asked else {}
        r = flex.chat.completions.create(model=model, messages=CHAT, max_tokens=4, temperature=0, **kw)
        assert r.service_tier == "flex", f"a flex key asked {asked} and ran at {r.service_tier}"
    default = client_for(DEFAULT_KEY)
    r = default.chat.completions.create(model=model, messages=CHAT, max_tokens=4, service_tier="priority")
    assert r.service_tier == "default", "lowered to the key's tier"
    r = default.chat.completions.create(model=model, messages=CHAT, max_tokens=4, service_tier="flex")
    assert r.service_tier == "flex", "a key may ask for less"
    with pytest.raises(openai.AuthenticationError):
        client_for("sk-not-a-key").chat.completions.create(model=model, messages=CHAT, max_tokens=4)


def test_the_flex_cap_holds_while_every_request_finishes(model):
    """Six flex requests at once against `flex=1`: never more than the cap run, the others
    wait (visible in the per-tier gauges) and all finish with every token; a default
    request meanwhile is admitted at once."""
    flex = client_for(FLEX_KEY)
    seen = {"running": 0.0, "waiting": 0.0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            text = metrics()
            seen["running"] = max(seen["running"], gauge(text, "candela_num_requests_running_by_tier", "flex"))
            seen["waiting"] = max(seen["waiting"], gauge(text, "candela_num_requests_waiting_by_tier", "flex"))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            jobs = [
                pool.submit(
                    flex.completions.create,
                    model=model,
                    prompt=f"Count to one hundred, {i}:",
                    max_tokens=24,
                    extra_body={"ignore_eos": True},
                )
                for i in range(6)
            ]
            time.sleep(0.3)
            online = client_for(API_KEY).chat.completions.create(model=model, messages=CHAT, max_tokens=2)
            results = [j.result() for j in jobs]
    finally:
        done.set()
        watcher.join()
    assert online.service_tier == "default"
    assert all(r.usage.completion_tokens == 24 for r in results), "nothing lost, nothing cut short"
    assert all((r.model_extra or {}).get("service_tier") == "flex" for r in results)
    assert seen["running"] <= FLEX_CAP, seen
    assert seen["waiting"] >= 1, f"the capped requests were never seen waiting: {seen}"
    deadline = time.time() + 10
    while True:
        text = metrics()
        idle = gauge(text, "vllm:num_requests_running") == 0 and gauge(text, "vllm:kv_cache_usage_perc") == 0
        if idle or time.time() > deadline:
            break
        time.sleep(0.05)
    assert idle, "the KV pool is free afterwards"


def test_per_tier_gauges_and_older_prefix_cache_names_are_exported():
    text = metrics()
    for tier in ("priority", "default", "flex"):
        for name in ("candela_num_requests_running_by_tier", "candela_num_requests_waiting_by_tier"):
            gauge(text, name, tier)
    assert not re.search(r'^vllm:num_requests_(running|waiting)\{[^}]*tier=', text, re.M)
    hits = gauge(text, "vllm:gpu_prefix_cache_hits_total")
    queries = gauge(text, "vllm:gpu_prefix_cache_queries_total")
    assert hits == gauge(text, "vllm:prefix_cache_hits_total")
    assert queries == gauge(text, "vllm:prefix_cache_queries_total") > 0
