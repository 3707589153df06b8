//! Next-token selection from one row of logits, in vLLM's order:
//! log-probabilities of the *raw* logits (vLLM's default `raw_logprobs`),
//! then min_tokens masking of stop ids, repetition penalty (prompt + output),
//! frequency and presence penalties (output), then either greedy argmax
//! (ties → lowest id) or temperature → top-k → top-p → min-p and one draw
//! from the request's own RNG.
//!
//! Determinism: candidates are ordered by (logit desc, id asc) and the draw
//! walks them in that order with one uniform from the RNG, so a seeded
//! request reproduces exactly. Cost: one copy of the row plus a sort of the
//! surviving candidates (partial when top-k is set).

use candela_core::{SamplingParams, TokenLogprobs};
use rand::Rng;

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
        assert!(!logits.is_empty(), "sampler: empty logits row");
        let mut l = logits.to_vec();
        let vocab = l.len();
        let mut mask = |id: u32| {
            if let Some(x) = l.get_mut(id as usize) {
                *x = f32::NEG_INFINITY;
            }
        };
        if output.len() < params.min_tokens {
            params.stop_token_ids.iter().copied().for_each(&mut mask);
            if !params.ignore_eos {
                eos.iter().copied().for_each(&mut mask);
            }
        }
        apply_penalties(&mut l, params, prompt, output, vocab);
        let token = if params.temperature < SAMPLING_EPS || params.top_k == 1 {
            argmax(&l)
        } else {
            draw(&mut l, params, rng)
        };
        let lp = params.logprobs.map(|k| logprobs(logits, token, k));
        (token, lp)
    }
}

fn apply_penalties(l: &mut [f32], p: &SamplingParams, prompt: &[u32], output: &[u32], vocab: usize) {
    if p.repetition_penalty != 1.0 {
        let mut seen = vec![false; vocab];
        for &t in prompt.iter().chain(output) {
            if let Some(s) = seen.get_mut(t as usize)
                && !*s {
                    *s = true;
                    let x = &mut l[t as usize];
                    *x = if *x > 0.0 { *x / p.repetition_penalty } else { *x * p.repetition_penalty };
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

fn draw<R: Rng + ?Sized>(l: &mut [f32], p: &SamplingParams, rng: &mut R) -> u32 {
    let t = p.temperature;
    let mut cand: Vec<(u32, f32)> = l
        .iter()
        .enumerate()
        .filter(|(_, x)| x.is_finite() || **x == f32::INFINITY)
        .map(|(i, &x)| (i as u32, x / t))
        .collect();
    if cand.is_empty() {
        return argmax(l);
    }
    if p.top_k > 0 && p.top_k < cand.len() {
        cand.select_nth_unstable_by(p.top_k - 1, by_rank);
        cand.truncate(p.top_k);
    }
    cand.sort_unstable_by(by_rank);
    let max = cand[0].1;
    let mut probs: Vec<f64> = cand.iter().map(|&(_, x)| f64::from((x - max).exp())).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= total);
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, &q) in probs.iter().enumerate() {
            cum += q;
            if cum >= f64::from(p.top_p) {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        cand.truncate(keep);
    }
    if p.min_p > 0.0 {
        let thr = probs[0] * f64::from(p.min_p);
        let keep = probs.iter().take_while(|&&q| q >= thr).count().max(1);
        probs.truncate(keep);
        cand.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let u = rng.random::<f64>() * total;
    let mut cum = 0.0;
    for (i, &q) in probs.iter().enumerate() {
        cum += q;
        if u < cum {
            return cand[i].0;
        }
    }
    cand[cand.len() - 1].0
}

/// Log-softmax of the raw row: the token's value and the `k` most likely `(id, logprob)`.
fn logprobs(raw: &[f32], token: u32, k: usize) -> TokenLogprobs {
    let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = raw.iter().map(|&x| f64::from((x - max).exp())).sum();
    let lse = max + sum.ln() as f32;
    let mut top: Vec<(u32, f32)> = Vec::new();
    if k > 0 {
        let mut all: Vec<(u32, f32)> = raw.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
        let k = k.min(all.len());
        all.select_nth_unstable_by(k - 1, by_rank);
        all.truncate(k);
        all.sort_unstable_by(by_rank);
        top = all.into_iter().map(|(i, x)| (i, x - lse)).collect();
    }
    TokenLogprobs { logprob: raw[token as usize] - lse, top }
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
