//! The engine's Prometheus metrics, named exactly as vLLM names them so that
//! dashboards, alerts and HPA rules written for vLLM work unchanged.
//!
//! Every metric name is defined once, in [`names`]. Gauges are read from the
//! engine's live scheduler snapshot at scrape time (nothing is estimated).
//! Labels are `model_name` and `engine` only: no per-request labels, so
//! cardinality stays bounded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::engine::EngineClient;

/// Metric names (vLLM's spellings).
pub mod names {
    pub const NUM_REQUESTS_RUNNING: &str = "vllm:num_requests_running";
    pub const NUM_REQUESTS_WAITING: &str = "vllm:num_requests_waiting";
    pub const NUM_REQUESTS_SWAPPED: &str = "vllm:num_requests_swapped";
    pub const KV_CACHE_USAGE_PERC: &str = "vllm:kv_cache_usage_perc";
    pub const GPU_CACHE_USAGE_PERC: &str = "vllm:gpu_cache_usage_perc";
    pub const CPU_CACHE_USAGE_PERC: &str = "vllm:cpu_cache_usage_perc";
}

/// The labels of every engine metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabels {
    pub model_name: String,
    pub engine: String,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// The registry plus handles to the gauges refreshed on each scrape.
pub struct Metrics {
    registry: Registry,
    labels: EngineLabels,
    running: Family<EngineLabels, GaugeF>,
    waiting: Family<EngineLabels, GaugeF>,
    swapped: Family<EngineLabels, GaugeF>,
    kv_usage: Family<EngineLabels, GaugeF>,
    gpu_usage: Family<EngineLabels, GaugeF>,
    cpu_usage: Family<EngineLabels, GaugeF>,
}

impl Metrics {
    pub fn new(model_name: &str) -> Self {
        let mut registry = Registry::default();
        let mut gauge = |name: &str, help: &str| {
            let g = Family::<EngineLabels, GaugeF>::default();
            registry.register(name, help, g.clone());
            g
        };
        let running = gauge(names::NUM_REQUESTS_RUNNING, "Number of requests in model execution batches.");
        let waiting = gauge(names::NUM_REQUESTS_WAITING, "Number of requests waiting to be processed.");
        let swapped = gauge(names::NUM_REQUESTS_SWAPPED, "Number of requests swapped to CPU.");
        let kv_usage = gauge(names::KV_CACHE_USAGE_PERC, "KV-cache usage. 1 means 100 percent usage.");
        let gpu_usage = gauge(names::GPU_CACHE_USAGE_PERC, "GPU KV-cache usage. 1 means 100 percent usage.");
        let cpu_usage = gauge(names::CPU_CACHE_USAGE_PERC, "CPU KV-cache usage. 1 means 100 percent usage.");
        Metrics {
            registry,
            labels: EngineLabels { model_name: model_name.to_owned(), engine: "0".to_owned() },
            running,
            waiting,
            swapped,
            kv_usage,
            gpu_usage,
            cpu_usage,
        }
    }

    /// Refreshes the gauges from the engine and renders the text exposition format.
    pub fn render(&self, engine: &EngineClient) -> String {
        let s = engine.stats();
        let l = &self.labels;
        self.running.get_or_create(l).set(s.num_running as f64);
        self.waiting.get_or_create(l).set(s.num_waiting as f64);
        self.swapped.get_or_create(l).set(s.num_swapped as f64);
        self.kv_usage.get_or_create(l).set(s.device_cache_usage);
        self.gpu_usage.get_or_create(l).set(s.device_cache_usage);
        self.cpu_usage.get_or_create(l).set(s.host_cache_usage);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("invariant: writing to a String cannot fail");
        out
    }
}

/// `GET /metrics` (unauthenticated, as in vLLM; the sidecar adds auth).
pub fn router(engine: EngineClient, metrics: std::sync::Arc<Metrics>) -> axum::Router {
    use axum::http::header;
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.render(&engine);
            async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
            }
        }),
    )
}
