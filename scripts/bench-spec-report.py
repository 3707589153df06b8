"""Markdown report of scripts/bench-spec.sh: speculative decoding off against on.

Usage: bench-spec-report.py OUT THREADS VERSION SPEC MODEL (reads OUT/raw/*.json, the
/metrics scrapes *.before / *.after and the client's /usr/bin/time files beside them;
writes OUT/README.md). Exits non-zero when a check fails: off and on texts differ, or a
server's generation-token counter did not grow by the benchmark's output tokens.
"""
import glob, json, os, sys
from collections import defaultdict

out, threads, version, spec, model = sys.argv[1:6]


def scrape(path):
    vals = defaultdict(float)
    for line in open(path):
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{")[0]
        if name == "vllm:spec_decode_num_accepted_tokens_per_pos_total":
            pos = name_labels.split('position="')[1].split('"')[0]
            name = f"per_pos_{pos}"
        vals[name] += float(value)
    return vals


rows = defaultdict(lambda: defaultdict(list))  # run -> mode -> [(result, delta)]
client = defaultdict(float)
failures = []
for path in sorted(glob.glob(f"{out}/raw/*.json")):
    stem = path[:-5]
    name, mode = os.path.basename(stem).rsplit("-", 1)
    r = json.load(open(path))
    before, after = scrape(stem + ".before"), scrape(stem + ".after")
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    # The server counted exactly the tokens the benchmark received.
    got = delta.get("vllm:generation_tokens_total", 0.0)
    if got != r["total_output_tokens"]:
        failures.append(f"{name}-{mode}: server counted {got:.0f} generation tokens, benchmark {r['total_output_tokens']}")
    rows[name.rsplit("-r", 1)[0]][mode].append((r, delta, name))
    wall, user, sys_ = map(float, open(stem + ".time").read().split())
    client["wall"] += wall
    client["cpu"] += user + sys_

# Greedy, ignore_eos, same prompts: speculation must not change a single text.
for run, modes in rows.items():
    for (off, _, n_off), (on, _, n_on) in zip(modes.get("off", []), modes.get("on", [])):
        if off.get("generated_texts") != on.get("generated_texts"):
            failures.append(f"{n_off}: texts differ between off and on")

mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
lines = [
    "# Speculative decoding (prompt lookup): off against on",
    "",
    f"`scripts/bench-spec.sh` on this 2-core machine, two `candela serve --threads {threads}` "
    f"side by side on {model} (one with `--speculative-config '{spec}'`), {version}. "
    "Greedy requests with `ignore_eos` and 128 output tokens; *grounded* prompts ask to "
    "rewrite a given piece of Candela's Rust code or documentation, *free* prompts ask for "
    "a short story. Off and on runs alternate; each row is the mean of its rounds. "
    "Acceptance comes from the `vllm:spec_decode_*` counters scraped around each run.",
    "",
    f"The client ran under `nice -n 19`: {client['cpu']:.0f} CPU-s over {client['wall']:.0f} s of runs "
    f"({100 * client['cpu'] / max(client['wall'], 1e-9) / 2:.1f}% of the 2 cores).",
    "",
    "| run | off output tok/s | on output tok/s | on / off | acceptance rate | mean acceptance length | drafts per output token | off mean TPOT ms | on mean TPOT ms |",
    "|---|---|---|---|---|---|---|---|---|",
]
ratios = {}
for run, modes in sorted(rows.items()):
    if not modes.get("off") or not modes.get("on"):
        continue
    off = mean([r["output_throughput"] for r, _, _ in modes["off"]])
    on = mean([r["output_throughput"] for r, _, _ in modes["on"]])
    d = defaultdict(float)
    for _, delta, _ in modes["on"]:
        for k, v in delta.items():
            d[k] += v
    drafted = d["vllm:spec_decode_num_draft_tokens_total"]
    accepted = d["vllm:spec_decode_num_accepted_tokens_total"]
    drafts = d["vllm:spec_decode_num_drafts_total"]
    gen = d["vllm:generation_tokens_total"]
    rate = f"{100 * accepted / drafted:.1f}%" if drafted else "–"
    length = f"{1 + accepted / drafts:.2f}" if drafts else "–"
    per_tok = f"{drafts / gen:.2f}" if gen else "–"
    tpot = lambda m: mean([r.get("mean_tpot_ms", 0.0) for r, _, _ in modes[m]])
    ms = lambda t: f"{t:.1f}" if t else "–"
    lines.append(
        f"| {run} | {off:.1f} | {on:.1f} | {on / off:.3f} | {rate} | {length} | {per_tok} | {ms(tpot('off'))} | {ms(tpot('on'))} |"
    )
    ratios[run] = on / off
lines += [
    "",
    "Checks: off and on produced the same texts in every run, and in every run the "
    "server's `vllm:generation_tokens_total` grew by exactly the benchmark's output tokens."
    if not failures
    else "FAILED checks:\n" + "\n".join(f"- {f}" for f in failures),
]
if ratios:
    g = [v for k, v in ratios.items() if k.startswith("grounded-c1")]
    f = [v for k, v in ratios.items() if k.startswith("free")]
    lines += [
        "",
        f"Grounded at concurrency 1: on/off {min(g):.3f}–{max(g):.3f} (the issue's bar: at least 1.5). "
        f"Free generation: lowest on/off {min(f):.3f} (the bar: at least 0.9).",
        "",
        "At concurrency 1 a step is dominated by reading the weights, so verifying a few "
        "drafted tokens costs little beside the step and every accepted one is nearly free. "
        "At concurrency 8 on two cores a step is close to compute-bound: a verified draft "
        "token costs about what a decoded one does, so prompt lookup gains only where most "
        "drafts are accepted (grounded) and costs a few percent where they are not (free). "
        "The machine drifts by several percent between runs; compare rows, not digits.",
    ]
open(f"{out}/README.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if failures else 0)
