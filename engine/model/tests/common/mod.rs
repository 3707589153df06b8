//! What the model integration tests share: the models `scripts/setup.sh` caches
//! under `~/.cache/candela/models`, located (an environment variable overrides the
//! path) and loaded once per test binary.

// Each test binary uses its own part of these.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use candela_model::LoadedModel;

/// SmolLM2-135M-Instruct Q4_1 (`scripts/setup.sh`; `CANDELA_TEST_MODEL` overrides it).
pub const SMOLLM2: (&str, &str) = ("CANDELA_TEST_MODEL", "SmolLM2-135M-Instruct.Q4_1.gguf");
/// Qwen2.5-Coder-0.5B-Instruct Q4_K_M (`scripts/setup.sh --test-deps`;
/// `CANDELA_KQUANT_MODEL` overrides it).
pub const QWEN_Q4_K_M: (&str, &str) = (
    "CANDELA_KQUANT_MODEL",
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
);

/// The cached model `(env, file)`; panics naming the setup step when it is missing.
pub fn model_path((env, file): (&str, &str)) -> PathBuf {
    let p = match std::env::var(env) {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            PathBuf::from(home).join(".cache/candela/models").join(file)
        }
    };
    assert!(
        p.exists(),
        "test model {} is missing: run scripts/setup.sh --test-deps (or set {env})",
        p.display()
    );
    p
}

/// The model `which`, loaded into `cell` on first use.
pub fn load(cell: &'static OnceLock<LoadedModel>, which: (&str, &str)) -> &'static LoadedModel {
    cell.get_or_init(|| candela_model::load(&model_path(which)).expect("load the test model"))
}

/// `text`'s token ids, no special tokens added.
pub fn encode(m: &LoadedModel, text: &str) -> Vec<u32> {
    m.tokenizer
        .encode(text, false)
        .expect("encode")
        .get_ids()
        .to_vec()
}
