"""Structured outputs, tool calling and the other request fields real clients send,
through the official `openai` Python client against a live `candela serve`.

Env: CANDELA_URL / CANDELA_API_KEY as in openai_client.py (the default SmolLM2 model),
and CANDELA_QWEN_URL: a server on the Qwen2.5 Q4_K_M GGUF started with
`--enable-auto-tool-choice --tool-call-parser hermes` (scripts/api-tests.sh starts both).
Sampled tests run at temperature 1.0: every one of their outputs must validate.
"""

import enum
import json
import os
import re
from typing import Annotated

import urllib.request

import jsonschema
import openai
import pydantic
import pytest

BASE_URL = os.environ.get("CANDELA_URL", "http://127.0.0.1:8000").rstrip("/")
QWEN_URL = os.environ.get("CANDELA_QWEN_URL", "").rstrip("/")
API_KEY = os.environ.get("CANDELA_API_KEY", "EMPTY")
SAMPLES = 100


@pytest.fixture(scope="module")
def client() -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=API_KEY, max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def model(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


@pytest.fixture(scope="module")
def qwen() -> openai.OpenAI:
    assert QWEN_URL, "CANDELA_QWEN_URL must name the Qwen2.5 server (scripts/api-tests.sh starts it)"
    return openai.OpenAI(base_url=f"{QWEN_URL}/v1", api_key=API_KEY, max_retries=0, timeout=600)


def server_post(path, body, base=BASE_URL):
    """vLLM's non-/v1 routes (`/tokenize`, `/detokenize`)."""
    req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def ask(text):
    return [{"role": "user", "content": text}]


# --- structured outputs -------------------------------------------------------


class Species(str, enum.Enum):
    cat = "cat"
    dog = "dog"
    parrot = "parrot"


class Owner(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    age: int = pydantic.Field(ge=0, le=120)


class Pet(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    species: Species
    tags: list[Annotated[str, pydantic.Field(max_length=16)]] = pydantic.Field(max_length=3)
    owner: Owner
    vaccinated: bool


def test_parse_with_a_pydantic_model_validates_every_sample(client, model):
    r = client.beta.chat.completions.parse(
        model=model, messages=ask("Describe a pet as JSON."), response_format=Pet,
        temperature=1.0, n=SAMPLES, max_tokens=300, seed=7,
    )
    assert len(r.choices) == SAMPLES
    for c in r.choices:
        assert c.finish_reason == "stop", c.message.content
        assert isinstance(c.message.parsed, Pet), c.message.content
        Pet.model_validate_json(c.message.content)


SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "population": {"type": "integer", "minimum": 0, "maximum": 100000000},
        "climate": {"enum": ["hot", "mild", "cold"]},
        "districts": {
            "type": "array", "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 16}, "area_km2": {"type": "integer", "minimum": 1, "maximum": 9999}},
                "required": ["name", "area_km2"], "additionalProperties": False,
            },
        },
    },
    "required": ["city", "climate", "districts"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("strict", [True, False])
def test_json_schema_response_format_validates_every_sample(client, model, strict):
    r = client.chat.completions.create(
        model=model, messages=ask("Give facts about a city as JSON."), temperature=1.0, n=SAMPLES // 2,
        max_tokens=300, seed=11,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": strict}},
    )
    for c in r.choices:
        assert c.finish_reason == "stop", c.message.content
        jsonschema.validate(json.loads(c.message.content), SCHEMA)


def test_json_schema_streamed_validates(client, model):
    stream = client.chat.completions.create(
        model=model, messages=ask("Give facts about a city as JSON."), temperature=1.0, n=4, seed=5,
        max_tokens=300, stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}},
    )
    texts = {}
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
    assert sorted(texts) == [0, 1, 2, 3]
    for text in texts.values():
        jsonschema.validate(json.loads(text), SCHEMA)


def test_json_object_on_completions_and_chat(client, model):
    r = client.chat.completions.create(
        model=model, messages=ask("Reply with a JSON object."), temperature=1.0, n=10, max_tokens=150,
        response_format={"type": "json_object"}, seed=3,
    )
    for c in r.choices:
        if c.finish_reason == "stop":
            assert isinstance(json.loads(c.message.content), dict)
    assert any(c.finish_reason == "stop" for c in r.choices)
    r = client.completions.create(
        model=model, prompt="A JSON object describing a book:", max_tokens=120, temperature=0,
        extra_body={"guided_json": {"type": "object", "properties": {"title": {"type": "string", "maxLength": 30}},
                                    "required": ["title"], "additionalProperties": False}},
    )
    assert set(json.loads(r.choices[0].text)) == {"title"}


