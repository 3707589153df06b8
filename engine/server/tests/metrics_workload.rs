//! `/metrics` after a scripted workload on the real model: every vLLM family is
//! there with its type, labels and bucket bounds, and the counters equal what the
//! workload did — prompt and generation tokens, successes by finished_reason, and
//! preemptions forced by a tiny KV pool. The stats log line is checked against
//! the same numbers.

mod common;

use std::time::{Duration, Instant};

use candela::engine::{EngineClient, GenerateRequest};
use candela::metrics::{buckets_1_2_5, names, stats_log};
use candela_core::SamplingParams;
use common::{ExpositionExt, MetricType, parse_exposition};

const MAX_MODEL_LEN: usize = 160;

fn start_engine() -> (EngineClient, tokenizers::Tokenizer) {
    let m = common::load_default_model();
    // 12 blocks of 16 = 192 tokens for six ~70-token sequences: preemption is certain.
    let client = common::spawn_engine(&m, 12, MAX_MODEL_LEN, 16, 64);
    (client, m.tokenizer)
}

/// Runs one request to its end; returns its tokens.
async fn run(engine: &EngineClient, prompt: &[u32], params: SamplingParams) -> Vec<u32> {
    let req = GenerateRequest {
        prompt_token_ids: prompt.to_vec(),
        params,
        priority: 0,
        tier: candela_core::ServiceTier::Default,
        arrival: Instant::now(),
        constraint: None,
        lora: None,
    };
    let mut stream = engine.submit(req).await.expect("admitted");
    let mut out = Vec::new();
    while let Some(ev) = stream.next().await {
        out.push(ev.token);
    }
    out
}

