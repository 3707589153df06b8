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
const BIG_BATCH: f64 = 4.0;
/// Mean prompt tokens from which a slow prefill is blamed on prompt length.
const LONG_PROMPT: f64 = 512.0;

struct Ctx<'a> {
    f: &'a Facts,
    th: &'a Thresholds,
    window: String,
}

impl Ctx<'_> {
    /// "in 11 of 13 scrapes over 60 s"
    fn in_scrapes(&self, n: usize, of: usize) -> String {
        format!("in {n} of {of} snapshots over {}", self.window)
    }

    fn batch_full(&self) -> Option<u64> {
        let m = self.th.max_num_seqs?;
        (self.f.running.fraction(|r| r >= m as f64) >= self.th.sustained).then_some(m)
    }

    /// A level above `x` most of the window, or on average over it.
    fn level_sustained(&self, g: &super::facts::Gauge, x: f64) -> bool {
        g.present() && (g.mean > x || g.fraction(|v| v > x) >= self.th.sustained)
    }

    fn kv_full(&self) -> bool {
        self.level_sustained(&self.f.kv_usage, self.th.kv_usage)
    }
}

fn dist_line(what: &str, d: &Dist) -> String {
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
        waiting_queue(&cx),
        kv_cache_full(&cx),
        swapping(&cx),
        preemptions(&cx),
        ttft_high(&cx),
        tpot_high(&cx),
        throughput_drop(&cx),
        prefix_cache(&cx),
        batch_full(&cx),
    ]
    .into_iter()
    .flatten()
    .collect();
    out.sort_by_key(|x| x.severity);
    out
}

fn waiting_queue(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    let w = &f.waiting;
    let (above, of) = w.count_where(|v| v > th.waiting);
    let sustained = cx.level_sustained(w, th.waiting);
    let (early, late) = w.thirds();
    let first = w.trace.first().map_or(0.0, |p| p.1);
    let growing = late - early >= th.waiting_growth && late >= 1.5 * early && w.last > first;
    if !sustained && !growing {
        return None;
    }
    let mut evidence = vec![format!(
        "waiting > {} {} (mean {:.1}, max {:.0}, last {:.0})",
        th.waiting,
        cx.in_scrapes(above, of),
        w.mean,
        w.max,
        w.last
    )];
    if growing {
        evidence.push(format!(
            "the queue grew from {early:.1} to {late:.1} (mean of the first vs the last third)"
        ));
    }
    if let Some(t) = &f.ttft {
        evidence.push(dist_line("TTFT", t));
    }
    evidence.push(format!(
        "running mean {:.1}, max {:.0}",
        f.running.mean, f.running.max
    ));
    let mut cause = "requests arrive faster than the running batch finishes them; each waiting \
                     request's TTFT includes its wait, so TTFT is about to explode"
        .to_string();
    let mut turn = vec![
        "add replicas (scale out on vllm:num_requests_waiting)".to_string(),
        "--enable-chunked-prefill (admit prefills alongside decodes)".to_string(),
        "lower --max-model-len (smaller worst-case KV per request, more requests admitted)"
            .to_string(),
    ];
    if let Some(m) = cx.batch_full() {
        cause.push_str(&format!("; the batch is full at --max-num-seqs {m}"));
        if !cx.kv_full() {
            turn.push(format!(
                "raise --max-num-seqs above {m}: KV usage (max {}) has room",
                pct(f.kv_usage.max)
            ));
        }
    }
    if cx.kv_full() {
        cause.push_str(&format!(
            "; the KV cache is full (mean {}), so nothing more can be admitted",
            pct(f.kv_usage.mean)
        ));
    }
    Some(Finding {
        id: "waiting_queue",
        severity: if sustained {
            Severity::Critical
        } else {
            Severity::Warning
        },
        symptom: if sustained {
            format!(
                "waiting queue > {} sustained: TTFT is about to explode",
                th.waiting
            )
        } else {
            "waiting queue growing: TTFT is about to explode".into()
        },
        evidence,
        cause,
        turn,
    })
}

