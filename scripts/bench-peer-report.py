#!/usr/bin/env python3
"""Turn scripts/bench-peer.sh's raw results into OUT/README.md and charts.

RAW/<model-key>/ holds, per run and server, the vLLM-format JSON of `candela
bench serve` (`<run>-<server>.json`) and the client's `/usr/bin/time` line
(`<run>-<server>.time`: wall, user, system seconds), plus `model.json` and
`peak-rss.json` (both servers' VmHWM after the concurrency-32 runs). The README
gets one table per model with the Candela / llama-server ratios and the
client's CPU share, a peak-RSS line, and issue 18's targets evaluated from the
data; charts are PNG + SVG per model. Runs without streaming (`-nostream`)
measured no TTFT / TPOT: their cells say n/a."""
import argparse
import json
import math
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PEER = "llama-server"
SERVERS = ("candela", PEER)
ORDER = ["c1", "c1-nostream", "c8", "c32", "c32-nostream", "rate1", "rate2", "rate4", "rate8", "sharegpt-c32"]
NA = "n/a"


def load(raw):
    """{run: {server: result JSON with "client_cpu" added (share of the cores, or None)}}."""
    runs = {}
    for f in sorted(Path(raw).glob("*.json")):
        j = json.loads(f.read_text())
        if "run" not in j:
            continue  # model.json, peak-rss.json
        j["client_time"] = client_time(f.with_suffix(".time"))
        runs.setdefault(j["run"], {})[j["server"]] = j
    return runs


def client_time(path):
    """(wall, user, sys) seconds from `/usr/bin/time -f '%e %U %S'`, or None."""
    try:
        last = path.read_text().strip().splitlines()[-1]
        wall, user, sys_ = (float(x) for x in last.split())
        return wall, user, sys_
    except (OSError, ValueError, IndexError):
        return None


def cpu_share(j, threads):
    t = j.get("client_time")
    if not t or t[0] <= 0:
        return None
    wall, user, sys_ = t
    return (user + sys_) / (wall * threads)


def ratio(a, b):
    return a / b if a is not None and b else float("nan")


def streamed(j):
    return j.get("stream", True)


def pct(v):
    return NA if v is None else f"{100 * v:.1f}%"


def table(runs, order, threads):
    rows = [
        "| run | mode | Candela out tok/s | llama-server out tok/s | ratio | Candela TTFT p50 / p99 ms "
        "| llama-server TTFT p50 / p99 ms | p99 TTFT ratio | Candela TPOT mean / p99 ms "
        "| llama-server TPOT mean / p99 ms | mean TPOT ratio | client CPU (Candela / llama-server) | failed |",
        "|" + "---|" * 13,
    ]
    for r in order:
        c, p = runs[r]["candela"], runs[r][PEER]
        s = streamed(c) and streamed(p)
        if s:
            ttft = (f"{c['median_ttft_ms']:.0f} / {c['p99_ttft_ms']:.0f} | "
                    f"{p['median_ttft_ms']:.0f} / {p['p99_ttft_ms']:.0f} | "
                    f"{ratio(c['p99_ttft_ms'], p['p99_ttft_ms']):.2f}")
            tpot = (f"{c['mean_tpot_ms']:.1f} / {c['p99_tpot_ms']:.1f} | "
                    f"{p['mean_tpot_ms']:.1f} / {p['p99_tpot_ms']:.1f} | "
                    f"{ratio(c['mean_tpot_ms'], p['mean_tpot_ms']):.2f}")
        else:
            ttft = tpot = f"{NA} | {NA} | {NA}"
        rows.append(
            f"| {r} | {'stream' if s else 'no stream'} | {c['output_throughput']:.1f} | {p['output_throughput']:.1f} | "
            f"**{ratio(c['output_throughput'], p['output_throughput']):.2f}×** | {ttft} | {tpot} | "
            f"{pct(cpu_share(c, threads))} / {pct(cpu_share(p, threads))} | {c['failed']} / {p['failed']} |"
        )
    return rows


def check(label, value, target, ok, unit="×"):
    if value is None or math.isnan(value):
        return f"- {label} (target {target}): no data"
    return f"- {label} (target {target}): **{value:.2f}{unit}** — " + ("met" if ok(value) else "not met")


def targets(runs, rss):
    def r(run, key):
        if run not in runs or len(runs[run]) < 2 or key not in runs[run]["candela"] or key not in runs[run][PEER]:
            return None
        return ratio(runs[run]["candela"][key], runs[run][PEER][key])

    lines = []
    for run, aim in [("c1", 1.05), ("c1-nostream", 1.05), ("c32", 1.3), ("c32-nostream", 1.3)]:
        lines.append(check(f"`{run}` output tokens/s, Candela / llama-server", r(run, "output_throughput"),
                           f"≥ {aim}×", lambda v, a=aim: v >= a))
    lines.append(check("`c32` p99 TTFT, Candela / llama-server", r("c32", "p99_ttft_ms"), "≤ 1×", lambda v: v <= 1.0))
    lines.append(check("`c1` mean TPOT, Candela / llama-server", r("c1", "mean_tpot_ms"), "≤ 1×", lambda v: v <= 1.0))
    rr = ratio(rss["candela_kib"], rss["llama_server_kib"]) if rss else None
    lines.append(check("Peak RSS, Candela / llama-server", rr, "≤ 1×", lambda v: v <= 1.0))
    return lines


