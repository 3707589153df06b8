//! Tool calls in generated text: splits a chat model's output into plain content and
//! OpenAI tool calls, as vLLM's `--tool-call-parser hermes | llama3_json | mistral` do.
//! [`StreamingToolParser`] is a character-level state machine fed the text piece by piece
//! (any split gives the same result), sending each call's arguments as they are generated;
//! [`ToolParser::parse`] runs it on a whole output, so both paths agree exactly.

use std::mem::take;
use std::str::FromStr;

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";
const MISTRAL_OPEN: &str = "[TOOL_CALLS]";
const MISTRAL_ARGS: &str = "[ARGS]";

/// Which family's tool-call syntax the model writes (vLLM's `--tool-call-parser` names).
///
/// - `Hermes`: `<tool_call>{"name": "f", "arguments": {...}}</tool_call>`, any number, with
///   content around them (a missing closing tag at the very end is accepted).
/// - `Llama3Json`: when the trimmed output starts with `{` or `<|python_tag|>`, it is
///   `{"name": "f", "parameters": {...}}` objects separated by `;` or whitespace (text
///   after them is content); otherwise it is all content.
/// - `Mistral`: `[TOOL_CALLS]` then a JSON array of call objects, or (v11 tokenizers)
///   `f[ARGS]{...}` / `f{...}`; content around them.
///
/// Every format takes `"arguments"` or `"parameters"` for the arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolParser {
    Hermes,
    Llama3Json,
    Mistral,
}

impl ToolParser {
    /// Every parser, in the order [`ToolParser::name`]s are listed in errors.
    pub const ALL: [ToolParser; 3] = [Self::Hermes, Self::Llama3Json, Self::Mistral];

    /// The `--tool-call-parser` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hermes => "hermes",
            Self::Llama3Json => "llama3_json",
            Self::Mistral => "mistral",
        }
    }

    /// Splits a whole generated text into content and calls. Any malformed call makes the
    /// whole (trimmed) text content with no calls. `content` is `None` when empty.
    pub fn parse(self, text: &str) -> ParsedOutput {
        let mut stream = self.streaming();
        let mut deltas = stream.push(text);
        deltas.extend(stream.finish());
        if stream.malformed {
            return ParsedOutput {
                content: non_empty(text.trim()),
                tool_calls: Vec::new(),
            };
        }
        let (mut content, mut tool_calls) = (String::new(), Vec::new());
        for delta in deltas {
            match delta {
                ToolDelta::Content(text) => content.push_str(&text),
                ToolDelta::Start { name, .. } => tool_calls.push(ParsedToolCall {
                    name,
                    arguments: String::new(),
                }),
                ToolDelta::Arguments { index, text } => {
                    if let Some(call) = tool_calls.get_mut(index) {
                        call.arguments.push_str(&text);
                    }
                }
            }
        }
        ParsedOutput {
            content: non_empty(&content),
            tool_calls,
        }
    }

    /// A streaming parser for one choice.
    pub fn streaming(self) -> StreamingToolParser {
        StreamingToolParser {
            parser: self,
            mode: Mode::Text,
            held: String::new(),
            raw: String::new(),
            content: Content::default(),
            calls: 0,
            decided: false,
            malformed: false,
        }
    }
}

impl FromStr for ToolParser {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "unknown tool call parser {s:?}; expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// One call as the model wrote it: function name and its arguments as JSON text (the
/// model's text without whitespace outside strings, e.g. `{"city":"Paris"}`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedToolCall {
    pub name: String,
    pub arguments: String,
}

/// A whole output split into plain content and tool calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedOutput {
    /// Text outside the calls, trimmed; `None` when that is empty.
    pub content: Option<String>,
    pub tool_calls: Vec<ParsedToolCall>,
}

/// What one chunk of streamed text adds.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolDelta {
    /// Plain assistant text.
    Content(String),
    /// A new call begins (index counts calls of this choice from 0): OpenAI's first
    /// tool_calls delta carries id/type/name. Sent once the name and the start of the
    /// arguments have been read.
    Start { index: usize, name: String },
    /// More of call `index`'s arguments JSON text.
    Arguments { index: usize, text: String },
}

