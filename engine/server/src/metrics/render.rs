//! Prometheus text exposition (format 0.0.4) of an [`EngineMetrics`], laid out
//! as vLLM's `prometheus_client` prints it (HELP, TYPE, samples; floats as
//! Python prints them).

use std::fmt::Write;

use super::{EngineMetrics, Histogram, names};

pub(super) fn render(m: &EngineMetrics) -> String {
    let mut w = Writer {
        out: String::with_capacity(16 * 1024),
        base: base_labels(&m.model_name),
    };
    let s = &m.scheduler;
    w.gauge(
        names::NUM_REQUESTS_RUNNING,
        "Number of requests in model execution batches.",
        s.num_running as f64,
    );
    w.gauge(
        names::NUM_REQUESTS_WAITING,
        "Number of requests waiting to be processed.",
        s.num_waiting as f64,
    );
    w.gauge(
        names::NUM_REQUESTS_SWAPPED,
        "Number of requests swapped to CPU.",
        s.num_swapped as f64,
    );
    w.gauge(
        names::KV_CACHE_USAGE_PERC,
        "KV-cache usage. 1 means 100 percent usage.",
        s.device_cache_usage,
    );
    w.gauge(
        names::GPU_CACHE_USAGE_PERC,
        "GPU KV-cache usage. 1 means 100 percent usage (the device pool; same as kv_cache_usage_perc).",
        s.device_cache_usage,
    );
    // Candela's own per-tier gauges (vLLM's two above count every tier, with vLLM's labels).
    for (name, help, value) in [
        (
            names::NUM_REQUESTS_RUNNING_BY_TIER,
            "Number of requests in model execution batches, by service tier.",
            (|t: candela_core::TierStats| t.running) as fn(candela_core::TierStats) -> usize,
        ),
        (
            names::NUM_REQUESTS_WAITING_BY_TIER,
            "Number of requests waiting to be processed, by service tier.",
            |t| t.waiting,
        ),
    ] {
        w.header(name, help, "gauge");
        for tier in candela_core::ServiceTier::ALL {
            w.sample(
                name,
                &[(names::TIER_LABEL, tier.as_str())],
                value(s.tier(tier)) as f64,
            );
        }
    }
    w.gauge(
        names::CPU_CACHE_USAGE_PERC,
        "CPU KV-cache usage. 1 means 100 percent usage.",
        s.host_cache_usage,
    );
    w.gauge(
        names::GPU_PREFIX_CACHE_HIT_RATE,
        "Prefix cache hit rate: cached tokens over queried tokens since start.",
        m.prefix_cache_hit_rate(),
    );
    let spec = &s.spec_decoding;
    w.gauge(
        names::SPEC_DECODE_DRAFT_ACCEPTANCE_RATE,
        "Speculative token acceptance rate: accepted over drafted tokens since start (NaN: nothing drafted yet).",
        spec.acceptance_rate(),
    );
    for name in [
        names::SPEC_DECODE_EFFICIENCY,
        names::SPEC_DECODE_SYSTEM_EFFICIENCY,
    ] {
        w.gauge(
            name,
            "Speculative decoding system efficiency: tokens emitted by verification steps over the most they could emit (NaN: nothing drafted yet).",
            spec.efficiency(),
        );
    }
    let c = &m.cache;
    let info = [
        ("block_size", c.block_size.to_string()),
        ("cache_dtype", c.cache_dtype.clone()),
        (
            "enable_prefix_caching",
            if c.enable_prefix_caching {
                "True"
            } else {
                "False"
            }
            .to_owned(),
        ),
        ("gpu_memory_utilization", py_float(c.gpu_memory_utilization)),
        ("num_cpu_blocks", c.num_cpu_blocks.to_string()),
        ("num_gpu_blocks", c.num_gpu_blocks.to_string()),
        ("swap_space", py_float(c.swap_space_gib)),
    ];
    w.header(
        names::CACHE_CONFIG_INFO,
        "Information of the LLMEngine CacheConfig",
        "gauge",
    );
    w.sample(
        names::CACHE_CONFIG_INFO,
        &info
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
        1.0,
    );
    // vLLM's info gauge: the adapters as labels, the time of their last change as value.
    w.header(
        names::LORA_REQUESTS_INFO,
        "Running stats on lora requests.",
        "gauge",
    );
    let lora = &m.lora;
    w.sample(
        names::LORA_REQUESTS_INFO,
        &[
            ("max_lora", &lora.max_loras.to_string()),
            (
                "running_lora_adapters",
                &lora.joined(&m.scheduler.running_loras),
            ),
            (
                "waiting_lora_adapters",
                &lora.joined(&m.scheduler.waiting_loras),
            ),
        ],
        lora.updated_unix,
    );

    w.counter(
        names::PROMPT_TOKENS,
        "Number of prefill tokens processed.",
        m.prompt_tokens,
    );
    w.counter(
        names::GENERATION_TOKENS,
        "Number of generation tokens processed.",
        m.generation_tokens,
    );
    w.counter(
        names::NUM_PREEMPTIONS,
        "Cumulative number of preemption from the engine.",
        s.num_preemptions,
    );
    w.counter(
        names::PREFIX_CACHE_QUERIES,
        "Prefix cache queries, in terms of number of queried tokens.",
        s.prefix_cache_queries,
    );
    w.counter(
        names::PREFIX_CACHE_HITS,
        "Prefix cache hits, in terms of number of cached tokens.",
        s.prefix_cache_hits,
    );
    // vLLM's older names of the two counters above (production-stack still reads them).
    w.counter(
        names::GPU_PREFIX_CACHE_QUERIES,
        "GPU prefix cache queries, in terms of number of queried tokens (older name of prefix_cache_queries).",
        s.prefix_cache_queries,
    );
    w.counter(
        names::GPU_PREFIX_CACHE_HITS,
        "GPU prefix cache hits, in terms of number of cached tokens (older name of prefix_cache_hits).",
        s.prefix_cache_hits,
    );
    let success = format!("{}_total", names::REQUEST_SUCCESS);
    w.header(
        &success,
        "Count of successfully processed requests.",
        "counter",
    );
    for (reason, v) in [
        ("abort", m.success_abort),
        ("length", m.success_length),
        ("stop", m.success_stop),
    ] {
        w.sample(&success, &[("finished_reason", reason)], v as f64);
    }
    w.counter(
        names::SPEC_DECODE_NUM_DRAFTS,
        "Number of spec decoding drafts.",
        spec.num_drafts,
    );
    w.counter(
        names::SPEC_DECODE_NUM_DRAFT_TOKENS,
        "Number of draft tokens.",
        spec.num_draft_tokens,
    );
    w.counter(
        names::SPEC_DECODE_NUM_ACCEPTED_TOKENS,
        "Number of accepted tokens.",
        spec.num_accepted_tokens,
    );
    let per_pos = format!("{}_total", names::SPEC_DECODE_NUM_ACCEPTED_TOKENS_PER_POS);
    w.header(&per_pos, "Accepted tokens per draft position.", "counter");
    for pos in 0..m.num_speculative_tokens {
        let v = spec
            .num_accepted_tokens_per_pos
            .get(pos)
            .copied()
            .unwrap_or(0);
        w.sample(&per_pos, &[("position", &pos.to_string())], v as f64);
    }
    w.header(
        names::LORA_REQUESTS_TOTAL,
        "Requests admitted per LoRA adapter.",
        "counter",
    );
    for (name, count) in &lora.requests {
        w.sample(
            names::LORA_REQUESTS_TOTAL,
            &[("lora_name", name)],
            *count as f64,
        );
    }

    let h = &m.histograms;
    let hists: [(&str, &str, &Histogram); 15] = [
        (
            names::TIME_TO_FIRST_TOKEN,
            "Histogram of time to first token in seconds.",
            &h.time_to_first_token,
        ),
        (
            names::INTER_TOKEN_LATENCY,
            "Histogram of inter-token latency in seconds.",
            &h.inter_token_latency,
        ),
        (
            names::TIME_PER_OUTPUT_TOKEN,
            "Histogram of time per output token in seconds (inter-token latency; older name).",
            &h.inter_token_latency,
        ),
        (
            names::REQUEST_TIME_PER_OUTPUT_TOKEN,
            "Histogram of time_per_output_token_seconds per request.",
            &h.request_time_per_output_token,
        ),
        (
            names::E2E_REQUEST_LATENCY,
            "Histogram of e2e request latency in seconds.",
            &h.e2e_request_latency,
        ),
        (
            names::REQUEST_QUEUE_TIME,
            "Histogram of time spent in WAITING phase for request.",
            &h.request_queue_time,
        ),
        (
            names::REQUEST_INFERENCE_TIME,
            "Histogram of time spent in RUNNING phase for request.",
            &h.request_inference_time,
        ),
        (
            names::REQUEST_PREFILL_TIME,
            "Histogram of time spent in PREFILL phase for request.",
            &h.request_prefill_time,
        ),
        (
            names::REQUEST_DECODE_TIME,
            "Histogram of time spent in DECODE phase for request.",
            &h.request_decode_time,
        ),
        (
            names::REQUEST_PROMPT_TOKENS,
            "Number of prefill tokens processed.",
            &h.request_prompt_tokens,
        ),
        (
            names::REQUEST_GENERATION_TOKENS,
            "Number of generation tokens processed.",
            &h.request_generation_tokens,
        ),
        (
            names::REQUEST_MAX_NUM_GENERATION_TOKENS,
            "Histogram of maximum number of requested generation tokens.",
            &h.request_max_num_generation_tokens,
        ),
        (
            names::REQUEST_PARAMS_MAX_TOKENS,
            "Histogram of the max_tokens request parameter.",
            &h.request_params_max_tokens,
        ),
        (
            names::REQUEST_PARAMS_N,
            "Histogram of the n request parameter.",
            &h.request_params_n,
        ),
        (
            names::ITERATION_TOKENS,
            "Histogram of number of tokens per engine_step.",
            &h.iteration_tokens,
        ),
    ];
    for (name, help, hist) in hists {
        w.histogram(name, help, hist);
    }
    w.out
}

