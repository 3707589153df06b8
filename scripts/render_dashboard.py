#!/usr/bin/env python3
"""Renders a Grafana dashboard JSON (deploy/dashboards/*.json) to a PNG from a live
Prometheus, without Grafana: every panel's queries through /api/v1/query_range, laid out
on the dashboard's 24-column grid with matplotlib (time series, stacked series, bars on a
right axis, threshold lines, heatmaps of histogram buckets, gauges).

    scripts/render_dashboard.py --prometheus http://127.0.0.1:9091 \
        --var namespace=local --var model_name=smollm2 \
        --start <unix> --end <unix> deploy/dashboards/candela-full.json docs/dashboard-full.png

engine/server/tests/deploy_e2e.py calls render() during its live run (that is how
docs/dashboard-full.png is made: CANDELA_DASHBOARD_PNG=docs/dashboard-full.png).
"""

import argparse
import json
import math
import re
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import dates as mdates  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

COLOURS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"]


def substitute(expr, variables, rate_interval):
    expr = expr.replace("$__rate_interval", rate_interval)
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("$" + name, value).replace("${" + name + "}", value)
    return expr


def query_range(prom, expr, start, end, step):
    url = f"{prom}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt, metric):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt or "") or \
        ",".join(f"{k}={v}" for k, v in metric.items()) or "value"


def fmt_unit(unit):
    return {"percentunit": lambda v: f"{v * 100:.0f}%", "s": lambda v: f"{v:.2g}s",
            "percent": lambda v: f"{v:.0f}%", "bytes": lambda v: human_bytes(v),
            "reqps": lambda v: f"{v:.2g}/s", "ops": lambda v: f"{v:.2g}/s"}.get(
        unit, lambda v: f"{v:.3g}")


def human_bytes(v):
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"]:
        if abs(v) < 1024:
            return f"{v:.0f}{unit}"
        v /= 1024
    return f"{v:.0f}PiB"


def series_of(result):
    out = []
    for s in result:
        ts = [datetime.fromtimestamp(float(t), tz=timezone.utc) for t, _ in s["values"]]
        vs = [float(v) for _, v in s["values"]]
        vs = [v if math.isfinite(v) else float("nan") for v in vs]
        out.append((s["metric"], ts, vs))
    return out


def draw_timeseries(ax, panel, data):
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit", "")
    stacked = defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal"
    overrides = {o["matcher"]["options"]: {p["id"]: p.get("value") for p in o["properties"]}
                 for o in panel.get("fieldConfig", {}).get("overrides", [])}
    right = None
    base = None
    lines = []
    for i, (name, ts, vs) in enumerate(data):
        colour = COLOURS[i % len(COLOURS)]
        props = overrides.get(name, {})
        target = ax
        if props.get("custom.axisPlacement") == "right":
            right = right or ax.twinx()
            target = right
            target.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _, u=props.get("unit", unit): fmt_unit(u)(v)))
        if props.get("custom.drawStyle") == "bars":
            width = (ts[1] - ts[0]).total_seconds() / 86400 * 0.8 if len(ts) > 1 else 0.0001
            target.bar(ts, vs, width=width, color=colour, alpha=0.6, label=name)
        elif stacked:
            if base is None:
                base = [0.0] * len(vs)
            if len(base) != len(vs):
                base = [0.0] * len(vs)
            top = [b + (0 if math.isnan(v) else v) for b, v in zip(base, vs)]
            target.fill_between(ts, base, top, color=colour, alpha=0.35, step=None)
            target.plot(ts, top, color=colour, linewidth=1, label=name)
            base = top
        else:
            target.plot(ts, vs, color=colour, linewidth=1.3, label=name)
            target.fill_between(ts, vs, color=colour, alpha=0.08)
        lines.append(name)
    for step in defaults.get("thresholds", {}).get("steps", [])[1:]:
        if defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode") in ("dashed", "line"):
            ax.axhline(step["value"], color=step["color"] if step["color"] != "green" else "#3f9142",
                       linestyle="--", linewidth=1)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: fmt_unit(unit)(v)))
    handles, labels = ax.get_legend_handles_labels()
    if right:
        h2, l2 = right.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, fontsize=6, loc="upper left", framealpha=0.6)


