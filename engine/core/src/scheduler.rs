//! Continuous-batching scheduler (vLLM v1 shape, with v0's swap queue).
//!
//! Every queue is ordered by service tier first ([`crate::tier`]): waiting and swapped
//! requests of a more important tier go ahead, preemption victims come from the least
//! important tier running, and `--max-num-seqs-per-tier` caps how many of a tier run.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::kv_manager::{CacheHit, KvCacheManager};
use crate::{
    BlockId, CacheConfig, Error, FinishReason, LoraId, NewRequest, Request, RequestId,
    RequestStatus, SchedulerConfig, SchedulingPolicy, ServiceTier, StopReason, TierStats,
};

/// One request's share of a step: compute KV for `token_ids()[start..]` followed by
/// `draft_tokens`, `num_tokens` in all.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledRequest {
    pub id: RequestId,
    /// Tokens already in the cache (the position of the first new token).
    pub start: usize,
    /// New tokens computed this step (a prefill chunk, or 1 when decoding), drafts included.
    pub num_tokens: usize,
    /// The step reaches the end of the known tokens, so the runner samples the next one.
    pub sample: bool,
    /// Speculative drafts computed after the request's last token (the last
    /// `draft_tokens.len()` of `num_tokens`); the runner verifies them in order.
    pub draft_tokens: Vec<u32>,
}

impl ScheduledRequest {
    /// Tokens of the request's own `token_ids` computed this step (drafts excluded).
    pub fn num_known_tokens(&self) -> usize {
        self.num_tokens - self.draft_tokens.len()
    }
}

/// The plan of one engine step; plain data for the model runner.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerOutput {
    pub scheduled: Vec<ScheduledRequest>,
    pub num_batched_tokens: usize,
    /// Copy these device blocks to host blocks *before* the forward pass.
    pub swap_out: Vec<(BlockId, BlockId)>,
    /// Copy these host blocks to device blocks *before* the forward pass.
    pub swap_in: Vec<(BlockId, BlockId)>,
    /// Requests that ended since the last step; the runner drops their state.
    pub finished: Vec<RequestId>,
}

/// Log-probability of the sampled token and the top alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    /// `(token, logprob)`, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// Log-probability of one prompt token given the tokens before it (vLLM's
/// `prompt_logprobs` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptLogprob {
    pub token: u32,
    pub logprob: f32,
    /// 1-based rank of `token` among the vocabulary (1 = most likely).
    pub rank: usize,
    /// `(token, logprob)`, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// What the runner sampled for one request: one token, or with speculative drafts one
/// per accepted draft plus the token after them, in order (consecutive entries of
/// the same request).
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub id: RequestId,
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
    /// The request's structured-output constraint allowed only this end: it finishes
    /// here (`stop`), whatever `ignore_eos` and `min_tokens` say.
    pub forced_end: bool,
}

/// One new token (and possibly the end) of one request, for the server.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutput {
    pub id: RequestId,
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
    pub finish: Option<FinishReason>,
    /// With `finish == Some(Stop)`: the EOS or stop token id that ended the request.
    pub stop_reason: Option<StopReason>,
    /// When the request arrived (TTFT is measured from here).
    pub arrival_time: f64,
    /// When the previous token came out; `None` for the first token.
    pub prev_token_time: Option<f64>,
    pub num_prompt_tokens: usize,
}

/// Live values of the scheduler and the KV pools (the metrics' gauges).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerStats {
    pub num_running: usize,
    pub num_waiting: usize,
    pub num_swapped: usize,
    /// Used fraction of the device pool, 0–1.
    pub device_cache_usage: f64,
    /// Used fraction of the host (swap) pool, 0–1.
    pub host_cache_usage: f64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub num_preemptions: u64,
    /// Speculative decoding's cumulative counts.
    pub spec_decoding: SpecDecodingStats,
    /// The LoRA adapters of running requests, and of waiting or swapped ones (distinct,
    /// ascending; `vllm:lora_requests_info`'s labels).
    pub running_loras: Vec<LoraId>,
    pub waiting_loras: Vec<LoraId>,
    /// Running and waiting requests per service tier, indexed by
    /// [`ServiceTier::index`] (they add up to `num_running` and `num_waiting`).
    pub tiers: [TierStats; 3],
}

impl SchedulerStats {
    /// The counts of one tier.
    pub fn tier(&self, tier: ServiceTier) -> TierStats {
        self.tiers[tier.index()]
    }
}

