//! `POST /v1/chat/completions`: messages rendered by the model's chat template,
//! `n`, chat-shaped `logprobs` (`content[{token, logprob, bytes, top_logprobs}]`),
//! tools ([`super::tools`]), structured outputs, vLLM's prompt switches
//! (`add_generation_prompt`, `continue_final_message`, `chat_template_kwargs`), SSE
//! streaming with a `role` chunk first and `stream_options` usage.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use super::completions::sse_json;
use super::generate;
use super::generate::UsageReport;
use super::protocol::{
    ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChatDelta, ChatLogprobs, ChatMessageIn, ChatResponseMessage,
    ChatTokenLogprob, ChatTopLogprob, MessageContent, Usage,
};
use super::tools::{StreamDelta, ToolMode, ToolStream};
use super::{ApiError, ApiJson, AppState, ChatMessage, TemplateOptions};
use crate::detokenizer::{token_bytes, token_text};
use crate::frontend::{
    self, Choice, ChoiceEvent, GenerationRequest, Prompt, TierAccess, TokenInfo,
};

const ROLE: &str = "assistant";

/// Handler of `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    access: Option<Extension<TierAccess>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    let model = state.resolve_model(req.model.as_deref())?;
    let messages = to_template_messages(&req.messages)?;
    let logprobs = chat_logprobs_request(req.logprobs, req.top_logprobs)?;
    let options = req.options(req.max_completion_tokens.or(req.max_tokens), logprobs);
    let stream = req.stream.unwrap_or(false);
    if stream && options.prompt_logprobs.is_some() {
        return Err(ApiError::invalid_param(
            "prompt_logprobs",
            "prompt_logprobs is not available on streamed chat completions; use stream: false.",
        ));
    }
    let tools = req.tools.as_deref().unwrap_or_default();
    let mode = ToolMode::resolve(
        req.tools.as_deref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls,
        state.auto_tool_parser,
    )?;
    let text = render_prompt(&state, &req, &messages)?;
    // The template writes BOS and role markers itself.
    let prompt = Prompt::Text {
        text,
        add_special_tokens: false,
    };
    let request = GenerationRequest {
        prompts: vec![prompt],
        options,
        constraint: mode.constraint(tools),
        access: access.map(|Extension(a)| a).unwrap_or_default(),
    };
    let mut valid = frontend::validate(
        request,
        &state.tokenizer,
        state.max_model_len,
        &state.grammars,
    )
    .await?;
    valid.lora = state.adapter(&model).await?;
    let prompt_tokens = valid.prompt_tokens();
    let choices = frontend::submit(&state.engine, &state.tokenizer, &valid, arrival).await?;
    let id = super::request_id("chatcmpl", &headers);
    tracing::info!(request_id = %id, prompt_tokens, n = valid.n, stream, service_tier = %valid.service_tier, "chat request admitted");
    let meta = Meta {
        id,
        created: generate::unix_now(),
        model,
        service_tier: valid.service_tier.as_str(),
        logprobs: valid.logprobs(),
        tokenizer: state.tokenizer.clone(),
        mode,
    };

    if stream {
        let usage = UsageReport::from_options(req.stream_options.as_ref());
        let id = meta.id.clone();
        let response = stream_response(meta, choices, prompt_tokens, usage);
        return Ok(super::with_request_id(response, &headers, &id));
    }
    let collected = frontend::collect_all(choices).await?;
    let completion_tokens = collected.iter().map(|c| c.tokens.len()).sum();
    let prompt_logprobs = collected.first().and_then(|c| {
        let lps = c.prompt_logprobs.as_deref()?;
        Some(generate::prompt_logprobs(&state.tokenizer, lps))
    });
    let choices = collected
        .into_iter()
        .map(|c| {
            let answer = meta.mode.answer(c.text);
            let finish = meta.mode.finish_reason(
                generate::finish_reason(c.finish),
                !answer.tool_calls.is_empty(),
            );
            ChatChoice {
                index: c.index,
                logprobs: meta.logprobs(&c.tokens),
                message: ChatResponseMessage {
                    role: ROLE,
                    content: answer.content,
                    tool_calls: answer.tool_calls,
                },
                finish_reason: finish,
                stop_reason: generate::stop_reason(c.stop_reason),
            }
        })
        .collect();
    let body = ChatCompletionResponse {
        prompt_logprobs,
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices,
        usage: Usage::new(prompt_tokens, completion_tokens),
        service_tier: meta.service_tier,
    };
    let id = body.id.clone();
    Ok(super::with_request_id(
        Json(body).into_response(),
        &headers,
        &id,
    ))
}

