//! Paged attention against a naive contiguous reference: bit-identical for any
//! block table, chunking and batch composition.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::batch::{ForwardBatch, SeqInput};
use crate::kv_cache::{KvElem, PagedKvCache};

const NH: usize = 6;
const NKV: usize = 2;
const HD: usize = 20; // not a multiple of 8: exercises the dot tail
const BS: usize = 4;

struct Seq {
    q: Vec<f32>, // [len, NH*HD]
    k: Vec<f32>, // [len, NKV*HD]
    v: Vec<f32>,
}

fn random_seq(rng: &mut StdRng, len: usize) -> Seq {
    let mut r = |n: usize| {
        (0..n)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect::<Vec<_>>()
    };
    Seq {
        q: r(len * NH * HD),
        k: r(len * NKV * HD),
        v: r(len * NKV * HD),
    }
}

/// Straightforward causal attention over contiguous K/V, same arithmetic order
/// (the weighted V sum fused-multiply-adds, as the kernel's).
fn naive(s: &Seq, scale: f32) -> Vec<f32> {
    let len = s.q.len() / (NH * HD);
    let mut out = vec![0.0f32; s.q.len()];
    for p in 0..len {
        for h in 0..NH {
            let kvh = h / (NH / NKV);
            let q = &s.q[(p * NH + h) * HD..][..HD];
            let mut sc: Vec<f32> = (0..=p)
                .map(|j| dot(q, &s.k[(j * NKV + kvh) * HD..][..HD]) * scale)
                .collect();
            let max = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for x in &mut sc {
                *x = (*x - max).exp();
                sum += *x;
            }
            let inv = 1.0 / sum;
            let o = &mut out[(p * NH + h) * HD..][..HD];
            for (j, w) in sc.iter().enumerate() {
                let w = w * inv;
                for (d, ov) in o.iter_mut().enumerate() {
                    *ov = w.mul_add(s.v[(j * NKV + kvh) * HD + d], *ov);
                }
            }
        }
    }
    out
}

/// Runs all sequences through the paged kernel in steps: at each step sequence `i`
/// contributes the next `chunks[i][step]` tokens (0 = not scheduled this step).
fn paged<T: KvElem>(
    seqs: &[Seq],
    tables: &[Vec<u32>],
    chunks: &[Vec<usize>],
    scale: f32,
) -> Vec<Vec<f32>> {
    let mut cache = PagedKvCache::<T>::new(1, 64, BS, NKV, HD);
    let mut outs: Vec<Vec<f32>> = seqs.iter().map(|s| vec![f32::NAN; s.q.len()]).collect();
    let mut done = vec![0usize; seqs.len()];
    let steps = chunks.iter().map(Vec::len).max().unwrap_or(0);
    let dummy: Vec<Vec<u32>> = seqs
        .iter()
        .map(|s| vec![0; s.q.len() / (NH * HD)])
        .collect();
    for step in 0..steps {
        let mut inputs = Vec::new();
        let mut members = Vec::new();
        for i in 0..seqs.len() {
            let n = chunks[i].get(step).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            inputs.push(SeqInput {
                tokens: &dummy[i][done[i]..done[i] + n],
                start: done[i],
                block_table: &tables[i],
                sample: true,
            });
            members.push((i, done[i], n));
        }
        let batch = ForwardBatch::build(&inputs, BS).unwrap();
        let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for &(i, s, n) in &members {
            q.extend_from_slice(&seqs[i].q[s * NH * HD..(s + n) * NH * HD]);
            k.extend_from_slice(&seqs[i].k[s * NKV * HD..(s + n) * NKV * HD]);
            v.extend_from_slice(&seqs[i].v[s * NKV * HD..(s + n) * NKV * HD]);
        }
        write_kv(cache.layer_mut(0), &k, &v, &batch.slot_mapping).unwrap();
        let mut out = vec![0.0f32; q.len()];
        paged_attention(&q, cache.layer(0), &batch, scale, &mut out).unwrap();
        let mut row = 0;
        for &(i, s, n) in &members {
            outs[i][s * NH * HD..(s + n) * NH * HD]
                .copy_from_slice(&out[row * NH * HD..(row + n) * NH * HD]);
            row += n;
            done[i] += n;
        }
    }
    outs
}