/// Cumulative speculative-decoding counts (vLLM v1's `SpecDecodingStats`): a draft is
/// one request's drafted tokens verified in one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecDecodingStats {
    pub num_drafts: u64,
    pub num_draft_tokens: u64,
    pub num_accepted_tokens: u64,
    /// Accepted drafts by position in the draft (index 0 = first drafted token).
    pub num_accepted_tokens_per_pos: Vec<u64>,
}

impl SpecDecodingStats {
    /// One verified draft of `drafted` tokens whose first `accepted` stood.
    pub fn observe(&mut self, drafted: usize, accepted: usize) {
        self.num_drafts += 1;
        self.num_draft_tokens += drafted as u64;
        self.num_accepted_tokens += accepted as u64;
        if self.num_accepted_tokens_per_pos.len() < drafted {
            self.num_accepted_tokens_per_pos.resize(drafted, 0);
        }
        for n in &mut self.num_accepted_tokens_per_pos[..accepted] {
            *n += 1;
        }
    }

    /// What was counted since `earlier` (a snapshot of the same counts).
    pub fn since(&self, earlier: &SpecDecodingStats) -> SpecDecodingStats {
        let per_pos = |p: usize| {
            let at = |s: &SpecDecodingStats| s.num_accepted_tokens_per_pos.get(p).copied();
            at(self)
                .unwrap_or(0)
                .saturating_sub(at(earlier).unwrap_or(0))
        };
        SpecDecodingStats {
            num_drafts: self.num_drafts.saturating_sub(earlier.num_drafts),
            num_draft_tokens: self
                .num_draft_tokens
                .saturating_sub(earlier.num_draft_tokens),
            num_accepted_tokens: self
                .num_accepted_tokens
                .saturating_sub(earlier.num_accepted_tokens),
            num_accepted_tokens_per_pos: (0..self.num_accepted_tokens_per_pos.len())
                .map(per_pos)
                .collect(),
        }
    }

    /// Accepted over drafted tokens (vLLM's draft acceptance rate, 0–1); NaN before the
    /// first draft.
    pub fn acceptance_rate(&self) -> f64 {
        if self.num_draft_tokens == 0 {
            f64::NAN
        } else {
            self.num_accepted_tokens as f64 / self.num_draft_tokens as f64
        }
    }

    /// Tokens the verification steps emitted (accepted drafts plus one per draft) over
    /// the most they could have emitted (every draft accepted, plus one): vLLM v0's
    /// `system_efficiency`, which with drafts of `k` tokens divides by
    /// `draft_tokens / k * (k + 1)`; NaN before the first draft.
    pub fn efficiency(&self) -> f64 {
        let max = self.num_draft_tokens + self.num_drafts;
        if max == 0 {
            f64::NAN
        } else {
            (self.num_accepted_tokens + self.num_drafts) as f64 / max as f64
        }
    }

    /// Tokens per verification step, the one after the drafts included (vLLM v1's mean
    /// acceptance length); NaN before the first draft.
    pub fn mean_acceptance_length(&self) -> f64 {
        if self.num_drafts == 0 {
            f64::NAN
        } else {
            1.0 + self.num_accepted_tokens as f64 / self.num_drafts as f64
        }
    }

    /// For each of the first `positions` draft positions, the fraction of drafts whose
    /// token there was accepted (vLLM v1's per-position acceptance rate).
    pub fn per_position_rates(&self, positions: usize) -> Vec<f64> {
        (0..positions.max(self.num_accepted_tokens_per_pos.len()))
            .map(|p| {
                let n = self
                    .num_accepted_tokens_per_pos
                    .get(p)
                    .copied()
                    .unwrap_or(0);
                n as f64 / self.num_drafts as f64
            })
            .collect()
    }
}

/// The continuous-batching scheduler: owns every live request and both KV pools.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    block_size: usize,
    requests: HashMap<RequestId, Request>,
    /// Admission order: by tier, then by arrival (fcfs; preempted requests first in their
    /// tier) or by `(priority, arrival, id)` (priority policy).
    waiting: VecDeque<RequestId>,
    /// Requests holding device blocks, in scheduling order.
    running: Vec<RequestId>,
    /// Requests whose KV sits in the host pool: by tier, then oldest first.
    swapped: VecDeque<RequestId>,
    device: KvCacheManager,
    host: KvCacheManager,
    finished_ids: Vec<RequestId>,
    finished: Vec<Request>,
    num_preemptions: u64,
    prefix_queries: u64,
    prefix_hits: u64,
    spec_decoding: SpecDecodingStats,
    // Scheduler delay factor (vLLM v0's `_passed_delay`).
    prev_step_had_prompt: bool,
    prev_step_time: f64,
    last_prompt_latency: f64,
}

