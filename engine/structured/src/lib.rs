//! Structured outputs: what a request constrains its text to (a JSON schema, any
//! JSON object, a regex, one of a list of strings, a Lark or GBNF grammar), compiled
//! by llguidance into a per-sequence token mask.
//!
//! [`Grammars`] is built once per tokenizer (llguidance's byte trie over the vocabulary
//! and its token-set slices). [`Grammars::compile`] turns a [`Constraint`] into a
//! [`Grammar`], or an [`Error::Invalid`] naming the problem (the API's 400). Each
//! sequence gets its own [`TokenMatcher`] from [`Grammar::matcher`]; it implements the
//! core's [`TokenConstraint`], which the model runner calls around every sampled token.
//!
//! The masks are exact: a token is allowed only if some continuation of the text it
//! completes can still match, and EOS only where the text is complete. Masking works
//! on raw logits, so batching, preemption and seeds do not change what is allowed.

mod error;
pub mod gbnf;

use std::sync::Arc;

use candela_core::TokenConstraint;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory, TokenParser};
use serde_json::{Value, json};
use tokenizers::Tokenizer;
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

pub use error::{Error, Result};

/// What a request's output must match (vLLM's `structured_outputs` kinds).
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject { whitespace: JsonWhitespace },
    /// JSON valid against `schema` (`json_schema`, `guided_json`).
    JsonSchema {
        schema: Value,
        whitespace: JsonWhitespace,
    },
    /// Text matching a regular expression (Rust `regex` syntax), whole.
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A grammar in llguidance's Lark dialect or in llama.cpp's GBNF.
    Grammar(String),
}

/// What JSON may have between its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonWhitespace {
    /// `", "` between items and `": "` after keys, nothing else: small models sampled
    /// at high temperature cannot wander off into endless newlines.
    Compact,
    /// Any JSON whitespace (vLLM's `disable_any_whitespace: false`).
    Any,
    /// Whitespace matching this regex (vLLM's `whitespace_pattern`).
    Pattern(String),
}

/// The tokenizer's vocabulary as llguidance sees it, for compiling constraints.
#[derive(Clone)]
pub struct Grammars {
    factory: Arc<ParserFactory>,
    /// The model's end-of-sequence ids.
    eos: Arc<[u32]>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars")
            .field(
                "vocab_size",
                &self.factory.tok_env().tok_trie().vocab_size(),
            )
            .finish()
    }
}

/// llguidance's tokenizer environment: the byte trie plus our tokenizer for the
/// few places llguidance tokenizes text itself (forced prefixes).
struct Env {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        let text = String::from_utf8_lossy(s);
        self.tokenizer
            .encode_fast(text.as_ref(), false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }
}

impl Grammars {
    /// Builds the byte trie of `tokenizer` for a model whose logits rows have
    /// `vocab_size` entries (ids past the tokenizer's are never allowed) and which
    /// ends a sequence with any of `eos_token_ids`.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when the tokenizer is neither byte-level nor
    /// byte-fallback BPE (llguidance needs every token's bytes).
    pub fn new(tokenizer: &Tokenizer, eos_token_ids: &[u32], vocab_size: usize) -> Result<Self> {
        let tok_err = |e: &dyn std::fmt::Display| Error::Tokenizer(e.to_string());
        let json: Value =
            serde_json::from_str(&tokenizer.to_string(false).map_err(|e| tok_err(&e))?)
                .map_err(|e| tok_err(&e))?;
        let mut words =
            llguidance::token_bytes_from_tokenizer_json(&json).map_err(|e| tok_err(&e))?;
        if words.len() > vocab_size {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {} tokens but the model only {vocab_size}",
                words.len()
            )));
        }
        // Padding ids the model has and the tokenizer does not: special, never text.
        while words.len() < vocab_size {
            let mut name = format!(".<[{}]>", words.len()).into_bytes();
            name[0] = TokTrie::SPECIAL_TOKEN_MARKER;
            words.push(name);
        }
        let eos = *eos_token_ids
            .first()
            .ok_or_else(|| Error::Tokenizer("the model has no EOS token".into()))?;
        let info = TokRxInfo::new(vocab_size as u32, eos);
        let mut trie = TokTrie::from(&info, &words);
        if eos_token_ids.len() > 1 {
            trie = trie.with_eos_tokens(eos_token_ids);
        }
        let env: TokEnv = Arc::new(Env {
            trie,
            tokenizer: tokenizer.clone(),
        });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| tok_err(&e))?;
        factory.quiet();
        Ok(Self {
            factory: Arc::new(factory),
            eos: eos_token_ids.into(),
        })
    }

    /// Compiles `constraint` and checks it can start.
    ///
    /// # Errors
    /// [`Error::Invalid`] with llguidance's message: a schema, regex or grammar it
    /// cannot compile, an empty choice list, a grammar no text can match.
    pub fn compile(&self, constraint: &Constraint) -> Result<Grammar> {
        let grammar = top_level(constraint)?;
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        // Some errors only show when the first mask is computed.
        let mut probe = Matcher::new(Ok(parser.deep_clone()));
        probe
            .compute_mask()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Grammar {
            parser,
            eos: self.eos.clone(),
        })
    }
}

