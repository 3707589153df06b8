//! What `candela doctor` prints: the window's key numbers, then each finding
//! (worst first) with its evidence, cause and flags; or, when nothing is wrong,
//! a line saying so. `--json` prints the same as one JSON object.

use std::fmt::Write;

use serde::Serialize;

use super::diagnose::{Diagnosis, Finding, pct, secs};
use super::facts::{Dist, Facts};

/// Quantiles of a histogram; `unit` names what one observation is (TTFT: a
/// request, TPOT: an output token).
fn dist(d: Option<Dist>, unit: &str) -> String {
    match d {
        Some(d) if d.count > 0.0 => format!(
            "p50 {}, p95 {}, p99 {} ({:.0} {unit})",
            secs(d.p50),
            secs(d.p95),
            secs(d.p99),
            d.count
        ),
        _ => "no requests finished".into(),
    }
}

fn prefix(f: &Facts) -> String {
    if f.prefix_caching_enabled == Some(false) {
        return "off (enable_prefix_caching=False)".into();
    }
    if f.prefix_counters {
        return match f.prefix_hit_rate() {
            Some(r) => format!("hit {} of {:.0} queried tokens", pct(r), f.prefix_queries),
            None => "no lookups in the window".into(),
        };
    }
    match f.prefix_hit_rate_gauge {
        Some(r) => format!("hit {} (since start)", pct(r)),
        None => "not exported".into(),
    }
}

/// The key numbers of a window, one line each.
pub fn summary(f: &Facts) -> String {
    let mut s = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(s, "  {label:<13}{value}");
    };
    line(
        "queue",
        format!(
            "waiting mean {:.1} / max {:.0}, running mean {:.1} / max {:.0}, swapped max {:.0}",
            f.waiting.mean, f.waiting.max, f.running.mean, f.running.max, f.swapped.max
        ),
    );
    line(
        "KV cache",
        format!(
            "usage mean {}, max {}{}; {:.0} preemptions",
            pct(f.kv_usage.mean),
            pct(f.kv_usage.max),
            f.kv_usage
                .metric
                .map(|m| format!(" ({m})"))
                .unwrap_or_else(|| " (not exported)".into()),
            f.preemptions.total
        ),
    );
    line(
        "throughput",
        format!(
            "prompt {:.1} tok/s, generation {:.1} tok/s; {:.0} requests finished ({:.0} aborted)",
            f.prompt_tokens.rate, f.generation_tokens.rate, f.finished, f.aborted
        ),
    );
    line("TTFT", dist(f.ttft, "requests"));
    line("TPOT", dist(f.tpot, "tokens"));
    line("prefix cache", prefix(f));
    let mean = |d: Option<Dist>| {
        d.filter(|d| d.count > 0.0)
            .map(|d| format!("{:.0}", d.mean))
    };
    if let (Some(p), Some(g)) = (mean(f.prompt_len), mean(f.generation_len)) {
        line(
            "per request",
            format!("prompt mean {p} tokens, generation mean {g} tokens"),
        );
    }
    s
}

fn finding(out: &mut String, x: &Finding) {
    let _ = writeln!(out, "{:<9} {}  [{}]", x.severity.label(), x.symptom, x.id);
    for (i, e) in x.evidence.iter().enumerate() {
        let _ = writeln!(out, "  {:<9} {e}", if i == 0 { "evidence" } else { "" });
    }
    let _ = writeln!(out, "  {:<9} {}", "cause", x.cause);
    let _ = writeln!(out, "  {:<9} {}", "turn", x.turn.join("; "));
}

/// The diagnosis as text.
pub fn text(d: &Diagnosis, source: &str) -> String {
    let f = &d.facts;
    let mut out = format!(
        "candela doctor: {source}: {:.0} s window, {} snapshots, {} target{}\n",
        f.window_s,
        f.snapshots,
        f.targets,
        if f.targets == 1 {
            ""
        } else {
            "s (gauges: the worst one)"
        }
    );
    out.push_str(&summary(f));
    out.push('\n');
    if d.findings.is_empty() {
        if f.idle() {
            out.push_str(
                "no problems found, and no traffic: nothing ran, waited or finished in the window\n",
            );
        } else {
            out.push_str("no problems found: every rule of the seed's table is within bounds\n");
        }
    }
    for (i, x) in d.findings.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        finding(&mut out, x);
    }
    out
}

#[derive(Serialize)]
struct Json<'a> {
    source: &'a str,
    healthy: bool,
    findings: &'a [Finding],
    facts: &'a Facts,
}

/// The diagnosis as JSON.
pub fn json(d: &Diagnosis, source: &str) -> String {
    let j = Json {
        source,
        healthy: d.findings.is_empty(),
        findings: &d.findings,
        facts: &d.facts,
    };
    // NaN quantiles (no observations) are not JSON: serde_json writes them as null.
    serde_json::to_string_pretty(&j).expect("invariant: a diagnosis is plain data and serializes")
}
