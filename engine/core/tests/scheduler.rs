//! Scheduler behaviour through its public API: chunked prefill, limits,
//! preemption by recompute and by swap, policies, stop conditions, and a
//! property test that any workload leaves both pools entirely free.

use candela_core::{
    Error, FinishReason, MAX_PROMPT_LOGITS_PER_STEP, NewRequest, RequestId, SampledToken,
    SamplingParams, Scheduler, SchedulerConfig, SchedulingPolicy, StopReason,
};
use proptest::prelude::*;

mod common;
use common::{cache, config, sample_all, step};

fn request(id: RequestId, prompt: Vec<u32>, params: SamplingParams) -> NewRequest {
    NewRequest {
        id,
        prompt_token_ids: prompt,
        params,
        priority: 0,
        tier: candela_core::ServiceTier::Default,
        arrival_time: id as f64,
        lora: None,
    }
}

#[test]
fn long_prompt_is_prefilled_in_chunks_and_sampled_once_complete() {
    let mut s = Scheduler::new(config(4, 8), cache(32, 0)).unwrap();
    s.add_request(request(1, (1..=20).collect(), SamplingParams::greedy(2)))
        .unwrap();
    let chunks: Vec<(usize, usize, bool)> = (0..3)
        .map(|t| {
            let out = step(&mut s, t as f64);
            (
                out.scheduled[0].start,
                out.scheduled[0].num_tokens,
                out.scheduled[0].sample,
            )
        })
        .collect();
    assert_eq!(chunks, vec![(0, 8, false), (8, 8, false), (16, 4, true)]);
    let out = step(&mut s, 3.0);
    assert_eq!(
        (out.scheduled[0].start, out.scheduled[0].num_tokens),
        (20, 1)
    );
    assert!(s.is_idle(), "max_tokens 2 reached");
    assert_eq!(
        s.take_finished()[0].status,
        candela_core::RequestStatus::Finished(FinishReason::Length)
    );
}

#[test]
fn decode_tokens_share_the_budget_with_a_prefill_chunk() {
    let mut s = Scheduler::new(config(4, 6), cache(32, 0)).unwrap();
    s.add_request(request(1, vec![1, 2, 3], SamplingParams::greedy(10)))
        .unwrap();
    step(&mut s, 0.0);
    s.add_request(request(2, (1..=12).collect(), SamplingParams::greedy(10)))
        .unwrap();
    let out = step(&mut s, 1.0);
    let shape: Vec<_> = out.scheduled.iter().map(|r| (r.id, r.num_tokens)).collect();
    assert_eq!(
        shape,
        vec![(1, 1), (2, 5)],
        "running decode first, then a 5-token chunk"
    );
    assert_eq!(out.num_batched_tokens, 6);
}

#[test]
fn max_num_seqs_bounds_the_running_set() {
    let mut s = Scheduler::new(config(2, 100), cache(64, 0)).unwrap();
    for id in 1..=3 {
        s.add_request(request(id, vec![5, 6, 7], SamplingParams::greedy(5)))
            .unwrap();
    }
    step(&mut s, 0.0);
    assert_eq!((s.stats().num_running, s.stats().num_waiting), (2, 1));
}

#[test]
fn kv_exhaustion_preempts_the_newest_by_recompute_and_both_finish() {
    // 6 blocks of 4 = 24 tokens; two requests of 8 prompt + 12 output need 10 blocks.
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_model_len: 24,
            ..config(4, 64)
        },
        cache(6, 0),
    )
    .unwrap();
    s.add_request(request(1, (1..=8).collect(), SamplingParams::greedy(12)))
        .unwrap();
    s.add_request(request(2, (11..=18).collect(), SamplingParams::greedy(12)))
        .unwrap();
    let (mut recomputed, mut end2) = (false, 0);
    for t in 0..100 {
        let out = step(&mut s, t as f64);
        for r in out.scheduled.iter().filter(|r| r.id == 2) {
            // Restarting below what was computed means its KV was dropped (prefix hits may shorten the redo).
            recomputed |= r.start < end2;
            end2 = r.start + r.num_tokens;
        }
        if s.is_idle() {
            break;
        }
    }
    assert!(s.is_idle());
    assert!(s.stats().num_preemptions >= 1);
    assert!(recomputed, "request 2 lost its KV and recomputed it");
    let done = s.take_finished();
    assert!(done.iter().all(|r| r.num_output_tokens() == 12));
    assert_eq!(s.pool_free_blocks().0, (6, 6));
}

