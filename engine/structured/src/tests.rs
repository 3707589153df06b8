//! Constraints run on a small byte-level BPE tokenizer: random walks through each
//! mask (any allowed token, chosen by random logits) must end in text the
//! constraint accepts, and bad constraints must be refused with a message.

use std::collections::HashMap;

use candela_core::TokenConstraint;
use proptest::prelude::*;
use serde_json::{Value, json};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::*;

const EOS: u32 = 300;
/// Logits rows are wider than the tokenizer (padding ids), as in real models.
const VOCAB: usize = 320;

/// GPT-2's byte → char map (printable bytes map to themselves).
fn byte_char(b: u8) -> char {
    let printable = |c: u32| matches!(c, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
    if printable(u32::from(b)) {
        return char::from(b);
    }
    let shift = (0..u32::from(b)).filter(|&c| !printable(c)).count() as u32;
    char::from_u32(0x100 + shift).unwrap()
}

fn tokenizer() -> Tokenizer {
    let mut vocab: HashMap<String, u32> = (0..=255u8)
        .map(|b| (byte_char(b).to_string(), u32::from(b)))
        .collect();
    let merges: Vec<(String, String)> = [
        ("{", "\""),
        ("\"", ":"),
        ("t", "r"),
        ("tr", "u"),
        ("1", "2"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    for (i, (a, b)) in merges.iter().enumerate() {
        vocab.insert(format!("{a}{b}"), 256 + i as u32);
    }
    let vocab: tokenizers::models::bpe::Vocab = vocab.into_iter().collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevel::default()));
    // Fill ids up to EOS so the special token lands on it.
    let fillers: Vec<AddedToken> = (261..EOS)
        .map(|i| AddedToken::from(format!("<|f{i}|>"), true))
        .collect();
    tok.add_special_tokens(&fillers);
    tok.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(EOS));
    tok
}

fn grammars() -> Grammars {
    Grammars::new(&tokenizer(), &[EOS], VOCAB).unwrap()
}

/// Samples from random logits under the mask until EOS (or `limit` tokens); the text.
fn walk(grammar: &Grammar, tok: &Tokenizer, noise: &[f32], limit: usize) -> Option<String> {
    let mut m = grammar.matcher();
    let mut ids = Vec::new();
    for step in 0..limit {
        let mut logits: Vec<f32> = (0..VOCAB)
            .map(|i| noise[(i * 7 + step * 13) % noise.len()] + (i % 5) as f32 * 0.01)
            .collect();
        m.mask(&mut logits).unwrap();
        let token = crate::tests::argmax(&logits);
        assert!(logits[token as usize].is_finite(), "the mask left no token");
        m.accept(token).unwrap();
        if token == EOS {
            return Some(tok.decode(&ids, true).unwrap());
        }
        ids.push(token);
    }
    None
}

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in l.iter().enumerate() {
        if x > l[best] {
            best = i;
        }
    }
    best as u32
}

fn invalid(g: &Grammars, c: Constraint) -> String {
    match g.compile(&c) {
        Err(Error::Invalid(msg)) => msg,
        other => panic!("expected a refusal for {c:?}, got {other:?}"),
    }
}

#[test]
fn bad_constraints_are_refused_with_a_message() {
    let g = grammars();
    let msg = invalid(
        &g,
        Constraint::JsonSchema {
            schema: json!({"type": "objekt"}),
            whitespace: JsonWhitespace::Compact,
        },
    );
    assert!(!msg.is_empty());
    assert!(
        invalid(
            &g,
            Constraint::JsonSchema {
                schema: json!(7),
                whitespace: JsonWhitespace::Compact
            }
        )
        .contains("object")
    );
    assert!(!invalid(&g, Constraint::Regex("(unclosed".into())).is_empty());
    assert!(invalid(&g, Constraint::Choice(vec![])).contains("empty"));
    assert!(!invalid(&g, Constraint::Grammar("start: undefined_rule".into())).is_empty());
    assert!(invalid(&g, Constraint::Grammar("root ::= \"a".into())).contains("GBNF"));
}

#[test]
fn ids_past_the_tokenizer_and_eos_mid_json_are_masked() {
    let g = grammars();
    let grammar = g
        .compile(&Constraint::JsonObject {
            whitespace: JsonWhitespace::Compact,
        })
        .unwrap();
    let mut m = grammar.matcher();
    let mut logits = vec![0.0f32; VOCAB];
    m.mask(&mut logits).unwrap();
    assert!(!m.only_end_allowed());
    assert!(logits[EOS as usize].is_infinite(), "EOS before any JSON");
    assert!(logits[b'{' as usize].is_finite());
    assert!(logits[b'x' as usize].is_infinite());
    assert!(
        logits[VOCAB - 1].is_infinite(),
        "padding ids are never text"
    );
    for &t in b"{}" {
        m.accept(u32::from(t)).unwrap();
    }
    let mut logits = vec![0.0f32; VOCAB];
    m.mask(&mut logits).unwrap();
    assert!(
        logits[EOS as usize].is_finite(),
        "a complete object may end"
    );
    assert!(
        m.only_end_allowed(),
        "compact JSON: nothing may follow `{{}}`"
    );
}