fn base_labels(model_name: &str) -> String {
    format!("engine=\"0\",model_name=\"{}\"", escape(model_name))
}

struct Writer {
    out: String,
    base: String,
}

impl Writer {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, extra: &[(&str, &str)], v: f64) {
        let mut labels = self.base.clone();
        for (k, val) in extra {
            let _ = write!(labels, ",{k}=\"{}\"", escape(val));
        }
        let _ = writeln!(self.out, "{name}{{{labels}}} {}", py_float(v));
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.header(name, help, "gauge");
        self.sample(name, &[], v);
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) {
        let name = format!("{name}_total");
        self.header(&name, help, "counter");
        self.sample(&name, &[], v as f64);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        for (le, n) in h.cumulative() {
            let le = py_float(le);
            self.sample(&bucket, &[("le", &le)], n as f64);
        }
        self.sample(&format!("{name}_count"), &[], h.count() as f64);
        self.sample(&format!("{name}_sum"), &[], h.sum);
    }
}

/// A float as Python's `repr` prints it (`1.0`, `0.001`, `+Inf`, `NaN`).
fn py_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CacheInfo;

    #[test]
    fn exposition_has_vllm_names_types_and_labels() {
        let mut m = EngineMetrics::new(
            "smol\"lm",
            100,
            CacheInfo {
                block_size: 16,
                ..Default::default()
            },
        );
        m.prompt_tokens = 7;
        m.success_stop = 2;
        m.histograms.time_to_first_token.observe(0.002);
        let text = m.render();
        assert!(text.contains("# TYPE vllm:prompt_tokens_total counter\n"));
        assert!(text.contains(r#"vllm:prompt_tokens_total{engine="0",model_name="smol\"lm"} 7.0"#));
        assert!(text.contains(r#"vllm:request_success_total{engine="0",model_name="smol\"lm",finished_reason="stop"} 2.0"#));
        assert!(text.contains(r#"vllm:time_to_first_token_seconds_bucket{engine="0",model_name="smol\"lm",le="0.001"} 0.0"#));
        assert!(text.contains(r#"vllm:time_to_first_token_seconds_bucket{engine="0",model_name="smol\"lm",le="0.005"} 1.0"#));
        assert!(text.contains(r#"le="+Inf"} 1.0"#));
        assert!(text.contains(
            r#"vllm:request_prompt_tokens_bucket{engine="0",model_name="smol\"lm",le="100.0"} 0.0"#
        ));
        assert!(text.contains("# TYPE vllm:iteration_tokens_total histogram\n"));
        assert!(text.contains(
            "vllm:spec_decode_draft_acceptance_rate{engine=\"0\",model_name=\"smol\\\"lm\"} NaN"
        ));
        assert_eq!(py_float(0.001), "0.001");
        assert_eq!(py_float(2560.0), "2560.0");
    }

    #[test]
    fn per_tier_gauges_beside_vllms_and_the_older_prefix_cache_counters() {
        use candela_core::{ServiceTier, TierStats};
        let mut m = EngineMetrics::new("m", 100, CacheInfo::default());
        let s = &mut m.scheduler;
        s.tiers[ServiceTier::Default.index()] = TierStats {
            running: 2,
            waiting: 1,
        };
        s.tiers[ServiceTier::Flex.index()] = TierStats {
            running: 4,
            waiting: 60,
        };
        (s.num_running, s.num_waiting) = (6, 61);
        (s.prefix_cache_queries, s.prefix_cache_hits) = (100, 40);
        let text = m.render();
        for line in [
            "# TYPE candela_num_requests_running_by_tier gauge",
            r#"candela_num_requests_running_by_tier{engine="0",model_name="m",tier="priority"} 0.0"#,
            r#"candela_num_requests_running_by_tier{engine="0",model_name="m",tier="default"} 2.0"#,
            r#"candela_num_requests_running_by_tier{engine="0",model_name="m",tier="flex"} 4.0"#,
            r#"candela_num_requests_waiting_by_tier{engine="0",model_name="m",tier="flex"} 60.0"#,
            r#"vllm:num_requests_running{engine="0",model_name="m"} 6.0"#,
            r#"vllm:num_requests_waiting{engine="0",model_name="m"} 61.0"#,
            "# TYPE vllm:gpu_prefix_cache_queries_total counter",
            r#"vllm:gpu_prefix_cache_queries_total{engine="0",model_name="m"} 100.0"#,
            r#"vllm:gpu_prefix_cache_hits_total{engine="0",model_name="m"} 40.0"#,
            r#"vllm:prefix_cache_hits_total{engine="0",model_name="m"} 40.0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("vllm:") && l.contains("tier=")),
            "vLLM's series keep vLLM's labels"
        );
    }
}
