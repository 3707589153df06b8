//! Speculative decoding through the scheduler's public API, against a simulated
//! model and KV cache: drafts are budgeted and capped, rejected drafts' KV is rolled
//! back, and whatever mix of right and wrong drafts, preemption (recompute and swap),
//! prefix caching and aborts a workload has, every request's output equals its
//! no-speculation output, the cache holds only real tokens below each step's start,
//! and both pools end entirely free; with a lookahead (draft model), sampling steps
//! always have room for the drafts' KV.

use std::collections::HashMap;

use candela_core::{
    BlockId, FinishReason, NewRequest, RequestId, RequestStatus, SampledToken, SamplingParams,
    Scheduler, SchedulerConfig, SchedulerOutput, SpecDecodingStats,
};
use proptest::prelude::*;

mod common;
use common::{BLOCK, cache};

/// The shared small configuration with a context of `max_model_len` tokens.
fn config(max_seqs: usize, budget: usize, max_model_len: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_model_len,
        ..common::config(max_seqs, budget)
    }
}

fn request(id: RequestId, prompt: Vec<u32>, max_tokens: usize) -> NewRequest {
    NewRequest {
        id,
        prompt_token_ids: prompt,
        params: SamplingParams::greedy(max_tokens),
        priority: 0,
        tier: candela_core::ServiceTier::Default,
        arrival_time: id as f64,
        lora: None,
    }
}

/// The simulated model's greedy next token after `ctx` (never the EOS id 0).
fn oracle(ctx: &[u32]) -> u32 {
    let h = ctx
        .iter()
        .fold(7u32, |h, &t| h.wrapping_mul(31).wrapping_add(t));
    1 + (h >> 3) % 5
}

/// What `prompt` greedily continues to without speculation: `n` tokens.
fn reference(prompt: &[u32], n: usize) -> Vec<u32> {
    let mut ctx = prompt.to_vec();
    for _ in 0..n {
        ctx.push(oracle(&ctx));
    }
    ctx[prompt.len()..].to_vec()
}

/// Device and host KV pools as token ids per slot: what the runner would hold.
#[derive(Default)]
struct SimCache {
    device: HashMap<(BlockId, usize), u32>,
    host: HashMap<(BlockId, usize), u32>,
}

impl SimCache {
    fn copy(
        from: &HashMap<(BlockId, usize), u32>,
        to: &mut HashMap<(BlockId, usize), u32>,
        pairs: &[(BlockId, BlockId)],
    ) {
        for &(src, dst) in pairs {
            for off in 0..BLOCK {
                match from.get(&(src, off)) {
                    Some(&t) => to.insert((dst, off), t),
                    None => to.remove(&(dst, off)),
                };
            }
        }
    }
}

