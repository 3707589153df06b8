//! What `candela serve --model` accepts, as `vllm serve` users expect: a local GGUF file or
//! Hugging Face directory, `hf://org/name`, or a bare `org/name` that is not a local path.
//! A `:QUANT` suffix on a hub reference picks a GGUF file by quantization
//! (`org/name:Q4_K_M`, as llama.cpp's `-hf` does). Without `--model`, `candela serve`
//! runs [`default_model_path`] (and `candela bench` tokenizes with it).

use std::fmt;
use std::path::{Path, PathBuf};

/// Scheme prefix of an explicit hub reference.
pub const HUB_SCHEME: &str = "hf://";

/// File name of the default model `scripts/setup.sh` downloads.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `~/.cache/candela/models/SmolLM2-135M-Instruct.Q4_1.gguf`, the model `candela serve`
/// runs (and `candela bench` tokenizes with) when none is given; `None` without `$HOME`.
pub fn default_model_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(
        PathBuf::from(home)
            .join(".cache/candela/models")
            .join(DEFAULT_MODEL_FILE),
    )
}

/// A parsed `--model` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A GGUF file or a directory with `config.json`, `*.safetensors` and `tokenizer.json`.
    Local(PathBuf),
    /// A model repository on the Hugging Face Hub (or the mirror `HF_ENDPOINT` names).
    Hub(HubRef),
}

/// `org/name` on the hub, with an optional GGUF quantization tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// Repository id, `org/name`.
    pub repo: String,
    /// GGUF quantization to pick (`Q4_K_M`), matched case-insensitively in file names.
    pub quant: Option<String>,
}

impl ModelRef {
    /// Parses a `--model` value. `hf://…` is always a hub reference; anything else is a
    /// local path when `exists` says so, else a hub reference when it has the `org/name`
    /// shape, else a local path (whose absence the loader reports).
    ///
    /// # Errors
    /// One line when an `hf://` reference is malformed.
    pub fn parse(value: &str, exists: impl Fn(&Path) -> bool) -> Result<Self, String> {
        if let Some(rest) = value.strip_prefix(HUB_SCHEME) {
            return HubRef::parse(rest).map(ModelRef::Hub);
        }
        if let Some(path) = value.strip_prefix("file://") {
            return Ok(ModelRef::Local(PathBuf::from(path)));
        }
        let path = Path::new(value);
        if exists(path) || value.starts_with(['/', '.', '~']) {
            return Ok(ModelRef::Local(path.to_path_buf()));
        }
        match HubRef::parse(value) {
            Ok(hub) => Ok(ModelRef::Hub(hub)),
            Err(_) => Ok(ModelRef::Local(path.to_path_buf())),
        }
    }
}

impl HubRef {
    /// Parses `org/name` or `org/name:QUANT` (no scheme).
    ///
    /// # Errors
    /// One line naming what is wrong with the repository id or the tag.
    pub fn parse(value: &str) -> Result<Self, String> {
        let (repo, quant) = match value.split_once(':') {
            Some((repo, quant)) => (repo, Some(quant)),
            None => (value, None),
        };
        let bad = |why: &str| format!("`{HUB_SCHEME}{value}` is not a hub model: {why}");
        let (org, name) = repo
            .split_once('/')
            .ok_or_else(|| bad("expected org/name"))?;
        for part in [org, name] {
            if !valid_repo_part(part) {
                return Err(bad(
                    "org and name are 1-96 of A-Z a-z 0-9 - _ . without leading or trailing - or ., `--` or `..`",
                ));
            }
        }
        if let Some(q) = quant
            && (q.is_empty()
                || !q
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(bad(
                "the :QUANT tag is letters, digits, _ - . (e.g. :Q4_K_M)",
            ));
        }
        Ok(Self {
            repo: repo.to_owned(),
            quant: quant.map(str::to_owned),
        })
    }

    /// The explicit form, `hf://org/name[:QUANT]`.
    pub fn uri(&self) -> String {
        format!("{HUB_SCHEME}{self}")
    }
}

impl fmt::Display for HubRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.quant {
            Some(q) => write!(f, "{}:{q}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

/// The hub's repository id rule (huggingface_hub `validate_repo_id`).
fn valid_repo_part(part: &str) -> bool {
    (1..=96).contains(&part.len())
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !part.starts_with(['-', '.'])
        && !part.ends_with(['-', '.'])
        && !part.contains("--")
        && !part.contains("..")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(s: &str) -> ModelRef {
        ModelRef::parse(s, |p| p == Path::new("models/local")).unwrap()
    }

    fn hub(repo: &str, quant: Option<&str>) -> ModelRef {
        ModelRef::Hub(HubRef {
            repo: repo.into(),
            quant: quant.map(Into::into),
        })
    }

    #[test]
    fn sources() {
        assert_eq!(
            parse("hf://Qwen/Qwen2.5-0.5B"),
            hub("Qwen/Qwen2.5-0.5B", None)
        );
        assert_eq!(
            parse("org/m-GGUF:Q4_K_M"),
            hub("org/m-GGUF", Some("Q4_K_M"))
        );
        assert_eq!(parse("hf://org/m:q8_0"), hub("org/m", Some("q8_0")));
        // An existing relative path wins over the org/name reading, as in vLLM.
        assert_eq!(
            parse("models/local"),
            ModelRef::Local("models/local".into())
        );
        assert_eq!(parse("/m/x.gguf"), ModelRef::Local("/m/x.gguf".into()));
        assert_eq!(parse("./a/b"), ModelRef::Local("./a/b".into()));
        assert_eq!(parse("file:///m/x"), ModelRef::Local("/m/x".into()));
        assert_eq!(parse("x.gguf"), ModelRef::Local("x.gguf".into()));
        assert_eq!(parse("a/b/c"), ModelRef::Local("a/b/c".into()));
    }

    #[test]
    fn malformed_hub_references_are_one_line() {
        for bad in [
            "hf://org",
            "hf://org/",
            "hf:///name",
            "hf://a/b/c",
            "hf://-a/b",
            "hf://a/b..c",
            "hf://a/b:",
            "hf://a/b:Q4 K",
        ] {
            let e = ModelRef::parse(bad, |_| false).unwrap_err();
            assert!(e.contains(bad) && !e.contains('\n'), "{bad}: {e}");
        }
    }

    proptest! {
        #[test]
        fn hub_references_round_trip(
            org in "[A-Za-z0-9]([A-Za-z0-9_]{0,10}[A-Za-z0-9])?",
            name in "[A-Za-z0-9]([A-Za-z0-9_.]{0,20}[A-Za-z0-9])?",
            quant in proptest::option::of("[A-Z0-9_]{1,8}"),
        ) {
            prop_assume!(!name.contains(".."));
            let r = HubRef { repo: format!("{org}/{name}"), quant };
            prop_assert_eq!(ModelRef::parse(&r.uri(), |_| false), Ok(ModelRef::Hub(r.clone())));
            prop_assert_eq!(ModelRef::parse(&r.to_string(), |_| false), Ok(ModelRef::Hub(r)));
        }
    }
}