/// Streaming tool-call parser for one choice: [`push`](Self::push) each piece of generated
/// text, then [`finish`](Self::finish) once.
///
/// - Arguments are the model's JSON text without the whitespace outside strings (key order,
///   numbers and escapes as written), sent as they are read.
/// - Content is the text outside calls, trimmed like `str::trim`: leading whitespace is
///   dropped, other whitespace waits until more content follows. Text that may still turn
///   out to be a tag (e.g. `<tool_`) is held back until it is known.
/// - A malformed call (broken or unfinished JSON, other text where the format wants a tag,
///   no `name` or no arguments) can't be taken back: the text not yet sent as part of a
///   call is released as content and parsing goes on as plain text. Once the call's
///   `Start` was sent, that is the text from the offending character on; an unfinished
///   started call stays cut short at `finish`.
#[derive(Debug)]
pub struct StreamingToolParser {
    parser: ToolParser,
    mode: Mode,
    /// Text that may be the start of a tag being matched.
    held: String,
    /// The current call region's text not sent as part of a call (content if it breaks).
    raw: String,
    content: Content,
    /// Calls started so far.
    calls: usize,
    /// Llama: whether the start of the output has settled "calls" or "content".
    decided: bool,
    malformed: bool,
}

/// Where the streaming parser is.
#[derive(Debug, Default)]
enum Mode {
    /// Plain text, watching for the opening tag (Llama: only at the start).
    #[default]
    Text,
    /// After an opening tag, before the call.
    Open,
    Call(Call),
    /// Hermes: after a call object, before `</tool_call>`.
    Close,
    /// Llama: after a call; `;` and whitespace, then another call or content.
    Between,
    /// Mistral `[...]`: a call object or `]` comes next.
    Item,
    /// Mistral `[...]`: `,` or `]` comes next.
    NextItem,
    /// Mistral v11: the function name, then `[ARGS]` or `{`.
    Name(String),
    /// Mistral v11: after `name[ARGS]`.
    Args(String),
}

impl StreamingToolParser {
    /// Feeds the next piece of generated text; returns what it adds.
    pub fn push(&mut self, text: &str) -> Vec<ToolDelta> {
        let mut out = Vec::new();
        for c in text.chars() {
            self.step(c, &mut out);
        }
        out
    }

    /// End of generation: flushes what is held back (an unfinished call not yet started
    /// is released as content).
    pub fn finish(&mut self) -> Vec<ToolDelta> {
        let mut out = Vec::new();
        match take(&mut self.mode) {
            Mode::Text => {
                let held = take(&mut self.held);
                self.content.push(&held, &mut out);
            }
            // A complete call whose closing tag or next call never came.
            Mode::Close | Mode::Between => {}
            _ => self.release(&mut out),
        }
        self.held.clear();
        self.raw.clear();
        out
    }

    /// True once any tool call was started (the choice's finish_reason becomes "tool_calls").
    pub fn saw_tool_call(&self) -> bool {
        self.calls > 0
    }

    fn step(&mut self, c: char, out: &mut Vec<ToolDelta>) {
        let mode = take(&mut self.mode);
        match self.advance(mode, c, out) {
            Ok(mode) => self.mode = mode,
            Err(()) => {
                self.release(out);
                self.decided = true;
                // Plain text again: `c` is read as content (or a new opening tag).
                self.step(c, out);
            }
        }
    }

    /// The current call region broke: what it held becomes content.
    fn release(&mut self, out: &mut Vec<ToolDelta>) {
        self.malformed = true;
        let text = take(&mut self.raw) + &take(&mut self.held);
        self.content.push(&text, out);
    }

