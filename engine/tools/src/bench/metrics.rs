//! Client-side metrics of a benchmark run, with vLLM's definitions (pure).
//!
//! - TTFT: request sent → first streamed chunk carrying a choice.
//! - ITL: gaps between consecutive streamed chunks (one list per request).
//! - TPOT: `(latency − TTFT) / (output tokens − 1)`, only for requests with more
//!   than one output token: the first token is excluded.
//! - E2EL: request sent → last chunk carrying a choice.
//! - Output tokens: the server's `usage.completion_tokens` when it streams usage,
//!   else the tokenizer's count of the generated text.
//! - Goodput: completed requests per second meeting every SLO given
//!   (`ttft`, `tpot`, `e2el` in ms; a request with ≤ 1 token has TPOT 0).
//! - Peak output tokens/s: the fullest one-second bucket of token arrival times;
//!   peak concurrency: a sweep over the half-open `[start, end)` intervals.
//!
//! Without streaming (`--no-stream`) a request's whole answer arrives at once:
//! TTFT equals E2EL and TPOT/ITL have no samples, so those three stay zero here
//! (the report says "n/a"); the answer's tokens all count at its arrival for the
//! per-second series, whose fullest second then measures bursts of answers, not
//! generation: peak output tokens/s stays zero (n/a) too.
//!
//! Percentiles interpolate linearly between order statistics (numpy's default),
//! means and standard deviations are over the population, and an empty list
//! counts as `[0]`, as vLLM's `np.mean(x or 0)` does.

use serde::Serialize;

/// What one request produced, as the client saw it. Times in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestOutput {
    pub success: bool,
    pub generated_text: String,
    /// Sent → last chunk carrying a choice.
    pub latency: f64,
    /// `usage.completion_tokens`, when the server streamed usage.
    pub usage_output_tokens: Option<usize>,
    pub ttft: f64,
    pub itl: Vec<f64>,
    /// The dataset's prompt length, replaced by `usage.prompt_tokens` when streamed.
    pub prompt_len: usize,
    pub error: String,
    /// Send time, seconds since the benchmark started.
    pub start_time: f64,
    /// Time spent waiting for a `--max-concurrency` slot before sending.
    pub client_queue_time: f64,
}

/// SLOs for goodput, milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Goodput {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

impl Goodput {
    /// Parse vLLM's `--goodput ttft:500 tpot:50` pairs.
    pub fn parse(pairs: &[String]) -> Result<Self, String> {
        let mut g = Goodput::default();
        for pair in pairs {
            let (name, value) = pair.split_once(':').ok_or_else(|| {
                format!(
                    "invalid --goodput {pair:?}: specify service level objectives as KEY:VALUE pairs, where the key is ttft, tpot or e2el and the value a number in milliseconds"
                )
            })?;
            let v: f64 = value.parse().map_err(|_| {
                format!("invalid --goodput {pair:?}: {value:?} is not a number of milliseconds")
            })?;
            if v < 0.0 || !v.is_finite() {
                return Err(format!(
                    "invalid --goodput {pair:?}: the value must be non-negative"
                ));
            }
            match name {
                "ttft" => g.ttft_ms = Some(v),
                "tpot" => g.tpot_ms = Some(v),
                "e2el" => g.e2el_ms = Some(v),
                _ => {
                    return Err(format!(
                        "invalid --goodput {pair:?}: the metric must be one of ttft, tpot, e2el"
                    ));
                }
            }
        }
        Ok(g)
    }

    pub fn is_set(&self) -> bool {
        self.ttft_ms.is_some() || self.tpot_ms.is_some() || self.e2el_ms.is_some()
    }
}

/// Mean, median, standard deviation and selected percentiles, milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub mean: f64,
    pub median: f64,
    pub std: f64,
    pub percentiles: Vec<(f64, f64)>,
}

impl Stats {
    /// Stats of `values` (seconds), reported in milliseconds.
    pub fn of(values: &[f64], percentiles: &[f64]) -> Self {
        let mut sorted: Vec<f64> = if values.is_empty() {
            vec![0.0]
        } else {
            values.to_vec()
        };
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let var = sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        Stats {
            mean: mean * 1000.0,
            median: percentile(&sorted, 50.0) * 1000.0,
            std: var.sqrt() * 1000.0,
            percentiles: percentiles
                .iter()
                .map(|&p| (p, percentile(&sorted, p) * 1000.0))
                .collect(),
        }
    }
}

