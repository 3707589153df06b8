"""Writes docs/bench/tiers/README.md from scripts/bench-tiers.sh's raw results and asserts
scenario 2's conditions (exit status 1 when one fails).

    python scripts/bench-tiers-report.py OUT VERSION COMMAND THREADS CAP
"""

import json
import os
import sys

out, version, command, threads, cap = sys.argv[1:6]
raw = os.path.join(out, "raw")
phases = ["alone-capped", "mixed-capped", "alone-uncapped", "mixed-uncapped"]
r = {p: json.load(open(os.path.join(raw, f"{p}.json"))) for p in phases}
load = open(os.path.join(raw, "load.txt")).read().strip()
cores = os.cpu_count() or 1

failures = []
for p, x in r.items():
    if x["errors"]:
        failures.append(f"{p}: {len(x['errors'])} requests failed: {x['errors'][:3]}")
    if x["chat_ok"] != x["chat_count"]:
        failures.append(f"{p}: {x['chat_ok']}/{x['chat_count']} chat requests answered with text")
    if x["flex_ok"] != x["flex_count"]:
        failures.append(f"{p}: {x['flex_ok']}/{x['flex_count']} flex requests got all their tokens")
    if x["server_finished"] != x["sent"] or x["server_aborted"]:
        failures.append(
            f"{p}: the server finished {x['server_finished']:.0f} of {x['sent']} requests, "
            f"{x['server_aborted']:.0f} aborted"
        )
    if any(x["idle_after"].values()):
        failures.append(f"{p}: not idle afterwards: {x['idle_after']}")
    if x["chat_tiers"] != ["default"] or (x["flex_count"] and x["flex_tiers"] != ["flex"]):
        failures.append(f"{p}: tiers echoed {x['chat_tiers']} / {x['flex_tiers']}")
ratio = r["mixed-capped"]["ttft_p99_s"] / r["alone-capped"]["ttft_p99_s"]
if ratio > 2.0:
    failures.append(f"with the cap, chat TTFT p99 is {ratio:.2f}× chat alone (limit 2×)")
contrast = r["mixed-uncapped"]["ttft_p99_s"] / r["alone-uncapped"]["ttft_p99_s"]
contrast_capped = r["mixed-uncapped"]["ttft_p99_s"] / r["alone-capped"]["ttft_p99_s"]


def flex_rate(p):
    x = r[p]
    return x["flex_count"] * x["flex_max_tokens"] / x["flex_e2e_max_s"]


def ms(v):
    return f"{v * 1000:.0f}"


rows = []
for p in phases:
    x = r[p]
    cpu = x["client_cpu_seconds"] / x["elapsed_s"]
    slowest = "" if x["flex_e2e_max_s"] is None else f"{x['flex_e2e_max_s']:.0f}"
    rows.append(
        f"| {p} | {x['chat_ok']}/{x['chat_count']} | {x['flex_ok']}/{x['flex_count']} | "
        f"{ms(x['ttft_p50_s'])} | {ms(x['ttft_p99_s'])} | {ms(x['ttft_max_s'])} | "
        f"{x['server_preemptions']:.0f} | {x['elapsed_s']:.0f} | "
        f"{slowest} | "
        f"{cpu * 100:.1f} % of a core ({cpu / cores * 100:.1f} % of {cores}) |"
    )

a = r["alone-capped"]
text = f"""# Service tiers: offline `flex` work beside online chat (issue 22, scenario 2)

{version}. Command: {command}.

{r['mixed-capped']['flex_count']} `flex` requests
(`service_tier: "flex"`, {r['mixed-capped']['flex_max_tokens']} output tokens each with
`ignore_eos`, sent at once, not streamed) and a steady stream of {a['chat_count']} short
`default` chat requests ({a['chat_rate']:g}/s, {a['chat_max_tokens']} tokens, streamed,
starting 3 s after the flex batch), through the official `openai` client, against the
default model (SmolLM2-135M-Instruct Q4_1) on `candela serve --threads {threads}
--max-model-len 2048 --kv-cache-memory 1GiB`. Two servers from the same binary in the same
run: **capped** (`--max-num-seqs-per-tier flex={cap}`) and **uncapped** (no cap; the
contrast). Each serves the chat stream alone first (its own baseline), then the mixed
load. Chat TTFT is send → first streamed text. The client ran at `nice -n 19`.

| phase | chat ok | flex ok (all tokens) | chat TTFT p50 ms | p99 ms | max ms | preemptions | phase s | slowest flex s | client CPU |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

- **With the cap: chat TTFT p99 {ms(r['mixed-capped']['ttft_p99_s'])} ms = {ratio:.2f}× chat
  alone ({ms(a['ttft_p99_s'])} ms)** — limit 2×: {'met' if ratio <= 2.0 else 'NOT met'}.
- Without the cap: chat TTFT p99 {ms(r['mixed-uncapped']['ttft_p99_s'])} ms =
  {contrast:.2f}× chat alone on that server ({ms(r['alone-uncapped']['ttft_p99_s'])} ms),
  {contrast_capped:.2f}× chat alone on the capped one: every flex request
  runs in every step, so each chat prefill waits for and shares steps of {r['mixed-uncapped']['flex_count']}
  decoding sequences.
- The cap cost the batch nothing measurable here: the {r['mixed-capped']['flex_count']} flex requests' tokens came
  out at {flex_rate('mixed-capped'):.0f} tokens/s capped and {flex_rate('mixed-uncapped'):.0f} uncapped
  (one compute thread is saturated by 4 sequences already).
- Nothing lost: every request answered with its tokens, the server's
  `vllm:request_success_total` grew by exactly the requests sent with no abort, and after
  each phase `vllm:kv_cache_usage_perc`, `vllm:num_requests_running` and `_waiting` read 0
  (asserted by the script for all four phases).
- p99 of {a['chat_count']} samples is close to the largest; the max column shows it.

Machine load (`uptime`, {cores} cores; other engineers' builds share this machine):

```
{load}
```

Raw results (per-request TTFTs, checks, client CPU) in `raw/*.json`, server logs in
`raw/serve-*.log`.
"""
if failures:
    text += "\n**Failed:**\n\n" + "\n".join(f"- {f}" for f in failures) + "\n"
with open(os.path.join(out, "README.md"), "w") as f:
    f.write(text)
print(text)
if failures:
    print("bench-tiers: FAILED:\n" + "\n".join(failures), file=sys.stderr)
    sys.exit(1)