def peak_rss(raw):
    try:
        j = json.loads((Path(raw) / "peak-rss.json").read_text())
        return j if j.get("candela_kib") and j.get("llama_server_kib") else None
    except (OSError, ValueError):
        return None


def model_section(key, raw, out, threads):
    meta = json.loads((raw / "model.json").read_text())
    runs = load(raw)
    order = [r for r in ORDER if len(runs.get(r, {})) == 2]
    rss = peak_rss(raw)
    shares = {srv: [s for r in order if (s := cpu_share(runs[r][srv], threads)) is not None] for srv in SERVERS}
    every = shares["candela"] + shares[PEER]
    text = [f"## {meta['served_model_name']} (`{meta['gguf']}`)", "", *table(runs, order, threads), ""]
    if every:
        def mean(v):
            return pct(sum(v) / len(v)) if v else NA

        text.append(f"Client CPU share, mean over these {len(every)} runs: **{mean(every)}** of the {threads} cores "
                    f"({mean(shares['candela'])} while driving Candela, {mean(shares[PEER])} while driving "
                    "llama-server).")
        text.append("")
    if rss:
        c, p = rss["candela_kib"] / 1024, rss["llama_server_kib"] / 1024
        text.append(f"Peak RSS (VmHWM after the `{rss.get('after', 'c32')}` runs): Candela **{c:.0f} MiB**, "
                    f"llama-server **{p:.0f} MiB** — ratio **{c / p:.2f}×**.")
    else:
        text.append("Peak RSS: not recorded.")
    text += ["", f"### Targets (issue 18), {meta['served_model_name']}", "", *targets(runs, rss), ""]
    if order:
        charts(runs, order, out, key)
        text += [f"![output tokens/s](throughput-{key}.png)", ""]
        if any(streamed(runs[r]["candela"]) for r in order):
            text += [f"![latency](latency-{key}.png)", ""]
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="+", required=True, help="model keys (subdirectories of RAW), in order")
    ap.add_argument("--candela-version", default="")
    ap.add_argument("--peer-version", default="")
    args = ap.parse_args()
    out = Path(args.out)
    text = [
        "# Candela vs llama-server on CPU (same GGUF, same threads, one session)",
        "",
        f"Machine: {platform.machine()}, {args.threads} threads per server. "
        f"Candela: `{args.candela_version}` (`candela serve --max-num-seqs 32 --max-model-len 4096 "
        "--kv-cache-memory` of as many tokens as llama-server's `-c`, in Candela's f16 K/V); "
        f"peer: llama.cpp `{args.peer_version}` "
        "(`llama-server -t THREADS -c 16384 -np 32 --cont-batching`, `-c 65536` for the ShareGPT run so its "
        "longest prompts fit a slot). Produced by `scripts/bench-peer.sh`; every run is `candela bench serve` "
        "with the same flags against each server in turn; each model gets its own pair of servers.",
        "",
        "Random runs: 128 input / 128 output tokens (EOS ignored); `cN`: max-concurrency N at request rate inf, "
        "streamed as vLLM's benchmark does; `cN-nostream`: the same with `--no-stream` (whole answers: the client "
        "parses one JSON body per request instead of one SSE message per token, and measures throughput and "
        "end-to-end latency only, so TTFT and TPOT are n/a); `rateR`: Poisson arrivals at R req/s with "
        "max-concurrency 32; `sharegpt-c32`: the project's ShareGPT-format sample with 128 output tokens.",
        "",
        "The client runs on the same cores as the servers, at `nice -n 19` under `/usr/bin/time`; its CPU "
        f"share is (user + system seconds) / (wall seconds × {args.threads} cores) of its whole run "
        "(ready check and warm-up included). Peak RSS is each server process's VmHWM from /proc, reset "
        "(`clear_refs` 5) once both servers are up and read after the concurrency-32 runs: the peak while "
        "serving, without loading transients.",
        "",
    ]
    for key in args.models:
        raw = Path(args.raw) / key
        if (raw / "model.json").exists():
            text += model_section(key, raw, out, args.threads)
    (out / "README.md").write_text("\n".join(text))


def charts(runs, order, out, key):
    w = 0.4
    fig, ax = plt.subplots(figsize=(10, 4.5))
    xs = range(len(order))
    ax.bar([x - w / 2 for x in xs], [runs[r]["candela"]["output_throughput"] for r in order], w, label="Candela")
    ax.bar([x + w / 2 for x in xs], [runs[r][PEER]["output_throughput"] for r in order], w, label="llama-server")
    ax.set_xticks(list(xs), order, rotation=30)
    ax.set_ylabel("output tokens/s")
    ax.set_title(f"Output token throughput — {key}")
    ax.legend()
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"throughput-{key}.{ext}")
    plt.close(fig)

    timed = [r for r in order if streamed(runs[r]["candela"]) and streamed(runs[r][PEER])]
    if not timed:
        return
    xs = range(len(timed))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, k, title in [(axes[0], "p99_ttft_ms", "p99 TTFT (ms)"), (axes[1], "mean_tpot_ms", "mean TPOT (ms)")]:
        ax.bar([x - w / 2 for x in xs], [runs[r]["candela"][k] for r in timed], w, label="Candela")
        ax.bar([x + w / 2 for x in xs], [runs[r][PEER][k] for r in timed], w, label="llama-server")
        ax.set_xticks(list(xs), timed, rotation=30)
        ax.set_title(f"{title} — {key} (streamed runs)")
        ax.legend()
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(out / f"latency-{key}.{ext}")
    plt.close(fig)


if __name__ == "__main__":
    main()