#[test]
fn with_swap_space_the_victim_is_swapped_out_and_back_in() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_model_len: 24,
            ..config(4, 64)
        },
        cache(6, 8),
    )
    .unwrap();
    s.add_request(request(1, (1..=8).collect(), SamplingParams::greedy(12)))
        .unwrap();
    s.add_request(request(2, (11..=18).collect(), SamplingParams::greedy(12)))
        .unwrap();
    let (mut swapped_out, mut swapped_in, mut max_swapped) = (0, 0, 0);
    for t in 0..100 {
        let out = step(&mut s, t as f64);
        swapped_out += out.swap_out.len();
        swapped_in += out.swap_in.len();
        max_swapped = max_swapped.max(s.stats().num_swapped);
        assert!(s.stats().host_cache_usage == 0.0 || s.stats().num_swapped > 0);
        if s.is_idle() {
            break;
        }
    }
    assert!(s.is_idle());
    assert!(
        swapped_out > 0 && swapped_out == swapped_in,
        "{swapped_out} out, {swapped_in} in"
    );
    assert_eq!(max_swapped, 1);
    assert!(
        s.take_finished()
            .iter()
            .all(|r| r.num_output_tokens() == 12)
    );
    assert_eq!(s.pool_free_blocks(), ((6, 6), (8, 8)));
}

#[test]
fn priority_policy_admits_the_most_important_first() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            policy: SchedulingPolicy::Priority,
            ..config(1, 100)
        },
        cache(32, 0),
    )
    .unwrap();
    for (id, prio) in [(1, 5), (2, -1), (3, 0)] {
        s.add_request(NewRequest {
            priority: prio,
            ..request(id, vec![1, 2], SamplingParams::greedy(1))
        })
        .unwrap();
    }
    let order: Vec<RequestId> = (0..3)
        .map(|t| step(&mut s, t as f64).scheduled[0].id)
        .collect();
    assert_eq!(order, vec![2, 3, 1]);
}

#[test]
fn stop_conditions_follow_min_tokens_eos_and_stop_ids() {
    let mut s = Scheduler::new(config(4, 100), cache(32, 0)).unwrap();
    let params = SamplingParams {
        min_tokens: 2,
        stop_token_ids: vec![7],
        ..SamplingParams::greedy(10)
    };
    s.add_request(request(1, vec![1, 2], params)).unwrap();
    let feed = |s: &mut Scheduler, tok: u32| {
        let out = s.schedule(0.0);
        s.update_from_output(
            &[SampledToken {
                id: out.scheduled[0].id,
                token: tok,
                logprobs: None,
                forced_end: false,
            }],
            0.0,
        )
    };
    assert_eq!(
        feed(&mut s, 0)[0].finish,
        None,
        "EOS ignored before min_tokens"
    );
    assert_eq!(feed(&mut s, 3)[0].finish, None);
    let stopped = &feed(&mut s, 7)[0];
    assert_eq!(stopped.finish, Some(FinishReason::Stop));
    assert_eq!(
        stopped.stop_reason,
        Some(StopReason::StopToken(7)),
        "the stop id that matched"
    );
    let p = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(2)
    };
    s.add_request(request(2, vec![1, 2], p)).unwrap();
    assert_eq!(feed(&mut s, 0)[0].finish, None, "ignore_eos");
    let length = &feed(&mut s, 0)[0];
    assert_eq!(length.finish, Some(FinishReason::Length));
    assert_eq!(length.stop_reason, None);
    // EOS comes from the scheduler's config (the model's ids), not from the request.
    s.add_request(request(3, vec![1, 2], SamplingParams::greedy(5)))
        .unwrap();
    let eos = &feed(&mut s, 0)[0];
    assert_eq!(eos.finish, Some(FinishReason::Stop));
    assert_eq!(eos.stop_reason, Some(StopReason::Eos(0)));
}

