//! What a window of metrics says, as numbers: the gauges' traces, counter
//! increases and rates (whole window, first half, second half), latency
//! quantiles from histogram bucket increases, per-request means, prefix-cache
//! hit rate and the cache config. [`Facts::from_series`] is the only place that
//! knows metric names; the rules in `diagnose` read these fields.
//!
//! Gauges are taken from the worst target at each snapshot (`max` over label
//! sets): one saturated replica is a problem even when the average looks fine.
//! Counters and histograms are summed over targets, as `sum(rate(...))` would.

use serde::Serialize;

use super::names;
use super::series::{Series, Trace, histogram_quantile};

/// A gauge over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Gauge {
    /// Which metric it was read from (`None`: not exported).
    pub metric: Option<&'static str>,
    #[serde(skip)]
    pub trace: Trace,
    pub mean: f64,
    pub max: f64,
    pub last: f64,
}

impl Gauge {
    fn new(metric: Option<&'static str>, trace: Trace) -> Self {
        let n = trace.len().max(1) as f64;
        Self {
            metric,
            mean: trace.iter().map(|p| p.1).sum::<f64>() / n,
            max: trace.iter().map(|p| p.1).fold(0.0, f64::max),
            last: trace.last().map_or(0.0, |p| p.1),
            trace,
        }
    }

    /// Whether the gauge was exported at all.
    pub fn present(&self) -> bool {
        !self.trace.is_empty()
    }

    /// Snapshots where `pred` holds, and the snapshots there are.
    pub fn count_where(&self, pred: impl Fn(f64) -> bool) -> (usize, usize) {
        (
            self.trace.iter().filter(|p| pred(p.1)).count(),
            self.trace.len(),
        )
    }

    /// Fraction of snapshots where `pred` holds (0 without snapshots).
    pub fn fraction(&self, pred: impl Fn(f64) -> bool) -> f64 {
        let (n, of) = self.count_where(pred);
        if of == 0 { 0.0 } else { n as f64 / of as f64 }
    }

    /// Mean over the first and the last third of the snapshots.
    pub fn thirds(&self) -> (f64, f64) {
        let n = self.trace.len();
        if n == 0 {
            return (0.0, 0.0);
        }
        let k = n.div_ceil(3);
        let mean = |s: &[(f64, f64)]| s.iter().map(|p| p.1).sum::<f64>() / s.len() as f64;
        (mean(&self.trace[..k]), mean(&self.trace[n - k..]))
    }

    /// Mean over the first and the second half of the window, split at `t_mid`.
    pub fn halves(&self, t_mid: f64) -> (f64, f64) {
        let mean = |it: Vec<f64>| {
            if it.is_empty() {
                0.0
            } else {
                it.iter().sum::<f64>() / it.len() as f64
            }
        };
        let early = self.trace.iter().filter(|p| p.0 <= t_mid).map(|p| p.1);
        let late = self.trace.iter().filter(|p| p.0 >= t_mid).map(|p| p.1);
        (mean(early.collect()), mean(late.collect()))
    }
}

/// A counter over the window and its two halves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counter {
    pub total: f64,
    /// Per second over the whole window.
    pub rate: f64,
    pub early_rate: f64,
    pub late_rate: f64,
}

/// A latency (or size) histogram over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Dist {
    /// Observations in the window.
    pub count: f64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Everything the rules read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facts {
    /// First to last snapshot, seconds.
    pub window_s: f64,
    pub snapshots: usize,
    /// Targets (label sets of `vllm:num_requests_running`).
    pub targets: usize,
    /// Unix time of the middle snapshot, splitting "early" from "late".
    #[serde(skip)]
    pub t_mid: f64,
    pub waiting: Gauge,
    pub running: Gauge,
    pub swapped: Gauge,
    pub kv_usage: Gauge,
    pub cpu_kv_usage: Gauge,
    pub preemptions: Counter,
    pub prompt_tokens: Counter,
    pub generation_tokens: Counter,
    /// Requests finished (any reason) and aborted, in the window.
    pub finished: f64,
    pub aborted: f64,
    pub ttft: Option<Dist>,
    /// Per-token decode latency (inter-token latency, or the older TPOT name).
    pub tpot: Option<Dist>,
    pub tpot_metric: Option<&'static str>,
    pub e2e: Option<Dist>,
    pub queue_time: Option<Dist>,
    pub prefill_time: Option<Dist>,
    pub prompt_len: Option<Dist>,
    pub generation_len: Option<Dist>,
    /// Mean generated tokens per finished request, first and second half.
    pub generation_len_halves: (Option<f64>, Option<f64>),
    pub max_tokens: Option<Dist>,
    pub max_tokens_halves: (Option<f64>, Option<f64>),
    /// Prefix cache tokens queried and hit in the window (counters).
    pub prefix_queries: f64,
    pub prefix_hits: f64,
    /// Whether the counters exist at all.
    pub prefix_counters: bool,
    /// The older cumulative hit-rate gauge, last value (when exported).
    pub prefix_hit_rate_gauge: Option<f64>,
    /// `enable_prefix_caching` from `vllm:cache_config_info`.
    pub prefix_caching_enabled: Option<bool>,
    pub num_gpu_blocks: Option<u64>,
}

