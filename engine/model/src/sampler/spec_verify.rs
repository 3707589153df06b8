//! Speculative sampling's acceptance rule (Leviathan et al. 2023; Chen et al. 2023; the
//! rule vLLM's rejection sampler implements): a drafted token `x`, drawn from the draft
//! distribution `q`, is kept with probability `min(1, p(x) / q(x))` under the target
//! distribution `p`; when it is not, the replacement is drawn from `max(0, p - q)`
//! renormalized. Whatever `q` is, the token that comes out is distributed exactly as
//! `p`, so speculation never changes what a request samples.
//!
//! Distributions are `(token, weight)` lists as [`super::candidates`] returns
//! them (weights need not sum to 1). A prompt-lookup draft is a point mass
//! (`[(x, 1.0)]`); a greedy target is a point mass on its argmax, which makes the rule
//! "keep the draft if it is the argmax, else take the argmax" and draws nothing.

use rand::Rng;

use super::pick;

/// What verification made of one drafted token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The draft stands; verification moves on to the next drafted position.
    Accepted,
    /// The draft is replaced by this token, and the rest of the draft is discarded.
    Rejected(u32),
}

fn prob(dist: &[(u32, f64)], token: u32, total: f64) -> f64 {
    dist.iter()
        .find(|&&(t, _)| t == token)
        .map_or(0.0, |&(_, w)| w / total)
}

/// Verifies `token`, drawn from `draft`, against `target`. Draws from `rng` only when
/// the outcome is not already certain (so greedy targets consume no randomness).
///
/// # Panics
/// When `target` is empty or has no weight.
pub fn verify<R: Rng + ?Sized>(
    target: &[(u32, f64)],
    draft: &[(u32, f64)],
    token: u32,
    rng: &mut R,
) -> Verdict {
    let p_total: f64 = target.iter().map(|c| c.1).sum();
    assert!(p_total > 0.0, "verify: empty target distribution");
    let q_total: f64 = draft.iter().map(|c| c.1).sum();
    let p = prob(target, token, p_total);
    let q = if q_total > 0.0 {
        prob(draft, token, q_total)
    } else {
        0.0
    };
    if q > 0.0 && p >= q {
        return Verdict::Accepted;
    }
    if p > 0.0 && rng.random::<f64>() * q < p {
        return Verdict::Accepted;
    }
    // The residual max(0, p - q), walked in the target's order.
    let residual: Vec<(u32, f64)> = target
        .iter()
        .map(|&(t, w)| {
            let q_t = if q_total > 0.0 {
                prob(draft, t, q_total)
            } else {
                0.0
            };
            (t, (w / p_total - q_t).max(0.0))
        })
        .filter(|&(_, r)| r > 0.0)
        .collect();
    // Only float rounding can empty the residual (p == q everywhere): then p itself.
    let dist = if residual.is_empty() {
        target
    } else {
        &residual
    };
    if let [(only, _)] = dist {
        return Verdict::Rejected(*only);
    }
    Verdict::Rejected(pick(dist, rng))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    /// An RNG that must not be drawn from.
    struct NoDraws;

    impl rand::RngCore for NoDraws {
        fn next_u32(&mut self) -> u32 {
            panic!("a certain outcome drew randomness")
        }
        fn next_u64(&mut self) -> u64 {
            panic!("a certain outcome drew randomness")
        }
        fn fill_bytes(&mut self, _: &mut [u8]) {
            panic!("a certain outcome drew randomness")
        }
    }

    #[test]
    fn greedy_targets_keep_the_argmax_and_draw_nothing() {
        let target = [(4, 1.0)];
        assert_eq!(
            verify(&target, &[(4, 1.0)], 4, &mut NoDraws),
            Verdict::Accepted
        );
        assert_eq!(
            verify(&target, &[(2, 1.0)], 2, &mut NoDraws),
            Verdict::Rejected(4)
        );
        // A draft the target rules out (top-k, a grammar) is always replaced.
        let sampled = [(1, 0.5), (3, 0.5)];
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_ne!(
                verify(&sampled, &[(2, 1.0)], 2, &mut rng),
                Verdict::Accepted
            );
        }
    }

    /// Pearson's chi-square of `counts` against probabilities `p`.
    fn chi_square(counts: &[usize], p: &[f64]) -> f64 {
        let n: usize = counts.iter().sum();
        counts
            .iter()
            .zip(p)
            .map(|(&c, &pi)| {
                let e = pi * n as f64;
                (c as f64 - e).powi(2) / e
            })
            .sum()
    }

    /// Tokens after verification, drafting from `q` (`None`: a point mass on token 5).
    fn outputs(p: &[f64], q: Option<&[f64]>, n: usize, seed: u64) -> Vec<usize> {
        let target: Vec<(u32, f64)> = p.iter().enumerate().map(|(i, &w)| (i as u32, w)).collect();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts = vec![0; p.len()];
        for _ in 0..n {
            let (draft, token) = match q {
                Some(q) => {
                    let draft: Vec<(u32, f64)> =
                        q.iter().enumerate().map(|(i, &w)| (i as u32, w)).collect();
                    let u = rng.random::<f64>();
                    let mut cum = 0.0;
                    let token = q.iter().position(|&w| {
                        cum += w;
                        u < cum
                    });
                    (draft, token.unwrap_or(q.len() - 1) as u32)
                }
                None => (vec![(5, 1.0)], 5),
            };
            let out = match verify(&target, &draft, token, &mut rng) {
                Verdict::Accepted => token,
                Verdict::Rejected(t) => t,
            };
            counts[out as usize] += 1;
        }
        counts
    }

    /// 99th percentile of chi-square with 5 degrees of freedom: p > 0.01 below it.
    const CHI2_5_P01: f64 = 15.086;

    #[test]
    fn outputs_follow_the_target_whatever_the_draft() {
        let p = [0.30, 0.25, 0.20, 0.12, 0.08, 0.05];
        let q_far = [0.02, 0.03, 0.05, 0.10, 0.30, 0.50];
        let q_near = [0.28, 0.27, 0.18, 0.13, 0.09, 0.05];
        for (q, seed) in [(Some(&q_far[..]), 1), (Some(&q_near[..]), 2), (None, 3)] {
            let counts = outputs(&p, q, 20_000, seed);
            let stat = chi_square(&counts, &p);
            assert!(
                stat < CHI2_5_P01,
                "draft {q:?}: chi-square {stat:.1}, counts {counts:?}"
            );
        }
        // Without the residual draw (keeping drafts as they come) the test would fail.
        let biased: Vec<f64> = q_far.to_vec();
        let stat = chi_square(&outputs(&biased, None, 20_000, 4), &p);
        assert!(
            stat > CHI2_5_P01,
            "the check must be able to fail: {stat:.1}"
        );
    }
}