    /// Reads `c` in `mode`; `Err` when it breaks the call region (`c` not consumed).
    fn advance(&mut self, mode: Mode, c: char, out: &mut Vec<ToolDelta>) -> Result<Mode, ()> {
        let mistral = self.parser == ToolParser::Mistral;
        match mode {
            Mode::Text => self.text(c, out),
            Mode::Open | Mode::Item | Mode::NextItem | Mode::Args(_) if c.is_whitespace() => {
                self.raw.push(c);
                Ok(mode)
            }
            Mode::Open if mistral && c == '[' => {
                self.raw.push(c);
                Ok(Mode::Item)
            }
            Mode::Open if mistral && is_name_char(c) => {
                self.raw.push(c);
                Ok(Mode::Name(c.to_string()))
            }
            // Mistral objects only come inside `[...]`.
            Mode::Open | Mode::Item | Mode::Between
                if c == '{' && (!mistral || matches!(mode, Mode::Item)) =>
            {
                self.advance(Mode::Call(Call::object(self.calls)), c, out)
            }
            Mode::Call(mut call) => {
                let done = call.feed(c, out)?;
                if call.started {
                    self.calls = call.index + 1;
                    self.raw.clear();
                } else {
                    self.raw.push(c);
                }
                Ok(match (done, self.parser) {
                    (false, _) => Mode::Call(call),
                    (true, ToolParser::Hermes) => Mode::Close,
                    (true, ToolParser::Llama3Json) => Mode::Between,
                    (true, ToolParser::Mistral) if call.bare_args => Mode::Text,
                    (true, ToolParser::Mistral) => Mode::NextItem,
                })
            }
            Mode::Close if self.held.is_empty() && c.is_whitespace() => {
                self.raw.push(c);
                Ok(Mode::Close)
            }
            Mode::Close => match match_tag(&mut self.held, c, HERMES_CLOSE) {
                Match::Full => {
                    self.held.clear();
                    self.raw.clear();
                    Ok(Mode::Text)
                }
                Match::Partial => Ok(Mode::Close),
                Match::No => Err(()),
            },
            Mode::Between if c == ';' || c.is_whitespace() => Ok(Mode::Between),
            Mode::Between => self.text(c, out),
            Mode::Item | Mode::NextItem if c == ']' => {
                self.raw.clear();
                Ok(Mode::Text)
            }
            Mode::NextItem if c == ',' => {
                self.raw.push(c);
                Ok(Mode::Item)
            }
            Mode::Name(mut name) if self.held.is_empty() && is_name_char(c) => {
                name.push(c);
                self.raw.push(c);
                Ok(Mode::Name(name))
            }
            Mode::Name(name) | Mode::Args(name) if self.held.is_empty() && c == '{' => {
                self.advance(Mode::Call(Call::arguments(self.calls, name)), c, out)
            }
            Mode::Name(name) => match match_tag(&mut self.held, c, MISTRAL_ARGS) {
                Match::Full => {
                    self.raw.push_str(&take(&mut self.held));
                    Ok(Mode::Args(name))
                }
                Match::Partial => Ok(Mode::Name(name)),
                Match::No => Err(()),
            },
            Mode::Open | Mode::Item | Mode::NextItem | Mode::Args(_) => Err(()),
        }
    }

    /// Reads `c` as plain text, watching for the opening tag.
    fn text(&mut self, c: char, out: &mut Vec<ToolDelta>) -> Result<Mode, ()> {
        let tag = match self.parser {
            ToolParser::Hermes => HERMES_OPEN,
            ToolParser::Mistral => MISTRAL_OPEN,
            ToolParser::Llama3Json if self.decided => {
                self.content.push_char(c, out);
                return Ok(Mode::Text);
            }
            ToolParser::Llama3Json if self.held.is_empty() && c.is_whitespace() => {
                self.content.push_char(c, out);
                return Ok(Mode::Text);
            }
            ToolParser::Llama3Json if self.held.is_empty() && c == '{' => {
                self.decided = true;
                return self.advance(Mode::Open, c, out);
            }
            ToolParser::Llama3Json => PYTHON_TAG,
        };
        match match_tag(&mut self.held, c, tag) {
            Match::Full => {
                self.raw = take(&mut self.held);
                self.decided = true;
                Ok(Mode::Open)
            }
            Match::Partial => Ok(Mode::Text),
            Match::No => {
                self.held.push(c);
                // Release all but the longest tail that may still begin the tag.
                let keep = match self.parser {
                    ToolParser::Llama3Json => self.held.len(),
                    _ => (self.held.char_indices().map(|(i, _)| i))
                        .find(|&i| tag.starts_with(&self.held[i..]))
                        .unwrap_or(self.held.len()),
                };
                self.decided = true;
                let released: String = self.held.drain(..keep).collect();
                self.content.push(&released, out);
                Ok(Mode::Text)
            }
        }
    }
}

/// How far held text plus the next character matches a tag.
enum Match {
    Full,
    Partial,
    No,
}

/// Adds `c` to `held` if that still begins `tag` (`No` leaves `held` as it was).
fn match_tag(held: &mut String, c: char, tag: &str) -> Match {
    held.push(c);
    if held == tag {
        Match::Full
    } else if tag.starts_with(held.as_str()) {
        Match::Partial
    } else {
        held.pop();
        Match::No
    }
}

/// A character of a Mistral function name (vLLM's `[a-zA-Z0-9_-]`).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Appends `delta` to `out`, merging it into the last delta when they continue each other.
fn emit(out: &mut Vec<ToolDelta>, delta: ToolDelta) {
    match (out.last_mut(), delta) {
        (Some(ToolDelta::Content(last)), ToolDelta::Content(text)) => last.push_str(&text),
        (
            Some(ToolDelta::Arguments {
                index: i,
                text: last,
            }),
            ToolDelta::Arguments { index, text },
        ) if *i == index => last.push_str(&text),
        (_, delta) => out.push(delta),
    }
}

/// Content output, trimmed: leading whitespace is dropped, other whitespace waits for
/// the next non-whitespace character (and is dropped if none comes).
#[derive(Debug, Default)]
struct Content {
    started: bool,
    pending: String,
}

