//! Engine throughput on CPU for the default model: prefill and decode tokens/s
//! at batch 1, 8 and 32, through the real scheduler + runner (no HTTP).
//!
//! Run: `cargo bench -p candela --bench engine_throughput` (after `scripts/setup.sh`).
//! Each batch: `batch` distinct 128-token prompts (prefix caching off, so every
//! prompt token is computed), greedy, 128 new tokens each with `ignore_eos`.
//! Prefill rate = prompt tokens / time until every request has its first token;
//! decode rate = the remaining generated tokens / the remaining time.

use std::time::Instant;

use candela::engine::EngineCore;
use candela_core::{
    CacheConfig, NewRequest, SamplingParams, Scheduler, SchedulerConfig, SchedulingPolicy,
};
use candela_model::{ModelRunner, RunnerConfig};

const PROMPT_LEN: usize = 128;
const OUTPUT_LEN: usize = 128;

fn main() {
    let path = candela::cli::default_model_path().expect("$HOME is set");
    assert!(
        path.exists(),
        "run scripts/setup.sh first: {} is missing",
        path.display()
    );
    let model = candela_model::load(&path).expect("load");
    let threads = candela_model::pool::global().threads();
    println!(
        "model {} on CPU, {threads} threads; prompt {PROMPT_LEN}, output {OUTPUT_LEN} tokens",
        path.display()
    );
    println!(
        "{:>6} {:>18} {:>18} {:>14}",
        "batch", "prefill tok/s", "decode tok/s", "TPOT ms"
    );
    // `cargo bench --bench engine_throughput -- 32` runs only the batch sizes given.
    let mut batches: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    if batches.is_empty() {
        batches = vec![1, 8, 32];
    }
    for batch in batches {
        let blocks = batch * (PROMPT_LEN + OUTPUT_LEN).div_ceil(16) + 16;
        let cache = CacheConfig {
            block_size: 16,
            num_device_blocks: blocks,
            num_host_blocks: 0,
            enable_prefix_caching: false,
        };
        let config = SchedulerConfig {
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            max_model_len: PROMPT_LEN + OUTPUT_LEN,
            enable_chunked_prefill: true,
            policy: SchedulingPolicy::Fcfs,
            delay_factor: 0.0,
            max_waiting: 1024,
            eos_token_ids: model.eos_token_ids.clone(),
            num_lookahead_tokens: 0,
            max_loras: 0,
            max_num_seqs_per_tier: candela_core::TierCaps::default(),
        };
        let runner = ModelRunner::new(
            model.model.clone(),
            RunnerConfig {
                num_device_blocks: blocks,
                num_host_blocks: 0,
                block_size: 16,
            },
        );
        let mut core = EngineCore {
            scheduler: Scheduler::new(config, cache).expect("config"),
            runner,
        };
        for i in 0..batch {
            // Distinct prompts: token ids from the ordinary vocabulary, shifted per request.
            let prompt = (0..PROMPT_LEN)
                .map(|t| 1000 + ((t * 7 + i * 131) % 20_000) as u32)
                .collect();
            let params = SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(OUTPUT_LEN)
            };
            core.scheduler
                .add_request(NewRequest {
                    id: i as u64,
                    prompt_token_ids: prompt,
                    params,
                    priority: 0,
                    tier: candela_core::ServiceTier::Default,
                    arrival_time: 0.0,
                    lora: None,
                })
                .expect("admitted");
        }
        let start = Instant::now();
        let (mut first_tokens, mut generated) = (0, 0);
        let mut prefill_done = None;
        while let Some(step) = core.step(&|| start.elapsed().as_secs_f64()).expect("step") {
            for o in &step.outputs {
                generated += 1;
                if core
                    .scheduler
                    .request(o.id)
                    .is_none_or(|r| r.num_output_tokens() == 1)
                    && o.finish.is_none()
                {
                    first_tokens += 1;
                }
            }
            if prefill_done.is_none() && first_tokens >= batch {
                prefill_done = Some((start.elapsed(), generated));
            }
        }
        let total = start.elapsed();
        let (prefill_time, at_prefill) = prefill_done.expect("every request got a first token");
        let prefill = (batch * PROMPT_LEN) as f64 / prefill_time.as_secs_f64();
        let decode_tokens = generated - at_prefill;
        let decode_time = (total - prefill_time).as_secs_f64();
        let decode = decode_tokens as f64 / decode_time;
        let tpot_ms = decode_time * 1000.0 / (OUTPUT_LEN - 1) as f64;
        println!("{batch:>6} {prefill:>18.1} {decode:>18.1} {tpot_ms:>14.2}");
    }
}
