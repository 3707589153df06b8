//! Seed 000's symptom → cause table ("常见性能问题速查") and its 10-second log
//! alert rules, applied to the [`Facts`] of a window. Each rule that fires gives
//! a [`Finding`]: severity, the symptom, the evidence (numbers and window), the
//! likely cause and the flags to turn. Pure: no I/O.
//!
//! The table, reconstructed from the flags it names:
//!
//! | symptom | cause | turn |
//! |---|---|---|
//! | TTFT high, `num_requests_waiting` piling up | not enough capacity: requests queue | replicas, `--enable-chunked-prefill`, lower `--max-model-len` |
//! | TPOT high, `num_requests_running` high | batch too large | lower `--max-num-seqs`, or `--kv-cache-dtype fp8` to free room |
//! | TTFT high without a queue | long prompts' prefill | `--enable-chunked-prefill`, raise `--max-num-batched-tokens` |
//! | KV full / OOM / preemption | pool too small | beyond `--gpu-memory-utilization`: quantize (AWQ), then `--kv-cache-dtype fp8` |
//! | multi-GPU slower than expected | no NVLink / NCCL env | `nvidia-smi topo -m`, `NCCL_*` (not visible in these metrics) |
//! | multi-turn TTFT high | prefix not reused | `--enable-prefix-caching` |
//!
//! And the alert rules: Swapped > 0 sustained → add GPU or lower concurrency;
//! KV usage > 90% sustained → scale out; Pending > 10 sustained → TTFT about to
//! explode; generation throughput drops → the batch is filled by small requests,
//! check clients' `max_tokens`.

mod capacity;
mod latency;

use serde::Serialize;

use super::facts::{Dist, Facts};
use super::series::Series;

/// The thresholds the rules compare against; defaults are the seed's.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Waiting requests per target that count as a queue (seed: > 10).
    pub waiting: f64,
    /// Growth of the waiting queue (mean of the last third minus the first) that counts as growing.
    pub waiting_growth: f64,
    /// KV usage that counts as full (seed: > 90%).
    pub kv_usage: f64,
    /// TTFT p95 ceiling, seconds (seed: chat p95 < 500 ms).
    pub ttft_p95_s: f64,
    /// TPOT p95 ceiling, seconds (seed: bf16 70B < 30 ms).
    pub tpot_p95_s: f64,
    /// Prefix-cache hit rate floor for multi-turn traffic (seed: > 40%).
    pub prefix_hit_min: f64,
    /// Fraction of generation throughput lost from the first to the second half that counts as a drop.
    pub throughput_drop: f64,
    /// Fraction of snapshots a condition must hold in to be "sustained" (持续).
    /// A level (waiting, KV usage) is also sustained when its window mean is
    /// above the threshold, as `avg_over_time(x[w]) > t` reads it: a KV pool
    /// that dips at each preemption is still full.
    pub sustained: f64,
    /// Preemptions per second that count as rising fast.
    pub preemption_rate_critical: f64,
    /// The server's `--max-num-seqs`, when known: running at it means a full batch.
    pub max_num_seqs: Option<u64>,
    /// Traffic is multi-turn chat: a low prefix-cache hit rate matters.
    pub multi_turn: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            waiting: 10.0,
            waiting_growth: 3.0,
            kv_usage: 0.9,
            ttft_p95_s: 0.5,
            tpot_p95_s: 0.03,
            prefix_hit_min: 0.4,
            throughput_drop: 0.5,
            sustained: 0.8,
            preemption_rate_critical: 1.0,
            max_num_seqs: None,
            multi_turn: false,
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        }
    }
}

/// One diagnosed problem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Stable identifier (`waiting_queue`, `kv_cache_full`, `swapping`,
    /// `preemptions`, `ttft_high`, `tpot_high`, `throughput_drop`,
    /// `prefix_cache_low`, `batch_full`).
    pub id: &'static str,
    pub severity: Severity,
    pub symptom: String,
    /// The numbers behind it, with the window.
    pub evidence: Vec<String>,
    pub cause: String,
    /// Flags (or actions) to turn.
    pub turn: Vec<String>,
}

/// The facts of a window and what they add up to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    pub facts: Facts,
    pub findings: Vec<Finding>,
}