#[test]
fn a_complete_constraint_ends_the_request_despite_ignore_eos_and_min_tokens() {
    let mut s = Scheduler::new(config(4, 100), cache(32, 0)).unwrap();
    let params = SamplingParams {
        ignore_eos: true,
        min_tokens: 5,
        ..SamplingParams::greedy(10)
    };
    s.add_request(request(1, vec![1, 2], params)).unwrap();
    let mut feed = |tok: u32, forced_end: bool| {
        let out = s.schedule(0.0);
        let sampled = SampledToken {
            id: out.scheduled[0].id,
            token: tok,
            logprobs: None,
            forced_end,
        };
        s.update_from_output(&[sampled], 0.0).remove(0)
    };
    assert_eq!(feed(0, false).finish, None, "EOS the grammar only allows");
    let end = feed(0, true);
    assert_eq!(end.finish, Some(FinishReason::Stop));
    assert_eq!(end.stop_reason, Some(StopReason::Eos(0)));
}

#[test]
fn bad_requests_are_refused_with_reasons() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_waiting: 1,
            ..config(4, 100)
        },
        cache(32, 0),
    )
    .unwrap();
    assert_eq!(
        s.add_request(request(1, vec![], SamplingParams::greedy(1))),
        Err(Error::EmptyPrompt)
    );
    // The prompt-fit check is the front end's, through the core's rule.
    let err =
        SamplingParams::resolve_max_tokens(Some(10), 60, s.config().max_model_len).unwrap_err();
    assert!(
        err.to_string().contains("maximum context length is 64"),
        "{err}"
    );
    s.add_request(request(1, vec![1], SamplingParams::greedy(1)))
        .unwrap();
    assert_eq!(
        s.add_request(request(2, vec![1], SamplingParams::greedy(1))),
        Err(Error::QueueFull { waiting: 1 })
    );
    assert!(
        Scheduler::new(config(4, 100), cache(8, 0))
            .unwrap_err()
            .to_string()
            .contains("--max-model-len")
    );
    let mut s = Scheduler::new(config(4, 100), cache(32, 0)).unwrap();
    let err = s.add_request(NewRequest {
        priority: 3,
        ..request(9, vec![1], SamplingParams::greedy(1))
    });
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("priority scheduling is not enabled")
    );
}

#[test]
fn delay_factor_holds_new_prompts_while_others_run() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            delay_factor: 10.0,
            ..config(4, 100)
        },
        cache(32, 0),
    )
    .unwrap();
    s.add_request(request(1, vec![1, 2, 3], SamplingParams::greedy(50)))
        .unwrap();
    s.schedule(0.0); // prompt step; nothing running before it, so admitted at once
    s.update_from_output(&[], 0.0);
    s.schedule(1.0); // last prompt step took 1 s
    let late = NewRequest {
        arrival_time: 1.5,
        ..request(2, vec![4, 5], SamplingParams::greedy(1))
    };
    s.add_request(late).unwrap();
    assert!(
        s.schedule(2.0).scheduled.iter().all(|r| r.id == 1),
        "waited 0.5 s < 10 × 1 s"
    );
    assert!(s.schedule(12.0).scheduled.iter().any(|r| r.id == 2));
}

