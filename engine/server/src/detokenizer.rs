//! Incremental detokenization and server-side stop strings.
//!
//! The engine produces token ids one at a time; clients want text deltas. Decoding
//! each id on its own is wrong for byte-level BPE (a character can span tokens, and
//! a lone piece decodes to U+FFFD) and for SentencePiece (leading spaces depend on
//! the previous token). [`IncrementalDecoder`] follows vLLM's
//! `detokenize_incrementally`: it decodes a small window twice —
//! `ids[prefix_offset..read_offset]` and `ids[prefix_offset..]` — and emits the
//! difference only once it no longer ends in an incomplete character. Cost per token
//! is two decodes of a window of a few tokens, independent of the output length.
//!
//! [`OutputText`] adds what the server owns on top: the full text of one choice,
//! stop-string matching across token boundaries (holding back the last
//! `longest_stop - 1` bytes while streaming so a stop string is never half-sent),
//! and character offsets of each token for completions `logprobs.text_offset`.

use std::sync::Arc;

use tokenizers::Tokenizer;

/// Prompt tokens decoded before the first output token, so its leading space and
/// merged characters come out right (vLLM's `INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET`).
const PROMPT_CONTEXT_TOKENS: usize = 5;

/// Decodes a growing id sequence into text deltas.
pub struct IncrementalDecoder {
    tokenizer: Arc<Tokenizer>,
    /// A sliding window: ids before `prefix_offset` are dropped as the text advances.
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special_tokens: bool,
}

impl IncrementalDecoder {
    /// Starts after `prompt_ids` (only their last few tokens are kept as context).
    pub fn new(tokenizer: Arc<Tokenizer>, prompt_ids: &[u32], skip_special_tokens: bool) -> Self {
        let context = &prompt_ids[prompt_ids.len().saturating_sub(PROMPT_CONTEXT_TOKENS)..];
        Self {
            tokenizer,
            ids: context.to_vec(),
            prefix_offset: 0,
            read_offset: context.len(),
            skip_special_tokens,
        }
    }

    /// Adds one token and returns the text that became final (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        self.ids.push(id);
        let prefix = self.decode(self.prefix_offset, self.read_offset);
        let full = self.decode(self.prefix_offset, self.ids.len());
        if full.len() <= prefix.len() || full.ends_with(char::REPLACEMENT_CHARACTER) {
            // Nothing new yet, or the last character is still incomplete.
            return String::new();
        }
        let new_text = if full.starts_with(&prefix) {
            full[prefix.len()..].to_owned()
        } else {
            // Decoders that clean up spaces can rewrite the prefix; fall back to the byte split.
            let mut cut = prefix.len();
            while !full.is_char_boundary(cut) {
                cut -= 1;
            }
            full[cut..].to_owned()
        };
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        self.ids.drain(..self.prefix_offset);
        self.read_offset -= self.prefix_offset;
        self.prefix_offset = 0;
        new_text
    }

    fn decode(&self, from: usize, to: usize) -> String {
        match self
            .tokenizer
            .decode(&self.ids[from..to], self.skip_special_tokens)
        {
            Ok(text) => text,
            Err(err) => {
                tracing::warn!(error = %err, "detokenization failed; dropping the piece");
                String::new()
            }
        }
    }
}

/// Stop strings of one choice.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StopStrings {
    pub stop: Vec<String>,
    /// Keep the matched stop string at the end of the text (vLLM `include_stop_str_in_output`).
    pub include_in_output: bool,
    /// Stop strings are not checked before this many output tokens (`min_tokens`).
    pub min_tokens: usize,
}

impl StopStrings {
    fn longest(&self) -> usize {
        self.stop.iter().map(String::len).max().unwrap_or(0)
    }
}

/// What one token changed in a choice's text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextDelta {
    /// Text released to the client now (may be empty while held back).
    pub text: String,
    /// Character offset in the choice's text where this token's text starts.
    pub token_offset: usize,
    /// A stop string matched: the text is final and the request must be aborted.
    pub stopped: bool,
}

