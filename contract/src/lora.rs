//! LoRA adapters on the command line: `--lora-modules` entries ([`LoraModule`], vLLM's
//! two spellings) and the limits vLLM checks (`--max-lora-rank` values, `--max-cpu-loras`
//! at least `--max-loras`).
//!
//! The runtime switch for `POST /v1/load_lora_adapter` and `/v1/unload_lora_adapter` is
//! vLLM's environment variable [`crate::env::ALLOW_RUNTIME_LORA_UPDATING`].

use serde::Deserialize;

/// The ranks `--max-lora-rank` accepts (vLLM's `possible_max_ranks`).
pub const MAX_LORA_RANKS: [usize; 9] = [1, 8, 16, 32, 64, 128, 256, 320, 512];

/// vLLM's defaults.
pub const DEFAULT_MAX_LORAS: usize = 1;
pub const DEFAULT_MAX_LORA_RANK: usize = 16;

/// One `--lora-modules` entry: an adapter the server loads at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraModule {
    /// What a request's `model` names to select it.
    pub name: String,
    /// A PEFT directory (`adapter_config.json`, `adapter_model.safetensors`) or a hub
    /// repository (`hf://org/name`).
    pub path: String,
    /// The base model `/v1/models` lists as the adapter's `parent` [default: the first
    /// served model name].
    #[serde(default)]
    pub base_model_name: Option<String>,
}

impl std::fmt::Display for LoraModule {
    /// The spelling [`parse_module`] reads back: `name=path`, or the JSON form when a
    /// base model name is set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.base_model_name {
            None => write!(f, "{}={}", self.name, self.path),
            Some(base) => write!(
                f,
                "{}",
                serde_json::json!({"name": self.name, "path": self.path, "base_model_name": base})
            ),
        }
    }
}

/// Parses one `--lora-modules` value: `name=path` or
/// `{"name": ..., "path": ..., "base_model_name": ...}` (clap's value parser).
///
/// # Errors
/// One line naming what is wrong.
pub fn parse_module(value: &str) -> Result<LoraModule, String> {
    let module = if value.trim_start().starts_with('{') {
        serde_json::from_str::<LoraModule>(value)
            .map_err(|e| format!("invalid LoRA module JSON: {e}"))?
    } else {
        let (name, path) = value
            .split_once('=')
            .ok_or_else(|| format!("expected name=path or JSON, got {value:?}"))?;
        LoraModule {
            name: name.to_owned(),
            path: path.to_owned(),
            base_model_name: None,
        }
    };
    check_adapters([(module.name.as_str(), module.path.as_str())])?;
    Ok(module)
}

/// Checks adapters `(name, path)` as the engine takes them, from `--lora-modules` or the
/// sidecar's list: valid names, each given once, non-empty paths.
///
/// # Errors
/// One line naming the first adapter at fault.
pub fn check_adapters<'a>(
    adapters: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for (name, path) in adapters {
        check_name(name)?;
        if path.trim().is_empty() {
            return Err(format!("LoRA adapter {name:?} has an empty path"));
        }
        if !names.insert(name) {
            return Err(format!("LoRA adapter name {name:?} is given twice"));
        }
    }
    Ok(())
}

/// An adapter name as requests will write it in `model`: not empty, no whitespace.
///
/// # Errors
/// One line naming the name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "LoRA adapter name {name:?} must be non-empty without whitespace"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_parse_and_display_round_trips() {
        let m = parse_module("sql=/adapters/sql").unwrap();
        assert_eq!(
            m,
            LoraModule {
                name: "sql".into(),
                path: "/adapters/sql".into(),
                base_model_name: None
            }
        );
        assert_eq!(parse_module(&m.to_string()).unwrap(), m);
        let j =
            parse_module(r#"{"name":"chat","path":"hf://org/chat-lora","base_model_name":"smol"}"#)
                .unwrap();
        assert_eq!(j.base_model_name.as_deref(), Some("smol"));
        assert_eq!(j.path, "hf://org/chat-lora");
        assert_eq!(parse_module(&j.to_string()).unwrap(), j);
    }

    #[test]
    fn bad_entries_name_the_problem() {
        assert!(parse_module("no-equals").unwrap_err().contains("name=path"));
        assert!(parse_module("=/p").unwrap_err().contains("non-empty"));
        assert!(parse_module("a b=/p").unwrap_err().contains("whitespace"));
        assert!(parse_module("a=").unwrap_err().contains("empty path"));
        let e = parse_module(r#"{"name":"a","path":"/p","scale":2}"#).unwrap_err();
        assert!(e.contains("unknown field `scale`"), "{e}");
    }
}