/// Template variables a request may not override through `chat_template_kwargs`.
const RESERVED_TEMPLATE_VARS: [&str; 5] = [
    "messages",
    "add_generation_prompt",
    "bos_token",
    "eos_token",
    "tools",
];

/// The prompt text: the template over the messages and tools, with vLLM's
/// `add_generation_prompt` / `continue_final_message` and `chat_template_kwargs`.
///
/// # Errors
/// 400 naming the field: both prompt switches on, a reserved kwarg, a template error,
/// a final message the rendered prompt does not end with.
fn render_prompt(
    state: &AppState,
    req: &ChatCompletionRequest,
    messages: &[ChatMessage],
) -> Result<String, ApiError> {
    let continue_final = req.continue_final_message.unwrap_or(false);
    if continue_final && req.add_generation_prompt == Some(true) {
        return Err(ApiError::invalid_param(
            "continue_final_message",
            "continue_final_message and add_generation_prompt cannot both be true.",
        ));
    }
    let kwargs = req.chat_template_kwargs.clone().unwrap_or_default();
    if let Some(key) = kwargs
        .keys()
        .find(|k| RESERVED_TEMPLATE_VARS.contains(&k.as_str()))
    {
        return Err(ApiError::invalid_param(
            "chat_template_kwargs",
            format!("chat_template_kwargs may not set `{key}`; use the request field."),
        ));
    }
    let options = TemplateOptions {
        add_generation_prompt: !continue_final && req.add_generation_prompt.unwrap_or(true),
        tools: req.tools.clone(),
        kwargs,
    };
    let text = (state.chat_template)(messages, &options)
        .map_err(|e| ApiError::invalid_param("messages", format!("Chat template error: {e}")))?;
    if !continue_final {
        return Ok(text);
    }
    // vLLM (and transformers): cut the prompt right after the last message's text,
    // dropping the end-of-turn marker the template wrote after it.
    let last = messages.last().map_or("", |m| m.content.trim());
    match text.rfind(last).filter(|_| !last.is_empty()) {
        Some(at) => Ok(text[..at + last.len()].to_owned()),
        None => Err(ApiError::invalid_param(
            "continue_final_message",
            "continue_final_message needs a last message with content the template renders.",
        )),
    }
}

/// Joins content parts and checks there is something to render.
///
/// # Errors
/// 400 for an empty list or a non-text content part.
pub(super) fn to_template_messages(
    messages: &[ChatMessageIn],
) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must not be empty.",
        ));
    }
    messages
        .iter()
        .map(|m| {
            let content = match &m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t.clone(),
                Some(MessageContent::Parts(parts)) => {
                    let mut texts = Vec::with_capacity(parts.len());
                    for part in parts {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(text)) => texts.push(text.as_str()),
                            ("text", None) => {
                                return Err(ApiError::invalid_param(
                                    "messages",
                                    "a content part of type `text` needs a `text` field.",
                                ));
                            }
                            (other, _) => {
                                return Err(ApiError::invalid_param(
                                    "messages",
                                    format!("content parts of type `{other}` are not supported; only `text` is."),
                                ));
                            }
                        }
                    }
                    texts.join("\n")
                }
            };
            let tool_calls = m.tool_calls.as_ref().map(|calls| {
                calls
                    .iter()
                    .map(|c| {
                        // Templates read the arguments as an object (`| tojson`), as vLLM
                        // hands them over; text that is not JSON stays text.
                        let arguments = serde_json::from_str(&c.function.arguments)
                            .unwrap_or_else(|_| Value::String(c.function.arguments.clone()));
                        json!({
                            "id": c.id,
                            "type": c.kind.as_deref().unwrap_or("function"),
                            "function": {"name": c.function.name, "arguments": arguments},
                        })
                    })
                    .collect()
            });
            Ok(ChatMessage {
                role: m.role.clone(),
                content,
                name: m.name.clone(),
                tool_calls,
                tool_call_id: m.tool_call_id.clone(),
            })
        })
        .collect()
}