/// The text of one choice: detokenized, stop-checked and released in safe deltas.
pub struct OutputText {
    decoder: IncrementalDecoder,
    stops: StopStrings,
    /// Bytes kept back while streaming so a stop string is never partly sent.
    holdback: usize,
    text: String,
    text_chars: usize,
    /// Bytes of `text` already released.
    sent: usize,
    num_tokens: usize,
    /// The stop string that matched (the text is final then).
    matched: Option<String>,
}

impl OutputText {
    pub fn new(decoder: IncrementalDecoder, stops: StopStrings) -> Self {
        let holdback = stops.longest().saturating_sub(1);
        Self {
            decoder,
            stops,
            holdback,
            text: String::new(),
            text_chars: 0,
            sent: 0,
            num_tokens: 0,
            matched: None,
        }
    }

    /// Adds one token. `hide` drops its text (an EOS or stop token id that ends the
    /// request; vLLM removes it unless `include_stop_str_in_output`).
    pub fn push(&mut self, id: u32, hide: bool) -> TextDelta {
        let token_offset = self.text_chars;
        if self.matched.is_some() {
            return TextDelta {
                token_offset,
                stopped: true,
                ..TextDelta::default()
            };
        }
        self.num_tokens += 1;
        let piece = self.decoder.push(id);
        if hide || piece.is_empty() {
            return TextDelta {
                text: self.release(false),
                token_offset,
                stopped: false,
            };
        }
        let len_before = self.text.len();
        self.text.push_str(&piece);
        self.text_chars += piece.chars().count();
        if self.num_tokens >= self.stops.min_tokens
            && let Some((end, matched)) = self.find_stop(len_before)
        {
            self.text.truncate(end);
            self.text_chars = self.text.chars().count();
            self.matched = Some(matched);
        }
        let stopped = self.matched.is_some();
        TextDelta {
            text: self.release(stopped),
            token_offset,
            stopped,
        }
    }

    /// Releases whatever was held back (call once the request has finished).
    pub fn finish(&mut self) -> String {
        self.release(true)
    }