async fn wait_idle(engine: &EngineClient) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = engine.stats();
        if s.num_running + s.num_waiting + s.num_swapped == 0 && s.device_cache_usage == 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "engine did not drain: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_a_scripted_workload() {
    let (engine, tok) = start_engine();
    let before = engine.metrics();
    let started = Instant::now();
    let encode = |t: &str| tok.encode(t, false).unwrap().get_ids().to_vec();

    // 1. A probe: greedy, 3 tokens, finishes by length.
    let probe_prompt = encode("The capital of France is");
    let probe = run(&engine, &probe_prompt, SamplingParams::greedy(3)).await;
    assert_eq!(probe.len(), 3);
    // 2. The same prompt with its second token as a stop id: finishes by stop after 2 tokens.
    let stop_params = SamplingParams {
        stop_token_ids: vec![probe[1]],
        ..SamplingParams::greedy(10)
    };
    let stopped = run(&engine, &probe_prompt, stop_params).await;
    assert_eq!(stopped, probe[..2]);
    // 3. Six concurrent 64-token generations in a 192-token pool: preemptions.
    let prompts: Vec<Vec<u32>> = (0..6)
        .map(|i| encode(&format!("Story {i}: once upon a time, in a land far away,")))
        .collect();
    let long = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(64)
    };
    let outs =
        futures::future::join_all(prompts.iter().map(|p| run(&engine, p, long.clone()))).await;
    assert!(outs.iter().all(|o| o.len() == 64));
    wait_idle(&engine).await;

    let m = engine.metrics();
    let prompt_tokens = 2 * probe_prompt.len() + prompts.iter().map(Vec::len).sum::<usize>();
    let generation_tokens = 3 + 2 + 6 * 64;
    let elapsed = started.elapsed().as_secs_f64();
    let text = m.render();
    let e = parse_exposition(&text);
    let l = [("model_name", "smol"), ("engine", "0")];

    // Counters equal the workload.
    assert_eq!(
        e.value("vllm:prompt_tokens_total", &l),
        prompt_tokens as f64
    );
    assert_eq!(
        e.value("vllm:generation_tokens_total", &l),
        generation_tokens as f64
    );
    let reason = |r| {
        e.value(
            "vllm:request_success_total",
            &[("model_name", "smol"), ("finished_reason", r)],
        )
    };
    assert_eq!(
        (reason("length"), reason("stop"), reason("abort")),
        (7.0, 1.0, 0.0)
    );
    let preemptions = e.value("vllm:num_preemptions_total", &l);
    assert!(preemptions > 0.0, "the 12-block pool must preempt");
    assert_eq!(preemptions, m.scheduler.num_preemptions as f64);
    assert!(
        e.value("vllm:prefix_cache_hits_total", &l) >= 16.0,
        "the stop request reuses the probe's prompt"
    );
    // vLLM's older names carry the same counts.
    for (old, new) in [
        (
            "vllm:gpu_prefix_cache_hits_total",
            "vllm:prefix_cache_hits_total",
        ),
        (
            "vllm:gpu_prefix_cache_queries_total",
            "vllm:prefix_cache_queries_total",
        ),
    ] {
        assert_eq!(e.value(old, &l), e.value(new, &l), "{old}");
    }
    for tier in ["priority", "default", "flex"] {
        for name in [
            names::NUM_REQUESTS_RUNNING_BY_TIER,
            names::NUM_REQUESTS_WAITING_BY_TIER,
        ] {
            let labels = [("model_name", "smol"), ("engine", "0"), ("tier", tier)];
            assert_eq!(e.value(name, &labels), 0.0, "{name} {tier}");
        }
    }
    assert_eq!(e.value("vllm:time_to_first_token_seconds_count", &l), 8.0);
    assert_eq!(
        e.value("vllm:inter_token_latency_seconds_count", &l),
        (generation_tokens - 8) as f64
    );
    assert_eq!(e.value("vllm:e2e_request_latency_seconds_count", &l), 8.0);
    assert_eq!(
        e.value("vllm:request_generation_tokens_sum", &l),
        generation_tokens as f64
    );
    assert_eq!(
        e.value("vllm:request_prompt_tokens_sum", &l),
        prompt_tokens as f64
    );
    // Gauges are live and idle now.
    for g in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
    ] {
        assert_eq!(e.value(g, &l), 0.0, "{g}");
    }

    // Every family, with its type.
    let expect = [
        (names::NUM_REQUESTS_RUNNING, "gauge"),
        (names::NUM_REQUESTS_WAITING, "gauge"),
        (names::NUM_REQUESTS_SWAPPED, "gauge"),
        (names::KV_CACHE_USAGE_PERC, "gauge"),
        (names::GPU_CACHE_USAGE_PERC, "gauge"),
        (names::CPU_CACHE_USAGE_PERC, "gauge"),
        (names::GPU_PREFIX_CACHE_HIT_RATE, "gauge"),
        (names::CACHE_CONFIG_INFO, "gauge"),
        (names::LORA_REQUESTS_INFO, "gauge"),
        (names::SPEC_DECODE_DRAFT_ACCEPTANCE_RATE, "gauge"),
        (names::SPEC_DECODE_SYSTEM_EFFICIENCY, "gauge"),
        (names::SPEC_DECODE_EFFICIENCY, "gauge"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:generation_tokens_total", "counter"),
        ("vllm:num_preemptions_total", "counter"),
        ("vllm:prefix_cache_queries_total", "counter"),
        ("vllm:prefix_cache_hits_total", "counter"),
        ("vllm:gpu_prefix_cache_queries_total", "counter"),
        ("vllm:gpu_prefix_cache_hits_total", "counter"),
        (names::NUM_REQUESTS_RUNNING_BY_TIER, "gauge"),
        (names::NUM_REQUESTS_WAITING_BY_TIER, "gauge"),
        ("vllm:request_success_total", "counter"),
        ("vllm:spec_decode_num_drafts_total", "counter"),
        ("vllm:spec_decode_num_draft_tokens_total", "counter"),
        ("vllm:spec_decode_num_accepted_tokens_total", "counter"),
        (
            "vllm:spec_decode_num_accepted_tokens_per_pos_total",
            "counter",
        ),
        ("vllm:lora_requests_total", "counter"),
        (names::TIME_TO_FIRST_TOKEN, "histogram"),
        (names::INTER_TOKEN_LATENCY, "histogram"),
        (names::TIME_PER_OUTPUT_TOKEN, "histogram"),
        (names::REQUEST_TIME_PER_OUTPUT_TOKEN, "histogram"),
        (names::E2E_REQUEST_LATENCY, "histogram"),
        (names::REQUEST_QUEUE_TIME, "histogram"),
        (names::REQUEST_INFERENCE_TIME, "histogram"),
        (names::REQUEST_PREFILL_TIME, "histogram"),
        (names::REQUEST_DECODE_TIME, "histogram"),
        (names::REQUEST_PROMPT_TOKENS, "histogram"),
        (names::REQUEST_GENERATION_TOKENS, "histogram"),
        (names::REQUEST_MAX_NUM_GENERATION_TOKENS, "histogram"),
        (names::REQUEST_PARAMS_MAX_TOKENS, "histogram"),
        (names::REQUEST_PARAMS_N, "histogram"),
        (names::ITERATION_TOKENS, "histogram"),
    ];
    for (name, kind) in expect {
        let kind = match kind {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(e.types.get(name), Some(&kind), "{name}");
    }
    assert_eq!(e.types.len(), expect.len(), "no unexpected families");
    // Every sample carries model_name and engine, and nothing per request.
    for s in &e.samples {
        assert_eq!(
            (s.label("model_name"), s.label("engine")),
            (Some("smol"), Some("0")),
            "{s:?}"
        );
        for (k, _) in &s.labels {
            assert!(
                [
                    "model_name",
                    "engine",
                    "le",
                    "finished_reason",
                    "block_size",
                    "cache_dtype",
                    "enable_prefix_caching",
                    "gpu_memory_utilization",
                    "num_cpu_blocks",
                    "num_gpu_blocks",
                    "swap_space",
                    "max_lora",
                    "running_lora_adapters",
                    "waiting_lora_adapters",
                    "tier"
                ]
                .contains(&k.as_str()),
                "label {k}"
            );
            // The bounded `tier` label is Candela's own; vLLM's names keep vLLM's labels.
            assert!(
                k != "tier" || s.name.starts_with("candela_"),
                "{} carries `tier`",
                s.name
            );
        }
    }
    // Bucket bounds as vLLM's.
    assert_eq!(
        e.bucket_bounds(names::TIME_TO_FIRST_TOKEN),
        names::TTFT_BUCKETS
    );
    assert_eq!(
        e.bucket_bounds(names::TIME_TO_FIRST_TOKEN).first(),
        Some(&0.001)
    );
    assert_eq!(
        e.bucket_bounds(names::TIME_TO_FIRST_TOKEN).last(),
        Some(&2560.0)
    );
    assert_eq!(
        e.bucket_bounds(names::INTER_TOKEN_LATENCY),
        names::TPOT_BUCKETS
    );
    assert_eq!(
        e.bucket_bounds(names::REQUEST_TIME_PER_OUTPUT_TOKEN).last(),
        Some(&80.0)
    );
    for h in [
        names::E2E_REQUEST_LATENCY,
        names::REQUEST_QUEUE_TIME,
        names::REQUEST_PREFILL_TIME,
        names::REQUEST_DECODE_TIME,
    ] {
        assert_eq!(e.bucket_bounds(h).first(), Some(&0.3), "{h}");
        assert_eq!(e.bucket_bounds(h).last(), Some(&7680.0), "{h}");
    }
    assert_eq!(
        e.bucket_bounds(names::REQUEST_PROMPT_TOKENS),
        buckets_1_2_5(MAX_MODEL_LEN)
    );
    assert_eq!(
        e.bucket_bounds(names::ITERATION_TOKENS).last(),
        Some(&16384.0)
    );

    // The stats line over the same interval shows the same numbers.
    let line = stats_log::stats_line(&before, &m, elapsed);
    let expected = format!(
        "Avg prompt throughput: {:.1} tokens/s, Avg generation throughput: {:.1} tokens/s, Running: 0 reqs, Swapped: 0 reqs, Pending: 0 reqs, GPU KV cache usage: 0.0%, CPU KV cache usage: 0.0%, Prefix cache hit rate: ",
        prompt_tokens as f64 / elapsed,
        generation_tokens as f64 / elapsed
    );
    assert!(line.starts_with(&expected), "{line}\n{expected}");

    // An aborted request counts as abort and frees its blocks.
    let req = GenerateRequest {
        prompt_token_ids: prompts[0].clone(),
        params: long.clone(),
        priority: 0,
        tier: candela_core::ServiceTier::Default,
        arrival: Instant::now(),
        constraint: None,
        lora: None,
    };
    let mut stream = engine.submit(req).await.unwrap();
    stream.next().await.expect("first token");
    drop(stream);
    wait_idle(&engine).await;
    let e = parse_exposition(&engine.metrics().render());
    assert_eq!(
        e.value(
            "vllm:request_success_total",
            &[("finished_reason", "abort")]
        ),
        1.0
    );
}
