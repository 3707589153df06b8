"""Load driver of scripts/bench-tiers.sh (issue 22's scenario 2): a steady stream of short
`default` chat requests, alone or beside a batch of long-output `flex` requests, against a
live `candela serve`, through the official `openai` client.

    python scripts/bench-tiers.py --url URL --phase alone|mixed --out FILE.json [options]

`alone`: only the chat stream. `mixed`: the flex batch is sent at once (non-streamed,
`ignore_eos`, `max_tokens` long), the chat stream starts `--chat-delay` seconds later
and the phase ends when every flex request has answered. Chat TTFT is the time from
sending to the first streamed chunk carrying text (the role chunk comes before any token
and is not counted), as vLLM's benchmark measures it. Chat questions are numbered, so none
is served from the prefix cache; the flex prompts differ by their chapter number.

Checks written to the JSON (the shell script asserts on them): every request answered
200 with its tokens (flex: exactly `max_tokens`; chat: at least one), the server's
`vllm:request_success_total` grew by exactly the requests sent with no abort, and once
the phase ends the KV pool and the running/waiting gauges are back at 0. The client's own
CPU time (user + system) is in `client_cpu_seconds`.
"""

import argparse
import asyncio
import json
import re
import resource
import statistics
import time
import urllib.request

import openai

CHAT_PROMPTS = [
    "What is the capital of France?",
    "Name three colors of the rainbow.",
    "Say hello in Spanish.",
    "What is two plus two?",
    "Give me a synonym for happy.",
]
FLEX_PROMPT = "Write a long story about a lighthouse keeper and the sea, chapter {i}:"