fn kv_cache_full(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    if !cx.kv_full() {
        return None;
    }
    let k = &f.kv_usage;
    let (above, of) = k.count_where(|v| v > th.kv_usage);
    let mut evidence = vec![format!(
        "{} > {} {} (mean {}, max {})",
        k.metric.unwrap_or("KV usage"),
        pct(th.kv_usage),
        cx.in_scrapes(above, of),
        pct(k.mean),
        pct(k.max)
    )];
    if let Some(b) = f.num_gpu_blocks {
        evidence.push(format!("pool: {b} blocks (vllm:cache_config_info)"));
    }
    let pressure = f.preemptions.total > 0.0 || f.swapped.max > 0.0;
    if pressure {
        evidence.push(format!(
            "{:.0} preemptions, swapped max {:.0} in the window",
            f.preemptions.total, f.swapped.max
        ));
    }
    Some(Finding {
        id: "kv_cache_full",
        severity: if pressure {
            Severity::Critical
        } else {
            Severity::Warning
        },
        symptom: format!(
            "KV cache usage > {} sustained: time to scale out",
            pct(th.kv_usage)
        ),
        evidence,
        cause: "the running sequences fill the KV pool: new requests wait for blocks and long \
                ones get preempted"
            .into(),
        turn: vec![
            "add replicas / GPUs".into(),
            "--kv-cache-dtype fp8 (halves KV per token)".into(),
            "quantized weights (AWQ) to leave more memory to the pool".into(),
            "raise --gpu-memory-utilization if it is below 0.95".into(),
            "lower --max-model-len".into(),
        ],
    })
}

fn swapping(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    let s = &f.swapped;
    let (above, of) = s.count_where(|v| v > 0.0);
    if above == 0 {
        return None;
    }
    let sustained = above as f64 / of as f64 >= th.sustained;
    let mut evidence = vec![format!(
        "swapped > 0 {} (mean {:.1}, max {:.0})",
        cx.in_scrapes(above, of),
        s.mean,
        s.max
    )];
    if f.cpu_kv_usage.present() {
        evidence.push(format!(
            "CPU KV usage max {} (> 0 = overflow)",
            pct(f.cpu_kv_usage.max)
        ));
    }
    evidence.push(format!("GPU KV usage mean {}", pct(f.kv_usage.mean)));
    Some(Finding {
        id: "swapping",
        severity: if sustained {
            Severity::Critical
        } else {
            Severity::Info
        },
        symptom: if sustained {
            "sequences swapped to CPU, sustained: the KV pool is too small".into()
        } else {
            "sequences were swapped to CPU at times".into()
        },
        evidence,
        cause: "the GPU KV pool cannot hold the running batch: sequences are parked in host \
                memory and recomputed or copied back later; a bigger --swap-space only hides this"
            .into(),
        turn: vec![
            "add GPUs / replicas".into(),
            "lower --max-num-seqs".into(),
            "--kv-cache-dtype fp8".into(),
        ],
    })
}

fn preemptions(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    let p = &f.preemptions;
    if p.total <= 0.0 {
        return None;
    }
    let rising = p.late_rate > 2.0 * p.early_rate && p.late_rate > 0.0;
    let fast = p.rate >= th.preemption_rate_critical;
    Some(Finding {
        id: "preemptions",
        severity: if fast || rising {
            Severity::Critical
        } else {
            Severity::Warning
        },
        symptom: if rising {
            "preemptions rising".into()
        } else {
            "preemptions in the window".into()
        },
        evidence: vec![
            format!(
                "+{:.0} vllm:num_preemptions_total over {} ({:.2}/s; first half {:.2}/s, second half {:.2}/s)",
                p.total, cx.window, p.rate, p.early_rate, p.late_rate
            ),
            format!(
                "KV usage mean {}, max {}; running mean {:.1}",
                pct(f.kv_usage.mean),
                pct(f.kv_usage.max),
                f.running.mean
            ),
        ],
        cause: "the KV cache ran out mid-decode: sequences are evicted and their work redone, \
                which costs throughput and latency"
            .into(),
        turn: vec![
            "lower --max-num-seqs".into(),
            "add GPUs / replicas".into(),
            "--kv-cache-dtype fp8".into(),
        ],
    })
}

