//! Wire types of the OpenAI (and vLLM-extended) HTTP API, as serde structs.
//!
//! Requests are parsed strictly: a field this server does not know is a 400 naming
//! it (a field that changes the output must never be silently ignored); the few
//! OpenAI documents as having no effect on the output (`user`, `metadata`, `store`)
//! are declared and accepted. `null` means "absent", and a present field of the
//! wrong type is a 400. Integer fields that clients get wrong in hostile ways
//! (`max_tokens`, `n`, `logprobs`, ...) are read as `i64` so that `-1` reaches the
//! range checks in [`crate::frontend::validate`] and gets a message naming the field instead of a
//! serde type error. Responses mirror OpenAI's shapes field for field.

use serde::de::IgnoredAny;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::frontend::SamplingOptions;
use crate::frontend::request::with_sampling_fields;

/// Completions `prompt`: text, a batch of texts, token ids, or a batch of token id lists.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

/// One prompt of a (possibly batched) completions request.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    Text(String),
    Tokens(Vec<u32>),
}

impl Prompt {
    /// The prompts of the batch, in order (a single prompt is a batch of one).
    pub fn into_inputs(self) -> Vec<PromptInput> {
        match self {
            Prompt::Text(t) => vec![PromptInput::Text(t)],
            Prompt::Texts(v) => v.into_iter().map(PromptInput::Text).collect(),
            Prompt::Tokens(t) => vec![PromptInput::Tokens(t)],
            Prompt::TokenBatches(v) => v.into_iter().map(PromptInput::Tokens).collect(),
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` and empty `choices` before `[DONE]`.
    #[serde(default)]
    pub include_usage: Option<bool>,
    /// vLLM: every chunk carries the usage so far.
    #[serde(default)]
    pub continuous_usage_stats: Option<bool>,
}

/// Declares a request struct with its own fields plus every sampling field inline
/// (the list is [`with_sampling_fields!`]'s), and `options(max_tokens, logprobs)`, its
/// one conversion into the neutral [`SamplingOptions`]. (`#[serde(flatten)]` would
/// nest them but loses the field name in type errors, and "invalid type at
/// `temperature`" is the message clients need.)
macro_rules! generation_request {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }
        ; $($(#[$smeta:meta])* $sfield:ident : $sty:ty,)*
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            $($(#[$smeta])* pub $sfield: $sty,)*
            /// Accepted without effect: OpenAI's end-user id for abuse monitoring.
            pub user: Option<IgnoredAny>,
            /// Accepted without effect: tags and the switch for OpenAI's stored completions.
            pub metadata: Option<IgnoredAny>,
            pub store: Option<IgnoredAny>,
        }

        impl $name {
            /// The sampling fields as the front end takes them; `max_tokens` and
            /// `logprobs` in their neutral form (each endpoint spells them its own way).
            pub fn options(&self, max_tokens: Option<i64>, logprobs: Option<i64>) -> SamplingOptions {
                SamplingOptions {
                    $($sfield: self.$sfield.clone(),)*
                    max_tokens,
                    logprobs,
                }
            }
        }
    };
}

with_sampling_fields!(generation_request! {
    /// `POST /v1/completions`.
    pub struct CompletionRequest {
        /// Absent means the first served model name.
        pub model: Option<String>,
        pub prompt: Prompt,
        pub max_tokens: Option<i64>,
        pub stream: Option<bool>,
        pub stream_options: Option<StreamOptions>,
        /// Number of top alternatives per token (0–20).
        pub logprobs: Option<i64>,
        /// Prepend the prompt to the returned text.
        pub echo: Option<bool>,
        /// Text after the completion (insertion); not supported, a 400 when non-empty.
        pub suffix: Option<String>,
        /// vLLM extra: add BOS etc. when tokenizing a text prompt (default true).
        pub add_special_tokens: Option<bool>,
    }
});

/// Chat message `content`: a string or a list of content parts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One content part; only `{"type": "text", "text": ...}` is supported.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// One message of a chat request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessageIn {
    pub role: String,
    /// `null` for assistant messages that only carried tool calls.
    pub content: Option<MessageContent>,
    pub name: Option<String>,
    /// An assistant turn's calls, rendered back into the prompt by the template.
    pub tool_calls: Option<Vec<ToolCallIn>>,
    /// A `tool` message answers this call.
    pub tool_call_id: Option<String>,
    /// Accepted without effect: OpenAI's refusal text of an earlier assistant turn.
    pub refusal: Option<IgnoredAny>,
}

/// A tool call of an earlier assistant turn.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallIn {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: FunctionCallIn,
}

/// `tool_calls[].function` of a request message: `arguments` is JSON text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionCallIn {
    pub name: String,
    pub arguments: String,
}

/// One entry of `tools`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// Only `"function"`.
    #[serde(rename = "type")]
    pub kind: ToolKind,
    pub function: FunctionDef,
}