impl Scheduler {
    /// # Errors
    /// [`Error::Config`] when the limits cannot work together.
    pub fn new(config: SchedulerConfig, cache: CacheConfig) -> Result<Self, Error> {
        config.validate(&cache)?;
        Ok(Scheduler {
            block_size: cache.block_size,
            device: KvCacheManager::new(
                cache.num_device_blocks,
                cache.block_size,
                cache.enable_prefix_caching,
            ),
            host: KvCacheManager::new(cache.num_host_blocks, cache.block_size, false),
            config,
            requests: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            swapped: VecDeque::new(),
            finished_ids: Vec::new(),
            finished: Vec::new(),
            num_preemptions: 0,
            prefix_queries: 0,
            prefix_hits: 0,
            spec_decoding: SpecDecodingStats::default(),
            prev_step_had_prompt: false,
            prev_step_time: 0.0,
            last_prompt_latency: 0.0,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Queues a request. Its parameters come validated from the server's front end
    /// (`validate` there resolves `max_tokens` and checks the prompt fits); the core
    /// refuses only what depends on its own state, and an empty prompt, which it cannot run.
    ///
    /// # Errors
    /// [`Error::EmptyPrompt`], [`Error::InvalidParams`] (priority without the priority
    /// policy), [`Error::QueueFull`] (retry later) or [`Error::DuplicateRequest`].
    pub fn add_request(&mut self, new: NewRequest) -> Result<(), Error> {
        if new.priority != 0 && self.config.policy != SchedulingPolicy::Priority {
            return Err(Error::InvalidParams(format!(
                "Got priority {} but priority scheduling is not enabled (--scheduling-policy priority)",
                new.priority
            )));
        }
        if new.prompt_token_ids.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if new.lora.is_some() && self.config.max_loras == 0 {
            return Err(Error::InvalidParams(
                "LoRA adapters are not enabled (--enable-lora)".into(),
            ));
        }
        if self.waiting.len() >= self.config.max_waiting {
            return Err(Error::QueueFull {
                waiting: self.waiting.len(),
            });
        }
        if self.requests.contains_key(&new.id) {
            return Err(Error::DuplicateRequest(new.id));
        }
        let req = Request::new(new, self.block_size);
        let id = req.id;
        self.requests.insert(id, req);
        self.enqueue_waiting(id, false);
        Ok(())
    }

    /// Ends a request early (client gone, stop string found); frees its blocks at once.
    /// Returns `false` when the request is unknown or already finished.
    pub fn abort(&mut self, id: RequestId, reason: FinishReason) -> bool {
        if !self.requests.contains_key(&id) {
            return false;
        }
        self.finish(id, reason);
        true
    }

    pub fn request(&self, id: RequestId) -> Option<&Request> {
        self.requests.get(&id)
    }

    /// Device block table of a running request.
    pub fn block_table(&self, id: RequestId) -> &[BlockId] {
        self.device.block_table(id)
    }

    /// True when nothing is waiting, running or swapped.
    pub fn is_idle(&self) -> bool {
        self.requests.is_empty()
    }

    /// Requests finished since the last call, with their final tokens and timestamps.
    pub fn take_finished(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.finished)
    }

    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            num_running: self.running.len(),
            num_waiting: self.waiting.len(),
            num_swapped: self.swapped.len(),
            device_cache_usage: self.device.pool().usage(),
            host_cache_usage: self.host.pool().usage(),
            prefix_cache_queries: self.prefix_queries,
            prefix_cache_hits: self.prefix_hits,
            num_preemptions: self.num_preemptions,
            spec_decoding: self.spec_decoding.clone(),
            running_loras: self.loras_of(self.running.iter()),
            waiting_loras: self.loras_of(self.waiting.iter().chain(&self.swapped)),
            tiers: ServiceTier::ALL.map(|t| TierStats {
                running: self.count_tier(&self.running, t),
                waiting: self.count_tier(&self.waiting, t),
            }),
        }
    }

    /// The tier of the first waiting request whose tier is below its cap (the waiting
    /// queue is in tier order).
    fn first_admissible_waiting_tier(&self, tier_running: &[usize; 3]) -> Option<ServiceTier> {
        self.waiting.iter().map(|&w| self.tier_of(w)).find(|&t| {
            self.config
                .max_num_seqs_per_tier
                .admits(t, tier_running[t.index()])
        })
    }