#[test]
fn abort_frees_blocks_immediately_and_is_reported_to_the_runner() {
    let mut s = Scheduler::new(config(4, 100), cache(32, 4)).unwrap();
    s.add_request(request(1, (1..=10).collect(), SamplingParams::greedy(10)))
        .unwrap();
    step(&mut s, 0.0);
    assert!(s.pool_free_blocks().0.0 < 32);
    assert!(s.abort(1, FinishReason::Abort));
    assert!(!s.abort(1, FinishReason::Abort));
    assert_eq!(s.pool_free_blocks().0, (32, 32));
    assert_eq!(s.schedule(1.0).finished, vec![1]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    /// Any mix of finished, aborted and preempted (recompute or swap) requests
    /// leaves both pools entirely free, and invariants hold after every step.
    #[test]
    fn pools_are_entirely_free_after_any_workload(
        reqs in prop::collection::vec((1usize..20, 1usize..12, 0u32..3, 0i32..3), 1..24),
        aborts in prop::collection::vec((0usize..60, 0usize..24), 0..10),
        device_blocks in 9usize..24,
        host_blocks in prop::sample::select(vec![0usize, 4, 16]),
        budget in 4usize..40,
        priority in any::<bool>(),
    ) {
        let cfg = SchedulerConfig {
            max_model_len: 32,
            policy: if priority { SchedulingPolicy::Priority } else { SchedulingPolicy::Fcfs },
            ..config(6, budget)
        };
        let mut s = Scheduler::new(cfg, cache(device_blocks, host_blocks)).unwrap();
        let mut added = 0;
        for t in 0..400usize {
            // Arrivals: two per step; prompts share prefixes (family) so the cache hits.
            for _ in 0..2 {
                if let Some(&(len, out, family, prio)) = reqs.get(added) {
                    let prompt: Vec<u32> = (0..len as u32).map(|i| family * 100 + i).collect();
                    let prio = if priority { prio } else { 0 };
                    let r = NewRequest { priority: prio, ..request(added as u64, prompt, SamplingParams::greedy(out)) };
                    s.add_request(r).unwrap();
                    added += 1;
                }
            }
            for &(at, id) in &aborts {
                if at == t { s.abort(id as u64, FinishReason::Abort); }
            }
            step(&mut s, t as f64);
            if added == reqs.len() && s.is_idle() { break; }
        }
        prop_assert!(s.is_idle(), "workload did not drain");
        prop_assert_eq!(s.pool_free_blocks(), ((device_blocks, device_blocks), (host_blocks, host_blocks)));
        let finished = s.take_finished();
        prop_assert_eq!(finished.len(), reqs.len());
        for r in finished {
            let aborted = matches!(r.status, candela_core::RequestStatus::Finished(FinishReason::Abort));
            prop_assert!(aborted || r.num_output_tokens() == r.params.max_tokens);
        }
    }
}

#[test]
fn prompt_logprobs_requests_prefill_in_bounded_slices_without_the_prefix_cache() {
    let config = SchedulerConfig {
        max_model_len: 2048,
        ..config(4, 2048)
    };
    let mut s = Scheduler::new(config, cache(1024, 0)).unwrap();
    let prompt: Vec<u32> = (1..=1500).collect();
    s.add_request(request(1, prompt.clone(), SamplingParams::greedy(4)))
        .unwrap();
    let first = step(&mut s, 0.0);
    assert_eq!(
        first.scheduled[0].num_tokens, 1500,
        "plain prompts take the budget"
    );
    while !s.is_idle() {
        let out = s.schedule(1.0);
        let sampled = sample_all(&out);
        s.update_from_output(&sampled, 1.0);
    }
    let params = SamplingParams {
        prompt_logprobs: Some(0),
        ..SamplingParams::greedy(4)
    };
    s.add_request(request(2, prompt, params)).unwrap();
    let chunks: Vec<(usize, usize)> = (0..3)
        .map(|t| {
            let out = step(&mut s, 2.0 + t as f64);
            (out.scheduled[0].start, out.scheduled[0].num_tokens)
        })
        .collect();
    assert_eq!(
        chunks,
        vec![(0, MAX_PROMPT_LOGITS_PER_STEP), (512, 512), (1024, 476)],
        "the cached prefix is not read, and each slice is bounded"
    );
}

/// A request of adapter `lora` (0: the base model).
fn lora_request(id: RequestId, prompt: Vec<u32>, out: usize, lora: u32) -> NewRequest {
    NewRequest {
        lora: (lora > 0).then_some(lora),
        ..request(id, prompt, SamplingParams::greedy(out))
    }
}

#[test]
fn requests_of_an_adapter_past_max_loras_wait_and_others_pass_them() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_loras: 1,
            ..config(8, 64)
        },
        cache(64, 0),
    )
    .unwrap();
    for (id, lora) in [(1, 1), (2, 2), (3, 1), (4, 0)] {
        s.add_request(lora_request(id, vec![1, 2, 3], 3, lora))
            .unwrap();
    }
    let first = step(&mut s, 0.0);
    let ids: Vec<RequestId> = first.scheduled.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        vec![1, 3, 4],
        "adapter 2 waits; the base and adapter 1 pass it"
    );
    let stats = s.stats();
    assert_eq!(
        (stats.running_loras, stats.waiting_loras),
        (vec![1], vec![2])
    );
    let mut t = 1.0;
    while !s.is_idle() {
        let out = step(&mut s, t);
        if out.scheduled.iter().any(|r| r.id == 2) {
            assert!(
                s.request(1).is_none() && s.request(3).is_none(),
                "adapter 2 starts once adapter 1 has left"
            );
        }
        t += 1.0;
    }
    assert_eq!(s.take_finished().len(), 4, "queued, not failed");
    let off = Scheduler::new(config(8, 64), cache(64, 0)).unwrap();
    let mut off = off;
    let e = off.add_request(lora_request(9, vec![1], 1, 1)).unwrap_err();
    assert!(e.to_string().contains("--enable-lora"), "{e}");
}