impl Facts {
    /// Prefix-cache hit rate in the window: counters if exported, else the gauge.
    pub fn prefix_hit_rate(&self) -> Option<f64> {
        if self.prefix_counters {
            (self.prefix_queries > 0.0).then(|| self.prefix_hits / self.prefix_queries)
        } else {
            self.prefix_hit_rate_gauge
        }
    }

    /// Nothing ran, waited or finished in the window.
    pub fn idle(&self) -> bool {
        self.generation_tokens.total == 0.0
            && self.prompt_tokens.total == 0.0
            && self.running.max == 0.0
            && self.waiting.max == 0.0
    }

    /// Reads the facts out of a series (at least two snapshots).
    pub fn from_series(s: &Series) -> Self {
        let n = s.snapshots.len();
        let last = n.saturating_sub(1);
        let mid = s.middle();
        let t = |i: usize| s.snapshots.get(i).map_or(0.0, |x| x.t);
        let (t0, t_mid, t1) = (t(0), t(mid), t(last));
        let per_s = |v: f64, d: f64| if d > 0.0 { v / d } else { 0.0 };
        let counter = |name: &str| Counter {
            total: s.increase(name),
            rate: per_s(s.increase(name), t1 - t0),
            early_rate: per_s(s.increase_where(name, 0, mid, |_| true), t_mid - t0),
            late_rate: per_s(s.increase_where(name, mid, last, |_| true), t1 - t_mid),
        };
        let dist = |family: &str| -> Option<Dist> {
            let (count, mean) = s.histogram_mean(family, 0, last)?;
            let b = s.bucket_increase(family, 0, last);
            let q = |q| histogram_quantile(q, &b).unwrap_or(f64::NAN);
            Some(Dist {
                count,
                mean,
                p50: q(0.5),
                p95: q(0.95),
                p99: q(0.99),
            })
        };
        let halves = |family: &str| {
            (
                s.histogram_mean(family, 0, mid).map(|m| m.1),
                s.histogram_mean(family, mid, last).map(|m| m.1),
            )
        };
        let kv = s.first_present(&names::KV_USAGE);
        let tpot = names::TPOT
            .iter()
            .copied()
            .find(|f| s.has(&format!("{f}_count")));
        let config = s.snapshots.iter().rev().find_map(|x| {
            x.samples
                .iter()
                .find(|x| x.name == names::CACHE_CONFIG_INFO)
        });
        let success = |keep: fn(Option<&str>) -> bool| {
            s.increase_where(names::REQUEST_SUCCESS, 0, last, |x| {
                keep(x.label("finished_reason"))
            })
        };
        Facts {
            window_s: t1 - t0,
            snapshots: n,
            targets: s.label_sets(names::RUNNING).max(1),
            t_mid,
            waiting: Gauge::new(Some(names::WAITING), s.max(names::WAITING)),
            running: Gauge::new(Some(names::RUNNING), s.max(names::RUNNING)),
            swapped: Gauge::new(Some(names::SWAPPED), s.max(names::SWAPPED)),
            kv_usage: Gauge::new(kv, kv.map(|k| s.max(k)).unwrap_or_default()),
            cpu_kv_usage: Gauge::new(Some(names::CPU_KV_USAGE), s.max(names::CPU_KV_USAGE)),
            preemptions: counter(names::PREEMPTIONS),
            prompt_tokens: counter(names::PROMPT_TOKENS),
            generation_tokens: counter(names::GENERATION_TOKENS),
            finished: success(|_| true),
            aborted: success(|r| r == Some("abort")),
            ttft: dist(names::TTFT),
            tpot: tpot.and_then(dist),
            tpot_metric: tpot,
            e2e: dist(names::E2E),
            queue_time: dist(names::QUEUE_TIME),
            prefill_time: dist(names::PREFILL_TIME),
            prompt_len: dist(names::REQUEST_PROMPT_TOKENS),
            generation_len: dist(names::REQUEST_GENERATION_TOKENS),
            generation_len_halves: halves(names::REQUEST_GENERATION_TOKENS),
            max_tokens: dist(names::REQUEST_MAX_TOKENS),
            max_tokens_halves: halves(names::REQUEST_MAX_TOKENS),
            prefix_queries: s.increase(names::PREFIX_QUERIES),
            prefix_hits: s.increase(names::PREFIX_HITS),
            prefix_counters: s.has(names::PREFIX_QUERIES),
            prefix_hit_rate_gauge: s.max(names::PREFIX_HIT_RATE).last().map(|p| p.1),
            prefix_caching_enabled: config
                .and_then(|c| c.label("enable_prefix_caching"))
                .map(|v| v.eq_ignore_ascii_case("true")),
            num_gpu_blocks: config
                .and_then(|c| c.label("num_gpu_blocks"))
                .and_then(|v| v.parse().ok()),
        }
    }
}
