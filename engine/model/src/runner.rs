//! The model runner: owns the model, the device KV pool, the host (swap) pool
//! and each request's RNG, and executes one scheduler step.
//!
//! The glue to the scheduler is deliberately thin: the server turns a
//! `SchedulerOutput` into [`StepSeq`]s (tokens, start, block table, whether to
//! sample and with what history) and calls [`ModelRunner::execute`], which
//! copies swap-out blocks (device → host), then swap-in blocks (host →
//! device), runs one forward pass over the flattened batch and samples one
//! token per sampling sequence. Finished requests must be passed to
//! [`ModelRunner::finish`] so their RNG state is dropped.
//!
//! Two execution paths ([`ExecPath`]): Candela's own CPU kernels on host
//! buffers ([`Llama`] + [`PagedKvCache`]), or candle tensor ops on a device
//! ([`DeviceLlama`] + [`DeviceKvCache`]; CUDA in production, the CPU device in
//! tests). Swapping, sampling and RNG handling are the same for both.
//!
//! Speculative decoding: a [`StepSeq`] may carry drafts after its last token. The
//! forward pass then returns a logits row at each of those positions, and
//! [`Sampler::verify_drafts`] keeps the drafts the target would have produced (greedy) or
//! accepts them by the speculative-sampling rule (sampled), emitting the accepted drafts
//! plus one token. With a [`Drafter`] set, the runner proposes each sampled request's next
//! drafts right after (prompt lookup, or a [`DraftModel`]), paced per request by
//! [`DraftPacer`]; the scheduler picks them up through [`ModelRunner::take_draft_tokens`].
//!
//! LoRA: a request given an adapter ([`ModelRunner::set_lora`]) runs every step with it;
//! the forward pass adds each adapter's low-rank update to its own rows only
//! ([`crate::lora::LoraRows`]), so requests of several adapters and the base share a batch.
//! The device path refuses adapters.
//!
//! RNG: a request with `seed` gets `StdRng::seed_from_u64(seed)` at its first
//! sampled token and keeps it (also across preemption) until it finishes;
//! others get a seed drawn from the runner's own OS-seeded stream.

use std::collections::HashMap;
use std::sync::Arc;

use candela_core::spec_decode::{DraftPacer, NgramConfig, propose_ngram};
use candela_core::{PromptLogprob, RequestId, SampledToken, SamplingParams, TokenConstraint};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use candle_core::{Device, Tensor};

use crate::batch::{ForwardBatch, SeqInput};
use crate::device_kv::DeviceKvCache;
use crate::device_llama::DeviceLlama;
use crate::draft::{DraftModel, DraftRequest};
use crate::kv_cache::PagedKvCache;
use crate::llama::Llama;
use crate::lora::{LoraAdapter, LoraRows};
use crate::sampler::Sampler;
use crate::{Error, Result};

/// What a sampling sequence needs besides its logits.
#[derive(Debug, Clone, Copy)]
pub struct SampleArgs<'a> {
    pub params: &'a SamplingParams,
    /// The prompt's token ids (repetition penalty).
    pub prompt: &'a [u32],
    /// Tokens generated so far (penalties, min_tokens).
    pub output: &'a [u32],
    /// The model's EOS ids, masked while `output` is shorter than `min_tokens`
    /// (the scheduler's config holds them).
    pub eos: &'a [u32],
}

/// One request's share of a step.
#[derive(Debug, Clone, Copy)]
pub struct StepSeq<'a> {
    pub id: RequestId,
    /// Tokens whose K/V is computed this step.
    pub tokens: &'a [u32],
    /// Speculative drafts computed after `tokens` (only with `sample`): verified in
    /// order, the accepted ones come out with the token after them.
    pub draft: &'a [u32],
    /// Tokens already in the cache (position of `tokens[0]`).
    pub start: usize,
    /// Device blocks covering `start + tokens.len()` tokens.
    pub block_table: &'a [u32],
    /// `Some` when this step reaches the end of the known tokens.
    pub sample: Option<SampleArgs<'a>>,
    /// `Some` while the request wants its prompt's log-probabilities: logits are
    /// computed at every position of this step's tokens.
    pub prompt_logprobs: Option<PromptLogprobsArgs<'a>>,
}

/// The prompt log-probabilities one step computed for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptLogprobsChunk {
    pub id: RequestId,
    /// Index of `logprobs[0]` in the request's whole list (entry `k` is prompt token
    /// `k + 1`'s): the step's first position. A prompt recomputed after preemption
    /// starts again from 0, replacing what came before.
    pub start: usize,
    pub logprobs: Vec<PromptLogprob>,
}

