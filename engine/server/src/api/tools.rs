//! Tool calling on `/v1/chat/completions`, as vLLM serves it.
//!
//! [`ToolMode::resolve`] reads `tools`, `tool_choice` and `parallel_tool_calls`
//! against the server's `--enable-auto-tool-choice` / `--tool-call-parser`:
//! - `none`: tools reach the template, the answer is plain text;
//! - `auto`: the model's family parser ([`ToolParser`]) finds calls in its text; an
//!   answer that is nothing but one bare `{"name": <a tool>, "arguments": {...}}`
//!   object (small models drop the Hermes tags, e.g. Qwen2.5-Coder-0.5B) is that call;
//! - `required`: a grammar forces a JSON array of `{"name", "parameters"}` objects,
//!   one per call (vLLM's schema), so every answer is at least one valid call;
//! - a named function: a grammar forces that function's arguments object.
//!
//! [`ToolMode::answer`] turns a finished text into content and calls;
//! [`ToolStream`] does the same chunk by chunk for streamed answers.

use serde_json::{Value, json};

use super::ApiError;
use super::protocol::{
    FunctionCallDelta, FunctionCallOut, Tool, ToolCallDelta, ToolCallOut, ToolChoice,
    ToolChoiceMode,
};
use crate::frontend::structured::Requested;
use crate::frontend::tool_calls::{StreamingToolParser, ToolDelta, ToolParser};
use candela_structured::{Constraint, JsonWhitespace};

const FUNCTION: &str = "function";

/// How a request's answer relates to its tools.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolMode {
    /// Plain text (no tools, or `tool_choice: "none"`).
    None,
    /// The model decides; its text is parsed for calls.
    Auto {
        parser: ToolParser,
        parallel: bool,
        /// The tools' names (a bare JSON call must name one).
        names: Vec<String>,
    },
    /// At least one call, forced by a grammar.
    Required { parallel: bool },
    /// A call of this function, forced by a grammar over its arguments.
    Named(String),
}

/// A finished answer: text for `content` (if any) and its calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Answer {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCallOut>,
}

impl ToolMode {
    /// The mode a request asks for; `auto_parser` is the server's parser when it
    /// runs with `--enable-auto-tool-choice`.
    ///
    /// # Errors
    /// 400 naming `tool_choice` or `tools`: a named function that is not among the
    /// tools, `required` or a name without tools, `auto` without the server flags,
    /// two tools with one name.
    pub fn resolve(
        tools: Option<&[Tool]>,
        choice: Option<&ToolChoice>,
        parallel: Option<bool>,
        auto_parser: Option<ToolParser>,
    ) -> Result<Self, ApiError> {
        let tools = tools.unwrap_or_default();
        for (i, t) in tools.iter().enumerate() {
            if tools[..i]
                .iter()
                .any(|u| u.function.name == t.function.name)
            {
                return Err(ApiError::invalid_param(
                    "tools",
                    format!("two tools are named `{}`.", t.function.name),
                ));
            }
        }
        let parallel = parallel.unwrap_or(true);
        let default = if tools.is_empty() {
            ToolChoiceMode::None
        } else {
            ToolChoiceMode::Auto
        };
        let choice = choice.cloned().unwrap_or(ToolChoice::Mode(default));
        let need_tools = |what: &str| {
            if tools.is_empty() {
                Err(ApiError::invalid_param(
                    "tool_choice",
                    format!("tool_choice {what} needs `tools`."),
                ))
            } else {
                Ok(())
            }
        };
        match choice {
            ToolChoice::Mode(ToolChoiceMode::None) => Ok(ToolMode::None),
            ToolChoice::Mode(ToolChoiceMode::Auto)
                if auto_parser.is_some()
                    && tools.iter().any(|t| t.function.strict == Some(true)) =>
            {
                // The parser reads what the model wrote; nothing forces it to the schema.
                Err(ApiError::invalid_param(
                    "tools",
                    "`strict: true` tools are only enforced when a call is forced \
                     (tool_choice \"required\" or a named function), not with \"auto\".",
                ))
            }
            ToolChoice::Mode(ToolChoiceMode::Auto) => match auto_parser {
                Some(parser) if !tools.is_empty() => Ok(ToolMode::Auto {
                    parser,
                    parallel,
                    names: tools.iter().map(|t| t.function.name.clone()).collect(),
                }),
                Some(_) => Ok(ToolMode::None),
                None if tools.is_empty() => Ok(ToolMode::None),
                None => Err(ApiError::invalid_param(
                    "tool_choice",
                    "\"auto\" tool choice requires --enable-auto-tool-choice and \
                     --tool-call-parser to be set",
                )),
            },
            ToolChoice::Mode(ToolChoiceMode::Required) => {
                need_tools("\"required\"")?;
                Ok(ToolMode::Required { parallel })
            }
            ToolChoice::Named(named) => {
                need_tools("naming a function")?;
                let name = named.function.name;
                if !tools.iter().any(|t| t.function.name == name) {
                    return Err(ApiError::invalid_param(
                        "tool_choice",
                        format!("tool_choice names `{name}`, which is not among the tools."),
                    ));
                }
                Ok(ToolMode::Named(name))
            }
        }
    }

