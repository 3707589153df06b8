//! Service tiers through the scheduler's public API: tier order under both policies,
//! per-tier running caps, online requests preempting `flex` ones (and never the other way
//! round), and property tests that any tiered workload drains with both pools free.

use candela_core::{
    FinishReason, NewRequest, Request, RequestId, RequestStatus, SamplingParams, Scheduler,
    SchedulerConfig, SchedulingPolicy, ServiceTier, TierCaps,
};
use proptest::prelude::*;

mod common;
use common::{cache, config, step};

use ServiceTier::{Default as Online, Flex, Priority};

fn request(id: RequestId, tier: ServiceTier, prompt_len: usize, out: usize) -> NewRequest {
    NewRequest {
        id,
        // Distinct prompts: no prefix hits unless a test wants them.
        prompt_token_ids: (0..prompt_len as u32)
            .map(|i| id as u32 * 1000 + i + 1)
            .collect(),
        params: SamplingParams::greedy(out),
        priority: 0,
        tier,
        arrival_time: id as f64,
        lora: None,
    }
}

/// Steps until idle; the finished requests by id.
fn drain(s: &mut Scheduler, mut t: f64) -> Vec<Request> {
    for _ in 0..2000 {
        if s.is_idle() {
            break;
        }
        step(s, t);
        t += 1.0;
    }
    assert!(s.is_idle(), "the workload did not drain");
    let mut done = s.take_finished();
    done.sort_by_key(|r| r.id);
    done
}

/// The order in which requests were first scheduled, one admission per step.
fn admission_order(s: &mut Scheduler) -> Vec<RequestId> {
    let mut order = Vec::new();
    for t in 0..100 {
        for r in step(s, t as f64).scheduled {
            if !order.contains(&r.id) {
                order.push(r.id);
            }
        }
        if s.is_idle() {
            break;
        }
    }
    order
}

#[test]
fn tiers_order_admission_under_fcfs_without_the_priority_policy() {
    let mut s = Scheduler::new(config(1, 100), cache(64, 0)).unwrap();
    for (id, tier) in [
        (1, Flex),
        (2, Online),
        (3, Priority),
        (4, Online),
        (5, Flex),
    ] {
        s.add_request(request(id, tier, 3, 2)).unwrap();
    }
    assert_eq!(admission_order(&mut s), vec![3, 2, 4, 1, 5]);
}

#[test]
fn under_the_priority_policy_the_tier_comes_before_priority() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            policy: SchedulingPolicy::Priority,
            ..config(1, 100)
        },
        cache(64, 0),
    )
    .unwrap();
    for (id, tier, priority) in [
        (1, Flex, -9),
        (2, Online, 5),
        (3, Priority, 9),
        (4, Online, -1),
    ] {
        s.add_request(NewRequest {
            priority,
            ..request(id, tier, 3, 2)
        })
        .unwrap();
    }
    assert_eq!(admission_order(&mut s), vec![3, 4, 2, 1]);
}

#[test]
fn a_capped_tier_waits_while_others_pass_it_and_every_request_finishes() {
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_num_seqs_per_tier: TierCaps::default().with(Flex, 2),
            ..config(8, 100)
        },
        cache(256, 0),
    )
    .unwrap();
    for id in 1..=6 {
        s.add_request(request(id, Flex, 3, 20)).unwrap();
    }
    step(&mut s, 0.0);
    assert_eq!(s.stats().tier(Flex).running, 2);
    assert_eq!(s.stats().tier(Flex).waiting, 4);
    for id in 7..=9 {
        s.add_request(request(id, Online, 3, 4)).unwrap();
    }
    let out = step(&mut s, 1.0);
    let ids: Vec<RequestId> = out.scheduled.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        vec![1, 2, 7, 8, 9],
        "online requests pass the capped flex ones"
    );
    let stats = s.stats();
    assert_eq!(
        (stats.tier(Online).running, stats.tier(Flex).running),
        (3, 2)
    );
    assert_eq!(
        stats.tiers.iter().map(|t| t.running).sum::<usize>(),
        stats.num_running
    );
    let done = drain(&mut s, 2.0);
    assert_eq!(done.len(), 9, "waiting, never refused");
    assert!(
        done.iter()
            .all(|r| r.num_output_tokens() == r.params.max_tokens)
    );
    assert_eq!(s.pool_free_blocks().0, (256, 256));
}