    /// How many of `ids` are requests of `tier`.
    fn count_tier<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a RequestId>,
        tier: ServiceTier,
    ) -> usize {
        ids.into_iter()
            .filter(|id| self.requests[*id].tier == tier)
            .count()
    }

    fn tier_of(&self, id: RequestId) -> ServiceTier {
        self.requests[&id].tier
    }

    /// The distinct adapters of `ids`, ascending.
    fn loras_of<'a>(&self, ids: impl Iterator<Item = &'a RequestId>) -> Vec<LoraId> {
        let set: BTreeSet<LoraId> = ids.filter_map(|id| self.requests[id].lora).collect();
        set.into_iter().collect()
    }

    /// Whether a request of adapter `lora` may join the running ones: its adapter is
    /// already among `running`, or `running` has fewer than `--max-loras` adapters.
    fn lora_fits(&self, running: &BTreeSet<LoraId>, lora: Option<LoraId>) -> bool {
        lora.is_none_or(|l| running.contains(&l) || running.len() < self.config.max_loras)
    }

    /// Free and total blocks of the device and host pools (for leak checks).
    pub fn pool_free_blocks(&self) -> ((usize, usize), (usize, usize)) {
        let (d, h) = (self.device.pool(), self.host.pool());
        (
            (d.num_free(), d.num_blocks()),
            (h.num_free(), h.num_blocks()),
        )
    }

    /// Checks both pools and that each request's queue matches where its blocks are.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.device.check_invariants()?;
        self.host.check_invariants()?;
        for (id, r) in &self.requests {
            let (dev, host) = (
                self.device.block_table(*id).len(),
                self.host.block_table(*id).len(),
            );
            let ok = match r.status {
                RequestStatus::Running => {
                    self.running.contains(id)
                        && host == 0
                        && dev * self.block_size >= r.num_computed_tokens
                }
                RequestStatus::Waiting => {
                    self.waiting.contains(id) && dev == 0 && host == 0 && r.num_computed_tokens == 0
                }
                RequestStatus::Swapped => self.swapped.contains(id) && dev == 0 && host > 0,
                RequestStatus::Finished(_) => false,
            };
            if !ok {
                return Err(format!(
                    "request {id} ({:?}) has {dev} device / {host} host blocks",
                    r.status
                ));
            }
        }
        let running_loras = self.loras_of(self.running.iter()).len();
        if self.config.max_loras > 0 && running_loras > self.config.max_loras {
            return Err(format!(
                "{running_loras} adapters run at once, more than --max-loras {}",
                self.config.max_loras
            ));
        }
        let queued = self.running.len() + self.waiting.len() + self.swapped.len();
        if queued != self.requests.len() {
            return Err(format!(
                "{queued} queued but {} requests live",
                self.requests.len()
            ));
        }
        if self.device.num_tables() > self.running.len()
            || self.host.num_tables() != self.swapped.len()
        {
            return Err("a block table outlives its request".into());
        }
        for tier in ServiceTier::ALL {
            let running = self.count_tier(&self.running, tier);
            if let Some(cap) = self.config.max_num_seqs_per_tier.get(tier)
                && running > cap
            {
                return Err(format!(
                    "{running} {tier} requests run, more than --max-num-seqs-per-tier {tier}={cap}"
                ));
            }
        }
        for (name, queue) in [("waiting", &self.waiting), ("swapped", &self.swapped)] {
            if !queue
                .iter()
                .zip(queue.iter().skip(1))
                .all(|(a, b)| self.tier_of(*a) <= self.tier_of(*b))
            {
                return Err(format!("the {name} queue is not ordered by tier"));
            }
        }
        Ok(())
    }

    /// Plans one step at time `now` (seconds, the same clock as arrival times).
    pub fn schedule(&mut self, now: f64) -> SchedulerOutput {
        let mut out = SchedulerOutput {
            finished: std::mem::take(&mut self.finished_ids),
            ..Default::default()
        };
        let mut budget = self.config.max_num_batched_tokens;
        let mut preempted = false;
        if self.prev_step_had_prompt {
            self.last_prompt_latency = now - self.prev_step_time;
        }
        self.prev_step_time = now;
        self.prev_step_had_prompt = false;

        // 1. Running requests: one more chunk or token each, preempting when KV runs out.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let req = &self.requests[&id];
            let remaining = req.num_tokens() - req.num_computed_tokens;
            if !self.config.enable_chunked_prefill && remaining > budget {
                i += 1;
                continue;
            }
            // A decoding request verifies its drafts in the same step, as far as the
            // budget goes.
            let drafts = if remaining == 1 {
                self.draft_room(req)
            } else {
                0
            };
            let num_new = chunk_len(&self.config, req, remaining + drafts, budget);
            let slots = num_new + self.lookahead(req, req.num_computed_tokens + num_new);
            let scheduled = loop {
                if self
                    .device
                    .allocate_slots(&self.requests[&id], slots, &CacheHit::default())
                {
                    break true;
                }
                let victim = self.pick_victim();
                let pos = self
                    .running
                    .iter()
                    .position(|&r| r == victim)
                    .expect("invariant: victim runs");
                if let Some(k) = out.scheduled.iter().position(|s| s.id == victim) {
                    budget += out.scheduled.remove(k).num_tokens;
                }
                self.preempt(victim, &mut out);
                preempted = true;
                if victim == id {
                    break false;
                }
                if pos < i {
                    i -= 1;
                }
            };
            if scheduled {
                out.scheduled.push(self.scheduled(id, num_new));
                budget -= num_new;
                i += 1;
            }
        }

        // Adapters of the running requests: requests of others join while fewer than
        // `--max-loras` are in use.
        let mut running_loras: BTreeSet<LoraId> =
            self.loras_of(self.running.iter()).into_iter().collect();

        // Running requests per tier, for `--max-num-seqs-per-tier`.
        let mut tier_running = ServiceTier::ALL.map(|t| self.count_tier(&self.running, t));

        // 2. Swapped requests come back before new ones of their tier or a less
        // important one are admitted; a tier at its cap is passed over.
        if !preempted {
            let mut next = 0;
            while let Some(&id) = self.swapped.get(next) {
                if self.running.len() >= self.config.max_num_seqs || budget == 0 {
                    break;
                }
                let req = &self.requests[&id];
                // A more important waiting request its cap lets in goes first (and may
                // preempt this one's tier: it must not find it freshly swapped in).
                if !self.lora_fits(&running_loras, req.lora)
                    || self
                        .first_admissible_waiting_tier(&tier_running)
                        .is_some_and(|w| w < req.tier)
                {
                    break;
                }
                if !self
                    .config
                    .max_num_seqs_per_tier
                    .admits(req.tier, tier_running[req.tier.index()])
                {
                    next += 1;
                    continue;
                }
                let host_blocks = self.host.block_table(id).len();
                let num_new = chunk_len(
                    &self.config,
                    req,
                    req.num_tokens() - req.num_computed_tokens,
                    budget,
                );
                let slots = num_new + self.lookahead(req, req.num_computed_tokens + num_new);
                let total_blocks = (req.num_computed_tokens + slots).div_ceil(self.block_size);
                if total_blocks.max(host_blocks) > self.device.pool().num_free() {
                    break;
                }
                running_loras.extend(req.lora);
                tier_running[req.tier.index()] += 1;
                self.swapped.remove(next);
                self.swap_in(id, &mut out);
                let ok =
                    self.device
                        .allocate_slots(&self.requests[&id], slots, &CacheHit::default());
                debug_assert!(ok, "invariant: room was checked before swap-in");
                self.running.push(id);
                out.scheduled.push(self.scheduled(id, num_new));
                budget -= num_new;
            }
        }

        // 3. Waiting requests, when nothing was preempted, in tier order; none while a
        // request of its tier or a more important one is still swapped out.
        if !preempted && self.passed_delay(now) {
            // Requests whose adapter has no slot or whose tier is at its cap keep their
            // place and are passed over (vLLM's skipped waiting requests); the others go
            // in order. One that finds no room takes it from a less important tier.
            let mut next = 0;
            while let Some(&id) = self.waiting.get(next) {
                if budget == 0 {
                    break;
                }
                let req = &self.requests[&id];
                let tier = req.tier;
                if self
                    .swapped
                    .front()
                    .is_some_and(|&s| self.tier_of(s) <= tier)
                {
                    break;
                }
                if !self.lora_fits(&running_loras, req.lora)
                    || !self
                        .config
                        .max_num_seqs_per_tier
                        .admits(tier, tier_running[tier.index()])
                {
                    next += 1;
                    continue;
                }
                if self.running.len() >= self.config.max_num_seqs {
                    if self.preempt_for_admission(tier, &mut out, &mut budget) {
                        tier_running = ServiceTier::ALL.map(|t| self.count_tier(&self.running, t));
                        running_loras = self.loras_of(self.running.iter()).into_iter().collect();
                        continue;
                    }
                    break;
                }
                // Prompt logprobs need logits at every prompt position: no cached prefix.
                let hit = if req.needs_prompt_logits() {
                    CacheHit::default()
                } else {
                    self.device.find_cache_hit(req)
                };
                let remaining = req.num_tokens() - hit.num_tokens;
                if !self.config.enable_chunked_prefill && remaining > budget {
                    break;
                }
                let num_new = chunk_len(&self.config, req, remaining, budget);
                let lookahead = self.lookahead(req, hit.num_tokens + num_new);
                if !self.device.allocate_slots(req, num_new + lookahead, &hit) {
                    if self.preempt_for_admission(tier, &mut out, &mut budget) {
                        tier_running = ServiceTier::ALL.map(|t| self.count_tier(&self.running, t));
                        running_loras = self.loras_of(self.running.iter()).into_iter().collect();
                        continue;
                    }
                    break;
                }
                self.waiting.remove(next);
                running_loras.extend(req.lora);
                tier_running[tier.index()] += 1;
                self.prefix_queries += req.num_tokens() as u64;
                self.prefix_hits += hit.num_tokens as u64;
                let req = self
                    .requests
                    .get_mut(&id)
                    .expect("invariant: queued requests exist");
                req.num_computed_tokens = hit.num_tokens;
                req.status = RequestStatus::Running;
                if req.first_scheduled_time.is_none() {
                    req.first_scheduled_time = Some(now);
                    req.num_cached_tokens = hit.num_tokens;
                }
                self.running.push(id);
                out.scheduled.push(self.scheduled(id, num_new));
                budget -= num_new;
                self.prev_step_had_prompt = true;
            }
        }

        // The planned tokens count as computed from here on (vLLM v1's `_update_after_schedule`).
        // Drafts too: `update_from_output` rolls back the rejected ones.
        for s in &out.scheduled {
            let req = self
                .requests
                .get_mut(&s.id)
                .expect("invariant: scheduled requests exist");
            req.num_computed_tokens = s.start + s.num_tokens;
            req.num_scheduled_drafts = s.draft_tokens.len();
        }
        out.num_batched_tokens = self.config.max_num_batched_tokens - budget;
        out
    }

    /// Appends the sampled tokens, applies stop conditions and finishes requests. A
    /// request that verified drafts gets its accepted drafts and the token after them
    /// (consecutive entries); the KV of its rejected drafts is rolled back, and a stop
    /// condition met mid-way drops the tokens after it.
    pub fn update_from_output(&mut self, sampled: &[SampledToken], now: f64) -> Vec<RequestOutput> {
        let mut outputs = Vec::with_capacity(sampled.len());
        for group in sampled.chunk_by(|a, b| a.id == b.id) {
            let id = group[0].id;
            let Some(req) = self.requests.get_mut(&id) else {
                continue;
            };
            if req.status != RequestStatus::Running {
                continue;
            }
            let drafted = std::mem::take(&mut req.num_scheduled_drafts);
            req.draft_token_ids.clear();
            debug_assert!(
                group.len() <= drafted + 1,
                "at most the drafts and one more"
            );
            if drafted > 0 {
                let accepted = (group.len() - 1).min(drafted);
                req.num_computed_tokens -= drafted - accepted;
                self.spec_decoding.observe(drafted, accepted);
            }
            for s in group {
                let req = self
                    .requests
                    .get_mut(&id)
                    .expect("invariant: the request is live until it finishes");
                req.append_token(s.token, self.block_size);
                req.first_token_time.get_or_insert(now);
                let prev_token_time = req.last_token_time.replace(now);
                let stop = if s.forced_end {
                    let eos = self.config.eos_token_ids.contains(&s.token);
                    Some((FinishReason::Stop, eos.then_some(StopReason::Eos(s.token))))
                } else {
                    check_stop(
                        req,
                        s.token,
                        &self.config.eos_token_ids,
                        self.config.max_model_len,
                    )
                };
                let (finish, stop_reason) = match stop {
                    Some((finish, stop_reason)) => (Some(finish), stop_reason),
                    None => (None, None),
                };
                outputs.push(RequestOutput {
                    id,
                    token: s.token,
                    logprobs: s.logprobs.clone(),
                    finish,
                    stop_reason,
                    arrival_time: req.arrival_time,
                    prev_token_time,
                    num_prompt_tokens: req.num_prompt_tokens(),
                });
                if let Some(reason) = finish {
                    self.finish(id, reason);
                    break;
                }
            }
        }
        outputs
    }

    /// Sets the drafts request `id` verifies at its next step (speculative decoding;
    /// the runner proposes them). Ignored for requests that are not running.
    pub fn set_draft_tokens(&mut self, id: RequestId, drafts: Vec<u32>) {
        if let Some(req) = self.requests.get_mut(&id)
            && req.status == RequestStatus::Running
        {
            req.draft_token_ids = drafts;
        }
    }

    /// Extra KV slots for a request whose step ends at position `end`: the lookahead
    /// when the step reaches its last token (it samples, then a draft model drafts),
    /// never past the context length (no draft is useful there, and a pool that holds
    /// `max_model_len` tokens must always fit one request).
    fn lookahead(&self, req: &Request, end: usize) -> usize {
        if end >= req.num_tokens() {
            self.config
                .num_lookahead_tokens
                .min(self.config.max_model_len.saturating_sub(end))
        } else {
            0
        }
    }

    /// How many of a decoding request's drafts are worth computing: every token after
    /// its last would pass `max_tokens` or the context length.
    fn draft_room(&self, req: &Request) -> usize {
        let by_tokens = req
            .params
            .max_tokens
            .saturating_sub(req.num_output_tokens() + 1);
        let by_len = self
            .config
            .max_model_len
            .saturating_sub(req.num_tokens() + 1);
        req.draft_token_ids.len().min(by_tokens).min(by_len)
    }

    /// The plan entry of `num_tokens` new tokens; those past the request's own
    /// tokens are its drafts.
    fn scheduled(&self, id: RequestId, num_tokens: usize) -> ScheduledRequest {
        let req = &self.requests[&id];
        let start = req.num_computed_tokens;
        let known = num_tokens.min(req.num_tokens() - start);
        ScheduledRequest {
            id,
            start,
            num_tokens,
            sample: start + known == req.num_tokens(),
            draft_tokens: req.draft_token_ids[..num_tokens - known].to_vec(),
        }
    }

    /// The running request to preempt: of the least important tier running, the newest
    /// (fcfs) or the least important by priority (priority).
    fn pick_victim(&self) -> RequestId {
        self.victim_below(None).expect("invariant: a request runs")
    }

    /// [`Self::pick_victim`]'s choice among the running requests of a tier less
    /// important than `tier` (all of them for `None`).
    fn victim_below(&self, tier: Option<ServiceTier>) -> Option<RequestId> {
        let candidates = self
            .running
            .iter()
            .copied()
            .filter(|&id| tier.is_none_or(|t| self.tier_of(id) > t));
        match self.config.policy {
            // `max_by_key` returns the last of equal maxima: the newest of the tier.
            SchedulingPolicy::Fcfs => candidates.max_by_key(|&id| self.tier_of(id)),
            SchedulingPolicy::Priority => candidates.max_by(|&a, &b| {
                self.order_key(a)
                    .partial_cmp(&self.order_key(b))
                    .expect("finite")
            }),
        }
    }

    /// Makes room for a waiting request of `tier` by preempting a running request of a
    /// less important tier (as [`Self::pick_victim`] picks); its tokens planned this
    /// step go back to `budget`. `false` when no such request runs.
    fn preempt_for_admission(
        &mut self,
        tier: ServiceTier,
        out: &mut SchedulerOutput,
        budget: &mut usize,
    ) -> bool {
        let Some(victim) = self.victim_below(Some(tier)) else {
            return false;
        };
        if let Some(k) = out.scheduled.iter().position(|s| s.id == victim) {
            *budget += out.scheduled.remove(k).num_tokens;
        }
        self.preempt(victim, out);
        true
    }

    fn order_key(&self, id: RequestId) -> (ServiceTier, i32, f64, RequestId) {
        let r = &self.requests[&id];
        (r.tier, r.priority, r.arrival_time, id)
    }

    /// Swaps the victim out to the host pool when it fits there, else drops its KV to recompute later.
    fn preempt(&mut self, id: RequestId, out: &mut SchedulerOutput) {
        self.running.retain(|&r| r != id);
        self.num_preemptions += 1;
        let req = self
            .requests
            .get_mut(&id)
            .expect("invariant: running requests exist");
        req.draft_token_ids.clear();
        req.num_scheduled_drafts = 0;
        let n = self.device.block_table(id).len();
        if let Some(host_table) = self.host.allocate_table(id, n) {
            out.swap_out.extend(
                self.device
                    .block_table(id)
                    .iter()
                    .copied()
                    .zip(host_table.iter().copied()),
            );
            self.device.free(id);
            let req = self
                .requests
                .get_mut(&id)
                .expect("invariant: running requests exist");
            req.status = RequestStatus::Swapped;
            req.num_preemptions += 1;
            let tier = req.tier;
            let pos = self.swapped.partition_point(|&s| self.tier_of(s) <= tier);
            self.swapped.insert(pos, id);
        } else {
            self.device.free(id);
            let req = self
                .requests
                .get_mut(&id)
                .expect("invariant: running requests exist");
            req.status = RequestStatus::Waiting;
            req.num_computed_tokens = 0;
            req.num_preemptions += 1;
            self.enqueue_waiting(id, true);
        }
    }

    fn swap_in(&mut self, id: RequestId, out: &mut SchedulerOutput) {
        let n = self.host.block_table(id).len();
        let device_table = self
            .device
            .allocate_table(id, n)
            .expect("invariant: room was checked before swap-in");
        out.swap_in.extend(
            self.host
                .block_table(id)
                .iter()
                .copied()
                .zip(device_table.iter().copied()),
        );
        self.host.free(id);
        let req = self
            .requests
            .get_mut(&id)
            .expect("invariant: swapped requests exist");
        req.status = RequestStatus::Running;
        let req = &self.requests[&id];
        self.device.cache_restored(req);
    }

    /// Queues a request in tier order: under fcfs last of its tier, or first when it
    /// was preempted; under priority by [`Self::order_key`].
    fn enqueue_waiting(&mut self, id: RequestId, preempted: bool) {
        let tier = self.tier_of(id);
        let pos = match self.config.policy {
            SchedulingPolicy::Fcfs if preempted => {
                self.waiting.partition_point(|&w| self.tier_of(w) < tier)
            }
            SchedulingPolicy::Fcfs => self.waiting.partition_point(|&w| self.tier_of(w) <= tier),
            SchedulingPolicy::Priority => {
                let key = self.order_key(id);
                self.waiting.partition_point(|&w| self.order_key(w) < key)
            }
        };
        self.waiting.insert(pos, id);
    }

    /// vLLM's scheduler delay: hold prompts until the oldest waited `delay_factor` × the last prompt step.
    fn passed_delay(&self, now: f64) -> bool {
        if self.config.delay_factor <= 0.0 || self.waiting.is_empty() || self.running.is_empty() {
            return true;
        }
        let earliest = self
            .waiting
            .iter()
            .map(|id| self.requests[id].arrival_time)
            .fold(f64::INFINITY, f64::min);
        now - earliest > self.config.delay_factor * self.last_prompt_latency
    }

    fn finish(&mut self, id: RequestId, reason: FinishReason) {
        let Some(mut req) = self.requests.remove(&id) else {
            return;
        };
        match req.status {
            RequestStatus::Running => self.running.retain(|&r| r != id),
            RequestStatus::Waiting => self.waiting.retain(|&r| r != id),
            RequestStatus::Swapped => self.swapped.retain(|&r| r != id),
            RequestStatus::Finished(_) => {}
        }
        self.device.free(id);
        self.host.free(id);
        req.status = RequestStatus::Finished(reason);
        self.finished_ids.push(id);
        self.finished.push(req);
    }
}