proptest! {
    /// With adapters mixed in: never more than `--max-loras` adapters run at once (the
    /// invariant check after each step), every request finishes, the pools come back
    /// free, and a prefix is only ever reused under the same adapter.
    #[test]
    fn lora_workloads_respect_max_loras_and_share_no_kv_across_adapters(
        reqs in prop::collection::vec((1usize..20, 1usize..8, 0u32..3, 0u32..4), 1..24),
        max_loras in 1usize..3,
        device_blocks in 9usize..24,
        host_blocks in prop::sample::select(vec![0usize, 16]),
        budget in 4usize..40,
    ) {
        let cfg = SchedulerConfig { max_model_len: 32, max_loras, ..config(6, budget) };
        let mut s = Scheduler::new(cfg, cache(device_blocks, host_blocks)).unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut repeat = std::collections::HashMap::new();
        let mut added = 0;
        for t in 0..600usize {
            for _ in 0..2 {
                if let Some(&(len, out, family, lora)) = reqs.get(added) {
                    let prompt: Vec<u32> = (0..len as u32).map(|i| family * 100 + i).collect();
                    repeat.insert(added as u64, !seen.insert((family, lora)));
                    s.add_request(lora_request(added as u64, prompt, out, lora)).unwrap();
                    added += 1;
                }
            }
            step(&mut s, t as f64);
            if added == reqs.len() && s.is_idle() { break; }
        }
        prop_assert!(s.is_idle(), "workload did not drain");
        prop_assert_eq!(s.pool_free_blocks(), ((device_blocks, device_blocks), (host_blocks, host_blocks)));
        let finished = s.take_finished();
        prop_assert_eq!(finished.len(), reqs.len());
        for r in finished {
            prop_assert_eq!(r.num_output_tokens(), r.params.max_tokens);
            prop_assert!(r.num_cached_tokens == 0 || repeat[&r.id],
                "request {} reused KV of another adapter", r.id);
        }
    }
}
