//! The engine's Prometheus metrics, as vLLM defines them.
//!
//! [`EngineMetrics`] is plain data: the engine thread updates it after every
//! step (gauges from the live scheduler and KV pools, token counters, latency
//! histograms with vLLM's timing definitions) and everything that reports —
//! `/metrics`, the stats log line, gRPC `WatchStats`, the sidecar — reads a copy
//! and renders it with [`EngineMetrics::render`], so all show identical values.
//! Names and buckets live in [`names`] (the contract crate). Labels are `model_name` and `engine`
//! (plus `finished_reason` on request counts): cardinality stays bounded.
//!
//! Timing definitions (vLLM's): TTFT = first token − arrival (queueing
//! included); queue = first scheduled − arrival; prefill = first token − first
//! scheduled; decode = last token − first token; inference = last token − first
//! scheduled; TPOT = decode / (generated − 1); e2e = finish − arrival.
//!
//! Speculative decoding (vLLM v1's counters plus v0's two gauges) reads the
//! scheduler's cumulative counts; with it off the counters stay 0 and the gauges are
//! NaN (undefined, not "0 % accepted"). LoRA: `vllm:lora_requests_info` (vLLM's
//! gauge: `--max-loras` and the running and waiting adapters as labels) and
//! `vllm:lora_requests_total{lora_name}` (the seed's counter, one series per adapter
//! that served a request).

pub mod histogram;
/// Names and buckets, defined in the contract crate (shared with the operator and `doctor`).
pub use candela_contract::metrics as names;
mod render;
pub mod stats_log;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candela_core::{
    FinishReason, LoraId, Request, RequestOutput, RequestStatus, SchedulerOutput, SchedulerStats,
};

pub use histogram::{Histogram, buckets_1_2_5};

/// The KV cache configuration, exported as `vllm:cache_config_info` labels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CacheInfo {
    pub block_size: usize,
    pub num_gpu_blocks: usize,
    pub num_cpu_blocks: usize,
    pub enable_prefix_caching: bool,
    pub cache_dtype: String,
    pub gpu_memory_utilization: f64,
    pub swap_space_gib: f64,
}

/// Latency and size histograms, one field per vLLM histogram.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histograms {
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub request_time_per_output_token: Histogram,
    pub e2e_request_latency: Histogram,
    pub request_queue_time: Histogram,
    pub request_inference_time: Histogram,
    pub request_prefill_time: Histogram,
    pub request_decode_time: Histogram,
    pub request_prompt_tokens: Histogram,
    pub request_generation_tokens: Histogram,
    pub request_max_num_generation_tokens: Histogram,
    pub request_params_max_tokens: Histogram,
    pub request_params_n: Histogram,
    pub iteration_tokens: Histogram,
}

/// Everything `/metrics` shows, as plain data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineMetrics {
    pub model_name: String,
    pub cache: CacheInfo,
    /// Live gauges and cumulative scheduler counters (preemptions, prefix queries/hits).
    pub scheduler: SchedulerStats,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    /// Finished requests by reason: stop, length, abort.
    pub success_stop: u64,
    pub success_length: u64,
    pub success_abort: u64,
    pub histograms: Histograms,
    /// Most drafted tokens per request and step; 0 when speculative decoding is off
    /// (the per-position counter then has no series).
    pub num_speculative_tokens: usize,
    pub lora: LoraMetrics,
}

/// LoRA adapters: what `vllm:lora_requests_info` and `vllm:lora_requests_total` show.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoraMetrics {
    /// `--max-loras`; 0 when LoRA is off.
    pub max_loras: usize,
    /// Adapter names by engine id (the scheduler's stats carry ids).
    pub names: BTreeMap<LoraId, String>,
    /// Requests admitted per adapter name; only names of loaded adapters ever appear,
    /// so the label's cardinality is bounded by what operators load.
    pub requests: BTreeMap<String, u64>,
    /// Unix seconds when the running or waiting adapters last changed (vLLM sets the
    /// info gauge to the time of its last update).
    pub updated_unix: f64,
}

