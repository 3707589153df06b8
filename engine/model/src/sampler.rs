//! Next-token selection from one row of logits, in vLLM's order:
//! log-probabilities of the *raw* logits (vLLM's default `raw_logprobs`),
//! then `logit_bias`, the structured-output mask, min_tokens masking of stop ids, repetition penalty (prompt + output),
//! frequency and presence penalties (output), then either greedy argmax
//! (ties → lowest id) or temperature → top-k → top-p → min-p and one draw
//! from the request's own RNG.
//!
//! Determinism: the draw walks the surviving candidates in a fixed order (id
//! order, or rank order (logit desc, id asc) once top-k / top-p sorted them)
//! with one uniform from the RNG, so a seeded request reproduces exactly.
//! Cost: one copy of the row and O(vocab) passes; sorting only for top-k
//! (its k survivors) and top-p (the top 256, the whole row only when those do
//! not reach the nucleus mass).

use candela_core::{PromptLogprob, SamplingParams, TokenConstraint, TokenLogprobs};
use rand::Rng;

use spec_verify::{Verdict, verify};

/// Speculative sampling's acceptance rule, over this module's candidate distributions.
pub mod spec_verify;

/// Temperatures below this are greedy (vLLM's `_SAMPLING_EPS`).
const SAMPLING_EPS: f32 = 1e-5;

/// Stateless token sampler; per-request state (the RNG) is passed in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sampler;

impl Sampler {
    pub fn new() -> Self {
        Self
    }

    /// Picks the next token.
    ///
    /// `eos` are the model's end-of-sequence ids (masked with `params.stop_token_ids`
    /// while `output.len() < params.min_tokens`, unless `ignore_eos`).
    /// Returns the token and, when `params.logprobs` is set, its log-probability and the
    /// top alternatives under the raw logits.
    ///
    /// # Panics
    /// When `logits` is empty.
    pub fn sample<R: Rng + ?Sized>(
        &self,
        logits: &[f32],
        params: &SamplingParams,
        prompt: &[u32],
        output: &[u32],
        eos: &[u32],
        rng: &mut R,
    ) -> (u32, Option<TokenLogprobs>) {
        let (token, logprobs, _) =
            self.sample_constrained(logits, params, prompt, output, eos, rng, None);
        (token, logprobs)
    }

    /// [`sample`](Self::sample) under a structured-output `constraint`: its mask is
    /// applied first and wins over `min_tokens` (a complete grammar may only end), and
    /// it is told the chosen token. The third value is true when the constraint allowed
    /// only the end (the request must finish here); a constraint that fails ends the
    /// sequence the same way with `eos[0]`. Logprobs stay those of the raw logits
    /// (vLLM's `raw_logprobs`).
    ///
    /// # Panics
    /// When `logits` is empty.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_constrained<R: Rng + ?Sized>(
        &self,
        logits: &[f32],
        params: &SamplingParams,
        prompt: &[u32],
        output: &[u32],
        eos: &[u32],
        rng: &mut R,
        constraint: Option<&mut dyn TokenConstraint>,
    ) -> (u32, Option<TokenLogprobs>, bool) {
        self.verify_drafts(&[logits], &[], params, prompt, output, eos, rng, constraint)
            .pop()
            .expect("one row gives one token")
    }

    /// Speculative decoding's verification: `rows[j]` are the logits after the
    /// request's tokens and the first `j` drafts. Each draft is checked in order
    /// against the distribution [`sample_constrained`](Self::sample_constrained) would
    /// draw from at its position (bias, mask, `min_tokens`, penalties over the output
    /// so far, then temperature, top-k, top-p, min-p): greedy requests keep a draft
    /// that is the argmax, sampled ones apply the speculative-sampling rule
    /// ([`spec_verify::verify`]), so what comes out is distributed exactly as
    /// without drafts. Returns the accepted drafts and then one more token (the
    /// replacement of the first rejected draft, or a draw from the row after the
    /// last), each with its raw logprobs and whether the constraint forced the end
    /// there; it stops early at a forced end.
    ///
    /// # Panics
    /// When `rows` is not one longer than `draft`, or a row is empty.
    #[allow(clippy::too_many_arguments)]
    pub fn verify_drafts<R: Rng + ?Sized>(
        &self,
        rows: &[&[f32]],
        draft: &[u32],
        params: &SamplingParams,
        prompt: &[u32],
        output: &[u32],
        eos: &[u32],
        rng: &mut R,
        mut constraint: Option<&mut dyn TokenConstraint>,
    ) -> Vec<(u32, Option<TokenLogprobs>, bool)> {
        assert_eq!(
            rows.len(),
            draft.len() + 1,
            "one logits row per draft, plus one"
        );
        let seq = SeqState {
            params,
            prompt,
            eos,
        };
        let mut output = std::borrow::Cow::Borrowed(output);
        let mut result = Vec::with_capacity(rows.len());
        for (j, &logits) in rows.iter().enumerate() {
            assert!(!logits.is_empty(), "sampler: empty logits row");
            let lp = |token| params.logprobs.map(|k| logprobs(logits, token, k));
            let (l, forced_end) = match seq.process(
                logits,
                &output,
                constraint
                    .as_mut()
                    .map(|c| &mut **c as &mut dyn TokenConstraint),
            ) {
                Ok(processed) => processed,
                Err(end) => {
                    result.push((end, lp(end), true));
                    break;
                }
            };
            let greedy = params.temperature < SAMPLING_EPS || params.top_k == 1;
            let (token, accepted) = match draft.get(j) {
                Some(&d) => {
                    let verdict = if greedy {
                        let best = argmax(&l);
                        if best == d {
                            Verdict::Accepted
                        } else {
                            Verdict::Rejected(best)
                        }
                    } else {
                        let cand = candidates(&l, params);
                        if cand.is_empty() {
                            Verdict::Rejected(argmax(&l))
                        } else {
                            verify(&cand, &[(d, 1.0)], d, rng)
                        }
                    };
                    match verdict {
                        Verdict::Accepted => (d, true),
                        Verdict::Rejected(t) => (t, false),
                    }
                }
                None if greedy => (argmax(&l), false),
                None => (draw(&l, params, rng), false),
            };
            if let Some(c) = constraint.as_mut()
                && let Err(e) = c.accept(token)
            {
                tracing::error!(error = %e, token, "structured output rejected its own token");
            }
            result.push((token, lp(token), forced_end));
            if !accepted || forced_end {
                break;
            }
            output.to_mut().push(token);
        }
        result
    }
}