/// vLLM's stop check after appending `token`: EOS / stop ids (after `min_tokens`), then
/// length. A stop says which token matched.
/// Most prompt positions a `prompt_logprobs` request computes per step when prefill is
/// chunked: each needs a whole vocabulary row of logits (a 152k vocabulary makes 512 rows
/// about 310 MB), so its prompt goes in slices however large the step budget.
pub const MAX_PROMPT_LOGITS_PER_STEP: usize = 512;

/// Tokens `req` computes this step: what remains of it within `budget`, and no more than
/// [`MAX_PROMPT_LOGITS_PER_STEP`] while its prompt's logits are wanted.
fn chunk_len(config: &SchedulerConfig, req: &Request, remaining: usize, budget: usize) -> usize {
    let n = remaining.min(budget);
    if config.enable_chunked_prefill && req.needs_prompt_logits() {
        n.min(MAX_PROMPT_LOGITS_PER_STEP)
    } else {
        n
    }
}

fn check_stop(
    req: &Request,
    token: u32,
    eos_token_ids: &[u32],
    max_model_len: usize,
) -> Option<(FinishReason, Option<StopReason>)> {
    let p = &req.params;
    let n = req.num_output_tokens();
    if n >= p.min_tokens {
        if !p.ignore_eos && eos_token_ids.contains(&token) {
            return Some((FinishReason::Stop, Some(StopReason::Eos(token))));
        }
        if p.stop_token_ids.contains(&token) {
            return Some((FinishReason::Stop, Some(StopReason::StopToken(token))));
        }
    }
    if n >= p.max_tokens || req.num_tokens() >= max_model_len {
        return Some((FinishReason::Length, None));
    }
    None
}