#[test]
fn a_forbidden_token_is_an_error() {
    let g = grammars();
    let grammar = g
        .compile(&Constraint::Choice(vec!["yes".into(), "no".into()]))
        .unwrap();
    let mut m = grammar.matcher();
    assert!(m.accept(u32::from(b'x')).is_err());
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "kind": {"enum": ["cat", "dog"]},
            "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
            "owner": {
                "type": "object",
                "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 99}},
                "required": ["id"],
                "additionalProperties": false
            }
        },
        "required": ["name", "kind", "owner"],
        "additionalProperties": false
    })
}

/// What `schema()` requires, checked by hand on the parsed value.
fn valid(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    let known = ["name", "age", "kind", "tags", "owner"];
    o.keys().all(|k| known.contains(&k.as_str()))
        && o.get("name")
            .and_then(Value::as_str)
            .is_some_and(|s| s.chars().count() <= 6)
        && o.get("age")
            .is_none_or(|a| a.as_u64().is_some_and(|a| a <= 150))
        && matches!(o.get("kind").and_then(Value::as_str), Some("cat" | "dog"))
        && o.get("tags").is_none_or(|t| {
            t.as_array()
                .is_some_and(|t| t.len() <= 3 && t.iter().all(Value::is_boolean))
        })
        && o.get("owner").and_then(Value::as_object).is_some_and(|w| {
            w.len() == 1
                && w.get("id")
                    .and_then(Value::as_u64)
                    .is_some_and(|id| (1..=99).contains(&id))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn json_schema_walks_end_in_valid_json(noise in proptest::collection::vec(-4.0f32..4.0, 17..64)) {
        let (g, tok) = (grammars(), tokenizer());
        let grammar = g.compile(&Constraint::JsonSchema { schema: schema(), whitespace: JsonWhitespace::Compact }).unwrap();
        let text = walk(&grammar, &tok, &noise, 400).expect("a bounded schema ends");
        let v: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert!(valid(&v), "{}", text);
    }

    #[test]
    fn choice_walks_end_in_a_choice(noise in proptest::collection::vec(-4.0f32..4.0, 17..64)) {
        let (g, tok) = (grammars(), tokenizer());
        let choices = vec!["true".to_owned(), "trust".into(), "tr\"é".into(), "12".into()];
        let grammar = g.compile(&Constraint::Choice(choices.clone())).unwrap();
        let text = walk(&grammar, &tok, &noise, 50).expect("choices end");
        prop_assert!(choices.contains(&text), "{}", text);
    }

    #[test]
    fn regex_walks_match(noise in proptest::collection::vec(-4.0f32..4.0, 17..64)) {
        let (g, tok) = (grammars(), tokenizer());
        let grammar = g.compile(&Constraint::Regex(r"[a-c]{2,4}-[0-9]+\.(x|yz)".into())).unwrap();
        if let Some(text) = walk(&grammar, &tok, &noise, 60) {
            let (head, rest) = text.split_once('-').expect("a dash");
            prop_assert!((2..=4).contains(&head.len()) && head.bytes().all(|b| (b'a'..=b'c').contains(&b)), "{}", text);
            let (digits, tail) = rest.split_once('.').expect("a dot");
            prop_assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()), "{}", text);
            prop_assert!(tail == "x" || tail == "yz", "{}", text);
        }
    }
}

#[test]
fn gbnf_and_lark_grammars_constrain_alike() {
    let (g, tok) = (grammars(), tokenizer());
    let gbnf = "root ::= answer \" \" answer\nanswer ::= \"yes\" | \"no\"\n";
    let lark = "start: answer \" \" answer\nanswer: \"yes\" | \"no\"\n";
    for source in [gbnf, lark] {
        let grammar = g.compile(&Constraint::Grammar(source.into())).unwrap();
        for seed in 0..8 {
            let noise: Vec<f32> = (0..31)
                .map(|i| ((i * 37 + seed * 11) % 17) as f32 - 8.0)
                .collect();
            let text = walk(&grammar, &tok, &noise, 20).unwrap();
            let words: Vec<&str> = text.split(' ').collect();
            assert_eq!(words.len(), 2, "{text}");
            assert!(words.iter().all(|w| *w == "yes" || *w == "no"), "{text}");
        }
    }
}

#[test]
fn json_object_whitespace_is_compact_unless_asked() {
    let (g, tok) = (grammars(), tokenizer());
    let compact = g
        .compile(&Constraint::JsonObject {
            whitespace: JsonWhitespace::Compact,
        })
        .unwrap();
    let mut m = compact.matcher();
    m.accept(u32::from(b'{')).unwrap();
    let mut logits = vec![0.0f32; VOCAB];
    m.mask(&mut logits).unwrap();
    assert!(logits[b'\n' as usize].is_infinite());
    let flexible = g
        .compile(&Constraint::JsonObject {
            whitespace: JsonWhitespace::Any,
        })
        .unwrap();
    let mut m = flexible.matcher();
    m.accept(u32::from(b'{')).unwrap();
    let mut logits = vec![0.0f32; VOCAB];
    m.mask(&mut logits).unwrap();
    assert!(logits[b'\n' as usize].is_finite());
    let _ = tok;
}
