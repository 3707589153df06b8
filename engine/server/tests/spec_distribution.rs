//! Speculative decoding keeps the target model's distribution: with temperature 1.0,
//! top-k 3 and a presence penalty, 20,000 sampled first-two-token pairs from the
//! real engine with prompt-lookup drafts and 20,000 without pass a chi-square test of
//! homogeneity at p > 0.01. The prompt repeats a phrase so that the second token is
//! usually verified against a draft, which is both accepted and rejected.

mod common;

use std::collections::HashMap;

use candela::engine::EngineCore;
use candela_core::spec_decode::NgramConfig;
use candela_core::{
    CacheConfig, FinishReason, NewRequest, SamplingParams, Scheduler, SchedulerConfig,
    SchedulingPolicy, SpecDecodingStats,
};
use candela_model::{Drafter, LoadedModel, ModelRunner, RunnerConfig};

const SAMPLES: usize = 20_000;

/// 99th percentiles of chi-square with 1..=8 degrees of freedom: p > 0.01 below them.
const CHI2_99: [f64; 8] = [6.635, 9.210, 11.345, 13.277, 15.086, 16.812, 18.475, 20.090];

/// The first two tokens of `SAMPLES` requests for `prompt`, and the draft counts.
fn sample_pairs(
    model: &LoadedModel,
    prompt: &[u32],
    drafter: Option<Drafter>,
) -> (HashMap<(u32, u32), usize>, SpecDecodingStats) {
    // Small blocks: every prompt but its last few tokens comes from the prefix cache.
    let (blocks, block_size) = (4096, 4);
    let config = SchedulerConfig {
        max_num_seqs: 512,
        max_num_batched_tokens: 4096,
        max_model_len: 256,
        enable_chunked_prefill: true,
        policy: SchedulingPolicy::Fcfs,
        delay_factor: 0.0,
        max_waiting: SAMPLES,
        eos_token_ids: model.eos_token_ids.clone(),
        num_lookahead_tokens: 0,
        max_loras: 0,
        max_num_seqs_per_tier: candela_core::TierCaps::default(),
    };
    let cache = CacheConfig {
        block_size,
        num_device_blocks: blocks,
        num_host_blocks: 0,
        enable_prefix_caching: true,
    };
    let mut runner = ModelRunner::new(
        model.model.clone(),
        RunnerConfig {
            num_device_blocks: blocks,
            num_host_blocks: 0,
            block_size,
        },
    );
    // With drafts a third token lets the second be verified against a one-token
    // draft; max_tokens changes no probability, and requests end at two tokens anyway.
    let max_tokens = if drafter.is_some() { 3 } else { 2 };
    if let Some(d) = drafter {
        runner.set_drafter(d);
    }
    let mut core = EngineCore {
        scheduler: Scheduler::new(config, cache).unwrap(),
        runner,
    };
    let params = SamplingParams {
        temperature: 1.0,
        top_k: 3,
        presence_penalty: 0.5,
        ..SamplingParams::greedy(max_tokens)
    };
    for id in 0..SAMPLES as u64 {
        core.scheduler
            .add_request(NewRequest {
                id,
                prompt_token_ids: prompt.to_vec(),
                params: params.clone(),
                priority: 0,
                tier: candela_core::ServiceTier::Default,
                arrival_time: 0.0,
                lora: None,
            })
            .unwrap();
    }
    let mut outputs: HashMap<u64, Vec<u32>> = HashMap::new();
    for t in 0.. {
        let Some(step) = core.step(&|| f64::from(t)).expect("step runs") else {
            break;
        };
        for o in step.outputs {
            let out = outputs.entry(o.id).or_default();
            out.push(o.token);
            if out.len() == 2 {
                core.scheduler.abort(o.id, FinishReason::Abort);
            }
        }
    }
    assert!(core.scheduler.is_idle());
    let mut pairs = HashMap::new();
    for out in outputs.values() {
        *pairs.entry((out[0], out[1])).or_default() += 1;
    }
    assert_eq!(pairs.values().sum::<usize>(), SAMPLES);
    (pairs, core.scheduler.stats().spec_decoding)
}

/// Pearson's chi-square of homogeneity between two samples of the same size, over
/// the bins both share enough of (expected count ≥ 5; the rest pooled), and its
/// degrees of freedom.
fn chi_square(a: &HashMap<(u32, u32), usize>, b: &HashMap<(u32, u32), usize>) -> (f64, usize) {
    let mut keys: Vec<(u32, u32)> = a.keys().chain(b.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let count = |m: &HashMap<(u32, u32), usize>, k| m.get(&k).copied().unwrap_or(0) as f64;
    let mut bins: Vec<(f64, f64)> = Vec::new();
    let mut rest = (0.0, 0.0);
    for k in keys {
        let (x, y) = (count(a, k), count(b, k));
        if (x + y) / 2.0 >= 5.0 {
            bins.push((x, y));
        } else {
            rest.0 += x;
            rest.1 += y;
        }
    }
    if rest.0 + rest.1 > 0.0 {
        bins.push(rest);
    }
    // Equal sample sizes: each bin's expected count is half its total in both.
    let stat = bins
        .iter()
        .map(|&(x, y)| {
            let e = (x + y) / 2.0;
            (x - e).powi(2) / e + (y - e).powi(2) / e
        })
        .sum();
    (stat, bins.len() - 1)
}

#[test]
fn drafted_samples_follow_the_target_distribution() {
    let model = common::load_default_model();
    let text = "red green blue, red green blue, red green blue, red green blue, \
                red green blue, red green blue, red green blue, red green blue, red green";
    let prompt = model
        .tokenizer
        .encode(text, false)
        .unwrap()
        .get_ids()
        .to_vec();
    let ngram = Drafter::Ngram(NgramConfig {
        num_speculative_tokens: 2,
        prompt_lookup_min: 1,
        prompt_lookup_max: 3,
    });
    let (plain, none) = sample_pairs(&model, &prompt, None);
    assert_eq!(none.num_drafts, 0);
    let (drafted, spec) = sample_pairs(&model, &prompt, Some(ngram));
    // Most second tokens were verified against a draft, and drafts went both ways.
    assert!(
        spec.num_drafts as usize > SAMPLES / 2,
        "too few drafts: {spec:?}"
    );
    assert!(
        spec.num_accepted_tokens > 0 && spec.num_accepted_tokens < spec.num_draft_tokens,
        "{spec:?}"
    );
    let (stat, df) = chi_square(&plain, &drafted);
    let mut top: Vec<_> = plain.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    eprintln!(
        "chi-square {stat:.2} with {df} df; drafts {spec:?}; most common pairs without drafts {:?}",
        &top[..top.len().min(6)]
    );
    assert!((1..=8).contains(&df), "{df} degrees of freedom");
    assert!(
        stat < CHI2_99[df - 1],
        "chi-square {stat:.2} with {df} df: p < 0.01"
    );
}