/// The one kind of tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolKind {
    Function,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionDef {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of the arguments object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Arguments follow `parameters` exactly when a call is forced (`required`, named);
    /// `true` with `auto`, where nothing can force them, is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: a mode or one named function.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(ToolChoiceMode),
    Named(NamedToolChoice),
}

/// `tool_choice` as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

/// `tool_choice: {"type": "function", "function": {"name": ...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: ToolKind,
    pub function: NamedFunction,
}

/// The function a named `tool_choice` forces.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedFunction {
    pub name: String,
}

with_sampling_fields!(generation_request! {
    /// `POST /v1/chat/completions`.
    pub struct ChatCompletionRequest {
        pub model: Option<String>,
        pub messages: Vec<ChatMessageIn>,
        pub max_tokens: Option<i64>,
        /// Newer OpenAI spelling of `max_tokens`; wins when both are given.
        pub max_completion_tokens: Option<i64>,
        pub stream: Option<bool>,
        pub stream_options: Option<StreamOptions>,
        /// Return the sampled tokens' log-probabilities.
        pub logprobs: Option<bool>,
        /// Alternatives per token (0–20); requires `logprobs: true`.
        pub top_logprobs: Option<i64>,
        /// vLLM extra: end the rendered prompt with the assistant header (default true).
        pub add_generation_prompt: Option<bool>,
        /// vLLM extra: leave the last (assistant) message open so the model continues it.
        pub continue_final_message: Option<bool>,
        /// vLLM extra: more variables for the chat template.
        pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
        pub tools: Option<Vec<Tool>>,
        pub tool_choice: Option<ToolChoice>,
        /// With `false`, at most one tool call per answer.
        pub parallel_tool_calls: Option<bool>,
    }
});

/// `POST /tokenize`: either `prompt` or `messages`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub messages: Option<Vec<ChatMessageIn>>,
    pub add_special_tokens: Option<bool>,
    pub add_generation_prompt: Option<bool>,
    /// Tools the chat template shows, so the count matches a chat request with them.
    pub tools: Option<Vec<Tool>>,
}

/// Answer of `POST /tokenize`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenizeResponse {
    pub count: usize,
    pub max_model_len: usize,
    pub tokens: Vec<u32>,
}

/// `POST /detokenize`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

/// Answer of `POST /detokenize`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetokenizeResponse {
    pub prompt: String,
}

/// Token counts of a request (all choices together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Completions `top_logprobs` entry: a JSON object `{token: logprob}` in rank order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopLogprobMap(pub Vec<(String, f32)>);

impl Serialize for TopLogprobMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        let mut seen = std::collections::HashSet::new();
        for (token, logprob) in &self.0 {
            // Two ids can decode to the same text; a JSON object keeps the first.
            if seen.insert(token.as_str()) {
                map.serialize_entry(token, logprob)?;
            }
        }
        map.end()
    }
}

/// One token's value in a `prompt_logprobs` entry (vLLM's `Logprob`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptLogprobValue {
    pub logprob: f32,
    pub rank: usize,
    pub decoded_token: String,
}

/// One prompt position of vLLM's `prompt_logprobs`: `{token_id: value}` for the
/// prompt's own token and the top alternatives (JSON object keys are the ids).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptLogprobMap(pub Vec<(u32, PromptLogprobValue)>);

impl Serialize for PromptLogprobMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        let mut seen = std::collections::HashSet::new();
        for (id, value) in &self.0 {
            if seen.insert(*id) {
                map.serialize_entry(&id.to_string(), value)?;
            }
        }
        map.end()
    }
}

/// `prompt_logprobs` of a prompt: `null` for its first token, then one map per token.
pub type PromptLogprobs = Vec<Option<PromptLogprobMap>>;

/// Completions `logprobs`: parallel arrays, one entry per returned token.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<TopLogprobMap>>,
    /// Character offset of each token in the choice's `text`.
    pub text_offset: Vec<usize>,
}

impl CompletionLogprobs {
    /// Appends another chunk's arrays (used when collecting a non-streamed answer).
    pub fn extend(&mut self, other: CompletionLogprobs) {
        self.tokens.extend(other.tokens);
        self.token_logprobs.extend(other.token_logprobs);
        self.top_logprobs.extend(other.top_logprobs);
        self.text_offset.extend(other.text_offset);
    }
}

/// vLLM's `stop_reason` of a choice: the stop token id or stop string that ended it
/// (`null` for EOS, a length finish, or while it runs).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StopReason {
    Token(u32),
    String(String),
}

