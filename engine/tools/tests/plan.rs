//! `candela plan` end to end through its flags: seed 000's worked example on the
//! real Llama-3-8B config.json (with and without counting all heads as KV
//! heads), the default SmolLM2 GGUF, quantized and nested configs, and the one
//! clear line bad input gets.

use std::path::{Path, PathBuf};

use candela_tools::plan::{self, PlanArgs, compute, inputs};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    plan: PlanArgs,
}

fn args(flags: &[&str]) -> PlanArgs {
    let argv = std::iter::once("plan").chain(flags.iter().copied());
    Cli::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("flags {flags:?}: {e}"))
        .plan
}

fn llama3_config() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/plan/llama-3-8b-config.json"
    )
    .into()
}

fn smollm2_gguf() -> PathBuf {
    let p = match std::env::var_os("CANDELA_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/candela/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    assert!(
        p.exists(),
        "test model {} is missing: run scripts/setup.sh (or set CANDELA_TEST_MODEL)",
        p.display()
    );
    p
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("candela-plan-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

const GIB: u64 = 1 << 30;

#[test]
fn llama3_8b_parameter_count_and_shape_come_from_the_config() {
    let m = plan::model::from_config(Path::new(&llama3_config())).unwrap();
    assert_eq!(m.params, 8_030_261_248, "Llama-3-8B has 8.03 B parameters");
    assert_eq!(
        (m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim),
        (32, 32, 8, 128)
    );
    assert_eq!(m.max_position_embeddings, Some(8192));
    assert_eq!(m.name, "LlamaForCausalLM");
    // A directory holding config.json reads the same.
    let dir = Path::new(&llama3_config())
        .parent()
        .unwrap()
        .join("llama-dir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(llama3_config(), dir.join("config.json")).unwrap();
    assert_eq!(plan::model::from_config(&dir).unwrap().params, m.params);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn seed_example_is_reproduced_when_all_32_heads_are_counted() {
    let cfg = llama3_config();
    let p = compute(
        &inputs(&args(&[
            "--model-config",
            &cfg,
            "--gpu",
            "A100-80G",
            "--max-model-len",
            "8192",
            "--num-kv-heads",
            "32",
        ]))
        .unwrap(),
    )
    .unwrap();
    // 2 x 32 layers x 32 heads x 128 x 2 B = 512 KiB per token.
    assert_eq!(p.kv_bytes_per_token, 512 * 1024);
    // 80 GiB x 0.9 - 8.03 B x 2 B (14.96 GiB) = 57.04 GiB ("56GB" in the seed).
    assert!((p.weights_gib - 14.957).abs() < 0.001, "{}", p.weights_gib);
    assert!((p.kv_pool_gib - 57.04).abs() < 0.01, "{}", p.kv_pool_gib);
    // Seed: ~110k tokens, 137 concurrent, recommend 100; the exact pool of this
    // config is 116,816 tokens (the weights here are 8.03 B params, not 16 GiB).
    assert_eq!(p.kv_pool_tokens, 116_816);
    assert!(
        (137.0..=146.5).contains(&p.theoretical_concurrency),
        "{}",
        p.theoretical_concurrency
    );
    assert_eq!(p.recommended_max_num_seqs, 102);
    assert!(p.max_model_len_fits);

    // With the seed's own 56 GB pool (weights taken as 16 GiB) the numbers are the seed's.
    let p = compute(
        &inputs(&args(&[
            "--model-config",
            &cfg,
            "--gpu",
            "A100-80G",
            "--num-kv-heads",
            "32",
            "--weights-gib",
            "16",
        ]))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(p.kv_pool_tokens, 114_688);
    assert_eq!(p.theoretical_concurrency, 143.36);
    assert_eq!(p.recommended_max_num_seqs, 100);
}

#[test]
fn the_real_gqa_config_holds_four_times_the_tokens() {
    let cfg = llama3_config();
    let a = args(&["--model-config", &cfg, "--gpu", "A100-80G"]);
    let p = compute(&inputs(&a).unwrap()).unwrap();
    assert_eq!(p.num_kv_heads, 8);
    assert_eq!(p.kv_bytes_per_token, 128 * 1024);
    assert_eq!(p.max_model_len, 8192, "defaults to max_position_embeddings");
    // floor(57.04 GiB / (16 x 128 KiB)) = 29,205 blocks.
    assert_eq!(p.kv_pool_tokens, 467_280);
    assert_eq!(p.recommended_max_num_seqs, 408);
    let gqa = p
        .notes
        .iter()
        .find(|n| n.contains("grouped-query"))
        .expect("a GQA note");
    assert!(
        gqa.contains("4x less") && gqa.contains("--num-kv-heads 32"),
        "{gqa}"
    );

    let text = plan::report(&a).unwrap();
    for want in [
        "32 layers, 32 attention heads, 8 KV heads, head_dim 128, 8.03 B params",
        "A100-80G: 80.00 GiB x 0.90 utilization = 72.00 GiB",
        "14.96 GiB (8.03 B params x 2 B, bf16 from torch_dtype bfloat16)",
        "72.00 - 14.96 = 57.04 GiB",
        "32 layers x 8 KV heads x 2 (K+V) x 128 head_dim x 2 B",
        "= 128.0 KiB",
        "KV dtype        bf16 (--kv-cache-dtype auto: the activation dtype, from torch_dtype bfloat16)",
        "467,280 (29,205 blocks of 16)",
        "500 prompt + 300 output = 800 tokens",
        "467,280 / 800 = 584.1 requests",
        "--max-num-seqs 408  (584.1 x (1 - 0.30 buffer))",
        "8192: one request fits; 57 such requests fit at once",
        "note: LlamaForCausalLM uses grouped-query attention",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn json_carries_the_same_numbers() {
    let cfg = llama3_config();
    let a = args(&["--model-config", &cfg, "--gpu-memory-gib", "80", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&plan::report(&a).unwrap()).unwrap();
    assert_eq!(v["kv_pool_tokens"], 467_280);
    assert_eq!(v["kv_bytes_per_token"], 131_072);
    assert_eq!(v["recommended_max_num_seqs"], 408);
    assert_eq!(v["max_model_len_fits"], true);
    assert_eq!(v["gpu"], serde_json::Value::Null);
    assert_eq!(v["num_kv_heads_model"], 8);
    assert!(v["notes"].as_array().unwrap().len() >= 2);
}

#[test]
fn kv_fp8_and_tensor_parallel_flags_apply() {
    let cfg = llama3_config();
    let base =
        compute(&inputs(&args(&["--model-config", &cfg, "--gpu", "H100-80G"])).unwrap()).unwrap();
    let fp8 = compute(
        &inputs(&args(&[
            "--model-config",
            &cfg,
            "--gpu",
            "H100",
            "--kv-cache-dtype",
            "fp8",
        ]))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(fp8.kv_bytes_per_token * 2, base.kv_bytes_per_token);
    assert_eq!(fp8.kv_cache_dtype_source, "fp8 (--kv-cache-dtype fp8)");
    assert!(fp8.kv_pool_tokens >= 2 * base.kv_pool_tokens - 16);
    let tp2 = compute(
        &inputs(&args(&[
            "--model-config",
            &cfg,
            "--gpu",
            "L40S",
            "--tensor-parallel-size",
            "2",
        ]))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(tp2.kv_bytes_per_token_per_gpu, 64 * 1024);
    assert!((tp2.weights_gib_per_gpu * 2.0 - tp2.weights_gib).abs() < 1e-6);
    let text = plan::render::text(&tp2);
    assert!(text.contains("per GPU, 2 GPUs (tensor parallel)"), "{text}");
}

#[test]
fn default_smollm2_gguf_plans_from_its_metadata_and_size() {
    let gguf = smollm2_gguf();
    let m = plan::model::from_gguf(&gguf).unwrap();
    assert_eq!(m.architecture, "llama");
    assert_eq!(
        (m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim),
        (30, 9, 3, 64)
    );
    assert_eq!(m.max_position_embeddings, Some(8192));
    assert!(
        (130_000_000..140_000_000).contains(&m.params),
        "{}",
        m.params
    );
    let size = std::fs::metadata(&gguf).unwrap().len();
    assert_eq!(m.file_bytes, Some(size));

    let g = gguf.to_str().unwrap();
    let p = compute(&inputs(&args(&["--gguf", g, "--gpu", "L4"])).unwrap()).unwrap();
    // 2 x 30 layers x 3 KV heads x 64 x 2 B (bf16 activations on a GPU).
    assert_eq!(p.kv_bytes_per_token, 23_040);
    let usable = (23_034u64 * 1024 * 1024) as f64 * 0.9;
    let blocks = (usable.floor() as u64 - size) / (16 * 23_040);
    assert_eq!(p.kv_pool_tokens, blocks * 16);
    assert_eq!(p.recommended_max_num_seqs, (blocks * 16 * 7 / 8000) as u64);
    assert!(p.weights_source.contains("GGUF file size"));
    let text = plan::report(&args(&["--gguf", g, "--gpu", "L4"])).unwrap();
    assert!(
        text.contains("30 layers x 3 KV heads x 2 (K+V) x 64 head_dim x 2 B"),
        "{text}"
    );
    assert!(
        text.contains("grouped-query attention: its 9 query heads share 3 KV heads"),
        "{text}"
    );
}

#[test]
fn quantized_and_nested_configs() {
    let d = tmp_dir("awq");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(llama3_config()).unwrap()).unwrap();
    cfg["quantization_config"] =
        serde_json::json!({"quant_method": "awq", "bits": 4, "group_size": 128});
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let dir = d.to_str().unwrap();
    let awq = compute(&inputs(&args(&["--model-config", dir, "--gpu", "A10G"])).unwrap()).unwrap();
    // 6.98 B linear parameters at 4 bits + 1.05 B (embeddings, LM head, norms) at 2 B.
    let linear = 32u64 * (4096 * 4096 * 2 + 2 * 4096 * 1024 + 3 * 4096 * 14336);
    let rest = 8_030_261_248 - linear;
    let want = linear / 2 + rest * 2;
    assert!((awq.weights_gib - want as f64 / GIB as f64).abs() < 1e-6);
    assert!(
        awq.weights_source.contains("awq 4-bit"),
        "{}",
        awq.weights_source
    );

    // A multimodal config nests the language model under text_config.
    let nested = serde_json::json!({
        "architectures": ["LlavaForConditionalGeneration"],
        "text_config": cfg,
        "torch_dtype": "float16",
    });
    std::fs::write(d.join("config.json"), nested.to_string()).unwrap();
    let m = plan::model::from_config(&d).unwrap();
    assert_eq!(m.num_kv_heads, 8);
    assert_eq!(m.torch_dtype.as_deref(), Some("float16"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_input_gets_one_clear_line() {
    let cfg = llama3_config();
    let missing = plan::report(&args(&[
        "--model-config",
        "/nonexistent/config.json",
        "--gpu",
        "T4",
    ]))
    .unwrap_err()
    .to_string();
    assert!(
        missing.starts_with("/nonexistent/config.json: "),
        "{missing}"
    );
    let not_gguf = plan::report(&args(&["--gguf", &cfg, "--gpu", "T4"]))
        .unwrap_err()
        .to_string();
    assert!(not_gguf.contains("not a readable GGUF file"), "{not_gguf}");
    let gpu = plan::report(&args(&["--model-config", &cfg, "--gpu", "B9000"]))
        .unwrap_err()
        .to_string();
    assert!(gpu.contains("unknown --gpu `B9000`"), "{gpu}");
    let too_small = plan::report(&args(&["--model-config", &cfg, "--gpu", "T4"]))
        .unwrap_err()
        .to_string();
    assert!(
        too_small.contains("the weights need 14.96 GiB per GPU"),
        "{too_small}"
    );
    let dtype = plan::report(&args(&[
        "--model-config",
        &cfg,
        "--gpu",
        "H200",
        "--kv-cache-dtype",
        "int4",
    ]))
    .unwrap_err()
    .to_string();
    assert!(dtype.contains("is not a KV cache dtype"), "{dtype}");
    for e in [&missing, &not_gguf, &gpu, &too_small, &dtype] {
        assert!(!e.contains('\n'), "one line: {e}");
    }
    // clap refuses conflicting or missing sources before anything runs.
    let argv = ["plan", "--model-config", "x", "--gguf", "y", "--gpu", "T4"];
    assert!(Cli::try_parse_from(argv).is_err());
    assert!(Cli::try_parse_from(["plan", "--model-config", "x"]).is_err());
    assert!(Cli::try_parse_from(["plan", "--gpu", "T4"]).is_err());
}
