//! llama.cpp's tokenizer test vectors (`ggml-vocab-*.gguf` with `.inp` / `.out`)
//! against our GGUF-built tokenizers. The files come from the
//! `llama-cpp-python==0.3.16` sdist (`vendor/llama.cpp/models/`), which
//! `scripts/setup.sh --test-deps` unpacks into `~/.cache/candela/vocab`
//! (`CANDELA_VOCAB_DIR` overrides it).

use std::path::PathBuf;

use candela_model::load_gguf::read_gguf;
use candela_model::tokenizer::tokenizer_from_gguf;

fn vocab_dir() -> PathBuf {
    std::env::var("CANDELA_VOCAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            PathBuf::from(home).join(".cache/candela/vocab")
        })
}

fn check(name: &str) {
    let dir = vocab_dir();
    let gguf = dir.join(format!("ggml-vocab-{name}.gguf"));
    assert!(
        gguf.exists(),
        "{} is missing: unpack vendor/llama.cpp/models/ggml-vocab-* from the llama-cpp-python==0.3.16 sdist there",
        gguf.display()
    );
    let (content, _) = read_gguf(&gguf).unwrap();
    let tk = tokenizer_from_gguf(&content).unwrap().tokenizer;
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    // Every input ends with the separator line; one output line per input.
    let inputs: Vec<&str> = inp.split_terminator("\n__ggml_vocab_test__\n").collect();
    let outputs: Vec<&str> = out.lines().collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{name}: {} inputs but {} expected outputs",
        inputs.len(),
        outputs.len()
    );
    let mut failures = Vec::new();
    for (text, want) in inputs.iter().zip(&outputs) {
        let want: Vec<u32> = want
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let got = tk.encode(*text, false).unwrap().get_ids().to_vec();
        if got != want {
            failures.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} differ:\n{}",
        failures.len(),
        outputs.len(),
        failures.join("\n")
    );
}

#[test]
fn gpt2_vectors() {
    check("gpt-2");
}

#[test]
fn starcoder_vectors_cover_the_smollm_pre_tokenizer() {
    check("starcoder");
    check("refact");
}

#[test]
fn qwen2_vectors() {
    check("qwen2");
}

#[test]
fn llama_bpe_vectors() {
    check("llama-bpe");
}
