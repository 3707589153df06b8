//! The exactness reference: one sequence alone in a private, contiguous KV
//! cache — the whole prompt in one step, then one token per step. The
//! batched, paged, chunked, preempted engine must produce the same greedy
//! tokens as this path; the top-2 logit gap of each step tells a test how
//! close a step was to a tie (where float noise could legitimately flip it).

use crate::batch::{ForwardBatch, SeqInput};
use crate::llama::Llama;
use crate::sampler::argmax;
use crate::{Error, Result};

const BLOCK: usize = 16;

/// Greedy tokens of a reference run and, per step, `logit[top1] - logit[top2]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceRun {
    pub tokens: Vec<u32>,
    pub top2_gaps: Vec<f32>,
}

/// Runs `prompt` and then feeds `continuation` one token per step; returns the logits
/// after the prompt and after each continuation token (`1 + continuation.len()` rows).
///
/// # Errors
/// [`Error::InvalidInput`] for an empty prompt or one longer than the model's context.
pub fn reference_logits(
    model: &Llama,
    prompt: &[u32],
    continuation: &[u32],
) -> Result<Vec<Vec<f32>>> {
    let mut rows = Vec::with_capacity(continuation.len() + 1);
    run(model, prompt, continuation.len() + 1, |i, row| {
        rows.push(row);
        Ok(continuation.get(i).copied())
    })?;
    Ok(rows)
}

/// Greedy generation of up to `max_tokens` tokens, stopping after any id in `eos`
/// (which is kept in the output, as the engine keeps it).
///
/// # Errors
/// As [`reference_logits`].
pub fn reference_generate_greedy(
    model: &Llama,
    prompt: &[u32],
    max_tokens: usize,
    eos: &[u32],
) -> Result<ReferenceRun> {
    let mut out = ReferenceRun {
        tokens: Vec::new(),
        top2_gaps: Vec::new(),
    };
    run(model, prompt, max_tokens, |_, row| {
        let tok = argmax(&row);
        out.tokens.push(tok);
        out.top2_gaps.push(top2_gap(&row));
        Ok((!eos.contains(&tok)).then_some(tok))
    })?;
    Ok(out)
}

/// `max - second max` of a row (0 for ties).
pub fn top2_gap(row: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in row {
        if x > a {
            b = a;
            a = x;
        } else if x > b {
            b = x;
        }
    }
    a - b
}

/// Drives up to `steps` forward passes; `next(step, logits)` returns the token to feed next
/// or `None` to stop.
fn run(
    model: &Llama,
    prompt: &[u32],
    steps: usize,
    mut next: impl FnMut(usize, Vec<f32>) -> Result<Option<u32>>,
) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::InvalidInput(
            "reference run needs a non-empty prompt".into(),
        ));
    }
    let total = prompt.len() + steps;
    let blocks = total.div_ceil(BLOCK);
    let table: Vec<u32> = (0..blocks as u32).collect();
    let mut cache = model.new_cache(blocks, BLOCK);
    let mut tokens = prompt.to_vec();
    let mut start = 0;
    for step in 0..steps {
        let batch = ForwardBatch::build(
            &[SeqInput {
                tokens: &tokens[start..],
                start,
                block_table: &table,
                sample: true,
            }],
            BLOCK,
        )?;
        let logits = model.forward(&batch, &mut cache)?;
        let row = logits.squeeze(0)?.to_vec1::<f32>()?;
        start = tokens.len();
        match next(step, row)? {
            Some(t) => tokens.push(t),
            None => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::top2_gap;

    #[test]
    fn gap_of_top_two() {
        assert_eq!(top2_gap(&[1.0, 5.0, 3.5, 5.0]), 0.0);
        assert_eq!(top2_gap(&[1.0, 5.0, 3.5]), 1.5);
    }
}
