//! Tokenizers: built from a GGUF file's embedded vocabulary, or read from a
//! Hugging Face directory's `tokenizer.json`, plus the special-token ids and
//! chat template that come with them.
//!
//! GGUF (`tokenizer.ggml.model == "gpt2"`): byte-level BPE from
//! `tokenizer.ggml.tokens` / `merges`, with the pre-tokenizer chosen by
//! `tokenizer.ggml.pre` the way llama.cpp does (`smollm`: individual digits,
//! then GPT-2's byte-level regex; `qwen2` / `llama-bpe`: their split regexes).
//! Control and user-defined tokens (`token_type` 3 and 4) become special added
//! tokens, so `<|im_start|>` encodes to one id. Unknown kinds fail clearly
//! rather than tokenizing differently from the model's training.

use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::load_gguf::{md_str, md_u64};
use crate::load_hf::read_json;
use crate::{Error, Result};

/// A tokenizer with the metadata the server needs around it.
#[derive(Clone)]
pub struct TokenizerBundle {
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
    pub bos_token_id: Option<u32>,
    /// Every id that ends generation (EOS and, for chat models, end-of-turn).
    pub eos_token_ids: Vec<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

impl std::fmt::Debug for TokenizerBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenizerBundle")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_ids", &self.eos_token_ids)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn split_then_bytes(regex: &str) -> Result<PreTokenizerWrapper> {
    let split = Split::new(
        SplitPattern::Regex(regex.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(tok_err)?;
    Ok(Sequence::new(vec![
        split.into(),
        ByteLevel::new(false, false, false).into(),
    ])
    .into())
}

/// How a `tokenizer.ggml.pre` kind tokenizes besides the BPE merges.
struct Pipeline {
    pre: PreTokenizerWrapper,
    /// NFC-normalize first (qwen2).
    nfc: bool,
    /// A whole pre-token found in the vocab is taken as is (llama 3's `ignore_merges`).
    ignore_merges: bool,
}

/// The pipeline of a `tokenizer.ggml.pre` kind, as llama.cpp's `llm_tokenizer_bpe` sets it up.
fn pipeline(pre: &str) -> Result<Pipeline> {
    let p = |pre, nfc, ignore_merges| Pipeline {
        pre,
        nfc,
        ignore_merges,
    };
    Ok(match pre {
        // llama.cpp splits these three identically: each digit alone, then GPT-2's regex.
        "smollm" | "starcoder" | "refact" => p(
            Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            false,
            false,
        ),
        "default" | "gpt2" | "gpt-2" => p(ByteLevel::new(false, true, true).into(), false, false),
        "qwen2" => p(split_then_bytes(REGEX_QWEN2)?, true, false),
        "llama-bpe" | "llama3" | "smaug-bpe" => p(split_then_bytes(REGEX_LLAMA3)?, false, true),
        other => {
            return Err(Error::Unsupported(format!(
                "GGUF tokenizer.ggml.pre `{other}` (supported: smollm, starcoder, refact, default, gpt-2, qwen2, llama-bpe)"
            )));
        }
    })
}

fn strings(md: &Content, key: &str) -> Result<Vec<String>> {
    match md.metadata.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(Error::Tokenizer(format!("`{key}` holds a non-string"))),
            })
            .collect(),
        _ => Err(Error::Tokenizer(format!(
            "GGUF metadata `{key}` is missing"
        ))),
    }
}