/// numpy's default (linear) percentile of already sorted, non-empty values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let pos = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Per-second series over the run, from the first send to the last token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub tokens_per_second: Vec<f64>,
    /// Mean number of requests in flight during each second (time-weighted).
    pub concurrent_requests: Vec<f64>,
}

/// Everything the result block and JSON report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BenchmarkMetrics {
    pub completed: usize,
    pub failed: usize,
    pub total_input: usize,
    pub total_output: usize,
    pub request_throughput: f64,
    pub request_goodput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    /// TTFT, TPOT, ITL and the peak output tokens/s: zero for a run without
    /// streaming (not measured).
    pub ttft: Stats,
    pub tpot: Stats,
    pub itl: Stats,
    pub e2el: Stats,
    pub max_output_tokens_per_s: f64,
    pub max_concurrent_requests: usize,
    pub timeline: Timeline,
    /// Per request: output tokens (0 for failed requests).
    pub output_lens: Vec<usize>,
    /// Per successful request, seconds: TPOT (0 when ≤ 1 token) and E2EL.
    pub all_tpots: Vec<f64>,
}

/// Compute the metrics of a run that lasted `duration` seconds; `stream` says
/// whether the answers were streamed (TTFT, TPOT and ITL measured).
/// `count_tokens` tokenizes generated text when the server sent no usage.
pub fn calculate(
    outputs: &[RequestOutput],
    duration: f64,
    count_tokens: impl Fn(&str) -> usize,
    percentiles: &[f64],
    goodput: &Goodput,
    stream: bool,
) -> BenchmarkMetrics {
    let mut m = BenchmarkMetrics::default();
    let (mut ttfts, mut tpots, mut itls, mut e2els) = (vec![], vec![], vec![], vec![]);
    for o in outputs {
        if !o.success {
            m.failed += 1;
            m.output_lens.push(0);
            continue;
        }
        let output_len = match o.usage_output_tokens {
            Some(n) if n > 0 => n,
            _ => count_tokens(&o.generated_text),
        };
        m.output_lens.push(output_len);
        m.total_input += o.prompt_len;
        let mut tpot = 0.0;
        if output_len > 1 {
            tpot = (o.latency - o.ttft) / (output_len - 1) as f64;
            tpots.push(tpot);
        }
        m.all_tpots.push(tpot);
        itls.extend_from_slice(&o.itl);
        ttfts.push(o.ttft);
        e2els.push(o.latency);
        m.completed += 1;
    }
    m.total_output = m.output_lens.iter().sum();
    let good = if goodput.is_set() {
        let ok = |v: f64, slo: Option<f64>| slo.is_none_or(|ms| ms / 1000.0 >= v);
        (0..ttfts.len())
            .filter(|&i| {
                ok(ttfts[i], goodput.ttft_ms)
                    && ok(m.all_tpots[i], goodput.tpot_ms)
                    && ok(e2els[i], goodput.e2el_ms)
            })
            .count()
    } else {
        0
    };
    m.request_throughput = m.completed as f64 / duration;
    m.request_goodput = good as f64 / duration;
    m.output_throughput = m.total_output as f64 / duration;
    m.total_token_throughput = (m.total_input + m.total_output) as f64 / duration;
    if stream {
        m.ttft = Stats::of(&ttfts, percentiles);
        m.tpot = Stats::of(&tpots, percentiles);
        m.itl = Stats::of(&itls, percentiles);
    }
    m.e2el = Stats::of(&e2els, percentiles);
    let ok: Vec<&RequestOutput> = outputs.iter().filter(|o| o.success).collect();
    let tokens: Vec<f64> = if stream {
        ok.iter().flat_map(|o| streamed_token_times(o)).collect()
    } else {
        // Whole answers: every token of one arrives with it.
        outputs
            .iter()
            .zip(&m.output_lens)
            .filter(|(o, _)| o.success)
            .flat_map(|(o, &n)| std::iter::repeat_n(o.start_time + o.latency, n))
            .collect()
    };
    m.timeline = timeline(&ok, &tokens);
    if stream {
        m.max_output_tokens_per_s = m
            .timeline
            .tokens_per_second
            .iter()
            .copied()
            .fold(0.0, f64::max);
    }
    m.max_concurrent_requests = peak_concurrency(&ok);
    m
}