/// What stays fixed for one sequence while its positions are sampled.
struct SeqState<'a> {
    params: &'a SamplingParams,
    prompt: &'a [u32],
    eos: &'a [u32],
}

impl SeqState<'_> {
    /// The logits a draw at this position sees: `logit_bias`, the constraint's mask,
    /// `min_tokens`, penalties; and whether the constraint allows only the end. A
    /// failing mask gives `Err` with the token that ends the sequence.
    fn process(
        &self,
        logits: &[f32],
        output: &[u32],
        constraint: Option<&mut dyn TokenConstraint>,
    ) -> Result<(Vec<f32>, bool), u32> {
        let (params, eos) = (self.params, self.eos);
        let mut l = logits.to_vec();
        let vocab = l.len();
        for &(id, bias) in &params.logit_bias {
            if let Some(x) = l.get_mut(id as usize) {
                *x += bias;
            }
        }
        let constrained = constraint.is_some();
        let mut forced_end = false;
        if let Some(c) = constraint {
            if let Err(e) = c.mask(&mut l) {
                tracing::error!(error = %e, "structured output mask failed; ending the sequence");
                return Err(eos.first().copied().unwrap_or_else(|| argmax(logits)));
            }
            forced_end = c.only_end_allowed();
        }
        if output.len() < params.min_tokens {
            let mut stops: Vec<u32> = params.stop_token_ids.clone();
            if !params.ignore_eos {
                stops.extend_from_slice(eos);
            }
            let masked = |id: usize| stops.contains(&(id as u32));
            // A constraint that allows only stop tokens keeps them: it must be able to end.
            let others_left = l
                .iter()
                .enumerate()
                .any(|(i, &x)| x > f32::NEG_INFINITY && !masked(i));
            if !constrained || others_left {
                for &id in &stops {
                    if let Some(x) = l.get_mut(id as usize) {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
        }
        apply_penalties(&mut l, params, self.prompt, output, vocab);
        Ok((l, forced_end))
    }
}

fn apply_penalties(
    l: &mut [f32],
    p: &SamplingParams,
    prompt: &[u32],
    output: &[u32],
    vocab: usize,
) {
    if p.repetition_penalty != 1.0 {
        let mut seen = vec![false; vocab];
        for &t in prompt.iter().chain(output) {
            if let Some(s) = seen.get_mut(t as usize)
                && !*s
            {
                *s = true;
                let x = &mut l[t as usize];
                *x = if *x > 0.0 {
                    *x / p.repetition_penalty
                } else {
                    *x * p.repetition_penalty
                };
            }
        }
    }
    if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
        let mut counts = vec![0u32; vocab];
        for &t in output {
            if let Some(c) = counts.get_mut(t as usize) {
                *c += 1;
            }
        }
        for (x, &c) in l.iter_mut().zip(&counts) {
            if c > 0 {
                *x -= p.frequency_penalty * c as f32 + p.presence_penalty;
            }
        }
    }
}

/// Index of the largest value; the lowest index among ties (NaN never wins).
pub fn argmax(l: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in l.iter().enumerate() {
        if x > l[best] || l[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// (logit desc, id asc).
fn by_rank(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Candidates kept sorted when top-p needs rank order; the rest of the vocab is only
/// sorted when these few do not already reach the nucleus mass.
const NUCLEUS_HEAD: usize = 256;

fn draw<R: Rng + ?Sized>(l: &[f32], p: &SamplingParams, rng: &mut R) -> u32 {
    let cand = candidates(l, p);
    if cand.is_empty() {
        return argmax(l);
    }
    pick(&cand, rng)
}

/// One draw from `(token, weight)` candidates (weights need not sum to 1): one
/// uniform, walked in the given order, so a seeded RNG reproduces it exactly.
///
/// # Panics
/// When `cand` is empty.
pub(crate) fn pick<R: Rng + ?Sized>(cand: &[(u32, f64)], rng: &mut R) -> u32 {
    let total: f64 = cand.iter().map(|c| c.1).sum();
    let u = rng.random::<f64>() * total;
    let mut cum = 0.0;
    for c in cand {
        cum += c.1;
        if u < cum {
            return c.0;
        }
    }
    cand[cand.len() - 1].0
}

/// The tokens a sampled (non-greedy) draw chooses from, with unnormalized weights (the
/// most likely weighs 1), after temperature, top-k, top-p and min-p, in the order the
/// draw walks them: id order, or rank order once top-k / top-p sorted them. Empty when
/// every logit is masked. Speculative decoding verifies drafts against exactly this.
pub fn candidates(l: &[f32], p: &SamplingParams) -> Vec<(u32, f64)> {
    let t = p.temperature;
    // Id order; NaN and -inf (masked) tokens are never candidates.
    let mut cand: Vec<(u32, f32)> = l
        .iter()
        .enumerate()
        .filter(|(_, x)| !x.is_nan() && **x > f32::NEG_INFINITY)
        .map(|(i, &x)| (i as u32, x / t))
        .collect();
    if cand.is_empty() {
        return Vec::new();
    }
    if p.top_k > 0 && p.top_k < cand.len() {
        cand.select_nth_unstable_by(p.top_k - 1, by_rank);
        cand.truncate(p.top_k);
        cand.sort_unstable_by(by_rank);
    }
    let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    // Unnormalized probabilities: the top token weighs 1.
    let w = |x: f32| f64::from((x - max).exp());
    if p.top_p < 1.0 {
        let total: f64 = cand.iter().map(|c| w(c.1)).sum();
        let target = f64::from(p.top_p) * total;
        let head = NUCLEUS_HEAD.min(cand.len());
        if head < cand.len() {
            cand.select_nth_unstable_by(head - 1, by_rank);
        }
        cand[..head].sort_unstable_by(by_rank);
        if cand[..head].iter().map(|c| w(c.1)).sum::<f64>() < target {
            cand.sort_unstable_by(by_rank);
        }
        let mut cum = 0.0;
        let keep = cand
            .iter()
            .position(|c| {
                cum += w(c.1);
                cum >= target
            })
            .map_or(cand.len(), |i| i + 1);
        cand.truncate(keep);
    }
    if p.min_p > 0.0 {
        // p_i >= min_p * p_max  <=>  w_i >= min_p (the top token keeps w = 1).
        cand.retain(|c| w(c.1) >= f64::from(p.min_p));
    }
    cand.into_iter().map(|(id, x)| (id, w(x))).collect()
}

/// A prompt token's log-probability under the raw row (the logits of the position
/// before it), its rank and the `k` most likely alternatives.
pub fn prompt_logprob(raw: &[f32], token: u32, k: usize) -> PromptLogprob {
    let TokenLogprobs { logprob, top } = logprobs(raw, token, k);
    let x = raw
        .get(token as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    let rank = 1 + raw.iter().filter(|&&y| y > x).count();
    PromptLogprob {
        token,
        logprob,
        rank,
        top,
    }
}

/// Log-softmax of the raw row: the token's value and the `k` most likely `(id, logprob)`.
fn logprobs(raw: &[f32], token: u32, k: usize) -> TokenLogprobs {
    let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = raw.iter().map(|&x| f64::from((x - max).exp())).sum();
    let lse = max + sum.ln() as f32;
    let mut top: Vec<(u32, f32)> = Vec::new();
    if k > 0 {
        let mut all: Vec<(u32, f32)> = raw
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, x))
            .collect();
        let k = k.min(all.len());
        all.select_nth_unstable_by(k - 1, by_rank);
        all.truncate(k);
        all.sort_unstable_by(by_rank);
        top = all.into_iter().map(|(i, x)| (i, x - lse)).collect();
    }
    TokenLogprobs {
        logprob: raw[token as usize] - lse,
        top,
    }
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