/// Seconds as `12 ms` or `1.23 s`.
pub fn secs(s: f64) -> String {
    if !s.is_finite() {
        "n/a".into()
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

pub fn pct(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

/// The facts of `series` and the findings of every rule, worst first.
pub fn examine(series: &Series, th: &Thresholds) -> Diagnosis {
    let facts = Facts::from_series(series);
    let findings = rules(&facts, th);
    Diagnosis { facts, findings }
}

/// Applies the table to a series: the findings, worst first.
pub fn diagnose(series: &Series, th: &Thresholds) -> Vec<Finding> {
    examine(series, th).findings
}

/// Sequences per step below which a batch is too small to blame for slow decoding.
pub(crate) const BIG_BATCH: f64 = 4.0;
/// Mean prompt tokens from which a slow prefill is blamed on prompt length.
pub(crate) const LONG_PROMPT: f64 = 512.0;

pub(crate) struct Ctx<'a> {
    pub(crate) f: &'a Facts,
    pub(crate) th: &'a Thresholds,
    pub(crate) window: String,
}

impl Ctx<'_> {
    /// "in 11 of 13 scrapes over 60 s"
    pub(crate) fn in_scrapes(&self, n: usize, of: usize) -> String {
        format!("in {n} of {of} snapshots over {}", self.window)
    }

    pub(crate) fn batch_full(&self) -> Option<u64> {
        let m = self.th.max_num_seqs?;
        (self.f.running.fraction(|r| r >= m as f64) >= self.th.sustained).then_some(m)
    }

    /// A level above `x` most of the window, or on average over it.
    pub(crate) fn level_sustained(&self, g: &super::facts::Gauge, x: f64) -> bool {
        g.present() && (g.mean > x || g.fraction(|v| v > x) >= self.th.sustained)
    }

    pub(crate) fn kv_full(&self) -> bool {
        self.level_sustained(&self.f.kv_usage, self.th.kv_usage)
    }
}

pub(crate) fn dist_line(what: &str, d: &Dist) -> String {
    format!(
        "{what} p50 {}, p95 {}, p99 {} over {:.0} requests",
        secs(d.p50),
        secs(d.p95),
        secs(d.p99),
        d.count
    )
}

/// Every rule, worst findings first.
pub fn rules(f: &Facts, th: &Thresholds) -> Vec<Finding> {
    let cx = Ctx {
        f,
        th,
        window: format!("{:.0} s", f.window_s),
    };
    let mut out: Vec<Finding> = [
        capacity::waiting_queue(&cx),
        capacity::kv_cache_full(&cx),
        capacity::swapping(&cx),
        capacity::preemptions(&cx),
        latency::ttft_high(&cx),
        latency::tpot_high(&cx),
        latency::throughput_drop(&cx),
        latency::prefix_cache(&cx),
        capacity::batch_full(&cx),
    ]
    .into_iter()
    .flatten()
    .collect();
    out.sort_by_key(|x| x.severity);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::expo::Sample;
    use crate::doctor::series::Snapshot;

    fn sample(name: &str, value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: vec![("model_name".into(), "m".into())],
            value,
        }
    }

    /// Snapshots 5 s apart; `at(i)` gives each one's (name, value) pairs.
    fn series(n: usize, at: impl Fn(usize) -> Vec<(&'static str, f64)>) -> Series {
        Series::new(
            (0..n)
                .map(|i| Snapshot {
                    t: 5.0 * i as f64,
                    samples: at(i).into_iter().map(|(k, v)| sample(k, v)).collect(),
                })
                .collect(),
        )
    }

    #[test]
    fn an_idle_server_has_nothing_to_report() {
        let s = series(13, |_| {
            vec![
                ("vllm:num_requests_running", 0.0),
                ("vllm:num_requests_waiting", 0.0),
                ("vllm:kv_cache_usage_perc", 0.0),
                ("vllm:generation_tokens_total", 42.0),
                ("vllm:prompt_tokens_total", 7.0),
            ]
        });
        let d = examine(&s, &Thresholds::default());
        assert!(d.findings.is_empty(), "{:?}", d.findings);
        assert!(d.facts.idle());
        assert!(d.facts.ttft.is_none());
        let text = crate::doctor::report::text(&d, "idle");
        assert!(text.contains("no problems found, and no traffic"), "{text}");
        assert!(text.contains("TTFT         no requests finished"), "{text}");
    }

    #[test]
    fn throughput_falling_with_the_load_is_only_info() {
        // 100 tok/s with 10 running, then 10 tok/s with 2 running: fewer clients, not a slower server.
        let s = series(13, |i| {
            let tokens = if i <= 6 {
                500.0 * i as f64
            } else {
                3000.0 + 50.0 * (i - 6) as f64
            };
            let running = if i <= 6 { 10.0 } else { 2.0 };
            vec![
                ("vllm:num_requests_running", running),
                ("vllm:num_requests_waiting", 0.0),
                ("vllm:generation_tokens_total", tokens),
                ("vllm:prompt_tokens_total", 10.0 * i as f64),
            ]
        });
        let d = examine(&s, &Thresholds::default());
        let f = d
            .findings
            .iter()
            .find(|f| f.id == "throughput_drop")
            .unwrap();
        assert_eq!(f.severity, Severity::Info);
        assert!(f.cause.contains("the load fell"), "{}", f.cause);
        assert!((d.facts.generation_tokens.early_rate - 100.0).abs() < 1e-9);
        assert!((d.facts.generation_tokens.late_rate - 10.0).abs() < 1e-9);
    }

    #[test]
    fn preemptions_speeding_up_are_critical() {
        let s = series(13, |i| {
            let p = if i <= 6 {
                i as f64
            } else {
                6.0 + 5.0 * (i - 6) as f64
            };
            vec![
                ("vllm:num_requests_running", 8.0),
                ("vllm:num_preemptions_total", p),
            ]
        });
        let d = examine(&s, &Thresholds::default());
        let f = d.findings.iter().find(|f| f.id == "preemptions").unwrap();
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.symptom, "preemptions rising");
        assert!(
            f.evidence[0].starts_with("+36 vllm:num_preemptions_total over 60 s"),
            "{}",
            f.evidence[0]
        );
    }

    #[test]
    fn occasional_swapping_is_info_and_sustained_is_critical() {
        let occasional = series(10, |i| {
            vec![("vllm:num_requests_swapped", f64::from(i == 3))]
        });
        let d = examine(&occasional, &Thresholds::default());
        assert_eq!(d.findings[0].id, "swapping");
        assert_eq!(d.findings[0].severity, Severity::Info);
        let sustained = series(10, |i| {
            vec![("vllm:num_requests_swapped", f64::from(i != 3))]
        });
        let d = examine(&sustained, &Thresholds::default());
        assert_eq!(d.findings[0].severity, Severity::Critical);
    }

    #[test]
    fn latency_formatting() {
        assert_eq!(secs(0.0123), "12 ms");
        assert_eq!(secs(1.5), "1.50 s");
        assert_eq!(secs(f64::NAN), "n/a");
        assert_eq!(pct(0.9), "90.0%");
    }
}