fn ttft_high(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    let t = f.ttft.filter(|t| t.p95 > th.ttft_p95_s)?;
    let mut evidence = vec![format!(
        "{} (ceiling p95 {})",
        dist_line("TTFT", &t),
        secs(th.ttft_p95_s)
    )];
    let queue_share = match (f.queue_time, f.prefill_time) {
        (Some(q), Some(p)) if q.mean + p.mean > 0.0 => {
            evidence.push(format!(
                "of which queueing mean {} (p95 {}), prefill mean {} (p95 {})",
                secs(q.mean),
                secs(q.p95),
                secs(p.mean),
                secs(p.p95)
            ));
            Some(q.mean / (q.mean + p.mean))
        }
        _ => None,
    };
    evidence.push(format!(
        "waiting mean {:.1}, max {:.0}",
        f.waiting.mean, f.waiting.max
    ));
    if let Some(p) = f.prompt_len {
        evidence.push(format!("prompts mean {:.0} tokens", p.mean));
    }
    let queueing = queue_share.map_or(f.waiting.mean >= 1.0, |s| s >= 0.5);
    let prompt_mean = f.prompt_len.map_or(0.0, |p| p.mean);
    let mut turn;
    let cause;
    if queueing {
        cause = "queueing: requests wait for a slot in the batch before their prefill starts \
                 (a capacity problem, not a slow prefill)"
            .to_string();
        turn = vec![
            "add replicas".to_string(),
            "--enable-chunked-prefill".to_string(),
            "lower --max-model-len".to_string(),
        ];
        if let Some(m) = cx.batch_full().filter(|_| !cx.kv_full()) {
            turn.push(format!("raise --max-num-seqs above {m}: KV has room"));
        }
    } else if prompt_mean >= LONG_PROMPT {
        cause = format!(
            "prefill: long prompts (mean {prompt_mean:.0} tokens) take a whole step, or several, \
             before the first token"
        );
        turn = vec![
            "--enable-chunked-prefill".to_string(),
            "raise --max-num-batched-tokens (bigger prefill chunks per step)".to_string(),
        ];
    } else {
        let mut c = format!(
            "the first step is slow although prompts are short (mean {prompt_mean:.0} tokens): \
             scheduled requests share crowded steps"
        );
        if f.preemptions.total > 0.0 || f.swapped.max > 0.0 {
            c.push_str(", and preemption or swapping sends some back before their first token");
        }
        cause = c;
        turn = vec![
            "lower --max-num-seqs (shorter steps)".to_string(),
            "relieve KV pressure first if it is reported (fp8 KV, replicas)".to_string(),
        ];
    }
    if th.multi_turn && f.prefix_hit_rate().is_none_or(|r| r < th.prefix_hit_min) {
        turn.push("--enable-prefix-caching (multi-turn prompts repeat their history)".into());
    }
    Some(Finding {
        id: "ttft_high",
        severity: Severity::Warning,
        symptom: format!("TTFT p95 {} > {}", secs(t.p95), secs(th.ttft_p95_s)),
        evidence,
        cause,
        turn,
    })
}