    /// The grammar a forced call runs under (`required` and named).
    pub fn constraint(&self, tools: &[Tool]) -> Option<Requested> {
        let schema = match self {
            ToolMode::None | ToolMode::Auto { .. } => return None,
            ToolMode::Required { parallel } => {
                let items: Vec<Value> = tools
                    .iter()
                    .map(|t| {
                        json!({
                            "type": "object",
                            "properties": {
                                "name": {"type": "string", "enum": [t.function.name]},
                                "parameters": parameters(t),
                            },
                            "required": ["name", "parameters"],
                            "additionalProperties": false,
                        })
                    })
                    .collect();
                let mut schema = json!({"type": "array", "minItems": 1, "items": {"anyOf": items}});
                if !parallel {
                    schema["maxItems"] = json!(1);
                }
                schema
            }
            ToolMode::Named(name) => tools
                .iter()
                .find(|t| &t.function.name == name)
                .map(parameters)?,
        };
        Some(Requested {
            field: "tool_choice",
            constraint: Constraint::JsonSchema {
                schema,
                whitespace: JsonWhitespace::Compact,
            },
        })
    }

    /// Content and calls of a finished text.
    pub fn answer(&self, text: String) -> Answer {
        match self {
            ToolMode::None => Answer {
                content: Some(text),
                tool_calls: Vec::new(),
            },
            ToolMode::Auto {
                parser,
                parallel,
                names,
            } => {
                if let Some(c) = bare_call(&text, names) {
                    return Answer {
                        content: None,
                        tool_calls: vec![c],
                    };
                }
                let parsed = parser.parse(&text);
                let mut calls: Vec<ToolCallOut> = parsed
                    .tool_calls
                    .into_iter()
                    .map(|c| call(c.name, c.arguments))
                    .collect();
                if !parallel {
                    calls.truncate(1);
                }
                Answer {
                    content: parsed.content,
                    tool_calls: calls,
                }
            }
            ToolMode::Required { .. } => match required_calls(&text) {
                Some(calls) => Answer {
                    content: None,
                    tool_calls: calls,
                },
                // Cut short (max_tokens): what there is, as text.
                None => Answer {
                    content: Some(text),
                    tool_calls: Vec::new(),
                },
            },
            ToolMode::Named(name) => Answer {
                content: None,
                tool_calls: vec![call(name.clone(), text)],
            },
        }
    }

    /// `finish_reason` of a choice that ended as `finish` with `has_calls`: OpenAI's
    /// `tool_calls` when the model chose to call (auto, required), unchanged otherwise.
    pub fn finish_reason(
        &self,
        finish: Option<&'static str>,
        has_calls: bool,
    ) -> Option<&'static str> {
        match (self, finish) {
            (ToolMode::Auto { .. } | ToolMode::Required { .. }, Some("stop")) if has_calls => {
                Some("tool_calls")
            }
            _ => finish,
        }
    }
}

