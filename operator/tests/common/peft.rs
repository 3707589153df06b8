//! PEFT LoRA adapters for the default model (SmolLM2-135M), written by the committed
//! `scripts/make-lora-adapters.py` from the model's Hugging Face `config.json` (the export
//! `scripts/setup.sh --test-deps` makes next to the GGUF).

use std::path::Path;
use std::process::{Command, Stdio};

/// Writes a rank-8 adapter on `q_proj` and `v_proj` of every layer into `dir`; `seed` makes
/// adapters differ.
pub fn write_adapter(dir: &Path, seed: u32) {
    let config = super::stack::model_path().with_file_name("SmolLM2-135M-Instruct-hf/config.json");
    assert!(
        config.is_file(),
        "{} is missing: run scripts/setup.sh --test-deps",
        config.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-lora-adapters.py");
    let (parent, name) = (
        dir.parent().expect("a parent"),
        dir.file_name().expect("a name"),
    );
    let status = Command::new("python3")
        .arg(script)
        .args(["--config".as_ref(), config.as_os_str()])
        .args(["--out".as_ref(), parent.as_os_str()])
        .args(["--names".as_ref(), name])
        .args([
            "--rank",
            "8",
            "--targets",
            "q_proj,v_proj",
            "--seed",
            &seed.to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("python3 runs scripts/make-lora-adapters.py");
    assert!(status.success(), "scripts/make-lora-adapters.py failed");
}