impl Content {
    fn push(&mut self, text: &str, out: &mut Vec<ToolDelta>) {
        text.chars().for_each(|c| self.push_char(c, out));
    }

    fn push_char(&mut self, c: char, out: &mut Vec<ToolDelta>) {
        if c.is_whitespace() {
            if self.started {
                self.pending.push(c);
            }
        } else {
            self.started = true;
            self.pending.push(c);
            emit(out, ToolDelta::Content(take(&mut self.pending)));
        }
    }
}

/// One call being read: a `{"name": ..., "arguments": ...}` object, or (Mistral v11, name
/// already read) the arguments object itself.
#[derive(Debug, Default)]
struct Call {
    json: Json,
    index: usize,
    name: Option<String>,
    /// The whole JSON is the arguments.
    bare_args: bool,
    field: Field,
    /// Raw JSON of the member key or `name` value being read.
    raw: String,
    has_args: bool,
    started: bool,
    /// Arguments text read and not yet sent.
    args: String,
}

/// Which member of a call object is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Field {
    #[default]
    Key,
    Name,
    Arguments,
    Other,
}

impl Call {
    fn object(index: usize) -> Self {
        Call {
            index,
            ..Call::default()
        }
    }

    fn arguments(index: usize, name: String) -> Self {
        Call {
            name: Some(name),
            bare_args: true,
            has_args: true,
            ..Call::object(index)
        }
    }

    /// Reads one character, sending `Start` and arguments as they become known;
    /// `Ok(true)` once the call is complete.
    fn feed(&mut self, c: char, out: &mut Vec<ToolDelta>) -> Result<bool, ()> {
        let (depth, role) = self.json.feed(c)?;
        match (depth, role) {
            (_, Role::Space) => {}
            _ if self.bare_args => self.args.push(c),
            (1, Role::Key) => self.raw.push(c),
            (1, Role::Punct) if c == ':' => {
                let key: String = serde_json::from_str(&take(&mut self.raw)).map_err(|_| ())?;
                self.field = match key.as_str() {
                    "name" if self.name.is_none() => Field::Name,
                    "arguments" | "parameters" if !self.has_args => Field::Arguments,
                    "name" | "arguments" | "parameters" => return Err(()),
                    _ => Field::Other,
                };
                self.has_args |= self.field == Field::Arguments;
            }
            // A member ends at `,` or the object's `}` (the opening `{` is a no-op here).
            (1, Role::Punct) | (0, _) => {
                if self.field == Field::Name {
                    let name = serde_json::from_str(&take(&mut self.raw)).map_err(|_| ())?;
                    self.name = Some(name);
                }
                self.field = Field::Key;
            }
            _ => match self.field {
                Field::Name => self.raw.push(c),
                Field::Arguments => self.args.push(c),
                Field::Key | Field::Other => {}
            },
        }
        if let (false, Some(name), false) = (self.started, &self.name, self.args.is_empty()) {
            self.started = true;
            out.push(ToolDelta::Start {
                index: self.index,
                name: name.clone(),
            });
        }
        if self.started && !self.args.is_empty() {
            emit(
                out,
                ToolDelta::Arguments {
                    index: self.index,
                    text: take(&mut self.args),
                },
            );
        }
        match (self.json.expect, self.started) {
            (Expect::Done, true) => Ok(true),
            (Expect::Done, false) => Err(()),
            _ => Ok(false),
        }
    }
}

/// What a character is in a JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Whitespace between tokens.
    Space,
    /// Part of an object key.
    Key,
    /// `:` or `,`.
    Punct,
    /// Part of a value (brackets included).
    Value,
}

/// Escape state inside a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Escape {
    #[default]
    No,
    Backslash,
    /// Hex digits of `\uXXXX` still to come.
    Hex(u8),
}

/// What a JSON text needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Expect {
    /// The top-level `{`.
    #[default]
    Start,
    Value,
    /// Just after `[`.
    ValueOrEnd,
    Key,
    /// Just after `{`.
    KeyOrEnd,
    Colon,
    CommaOrEnd,
    /// Inside a string (an object key or not).
    Str {
        key: bool,
    },
    Number,
    /// The rest of `true`, `false` or `null`.
    Literal(&'static str),
    Done,
}

/// Incremental checker of one JSON object, a character at a time.
#[derive(Debug, Default)]
struct Json {
    /// Open brackets.
    stack: Vec<char>,
    expect: Expect,
    escape: Escape,
    /// The number being read (checked when it ends).
    number: String,
}