/// One choice of a completions answer or chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReason>,
    /// vLLM's `prompt_logprobs`, when asked for (with the choice's first chunk when streamed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<PromptLogprobs>,
}

/// The envelope every completions and chat answer and stream chunk shares: `id`,
/// `object`, `created`, `model`, `choices` and `usage` (left out when `None`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(bound(serialize = "C: Serialize, U: Serialize + MaybeUsage"))]
pub struct Envelope<C, U> {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<C>,
    #[serde(skip_serializing_if = "MaybeUsage::is_absent")]
    pub usage: U,
    /// OpenAI's `service_tier`: the tier the request ran at (`priority`, `default`, `flex`).
    pub service_tier: &'static str,
    /// vLLM's chat `prompt_logprobs` (the prompt is shared by every choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<PromptLogprobs>,
}

/// `usage` of an [`Envelope`]: always there ([`Usage`]) or optional.
pub trait MaybeUsage {
    fn is_absent(&self) -> bool;
}

impl MaybeUsage for Usage {
    fn is_absent(&self) -> bool {
        false
    }
}

impl MaybeUsage for Option<Usage> {
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

/// `text_completion` answer (and, with `object` = `text_completion`, each stream chunk).
pub type CompletionResponse = Envelope<CompletionChoice, Option<Usage>>;

/// One alternative in chat `top_logprobs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// One sampled token in chat `logprobs.content`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<ChatTopLogprob>,
}

/// Chat `logprobs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

/// The assistant message of a non-streamed chat choice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatResponseMessage {
    pub role: &'static str,
    /// `null` when the answer is only tool calls.
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCallOut>,
}

/// A tool call of an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallOut {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCallOut,
}

/// `tool_calls[].function` of an answer: `arguments` is JSON text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCallOut {
    pub name: String,
    pub arguments: String,
}

/// One tool call's part of a stream chunk's `delta.tool_calls`: the first for a call
/// carries `id`, `type` and the name; later ones more `arguments` text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionCallDelta,
}

/// `delta.tool_calls[].function`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FunctionCallDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// One choice of a non-streamed chat answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatResponseMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReason>,
}

/// `chat.completion` answer.
pub type ChatCompletionResponse = Envelope<ChatChoice, Usage>;

/// `delta` of a chat stream chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
}

/// One choice of a chat stream chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
    pub stop_reason: Option<StopReason>,
}

