//! The Hugging Face loading path, checked against the GGUF one: the real
//! SmolLM2 GGUF is exported ([`candela_model::hf_export`]) into a `config.json` +
//! two safetensors shards with their index + `tokenizer.json` directory (q/k
//! un-permuted back to the HF rope layout), and the HF-loaded model must answer
//! like the GGUF one and stay batch-invariant.

use std::path::PathBuf;

use candela_model::{ForwardBatch, SeqInput, reference_generate_greedy, reference_logits};

mod common;

fn gguf_path() -> PathBuf {
    common::model_path(common::SMOLLM2)
}

#[test]
fn hf_directory_loads_and_agrees_with_gguf() {
    let dir = std::env::temp_dir().join(format!("candela-hf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    candela_model::hf_export::gguf_to_hf_dir(&gguf_path(), &dir, 2).unwrap();
    assert!(dir.join("model.safetensors.index.json").exists());
    assert!(dir.join("model-00002-of-00002.safetensors").exists());
    let hf = candela_model::load(&dir).unwrap();
    let gg = candela_model::load(&gguf_path()).unwrap();
    std::fs::remove_dir_all(&dir).ok();

    assert_eq!(hf.config.num_layers, 30);
    assert_eq!(hf.eos_token_ids, vec![2]);
    assert_eq!(hf.bos_token_id, Some(1));
    assert_eq!(hf.eos_token.as_deref(), Some("<|im_end|>"));
    assert!(
        hf.chat_template
            .as_deref()
            .is_some_and(|t| t.contains("<|im_start|>"))
    );
    let text = "The capital of France is";
    let ids = hf.tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    assert_eq!(
        ids,
        gg.tokenizer.encode(text, false).unwrap().get_ids().to_vec()
    );

    // Same greedy answer; logits close (the GGUF path also rounds activations to 8 bits).
    let run = reference_generate_greedy(&hf.model, &ids, 4, &[]).unwrap();
    let answer = hf.tokenizer.decode(&run.tokens, true).unwrap();
    assert!(answer.contains("Paris"), "{answer:?}");
    let lh = &reference_logits(&hf.model, &ids, &[]).unwrap()[0];
    let lg = &reference_logits(&gg.model, &ids, &[]).unwrap()[0];
    let diff = lh
        .iter()
        .zip(lg)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1.5, "HF vs GGUF logits differ by {diff}");

    // The exported f16 weights stay 16-bit in memory: 2 bytes for each of
    // SmolLM2-135M's 134.5 M parameters (f32 would be 538 MB).
    let bytes = hf.model.weight_bytes();
    assert!(
        (260_000_000..280_000_000).contains(&bytes),
        "{bytes} weight bytes"
    );

    // Batch invariance holds on the 16-bit path too.
    let other = hf
        .tokenizer
        .encode("Hello there, how", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let mut cache = hf.model.new_cache(16, 4);
    let b = ForwardBatch::build(
        &[
            SeqInput {
                tokens: &other,
                start: 0,
                block_table: &[8, 9, 10],
                sample: true,
            },
            SeqInput {
                tokens: &ids,
                start: 0,
                block_table: &[3, 1],
                sample: true,
            },
        ],
        4,
    )
    .unwrap();
    let got = hf
        .model
        .forward(&b, &mut cache)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert!(
        got[1]
            .iter()
            .zip(lh.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}