fn tpot_high(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    let t = f.tpot.filter(|t| t.p95 > th.tpot_p95_s)?;
    let mut evidence = vec![format!(
        "{} ({}; ceiling p95 {})",
        dist_line("TPOT", &t),
        f.tpot_metric.unwrap_or("TPOT"),
        secs(th.tpot_p95_s)
    )];
    let running = match th.max_num_seqs {
        Some(m) => format!(
            "running mean {:.1}, max {:.0} of --max-num-seqs {m}",
            f.running.mean, f.running.max
        ),
        None => format!(
            "running mean {:.1}, max {:.0}",
            f.running.mean, f.running.max
        ),
    };
    evidence.push(running);
    let near_cap = th
        .max_num_seqs
        .is_some_and(|m| f.running.mean >= 0.9 * m as f64);
    let big = f.running.mean >= BIG_BATCH;
    // Prefills stretching some steps show as a long tail over the median.
    let tail = t.p95 / t.p50;
    let prefill_heavy = tail > 2.5 && f.prompt_tokens.rate > f.generation_tokens.rate;
    if prefill_heavy {
        evidence.push(format!(
            "p95 is {tail:.1}x p50 while prompt {:.1} tok/s > generation {:.1} tok/s: \
             prefills stretch some decode steps",
            f.prompt_tokens.rate, f.generation_tokens.rate
        ));
    }
    let mut causes = Vec::new();
    let mut turn = Vec::new();
    if big {
        causes.push(format!(
            "the batch is large (about {:.0} sequences per step{}): every step decodes them all, \
             so each token waits longer",
            f.running.mean,
            if near_cap { ", at --max-num-seqs" } else { "" }
        ));
        turn.push("lower --max-num-seqs".to_string());
        turn.push("--kv-cache-dtype fp8 (less KV to read per token)".to_string());
    }
    if prefill_heavy {
        causes.push("prompt prefills interleaved with decodes stretch the steps".to_string());
        turn.push(
            "--enable-chunked-prefill with a smaller --max-num-batched-tokens (shorter steps)"
                .into(),
        );
    }
    if causes.is_empty() {
        causes.push(format!(
            "decode is slow even for a small batch (about {:.1} sequences): the model is slow on \
             this hardware for this ceiling",
            f.running.mean
        ));
        turn.push("a faster GPU, quantized weights, or --tensor-parallel-size".to_string());
        turn.push("--tpot-p95-ms if the ceiling does not suit this model".to_string());
    }
    let cause = causes.join("; ");
    Some(Finding {
        id: "tpot_high",
        severity: Severity::Warning,
        symptom: format!("TPOT p95 {} > {}", secs(t.p95), secs(th.tpot_p95_s)),
        evidence,
        cause,
        turn,
    })
}

fn throughput_drop(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    let g = &f.generation_tokens;
    if f.snapshots < 4
        || g.early_rate <= 0.0
        || g.late_rate >= (1.0 - th.throughput_drop) * g.early_rate
    {
        return None;
    }
    let (run_early, run_late) = f.running.halves(f.t_mid);
    let (_, wait_late) = f.waiting.halves(f.t_mid);
    let mut evidence = vec![format!(
        "generation {:.1} tok/s in the first half, {:.1} tok/s in the second ({:.0}% lower)",
        g.early_rate,
        g.late_rate,
        (1.0 - g.late_rate / g.early_rate) * 100.0
    )];
    evidence.push(format!("running mean {run_early:.1} then {run_late:.1}"));
    let small = match f.generation_len_halves {
        (Some(a), Some(b)) => {
            evidence.push(format!(
                "generated tokens per request: mean {a:.1} then {b:.1}"
            ));
            b < 0.5 * a
        }
        (_, Some(b)) => {
            evidence.push(format!(
                "generated tokens per request in the second half: mean {b:.1}"
            ));
            false
        }
        _ => false,
    };
    if let (Some(a), Some(b)) = f.max_tokens_halves {
        evidence.push(format!("requested max_tokens: mean {a:.1} then {b:.1}"));
    }
    evidence.push(format!(
        "prompt {:.1} tok/s then {:.1} tok/s",
        f.prompt_tokens.early_rate, f.prompt_tokens.late_rate
    ));
    let load_fell = run_late < 0.5 * run_early && wait_late < 1.0;
    let (severity, cause, turn) = if small {
        (
            Severity::Warning,
            "the batch is filled with small requests: each generates few tokens, so steps go \
             to prefills and admissions instead of decoding"
                .to_string(),
            vec![
                "check the clients' max_tokens (and stop sequences)".to_string(),
                "--scheduler-delay-factor to batch prefills together".to_string(),
            ],
        )
    } else if load_fell {
        (
            Severity::Info,
            "fewer requests are running: the load fell, the server did not slow down".to_string(),
            vec!["nothing to turn, unless clients are failing to reach the server".to_string()],
        )
    } else {
        (
            Severity::Warning,
            "the batch held but produced fewer tokens: most often small requests filling it \
             (check the clients' max_tokens), else preemption or long prefills stealing steps"
                .to_string(),
            vec![
                "check the clients' max_tokens".to_string(),
                "see preemption / KV findings; --enable-chunked-prefill".to_string(),
            ],
        )
    };
    Some(Finding {
        id: "throughput_drop",
        severity,
        symptom: "generation throughput dropped".into(),
        evidence,
        cause,
        turn,
    })
}

