#!/usr/bin/env python3
"""Turns scripts/bench-lora.sh's raw results into docs/bench/lora/README.md.

Usage: bench-lora-report.py OUT THREADS NUM_PROMPTS VERSION MODEL

Reads OUT/raw/*.json (vLLM-format results), the /metrics scrapes *.before / *.after and
the client's /usr/bin/time files beside them. Checks that the server counted exactly the
benchmark's output tokens, and that `vllm:lora_requests_total` grew by the run's requests
in the mixed mode and stayed put in the base mode; exits 1 (after writing the report)
when a check fails.
"""

import collections
import glob
import json
import os
import re
import sys

out, threads, num_prompts, version, model = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]


def scrape(path):
    """{series: value} of a /metrics excerpt."""
    values = {}
    for line in open(path):
        m = re.match(r"^(\S+?)(\{[^}]*\})? (\S+)$", line.strip())
        if m:
            values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return values


rows = collections.defaultdict(lambda: collections.defaultdict(list))
failures, client = [], {"wall": 0.0, "cpu": 0.0}
for path in sorted(glob.glob(os.path.join(out, "raw", "*.json"))):
    stem = path[:-5]
    name, mode = os.path.basename(stem).rsplit("-", 1)
    r = json.load(open(path))
    before, after = scrape(stem + ".before"), scrape(stem + ".after")
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    got = sum(v for k, v in delta.items() if k.startswith("vllm:generation_tokens_total"))
    if got != r["total_output_tokens"]:
        failures.append(f"{name}-{mode}: server counted {got:.0f} generation tokens, benchmark {r['total_output_tokens']}")
    lora = sum(v for k, v in delta.items() if k.startswith("vllm:lora_requests_total"))
    want = num_prompts if mode == "lora4" else 0
    if lora != want or r["completed"] != num_prompts:
        failures.append(f"{name}-{mode}: {r['completed']} completed, lora_requests_total grew by {lora:.0f} (expected {want})")
    rows[name.rsplit("-r", 1)[0]][mode].append(r)
    wall, user, sys_ = map(float, open(stem + ".time").read().split())
    client["wall"] += wall
    client["cpu"] += user + sys_

mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
lines = [
    "# LoRA adapters: four mixed against the base model",
    "",
    f"`scripts/bench-lora.sh` on this 2-core machine: one `candela serve --threads {threads} "
    f"--enable-lora --max-loras 4` on {model} with four rank-8 adapters on all seven "
    f"projections (made by `scripts/make-lora-adapters.py`), {version}. {num_prompts} random "
    "prompts of 128 tokens, 128 output tokens (`ignore_eos`), max-concurrency 32. *base*: every "
    "request on the base model; *lora4*: every request on one of the four adapters drawn at "
    "random (`candela bench serve --lora-modules a1 a2 a3 a4`), so each step mixes all four. "
    "The modes alternate on the same server; each row is the mean of its rounds.",
    "",
    "| Run | Mode | Output tok/s | Mean TTFT (ms) | Mean TPOT (ms) | lora4 / base |",
    "|---|---|---:|---:|---:|---:|",
]
ratios = {}
for run in sorted(rows):
    modes = rows[run]
    base = mean([r["output_throughput"] for r in modes["base"]])
    for mode in ("base", "lora4"):
        rs = modes[mode]
        tput = mean([r["output_throughput"] for r in rs])
        ttft = mean([r.get("mean_ttft_ms", float("nan")) for r in rs])
        tpot = mean([r.get("mean_tpot_ms", float("nan")) for r in rs])
        ratio = f"{tput / base:.3f}×" if mode == "lora4" else ""
        if mode == "lora4":
            ratios[run] = tput / base
        lines.append(f"| {run} | {mode} | {tput:.1f} | {ttft:.0f} | {tpot:.1f} | {ratio} |")
lines += [
    "",
    "Per round (lora4 / base, same round): "
    + ", ".join(
        f"{run} r{i + 1} {l['output_throughput'] / b['output_throughput']:.3f}×"
        for run, modes in sorted(rows.items())
        for i, (b, l) in enumerate(zip(modes["base"], modes["lora4"]))
    )
    + ".",
    "",
    f"The client ran under `nice -n 19`: {client['cpu']:.0f} CPU-s over {client['wall']:.0f} s of runs "
    f"({100 * client['cpu'] / max(client['wall'], 1e-9) / 2:.1f}% of the 2 cores).",
    "",
    "Checks: " + ("all passed (server-side generation tokens equal the benchmark's; "
                  "`vllm:lora_requests_total` grew by every mixed request and no base one)."
                  if not failures else "FAILED: " + "; ".join(failures)),
    "",
]
open(os.path.join(out, "README.md"), "w").write("\n".join(lines))
print("\n".join(lines))
sys.exit(1 if failures or not ratios else 0)