#[test]
fn the_cap_keeps_flex_from_thrashing_a_small_pool() {
    // 16 blocks of 4 tokens: two requests of 4 + 28 tokens fit (8 blocks each), ten do not.
    let run = |caps: TierCaps| {
        let mut s = Scheduler::new(
            SchedulerConfig {
                max_num_seqs_per_tier: caps,
                ..config(16, 64)
            },
            cache(16, 0),
        )
        .unwrap();
        for id in 1..=10 {
            s.add_request(request(id, Flex, 4, 28)).unwrap();
        }
        let done = drain(&mut s, 0.0);
        assert!(done.iter().all(|r| r.num_output_tokens() == 28));
        assert_eq!(s.pool_free_blocks().0, (16, 16));
        s.stats().num_preemptions
    };
    assert!(
        run(TierCaps::default()) > 0,
        "without a cap flex requests preempt each other"
    );
    assert_eq!(run(TierCaps::default().with(Flex, 2)), 0);
}

#[test]
fn an_online_request_preempts_flex_for_a_sequence_slot() {
    let mut s = Scheduler::new(config(2, 100), cache(64, 0)).unwrap();
    s.add_request(request(1, Flex, 3, 20)).unwrap();
    s.add_request(request(2, Flex, 3, 20)).unwrap();
    step(&mut s, 0.0);
    s.add_request(request(3, Online, 3, 2)).unwrap();
    let out = step(&mut s, 1.0);
    let ids: Vec<RequestId> = out.scheduled.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1, 3], "the newest flex request made room");
    assert_eq!(s.request(2).unwrap().status, RequestStatus::Waiting);
    let done = drain(&mut s, 2.0);
    assert!(
        done.iter()
            .all(|r| r.num_output_tokens() == r.params.max_tokens)
    );
    assert_eq!(done[2].num_preemptions, 0);
}

#[test]
fn an_online_request_preempts_flex_for_kv_and_flex_comes_back_from_swap() {
    // 10 blocks: two flex requests of 4 + 12 tokens hold 8; the online prompt needs 3.
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_model_len: 32,
            ..config(8, 100)
        },
        cache(10, 16),
    )
    .unwrap();
    s.add_request(request(1, Flex, 4, 12)).unwrap();
    s.add_request(request(2, Flex, 4, 12)).unwrap();
    for t in 0..11 {
        step(&mut s, t as f64);
    }
    s.add_request(request(3, Online, 12, 4)).unwrap();
    let out = step(&mut s, 11.0);
    assert!(
        !out.swap_out.is_empty(),
        "a flex request went to the host pool"
    );
    assert!(out.scheduled.iter().any(|r| r.id == 3), "admitted at once");
    assert_eq!(s.stats().num_swapped, 1);
    let done = drain(&mut s, 12.0);
    assert_eq!(done.len(), 3);
    assert!(
        done.iter()
            .all(|r| r.num_output_tokens() == r.params.max_tokens)
    );
    assert_eq!(done[2].num_preemptions, 0);
    assert_eq!(s.pool_free_blocks(), ((10, 10), (16, 16)));
}

#[test]
fn a_flex_request_short_of_kv_preempts_itself_not_an_online_one() {
    // 8 blocks; the online request grows to 7, the flex one to 6 blocks.
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_model_len: 32,
            ..config(8, 100)
        },
        cache(8, 0),
    )
    .unwrap();
    s.add_request(request(1, Online, 4, 24)).unwrap();
    s.add_request(request(2, Flex, 4, 20)).unwrap();
    let done = drain(&mut s, 0.0);
    assert_eq!(done[0].num_preemptions, 0, "the online request kept its KV");
    assert!(done[1].num_preemptions > 0);
    assert!(
        done.iter()
            .all(|r| r.num_output_tokens() == r.params.max_tokens)
    );
}

#[test]
fn a_cap_of_zero_is_refused() {
    let e = Scheduler::new(
        SchedulerConfig {
            max_num_seqs_per_tier: TierCaps::default().with(Flex, 0),
            ..config(4, 64)
        },
        cache(64, 0),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("--max-num-seqs-per-tier flex=0"),
        "{e}"
    );
}