/// Arrival times of a streamed request's tokens: the first at start + TTFT,
/// then one per ITL gap (vLLM counts chunks).
fn streamed_token_times(o: &RequestOutput) -> Vec<f64> {
    let first = o.start_time + o.ttft;
    std::iter::once(first)
        .chain(o.itl.iter().scan(first, |at, gap| {
            *at += gap;
            Some(*at)
        }))
        .collect()
}

/// One-second buckets from the first send: the `tokens` (arrival times) that
/// fall in each and the mean number of requests in flight during it.
fn timeline(ok: &[&RequestOutput], tokens: &[f64]) -> Timeline {
    let Some(t0) = ok.iter().map(|o| o.start_time).min_by(f64::total_cmp) else {
        return Timeline::default();
    };
    let end = ok
        .iter()
        .map(|o| o.start_time + o.latency)
        .fold(t0, f64::max);
    let n = (end - t0).ceil() as usize + 1;
    let mut t = Timeline {
        tokens_per_second: vec![0.0; n],
        concurrent_requests: vec![0.0; n],
    };
    for at in tokens {
        let b = (at - t0) as usize;
        if b < n {
            t.tokens_per_second[b] += 1.0;
        }
    }
    for o in ok {
        let (start, end) = (o.start_time - t0, o.start_time + o.latency - t0);
        for s in (start as usize)..(end.ceil() as usize).min(n) {
            let overlap = end.min(s as f64 + 1.0) - start.max(s as f64);
            t.concurrent_requests[s] += overlap.max(0.0);
        }
    }
    t
}