def draw_heatmap(ax, panel, result):
    import numpy as np
    buckets = sorted(result, key=lambda s: float(s["metric"]["le"]))
    if not buckets:
        return
    ts = [datetime.fromtimestamp(float(t), tz=timezone.utc) for t, _ in buckets[0]["values"]]
    cumulative = np.array([[float(v) for _, v in s["values"]] for s in buckets])
    counts = np.diff(np.vstack([np.zeros(cumulative.shape[1]), cumulative]), axis=0)
    counts = np.where(np.isfinite(counts) & (counts > 0), counts, np.nan)
    # Keep the buckets that ever see requests, plus one either side.
    used = np.where(np.nansum(np.nan_to_num(counts), axis=1) > 0)[0]
    if used.size:
        lo, hi = max(used[0] - 1, 0), min(used[-1] + 1, len(buckets) - 1)
        counts = counts[lo:hi + 1]
        buckets = buckets[lo:hi + 1]
    labels = [s["metric"]["le"] for s in buckets]
    x = mdates.date2num(ts)
    ax.pcolormesh(np.append(x, x[-1] + (x[-1] - x[-2] if len(x) > 1 else 1e-4)),
                  np.arange(len(labels) + 1), counts, cmap="Spectral_r", shading="flat")
    ax.set_yticks(np.arange(len(labels)) + 0.5)
    ax.set_yticklabels([f"≤{l}s" if l != "+Inf" else "+Inf" for l in labels], fontsize=6)


def draw_gauge(ax, panel, data):
    value = next((v for _, _, vs in data for v in reversed(vs) if not math.isnan(v)), float("nan"))
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    colour = steps[0]["color"]
    for step in steps[1:]:
        if not math.isnan(value) and value >= step["value"]:
            colour = step["color"]
    ax.set_aspect("equal")
    ax.axis("off")
    filled = 0 if math.isnan(value) else max(0.0, min(value, 1.0))
    ax.pie([filled, 1 - filled], colors=[{"green": "#3f9142"}.get(colour, colour), "#eeeeee"],
           startangle=90, counterclock=False, wedgeprops={"width": 0.3})
    ax.text(0, 0, "n/a" if math.isnan(value) else f"{value * 100:.1f}%", ha="center", va="center", fontsize=14)


def render(dashboard, prom, start, end, step, variables, rate_interval, out):
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(24, rows * 0.55))
    grid = fig.add_gridspec(rows, 24, hspace=1.6, wspace=3.0, top=0.97, bottom=0.02, left=0.03, right=0.97)
    empty = []
    for panel in panels:
        g = panel["gridPos"]
        ax = fig.add_subplot(grid[g["y"]:g["y"] + g["h"], g["x"]:g["x"] + g["w"]])
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=6)
        data, raw = [], []
        for target in panel["targets"]:
            result = query_range(prom, substitute(target["expr"], variables, rate_interval), start, end, step)
            raw.extend(result)
            for metric, ts, vs in series_of(result):
                data.append((legend(target.get("legendFormat"), metric), ts, vs))
        if not raw:
            empty.append(panel["title"])
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif panel["type"] == "heatmap":
            draw_heatmap(ax, panel, raw)
        elif panel["type"] == "gauge":
            draw_gauge(ax, panel, data)
        else:
            draw_timeseries(ax, panel, data)
        if panel["type"] != "gauge":
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
            ax.grid(alpha=0.3)
    fig.suptitle(f"{dashboard['title']} — " + ", ".join(f"{k}={v}" for k, v in variables.items() if k != "datasource")
                 + f" (rendered from Prometheus query_range, step {step}s, $__rate_interval={rate_interval})",
                 fontsize=12, x=0.01, y=0.995, ha="left")
    fig.savefig(out, dpi=70, bbox_inches="tight")
    plt.close(fig)
    return empty


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prometheus", required=True)
    p.add_argument("--var", action="append", default=[], help="name=value")
    p.add_argument("--start", type=float, required=True)
    p.add_argument("--end", type=float, required=True)
    p.add_argument("--step", type=float, default=5)
    p.add_argument("--rate-interval", default="1m")
    p.add_argument("dashboard")
    p.add_argument("out")
    a = p.parse_args()
    variables = dict(v.split("=", 1) for v in a.var)
    empty = render(json.load(open(a.dashboard)), a.prometheus, a.start, a.end, a.step, variables,
                   a.rate_interval, a.out)
    if empty:
        print("panels without data:", ", ".join(empty))


if __name__ == "__main__":
    main()