/// What a sequence needs for `prompt_logprobs`.
#[derive(Debug, Clone, Copy)]
pub struct PromptLogprobsArgs<'a> {
    /// Alternatives per prompt token.
    pub top: usize,
    /// The whole prompt (a step's last position predicts the next step's first token).
    pub prompt: &'a [u32],
}

/// How the runner proposes speculative drafts after sampling.
#[derive(Debug)]
pub enum Drafter {
    /// Prompt lookup in the request's own context.
    Ngram(NgramConfig),
    /// A smaller model with the same tokenizer.
    Model(Box<DraftModel>),
}

impl Drafter {
    /// Most tokens drafted per request and step.
    pub fn num_speculative_tokens(&self) -> usize {
        match self {
            Drafter::Ngram(cfg) => cfg.num_speculative_tokens,
            Drafter::Model(m) => m.num_speculative_tokens(),
        }
    }
}

/// A request to draft for after this step.
struct ToDraft<'a> {
    id: RequestId,
    /// Its tokens so far, this step's included.
    context: Vec<u32>,
    block_table: &'a [u32],
    /// Where this step started (the draft model detects recomputation by it).
    target_start: usize,
    /// How many tokens its pacer wants.
    len: usize,
}

/// Sizes of the two KV pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerConfig {
    pub num_device_blocks: usize,
    pub num_host_blocks: usize,
    pub block_size: usize,
}

/// Where a [`ModelRunner`] runs the forward pass.
#[derive(Debug, Clone)]
pub enum ExecPath {
    /// Candela's CPU kernels (quantized matmuls, paged attention) on host memory.
    Cpu,
    /// candle's tensor ops ([`DeviceLlama`]) on this device: CUDA for
    /// `--device cuda`; the CPU device runs the same code (tests).
    CandleOps(Device),
}

/// The model, the pool its forward pass reads and writes, and the host pool
/// preempted sequences swap to (of the device pool's element type).
#[derive(Debug)]
enum Backend {
    Cpu {
        model: Llama,
        cache: PagedKvCache<half::f16>,
        host: PagedKvCache<half::f16>,
    },
    CandleOps {
        model: DeviceLlama,
        cache: DeviceKvCache,
        host: PagedKvCache<f32>,
    },
}

/// Executes engine steps against one model and its KV pools.
#[derive(Debug)]
pub struct ModelRunner {
    backend: Backend,
    block_size: usize,
    rngs: HashMap<RequestId, StdRng>,
    /// Structured-output constraints of the requests that have one.
    constraints: HashMap<RequestId, Box<dyn TokenConstraint>>,
    /// The LoRA adapter of each request that runs with one.
    loras: HashMap<RequestId, Arc<LoraAdapter>>,
    /// Prompt log-probabilities computed since the last [`ModelRunner::take_prompt_logprobs`].
    prompt_logprobs: Vec<PromptLogprobsChunk>,
    /// Speculative decoding's proposer, when it is on.
    drafter: Option<Drafter>,
    /// Per request: how long its drafts are, and pauses while they keep failing.
    pacers: HashMap<RequestId, DraftPacer>,
    /// Drafts proposed since the last [`ModelRunner::take_draft_tokens`].
    drafts: Vec<(RequestId, Vec<u32>)>,
    seeder: StdRng,
    sampler: Sampler,
}

impl ModelRunner {
    /// A runner on Candela's CPU kernels; allocates both pools (lazily backed memory).
    pub fn new(model: Llama, cfg: RunnerConfig) -> Self {
        let cache = model.new_cache(cfg.num_device_blocks, cfg.block_size);
        let host = model.new_cache(cfg.num_host_blocks, cfg.block_size);
        Self::with_backend(Backend::Cpu { model, cache, host }, cfg)
    }

    /// A runner on `path`: for [`ExecPath::CandleOps`] the weights are copied to the
    /// device (and the host copy dropped) and the KV pool is allocated there.
    ///
    /// # Errors
    /// [`Error::Candle`] when the device cannot hold the weights or the pool.
    pub fn with_path(model: Llama, path: ExecPath, cfg: RunnerConfig) -> Result<Self> {
        let device = match path {
            ExecPath::Cpu => return Ok(Self::new(model, cfg)),
            ExecPath::CandleOps(device) => device,
        };
        let c = model.config();
        let host = PagedKvCache::new(
            c.num_layers,
            cfg.num_host_blocks,
            cfg.block_size,
            c.num_kv_heads,
            c.head_dim,
        );
        let dm = DeviceLlama::new(&model, &device)?;
        drop(model);
        let cache = dm.new_cache(cfg.num_device_blocks, cfg.block_size)?;
        Ok(Self::with_backend(
            Backend::CandleOps {
                model: dm,
                cache,
                host,
            },
            cfg,
        ))
    }

