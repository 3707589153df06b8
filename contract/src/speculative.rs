//! `--speculative-config`: vLLM's JSON for speculative decoding, parsed into
//! [`SpeculativeConfig`] with vLLM's defaults and checks.
//!
//! Two methods: `ngram` (prompt lookup: drafts copied from the request's own context)
//! and `draft_model` (a smaller model with the same tokenizer drafts; vLLM picks it
//! when only `model` is given). Other vLLM methods (`eagle`, `medusa`, `mtp`, …) and
//! unknown keys are refused by name rather than ignored.

use serde::Deserialize;

/// How drafts are proposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpeculativeConfig {
    /// `{"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_min": a,
    /// "prompt_lookup_max": b}`.
    Ngram {
        num_speculative_tokens: usize,
        prompt_lookup_min: usize,
        prompt_lookup_max: usize,
    },
    /// `{"method": "draft_model", "model": M, "num_speculative_tokens": k}`: `M` is
    /// what `--model` accepts.
    DraftModel {
        model: String,
        num_speculative_tokens: usize,
    },
}

impl SpeculativeConfig {
    /// Most tokens drafted per request and step.
    pub fn num_speculative_tokens(&self) -> usize {
        match self {
            SpeculativeConfig::Ngram {
                num_speculative_tokens,
                ..
            }
            | SpeculativeConfig::DraftModel {
                num_speculative_tokens,
                ..
            } => *num_speculative_tokens,
        }
    }
}

/// The JSON as written; [`parse`] turns it into a [`SpeculativeConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    method: Option<String>,
    model: Option<String>,
    num_speculative_tokens: Option<usize>,
    prompt_lookup_min: Option<usize>,
    prompt_lookup_max: Option<usize>,
}

/// Parses `--speculative-config` (clap's value parser).
///
/// # Errors
/// One line naming the key or value at fault.
pub fn parse(json: &str) -> Result<SpeculativeConfig, String> {
    let raw: Raw =
        serde_json::from_str(json).map_err(|e| format!("invalid speculative config JSON: {e}"))?;
    let ngram = raw.method.as_deref() == Some("ngram")
        || (raw.method.is_none() && raw.model.as_deref() == Some("[ngram]"));
    let k = match raw.num_speculative_tokens {
        Some(0) => return Err("num_speculative_tokens must be at least 1".into()),
        Some(k) => k,
        None => return Err("num_speculative_tokens is required".into()),
    };
    if ngram {
        // vLLM's defaults: both 5 when neither is given, else the one given for both.
        let (min, max) = match (raw.prompt_lookup_min, raw.prompt_lookup_max) {
            (None, None) => (5, 5),
            (Some(a), None) => (a, a),
            (None, Some(b)) => (b, b),
            (Some(a), Some(b)) => (a, b),
        };
        if min == 0 {
            return Err("prompt_lookup_min must be at least 1".into());
        }
        if max < min {
            return Err(format!(
                "prompt_lookup_max ({max}) must be at least prompt_lookup_min ({min})"
            ));
        }
        return Ok(SpeculativeConfig::Ngram {
            num_speculative_tokens: k,
            prompt_lookup_min: min,
            prompt_lookup_max: max,
        });
    }
    match raw.method.as_deref() {
        None | Some("draft_model") => {}
        Some(other) => {
            return Err(format!(
                "speculative method {other:?} is not supported; use \"ngram\" or \"draft_model\""
            ));
        }
    }
    if raw.prompt_lookup_min.is_some() || raw.prompt_lookup_max.is_some() {
        return Err(
            "prompt_lookup_min and prompt_lookup_max are only read by the ngram method".into(),
        );
    }
    match raw.model {
        Some(model) if !model.is_empty() => Ok(SpeculativeConfig::DraftModel {
            model,
            num_speculative_tokens: k,
        }),
        _ => Err("the draft_model method needs \"model\" (a path or hub reference)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngram_takes_vllms_defaults() {
        let c = parse(r#"{"method":"ngram","num_speculative_tokens":4,"prompt_lookup_max":3}"#)
            .unwrap();
        assert_eq!(
            c,
            SpeculativeConfig::Ngram {
                num_speculative_tokens: 4,
                prompt_lookup_min: 3,
                prompt_lookup_max: 3
            }
        );
        let c = parse(r#"{"model":"[ngram]","num_speculative_tokens":2}"#).unwrap();
        assert!(matches!(c, SpeculativeConfig::Ngram { .. }));
        assert_eq!(c.num_speculative_tokens(), 2);
    }

    #[test]
    fn a_model_alone_means_draft_model() {
        let c = parse(r#"{"model":"/m/draft.gguf","num_speculative_tokens":3}"#).unwrap();
        assert_eq!(
            c,
            SpeculativeConfig::DraftModel {
                model: "/m/draft.gguf".into(),
                num_speculative_tokens: 3
            }
        );
    }

    #[test]
    fn bad_configs_name_what_is_wrong() {
        for (json, needle) in [
            ("{", "invalid speculative config JSON"),
            (
                r#"{"method":"ngram"}"#,
                "num_speculative_tokens is required",
            ),
            (
                r#"{"method":"ngram","num_speculative_tokens":0}"#,
                "at least 1",
            ),
            (
                r#"{"method":"ngram","num_speculative_tokens":2,"prompt_lookup_min":4,"prompt_lookup_max":2}"#,
                "prompt_lookup_max (2)",
            ),
            (
                r#"{"method":"eagle","model":"x","num_speculative_tokens":2}"#,
                "\"eagle\" is not supported",
            ),
            (
                r#"{"method":"draft_model","num_speculative_tokens":2}"#,
                "needs \"model\"",
            ),
            (
                r#"{"method":"ngram","num_speculative_tokens":2,"disable_by_batch_size":4}"#,
                "unknown field `disable_by_batch_size`",
            ),
            (
                r#"{"model":"m","num_speculative_tokens":2,"prompt_lookup_max":2}"#,
                "only read by the ngram method",
            ),
        ] {
            let e = parse(json).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }
}
