//! The Hugging Face loading path, checked against the GGUF one: the real
//! SmolLM2 GGUF is dequantized into a `config.json` + `model.safetensors` +
//! `tokenizer.json` directory (q/k un-permuted back to the HF rope layout), and
//! the HF-loaded model must answer like the GGUF one and stay batch-invariant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candela_model::load_gguf::read_gguf;
use candela_model::tokenizer::tokenizer_from_gguf;
use candela_model::{ForwardBatch, SeqInput, reference_generate_greedy, reference_logits};
use candle_core::{DType, Device, Tensor};

fn gguf_path() -> PathBuf {
    if let Ok(p) = std::env::var("CANDELA_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let p = PathBuf::from(home).join(".cache/candela/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "test model {} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

/// GGUF rows of one head are `[hd/2][2]` (interleaved rope); HF's are `[2][hd/2]`.
fn unpermute(w: &Tensor, heads: usize) -> Tensor {
    let (rows, cols) = w.dims2().unwrap();
    let hd = rows / heads;
    w.reshape((heads, hd / 2, 2, cols))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

fn write_hf_dir(gguf: &Path, dir: &Path) {
    let (content, mut file) = read_gguf(gguf).unwrap();
    let get = |f: &mut std::fs::File, n: &str| {
        content
            .tensor(f, n, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
    };
    let mut ts: HashMap<String, Tensor> = HashMap::new();
    ts.insert(
        "model.embed_tokens.weight".into(),
        get(&mut file, "token_embd.weight"),
    );
    ts.insert(
        "model.norm.weight".into(),
        get(&mut file, "output_norm.weight"),
    );
    for i in 0..30 {
        let g = |f: &mut std::fs::File, s: &str| get(f, &format!("blk.{i}.{s}.weight"));
        let h = |s: &str| format!("model.layers.{i}.{s}.weight");
        ts.insert(h("self_attn.q_proj"), unpermute(&g(&mut file, "attn_q"), 9));
        ts.insert(h("self_attn.k_proj"), unpermute(&g(&mut file, "attn_k"), 3));
        ts.insert(h("self_attn.v_proj"), g(&mut file, "attn_v"));
        ts.insert(h("self_attn.o_proj"), g(&mut file, "attn_output"));
        ts.insert(h("mlp.gate_proj"), g(&mut file, "ffn_gate"));
        ts.insert(h("mlp.up_proj"), g(&mut file, "ffn_up"));
        ts.insert(h("mlp.down_proj"), g(&mut file, "ffn_down"));
        ts.insert(h("input_layernorm"), g(&mut file, "attn_norm"));
        ts.insert(h("post_attention_layernorm"), g(&mut file, "ffn_norm"));
    }
    // stored as bf16 would lose too much; f16 exercises the widening path at half the size
    let ts: HashMap<String, Tensor> = ts
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F16).unwrap()))
        .collect();
    candle_core::safetensors::save(&ts, dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
        "num_key_value_heads": 3, "num_hidden_layers": 30, "vocab_size": 49152,
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2, "rope_scaling": null
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let tk = tokenizer_from_gguf(&content).unwrap();
    tk.tokenizer
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
    let tc = serde_json::json!({
        "chat_template": tk.chat_template, "bos_token": "<|im_start|>",
        "eos_token": {"content": "<|im_end|>", "special": true}
    });
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
}

#[test]
fn hf_directory_loads_and_agrees_with_gguf() {
    let dir = std::env::temp_dir().join(format!("candela-hf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_hf_dir(&gguf_path(), &dir);
    let hf = candela_model::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let gg = candela_model::load(&gguf_path(), &Device::Cpu, DType::F32).unwrap();
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

    // Batch invariance holds on the f32 path too.
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
