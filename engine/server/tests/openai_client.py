"""End-to-end tests of `candela serve` through the official `openai` Python client.

Run against a live server (the venv comes from `scripts/setup.sh --test-deps`):

    candela serve --max-model-len 2048 &
    CANDELA_URL=http://127.0.0.1:8000 ~/.cache/candela/venv/bin/pytest -q engine/server/tests/openai_client.py

Env: CANDELA_URL (default http://127.0.0.1:8000), CANDELA_API_KEY (when the server
has --api-key), CANDELA_MODEL (default: the first entry of /v1/models).
Sampling is greedy wherever a test compares texts, so results are deterministic.
"""

import os

import openai
import pytest

BASE_URL = os.environ.get("CANDELA_URL", "http://127.0.0.1:8000").rstrip("/")
API_KEY = os.environ.get("CANDELA_API_KEY", "EMPTY")


@pytest.fixture(scope="module")
def client() -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    return os.environ.get("CANDELA_MODEL") or client.models.list().data[0].id


CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name three colors of the rainbow."},
]


def test_models_list_has_vllm_fields(client, model):
    models = client.models.list().data
    assert any(m.id == model for m in models)
    card = next(m for m in models if m.id == model)
    assert card.object == "model"
    assert (card.model_extra or {}).get("max_model_len", 0) > 0


def test_chat_completion(client, model):
    r = client.chat.completions.create(model=model, messages=CHAT, max_tokens=16, temperature=0)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_content_parts_equal_string_content(client, model):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Name three colors of the rainbow."}]}]
    plain = [{"role": "user", "content": "Name three colors of the rainbow."}]
    a = client.chat.completions.create(model=model, messages=parts, max_tokens=8, temperature=0)
    b = client.chat.completions.create(model=model, messages=plain, max_tokens=8, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_completion(client, model):
    r = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-")
    assert r.choices[0].text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 8


def test_completion_is_deterministic_when_greedy(client, model):
    kw = dict(model=model, prompt="Once upon a time", max_tokens=12, temperature=0)
    assert client.completions.create(**kw).choices[0].text == client.completions.create(**kw).choices[0].text


def test_completion_echo(client, model):
    r = client.completions.create(model=model, prompt="Hello there", max_tokens=4, temperature=0, echo=True)
    assert r.choices[0].text.startswith("Hello there")


def test_completion_token_id_prompt(client, model):
    r = client.completions.create(model=model, prompt=[1, 2, 3, 4], max_tokens=2, temperature=0)
    assert r.usage.prompt_tokens == 4


def test_chat_stream_with_usage(client, model):
    stream = client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes and finishes[-1] in ("stop", "length")
    usage = chunks[-1]
    assert usage.choices == []
    assert usage.usage.completion_tokens > 0
    # The streamed text is the non-streamed text.
    full = client.chat.completions.create(model=model, messages=CHAT, max_tokens=16, temperature=0)
    assert text == full.choices[0].message.content
    assert usage.usage.completion_tokens == full.usage.completion_tokens


def test_completion_stream(client, model):
    kw = dict(model=model, prompt="The quick brown fox", max_tokens=12, temperature=0)
    chunks = list(client.completions.create(stream=True, **kw))
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == client.completions.create(**kw).choices[0].text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_n_greater_than_one(client, model):
    r = client.completions.create(model=model, prompt="Pick a number:", max_tokens=6, n=3, temperature=1.0, seed=1)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert r.usage.completion_tokens >= 3  # summed over all choices
    r = client.chat.completions.create(model=model, messages=CHAT, max_tokens=6, n=2, temperature=0.8, seed=3)
    assert sorted(c.index for c in r.choices) == [0, 1]
    stream = client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=6, n=2, stream=True, stream_options={"include_usage": True},
    )
    indices = {c.choices[0].index for c in stream if c.choices}
    assert indices == {0, 1}


def test_seed_reproduces_sampled_output(client, model):
    kw = dict(model=model, prompt="Tell me a story:", max_tokens=12, temperature=1.0, seed=1234)
    assert client.completions.create(**kw).choices[0].text == client.completions.create(**kw).choices[0].text


def test_stop_string_truncates(client, model):
    kw = dict(model=model, prompt="Count: 1, 2, 3, 4, 5,", max_tokens=24, temperature=0)
    full = client.completions.create(**kw).choices[0].text
    assert len(full) > 4, full
    stop = full[len(full) // 2:len(full) // 2 + 2]
    cut = full.index(stop)
    r = client.completions.create(stop=[stop], **kw)
    assert r.choices[0].text == full[:cut]
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(stop=stop, stream=True, **kw) if c.choices)
    assert streamed == full[:cut]
    r = client.completions.create(stop=[stop], extra_body={"include_stop_str_in_output": True}, **kw)
    assert r.choices[0].text == full[:cut] + stop


def test_completion_logprobs(client, model):
    r = client.completions.create(model=model, prompt="The sky is", max_tokens=5, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    n = r.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n
    assert all(x <= 0 for x in lp.token_logprobs)
    assert all(3 <= len(t) <= 4 for t in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset)
    # Greedy: the sampled token is the most likely one.
    for tok, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert abs(tok - max(top.values())) < 1e-3


def test_chat_logprobs(client, model):
    r = client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2,
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0
        assert isinstance(entry.bytes, list)
        assert len(entry.top_logprobs) == 2
        assert abs(entry.logprob - entry.top_logprobs[0].logprob) < 1e-3
    stream = client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=5, temperature=0, logprobs=True, stream=True,
    )
    streamed = [e for c in stream if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]


def test_vllm_extra_params(client, model):
    r = client.completions.create(
        model=model, prompt="Hello", max_tokens=8, temperature=0.7,
        extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1, "min_tokens": 8,
                    "ignore_eos": True, "priority": 0, "skip_special_tokens": True},
    )
    assert r.usage.completion_tokens == 8
    assert r.choices[0].finish_reason == "length"


def test_errors_map_to_openai_exceptions(client, model):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=model, prompt="x", max_tokens=-1)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model, messages=CHAT, temperature=-1)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=model, prompt="x", max_tokens=10**12)