def test_guided_choice_regex_and_grammar_hold_for_every_sample(client, model):
    choices = ["positive", "negative", "neutral"]
    r = client.chat.completions.create(
        model=model, messages=ask("Sentiment of 'I love it'?"), temperature=1.0, n=SAMPLES, max_tokens=10,
        extra_body={"guided_choice": choices},
    )
    assert {c.message.content for c in r.choices} <= set(choices)

    pattern = r"[A-Z][a-z]{2,8} [0-9]{1,3}(\.[0-9])?"
    r = client.completions.create(
        model=model, prompt="A name and a number:", temperature=1.0, n=SAMPLES, max_tokens=20,
        extra_body={"guided_regex": pattern},
    )
    for c in r.choices:
        assert re.fullmatch(pattern, c.text), c.text

    gbnf = 'root ::= "(" num " " op " " num ")"\nop ::= "+" | "-" | "*"\nnum ::= [1-9] [0-9]?\n'
    r = client.completions.create(
        model=model, prompt="An arithmetic expression:", temperature=1.0, n=SAMPLES, max_tokens=20,
        extra_body={"guided_grammar": gbnf},
    )
    for c in r.choices:
        assert re.fullmatch(r"\([1-9][0-9]? [-+*] [1-9][0-9]?\)", c.text), c.text

    lark = 'start: "yes" | "no" | "maybe"'
    r = client.chat.completions.create(
        model=model, messages=ask("Will it rain?"), temperature=1.0, n=20, max_tokens=10,
        extra_body={"structured_outputs": {"grammar": lark}},
    )
    assert {c.message.content for c in r.choices} <= {"yes", "no", "maybe"}


def test_invalid_constraints_are_400_naming_the_field(client, model):
    bad = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}},
         "response_format"),
        ({"guided_regex": "(unclosed"}, "guided_regex"),
        ({"guided_choice": []}, "guided_choice"),
        ({"guided_grammar": 'root ::= "a'}, "guided_grammar"),
        ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
        ({"structured_outputs": {"structural_tag": {}}}, "structured_outputs"),
    ]
    for body, field in bad:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=model, messages=ask("hi"), max_tokens=4, extra_body=body)
        assert e.value.body["param"] == field, (body, e.value.body)


# --- tools --------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30},
                           "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}},
                       "required": ["zone"], "additionalProperties": False},
    },
}
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}


def check_calls(calls):
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("chatcmpl-tool-")
        jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])


def streamed_calls(stream):
    calls, finish, content = {}, None, ""
    for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            for d in c.delta.tool_calls or []:
                call = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = call["id"] or d.id
                call["name"] = call["name"] or (d.function.name if d.function else None)
                call["arguments"] += (d.function.arguments or "") if d.function else ""
            finish = c.finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish, content


def test_tool_choice_required_streamed_and_not(client, model):
    kw = dict(model=model, messages=ask("What's the weather in Paris?"), tools=[WEATHER, TIME],
              tool_choice="required", max_tokens=120)
    r = client.chat.completions.create(temperature=1.0, n=10, seed=2, **kw)
    for c in r.choices:
        assert c.finish_reason == "tool_calls"
        assert c.message.content is None
        check_calls(c.message.tool_calls)
    calls, finish, content = streamed_calls(client.chat.completions.create(stream=True, temperature=0, **kw))
    assert finish == "tool_calls" and content == ""
    for call in calls:
        assert call["id"].startswith("chatcmpl-tool-")
        jsonschema.validate(json.loads(call["arguments"]), PARAMS[call["name"]])


def test_named_tool_choice_streamed_and_not(client, model):
    kw = dict(model=model, messages=ask("Time in Tokyo?"), tools=[WEATHER, TIME], max_tokens=80,
              tool_choice={"type": "function", "function": {"name": "get_time"}})
    r = client.chat.completions.create(temperature=1.0, n=10, seed=4, **kw)
    for c in r.choices:
        assert [t.function.name for t in c.message.tool_calls] == ["get_time"]
        check_calls(c.message.tool_calls)
    calls, _, _ = streamed_calls(client.chat.completions.create(stream=True, temperature=0, **kw))
    assert [c["name"] for c in calls] == ["get_time"]
    jsonschema.validate(json.loads(calls[0]["arguments"]), PARAMS["get_time"])


def test_tool_requests_the_server_cannot_honour_are_400(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=ask("hi"), tools=[WEATHER], max_tokens=4,
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert e.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model, messages=ask("hi"), max_tokens=4, tool_choice="required")