    fn with_backend(backend: Backend, cfg: RunnerConfig) -> Self {
        Self {
            backend,
            block_size: cfg.block_size,
            rngs: HashMap::new(),
            constraints: HashMap::new(),
            loras: HashMap::new(),
            prompt_logprobs: Vec::new(),
            drafter: None,
            pacers: HashMap::new(),
            drafts: Vec::new(),
            seeder: StdRng::from_os_rng(),
            sampler: Sampler,
        }
    }

    /// The device the forward pass runs on.
    pub fn device(&self) -> Device {
        match &self.backend {
            Backend::Cpu { .. } => Device::Cpu,
            Backend::CandleOps { model, .. } => model.device().clone(),
        }
    }

    /// Copies blocks `(src, dst)` within the device pool (copy-on-write).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a block id is out of range; nothing is copied then.
    pub fn copy_device_blocks(&mut self, pairs: &[(u32, u32)]) -> Result<()> {
        match &mut self.backend {
            Backend::Cpu { cache, .. } => cache.copy_blocks(pairs),
            Backend::CandleOps { cache, .. } => cache.copy_blocks(pairs),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    fn swap(&mut self, swap_out: &[(u32, u32)], swap_in: &[(u32, u32)]) -> Result<()> {
        match &mut self.backend {
            Backend::Cpu { cache, host, .. } => {
                cache.copy_blocks_to(host, swap_out)?;
                host.copy_blocks_to(cache, swap_in)
            }
            Backend::CandleOps { cache, host, .. } => {
                cache.copy_to_host(host, swap_out)?;
                cache.copy_from_host(host, swap_in)
            }
        }
    }

    /// One forward pass; `seqs` (in `batch.seqs` order) pick each sequence's adapter.
    fn forward(&mut self, batch: &ForwardBatch, seqs: &[StepSeq<'_>]) -> Result<Tensor> {
        let adapters = seqs.iter().map(|s| self.loras.get(&s.id).map(Arc::as_ref));
        let lora = LoraRows::new(
            batch.num_tokens(),
            batch
                .seqs
                .iter()
                .map(|s| s.query_start..s.query_start + s.query_len)
                .zip(adapters),
        );
        match &mut self.backend {
            Backend::Cpu { model, cache, .. } => model.forward_with_lora(batch, cache, &lora),
            Backend::CandleOps { .. } if !lora.is_empty() => Err(Error::Unsupported(
                "LoRA adapters on the device path (--enable-lora runs on --device cpu)".into(),
            )),
            Backend::CandleOps { model, cache, .. } => model.forward(batch, cache),
        }
    }

    /// Swaps, runs the forward pass and samples; one [`SampledToken`] per sequence with
    /// `sample`, in `seqs` order.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad block ids or batches (nothing is computed then,
    /// though swap copies that preceded the failing check have happened); candle errors.
    pub fn execute(
        &mut self,
        swap_out: &[(u32, u32)],
        swap_in: &[(u32, u32)],
        seqs: &[StepSeq<'_>],
    ) -> Result<Vec<SampledToken>> {
        let swap = (!swap_out.is_empty() || !swap_in.is_empty()).then(|| {
            tracing::trace_span!("swap", out = swap_out.len(), r#in = swap_in.len()).entered()
        });
        if swap.is_some() {
            self.swap(swap_out, swap_in)?;
        }
        drop(swap);
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        // Drafts follow the sequence's own tokens in the batch.
        let with_drafts: Vec<Option<Vec<u32>>> = seqs
            .iter()
            .map(|s| (!s.draft.is_empty()).then(|| [s.tokens, s.draft].concat()))
            .collect();
        let inputs: Vec<SeqInput<'_>> = seqs
            .iter()
            .zip(&with_drafts)
            .map(|(s, joined)| SeqInput {
                tokens: joined.as_deref().unwrap_or(s.tokens),
                start: s.start,
                block_table: s.block_table,
                sample: s.sample.is_some(),
            })
            .collect();
        let mut batch = ForwardBatch::build(&inputs, self.block_size())?;
        let many_rows = seqs
            .iter()
            .any(|s| s.prompt_logprobs.is_some() || !s.draft.is_empty());
        if many_rows {
            // Rows for every position of prompt-logprobs sequences, the last one and one
            // per draft of other sampling sequences; in `seqs` order either way.
            batch.logits_indices = seqs
                .iter()
                .zip(&batch.seqs)
                .flat_map(|(s, slice)| {
                    let end = slice.query_start + slice.query_len;
                    let first = match (s.prompt_logprobs, s.sample) {
                        (Some(_), _) => slice.query_start,
                        (None, Some(_)) => end - 1 - s.draft.len(),
                        (None, None) => end,
                    };
                    first..end
                })
                .collect();
        }
        let forward =
            tracing::trace_span!("forward", tokens = batch.num_tokens(), seqs = seqs.len())
                .entered();
        let logits = self.forward(&batch, seqs)?;
        drop(forward);
        let _sample = tracing::trace_span!("sample", seqs = batch.logits_indices.len()).entered();
        let all_rows: Vec<Vec<f32>> = logits.to_vec2::<f32>()?;
        let rows = if many_rows {
            self.split_rows(seqs, all_rows)?
        } else {
            all_rows.into_iter().map(|r| vec![r]).collect()
        };
        let mut jobs = Vec::with_capacity(rows.len());
        for (s, rows) in seqs
            .iter()
            .filter_map(|s| s.sample.map(|a| (s, a)))
            .zip(rows)
        {
            let (seq, args) = s;
            let rng = if args.params.is_greedy() {
                None
            } else {
                let seeder = &mut self.seeder;
                let rng = self.rngs.remove(&seq.id).unwrap_or_else(|| {
                    StdRng::seed_from_u64(args.params.seed.unwrap_or_else(|| seeder.random()))
                });
                Some(rng)
            };
            let constraint = self.constraints.remove(&seq.id);
            jobs.push((seq, args, rows, rng, constraint, Vec::new()));
        }
        if jobs.len() != seqs.iter().filter(|s| s.sample.is_some()).count() {
            return Err(Error::InvalidInput(
                "logits rows do not match sampling sequences".into(),
            ));
        }
        let sampler = self.sampler;
        crate::pool::global().for_chunks_mut(&mut jobs, 1, |_, job| {
            let (seq, a, rows, rng, constraint, result) = &mut job[0];
            // Greedy never draws; the placeholder RNG is never read.
            let mut fallback = StdRng::seed_from_u64(0);
            let r = rng.as_mut().unwrap_or(&mut fallback);
            let rows: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
            *result = sampler.verify_drafts(
                &rows,
                seq.draft,
                a.params,
                a.prompt,
                a.output,
                a.eos,
                r,
                constraint
                    .as_mut()
                    .map(|c| c.as_mut() as &mut dyn TokenConstraint),
            );
        });
        let mut sampled = Vec::with_capacity(jobs.len());
        let mut to_draft = Vec::new();
        for (seq, args, _, rng, constraint, result) in jobs {
            if let Some(rng) = rng {
                self.rngs.insert(seq.id, rng);
            }
            if let Some(constraint) = constraint {
                self.constraints.insert(seq.id, constraint);
            }
            if let Some(drafter) = &self.drafter {
                let pacer = self
                    .pacers
                    .entry(seq.id)
                    .or_insert_with(|| DraftPacer::new(drafter.num_speculative_tokens()));
                pacer.observe(seq.draft.len(), result.len().saturating_sub(1));
                if let Some(len) = pacer.next_len() {
                    let emitted = result.iter().map(|r| r.0);
                    let context: Vec<u32> = [args.prompt, args.output]
                        .concat()
                        .into_iter()
                        .chain(emitted)
                        .collect();
                    to_draft.push(ToDraft {
                        id: seq.id,
                        context,
                        block_table: seq.block_table,
                        target_start: seq.start,
                        len,
                    });
                }
            }
            sampled.extend(
                result
                    .into_iter()
                    .map(|(token, logprobs, forced_end)| SampledToken {
                        id: seq.id,
                        token,
                        logprobs,
                        forced_end,
                    }),
            );
        }
        drop(_sample);
        self.propose(&to_draft);
        Ok(sampled)
    }

    /// Drafts for the requests' next steps, from their tokens so far (the accepted
    /// drafts and the token after them included) and their block tables.
    fn propose(&mut self, reqs: &[ToDraft<'_>]) {
        let _span = tracing::trace_span!("propose", seqs = reqs.len()).entered();
        let drafts: Vec<Vec<u32>> = match self.drafter.as_mut() {
            None => return,
            Some(Drafter::Ngram(cfg)) => reqs
                .iter()
                .map(|r| propose_ngram(&r.context, cfg))
                .collect(),
            Some(Drafter::Model(model)) => {
                let asks: Vec<DraftRequest<'_>> = reqs
                    .iter()
                    .map(|r| DraftRequest {
                        id: r.id,
                        context: &r.context,
                        block_table: r.block_table,
                        target_start: r.target_start,
                        len: r.len,
                    })
                    .collect();
                match model.propose(&asks) {
                    Ok(d) => d,
                    Err(e) => {
                        // Speculation is an optimization: the requests go on without drafts.
                        tracing::error!(error = %e, "draft model failed; no drafts this step");
                        return;
                    }
                }
            }
        };
        for (r, mut draft) in reqs.iter().zip(drafts) {
            draft.truncate(r.len);
            if !draft.is_empty() {
                self.drafts.push((r.id, draft));
            }
        }
    }

    /// Groups the logits rows by sequence: records the prompt log-probabilities of
    /// prompt-logprobs sequences and returns, per sampling sequence, its rows to sample
    /// from (the last position, then one per draft).
    fn split_rows(
        &mut self,
        seqs: &[StepSeq<'_>],
        rows: Vec<Vec<f32>>,
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let mut rows = rows.into_iter();
        let mut sampling = Vec::new();
        for s in seqs {
            let Some(args) = s.prompt_logprobs else {
                if s.sample.is_some() {
                    let mine: Vec<Vec<f32>> = rows.by_ref().take(1 + s.draft.len()).collect();
                    if mine.len() != 1 + s.draft.len() {
                        return Err(Error::InvalidInput("too few logits rows for drafts".into()));
                    }
                    sampling.push(mine);
                }
                continue;
            };
            let mine: Vec<Vec<f32>> = rows.by_ref().take(s.tokens.len()).collect();
            if mine.len() != s.tokens.len() {
                return Err(Error::InvalidInput(
                    "too few logits rows for prompt logprobs".into(),
                ));
            }
            // Row `p` holds the logits after position `start + p`: the next prompt token's.
            let computed: Vec<PromptLogprob> = mine
                .iter()
                .enumerate()
                .filter_map(|(p, row)| {
                    let next = *args.prompt.get(s.start + p + 1)?;
                    Some(crate::sampler::prompt_logprob(row, next, args.top))
                })
                .collect();
            self.prompt_logprobs.push(PromptLogprobsChunk {
                id: s.id,
                start: s.start,
                logprobs: computed,
            });
            if s.sample.is_some() {
                sampling.extend(mine.into_iter().last().map(|r| vec![r]));
            }
        }
        Ok(sampling)
    }

    /// Prompt log-probabilities computed since the last call, per request and in
    /// prompt order (a request's prompt may span several steps).
    pub fn take_prompt_logprobs(&mut self) -> Vec<PromptLogprobsChunk> {
        std::mem::take(&mut self.prompt_logprobs)
    }

    /// Turns speculative decoding on: after sampling, `drafter` proposes each request's
    /// drafts for its next step ([`ModelRunner::take_draft_tokens`]).
    pub fn set_drafter(&mut self, drafter: Drafter) {
        self.drafter = Some(drafter);
    }

    /// Drafts proposed since the last call, per request; the scheduler schedules them
    /// with the request's next token.
    pub fn take_draft_tokens(&mut self) -> Vec<(RequestId, Vec<u32>)> {
        std::mem::take(&mut self.drafts)
    }

    /// Constrains request `id`'s tokens (structured outputs) until it finishes.
    pub fn constrain(&mut self, id: RequestId, constraint: Box<dyn TokenConstraint>) {
        self.constraints.insert(id, constraint);
    }

    /// Runs request `id` with a LoRA adapter until it finishes.
    pub fn set_lora(&mut self, id: RequestId, adapter: Arc<LoraAdapter>) {
        self.loras.insert(id, adapter);
    }

    /// Drops the per-request state of finished (or aborted) requests.
    pub fn finish(&mut self, ids: &[RequestId]) {
        for id in ids {
            self.rngs.remove(id);
            self.constraints.remove(id);
            self.loras.remove(id);
            self.pacers.remove(id);
        }
        if let Some(Drafter::Model(model)) = &mut self.drafter {
            model.finish(ids);
        }
    }
}
