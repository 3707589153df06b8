//! One request as the scheduler tracks it: its tokens, how many have KV computed,
//! its lifecycle status, the timestamps vLLM's metrics are defined on, and the
//! chained hashes of its full blocks (the prefix-cache keys).

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::{SamplingParams, ServiceTier};

/// Engine-internal request id (the server maps API ids onto these).
pub type RequestId = u64;

/// Chained hash of a full block: hash(parent block's hash, this block's token ids).
pub type BlockHash = u64;

/// A LoRA adapter's engine-wide id (the server maps adapter names onto these; vLLM's
/// `lora_int_id`).
pub type LoraId = u32;

/// Why a request ended; the label values of `vllm:request_success_total{finished_reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// EOS, a stop token id or a stop string.
    Stop,
    /// `max_tokens` or the model's context length reached.
    Length,
    /// Aborted: client disconnect or shutdown.
    Abort,
}

impl FinishReason {
    /// The OpenAI `finish_reason` / vLLM label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// Which stop condition ended a request with [`FinishReason::Stop`] (vLLM's
/// `stop_reason`, for the conditions the core checks; stop strings are the server's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// One of the model's EOS ids (`stop_reason` is `null` in vLLM's answers).
    Eos(u32),
    /// One of the request's `stop_token_ids`.
    StopToken(u32),
}

impl StopReason {
    /// The token that ended the request.
    pub fn token(self) -> u32 {
        match self {
            StopReason::Eos(t) | StopReason::StopToken(t) => t,
        }
    }
}

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    /// Queued, no KV blocks (also after preemption by recompute).
    Waiting,
    /// Has device KV blocks and is scheduled each step.
    Running,
    /// Preempted by swapping: its KV sits in the host pool.
    Swapped,
    /// Done; the reason is final.
    Finished(FinishReason),
}

/// What the server hands the engine for one sequence.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: RequestId,
    pub prompt_token_ids: Vec<u32>,
    pub params: SamplingParams,
    /// Lower runs first under the `priority` policy (vLLM's convention), within a tier.
    pub priority: i32,
    /// The service tier: the first ordering key under either policy.
    pub tier: ServiceTier,
    /// Arrival time in seconds on the engine's monotonic clock.
    pub arrival_time: f64,
    /// The LoRA adapter it runs with (`None`: the base model).
    pub lora: Option<LoraId>,
}

/// A request inside the scheduler.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: RequestId,
    /// Prompt followed by generated tokens.
    token_ids: Vec<u32>,
    num_prompt_tokens: usize,
    pub params: SamplingParams,
    pub priority: i32,
    pub tier: ServiceTier,
    /// The LoRA adapter it runs with; part of its block hashes, so two adapters never
    /// share cached KV.
    pub lora: Option<LoraId>,
    pub status: RequestStatus,
    /// Tokens whose KV is in the cache; the runner computes `token_ids[num_computed_tokens..]`.
    pub num_computed_tokens: usize,
    /// Prompt tokens served from the prefix cache when first scheduled.
    pub num_cached_tokens: usize,
    /// Chained hashes of every full block of `token_ids`.
    block_hashes: Vec<BlockHash>,
    pub num_preemptions: usize,
    pub arrival_time: f64,
    /// First time the request got KV blocks and was scheduled.
    pub first_scheduled_time: Option<f64>,
    pub first_token_time: Option<f64>,
    pub last_token_time: Option<f64>,
    /// Speculative draft tokens proposed for the next step (not part of `token_ids`).
    pub(crate) draft_token_ids: Vec<u32>,
    /// How many of `draft_token_ids` the current step computes (set by `schedule`).
    pub(crate) num_scheduled_drafts: usize,
}

impl Request {
    pub(crate) fn new(new: NewRequest, block_size: usize) -> Self {
        let mut req = Request {
            id: new.id,
            num_prompt_tokens: new.prompt_token_ids.len(),
            token_ids: new.prompt_token_ids,
            params: new.params,
            priority: new.priority,
            tier: new.tier,
            lora: new.lora,
            status: RequestStatus::Waiting,
            num_computed_tokens: 0,
            num_cached_tokens: 0,
            block_hashes: Vec::new(),
            num_preemptions: 0,
            arrival_time: new.arrival_time,
            first_scheduled_time: None,
            first_token_time: None,
            last_token_time: None,
            draft_token_ids: Vec::new(),
            num_scheduled_drafts: 0,
        };
        req.update_block_hashes(block_size);
        req
    }

