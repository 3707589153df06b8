//! The periodic stats line vLLM operators alert on, every `--log-stats-interval`
//! seconds (the seed's format):
//!
//! `Avg prompt throughput: 1234.5 tokens/s, Avg generation throughput: 567.8 tokens/s,
//! Running: 42 reqs, Swapped: 0 reqs, Pending: 3 reqs, GPU KV cache usage: 67.3%,
//! CPU KV cache usage: 0.0%` — plus `, Prefix cache hit rate: 45.0%` with prefix caching.
//!
//! With speculative decoding a second line follows, vLLM v1's: `SpecDecoding metrics:
//! Mean acceptance length: 2.31, Accepted throughput: 12.40 tokens/s, Drafted
//! throughput: 30.00 tokens/s, Accepted: 124 tokens, Drafted: 300 tokens, Per-position
//! acceptance rate: 0.620, 0.410, 0.280, Avg Draft acceptance rate: 41.3%` (mean
//! acceptance length counts the token after the drafts; nothing is logged for an
//! interval without drafts).
//!
//! Throughputs are the interval's token counts over its length (prompt tokens are
//! counted when a request's first token comes out, as in vLLM). An idle interval
//! is logged at debug level so quiet servers stay quiet.

use std::time::Duration;

use tracing::{debug, info};

use super::EngineMetrics;

/// The line for the interval between two snapshots `elapsed` seconds apart.
pub fn stats_line(prev: &EngineMetrics, cur: &EngineMetrics, elapsed: f64) -> String {
    let elapsed = elapsed.max(1e-9);
    let prompt = cur.prompt_tokens.saturating_sub(prev.prompt_tokens) as f64 / elapsed;
    let generation = cur.generation_tokens.saturating_sub(prev.generation_tokens) as f64 / elapsed;
    let s = &cur.scheduler;
    let mut line = format!(
        "Avg prompt throughput: {prompt:.1} tokens/s, Avg generation throughput: {generation:.1} tokens/s, \
         Running: {} reqs, Swapped: {} reqs, Pending: {} reqs, GPU KV cache usage: {:.1}%, CPU KV cache usage: {:.1}%",
        s.num_running,
        s.num_swapped,
        s.num_waiting,
        s.device_cache_usage * 100.0,
        s.host_cache_usage * 100.0,
    );
    if cur.cache.enable_prefix_caching {
        let queries = s
            .prefix_cache_queries
            .saturating_sub(prev.scheduler.prefix_cache_queries);
        let hits = s
            .prefix_cache_hits
            .saturating_sub(prev.scheduler.prefix_cache_hits);
        let rate = if queries > 0 {
            hits as f64 / queries as f64
        } else {
            cur.prefix_cache_hit_rate()
        };
        line.push_str(&format!(", Prefix cache hit rate: {:.1}%", rate * 100.0));
    }
    line
}

/// vLLM v1's `SpecDecoding metrics` line for the interval, `None` when nothing was
/// drafted in it.
pub fn spec_decode_line(prev: &EngineMetrics, cur: &EngineMetrics, elapsed: f64) -> Option<String> {
    let d = cur
        .scheduler
        .spec_decoding
        .since(&prev.scheduler.spec_decoding);
    if d.num_drafts == 0 {
        return None;
    }
    let elapsed = elapsed.max(1e-9);
    let per_pos: Vec<String> = d
        .per_position_rates(cur.num_speculative_tokens)
        .iter()
        .map(|r| format!("{r:.3}"))
        .collect();
    Some(format!(
        "SpecDecoding metrics: Mean acceptance length: {:.2}, Accepted throughput: {:.2} tokens/s, \
         Drafted throughput: {:.2} tokens/s, Accepted: {} tokens, Drafted: {} tokens, \
         Per-position acceptance rate: {}, Avg Draft acceptance rate: {:.1}%",
        d.mean_acceptance_length(),
        d.num_accepted_tokens as f64 / elapsed,
        d.num_draft_tokens as f64 / elapsed,
        d.num_accepted_tokens,
        d.num_draft_tokens,
        per_pos.join(", "),
        d.acceptance_rate() * 100.0,
    ))
}

/// True when nothing happened in the interval and nothing is queued.
pub fn is_idle(prev: &EngineMetrics, cur: &EngineMetrics) -> bool {
    let s = &cur.scheduler;
    cur.prompt_tokens == prev.prompt_tokens
        && cur.generation_tokens == prev.generation_tokens
        && s.num_running == 0
        && s.num_waiting == 0
        && s.num_swapped == 0
}

/// Logs the line every `interval` until `snapshot` answers `None` (the engine stopped).
pub async fn run(snapshot: impl Fn() -> Option<EngineMetrics>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    let Some(mut prev) = snapshot() else {
        return;
    };
    let mut prev_at = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        let Some(cur) = snapshot() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let elapsed = (now - prev_at).as_secs_f64();
        let line = stats_line(&prev, &cur, elapsed);
        if is_idle(&prev, &cur) {
            debug!(target: "candela::stats", "{line}");
        } else {
            info!(target: "candela::stats", "{line}");
        }
        if let Some(spec) = spec_decode_line(&prev, &cur, elapsed) {
            info!(target: "candela::stats", "{spec}");
        }
        prev = cur;
        prev_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CacheInfo;

    #[test]
    fn line_matches_the_seed_format_and_numbers() {
        let cache = CacheInfo {
            enable_prefix_caching: true,
            ..Default::default()
        };
        let prev = EngineMetrics::new("m", 100, cache.clone());
        let mut cur = prev.clone();
        cur.prompt_tokens = 12345;
        cur.generation_tokens = 5678;
        cur.scheduler.num_running = 42;
        cur.scheduler.num_waiting = 3;
        cur.scheduler.device_cache_usage = 0.673;
        cur.scheduler.prefix_cache_queries = 200;
        cur.scheduler.prefix_cache_hits = 90;
        assert_eq!(
            stats_line(&prev, &cur, 10.0),
            "Avg prompt throughput: 1234.5 tokens/s, Avg generation throughput: 567.8 tokens/s, \
             Running: 42 reqs, Swapped: 0 reqs, Pending: 3 reqs, GPU KV cache usage: 67.3%, \
             CPU KV cache usage: 0.0%, Prefix cache hit rate: 45.0%"
        );
        assert!(!is_idle(&prev, &cur));
        let mut quiet = cur.clone();
        quiet.scheduler.num_running = 0;
        quiet.scheduler.num_waiting = 0;
        assert!(is_idle(&quiet, &quiet), "no new tokens and nothing queued");
    }

    #[test]
    fn spec_decode_line_is_vllms_over_the_interval() {
        let mut prev = EngineMetrics::new("m", 100, CacheInfo::default());
        prev.num_speculative_tokens = 3;
        assert_eq!(
            spec_decode_line(&prev, &prev, 10.0),
            None,
            "no drafts, no line"
        );
        prev.scheduler.spec_decoding.observe(3, 3);
        let mut cur = prev.clone();
        // 4 drafts of 3: 3, 2, 0 and 1 accepted.
        for accepted in [3, 2, 0, 1] {
            cur.scheduler.spec_decoding.observe(3, accepted);
        }
        assert_eq!(
            spec_decode_line(&prev, &cur, 2.0).unwrap(),
            "SpecDecoding metrics: Mean acceptance length: 2.50, Accepted throughput: 3.00 tokens/s, \
             Drafted throughput: 6.00 tokens/s, Accepted: 6 tokens, Drafted: 12 tokens, \
             Per-position acceptance rate: 0.750, 0.500, 0.250, Avg Draft acceptance rate: 50.0%"
        );
    }
}
