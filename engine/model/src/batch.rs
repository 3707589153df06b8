//! The model's input for one engine step: every scheduled sequence's new
//! tokens flattened into one `[T]` batch, with the slot each token's K/V is
//! written to and the block table each sequence reads its context through.
//!
//! Invariants (checked by [`ForwardBatch::validate`]): the per-token vectors
//! have the same length `T`; sequences cover disjoint, ascending ranges of
//! `0..T`; a sequence's query tokens sit at positions
//! `context_len - query_len .. context_len`; its block table covers
//! `context_len` tokens; `logits_indices` are rows of `0..T`.

use crate::{Error, Result};

/// One engine step, all sequences' new tokens flattened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForwardBatch {
    /// `[T]` token ids.
    pub token_ids: Vec<u32>,
    /// `[T]` absolute positions.
    pub positions: Vec<u32>,
    /// `[T]` cache slot (`block_id * block_size + offset`) where the token's K/V is written.
    pub slot_mapping: Vec<usize>,
    /// The sequences, in the order their tokens appear in `token_ids`.
    pub seqs: Vec<SeqSlice>,
    /// Rows of `[T]` whose logits are returned, in order.
    pub logits_indices: Vec<usize>,
}

/// One sequence's share of a [`ForwardBatch`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeqSlice {
    /// First row of this sequence in the flattened batch.
    pub query_start: usize,
    /// Number of new tokens of this sequence in the batch.
    pub query_len: usize,
    /// Tokens in the cache after this step, including the query tokens.
    pub context_len: usize,
    /// Block ids holding this sequence's tokens, in order.
    pub block_table: Vec<u32>,
}

/// One sequence's input to [`ForwardBatch::build`].
#[derive(Debug, Clone, Copy)]
pub struct SeqInput<'a> {
    /// The tokens computed this step (a prefill chunk, or the last token when decoding).
    pub tokens: &'a [u32],
    /// Tokens already in the cache: the position of `tokens[0]`.
    pub start: usize,
    /// Blocks covering at least `start + tokens.len()` tokens.
    pub block_table: &'a [u32],
    /// Return the logits of the last token (the runner samples from them).
    pub sample: bool,
}

impl ForwardBatch {
    /// Flattens sequences into one batch.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a sequence has no tokens or its block table is too short.
    pub fn build(seqs: &[SeqInput<'_>], block_size: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(Error::InvalidInput("block_size must be positive".into()));
        }
        let total: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        let mut b = ForwardBatch {
            token_ids: Vec::with_capacity(total),
            positions: Vec::with_capacity(total),
            slot_mapping: Vec::with_capacity(total),
            seqs: Vec::with_capacity(seqs.len()),
            logits_indices: Vec::new(),
        };
        for s in seqs {
            if s.tokens.is_empty() {
                return Err(Error::InvalidInput(
                    "a scheduled sequence has no tokens".into(),
                ));
            }
            let context_len = s.start + s.tokens.len();
            if s.block_table.len() * block_size < context_len {
                return Err(Error::InvalidInput(format!(
                    "block table of {} blocks cannot hold {context_len} tokens",
                    s.block_table.len()
                )));
            }
            let query_start = b.token_ids.len();
            for (i, &tok) in s.tokens.iter().enumerate() {
                let pos = s.start + i;
                let block = s.block_table[pos / block_size] as usize;
                b.token_ids.push(tok);
                b.positions.push(pos as u32);
                b.slot_mapping.push(block * block_size + pos % block_size);
            }
            if s.sample {
                b.logits_indices.push(b.token_ids.len() - 1);
            }
            b.seqs.push(SeqSlice {
                query_start,
                query_len: s.tokens.len(),
                context_len,
                block_table: s.block_table.to_vec(),
            });
        }
        Ok(b)
    }

    /// Number of tokens `T` in the batch.
    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// Checks the invariants listed in the module doc against a cache geometry.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the first violated invariant.
    pub fn validate(&self, block_size: usize, num_blocks: usize) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        let t = self.token_ids.len();
        if self.positions.len() != t || self.slot_mapping.len() != t {
            return bad("token_ids, positions and slot_mapping differ in length".into());
        }
        if let Some(&s) = self
            .slot_mapping
            .iter()
            .find(|&&s| s >= num_blocks * block_size)
        {
            return bad(format!(
                "slot {s} is outside a cache of {num_blocks} blocks"
            ));
        }
        let mut next = 0;
        for s in &self.seqs {
            if s.query_start != next || s.query_len == 0 || s.query_len > s.context_len {
                return bad(format!(
                    "sequence slice {}+{} is malformed",
                    s.query_start, s.query_len
                ));
            }
            next = s.query_start + s.query_len;
            if next > t {
                return bad("sequence slices run past the batch".into());
            }
            if s.block_table.len() * block_size < s.context_len {
                return bad(format!(
                    "block table too short for {} tokens",
                    s.context_len
                ));
            }
            if s.block_table.iter().any(|&b| b as usize >= num_blocks) {
                return bad("block table names a block outside the cache".into());
            }
            let first = s.context_len - s.query_len;
            for (i, &p) in self.positions[s.query_start..next].iter().enumerate() {
                if p as usize != first + i {
                    return bad(format!(
                        "position {p} does not follow the sequence's context"
                    ));
                }
            }
        }
        if next != t {
            return bad("sequence slices do not cover the batch".into());
        }
        if self.logits_indices.iter().any(|&i| i >= t) {
            return bad("a logits index is outside the batch".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_maps_slots_through_block_tables() {
        let a = [1, 2, 3];
        let b = [9];
        let batch = ForwardBatch::build(
            &[
                SeqInput {
                    tokens: &a,
                    start: 2,
                    block_table: &[7, 4],
                    sample: false,
                },
                SeqInput {
                    tokens: &b,
                    start: 5,
                    block_table: &[0, 3],
                    sample: true,
                },
            ],
            4,
        )
        .unwrap();
        assert_eq!(batch.positions, vec![2, 3, 4, 5]);
        assert_eq!(batch.slot_mapping, vec![30, 31, 16, 13]);
        assert_eq!(batch.logits_indices, vec![3]);
        assert_eq!(batch.seqs[1].query_start, 3);
        assert_eq!(batch.seqs[1].context_len, 6);
        batch.validate(4, 8).unwrap();
        assert!(batch.validate(4, 7).is_err());
    }

    #[test]
    fn short_block_table_is_rejected() {
        let a = [1, 2, 3, 4, 5];
        let r = ForwardBatch::build(
            &[SeqInput {
                tokens: &a,
                start: 0,
                block_table: &[0],
                sample: true,
            }],
            4,
        );
        assert!(r.is_err());
    }
}