fn tier_of(i: u8) -> ServiceTier {
    ServiceTier::ALL[usize::from(i % 3)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    /// Any mix of tiers, caps, policies, swap space and aborts: no cap is exceeded and the
    /// queues stay in tier order after every step (`check_invariants`), every request
    /// finishes (aborted, or with all its tokens), and both pools come back free.
    #[test]
    fn tiered_workloads_respect_caps_finish_and_free_both_pools(
        reqs in prop::collection::vec((1usize..20, 1usize..12, 0u8..3, 0i32..3), 1..28),
        aborts in prop::collection::vec((0usize..60, 0usize..28), 0..6),
        caps in prop::collection::vec(prop::option::of(1usize..4), 3),
        device_blocks in 9usize..24,
        host_blocks in prop::sample::select(vec![0usize, 4, 16]),
        budget in 4usize..40,
        priority in any::<bool>(),
    ) {
        let mut tier_caps = TierCaps::default();
        for (t, cap) in ServiceTier::ALL.into_iter().zip(&caps) {
            if let Some(cap) = cap {
                tier_caps = tier_caps.with(t, *cap);
            }
        }
        let cfg = SchedulerConfig {
            max_model_len: 32,
            policy: if priority { SchedulingPolicy::Priority } else { SchedulingPolicy::Fcfs },
            max_num_seqs_per_tier: tier_caps,
            ..config(6, budget)
        };
        let mut s = Scheduler::new(cfg, cache(device_blocks, host_blocks)).unwrap();
        let mut added = 0;
        for t in 0..2000usize {
            for _ in 0..2 {
                if let Some(&(len, out, tier, prio)) = reqs.get(added) {
                    let r = NewRequest {
                        priority: if priority { prio } else { 0 },
                        ..request(added as u64, tier_of(tier), len, out)
                    };
                    s.add_request(r).unwrap();
                    added += 1;
                }
            }
            for &(at, id) in &aborts {
                if at == t { s.abort(id as u64, FinishReason::Abort); }
            }
            step(&mut s, t as f64);
            let stats = s.stats();
            prop_assert_eq!(stats.tiers.iter().map(|t| t.running).sum::<usize>(), stats.num_running);
            prop_assert_eq!(stats.tiers.iter().map(|t| t.waiting).sum::<usize>(), stats.num_waiting);
            if added == reqs.len() && s.is_idle() { break; }
        }
        prop_assert!(s.is_idle(), "workload did not drain");
        prop_assert_eq!(s.pool_free_blocks(), ((device_blocks, device_blocks), (host_blocks, host_blocks)));
        let finished = s.take_finished();
        prop_assert_eq!(finished.len(), reqs.len());
        for r in finished {
            let aborted = matches!(r.status, RequestStatus::Finished(FinishReason::Abort));
            prop_assert!(aborted || r.num_output_tokens() == r.params.max_tokens);
        }
    }

    /// Online requests whose KV fits the pool together are never preempted, however many
    /// flex requests (capped or not) compete with them: flex never preempts online work.
    #[test]
    fn flex_never_preempts_online_requests(
        online in prop::collection::vec((1usize..12, 1usize..8, any::<bool>()), 1..4),
        flex in prop::collection::vec((1usize..20, 1usize..12), 1..20),
        flex_cap in prop::option::of(1usize..4),
        host_blocks in prop::sample::select(vec![0usize, 16]),
        priority in any::<bool>(),
        spare in 0usize..6,
    ) {
        // Every online request's whole sequence fits at once (blocks of 4 tokens).
        let need: usize = online.iter().map(|&(len, out, _)| (len + out).div_ceil(4)).sum();
        let device_blocks = need.max(8) + spare;
        let cfg = SchedulerConfig {
            max_model_len: 32,
            policy: if priority { SchedulingPolicy::Priority } else { SchedulingPolicy::Fcfs },
            max_num_seqs_per_tier: flex_cap.map_or(TierCaps::default(), |c| TierCaps::default().with(Flex, c)),
            ..config(8, 16)
        };
        let mut s = Scheduler::new(cfg, cache(device_blocks, host_blocks)).unwrap();
        let mut id = 0u64;
        let mut tiers = std::collections::HashMap::new();
        for &(len, out) in &flex {
            s.add_request(request(id, Flex, len, out)).unwrap();
            tiers.insert(id, Flex);
            id += 1;
        }
        // Flex work runs first; online requests arrive once it fills the pool.
        for t in 0..3 { step(&mut s, t as f64); }
        for &(len, out, top) in &online {
            let tier = if top { Priority } else { Online };
            s.add_request(request(id, tier, len, out)).unwrap();
            tiers.insert(id, tier);
            id += 1;
        }
        let done = drain(&mut s, 3.0);
        prop_assert_eq!(done.len(), flex.len() + online.len());
        for r in &done {
            prop_assert_eq!(r.num_output_tokens(), r.params.max_tokens);
            if tiers[&r.id] != Flex {
                prop_assert_eq!(r.num_preemptions, 0, "online request {} was preempted", r.id);
            }
        }
        prop_assert_eq!(s.pool_free_blocks(), ((device_blocks, device_blocks), (host_blocks, host_blocks)));
    }
}
