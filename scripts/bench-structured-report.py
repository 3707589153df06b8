"""Markdown report of scripts/bench-structured.sh: free against JSON-schema decoding.

Usage: bench-structured-report.py OUT THREADS VERSION SCHEMA (reads OUT/raw/<model>/*.json
and the client's /usr/bin/time files beside them; writes OUT/README.md).
"""
import glob, json, os, sys
from collections import defaultdict
out, threads, version, schema = sys.argv[1:5]
rows = defaultdict(lambda: defaultdict(list))  # (model, run) -> mode -> [results]
client = defaultdict(float)
for path in sorted(glob.glob(f"{out}/raw/*/*.json")):
    model = os.path.basename(os.path.dirname(path))
    name, mode = os.path.basename(path)[:-5].rsplit("-", 1)
    run = name.rsplit("-r", 1)[0]
    r = json.load(open(path))
    rows[(model, run)][mode].append(r)
    wall, user, sys_ = map(float, open(path[:-5] + ".time").read().split())
    client["wall"] += wall
    client["cpu"] += user + sys_
mean = lambda xs: sum(xs) / len(xs)
lines = [
    "# Structured outputs: JSON-schema decoding against free decoding",
    "",
    f"`scripts/bench-structured.sh` on this 2-core machine, `candela serve --threads {threads}`, "
    f"{version}. Random 128-token prompts, 128 output tokens (`ignore_eos`, greedy); "
    f"`json` runs add `{schema}` — an array that cannot close within 128 tokens, so every token is "
    "sampled under a live grammar. Free and JSON runs alternate; each row is the mean of its rounds.",
    "",
    f"The client ran under `nice -n 19`: {client['cpu']:.0f} CPU-s over {client['wall']:.0f} s of runs "
    f"({100 * client['cpu'] / client['wall'] / 2:.1f}% of the 2 cores).",
    "",
    "| model | run | free output tok/s | JSON output tok/s | JSON / free | free mean TPOT ms | JSON mean TPOT ms |",
    "|---|---|---|---|---|---|---|",
]
ratios = []
for (model, run), modes in sorted(rows.items()):
    if not modes.get("free") or not modes.get("json"):
        continue
    f = mean([r["output_throughput"] for r in modes["free"]])
    j = mean([r["output_throughput"] for r in modes["json"]])
    tf = mean([r.get("mean_tpot_ms", 0.0) for r in modes["free"]])
    tj = mean([r.get("mean_tpot_ms", 0.0) for r in modes["json"]])
    ms = lambda t: f"{t:.1f}" if t else "–"
    lines.append(f"| {model} | {run} | {f:.1f} | {j:.1f} | {j / f:.3f} | {ms(tf)} | {ms(tj)} |")
    ratios.append(j / f)
if ratios:
    lines += [
        "",
        f"Lowest JSON / free ratio: {min(ratios):.3f}; highest: {max(ratios):.3f} (the issue's bound: "
        "JSON-schema decoding within 10% of free decoding, a ratio of at least 0.90). Mean TPOT is "
        "only measured on streamed runs. Where a ratio is above 1 the difference is this machine's "
        "run-to-run drift, not a gain: the same tokens are computed, plus a mask.",
    ]
open(f"{out}/README.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