impl LoraMetrics {
    /// Comma-joined names of `ids` (the info gauge's label values).
    pub fn joined(&self, ids: &[LoraId]) -> String {
        ids.iter()
            .map(|id| self.names.get(id).map_or("", String::as_str))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The wall clock as Unix seconds (info gauges carry a time as their value).
pub fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The engine's live metrics, shared between the engine thread and readers.
pub type SharedMetrics = Arc<Mutex<EngineMetrics>>;

impl EngineMetrics {
    pub fn new(model_name: &str, max_model_len: usize, cache: CacheInfo) -> Self {
        let h = |b: &[f64]| Histogram::new(b.to_vec());
        let lens = || Histogram::new(buckets_1_2_5(max_model_len));
        EngineMetrics {
            model_name: model_name.to_owned(),
            cache,
            histograms: Histograms {
                time_to_first_token: h(names::TTFT_BUCKETS),
                inter_token_latency: h(names::TPOT_BUCKETS),
                request_time_per_output_token: h(names::TPOT_BUCKETS),
                e2e_request_latency: h(names::REQUEST_LATENCY_BUCKETS),
                request_queue_time: h(names::REQUEST_LATENCY_BUCKETS),
                request_inference_time: h(names::REQUEST_LATENCY_BUCKETS),
                request_prefill_time: h(names::REQUEST_LATENCY_BUCKETS),
                request_decode_time: h(names::REQUEST_LATENCY_BUCKETS),
                request_prompt_tokens: lens(),
                request_generation_tokens: lens(),
                request_max_num_generation_tokens: lens(),
                request_params_max_tokens: lens(),
                request_params_n: h(names::PARAMS_N_BUCKETS),
                iteration_tokens: h(names::ITERATION_TOKENS_BUCKETS),
            },
            ..Default::default()
        }
    }

    /// One engine step: tokens in the batch, then each token that came out at `now`.
    pub fn on_step(&mut self, plan: &SchedulerOutput, outputs: &[RequestOutput], now: f64) {
        if plan.num_batched_tokens > 0 {
            self.histograms
                .iteration_tokens
                .observe(plan.num_batched_tokens as f64);
        }
        let mut prev_id = None;
        for o in outputs {
            self.generation_tokens += 1;
            match o.prev_token_time {
                None => {
                    // vLLM counts a prompt's tokens once, when its first token comes out.
                    self.prompt_tokens += o.num_prompt_tokens as u64;
                    self.histograms
                        .time_to_first_token
                        .observe(now - o.arrival_time);
                }
                // Accepted speculative drafts come out in the same step as the token
                // after them (consecutive outputs): vLLM observes one inter-token
                // latency per request and step.
                Some(_) if Some(o.id) == prev_id => {}
                Some(prev) => self.histograms.inter_token_latency.observe(now - prev),
            }
            prev_id = Some(o.id);
        }
    }

    /// A request left the engine at `now` (finished or aborted).
    pub fn on_finished(&mut self, req: &Request, now: f64) {
        let reason = match req.status {
            RequestStatus::Finished(r) => r,
            _ => return,
        };
        match reason {
            FinishReason::Stop => self.success_stop += 1,
            FinishReason::Length => self.success_length += 1,
            FinishReason::Abort => {
                // Aborted requests count by reason but do not skew the latency SLO histograms.
                self.success_abort += 1;
                return;
            }
        }
        let h = &mut self.histograms;
        let generated = req.num_output_tokens();
        h.e2e_request_latency.observe(now - req.arrival_time);
        h.request_prompt_tokens
            .observe(req.num_prompt_tokens() as f64);
        h.request_generation_tokens.observe(generated as f64);
        // Per sequence: with n > 1 vLLM takes the max over the siblings; here each
        // sequence is its own request (see `request_params_n`).
        h.request_max_num_generation_tokens
            .observe(generated as f64);
        h.request_params_max_tokens
            .observe(req.params.max_tokens as f64);
        if let (Some(scheduled), Some(first), Some(last)) = (
            req.first_scheduled_time,
            req.first_token_time,
            req.last_token_time,
        ) {
            h.request_queue_time.observe(scheduled - req.arrival_time);
            h.request_prefill_time.observe(first - scheduled);
            h.request_decode_time.observe(last - first);
            h.request_inference_time.observe(last - scheduled);
            if generated > 1 {
                h.request_time_per_output_token
                    .observe((last - first) / (generated - 1) as f64);
            }
        }
    }

    /// A request of adapter `name` (engine id `id`) was admitted.
    pub fn on_lora_request(&mut self, id: LoraId, name: &str) {
        self.lora.names.entry(id).or_insert_with(|| name.to_owned());
        *self.lora.requests.entry(name.to_owned()).or_default() += 1;
    }

    /// New scheduler gauges at Unix time `now_unix`; the LoRA info gauge's time moves
    /// when its adapter sets change.
    pub fn set_scheduler(&mut self, stats: SchedulerStats, now_unix: f64) {
        if stats.running_loras != self.scheduler.running_loras
            || stats.waiting_loras != self.scheduler.waiting_loras
            || self.lora.updated_unix == 0.0
        {
            self.lora.updated_unix = now_unix;
        }
        self.scheduler = stats;
    }

    /// The API layer's view of one client request: its `n`.
    pub fn on_api_request(&mut self, n: usize) {
        self.histograms.request_params_n.observe(n as f64);
    }

    /// Cumulative prefix-cache hit rate (0–1), the older `gpu_prefix_cache_hit_rate` gauge.
    pub fn prefix_cache_hit_rate(&self) -> f64 {
        let s = &self.scheduler;
        if s.prefix_cache_queries == 0 {
            0.0
        } else {
            s.prefix_cache_hits as f64 / s.prefix_cache_queries as f64
        }
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        render::render(self)
    }
}

/// `GET /metrics` over the engine's live metrics (unauthenticated, as in vLLM; the
/// sidecar adds auth).
pub fn router(metrics: SharedMetrics) -> axum::Router {
    use axum::http::header;
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.lock().map(|m| m.render()).unwrap_or_default();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(id: u64, prev_token_time: Option<f64>) -> RequestOutput {
        RequestOutput {
            id,
            token: 7,
            logprobs: None,
            finish: None,
            stop_reason: None,
            arrival_time: 0.0,
            prev_token_time,
            num_prompt_tokens: 5,
        }
    }

    #[test]
    fn accepted_drafts_count_as_tokens_but_one_inter_token_latency_per_step() {
        let mut m = EngineMetrics::new("m", 64, CacheInfo::default());
        // Request 1 emits three tokens in one step (two accepted drafts and one more),
        // request 2 one token, request 3 its first.
        let outs = [
            output(1, Some(1.0)),
            output(1, Some(1.5)),
            output(1, Some(1.5)),
            output(2, Some(1.25)),
            output(3, None),
        ];
        m.on_step(&SchedulerOutput::default(), &outs, 1.5);
        assert_eq!(m.generation_tokens, 5);
        assert_eq!(m.prompt_tokens, 5);
        let itl = &m.histograms.inter_token_latency;
        assert_eq!(
            itl.counts.iter().sum::<u64>(),
            2,
            "one per request and step"
        );
        assert!((itl.sum - 0.75).abs() < 1e-9, "0.5 + 0.25, got {}", itl.sum);
    }
}
