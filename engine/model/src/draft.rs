//! Speculative decoding's draft model (`{"method": "draft_model"}`): a smaller model
//! with the same tokenizer proposes each request's next `k` tokens, greedily, one
//! batched forward pass per drafted position.
//!
//! Its KV pool mirrors the target's device pool block for block: a request's draft K/V
//! lives in the same block ids as its target K/V, so the scheduler's block tables (and
//! its lookahead slots for the drafts) serve both and no second allocator exists. The
//! draft model remembers, per request, how many positions it holds and through which
//! blocks; when the blocks change (swapping) or the target recomputed the request
//! (preemption) it recomputes from the start.
//! Drafted positions are overwritten by the next catch-up, so only real tokens count.
//!
//! Drafts are the draft model's argmax, so the verifier treats each as a point mass:
//! the speculative-sampling rule then keeps the target's distribution exactly whatever
//! the draft model says, and a poor draft model only costs speed.

use std::collections::HashMap;

use candela_core::RequestId;

use crate::batch::{ForwardBatch, SeqInput};
use crate::kv_cache::PagedKvCache;
use crate::llama::Llama;
use crate::sampler::argmax;
use crate::{Error, Result};

/// A draft model and its KV pool.
#[derive(Debug)]
pub struct DraftModel {
    model: Llama,
    cache: PagedKvCache<half::f16>,
    num_speculative_tokens: usize,
    /// Per request: positions whose draft K/V is in the pool, and the blocks holding them.
    held: HashMap<RequestId, (usize, Vec<u32>)>,
}

/// One request to draft for.
#[derive(Debug, Clone, Copy)]
pub struct DraftRequest<'a> {
    pub id: RequestId,
    /// The request's tokens so far; drafts continue them.
    pub context: &'a [u32],
    /// Its device block table (the target's), covering the drafts' positions.
    pub block_table: &'a [u32],
    /// Where the target's step started: below the draft model's own count, the request
    /// was recomputed after preemption and what the draft model holds may be stale.
    pub target_start: usize,
    /// Tokens wanted (at most the configured number).
    pub len: usize,
}

impl DraftModel {
    /// `model` drafts `num_speculative_tokens` per step into a pool of `num_blocks`
    /// blocks of `block_size` tokens (the target's device pool geometry).
    pub fn new(
        model: Llama,
        num_blocks: usize,
        block_size: usize,
        num_speculative_tokens: usize,
    ) -> Self {
        let cache = model.new_cache(num_blocks, block_size);
        Self {
            model,
            cache,
            num_speculative_tokens,
            held: HashMap::new(),
        }
    }

    pub fn num_speculative_tokens(&self) -> usize {
        self.num_speculative_tokens
    }

    /// Drafts for each request, in order, `len` tokens each (empty where its blocks or
    /// the draft model's context length leave no room).
    ///
    /// # Errors
    /// A failed forward pass of the draft model.
    pub fn propose(&mut self, reqs: &[DraftRequest<'_>]) -> Result<Vec<Vec<u32>>> {
        let k = self.num_speculative_tokens;
        let bs = self.cache.block_size();
        let max_pos = self.model.config().max_position_embeddings;
        let mut drafts = vec![Vec::new(); reqs.len()];
        // Requests with room for their drafts: positions up to `context + len - 2` are
        // written (the scheduler's lookahead reserved `k` slots past the context).
        let live: Vec<usize> = (0..reqs.len())
            .filter(|&i| {
                let r = &reqs[i];
                let end = r.context.len() + r.len.min(k) - 1;
                !r.context.is_empty()
                    && r.len > 0
                    && end <= r.block_table.len() * bs
                    && end <= max_pos
            })
            .collect();
        if live.is_empty() {
            return Ok(drafts);
        }
        // Catch-up: everything the draft model does not hold yet, through the last token.
        let starts: Vec<usize> = live
            .iter()
            .map(|&i| {
                let r = &reqs[i];
                let held = match self.held.get(&r.id) {
                    // In steady decoding the target starts at the last token the draft
                    // model saw (`n - 1`); earlier means it recomputed the request.
                    Some((n, table)) if r.target_start + 1 >= *n => {
                        let blocks = n.div_ceil(bs);
                        if table.len() >= blocks
                            && r.block_table.len() >= blocks
                            && table[..blocks] == r.block_table[..blocks]
                        {
                            *n
                        } else {
                            0
                        }
                    }
                    _ => 0,
                };
                // The last token is always recomputed: its logits draft the first token.
                held.min(r.context.len() - 1)
            })
            .collect();
        let inputs: Vec<SeqInput<'_>> = live
            .iter()
            .zip(&starts)
            .map(|(&i, &start)| SeqInput {
                tokens: &reqs[i].context[start..],
                start,
                block_table: reqs[i].block_table,
                sample: true,
            })
            .collect();
        let last = self.step(&inputs)?;
        for (&i, &t) in live.iter().zip(&last) {
            drafts[i].push(t);
        }
        // One position per forward pass after that, for the requests that want more.
        let mut live_now: Vec<(usize, u32)> = live.iter().copied().zip(last).collect();
        for j in 1..k {
            live_now.retain(|&(i, _)| reqs[i].len > j);
            if live_now.is_empty() {
                break;
            }
            let tokens: Vec<[u32; 1]> = live_now.iter().map(|&(_, t)| [t]).collect();
            let inputs: Vec<SeqInput<'_>> = live_now
                .iter()
                .zip(&tokens)
                .map(|(&(i, _), t)| SeqInput {
                    tokens: t,
                    start: reqs[i].context.len() + j - 1,
                    block_table: reqs[i].block_table,
                    sample: true,
                })
                .collect();
            let next = self.step(&inputs)?;
            for ((i, t), n) in live_now.iter_mut().zip(next) {
                drafts[*i].push(n);
                *t = n;
            }
        }
        for &i in &live {
            let r = &reqs[i];
            self.held
                .insert(r.id, (r.context.len(), r.block_table.to_vec()));
        }
        Ok(drafts)
    }

    /// One forward pass; the argmax after each sequence's last token.
    fn step(&mut self, inputs: &[SeqInput<'_>]) -> Result<Vec<u32>> {
        let batch = ForwardBatch::build(inputs, self.cache.block_size())?;
        let logits = self.model.forward(&batch, &mut self.cache)?;
        let rows: Vec<Vec<f32>> = logits.to_vec2::<f32>()?;
        if rows.len() != inputs.len() {
            return Err(Error::InvalidInput(
                "draft model: one logits row per sequence".into(),
            ));
        }
        Ok(rows.iter().map(|r| argmax(r)).collect())
    }

    /// Forgets finished requests.
    pub fn finish(&mut self, ids: &[RequestId]) {
        for id in ids {
            self.held.remove(id);
        }
    }
}