def test_auto_tool_call_with_qwen_and_a_full_round_trip(qwen):
    model = qwen.models.list().data[0].id
    messages = [{"role": "user", "content": "What is the weather like in Paris right now, in celsius?"}]
    r = qwen.chat.completions.create(model=model, messages=messages, tools=[WEATHER, TIME], temperature=0,
                                     max_tokens=120)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c.message
    check_calls(c.message.tool_calls)
    call = c.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "paris" in json.loads(call.function.arguments)["city"].lower()

    # The same answer streamed: same call, same arguments.
    calls, finish, _ = streamed_calls(qwen.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER, TIME], temperature=0, max_tokens=120, stream=True))
    assert finish == "tool_calls"
    assert [(x["name"], x["arguments"]) for x in calls] == [(call.function.name, call.function.arguments)]

    # The call and its result go back in; the model answers in text.
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 21, "sky": "sunny"})},
    ]
    # The model's own template shows the call and the tool's answer in the next prompt.
    ids = server_post("/tokenize", {"model": model, "messages": messages, "tools": [WEATHER]}, QWEN_URL)["tokens"]
    prompt = server_post("/detokenize", {"model": model, "tokens": ids}, QWEN_URL)["prompt"]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"' in prompt, prompt
    assert '<tool_response>\n{"temperature_c": 21, "sky": "sunny"}\n</tool_response>' in prompt, prompt
    # The 0.5B coder model repeats the call before it answers; the answer carries the result.
    r = qwen.chat.completions.create(model=model, messages=messages, tools=[WEATHER], temperature=0,
                                     max_tokens=60)
    final = r.choices[0]
    assert final.finish_reason in ("stop", "length")
    assert not final.message.tool_calls
    assert "21" in final.message.content, final.message.content


# --- other fields -------------------------------------------------------------


def test_suffix_is_refused(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model, prompt="def f(", suffix="return x", max_tokens=4)
    assert e.value.body["param"] == "suffix"


def test_echo_with_logprobs_returns_prompt_tokens(client, model):
    prompt = "The capital of France is"
    r = client.completions.create(model=model, prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=2)
    lp = r.choices[0].logprobs
    n_prompt = r.usage.prompt_tokens
    assert len(lp.tokens) == n_prompt + r.usage.completion_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x is not None and x <= 0 for x in lp.token_logprobs[1:])
    assert "".join(lp.tokens).startswith(prompt)
    assert r.choices[0].text.startswith(prompt)
    assert lp.text_offset[0] == 0


def test_prompt_logprobs(client, model):
    r = client.completions.create(model=model, prompt="One two three four", max_tokens=2, temperature=0,
                                  extra_body={"prompt_logprobs": 1})
    plp = r.choices[0].model_extra["prompt_logprobs"]
    assert plp[0] is None
    assert len(plp) == r.usage.prompt_tokens
    for entry in plp[1:]:
        assert 1 <= len(entry) <= 2
        assert all(v["logprob"] <= 0 for v in entry.values())


def test_assistant_prefill_continues_the_final_message(client, model):
    start = "The three primary colors are red,"
    messages = ask("Name the primary colors.") + [{"role": "assistant", "content": start}]
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0,
                                       extra_body={"continue_final_message": True, "add_generation_prompt": False})
    prompt = server_post("/tokenize", {"model": model, "messages": messages, "add_generation_prompt": False})
    full = client.completions.create(model=model, prompt=prompt["tokens"][:-2], max_tokens=8, temperature=0)
    # The prompt ends in the message text (the template's `<|im_end|>\n` is cut off).
    assert r.choices[0].message.content == full.choices[0].text


def test_logit_bias_changes_the_output(client, model):
    kw = dict(model=model, prompt="The capital of France is", max_tokens=4, temperature=0, logprobs=0)
    base = client.completions.create(**kw)
    ids = server_post("/tokenize", {"model": model, "prompt": " banana", "add_special_tokens": False})["tokens"]
    forced = client.completions.create(logit_bias={str(ids[0]): 100}, **kw)
    assert forced.choices[0].text != base.choices[0].text
    assert forced.choices[0].logprobs.tokens[0] == server_post(
        "/detokenize", {"model": model, "tokens": [ids[0]]})["prompt"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(logit_bias={"7": 500}, **kw)
    assert "logit_bias" in str(e.value)


def test_request_id_header_is_echoed_unchanged(client, model):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=ask("hi"), max_tokens=2, extra_headers={"X-Request-Id": "trace-42.abc"})
    assert raw.headers["x-request-id"] == "trace-42.abc"
    assert raw.parse().id == "chatcmpl-trace-42.abc"


def test_max_completion_tokens_and_harmless_fields(client, model):
    r = client.chat.completions.create(model=model, messages=ask("Tell me a long story."), temperature=0,
                                       max_completion_tokens=5, user="u-1", metadata={"k": "v"}, store=False)
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"


def test_continuous_usage_stats(client, model):
    stream = client.completions.create(model=model, prompt="Once upon a time", max_tokens=6, temperature=0,
                                       stream=True,
                                       stream_options={"include_usage": True, "continuous_usage_stats": True})
    counts = [c.usage.completion_tokens for c in stream if c.choices]
    assert counts == sorted(counts) and counts[-1] == 6


def test_unknown_fields_are_400_naming_them(client, model):
    for body, field in [({"use_beam_search": True}, "use_beam_search"), ({"functions": []}, "functions"),
                        ({"stream_options": {"include_usage": True, "bogus": 1}}, "stream_options.bogus")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=model, messages=ask("hi"), max_tokens=2, extra_body=body)
        assert e.value.body["param"] == field, e.value.body
