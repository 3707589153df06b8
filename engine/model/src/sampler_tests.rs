//! Fixed-seed tests, one per sampling parameter.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn p() -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        ..Default::default()
    }
}

fn greedy() -> SamplingParams {
    SamplingParams::greedy(16)
}

fn draws(logits: &[f32], params: &SamplingParams, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| Sampler.sample(logits, params, &[], &[], &[], &mut rng).0)
        .collect()
}

fn hist(d: &[u32], vocab: usize) -> Vec<usize> {
    let mut h = vec![0; vocab];
    d.iter().for_each(|&t| h[t as usize] += 1);
    h
}

#[test]
fn greedy_takes_argmax_and_breaks_ties_low() {
    let mut rng = StdRng::seed_from_u64(0);
    let (t, _) = Sampler.sample(&[0.1, 3.0, -1.0, 3.0], &greedy(), &[], &[], &[], &mut rng);
    assert_eq!(t, 1);
    let top_k_1 = SamplingParams { top_k: 1, ..p() };
    assert_eq!(
        Sampler
            .sample(&[0.0, 1.0, 5.0], &top_k_1, &[], &[], &[], &mut rng)
            .0,
        2
    );
    assert_eq!(argmax(&[f32::NAN, 1.0, 0.0]), 1);
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative() {
    let mut rng = StdRng::seed_from_u64(0);
    let g = SamplingParams {
        repetition_penalty: 2.0,
        ..greedy()
    };
    // token 0 (3.0) seen in the prompt → 1.5 < 2.0 of token 1.
    assert_eq!(
        Sampler
            .sample(&[3.0, 2.0, -1.0], &g, &[0], &[], &[], &mut rng)
            .0,
        1
    );
    // negative logits get more negative: -1 → -2 loses against -1.5.
    assert_eq!(
        Sampler
            .sample(&[-1.0, -1.5], &g, &[], &[0], &[], &mut rng)
            .0,
        1
    );
    // without penalty token 0 wins
    assert_eq!(
        Sampler
            .sample(&[3.0, 2.0, -1.0], &greedy(), &[0], &[], &[], &mut rng)
            .0,
        0
    );
}

#[test]
fn frequency_and_presence_penalties_use_output_counts_only() {
    let mut rng = StdRng::seed_from_u64(0);
    let f = SamplingParams {
        frequency_penalty: 0.6,
        ..greedy()
    };
    // token 0 generated twice: 2.0 - 1.2 = 0.8 < 1.0; the prompt does not count.
    assert_eq!(
        Sampler
            .sample(&[2.0, 1.0], &f, &[1, 1, 1], &[0, 0], &[], &mut rng)
            .0,
        1
    );
    assert_eq!(
        Sampler
            .sample(&[2.0, 1.0], &f, &[0, 0, 0], &[0], &[], &mut rng)
            .0,
        0
    );
    let pr = SamplingParams {
        presence_penalty: 1.5,
        ..greedy()
    };
    assert_eq!(
        Sampler.sample(&[2.0, 1.0], &pr, &[], &[0], &[], &mut rng).0,
        1
    );
}

#[test]
fn min_tokens_masks_eos_and_stop_ids_until_reached() {
    let mut rng = StdRng::seed_from_u64(0);
    let m = SamplingParams {
        min_tokens: 2,
        stop_token_ids: vec![1],
        ..greedy()
    };
    let l = [5.0, 4.0, 3.0];
    assert_eq!(Sampler.sample(&l, &m, &[], &[7], &[0], &mut rng).0, 2);
    assert_eq!(Sampler.sample(&l, &m, &[], &[7, 7], &[0], &mut rng).0, 0);
    let ig = SamplingParams {
        ignore_eos: true,
        ..m
    };
    assert_eq!(Sampler.sample(&l, &ig, &[], &[7], &[0], &mut rng).0, 0);
}

#[test]
fn temperature_sharpens_and_flattens() {
    let l = [1.0, 0.0, -1.0];
    let cold = hist(
        &draws(
            &l,
            &SamplingParams {
                temperature: 0.1,
                ..p()
            },
            2000,
            1,
        ),
        3,
    );
    assert!(cold[0] > 1990, "{cold:?}");
    let hot = hist(
        &draws(
            &l,
            &SamplingParams {
                temperature: 100.0,
                ..p()
            },
            3000,
            2,
        ),
        3,
    );
    assert!(hot.iter().all(|&c| c > 900), "{hot:?}");
    // At temperature 1 the frequencies follow the softmax (0.665, 0.245, 0.090).
    let one = hist(&draws(&l, &p(), 10_000, 3), 3);
    assert!((one[0] as f64 / 1e4 - 0.665).abs() < 0.02, "{one:?}");
    assert!((one[2] as f64 / 1e4 - 0.090).abs() < 0.015, "{one:?}");
}

#[test]
fn top_k_top_p_min_p_restrict_the_candidates() {
    let l = [2.0, 1.9, 1.8, 0.0, -0.5];
    let k = hist(&draws(&l, &SamplingParams { top_k: 2, ..p() }, 3000, 4), 5);
    assert!(
        k[2] == 0 && k[3] == 0 && k[4] == 0 && k[0] > 0 && k[1] > 0,
        "{k:?}"
    );
    // probs ≈ [0.34, 0.31, 0.28, 0.05, 0.03]: top_p 0.6 keeps the first two.
    let tp = hist(
        &draws(&l, &SamplingParams { top_p: 0.6, ..p() }, 3000, 5),
        5,
    );
    assert!(
        tp[2] == 0 && tp[3] == 0 && tp[4] == 0 && tp[1] > 0,
        "{tp:?}"
    );
    // min_p 0.5: keep tokens with p >= 0.5 * p_max → the first three.
    let mp = hist(
        &draws(&l, &SamplingParams { min_p: 0.5, ..p() }, 3000, 6),
        5,
    );
    assert!(mp[3] == 0 && mp[4] == 0 && mp[2] > 0, "{mp:?}");
    // everything on: still only the top ones.
    let all = SamplingParams {
        top_k: 3,
        top_p: 0.9,
        min_p: 0.1,
        temperature: 0.7,
        ..p()
    };
    let a = hist(&draws(&l, &all, 2000, 7), 5);
    assert!(a[3] == 0 && a[4] == 0, "{a:?}");
}

#[test]
fn seeded_draws_reproduce_and_differ_across_seeds() {
    let l: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
    assert_eq!(draws(&l, &p(), 40, 42), draws(&l, &p(), 40, 42));
    assert_ne!(draws(&l, &p(), 40, 42), draws(&l, &p(), 40, 43));
}

#[test]
fn logprobs_come_from_raw_logits() {
    let mut rng = StdRng::seed_from_u64(0);
    let l = [1.0f32, 3.0, 2.0, 3.0];
    let pen = SamplingParams {
        logprobs: Some(3),
        repetition_penalty: 10.0,
        ..greedy()
    };
    let (t, lp) = Sampler.sample(&l, &pen, &[1], &[], &[], &mut rng);
    let lp = lp.unwrap();
    assert_eq!(t, 3, "penalty moves the pick to the tied token 3");
    let lse = (l.iter().map(|x| x.exp()).sum::<f32>()).ln();
    assert!((lp.logprob - (3.0 - lse)).abs() < 1e-6);
    let ids: Vec<u32> = lp.top.iter().map(|x| x.0).collect();
    assert_eq!(ids, vec![1, 3, 2]);
    assert!((lp.top[2].1 - (2.0 - lse)).abs() < 1e-6);
    let none = Sampler.sample(&l, &greedy(), &[], &[], &[], &mut rng).1;
    assert!(none.is_none());
    let zero = SamplingParams {
        logprobs: Some(0),
        ..greedy()
    };
    assert!(
        Sampler
            .sample(&l, &zero, &[], &[], &[], &mut rng)
            .1
            .unwrap()
            .top
            .is_empty()
    );
}

#[test]
fn top_p_nucleus_is_exact_beyond_the_sorted_head() {
    // Flat-ish row over 1000 tokens: the nucleus needs far more than 256 tokens.
    let flat: Vec<f32> = (0..1000).map(|i| -(i as f32) * 0.001).collect();
    // Peaked row: the nucleus sits inside the head.
    let peaked: Vec<f32> = (0..1000).map(|i| -(i as f32) * 0.5).collect();
    for (row, top_p) in [(&flat, 0.9f32), (&peaked, 0.95)] {
        // Brute force: smallest rank prefix with mass >= top_p.
        let max = row[0];
        let ws: Vec<f64> = row.iter().map(|&x| f64::from((x - max).exp())).collect();
        let total: f64 = ws.iter().sum();
        let mut cum = 0.0;
        let size = ws
            .iter()
            .position(|w| {
                cum += w;
                cum >= f64::from(top_p) * total
            })
            .unwrap()
            + 1;
        let d = draws(row, &SamplingParams { top_p, ..p() }, 4000, 9);
        let top = *d.iter().max().unwrap() as usize;
        assert!(top < size, "drew rank {top} outside a nucleus of {size}");
        assert!(
            top + 1 >= size * 9 / 10 || size < 10,
            "never came near the nucleus edge: {top} of {size}"
        );
    }
}

#[test]
fn greedy_verification_keeps_drafts_that_are_the_argmax_and_replaces_the_first_that_is_not() {
    let mut rng = StdRng::seed_from_u64(0);
    // Rows after the last token and after each of two drafts; argmaxes 1, 2, 0.
    let rows: [&[f32]; 3] = [&[0.0, 5.0, 1.0], &[0.0, 1.0, 5.0], &[5.0, 1.0, 0.0]];
    let mut tokens = |draft: &[u32]| -> Vec<u32> {
        Sampler
            .verify_drafts(
                &rows[..draft.len() + 1],
                draft,
                &greedy(),
                &[],
                &[],
                &[],
                &mut rng,
                None,
            )
            .into_iter()
            .map(|t| t.0)
            .collect()
    };
    assert_eq!(
        tokens(&[1, 2]),
        [1, 2, 0],
        "both accepted, then the bonus token"
    );
    assert_eq!(
        tokens(&[1, 0]),
        [1, 2],
        "the second is replaced by the argmax"
    );
    assert_eq!(
        tokens(&[2, 2]),
        [1],
        "the first is replaced; the rest is dropped"
    );
    assert_eq!(tokens(&[]), [1], "no drafts: a plain greedy pick");
}

#[test]
fn verification_penalizes_accepted_drafts_like_output_and_keeps_raw_logprobs() {
    let mut rng = StdRng::seed_from_u64(0);
    // A presence penalty of 3 on tokens already in the output, greedy.
    let params = SamplingParams {
        presence_penalty: 3.0,
        logprobs: Some(0),
        ..greedy()
    };
    let rows: [&[f32]; 2] = [&[0.0, 5.0, 3.0], &[0.0, 4.0, 3.0]];
    // Draft 1 is the first row's argmax and stands; at the second row the accepted draft
    // is output already, so its 4.0 drops to 1.0 and 2 wins.
    let out = Sampler.verify_drafts(&rows, &[1], &params, &[], &[], &[], &mut rng, None);
    let tokens: Vec<u32> = out.iter().map(|t| t.0).collect();
    assert_eq!(tokens, [1, 2]);
    // With 1 in the output before the step, the first row already prefers 2 (5 - 3 < 3).
    let out = Sampler.verify_drafts(&rows, &[1], &params, &[], &[1], &[], &mut rng, None);
    let tokens: Vec<u32> = out.iter().map(|t| t.0).collect();
    assert_eq!(tokens, [2], "the draft is replaced and the rest dropped");
    // Logprobs are the raw row's, as for a plain draw.
    let raw = logprobs(rows[0], 2, 0).logprob;
    assert_eq!(out[0].1.as_ref().unwrap().logprob, raw);
}

#[test]
fn sampled_verification_keeps_the_target_distribution() {
    // Target p = softmax(ln [0.5, 0.3, 0.2]) at temperature 1; a draft of token 2 is
    // accepted with p(2) = 0.2, and otherwise the replacement comes from p without 2.
    let row: &[f32] = &[0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
    let rows: [&[f32]; 2] = [row, row];
    let mut rng = StdRng::seed_from_u64(7);
    let n = 40_000;
    let mut first = [0usize; 3];
    let mut accepted = 0;
    for _ in 0..n {
        let out = Sampler.verify_drafts(&rows, &[2], &p(), &[], &[], &[], &mut rng, None);
        first[out[0].0 as usize] += 1;
        accepted += usize::from(out.len() == 2);
    }
    for (t, want) in [0.5, 0.3, 0.2].into_iter().enumerate() {
        let got = first[t] as f64 / n as f64;
        assert!((got - want).abs() < 0.01, "token {t}: {got} vs {want}");
    }
    let rate = accepted as f64 / n as f64;
    assert!((rate - 0.2).abs() < 0.01, "acceptance {rate}");
}