/// `chat.completion.chunk`.
pub type ChatCompletionChunk = Envelope<ChatChunkChoice, Option<Usage>>;

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    pub root: String,
    pub parent: Option<String>,
    pub max_model_len: usize,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
        let de = &mut serde_json::Deserializer::from_str(s);
        serde_path_to_error::deserialize(de).map_err(|e| e.to_string())
    }

    #[test]
    fn prompt_shapes() {
        let r: CompletionRequest = parse(r#"{"model":"m","prompt":"hi"}"#).unwrap();
        assert_eq!(r.prompt.into_inputs(), vec![PromptInput::Text("hi".into())]);
        let r: CompletionRequest = parse(r#"{"prompt":["a","b"]}"#).unwrap();
        assert_eq!(r.prompt.into_inputs().len(), 2);
        let r: CompletionRequest = parse(r#"{"prompt":[1,2,3]}"#).unwrap();
        assert_eq!(
            r.prompt.into_inputs(),
            vec![PromptInput::Tokens(vec![1, 2, 3])]
        );
        let r: CompletionRequest = parse(r#"{"prompt":[[1],[2,3]]}"#).unwrap();
        assert_eq!(r.prompt.into_inputs()[1], PromptInput::Tokens(vec![2, 3]));
        let r: CompletionRequest = parse(r#"{"prompt":[]}"#).unwrap();
        assert!(r.prompt.into_inputs().is_empty());
    }

    #[test]
    fn hostile_prompt_shapes_are_errors() {
        assert!(parse::<CompletionRequest>(r#"{"prompt":42}"#).is_err());
        assert!(parse::<CompletionRequest>(r#"{"prompt":[-1]}"#).is_err());
        assert!(parse::<CompletionRequest>(r#"{"prompt":[1,"a"]}"#).is_err());
        assert!(parse::<CompletionRequest>(r#"{"model":"m"}"#).is_err());
        assert!(parse::<CompletionRequest>(r#"{"prompt":"x""#).is_err());
        assert!(parse::<CompletionRequest>("not json").is_err());
        assert!(parse::<CompletionRequest>("[]").is_err());
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = parse::<CompletionRequest>(r#"{"prompt":"x","max_tokens":"ten"}"#).unwrap_err();
        assert!(e.contains("max_tokens"), "{e}");
        let e = parse::<ChatCompletionRequest>(r#"{"messages":[{"role":"user","content":1}]}"#)
            .unwrap_err();
        assert!(e.contains("messages"), "{e}");
        let e = parse::<ChatCompletionRequest>(r#"{"messages":[],"logprobs":5}"#).unwrap_err();
        assert!(e.contains("logprobs"), "{e}");
        let e =
            parse::<ChatCompletionRequest>(r#"{"messages":[],"temperature":"hot"}"#).unwrap_err();
        assert!(e.starts_with("temperature"), "{e}");
        let e = parse::<CompletionRequest>(r#"{"prompt":"x","stop":7}"#).unwrap_err();
        assert!(e.starts_with("stop"), "{e}");
    }

    #[test]
    fn extras_unknown_fields_and_nulls_are_accepted() {
        let r: CompletionRequest = parse(
            r#"{"prompt":"x","user":"u","logit_bias":{},"suffix":null,"top_k":5,"min_p":0.1,
                "repetition_penalty":1.1,"min_tokens":2,"ignore_eos":true,"stop_token_ids":[7],
                "priority":-3,"include_stop_str_in_output":true,"skip_special_tokens":false,
                "stop":"\n","seed":null,"n":2,"echo":true,"logprobs":3,
                "stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(r.options(None, None).top_k, Some(5));
        assert_eq!(r.options(None, None).stop, Some(vec!["\n".to_owned()]));
        assert_eq!(r.options(None, None).stop_token_ids, Some(vec![7]));
        assert_eq!(r.options(None, None).priority, Some(-3));
        assert_eq!(r.options(None, None).seed, None);
        assert_eq!(r.stream_options.and_then(|o| o.include_usage), Some(true));
        assert_eq!(r.logprobs, Some(3));
    }

    #[test]
    fn chat_content_shapes() {
        let r: ChatCompletionRequest = parse(
            r#"{"model":"m","messages":[
                {"role":"system","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null}],
                "logprobs":true,"top_logprobs":2,"max_completion_tokens":5,"stop":["x","y"]}"#,
        )
        .unwrap();
        assert_eq!(r.messages.len(), 3);
        assert!(matches!(&r.messages[1].content, Some(MessageContent::Parts(p)) if p.len() == 2));
        assert_eq!(r.messages[2].content, None);
        assert_eq!(r.logprobs, Some(true));
        assert_eq!(r.max_completion_tokens, Some(5));
        assert_eq!(
            r.options(None, None).stop,
            Some(vec!["x".into(), "y".into()])
        );
    }

    #[test]
    fn negative_and_huge_integers_parse_for_range_checks() {
        let r: CompletionRequest = parse(r#"{"prompt":"x","max_tokens":-5,"n":0}"#).unwrap();
        assert_eq!(r.max_tokens, Some(-5));
        assert_eq!(r.options(None, None).n, Some(0));
        let r: CompletionRequest =
            parse(r#"{"prompt":"x","max_tokens":9223372036854775807}"#).unwrap();
        assert_eq!(r.max_tokens, Some(i64::MAX));
        assert!(parse::<CompletionRequest>(r#"{"prompt":"x","max_tokens":1e40}"#).is_err());
        assert!(parse::<CompletionRequest>(r#"{"prompt":"x","max_tokens":1.5}"#).is_err());
    }

    #[test]
    fn responses_have_openai_shape() {
        let chunk = ChatCompletionChunk {
            prompt_logprobs: None,
            id: "chatcmpl-1".into(),
            object: "chat.completion.chunk",
            created: 1,
            model: "m".into(),
            choices: vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    tool_calls: Vec::new(),
                },
                logprobs: None,
                finish_reason: None,
                stop_reason: None,
            }],
            usage: None,
            service_tier: "flex",
        };
        let v = serde_json::to_value(&chunk).unwrap();
        assert_eq!(v["choices"][0]["delta"]["role"], "assistant");
        assert!(v["choices"][0]["finish_reason"].is_null());
        assert!(v["choices"][0]["stop_reason"].is_null());
        assert_eq!(serde_json::to_value(StopReason::Token(7)).unwrap(), 7);
        assert_eq!(
            serde_json::to_value(StopReason::String("###".into())).unwrap(),
            "###"
        );
        assert!(v.get("usage").is_none());
        assert_eq!(v["service_tier"], "flex");
        let top = TopLogprobMap(vec![
            ("a".into(), -0.5),
            ("b".into(), -1.0),
            ("a".into(), -2.0),
        ]);
        assert_eq!(
            serde_json::to_string(&top).unwrap(),
            r#"{"a":-0.5,"b":-1.0}"#
        );
        assert_eq!(Usage::new(3, 4).total_tokens, 7);
    }
}