/// A whole answer that is one JSON object `{"name": <one of names>, "arguments"
/// (or "parameters"): {...}}`, bare or in a Markdown code fence, as a call.
fn bare_call(text: &str, names: &[String]) -> Option<ToolCallOut> {
    let t = text.trim();
    let t = match t.strip_prefix("```") {
        Some(fenced) => fenced
            .trim_start_matches("json")
            .strip_suffix("```")?
            .trim(),
        None => t,
    };
    let Value::Object(call_obj) = serde_json::from_str::<Value>(t).ok()? else {
        return None;
    };
    let name = call_obj.get("name")?.as_str()?;
    let arguments = call_obj
        .get("arguments")
        .or_else(|| call_obj.get("parameters"))?;
    if call_obj.len() != 2 || !arguments.is_object() || !names.iter().any(|n| n == name) {
        return None;
    }
    Some(call(
        name.to_owned(),
        serde_json::to_string(arguments).ok()?,
    ))
}

/// Whether an auto answer starting with `text` may turn out to be a bare call (and so
/// must be held back while streaming).
fn may_be_bare_call(text: &str) -> bool {
    let t = text.trim_start();
    t.starts_with('{') || t.starts_with('`')
}

/// The arguments schema of a tool (`{"type": "object"}` when it declares none).
fn parameters(tool: &Tool) -> Value {
    tool.function
        .parameters
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}))
}

/// A call with a fresh id, vLLM's `chatcmpl-tool-<uuid>`.
fn call(name: String, arguments: String) -> ToolCallOut {
    ToolCallOut {
        id: call_id(),
        kind: FUNCTION,
        function: FunctionCallOut { name, arguments },
    }
}

fn call_id() -> String {
    format!("chatcmpl-tool-{}", uuid::Uuid::new_v4().simple())
}

/// The calls of a `required` answer: `[{"name": ..., "parameters": {...}}, ...]`.
fn required_calls(text: &str) -> Option<Vec<ToolCallOut>> {
    let items: Vec<Value> = serde_json::from_str(text).ok()?;
    items
        .into_iter()
        .map(|item| {
            let name = item.get("name")?.as_str()?.to_owned();
            let arguments = serde_json::to_string(item.get("parameters")?).ok()?;
            Some(call(name, arguments))
        })
        .collect()
}

/// What one streamed piece of a choice's text becomes.
#[derive(Debug, Default, PartialEq)]
pub struct StreamDelta {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCallDelta>,
}

/// One choice's streamed answer under a [`ToolMode`].
#[derive(Debug)]
pub enum ToolStream {
    /// Text passes through.
    Plain,
    /// The family parser splits content from calls as text arrives; an answer that
    /// starts like a bare JSON call is held whole until the end.
    Auto {
        parser: Box<StreamingToolParser>,
        parallel: bool,
        names: Vec<String>,
        /// Text not yet given to `parser`: `Some` while it may be a bare call.
        held: Option<String>,
        /// A bare call went out.
        bare: bool,
    },
    /// The whole array is needed to know the calls: held until the end.
    Required { text: String, done: bool },
    /// The name is known up front; arguments stream as generated.
    Named { name: String, started: bool },
}

impl ToolStream {
    pub fn new(mode: &ToolMode) -> Self {
        match mode {
            ToolMode::None => ToolStream::Plain,
            ToolMode::Auto {
                parser,
                parallel,
                names,
            } => ToolStream::Auto {
                parser: Box::new(parser.streaming()),
                parallel: *parallel,
                names: names.clone(),
                held: Some(String::new()),
                bare: false,
            },
            ToolMode::Required { .. } => ToolStream::Required {
                text: String::new(),
                done: false,
            },
            ToolMode::Named(name) => ToolStream::Named {
                name: name.clone(),
                started: false,
            },
        }
    }

    /// True once a call has gone out (its finish reason becomes `tool_calls`).
    pub fn has_calls(&self) -> bool {
        match self {
            ToolStream::Plain => false,
            ToolStream::Required { done, .. } => *done,
            ToolStream::Auto { parser, bare, .. } => *bare || parser.saw_tool_call(),
            ToolStream::Named { started, .. } => *started,
        }
    }