    /// Prompt and output tokens, in order.
    pub fn token_ids(&self) -> &[u32] {
        &self.token_ids
    }

    pub fn prompt_token_ids(&self) -> &[u32] {
        &self.token_ids[..self.num_prompt_tokens]
    }

    pub fn output_token_ids(&self) -> &[u32] {
        &self.token_ids[self.num_prompt_tokens..]
    }

    /// True while the prompt's own logits are still wanted (`prompt_logprobs`, before
    /// the first output token; a recomputation after preemption wants none).
    pub fn needs_prompt_logits(&self) -> bool {
        self.params.prompt_logprobs.is_some() && self.output_token_ids().is_empty()
    }

    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    pub fn num_prompt_tokens(&self) -> usize {
        self.num_prompt_tokens
    }

    pub fn num_output_tokens(&self) -> usize {
        self.token_ids.len() - self.num_prompt_tokens
    }

    /// Draft tokens waiting to be verified at the next step (speculative decoding).
    pub fn draft_token_ids(&self) -> &[u32] {
        &self.draft_token_ids
    }

    pub fn block_hashes(&self) -> &[BlockHash] {
        &self.block_hashes
    }

    /// Appends a sampled token and extends the block hashes when a block fills.
    pub(crate) fn append_token(&mut self, token: u32, block_size: usize) {
        self.token_ids.push(token);
        self.update_block_hashes(block_size);
    }

    fn update_block_hashes(&mut self, block_size: usize) {
        let full = self.token_ids.len() / block_size;
        while self.block_hashes.len() < full {
            let i = self.block_hashes.len();
            // The first block chains from the adapter: equal tokens under different
            // adapters have different K/V.
            let parent = match i.checked_sub(1) {
                Some(p) => Some(self.block_hashes[p]),
                None => self.lora.map(lora_root),
            };
            let tokens = &self.token_ids[i * block_size..(i + 1) * block_size];
            self.block_hashes.push(hash_block(parent, tokens));
        }
    }
}

/// The parent hash of a LoRA request's first block.
fn lora_root(lora: LoraId) -> BlockHash {
    let mut h = DefaultHasher::new();
    ("lora", lora).hash(&mut h);
    h.finish()
}

/// Chained block hash: equal hashes mean equal token prefixes (up to 64-bit collisions).
pub fn hash_block(parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(tokens: Vec<u32>) -> Request {
        Request::new(
            NewRequest {
                id: 1,
                prompt_token_ids: tokens,
                params: SamplingParams::greedy(4),
                priority: 0,
                tier: ServiceTier::Default,
                arrival_time: 0.0,
                lora: None,
            },
            4,
        )
    }

    #[test]
    fn block_hashes_cover_full_blocks_and_chain() {
        let mut r = req((0..9).collect());
        assert_eq!(r.block_hashes().len(), 2);
        for t in 0..3 {
            r.append_token(100 + t, 4);
        }
        assert_eq!(r.block_hashes().len(), 3);
        // Same tokens in block 1 but a different block 0 must hash differently.
        let other = req([9, 9, 9, 9, 4, 5, 6, 7].to_vec());
        assert_ne!(other.block_hashes()[1], r.block_hashes()[1]);
        let same = req((0..8).collect());
        assert_eq!(same.block_hashes(), &r.block_hashes()[..2]);
    }

    #[test]
    fn adapters_never_share_block_hashes() {
        let with = |lora| {
            Request::new(
                NewRequest {
                    lora,
                    ..req((0..8).collect()).into_new()
                },
                4,
            )
        };
        let (base, a, b) = (with(None), with(Some(1)), with(Some(2)));
        assert_eq!(base.block_hashes(), req((0..8).collect()).block_hashes());
        for (x, y) in [(&base, &a), (&a, &b), (&base, &b)] {
            for (hx, hy) in x.block_hashes().iter().zip(y.block_hashes()) {
                assert_ne!(hx, hy, "every block differs, not only the first");
            }
        }
        assert_eq!(a.block_hashes(), with(Some(1)).block_hashes());
    }

    impl Request {
        fn into_new(self) -> NewRequest {
            NewRequest {
                id: self.id,
                prompt_token_ids: self.token_ids,
                params: self.params,
                priority: self.priority,
                tier: self.tier,
                arrival_time: self.arrival_time,
                lora: self.lora,
            }
        }
    }
}
