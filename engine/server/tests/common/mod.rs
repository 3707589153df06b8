//! Shared helpers of the server's integration tests: the real default model.

#![allow(dead_code)]

use std::path::PathBuf;

/// The default model `scripts/setup.sh` downloads; panics with the fix when it is missing.
pub fn default_model() -> PathBuf {
    let path = candela::cli::default_model_path().expect("$HOME is set");
    assert!(
        path.exists(),
        "the default model {} is missing: run `scripts/setup.sh` first (the README's test command does)",
        path.display()
    );
    path
}