    /// The next piece of text; `last` flushes everything held back.
    pub fn push(&mut self, text: &str, last: bool) -> StreamDelta {
        match self {
            ToolStream::Plain => StreamDelta {
                content: (!text.is_empty()).then(|| text.to_owned()),
                tool_calls: Vec::new(),
            },
            ToolStream::Auto {
                parser,
                parallel,
                names,
                held,
                bare,
            } => {
                let mut input = text.to_owned();
                if let Some(h) = held {
                    h.push_str(text);
                    let undecided = h.trim().is_empty() || may_be_bare_call(h);
                    if undecided && !last {
                        return StreamDelta::default();
                    }
                    input = std::mem::take(h);
                    *held = None;
                    if let Some(c) = bare_call(&input, names) {
                        *bare = true;
                        return StreamDelta {
                            content: None,
                            tool_calls: vec![whole_call_delta(0, c)],
                        };
                    }
                }
                let mut deltas = parser.push(&input);
                if last {
                    deltas.extend(parser.finish());
                }
                auto_delta(deltas, *parallel)
            }
            ToolStream::Required { text: held, done } => {
                held.push_str(text);
                if !last {
                    return StreamDelta::default();
                }
                match required_calls(held) {
                    Some(calls) => {
                        *done = true;
                        StreamDelta {
                            content: None,
                            tool_calls: calls
                                .into_iter()
                                .enumerate()
                                .map(|(index, c)| whole_call_delta(index, c))
                                .collect(),
                        }
                    }
                    None => StreamDelta {
                        content: Some(std::mem::take(held)),
                        tool_calls: Vec::new(),
                    },
                }
            }
            ToolStream::Named { name, started } => {
                if text.is_empty() && (*started || !last) {
                    return StreamDelta::default();
                }
                let first = !*started;
                *started = true;
                StreamDelta {
                    content: None,
                    tool_calls: vec![ToolCallDelta {
                        index: 0,
                        id: first.then(call_id),
                        kind: first.then_some(FUNCTION),
                        function: FunctionCallDelta {
                            name: first.then(|| name.clone()),
                            arguments: Some(text.to_owned()),
                        },
                    }],
                }
            }
        }
    }
}

/// A call known whole (a bare call, a `required` array) as one stream delta.
fn whole_call_delta(index: usize, call: ToolCallOut) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: Some(call.id),
        kind: Some(FUNCTION),
        function: FunctionCallDelta {
            name: Some(call.function.name),
            arguments: Some(call.function.arguments),
        },
    }
}

