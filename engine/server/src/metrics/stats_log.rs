//! The periodic stats line vLLM operators alert on, every `--log-stats-interval`
//! seconds (the seed's format):
//!
//! `Avg prompt throughput: 1234.5 tokens/s, Avg generation throughput: 567.8 tokens/s,
//! Running: 42 reqs, Swapped: 0 reqs, Pending: 3 reqs, GPU KV cache usage: 67.3%,
//! CPU KV cache usage: 0.0%` — plus `, Prefix cache hit rate: 45.0%` with prefix caching.
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
        let line = stats_line(&prev, &cur, (now - prev_at).as_secs_f64());
        if is_idle(&prev, &cur) {
            debug!(target: "candela::stats", "{line}");
        } else {
            info!(target: "candela::stats", "{line}");
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
}