    /// The stop string that ended the text, once one matched (vLLM's `stop_reason`).
    pub fn matched_stop(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    /// The whole text so far, including any held-back tail.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Where the text ends after the earliest stop string that overlaps the text
    /// added since byte `len_before`, and that string, if any.
    fn find_stop(&self, len_before: usize) -> Option<(usize, String)> {
        if self.stops.stop.is_empty() {
            return None;
        }
        let start = floor_char_boundary(&self.text, len_before.saturating_sub(self.holdback));
        let window = &self.text[start..];
        self.stops
            .stop
            .iter()
            .filter_map(|s| window.find(s.as_str()).map(|i| (start + i, s)))
            .min_by_key(|&(at, s)| (at, s.len()))
            .map(|(at, s)| {
                let end = if self.stops.include_in_output {
                    at + s.len()
                } else {
                    at
                };
                (end, s.clone())
            })
    }

    fn release(&mut self, all: bool) -> String {
        let end = if all {
            self.text.len()
        } else {
            floor_char_boundary(&self.text, self.text.len().saturating_sub(self.holdback))
        };
        if end <= self.sent {
            return String::new();
        }
        let out = self.text[self.sent..end].to_owned();
        self.sent = end;
        out
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A single token's text as logprobs show it (special tokens included).
pub fn token_text(tokenizer: &Tokenizer, id: u32) -> String {
    tokenizer.decode(&[id], false).unwrap_or_default()
}

/// A single token's raw UTF-8 bytes (chat `logprobs[].bytes`): exact for byte-level
/// BPE and SentencePiece byte-fallback pieces, which may hold half a character.
pub fn token_bytes(tokenizer: &Tokenizer, id: u32) -> Vec<u8> {
    if let Some(piece) = tokenizer.id_to_token(id) {
        if let Some(byte) = byte_fallback(&piece) {
            return vec![byte];
        }
        if let Some(bytes) = byte_level_bytes(&piece)
            && !tokenizer.get_added_vocabulary().is_special_token(&piece)
        {
            return bytes;
        }
    }
    token_text(tokenizer, id).into_bytes()
}

/// SentencePiece byte-fallback pieces look like `<0xE2>`.
fn byte_fallback(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Inverts GPT-2's byte-to-unicode table; `None` when a char is outside it.
fn byte_level_bytes(piece: &str) -> Option<Vec<u8>> {
    piece.chars().map(byte_level_char_to_byte).collect()
}

/// GPT-2 `bytes_to_unicode`: printable Latin-1 bytes map to themselves, the other 68
/// bytes map, in order, to U+0100..U+0143.
fn byte_level_char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if printable(cp) {
        return u8::try_from(cp).ok();
    }
    let n = cp.checked_sub(0x100)?;
    (0u32..=255)
        .filter(|b| !printable(*b))
        .nth(n as usize)
        .and_then(|b| u8::try_from(b).ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// GPT-2's byte-to-unicode table, forwards (for building test vocabularies).
    fn byte_char(b: u8) -> char {
        let printable = |b: u32| {
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
        };
        if printable(u32::from(b)) {
            return char::from(b);
        }
        let n = (0u32..=255)
            .filter(|x| !printable(*x))
            .position(|x| x == u32::from(b))
            .unwrap();
        char::from_u32(0x100 + n as u32).unwrap()
    }

    /// A tiny byte-level BPE tokenizer: all 256 bytes, a few merges, one special token.
    pub(crate) fn byte_level_tokenizer() -> Arc<Tokenizer> {
        let mut vocab = serde_json::Map::new();
        for b in 0..=255u8 {
            vocab.insert(byte_char(b).to_string(), serde_json::json!(b));
        }
        let sp = byte_char(b' ');
        let merges = [
            ("h", "e"),
            ("l", "l"),
            ("he", "ll"),
            ("hell", "o"),
            (&*format!("{sp}"), "w"),
        ]
        .iter()
        .map(|(a, b)| format!("{a} {b}"))
        .collect::<Vec<_>>();
        let mut next = 256;
        for m in &merges {
            vocab.insert(m.replace(' ', ""), serde_json::json!(next));
            next += 1;
        }
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": [{"id": next, "content": "<|endoftext|>", "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "vocab": vocab, "merges": merges},
        });
        Arc::new(json.to_string().parse::<Tokenizer>().unwrap())
    }

    pub(crate) const EOT: u32 = 261;

    fn encode(tok: &Tokenizer, s: &str) -> Vec<u32> {
        tok.encode(s, false).unwrap().get_ids().to_vec()
    }

    fn stream(tok: &Arc<Tokenizer>, ids: &[u32], stops: StopStrings) -> (Vec<TextDelta>, String) {
        let mut out = OutputText::new(IncrementalDecoder::new(tok.clone(), &[], true), stops);
        let mut deltas = Vec::new();
        for &id in ids {
            let d = out.push(id, false);
            let stopped = d.stopped;
            deltas.push(d);
            if stopped {
                break;
            }
        }
        let tail = out.finish();
        (deltas, tail)
    }

    fn joined(deltas: &[TextDelta], tail: &str) -> String {
        deltas.iter().map(|d| d.text.as_str()).collect::<String>() + tail
    }

    #[test]
    fn merges_are_used_and_round_trip() {
        let tok = byte_level_tokenizer();
        let ids = encode(&tok, "hello world");
        assert!(ids.contains(&259), "expected the `hello` merge in {ids:?}");
        let (deltas, tail) = stream(&tok, &ids, StopStrings::default());
        assert_eq!(joined(&deltas, &tail), "hello world");
        assert!(deltas.iter().all(|d| !d.stopped));
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let tok = byte_level_tokenizer();
        let text = "naïve 日本語 🎉!";
        let ids = encode(&tok, text);
        assert!(
            ids.len() > text.chars().count(),
            "byte-level pieces expected"
        );
        let (deltas, tail) = stream(&tok, &ids, StopStrings::default());
        for d in &deltas {
            assert!(
                !d.text.contains(char::REPLACEMENT_CHARACTER),
                "{:?}",
                d.text
            );
        }
        assert_eq!(joined(&deltas, &tail), text);
        // The emoji's four bytes come out in one delta, on its last byte.
        assert!(deltas.iter().any(|d| d.text == "🎉"));
    }

    #[test]
    fn prompt_context_does_not_leak_into_output() {
        let tok = byte_level_tokenizer();
        let prompt = encode(&tok, "say hello");
        let mut dec = IncrementalDecoder::new(tok.clone(), &prompt, true);
        let out: String = encode(&tok, " world")
            .into_iter()
            .map(|id| dec.push(id))
            .collect();
        assert_eq!(out, " world");
    }

    #[test]
    fn special_tokens_are_skipped_or_kept() {
        let tok = byte_level_tokenizer();
        let mut ids = encode(&tok, "hi");
        ids.push(EOT);
        let mut dec = IncrementalDecoder::new(tok.clone(), &[], true);
        let s: String = ids.iter().map(|&id| dec.push(id)).collect();
        assert_eq!(s, "hi");
        let mut dec = IncrementalDecoder::new(tok.clone(), &[], false);
        let s: String = ids.iter().map(|&id| dec.push(id)).collect();
        assert_eq!(s, "hi<|endoftext|>");
    }

    #[test]
    fn stop_string_across_token_boundaries_truncates() {
        let tok = byte_level_tokenizer();
        let ids = encode(&tok, "one two STOP three");
        let stops = StopStrings {
            stop: vec!["STOP".into()],
            ..Default::default()
        };
        let (deltas, tail) = stream(&tok, &ids, stops);
        assert!(deltas.last().unwrap().stopped);
        assert_eq!(joined(&deltas, &tail), "one two ");
        // Never sent a prefix of the stop string before knowing.
        let mut sent = String::new();
        for d in &deltas {
            sent.push_str(&d.text);
            assert!(!sent.contains('S'), "{sent:?}");
        }
    }

    #[test]
    fn include_stop_str_and_earliest_of_several() {
        let tok = byte_level_tokenizer();
        let ids = encode(&tok, "a; b. c");
        let stops = StopStrings {
            stop: vec![".".into(), ";".into()],
            include_in_output: true,
            min_tokens: 0,
        };
        let (deltas, tail) = stream(&tok, &ids, stops);
        assert_eq!(joined(&deltas, &tail), "a;");
    }

    #[test]
    fn stop_strings_wait_for_min_tokens() {
        let tok = byte_level_tokenizer();
        let ids = encode(&tok, "x.y.z");
        let stops = StopStrings {
            stop: vec![".".into()],
            include_in_output: false,
            min_tokens: 3,
        };
        let (deltas, tail) = stream(&tok, &ids, stops);
        assert_eq!(joined(&deltas, &tail), "x.y");
    }

    #[test]
    fn held_back_tail_is_released_on_finish() {
        let tok = byte_level_tokenizer();
        let ids = encode(&tok, "abcST");
        let stops = StopStrings {
            stop: vec!["STOP".into()],
            ..Default::default()
        };
        let (deltas, tail) = stream(&tok, &ids, stops);
        assert_eq!(joined(&deltas, ""), "ab");
        assert_eq!(tail, "cST");
    }

    #[test]
    fn hidden_final_token_and_offsets() {
        let tok = byte_level_tokenizer();
        let mut out = OutputText::new(
            IncrementalDecoder::new(tok.clone(), &[], false),
            StopStrings::default(),
        );
        let ids = encode(&tok, "hé x");
        let mut offsets = Vec::new();
        for id in ids {
            offsets.push(out.push(id, false).token_offset);
        }
        let last = out.push(EOT, true);
        assert_eq!(last.text, "");
        assert_eq!(out.text(), "hé x");
        assert_eq!(last.token_offset, 4);
        assert_eq!(offsets.first(), Some(&0));
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn token_bytes_of_partial_characters() {
        let tok = byte_level_tokenizer();
        let ids = encode(&tok, "é");
        assert_eq!(ids.len(), 2);
        assert_eq!(token_bytes(&tok, ids[0]), vec![0xC3]);
        assert_eq!(token_bytes(&tok, ids[1]), vec![0xA9]);
        assert_eq!(token_bytes(&tok, 259), b"hello".to_vec());
        assert_eq!(token_bytes(&tok, EOT), b"<|endoftext|>".to_vec());
        assert_eq!(token_text(&tok, 259), "hello");
        assert_eq!(byte_fallback("<0xE2>"), Some(0xE2));
        assert_eq!(byte_fallback("<0xZZ>"), None);
        for b in 0..=255u8 {
            assert_eq!(byte_level_char_to_byte(byte_char(b)), Some(b));
        }
    }

    /// The default model's real tokenizer; panics with the fix when the model is missing.
    fn smollm2() -> Arc<Tokenizer> {
        let path = candela_contract::model_ref::default_model_path().expect("$HOME is set");
        assert!(
            path.exists(),
            "{} is missing: run scripts/setup.sh",
            path.display()
        );
        let (content, _) = candela_model::load_gguf::read_gguf(&path).unwrap();
        Arc::new(
            candela_model::tokenizer::tokenizer_from_gguf(&content)
                .unwrap()
                .tokenizer,
        )
    }

    #[test]
    fn real_tokenizer_streams_exactly_what_batch_decode_gives() {
        let tok = smollm2();
        let text = "Hello, world! naïve café 日本語のテキスト 🎉🚀\n\tfn main() { println!(\"{}\", 42); }\n  — done.";
        let ids = encode(&tok, text);
        let (deltas, tail) = stream(&tok, &ids, StopStrings::default());
        assert_eq!(joined(&deltas, &tail), tok.decode(&ids, true).unwrap());
        assert_eq!(joined(&deltas, &tail), text);
        assert!(
            deltas
                .iter()
                .all(|d| !d.text.contains(char::REPLACEMENT_CHARACTER))
        );
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| token_bytes(&tok, id)).collect();
        assert_eq!(bytes, text.as_bytes());
    }

    #[test]
    fn real_tokenizer_skips_chat_specials_and_stops_across_tokens() {
        let tok = smollm2();
        let ids = encode(&tok, "<|im_start|>assistant\nThe answer is 42.<|im_end|>");
        let im_end = *ids.last().unwrap();
        assert_eq!(token_text(&tok, im_end), "<|im_end|>");
        let mut dec = IncrementalDecoder::new(tok.clone(), &[], true);
        let s: String = ids.iter().map(|&id| dec.push(id)).collect();
        assert_eq!(s, "assistant\nThe answer is 42.");
        // Prompt context: the first generated word keeps its leading space.
        let prompt = encode(
            &tok,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nSure",
        );
        let mut dec = IncrementalDecoder::new(tok.clone(), &prompt, true);
        let s: String = encode(&tok, " thing, friend")
            .into_iter()
            .map(|id| dec.push(id))
            .collect();
        assert_eq!(s, " thing, friend");
        let ids = encode(&tok, "one two three four five");
        let stops = StopStrings {
            stop: vec!["ee fo".into()],
            ..Default::default()
        };
        let (deltas, tail) = stream(&tok, &ids, stops);
        assert!(deltas.last().unwrap().stopped);
        assert_eq!(joined(&deltas, &tail), "one two thr");
    }
}