/// Chat's `logprobs: bool` + `top_logprobs: int` as a number of alternatives.
fn chat_logprobs_request(
    logprobs: Option<bool>,
    top: Option<i64>,
) -> Result<Option<i64>, ApiError> {
    match (logprobs.unwrap_or(false), top) {
        (true, top) => Ok(Some(top.unwrap_or(0))),
        (false, Some(t)) if t > 0 => Err(ApiError::invalid_param(
            "top_logprobs",
            "when using `top_logprobs`, `logprobs` must be set to true.",
        )),
        (false, _) => Ok(None),
    }
}

/// Per-request constants every chunk repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
    /// The tier the request runs at (OpenAI echoes it in every chunk).
    service_tier: &'static str,
    logprobs: bool,
    tokenizer: Arc<Tokenizer>,
    mode: ToolMode,
}

impl Meta {
    fn logprobs(&self, tokens: &[TokenInfo]) -> Option<ChatLogprobs> {
        if !self.logprobs {
            return None;
        }
        let content = tokens
            .iter()
            .filter_map(|t| {
                let lp = t.logprobs.as_ref()?;
                let top_logprobs = lp
                    .top
                    .iter()
                    .map(|&(id, logprob)| ChatTopLogprob {
                        token: token_text(&self.tokenizer, id),
                        logprob,
                        bytes: token_bytes(&self.tokenizer, id),
                    })
                    .collect();
                Some(ChatTokenLogprob {
                    token: token_text(&self.tokenizer, t.id),
                    logprob: lp.logprob,
                    bytes: token_bytes(&self.tokenizer, t.id),
                    top_logprobs,
                })
            })
            .collect();
        Some(ChatLogprobs { content })
    }

    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            prompt_logprobs: None,
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            service_tier: self.service_tier,
        }
    }
}

fn stream_response(
    meta: Meta,
    choices: Vec<Choice>,
    prompt_tokens: usize,
    usage: UsageReport,
) -> Response {
    let meta = Arc::new(meta);
    let role_chunks: Vec<Event> = choices
        .iter()
        .map(|c| {
            let choice = ChatChunkChoice {
                index: c.index(),
                delta: ChatDelta {
                    role: Some(ROLE),
                    content: Some(String::new()),
                    tool_calls: Vec::new(),
                },
                logprobs: None,
                finish_reason: None,
                stop_reason: None,
            };
            sse_json(&meta.chunk(vec![choice], usage.running(prompt_tokens, 0)))
        })
        .collect();
    let m = meta.clone();
    let mut tool_streams: Vec<ToolStream> = choices
        .iter()
        .map(|_| ToolStream::new(&meta.mode))
        .collect();
    let chunk = move |event: ChoiceEvent, tokens: Vec<TokenInfo>, completion_tokens: usize| {
        let stream = &mut tool_streams[event.index];
        let delta = stream.push(&event.text, event.finish.is_some());
        let finish = m
            .mode
            .finish_reason(generate::finish_reason(event.finish), stream.has_calls());
        let logprobs = m.logprobs(&tokens);
        if delta == StreamDelta::default() && finish.is_none() && logprobs.is_none() {
            return None;
        }
        let choice = ChatChunkChoice {
            index: event.index,
            delta: ChatDelta {
                role: None,
                content: delta.content,
                tool_calls: delta.tool_calls,
            },
            logprobs,
            finish_reason: finish,
            stop_reason: generate::stop_reason(event.stop_reason),
        };
        let running = usage.running(prompt_tokens, completion_tokens);
        Some(sse_json(&m.chunk(vec![choice], running)))
    };
    let with_logprobs = meta.logprobs;
    let last = usage.last.then_some(move |completion_tokens| {
        sse_json(&meta.chunk(
            Vec::new(),
            Some(Usage::new(prompt_tokens, completion_tokens)),
        ))
    });
    generate::sse_response(role_chunks, choices, with_logprobs, chunk, last)
}
