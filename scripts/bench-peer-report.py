#!/usr/bin/env python3
"""Turn scripts/bench-peer.sh's raw results (vLLM-format JSON from `candela bench
serve`, one per run and server) into OUT/README.md — a table with the Candela /
llama-server ratios and the issue's targets — and charts (PNG + SVG)."""
import argparse
import json
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PEER = "llama-server"


def load(raw):
    runs = {}
    for f in sorted(Path(raw).glob("*.json")):
        j = json.loads(f.read_text())
        runs.setdefault(j["run"], {})[j["server"]] = j
    return runs


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("out")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--candela-version", default="")
    ap.add_argument("--peer-version", default="")
    args = ap.parse_args()
    runs = load(args.raw)
    order = [r for r in ["c1", "c8", "c32", "rate1", "rate2", "rate4", "rate8", "sharegpt-c32"] if r in runs]
    rows = []
    head = ("| run | Candela out tok/s | llama-server out tok/s | ratio | Candela TTFT p50 / p99 ms "
            "| llama-server TTFT p50 / p99 ms | p99 TTFT ratio | Candela TPOT mean / p99 ms "
            "| llama-server TPOT mean / p99 ms | mean TPOT ratio | failed |")
    rows.append(head)
    rows.append("|" + "---|" * 11)
    for r in order:
        c, p = runs[r].get("candela"), runs[r].get(PEER)
        if not c or not p:
            continue
        rows.append(
            f"| {r} | {c['output_throughput']:.1f} | {p['output_throughput']:.1f} | "
            f"**{ratio(c['output_throughput'], p['output_throughput']):.2f}×** | "
            f"{c['median_ttft_ms']:.0f} / {c['p99_ttft_ms']:.0f} | {p['median_ttft_ms']:.0f} / {p['p99_ttft_ms']:.0f} | "
            f"{ratio(c['p99_ttft_ms'], p['p99_ttft_ms']):.2f} | "
            f"{c['mean_tpot_ms']:.1f} / {c['p99_tpot_ms']:.1f} | {p['mean_tpot_ms']:.1f} / {p['p99_tpot_ms']:.1f} | "
            f"{ratio(c['mean_tpot_ms'], p['mean_tpot_ms']):.2f} | {c['failed']} / {p['failed']} |"
        )
    targets = []
    if "c32" in runs and len(runs["c32"]) == 2:
        c, p = runs["c32"]["candela"], runs["c32"][PEER]
        tr = ratio(c["output_throughput"], p["output_throughput"])
        ttr = ratio(c["p99_ttft_ms"], p["p99_ttft_ms"])
        targets.append(f"- Concurrency 32, output tokens/s ≥ 1.0× llama-server (aim 1.3×): **{tr:.2f}×** — "
                       + ("met" if tr >= 1.0 else "not met"))
        targets.append(f"- Concurrency 32, p99 TTFT no worse than llama-server: **{ttr:.2f}×** — "
                       + ("met" if ttr <= 1.0 else "not met"))
    if "c1" in runs and len(runs["c1"]) == 2:
        c, p = runs["c1"]["candela"], runs["c1"][PEER]
        r1 = ratio(c["mean_tpot_ms"], p["mean_tpot_ms"])
        targets.append(f"- Concurrency 1, mean TPOT within 10% of llama-server: **{r1:.2f}×** — "
                       + ("met" if r1 <= 1.1 else "not met"))

    out = Path(args.out)
    charts(runs, order, out)
    text = [
        "# Candela vs llama-server on CPU (same GGUF, same threads, one session)",
        "",
        f"Machine: {platform.machine()}, {args.threads} threads per server; model SmolLM2-135M-Instruct Q4_1. "
        f"Candela: `{args.candela_version}`; peer: llama.cpp `{args.peer_version}` "
        "(`llama-server -t THREADS -c 16384 -np 32 --cont-batching`, `-c 65536` for the ShareGPT run so its longest prompts fit a slot). Produced by `scripts/bench-peer.sh`; "
        "every run is `candela bench serve` with the same flags against each server in turn.",
        "",
        "Random runs: 128 input / 128 output tokens (EOS ignored); `cN`: max-concurrency N at request rate inf; "
        "`rateR`: Poisson arrivals at R req/s with max-concurrency 32; `sharegpt-c32`: the project's "
        "ShareGPT-format sample with 128 output tokens.",
        "",
        *rows,
        "",
        "## Targets (issue 9)",
        "",
        *targets,
        "",
        "![output tokens/s](throughput.png)",
        "",
        "![latency](latency.png)",
        "",
    ]
    (out / "README.md").write_text("\n".join(text))


def charts(runs, order, out):
    both = [r for r in order if len(runs[r]) == 2]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    xs = range(len(both))
    w = 0.4
    ax.bar([x - w / 2 for x in xs], [runs[r]["candela"]["output_throughput"] for r in both], w, label="Candela")
    ax.bar([x + w / 2 for x in xs], [runs[r][PEER]["output_throughput"] for r in both], w, label="llama-server")
    ax.set_xticks(list(xs), both)
    ax.set_ylabel("output tokens/s")
    ax.set_title("Output token throughput")
    ax.legend()
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"throughput.{ext}")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, title in [(axes[0], "p99_ttft_ms", "p99 TTFT (ms)"), (axes[1], "mean_tpot_ms", "mean TPOT (ms)")]:
        ax.bar([x - w / 2 for x in xs], [runs[r]["candela"][key] for r in both], w, label="Candela")
        ax.bar([x + w / 2 for x in xs], [runs[r][PEER][key] for r in both], w, label="llama-server")
        ax.set_xticks(list(xs), both, rotation=30)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"latency.{ext}")
    plt.close(fig)


if __name__ == "__main__":
    main()