/// Builds the tokenizer embedded in a GGUF file.
///
/// # Errors
/// [`Error::Unsupported`] for tokenizer models other than `gpt2` (byte-level BPE) or
/// unknown pre-tokenizer kinds; [`Error::Tokenizer`] for malformed metadata.
pub fn tokenizer_from_gguf(md: &Content) -> Result<TokenizerBundle> {
    let model = md_str(md, "tokenizer.ggml.model").unwrap_or("");
    if model != "gpt2" {
        return Err(Error::Unsupported(format!(
            "GGUF tokenizer model `{model}` (only byte-level BPE `gpt2` is supported)"
        )));
    }
    let tokens = strings(md, "tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = strings(md, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Tokenizer(format!("malformed merge `{m}`")))
        })
        .collect::<Result<_>>()?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let pl = pipeline(md_str(md, "tokenizer.ggml.pre").unwrap_or("default"))?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pl.ignore_merges)
        .build()
        .map_err(tok_err)?;
    let mut tk = Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(pl.pre));
    if pl.nfc {
        tk.with_normalizer(Some(NFC));
    }
    tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    if let Some(Value::Array(types)) = md.metadata.get("tokenizer.ggml.token_type") {
        let specials: Vec<AddedToken> = types
            .iter()
            .zip(&tokens)
            .filter(|(t, _)| matches!(t, Value::I32(3 | 4) | Value::U32(3 | 4)))
            .map(|(_, tok)| AddedToken::from(tok.clone(), true))
            .collect();
        tk.add_special_tokens(&specials);
    }
    let id = |k: &str| {
        md_u64(md, k)
            .map(|v| v as u32)
            .filter(|&v| (v as usize) < tokens.len())
    };
    let bos_token_id = id("tokenizer.ggml.bos_token_id");
    let eos = id("tokenizer.ggml.eos_token_id");
    let mut eos_token_ids: Vec<u32> = eos.into_iter().collect();
    if let Some(eot) = id("tokenizer.ggml.eot_token_id")
        && !eos_token_ids.contains(&eot)
    {
        eos_token_ids.push(eot);
    }
    Ok(TokenizerBundle {
        tokenizer: tk,
        chat_template: md_str(md, "tokenizer.chat_template").map(str::to_string),
        bos_token_id,
        eos_token_ids,
        bos_token: bos_token_id.map(|i| tokens[i as usize].clone()),
        eos_token: eos.map(|i| tokens[i as usize].clone()),
    })
}

/// `"<s>"` or `{"content": "<s>", ...}` as in `tokenizer_config.json`.
fn token_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// One id or a list of ids.
pub(crate) fn ids(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    }
}

/// Reads `tokenizer.json`, `tokenizer_config.json` (chat template, bos/eos) and, when
/// present, `generation_config.json` / `config.json` eos ids from a Hugging Face directory.
///
/// # Errors
/// [`Error::Tokenizer`] when `tokenizer.json` is missing or unreadable; JSON errors.
pub fn tokenizer_from_hf_dir(dir: &Path) -> Result<TokenizerBundle> {
    let path = dir.join("tokenizer.json");
    let tk = Tokenizer::from_file(&path)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
    let cfg_path = dir.join("tokenizer_config.json");
    let tc: serde_json::Value = if cfg_path.exists() {
        read_json(&cfg_path)?
    } else {
        serde_json::Value::Null
    };
    let chat_template = match tc.get("chat_template") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        // A list of named templates: take "default", else the first.
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| a.first())
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    }
    .or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());
    let bos_token = token_string(tc.get("bos_token"));
    let eos_token = token_string(tc.get("eos_token"));
    let mut eos_token_ids = Vec::new();
    for f in ["generation_config.json", "config.json"] {
        let p = dir.join(f);
        if eos_token_ids.is_empty() && p.exists() {
            let v: serde_json::Value = read_json(&p)?;
            eos_token_ids = ids(v.get("eos_token_id"));
        }
    }
    if let Some(id) = eos_token.as_deref().and_then(|t| tk.token_to_id(t))
        && !eos_token_ids.contains(&id)
    {
        eos_token_ids.push(id);
    }
    let bos_token_id = bos_token.as_deref().and_then(|t| tk.token_to_id(t));
    Ok(TokenizerBundle {
        tokenizer: tk,
        chat_template,
        bos_token_id,
        eos_token_ids,
        bos_token,
        eos_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_pre_tokenizer_kinds_fail_clearly() {
        let e = pipeline("mystery")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("mystery") && e.contains("supported"), "{e}");
        assert!(pipeline("smollm").is_ok() && pipeline("qwen2").is_ok());
    }

    #[test]
    fn token_strings_and_id_lists_parse_both_shapes() {
        let v = serde_json::json!({"a": "<s>", "b": {"content": "</s>"}, "n": 2, "l": [1, 7]});
        assert_eq!(token_string(v.get("a")).as_deref(), Some("<s>"));
        assert_eq!(token_string(v.get("b")).as_deref(), Some("</s>"));
        assert_eq!(ids(v.get("n")), vec![2]);
        assert_eq!(ids(v.get("l")), vec![1, 7]);
    }
}