fn prefix_cache(cx: &Ctx) -> Option<Finding> {
    let (f, th) = (cx.f, cx.th);
    if !th.multi_turn || f.prompt_tokens.total <= 0.0 {
        return None;
    }
    let finding = |symptom: String, evidence: Vec<String>, cause: &str| Finding {
        id: "prefix_cache_low",
        severity: Severity::Warning,
        symptom,
        evidence,
        cause: cause.into(),
        turn: vec!["--enable-prefix-caching (multi-turn TTFT drops at once)".into()],
    };
    if f.prefix_caching_enabled == Some(false) {
        return Some(finding(
            "prefix caching is off for multi-turn traffic".into(),
            vec!["vllm:cache_config_info{enable_prefix_caching=\"False\"}".into()],
            "every turn re-computes the whole conversation history",
        ));
    }
    if f.prefix_counters && f.prefix_queries <= 0.0 {
        return Some(finding(
            "no prefix-cache lookups while prompts were processed".into(),
            vec![format!(
                "vllm:prefix_cache_queries_total +0 while vllm:prompt_tokens_total +{:.0} over {}",
                f.prompt_tokens.total, cx.window
            )],
            "prefix caching is probably off: every turn re-computes the history",
        ));
    }
    let rate = f.prefix_hit_rate()?;
    if rate >= th.prefix_hit_min {
        return None;
    }
    let mut evidence = vec![if f.prefix_counters {
        format!(
            "hit rate {} ({:.0} of {:.0} queried tokens over {}); multi-turn should be > {}",
            pct(rate),
            f.prefix_hits,
            f.prefix_queries,
            cx.window,
            pct(th.prefix_hit_min)
        )
    } else {
        format!(
            "vllm:gpu_prefix_cache_hit_rate {} (since start); multi-turn should be > {}",
            pct(rate),
            pct(th.prefix_hit_min)
        )
    }];
    evidence.push(format!("KV usage mean {}", pct(f.kv_usage.mean)));
    Some(finding(
        format!(
            "prefix-cache hit rate {} < {} in multi-turn traffic",
            pct(rate),
            pct(th.prefix_hit_min)
        ),
        evidence,
        "conversation prefixes are not reused: caching off, cached blocks evicted under KV \
         pressure, or clients changing the start of the prompt (timestamps, reordered system \
         prompts)",
    ))
}

fn batch_full(cx: &Ctx) -> Option<Finding> {
    let f = cx.f;
    let m = cx.batch_full()?;
    let (at, of) = f.running.count_where(|r| r >= m as f64);
    let queue = f.waiting.mean >= 1.0;
    Some(Finding {
        id: "batch_full",
        severity: if queue {
            Severity::Warning
        } else {
            Severity::Info
        },
        symptom: format!("running = --max-num-seqs {m} sustained: the engine is at full batch"),
        evidence: vec![
            format!("running >= {m} {}", cx.in_scrapes(at, of)),
            format!(
                "waiting mean {:.1}; KV usage max {}",
                f.waiting.mean,
                pct(f.kv_usage.max)
            ),
        ],
        cause: if queue {
            "every slot is taken and requests queue behind them".into()
        } else {
            "every slot is taken; no queue yet".into()
        },
        turn: if cx.kv_full() {
            vec!["add replicas (KV is full too)".into()]
        } else {
            vec![
                format!("raise --max-num-seqs above {m} (KV has room)"),
                "or add replicas".into(),
            ]
        },
    })
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