/// One engine step with a simulated greedy model that verifies drafts, then drafts
/// for every live request: `right` decides, per draft position, whether the draft
/// is the model's own next token or a wrong one.
fn spec_step(
    s: &mut Scheduler,
    kv: &mut SimCache,
    t: f64,
    k: usize,
    right: &mut dyn FnMut() -> bool,
) -> SchedulerOutput {
    let out = s.schedule(t);
    SimCache::copy(&kv.device, &mut kv.host, &out.swap_out);
    SimCache::copy(&kv.host, &mut kv.device, &out.swap_in);
    let mut sampled = Vec::new();
    for sr in &out.scheduled {
        let req = s.request(sr.id).unwrap();
        let table = s.block_table(sr.id);
        let slot = |p: usize| (table[p / BLOCK], p % BLOCK);
        // Everything before `start` is in the cache as the request's real tokens.
        for p in 0..sr.start {
            assert_eq!(
                kv.device.get(&slot(p)),
                Some(&req.token_ids()[p]),
                "request {} position {p}: stale KV below start {}",
                sr.id,
                sr.start
            );
        }
        let known = &req.token_ids()[sr.start..sr.start + sr.num_known_tokens()];
        for (i, &tok) in known.iter().chain(&sr.draft_tokens).enumerate() {
            kv.device.insert(slot(sr.start + i), tok);
        }
        if !sr.sample {
            assert!(
                sr.draft_tokens.is_empty(),
                "drafts only after the last token"
            );
            continue;
        }
        // Up to the context length: no draft is useful past it.
        let end = sr.start + sr.num_tokens;
        let lookahead = s
            .config()
            .num_lookahead_tokens
            .min(s.config().max_model_len.saturating_sub(end));
        assert!(
            table.len() * BLOCK >= sr.start + sr.num_tokens + lookahead,
            "request {}: no room for a draft model's {lookahead} lookahead slots",
            sr.id
        );
        // Greedy verification: drafts stand while they are the model's own next token;
        // the first one that is not is replaced, and after all of them comes one more.
        let mut ctx = req.token_ids().to_vec();
        let accepted = sr
            .draft_tokens
            .iter()
            .take_while(|&&d| {
                let ok = d == oracle(&ctx);
                ctx.push(d);
                ok
            })
            .count();
        ctx.truncate(req.num_tokens() + accepted);
        for &d in &sr.draft_tokens[..accepted] {
            sampled.push(token(sr.id, d));
        }
        sampled.push(token(sr.id, oracle(&ctx)));
    }
    s.update_from_output(&sampled, t);
    for sr in &out.scheduled {
        let Some(req) = s.request(sr.id) else {
            continue;
        };
        let mut ctx = req.token_ids().to_vec();
        let mut draft = Vec::new();
        for _ in 0..k {
            let next = oracle(&ctx);
            let d = if right() { next } else { next % 5 + 1 };
            draft.push(d);
            ctx.push(d);
        }
        s.set_draft_tokens(sr.id, draft);
    }
    s.check_invariants().unwrap();
    out
}

fn token(id: RequestId, token: u32) -> SampledToken {
    SampledToken {
        id,
        token,
        logprobs: None,
        forced_end: false,
    }
}

#[test]
fn accepted_drafts_come_out_together_and_rejected_ones_are_rolled_back() {
    let mut s = Scheduler::new(config(4, 64, 64), cache(32, 0)).unwrap();
    s.add_request(request(1, vec![5, 6, 7], 20)).unwrap();
    let out = s.schedule(0.0);
    assert_eq!(out.scheduled[0].num_tokens, 3);
    s.update_from_output(&[token(1, 8)], 0.0);
    s.set_draft_tokens(1, vec![9, 10, 11]);

    // Prompt 3 + output 1 → the last token and 3 drafts at positions 3..7.
    let out = s.schedule(1.0);
    let sr = &out.scheduled[0];
    assert_eq!((sr.start, sr.num_tokens, sr.sample), (3, 4, true));
    assert_eq!(sr.draft_tokens, vec![9, 10, 11]);
    assert_eq!(out.num_batched_tokens, 4);
    // 9 accepted, 10 rejected in favour of 12: two tokens out, position 5 rolled back.
    let outs = s.update_from_output(&[token(1, 9), token(1, 12)], 1.0);
    assert_eq!(outs.iter().map(|o| o.token).collect::<Vec<_>>(), [9, 12]);
    let req = s.request(1).unwrap();
    assert_eq!(req.output_token_ids(), [8, 9, 12]);
    assert_eq!(req.num_computed_tokens, 5, "tokens 5,6,7,8,9 hold real KV");
    assert!(req.draft_token_ids().is_empty(), "drafts are used once");
    let spec = s.stats().spec_decoding;
    assert_eq!(
        (
            spec.num_drafts,
            spec.num_draft_tokens,
            spec.num_accepted_tokens
        ),
        (1, 3, 1)
    );
    assert_eq!(spec.num_accepted_tokens_per_pos, [1, 0, 0]);

    // Without drafts the next step recomputes only from the rejected position.
    let out = s.schedule(2.0);
    assert_eq!(
        (out.scheduled[0].start, out.scheduled[0].num_tokens),
        (5, 1)
    );
}

