//! The Q4_K_M model of TEST-ASSETS (Qwen2.5-Coder-0.5B-Instruct; its tensors are Q4_K,
//! Q6_K, Q5_0 and Q8_0, every projection on Candela's kernels), which
//! `scripts/setup.sh --test-deps` assembles: a greedy answer, and a batched step that
//! gives each sequence the logits it gets alone, bit for bit.

use std::sync::OnceLock;

use candela_model::{
    ForwardBatch, LoadedModel, SeqInput, reference_generate_greedy, reference_logits,
};

mod common;

fn model() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    common::load(&M, common::QWEN_Q4_K_M)
}

fn encode(text: &str) -> Vec<u32> {
    common::encode(model(), text)
}

#[test]
fn greedy_answer_is_paris() {
    let m = model();
    let prompt = encode("The capital of France is");
    let out = reference_generate_greedy(&m.model, &prompt, 6, &m.eos_token_ids).unwrap();
    let text = m.tokenizer.decode(&out.tokens, true).unwrap();
    assert!(text.contains("Paris"), "{text:?}");
}

#[test]
fn batched_step_equals_each_sequence_alone() {
    let m = &model().model;
    let a = encode("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n");
    let b = encode("The quick brown fox");
    let (bs, cut, bp) = (4, 7, b.len() - 1);
    let a_end = a.len().min(cut + 10);
    let ta: Vec<u32> = (0..16).map(|i| 2 * i).collect();
    let tb: Vec<u32> = (0..16).map(|i| 2 * i + 1).collect();
    let seq = |tokens, start, block_table, sample| SeqInput {
        tokens,
        start,
        block_table,
        sample,
    };
    let s1 = ForwardBatch::build(
        &[seq(&a[..cut], 0, &ta, false), seq(&b[..bp], 0, &tb, false)],
        bs,
    )
    .unwrap();
    let s2 = ForwardBatch::build(
        &[
            seq(&b[bp..], bp, &tb, true),
            seq(&a[cut..a_end], cut, &ta, true),
        ],
        bs,
    )
    .unwrap();
    let mut cache = m.new_cache(32, bs);
    m.forward(&s1, &mut cache).unwrap();
    let got = m
        .forward(&s2, &mut cache)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let want_b = reference_logits(m, &b[..bp], &b[bp..]).unwrap();
    let want_a = reference_logits(m, &a[..a_end], &[]).unwrap();
    for (name, g, w) in [("b", &got[0], &want_b[1]), ("a", &got[1], &want_a[0])] {
        assert_eq!(g.len(), w.len());
        assert!(
            g.iter()
                .zip(w.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "sequence {name} differs from its logits alone"
        );
    }
}