/// The llguidance grammar of a constraint.
fn top_level(constraint: &Constraint) -> Result<TopLevelGrammar> {
    Ok(match constraint {
        Constraint::JsonObject { whitespace } => TopLevelGrammar::from_json_schema(
            with_json_options(json!({"type": "object"}), whitespace)?,
        ),
        Constraint::JsonSchema { schema, whitespace } => {
            TopLevelGrammar::from_json_schema(with_json_options(schema.clone(), whitespace)?)
        }
        Constraint::Regex(rx) => TopLevelGrammar::from_regex(rx),
        Constraint::Choice(choices) => {
            if choices.is_empty() {
                return Err(Error::Invalid("the choice list must not be empty".into()));
            }
            let alternatives: Vec<String> = choices
                .iter()
                .map(|c| serde_json::to_string(c).expect("a string serializes"))
                .collect();
            TopLevelGrammar::from_lark(format!("start: {}", alternatives.join(" | ")))
        }
        Constraint::Grammar(g) => {
            let lark = if gbnf::is_gbnf(g) {
                gbnf::gbnf_to_lark(g)
                    .map_err(|e| Error::Invalid(format!("invalid GBNF grammar: {e}")))?
            } else {
                g.clone()
            };
            TopLevelGrammar::from_lark(lark)
        }
    })
}

/// Adds llguidance's JSON options for `whitespace` to a schema unless it sets its
/// own (`x-guidance`).
fn with_json_options(mut schema: Value, whitespace: &JsonWhitespace) -> Result<Value> {
    let Some(object) = schema.as_object_mut() else {
        // `true` (anything) is the one non-object schema; `false` matches nothing.
        return match schema {
            Value::Bool(true) => with_json_options(json!({}), whitespace),
            _ => Err(Error::Invalid("a JSON schema must be an object".into())),
        };
    };
    let options = match whitespace {
        JsonWhitespace::Compact => json!({
            "whitespace_flexible": false,
            "item_separator": ", ",
            "key_separator": ": ",
        }),
        JsonWhitespace::Any => json!({"whitespace_flexible": true}),
        JsonWhitespace::Pattern(p) => json!({"whitespace_flexible": true, "whitespace_pattern": p}),
    };
    object.entry("x-guidance").or_insert(options);
    Ok(schema)
}

/// A compiled constraint; [`Grammar::matcher`] starts one sequence on it.
#[derive(Clone)]
pub struct Grammar {
    parser: TokenParser,
    eos: Arc<[u32]>,
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Grammar")
    }
}

impl Grammar {
    /// A matcher at the start of the output.
    pub fn matcher(&self) -> TokenMatcher {
        TokenMatcher {
            matcher: Matcher::new(Ok(self.parser.deep_clone())),
            eos: self.eos.clone(),
            only_end: false,
        }
    }
}

/// One sequence's position in its grammar.
pub struct TokenMatcher {
    matcher: Matcher,
    eos: Arc<[u32]>,
    /// The last mask allowed only end-of-sequence tokens.
    only_end: bool,
}

impl std::fmt::Debug for TokenMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMatcher")
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

impl TokenConstraint for TokenMatcher {
    fn mask(&mut self, logits: &mut [f32]) -> std::result::Result<(), String> {
        let allowed = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| e.to_string())?;
        self.only_end = allowed.num_set() <= self.eos.len() && {
            let mut only_eos = true;
            allowed.iter_set_entries(|i| only_eos &= self.eos.contains(&(i as u32)));
            only_eos
        };
        let words = allowed.as_slice();
        for (i, chunk) in logits.chunks_mut(32).enumerate() {
            let word = words.get(i).copied().unwrap_or(0);
            if word == u32::MAX {
                continue;
            }
            for (bit, x) in chunk.iter_mut().enumerate() {
                if word & (1 << bit) == 0 {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
        Ok(())
    }

    fn only_end_allowed(&self) -> bool {
        self.only_end
    }

    fn accept(&mut self, token: u32) -> std::result::Result<(), String> {
        if self.matcher.is_stopped() {
            // Only EOS was allowed; the sequence ends with it.
            return Ok(());
        }
        self.matcher.consume_token(token).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