#[test]
fn drafts_fit_the_budget_max_tokens_and_context_length() {
    // Budget: two decoding requests share 5 tokens; the second gets what is left.
    let mut s = Scheduler::new(config(4, 5, 64), cache(32, 0)).unwrap();
    for id in [1, 2] {
        s.add_request(request(id, vec![1, 2], 20)).unwrap();
    }
    let out = s.schedule(0.0);
    assert_eq!(out.num_batched_tokens, 4);
    s.update_from_output(&[token(1, 3), token(2, 3)], 0.0);
    s.set_draft_tokens(1, vec![4, 4, 4]);
    s.set_draft_tokens(2, vec![4, 4, 4]);
    let out = s.schedule(1.0);
    let shape: Vec<_> = out
        .scheduled
        .iter()
        .map(|r| (r.id, r.num_tokens, r.draft_tokens.len()))
        .collect();
    assert_eq!(shape, [(1, 4, 3), (2, 1, 0)]);

    // max_tokens 3 with 1 generated: at most 2 more tokens, so 1 draft.
    let mut s = Scheduler::new(config(4, 64, 64), cache(32, 0)).unwrap();
    s.add_request(request(1, vec![1, 2], 3)).unwrap();
    s.schedule(0.0);
    s.update_from_output(&[token(1, 3)], 0.0);
    s.set_draft_tokens(1, vec![4, 4, 4]);
    assert_eq!(s.schedule(1.0).scheduled[0].draft_tokens, [4]);

    // Context 8 with 6 tokens: 2 more tokens fit, so 1 draft.
    let mut s = Scheduler::new(config(4, 64, 8), cache(32, 0)).unwrap();
    s.add_request(request(1, vec![1, 2, 3, 4, 5], 20)).unwrap();
    s.schedule(0.0);
    s.update_from_output(&[token(1, 3)], 0.0);
    s.set_draft_tokens(1, vec![4, 4, 4]);
    assert_eq!(s.schedule(1.0).scheduled[0].draft_tokens, [4]);
}

#[test]
fn a_stop_token_among_accepted_drafts_ends_the_request_there() {
    let mut s = Scheduler::new(config(4, 64, 64), cache(32, 0)).unwrap();
    s.add_request(request(1, vec![5, 6], 20)).unwrap();
    s.schedule(0.0);
    s.update_from_output(&[token(1, 7)], 0.0);
    s.set_draft_tokens(1, vec![8, 0, 9]);
    s.schedule(1.0);
    // 8 and EOS accepted: the request stops at EOS; 9 and the bonus token never show.
    let outs = s.update_from_output(&[token(1, 8), token(1, 0), token(1, 9), token(1, 4)], 1.0);
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[1].finish, Some(FinishReason::Stop));
    assert!(s.is_idle());
    assert_eq!(s.pool_free_blocks().0, (32, 32));
    let done = s.take_finished();
    assert_eq!(done[0].output_token_ids(), [7, 8, 0]);
}

#[test]
fn preemption_drops_drafts() {
    // 4 blocks = 16 tokens; two requests of 6 + outputs compete, the newer is preempted.
    let mut s = Scheduler::new(config(4, 64, 16), cache(4, 0)).unwrap();
    s.add_request(request(1, vec![1; 6], 10)).unwrap();
    s.add_request(request(2, vec![2; 6], 10)).unwrap();
    s.schedule(0.0);
    s.update_from_output(&[token(1, 3), token(2, 3)], 0.0);
    s.set_draft_tokens(1, vec![3; 4]);
    s.set_draft_tokens(2, vec![3; 4]);
    let out = s.schedule(1.0);
    assert_eq!(out.scheduled.len(), 1, "{out:?}");
    let victim = s.request(2).unwrap();
    assert_eq!(victim.status, RequestStatus::Waiting);
    assert!(victim.draft_token_ids().is_empty());
}

#[test]
fn spec_decoding_stats_give_vllms_rates() {
    let mut before = SpecDecodingStats::default();
    assert!(before.acceptance_rate().is_nan() && before.efficiency().is_nan());
    before.observe(3, 3);
    let mut s = before.clone();
    for accepted in [3, 2, 0, 1] {
        s.observe(3, accepted);
    }
    // 5 drafts of 3: 9 of 15 accepted; emitted 9 + 5 of at most 15 / 3 * 4 = 20.
    assert_eq!(s.acceptance_rate(), 9.0 / 15.0);
    assert_eq!(s.efficiency(), 14.0 / 20.0);
    assert_eq!(s.mean_acceptance_length(), 1.0 + 9.0 / 5.0);
    let d = s.since(&before);
    assert_eq!(
        (d.num_drafts, d.num_draft_tokens, d.num_accepted_tokens),
        (4, 12, 6)
    );
    assert_eq!(d.num_accepted_tokens_per_pos, [3, 2, 1]);
    assert_eq!(d.per_position_rates(4), [0.75, 0.5, 0.25, 0.0]);
}