def metrics(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        return r.read().decode()


def series(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for m in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
            found = True
    if not found:
        raise SystemExit(f"{name} {labels} is not exported")
    return total


def percentile(xs: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def chat(client: openai.AsyncOpenAI, model: str, i: int, max_tokens: int) -> dict:
    sent = time.perf_counter()
    ttft, tokens, tier = None, 0, None
    stream = await client.chat.completions.create(
        model=model,
        # Numbered, so no chat finds its own question in the prefix cache (only the
        # chat template's shared head is reused, in every phase alike).
        messages=[{"role": "user", "content": f"Question {i}: {CHAT_PROMPTS[i % len(CHAT_PROMPTS)]}"}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        tier = chunk.service_tier
        if chunk.choices and chunk.choices[0].delta.content and ttft is None:
            ttft = time.perf_counter() - sent
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return {"ttft": ttft, "tokens": tokens, "tier": tier, "e2e": time.perf_counter() - sent}


async def flex(client: openai.AsyncOpenAI, model: str, i: int, max_tokens: int) -> dict:
    sent = time.perf_counter()
    r = await client.completions.create(
        model=model,
        prompt=FLEX_PROMPT.format(i=i),
        max_tokens=max_tokens,
        temperature=0,
        extra_body={"ignore_eos": True, "service_tier": "flex"},
    )
    return {
        "tokens": r.usage.completion_tokens,
        "tier": (r.model_extra or {}).get("service_tier"),
        "e2e": time.perf_counter() - sent,
    }


async def run(args) -> dict:
    client = openai.AsyncOpenAI(
        base_url=f"{args.url}/v1", api_key="EMPTY", max_retries=0, timeout=3600
    )
    model = (await client.models.list()).data[0].id
    before = metrics(args.url)
    sent_before = series(before, "vllm:request_success_total")
    started = time.perf_counter()
    flex_tasks = []
    if args.phase == "mixed":
        flex_tasks = [
            asyncio.create_task(flex(client, model, i, args.flex_max_tokens))
            for i in range(args.flex)
        ]
        await asyncio.sleep(args.chat_delay)
    chat_tasks = []
    for i in range(args.chat_count):
        chat_tasks.append(asyncio.create_task(chat(client, model, i, args.chat_max_tokens)))
        await asyncio.sleep(1 / args.chat_rate)
    chats = await asyncio.gather(*chat_tasks, return_exceptions=True)
    chat_done = time.perf_counter() - started
    flexes = await asyncio.gather(*flex_tasks, return_exceptions=True)
    elapsed = time.perf_counter() - started

    # The engine publishes its gauges after each step: give it a moment to go idle.
    deadline = time.time() + 30
    while True:
        after = metrics(args.url)
        idle = {
            "kv_cache_usage_perc": series(after, "vllm:kv_cache_usage_perc"),
            "num_requests_running": series(after, "vllm:num_requests_running"),
            "num_requests_waiting": series(after, "vllm:num_requests_waiting"),
        }
        if not any(idle.values()) or time.time() > deadline:
            break
        await asyncio.sleep(0.1)
    errors = [repr(r) for r in [*chats, *flexes] if isinstance(r, BaseException)]
    chats_ok = [r for r in chats if isinstance(r, dict)]
    flex_ok = [r for r in flexes if isinstance(r, dict)]
    ttfts = [r["ttft"] for r in chats_ok if r["ttft"] is not None]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    sent = args.chat_count + len(flex_tasks)
    finished = series(after, "vllm:request_success_total") - sent_before
    return {
        "phase": args.phase,
        "label": args.label,
        "url": args.url,
        "chat_count": args.chat_count,
        "chat_rate": args.chat_rate,
        "chat_max_tokens": args.chat_max_tokens,
        "flex_count": len(flex_tasks),
        "flex_max_tokens": args.flex_max_tokens,
        "elapsed_s": elapsed,
        "chat_stream_s": chat_done,
        "ttft_s": ttfts,
        "ttft_p50_s": percentile(ttfts, 50) if ttfts else None,
        "ttft_p99_s": percentile(ttfts, 99) if ttfts else None,
        "ttft_mean_s": statistics.fmean(ttfts) if ttfts else None,
        "ttft_max_s": max(ttfts) if ttfts else None,
        "flex_e2e_max_s": max((r["e2e"] for r in flex_ok), default=None),
        "errors": errors,
        "chat_ok": sum(1 for r in chats_ok if r["tokens"] > 0 and r["ttft"] is not None),
        "chat_tiers": sorted({r["tier"] for r in chats_ok}),
        "flex_ok": sum(1 for r in flex_ok if r["tokens"] == args.flex_max_tokens),
        "flex_tiers": sorted({r["tier"] for r in flex_ok}),
        "server_finished": finished,
        "server_aborted": series(after, "vllm:request_success_total", finished_reason="abort")
        - series(before, "vllm:request_success_total", finished_reason="abort"),
        "server_preemptions": series(after, "vllm:num_preemptions_total")
        - series(before, "vllm:num_preemptions_total"),
        "idle_after": idle,
        "sent": sent,
        "client_cpu_seconds": usage.ru_utime + usage.ru_stime,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--phase", choices=["alone", "mixed"], required=True)
    p.add_argument("--label", default="")
    p.add_argument("--out", required=True)
    p.add_argument("--flex", type=int, default=64)
    p.add_argument("--flex-max-tokens", type=int, default=256)
    p.add_argument("--chat-count", type=int, default=40)
    p.add_argument("--chat-rate", type=float, default=2.0, help="chat requests per second")
    p.add_argument("--chat-max-tokens", type=int, default=16)
    p.add_argument("--chat-delay", type=float, default=3.0, help="seconds after the flex batch")
    args = p.parse_args()
    result = asyncio.run(run(args))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    p99 = result["ttft_p99_s"]
    print(
        f"{args.label or args.phase}: chat TTFT p50 {result['ttft_p50_s']:.3f} s, p99 {p99:.3f} s "
        f"({result['chat_ok']}/{args.chat_count} chat, {result['flex_ok']}/{result['flex_count']} flex, "
        f"{len(result['errors'])} errors, {result['server_preemptions']:.0f} preemptions, "
        f"{result['elapsed_s']:.0f} s, client CPU {result['client_cpu_seconds']:.1f} s)"
    )


if __name__ == "__main__":
    main()