#[test]
fn paged_equals_naive_bit_for_bit_under_any_chunking() {
    let mut rng = StdRng::seed_from_u64(7);
    let lens = [13usize, 5, 22];
    let seqs: Vec<Seq> = lens.iter().map(|&l| random_seq(&mut rng, l)).collect();
    let scale = 1.0 / (HD as f32).sqrt();
    let want: Vec<Vec<f32>> = seqs.iter().map(|s| naive(s, scale)).collect();
    // Scattered, non-contiguous block tables (blocks of one sequence interleave with others').
    let tables = vec![vec![9, 2, 30, 4], vec![17, 1], vec![3, 40, 8, 11, 5, 60]];
    let layouts: Vec<Vec<Vec<usize>>> = vec![
        // whole prompts at once, all together
        vec![vec![13], vec![5], vec![22]],
        // chunked prefill then one-token decode steps, interleaved
        vec![
            vec![4, 4, 1, 1, 1, 1, 1],
            vec![0, 5],
            vec![7, 0, 8, 1, 1, 1, 1, 1, 1, 1],
        ],
        // one token at a time
        vec![vec![1; 13], vec![1; 5], vec![1; 22]],
        // each sequence alone in its own steps
        vec![vec![13, 0, 0], vec![0, 5, 0], vec![0, 0, 22]],
    ];
    for (li, chunks) in layouts.iter().enumerate() {
        let got = paged::<f32>(&seqs, &tables, chunks, scale);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let same = g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "layout {li}, sequence {i} differs from the naive reference"
            );
        }
    }
}

#[test]
fn large_batches_take_the_parallel_path_and_stay_exact() {
    let mut rng = StdRng::seed_from_u64(11);
    let seqs: Vec<Seq> = (0..4).map(|_| random_seq(&mut rng, 40)).collect();
    let scale = 0.3;
    let tables: Vec<Vec<u32>> = (0..4u32)
        .map(|i| (0..10).map(|b| b * 4 + i).collect())
        .collect();
    let got = paged::<f32>(&seqs, &tables, &vec![vec![40]; 4], scale);
    let got2 = paged::<f32>(&seqs, &tables, &vec![vec![17, 23]; 4], scale);
    for i in 0..4 {
        let w = naive(&seqs[i], scale);
        assert!(
            got[i]
                .iter()
                .zip(&w)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        assert!(
            got2[i]
                .iter()
                .zip(&w)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }
}

#[test]
fn bad_shapes_are_errors() {
    let mut cache = PagedKvCache::<f32>::new(1, 2, BS, NKV, HD);
    assert!(write_kv(cache.layer_mut(0), &[0.0; 3], &[0.0; 3], &[0]).is_err());
    let k = vec![0.0; NKV * HD];
    assert!(write_kv(cache.layer_mut(0), &k, &k, &[8]).is_err());
    let batch = ForwardBatch::build(
        &[SeqInput {
            tokens: &[1],
            start: 0,
            block_table: &[5],
            sample: true,
        }],
        BS,
    )
    .unwrap();
    let q = vec![0.0; NH * HD];
    let mut out = q.clone();
    assert!(paged_attention(&q, cache.layer(0), &batch, 1.0, &mut out).is_err());
}

#[test]
fn an_f16_cache_gives_the_bits_of_an_f32_cache_holding_the_rounded_values() {
    // Widening f16 to f32 is exact, so the f16 kernels (F16C loads, scalar tail: HD is
    // not a multiple of 8) must give what the f32 ones give on K/V rounded through f16.
    let mut rng = StdRng::seed_from_u64(11);
    let mut seqs: Vec<Seq> = [9usize, 17]
        .iter()
        .map(|&l| random_seq(&mut rng, l))
        .collect();
    let round = |v: &mut Vec<f32>| {
        v.iter_mut()
            .for_each(|x| *x = half::f16::from_f32(*x).to_f32())
    };
    for s in &mut seqs {
        round(&mut s.k);
        round(&mut s.v);
    }
    let scale = 1.0 / (HD as f32).sqrt();
    let tables = vec![vec![6, 1, 12], vec![3, 20, 7, 9, 2]];
    let chunks = vec![vec![5, 1, 1, 1, 1], vec![8, 9]];
    let bits = |o: &[Vec<f32>]| -> Vec<u32> { o.iter().flatten().map(|x| x.to_bits()).collect() };
    let f32_out = paged::<f32>(&seqs, &tables, &chunks, scale);
    let f16_out = paged::<half::f16>(&seqs, &tables, &chunks, scale);
    assert_eq!(bits(&f16_out), bits(&f32_out));
    let naive_out: Vec<Vec<f32>> = seqs.iter().map(|s| naive(s, scale)).collect();
    assert_eq!(bits(&f16_out), bits(&naive_out));
}