/// The chunk delta of the family parser's output; with `parallel: false` calls
/// after the first are dropped.
fn auto_delta(deltas: Vec<ToolDelta>, parallel: bool) -> StreamDelta {
    let mut out = StreamDelta::default();
    for d in deltas {
        match d {
            ToolDelta::Content(t) => out.content.get_or_insert_with(String::new).push_str(&t),
            ToolDelta::Start { index, name } if parallel || index == 0 => {
                out.tool_calls.push(ToolCallDelta {
                    index,
                    id: Some(call_id()),
                    kind: Some(FUNCTION),
                    function: FunctionCallDelta {
                        name: Some(name),
                        arguments: Some(String::new()),
                    },
                });
            }
            ToolDelta::Arguments { index, text } if parallel || index == 0 => {
                out.tool_calls.push(ToolCallDelta {
                    index,
                    id: None,
                    kind: None,
                    function: FunctionCallDelta {
                        name: None,
                        arguments: Some(text),
                    },
                });
            }
            ToolDelta::Start { .. } | ToolDelta::Arguments { .. } => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::protocol::{FunctionDef, NamedFunction, NamedToolChoice, ToolKind};

    fn tool(name: &str) -> Tool {
        Tool {
            kind: ToolKind::Function,
            function: FunctionDef {
                name: name.into(),
                description: None,
                parameters: Some(
                    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
                ),
                strict: None,
            },
        }
    }

    fn named(name: &str) -> ToolChoice {
        ToolChoice::Named(NamedToolChoice {
            kind: ToolKind::Function,
            function: NamedFunction { name: name.into() },
        })
    }

    fn refused(r: Result<ToolMode, ApiError>) -> String {
        r.unwrap_err().to_json().to_string()
    }

    #[test]
    fn the_flags_values_are_the_parsers() {
        let names: Vec<&str> = ToolParser::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names, candela_contract::serve::TOOL_CALL_PARSERS);
        for name in names {
            assert_eq!(name.parse::<ToolParser>().unwrap().name(), name);
        }
    }

    #[test]
    fn modes_follow_tool_choice_and_server_flags() {
        let tools = [tool("weather"), tool("time")];
        let hermes = Some(ToolParser::Hermes);
        let mode = |choice, parser| ToolMode::resolve(Some(&tools), choice, None, parser);
        assert_eq!(
            mode(None, hermes).unwrap(),
            ToolMode::Auto {
                parser: ToolParser::Hermes,
                parallel: true,
                names: vec!["weather".into(), "time".into()]
            }
        );
        assert_eq!(
            mode(Some(&ToolChoice::Mode(ToolChoiceMode::None)), None).unwrap(),
            ToolMode::None
        );
        assert_eq!(
            mode(Some(&ToolChoice::Mode(ToolChoiceMode::Required)), None).unwrap(),
            ToolMode::Required { parallel: true }
        );
        let time = named("time");
        assert_eq!(
            mode(Some(&time), None).unwrap(),
            ToolMode::Named("time".into())
        );
        assert!(refused(mode(None, None)).contains("--enable-auto-tool-choice"));
        let nope = named("nope");
        assert!(refused(mode(Some(&nope), hermes)).contains("not among the tools"));
        assert!(
            refused(ToolMode::resolve(
                None,
                Some(&ToolChoice::Mode(ToolChoiceMode::Required)),
                None,
                hermes
            ))
            .contains("needs `tools`")
        );
        assert_eq!(
            ToolMode::resolve(None, None, None, None).unwrap(),
            ToolMode::None
        );
        let mut strict = tool("weather");
        strict.function.strict = Some(true);
        let strict = [strict];
        assert!(refused(ToolMode::resolve(Some(&strict), None, None, hermes)).contains("strict"));
        let required = ToolChoice::Mode(ToolChoiceMode::Required);
        assert_eq!(
            ToolMode::resolve(Some(&strict), Some(&required), None, hermes).unwrap(),
            ToolMode::Required { parallel: true }
        );
        let twice = [tool("a"), tool("a")];
        assert!(refused(ToolMode::resolve(Some(&twice), None, None, hermes)).contains("two tools"));
    }

    #[test]
    fn forced_modes_have_grammars_and_parse_their_output() {
        let tools = [tool("weather"), tool("time")];
        let required = ToolMode::Required { parallel: false };
        let c = required.constraint(&tools).unwrap();
        let Constraint::JsonSchema { schema, .. } = c.constraint else {
            panic!()
        };
        assert_eq!(schema["maxItems"], 1);
        assert_eq!(
            schema["items"]["anyOf"][1]["properties"]["name"]["enum"][0],
            "time"
        );
        let a = required.answer(r#"[{"name": "time", "parameters": {"city": "Oslo"}}]"#.into());
        assert_eq!(a.content, None);
        assert_eq!(a.tool_calls[0].function.name, "time");
        assert_eq!(a.tool_calls[0].function.arguments, r#"{"city":"Oslo"}"#);
        assert!(a.tool_calls[0].id.starts_with("chatcmpl-tool-"));
        let cut = required.answer(r#"[{"name": "ti"#.into());
        assert!(cut.tool_calls.is_empty() && cut.content.is_some());
        let named = ToolMode::Named("weather".into());
        let Constraint::JsonSchema { schema, .. } = named.constraint(&tools).unwrap().constraint
        else {
            panic!()
        };
        assert_eq!(schema["required"][0], "city");
        let a = named.answer(r#"{"city": "Rome"}"#.into());
        assert_eq!(a.tool_calls[0].function.arguments, r#"{"city": "Rome"}"#);
        assert_eq!(ToolMode::None.constraint(&tools), None);
        assert_eq!(
            required.finish_reason(Some("stop"), true),
            Some("tool_calls")
        );
        assert_eq!(named.finish_reason(Some("stop"), true), Some("stop"));
        assert_eq!(
            required.finish_reason(Some("length"), false),
            Some("length")
        );
    }

    #[test]
    fn streams_give_what_the_whole_answer_gives() {
        let text = "Let me check.<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
        let mode = ToolMode::Auto {
            parser: ToolParser::Hermes,
            parallel: true,
            names: vec!["weather".into()],
        };
        let whole = mode.answer(text.into());
        assert_eq!(whole.content.as_deref(), Some("Let me check."));
        let mut stream = ToolStream::new(&mode);
        let (mut content, mut args, mut name) = (String::new(), String::new(), None);
        let chars: Vec<char> = text.chars().collect();
        for (i, piece) in chars.chunks(3).enumerate() {
            let piece: String = piece.iter().collect();
            let d = stream.push(&piece, (i + 1) * 3 >= chars.len());
            content.push_str(d.content.as_deref().unwrap_or(""));
            for c in d.tool_calls {
                name = name.or(c.function.name);
                args.push_str(c.function.arguments.as_deref().unwrap_or(""));
            }
        }
        assert!(stream.has_calls());
        assert_eq!(Some(content), whole.content);
        assert_eq!(name.as_deref(), Some("weather"));
        assert_eq!(args, whole.tool_calls[0].function.arguments);

        let mut named = ToolStream::new(&ToolMode::Named("weather".into()));
        let first = named.push("{\"city\"", false);
        assert_eq!(
            first.tool_calls[0].function.name.as_deref(),
            Some("weather")
        );
        let second = named.push(": \"Oslo\"}", true);
        assert_eq!(second.tool_calls[0].id, None);
        assert_eq!(
            second.tool_calls[0].function.arguments.as_deref(),
            Some(": \"Oslo\"}")
        );
    }
}

#[cfg(test)]
mod bare_call_tests {
    use super::*;

    fn mode() -> ToolMode {
        ToolMode::Auto {
            parser: ToolParser::Hermes,
            parallel: true,
            names: vec!["get_weather".into()],
        }
    }

    /// Streams `text` in 4-char pieces; (content, [(name, arguments)], has_calls).
    fn streamed(text: &str) -> (String, Vec<(String, String)>, bool) {
        let mut s = ToolStream::new(&mode());
        let chars: Vec<char> = text.chars().collect();
        let (mut content, mut calls) = (String::new(), Vec::<(String, String)>::new());
        let pieces: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let d = s.push(piece, i + 1 == pieces.len());
            content.push_str(d.content.as_deref().unwrap_or(""));
            for c in d.tool_calls {
                if let Some(name) = c.function.name {
                    calls.push((name, String::new()));
                }
                calls
                    .last_mut()
                    .unwrap()
                    .1
                    .push_str(c.function.arguments.as_deref().unwrap_or(""));
            }
        }
        (content, calls, s.has_calls())
    }

    #[test]
    fn a_bare_or_fenced_json_call_of_a_known_tool_is_a_call() {
        for text in [
            r#"{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}"#,
            "```json\n{\n  \"name\": \"get_weather\",\n  \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}\n}\n```",
        ] {
            let a = mode().answer(text.into());
            assert_eq!(a.content, None, "{text}");
            assert_eq!(
                a.tool_calls[0].function.arguments,
                r#"{"city":"Paris","unit":"celsius"}"#
            );
            let (content, calls, has) = streamed(text);
            assert!(has && content.is_empty());
            assert_eq!(
                calls,
                vec![(
                    "get_weather".to_owned(),
                    a.tool_calls[0].function.arguments.clone()
                )]
            );
        }
    }

    #[test]
    fn other_json_and_prose_stay_content() {
        for text in [
            r#"{"name": "get_time", "arguments": {}}"#,
            r#"{"name": "get_weather", "arguments": {}, "extra": 1}"#,
            r#"{"city": "Paris"}"#,
            "It is sunny in Paris.",
        ] {
            let a = mode().answer(text.into());
            assert!(a.tool_calls.is_empty(), "{text}");
            assert_eq!(a.content.as_deref(), Some(text));
            let (content, calls, has) = streamed(text);
            assert!(!has && calls.is_empty());
            assert_eq!(content, text);
        }
    }
}