/// Most requests in flight at once over half-open `[start, end)` intervals.
fn peak_concurrency(ok: &[&RequestOutput]) -> usize {
    let mut events: Vec<(f64, i32)> = ok
        .iter()
        .flat_map(|o| [(o.start_time, 1), (o.start_time + o.latency, -1)])
        .collect();
    // Departures before arrivals at the same instant.
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(start: f64, ttft: f64, itl: &[f64], usage: Option<usize>) -> RequestOutput {
        RequestOutput {
            success: true,
            generated_text: "x".repeat(itl.len() + 1),
            latency: ttft + itl.iter().sum::<f64>(),
            usage_output_tokens: usage,
            ttft,
            itl: itl.to_vec(),
            prompt_len: 10,
            start_time: start,
            ..Default::default()
        }
    }

    #[test]
    fn percentiles_match_numpy_linear_interpolation() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 99.0) - 3.97).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[5.0], 90.0), 5.0);
        let s = Stats::of(&[0.001, 0.002, 0.003], &[50.0]);
        assert!((s.mean - 2.0).abs() < 1e-9 && (s.median - 2.0).abs() < 1e-9);
        assert!(
            (s.std - (2.0f64 / 3.0).sqrt()).abs() < 1e-9,
            "population std"
        );
        assert_eq!(Stats::of(&[], &[99.0]).percentiles, vec![(99.0, 0.0)]);
    }

    #[test]
    fn tpot_excludes_the_first_token_and_usage_wins_over_the_tokenizer() {
        // 1 s to first token, then 4 tokens 0.1 s apart; usage says 5 tokens.
        let a = out(0.0, 1.0, &[0.1; 4], Some(5));
        // The server sent no usage: the tokenizer counts 3 tokens.
        let mut b = out(0.5, 0.5, &[0.25, 0.25], None);
        b.generated_text = "abc".into();
        let mut failed = RequestOutput {
            error: "HTTP 500".into(),
            ..Default::default()
        };
        failed.prompt_len = 99;
        let m = calculate(
            &[a, b, failed],
            2.0,
            |t| t.len(),
            &[50.0],
            &Goodput::default(),
            true,
        );
        assert_eq!((m.completed, m.failed), (2, 1));
        assert_eq!(m.output_lens, vec![5, 3, 0]);
        assert_eq!(
            (m.total_input, m.total_output),
            (20, 8),
            "failed prompts do not count"
        );
        assert!(
            (m.tpot.mean - (100.0 + 250.0) / 2.0).abs() < 1e-6,
            "{:?}",
            m.tpot
        );
        assert!((m.ttft.mean - 750.0).abs() < 1e-9);
        assert!((m.itl.mean - (0.4 + 0.5) / 6.0 * 1000.0).abs() < 1e-6);
        assert!((m.e2el.median - 1200.0).abs() < 1e-6);
        assert_eq!(m.request_throughput, 1.0);
        assert_eq!(m.output_throughput, 4.0);
        assert_eq!(m.total_token_throughput, 14.0);
    }

    #[test]
    fn single_token_requests_have_no_tpot_sample_but_count_as_zero_for_goodput() {
        let one = out(0.0, 0.2, &[], Some(1));
        let slow = out(0.0, 0.9, &[0.2, 0.2], Some(3));
        let g = Goodput::parse(&["ttft:500".into(), "tpot:100".into()]).unwrap();
        let m = calculate(&[one, slow], 1.0, |_| 0, &[99.0], &g, true);
        assert_eq!(m.all_tpots, vec![0.0, 0.2]);
        assert!(
            (m.tpot.mean - 200.0).abs() < 1e-9,
            "only the 3-token request has a TPOT"
        );
        assert_eq!(m.request_goodput, 1.0, "the slow request misses both SLOs");
    }

    #[test]
    fn goodput_parsing_rejects_bad_pairs() {
        assert!(
            Goodput::parse(&["ttft".into()])
                .unwrap_err()
                .contains("KEY:VALUE")
        );
        assert!(
            Goodput::parse(&["foo:1".into()])
                .unwrap_err()
                .contains("ttft, tpot, e2el")
        );
        assert!(
            Goodput::parse(&["e2el:-1".into()])
                .unwrap_err()
                .contains("non-negative")
        );
        assert_eq!(
            Goodput::parse(&["e2el:2000".into()]).unwrap().e2el_ms,
            Some(2000.0)
        );
    }

    #[test]
    fn peak_concurrency_and_per_second_buckets() {
        // [0, 2), [1, 3), [2, 2.5): at most two overlap (the first ends as the third starts).
        let a = out(0.0, 1.0, &[1.0], None);
        let b = out(1.0, 0.5, &[1.5], None);
        let c = out(2.0, 0.5, &[], None);
        let refs: Vec<&RequestOutput> = vec![&a, &b, &c];
        assert_eq!(peak_concurrency(&refs), 2);
        let tokens: Vec<f64> = refs.iter().flat_map(|o| streamed_token_times(o)).collect();
        let t = timeline(&refs, &tokens);
        // Tokens at 1.0, 2.0 (a); 1.5, 3.0 (b); 2.5 (c).
        assert_eq!(t.tokens_per_second, vec![0.0, 2.0, 2.0, 1.0]);
        assert_eq!(t.concurrent_requests, vec![1.0, 2.0, 1.5, 0.0]);
    }

    #[test]
    fn without_streaming_only_throughput_and_e2el_are_measured() {
        // Whole answers: TTFT = latency, no ITL; usage gives the token counts.
        let whole = |start: f64, latency: f64, tokens: usize| RequestOutput {
            success: true,
            latency,
            ttft: latency,
            usage_output_tokens: Some(tokens),
            prompt_len: 10,
            start_time: start,
            ..Default::default()
        };
        let outputs = [whole(0.0, 1.5, 8), whole(0.2, 2.5, 8)];
        let g = Goodput::parse(&["e2el:2000".into()]).unwrap();
        let m = calculate(&outputs, 4.0, |_| 0, &[99.0], &g, false);
        assert_eq!(m.output_throughput, 4.0);
        assert_eq!(m.request_throughput, 0.5);
        assert!((m.e2el.mean - 2000.0).abs() < 1e-9);
        assert_eq!(m.ttft, Stats::default(), "not measured");
        assert_eq!(m.tpot, Stats::default(), "not measured");
        assert_eq!(m.itl, Stats::default(), "not measured");
        assert_eq!(m.request_goodput, 0.25, "one answer within 2 s");
        // Each answer's 8 tokens land in the second it arrived.
        assert_eq!(m.timeline.tokens_per_second, vec![0.0, 8.0, 8.0, 0.0]);
        assert_eq!(m.max_output_tokens_per_s, 0.0, "not measured");
    }
}