#[test]
fn lookahead_never_asks_for_more_than_the_context_length() {
    // A pool of exactly max_model_len tokens (4 blocks of 4) and a draft model's
    // lookahead of 4: a request running to the context length must still finish,
    // swapped or not.
    for host in [0, 8] {
        let cfg = SchedulerConfig {
            num_lookahead_tokens: 4,
            ..config(4, 64, 16)
        };
        let mut s = Scheduler::new(cfg, cache(4, host)).unwrap();
        s.add_request(request(1, vec![1; 6], 100)).unwrap();
        let mut kv = SimCache::default();
        for t in 0..40 {
            spec_step(&mut s, &mut kv, t as f64, 0, &mut || true);
            if s.is_idle() {
                break;
            }
        }
        assert!(s.is_idle(), "the request must reach the context length");
        let done = s.take_finished();
        assert_eq!(done[0].num_tokens(), 16);
        assert_eq!(
            done[0].status,
            RequestStatus::Finished(FinishReason::Length)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    /// Any workload with any mix of right and wrong drafts: outputs equal the
    /// no-speculation outputs, the cache below each step's start always holds the
    /// real tokens (checked inside `spec_step`), and both pools end entirely free.
    #[test]
    fn drafts_never_change_outputs_or_leak_blocks(
        reqs in prop::collection::vec((1usize..20, 1usize..14, 0u32..3), 1..16),
        aborts in prop::collection::vec((0usize..60, 0usize..16), 0..6),
        device_blocks in 10usize..24,
        host_blocks in prop::sample::select(vec![0usize, 4, 16]),
        budget in 4usize..40,
        k in 1usize..6,
        lookahead in 0usize..4,
        seed in any::<u64>(),
        p_right in 0u64..5,
    ) {
        let cfg = SchedulerConfig { num_lookahead_tokens: lookahead, ..config(6, budget, 40) };
        let mut s = Scheduler::new(cfg, cache(device_blocks, host_blocks)).unwrap();
        let mut kv = SimCache::default();
        let mut rng = seed | 1;
        let mut right = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % 4 < p_right
        };
        let mut prompts = HashMap::new();
        let mut added = 0;
        for t in 0..600usize {
            for _ in 0..2 {
                if let Some(&(len, out, family)) = reqs.get(added) {
                    let prompt: Vec<u32> = (0..len as u32).map(|i| family * 100 + i).collect();
                    prompts.insert(added as u64, prompt.clone());
                    s.add_request(request(added as u64, prompt, out)).unwrap();
                    added += 1;
                }
            }
            for &(at, id) in &aborts {
                if at == t {
                    s.abort(id as u64, FinishReason::Abort);
                }
            }
            spec_step(&mut s, &mut kv, t as f64, k, &mut right);
            if added == reqs.len() && s.is_idle() {
                break;
            }
        }
        prop_assert!(s.is_idle(), "workload did not drain");
        prop_assert_eq!(
            s.pool_free_blocks(),
            ((device_blocks, device_blocks), (host_blocks, host_blocks))
        );
        let finished = s.take_finished();
        prop_assert_eq!(finished.len(), reqs.len());
        for r in finished {
            if r.status == RequestStatus::Finished(FinishReason::Abort) {
                continue;
            }
            let prompt = &prompts[&r.id];
            let want = reference(prompt, (40 - prompt.len()).min(r.params.max_tokens));
            prop_assert_eq!(r.output_token_ids(), &want[..], "request {}", r.id);
        }
        let spec = s.stats().spec_decoding;
        prop_assert!(spec.num_accepted_tokens <= spec.num_draft_tokens);
        prop_assert_eq!(spec.num_accepted_tokens_per_pos.iter().sum::<u64>(), spec.num_accepted_tokens);
    }
}