impl Json {
    /// Checks the next character: its depth (brackets count at their parent's depth) and
    /// role, or `Err` if the text can no longer be a JSON object.
    fn feed(&mut self, c: char) -> Result<(usize, Role), ()> {
        let depth = self.stack.len();
        match self.expect {
            Expect::Str { key } => {
                self.escape = match (self.escape, c) {
                    (Escape::No, '"') => {
                        self.expect = if key {
                            Expect::Colon
                        } else {
                            Expect::CommaOrEnd
                        };
                        Escape::No
                    }
                    (Escape::No, '\\') => Escape::Backslash,
                    (Escape::No, c) if c >= ' ' => Escape::No,
                    (Escape::Backslash, 'u') => Escape::Hex(4),
                    (Escape::Backslash, '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => {
                        Escape::No
                    }
                    (Escape::Hex(n), c) if c.is_ascii_hexdigit() => Escape::Hex(n - 1),
                    _ => return Err(()),
                };
                if self.escape == Escape::Hex(0) {
                    self.escape = Escape::No;
                }
                return Ok((depth, if key { Role::Key } else { Role::Value }));
            }
            Expect::Literal(rest) => {
                let rest = rest.strip_prefix(c).ok_or(())?;
                self.expect = if rest.is_empty() {
                    Expect::CommaOrEnd
                } else {
                    Expect::Literal(rest)
                };
                return Ok((depth, Role::Value));
            }
            Expect::Number if matches!(c, '0'..='9' | '-' | '+' | '.' | 'e' | 'E') => {
                self.number.push(c);
                return Ok((depth, Role::Value));
            }
            Expect::Number => {
                serde_json::from_str::<serde_json::Number>(&take(&mut self.number))
                    .map_err(|_| ())?;
                self.expect = Expect::CommaOrEnd;
            }
            _ => {}
        }
        if matches!(c, ' ' | '\t' | '\n' | '\r') && self.expect != Expect::Done {
            return Ok((depth, Role::Space));
        }
        let role = match (self.expect, c) {
            (Expect::Start, '{') | (Expect::Value | Expect::ValueOrEnd, '{' | '[') => {
                self.stack.push(c);
                self.expect = if c == '{' {
                    Expect::KeyOrEnd
                } else {
                    Expect::ValueOrEnd
                };
                Role::Value
            }
            (Expect::KeyOrEnd | Expect::CommaOrEnd, '}')
            | (Expect::ValueOrEnd | Expect::CommaOrEnd, ']') => {
                let open = if c == '}' { '{' } else { '[' };
                if self.stack.pop() != Some(open) {
                    return Err(());
                }
                self.expect = if self.stack.is_empty() {
                    Expect::Done
                } else {
                    Expect::CommaOrEnd
                };
                Role::Value
            }
            (Expect::Key | Expect::KeyOrEnd, '"') => {
                self.expect = Expect::Str { key: true };
                Role::Key
            }
            (Expect::Colon, ':') => {
                self.expect = Expect::Value;
                Role::Punct
            }
            (Expect::CommaOrEnd, ',') => {
                self.expect = if self.stack.last() == Some(&'{') {
                    Expect::Key
                } else {
                    Expect::Value
                };
                Role::Punct
            }
            (Expect::Value | Expect::ValueOrEnd, _) => {
                self.expect = match c {
                    '"' => Expect::Str { key: false },
                    '-' | '0'..='9' => {
                        self.number.push(c);
                        Expect::Number
                    }
                    't' => Expect::Literal("rue"),
                    'f' => Expect::Literal("alse"),
                    'n' => Expect::Literal("ull"),
                    _ => return Err(()),
                };
                Role::Value
            }
            _ => return Err(()),
        };
        Ok((depth.min(self.stack.len()), role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ToolParser::{Hermes, Llama3Json, Mistral};
    use proptest::prelude::*;
    use serde_json::Value;

    fn call(name: &str, arguments: &str) -> ParsedToolCall {
        ParsedToolCall {
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn all_content(text: &str) -> ParsedOutput {
        ParsedOutput {
            content: Some(text.into()),
            tool_calls: vec![],
        }
    }

    /// Streams `pieces`, checks the delta invariants, and collects (content, calls, saw).
    fn stream(parser: ToolParser, pieces: &[&str]) -> (String, Vec<ParsedToolCall>, bool) {
        let mut s = parser.streaming();
        let mut deltas: Vec<ToolDelta> = pieces.iter().flat_map(|p| s.push(p)).collect();
        deltas.extend(s.finish());
        let (mut content, mut calls) = (String::new(), Vec::new());
        for delta in deltas {
            match delta {
                ToolDelta::Content(text) => content.push_str(&text),
                ToolDelta::Start { index, name } => {
                    assert_eq!(index, calls.len(), "calls are numbered 0, 1, 2...");
                    calls.push(call(&name, ""));
                }
                // Indexing panics if Arguments come before their Start.
                ToolDelta::Arguments { index, text } => calls[index].arguments.push_str(&text),
            }
        }
        assert_eq!(s.saw_tool_call(), !calls.is_empty());
        (content, calls, s.saw_tool_call())
    }

    /// Streaming `text` cut before the given character positions gives the same as whole.
    fn check_splits(parser: ToolParser, text: &str, cuts: &[usize]) {
        let mut bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        bounds.push(text.len());
        let mut at: Vec<usize> = cuts.iter().map(|&c| bounds[c % bounds.len()]).collect();
        at.extend([0, text.len()]);
        at.sort_unstable();
        let pieces: Vec<&str> = at.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        assert_eq!(
            stream(parser, &pieces),
            stream(parser, &[text]),
            "{pieces:?}"
        );
    }

    /// `parse` equals the stream, and so does every split in two and one char at a time.
    fn check_well_formed(parser: ToolParser, text: &str) {
        let parsed = parser.parse(text);
        let (content, calls, _) = stream(parser, &[text]);
        assert_eq!(
            (parsed.content.unwrap_or_default(), parsed.tool_calls),
            (content, calls)
        );
        let n = text.chars().count();
        (0..=n).for_each(|i| check_splits(parser, text, &[i]));
        check_splits(parser, text, &(1..n).collect::<Vec<_>>());
    }

    #[test]
    fn names_round_trip() {
        for parser in ToolParser::ALL {
            assert_eq!(parser.name().parse::<ToolParser>(), Ok(parser));
        }
        let err = "pythonic".parse::<ToolParser>().unwrap_err();
        assert!(err.contains("hermes, llama3_json, mistral"), "{err}");
    }

    #[test]
    fn hermes() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": \
            {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>\n<tool_call>\n{\"arguments\": \
            {\"q\": \"a } b \\\" {\"}, \"name\": \"search\"}\n</tool_call>\nDone.";
        let parsed = Hermes.parse(text);
        assert_eq!(parsed.content.as_deref(), Some("Let me check.\n\n\nDone."));
        let calls = [
            call("get_weather", r#"{"city":"Paris","unit":"c"}"#),
            call("search", r#"{"q":"a } b \" {"}"#),
        ];
        assert_eq!(parsed.tool_calls, calls);
        check_well_formed(Hermes, text);
        // An unclosed tag at the end is accepted.
        let parsed = Hermes.parse("<tool_call>{\"name\": \"f\", \"arguments\": {}}");
        assert_eq!(
            (parsed.content, parsed.tool_calls),
            (None, vec![call("f", "{}")])
        );
        assert_eq!(Hermes.parse("  hi <b>  "), all_content("hi <b>"));
        assert_eq!(Hermes.parse(" \n "), ParsedOutput::default());
    }

    #[test]
    fn llama3_json() {
        let text = "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"x\": [1, 2.5e3, \
            {\"y\": null}]}}; {\"name\": \"g\", \"arguments\": {}}";
        let parsed = Llama3Json.parse(text);
        let calls = [call("f", r#"{"x":[1,2.5e3,{"y":null}]}"#), call("g", "{}")];
        assert_eq!((parsed.content, parsed.tool_calls), (None, calls.to_vec()));
        check_well_formed(Llama3Json, text);
        let parsed = Llama3Json.parse(" \n{\"name\": \"f\", \"arguments\": {\"k\": \"v\"}}");
        assert_eq!(parsed.tool_calls, [call("f", r#"{"k":"v"}"#)]);
        let text = "{\"name\": \"f\", \"arguments\": {}}\n{\"name\": \"g\", \"arguments\": {}} ok";
        let calls = vec![call("f", "{}"), call("g", "{}")];
        assert_eq!(
            Llama3Json.parse(text),
            ParsedOutput {
                content: Some("ok".into()),
                tool_calls: calls
            }
        );
        // Not at the start: content, even if it holds a call-shaped object.
        let text = "Use {\"name\": \"f\", \"arguments\": {}}";
        assert_eq!(Llama3Json.parse(text), all_content(text));
        check_well_formed(Llama3Json, "<|python_t is not a tag");
    }

    #[test]
    fn mistral() {
        let text = "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": true}}, \
            {\"name\": \"g\", \"arguments\": {\"b\": \"[TOOL_CALLS]\"}}]";
        let parsed = Mistral.parse(text);
        let calls = [
            call("f", r#"{"a":true}"#),
            call("g", r#"{"b":"[TOOL_CALLS]"}"#),
        ];
        assert_eq!((parsed.content, parsed.tool_calls), (None, calls.to_vec()));
        check_well_formed(Mistral, text);
        let text = "Sure [1]. [TOOL_CALLS]get_weather[ARGS]{\"city\": \"Zürich 🌧\"}\
            [TOOL_CALLS]add{\"a\": -1, \"b\": 0.5}";
        let parsed = Mistral.parse(text);
        assert_eq!(parsed.content.as_deref(), Some("Sure [1]."));
        let calls = [
            call("get_weather", "{\"city\":\"Zürich 🌧\"}"),
            call("add", r#"{"a":-1,"b":0.5}"#),
        ];
        assert_eq!(parsed.tool_calls, calls);
        check_well_formed(Mistral, text);
    }

    #[test]
    fn nested_and_escaped_arguments_keep_their_text() {
        let args = r#"{"a": {"b": [1, {"c": "x\u00e9}\n"}], "d": "two  spaces"}, "e": false}"#;
        let text = format!("<tool_call>{{\"name\": \"n\", \"arguments\": {args}}}</tool_call>");
        let expected = r#"{"a":{"b":[1,{"c":"x\u00e9}\n"}],"d":"two  spaces"},"e":false}"#;
        assert_eq!(Hermes.parse(&text).tool_calls, [call("n", expected)]);
        check_well_formed(Hermes, &text);
    }

    #[test]
    fn partial_tags_are_held_back() {
        let start = ToolDelta::Start {
            index: 0,
            name: "f".into(),
        };
        let args = |text: &str| ToolDelta::Arguments {
            index: 0,
            text: text.into(),
        };
        let mut s = Hermes.streaming();
        assert_eq!(s.push("Hi <tool_"), [ToolDelta::Content("Hi".into())]);
        assert!(!s.saw_tool_call());
        let deltas = s.push("call>{\"name\": \"f\", \"arguments\": {\"a\"");
        assert_eq!(deltas, [start, args("{\"a\"")]);
        assert!(s.saw_tool_call());
        assert_eq!(s.push(": 1}}</tool"), [args(":1}")]);
        assert_eq!(s.push("_call> <tool"), []);
        assert_eq!(s.finish(), [ToolDelta::Content("  <tool".into())]);

        let mut s = Mistral.streaming();
        assert_eq!(s.push("[TOOL_"), []);
        assert_eq!(s.finish(), [ToolDelta::Content("[TOOL_".into())]);
    }

    #[test]
    fn malformed_calls() {
        // Broken after the call started: parse gives all content; the stream keeps what
        // it sent and releases the rest.
        let text = "Hi <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": tru}}</tool_call>";
        assert_eq!(Hermes.parse(text), all_content(text));
        let expected = (
            "Hi }}</tool_call>".into(),
            vec![call("f", "{\"a\":tru")],
            true,
        );
        assert_eq!(stream(Hermes, &[text]), expected);
        // Unfinished before the call started: released whole.
        let text = "<tool_call>{\"arguments\": {\"a\": 1}, \"na";
        assert_eq!(Hermes.parse(text), all_content(text));
        assert_eq!(stream(Hermes, &[text]), (text.into(), vec![], false));
        assert_eq!(
            stream(Hermes, &["the <tool_call> tag"]).0,
            "the <tool_call> tag"
        );
        let cases = [
            (Hermes, "the <tool_call> tag"),
            (Hermes, r#"<tool_call>{"arguments": {}}</tool_call>"#),
            (
                Hermes,
                r#"<tool_call>{"name": 3, "arguments": {}}</tool_call>"#,
            ),
            (
                Hermes,
                r#"<tool_call>{"name": "f", "arguments": {}} x</tool_call>"#,
            ),
            (
                Hermes,
                r#"<tool_call>{"name": "f", "arguments": {"a": 01}}"#,
            ),
            (
                Hermes,
                "<tool_call>{\"name\": \"f\", \"arguments\": \"\t\"}",
            ),
            (Llama3Json, r#"<|python_tag|>brave_search.call(query="x")"#),
            (
                Llama3Json,
                r#"{"name": "f", "parameters": {}, "arguments": {}}"#,
            ),
            (Mistral, "[TOOL_CALLS] oops"),
            (Mistral, r#"[TOOL_CALLS][{"name": "f", "arguments": {}}"#),
        ];
        for (parser, text) in cases {
            assert_eq!(parser.parse(text), all_content(text), "{text}");
        }
    }

    /// Short well-formed outputs, edited at random by `edited_samples`.
    const SAMPLES: [(ToolParser, &str); 4] = [
        (
            Hermes,
            r#"A <tool_call>{"name": "f", "arguments": {"a": [1, "}"]}}</tool_call> B<tool_call>{"name": "g", "arguments": 2}"#,
        ),
        (
            Llama3Json,
            r#"{"name": "f", "parameters": {"b": null}}; {"name": "g", "arguments": {}}"#,
        ),
        (
            Mistral,
            r#"A [TOOL_CALLS][{"name": "f", "arguments": {"c": -1.5}}, {"arguments": {}, "name": "g"}]"#,
        ),
        (
            Mistral,
            r#"[TOOL_CALLS]f[ARGS]{"d": "é"}[TOOL_CALLS]g{"e": true} B"#,
        ),
    ];

    #[test]
    fn samples_are_well_formed() {
        for (parser, text) in SAMPLES {
            assert_eq!(parser.parse(text).tool_calls.len(), 2, "{text}");
            check_well_formed(parser, text);
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[{}\\[\\]\"\\\\ <>:,é]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// For any value written pretty-printed, the arguments are its compact form, the
        /// content is the trimmed prefix, and any split streams the same.
        #[test]
        fn arguments_round_trip(
            value in json_value(),
            prefix in "[a-zA-Z ,.!é\n]{0,12}",
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            let compact = serde_json::to_string(&value).unwrap_or_default();
            let call_json = format!("{{\"name\": \"f\", \"arguments\": {pretty}}}");
            let mut cases = vec![
                (Hermes, format!("{prefix}<tool_call>\n{call_json}\n</tool_call>"), 1),
                (Llama3Json, format!("<|python_tag|>{call_json}; {call_json}"), 2),
                (Mistral, format!("{prefix}[TOOL_CALLS][{call_json}]"), 1),
            ];
            if value.is_object() {
                cases.push((Mistral, format!("{prefix}[TOOL_CALLS]f[ARGS]{pretty}"), 1));
            }
            for (parser, text, n) in cases {
                let parsed = parser.parse(&text);
                prop_assert_eq!(&parsed.tool_calls, &vec![call("f", &compact); n]);
                let content = if parser == Llama3Json { None } else { non_empty(prefix.trim()) };
                prop_assert_eq!(&parsed.content, &content);
                let (streamed, calls, _) = stream(parser, &[&text]);
                prop_assert_eq!((streamed, calls), (content.unwrap_or_default(), parsed.tool_calls));
                check_splits(parser, &text, &cuts);
            }
        }

        /// Samples with a few characters inserted or removed (mostly malformed): splits don't
        /// change the stream, and parsed arguments are valid JSON.
        #[test]
        fn edited_samples(
            sample in 0..SAMPLES.len(),
            edits in prop::collection::vec((any::<usize>(), prop::sample::select(vec![
                '{', '}', '[', ']', '"', ':', ',', '\\', ' ', 'a', '1', '<', '\0',
            ])), 1..4),
            cuts in prop::collection::vec(any::<usize>(), 0..10),
        ) {
            let (parser, text) = SAMPLES[sample];
            let mut chars: Vec<char> = text.chars().collect();
            for (at, c) in edits {
                match (at % (chars.len() + 1), c) {
                    (at, '\0') if at < chars.len() => drop(chars.remove(at)),
                    (_, '\0') => {}
                    (at, c) => chars.insert(at, c),
                }
            }
            let text: String = chars.into_iter().collect();
            check_splits(parser, &text, &cuts);
            for call in parser.parse(&text).tool_calls {
                prop_assert!(serde_json::from_str::<Value>(&call.arguments).is_ok(), "{text}");
            }
        }

        /// On any text, well-formed or not, splits don't change what the stream gives, and
        /// all parsed arguments are valid JSON.
        #[test]
        fn any_text_is_split_invariant(
            parts in prop::collection::vec(prop::sample::select(vec![
                "<tool_call>", "</tool_call>", "<tool_", "[TOOL_CALLS]", "[ARGS]", "<|python_tag|>",
                "{", "}", "[", "]", "\"name\"", "\"arguments\"", "\"f\"", ":", ",", ";", " ", "\n",
                "1", "x", "é", "\"", "\\", "true", "<", "{\"name\": \"f\", \"arguments\": ",
                "{\"a\": ", "\"\\u00e9\"", "-0.5e1", "null",
            ]), 0..30),
            cuts in prop::collection::vec(any::<usize>(), 0..10),
        ) {
            let text = parts.concat();
            for parser in ToolParser::ALL {
                check_splits(parser, &text, &cuts);
                for call in parser.parse(&text).tool_calls {
                    prop_assert!(serde_json::from_str::<Value>(&call.arguments).is_ok(), "{text}");
                }
            }
        }
    }
}
