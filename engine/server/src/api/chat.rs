//! `POST /v1/chat/completions`: messages rendered by the model's chat template,
//! `n`, chat-shaped `logprobs` (`content[{token, logprob, bytes, top_logprobs}]`),
//! SSE streaming with a `role` chunk first and `stream_options.include_usage`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use tokenizers::Tokenizer;

use super::completions::sse_json;
use super::generate;
use super::protocol::{
    ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChatDelta, ChatLogprobs, ChatMessageIn, ChatResponseMessage,
    ChatTokenLogprob, ChatTopLogprob, MessageContent, Usage,
};
use super::{ApiError, ApiJson, AppState, ChatMessage};
use crate::detokenizer::{token_bytes, token_text};
use crate::frontend::{self, Choice, ChoiceEvent, GenerationRequest, Prompt, TokenInfo};

const ROLE: &str = "assistant";

/// Handler of `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    let model = state.resolve_model(req.model.as_deref())?;
    let messages = to_template_messages(&req.messages)?;
    let logprobs = chat_logprobs_request(req.logprobs, req.top_logprobs)?;
    let options = req.options(req.max_completion_tokens.or(req.max_tokens), logprobs);
    let add_generation_prompt = req.add_generation_prompt.unwrap_or(true);
    let text = (state.chat_template)(&messages, add_generation_prompt)
        .map_err(|e| ApiError::invalid_param("messages", format!("Chat template error: {e}")))?;
    // The template writes BOS and role markers itself.
    let prompt = Prompt::Text {
        text,
        add_special_tokens: false,
    };
    let request = GenerationRequest {
        prompts: vec![prompt],
        options,
    };
    let valid = frontend::validate(request, &state.tokenizer, state.max_model_len).await?;
    let prompt_tokens = valid.prompt_tokens();
    let choices = frontend::submit(&state.engine, &state.tokenizer, &valid, arrival).await?;
    let id = super::request_id("chatcmpl", &headers);
    let stream = req.stream.unwrap_or(false);
    tracing::info!(request_id = %id, prompt_tokens, n = valid.n, stream, "chat request admitted");
    let meta = Meta {
        id,
        created: generate::unix_now(),
        model,
        logprobs: valid.logprobs(),
        tokenizer: state.tokenizer.clone(),
    };

    if stream {
        let include_usage = req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let id = meta.id.clone();
        let response = stream_response(meta, choices, prompt_tokens, include_usage);
        return Ok(super::with_request_id(response, &id));
    }
    let collected = frontend::collect_all(choices).await?;
    let completion_tokens = collected.iter().map(|c| c.tokens.len()).sum();
    let choices = collected
        .into_iter()
        .map(|c| ChatChoice {
            index: c.index,
            logprobs: meta.logprobs(&c.tokens),
            message: ChatResponseMessage {
                role: ROLE,
                content: c.text,
            },
            finish_reason: generate::finish_reason(c.finish),
            stop_reason: generate::stop_reason(c.stop_reason),
        })
        .collect();
    let body = ChatCompletionResponse {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices,
        usage: Usage::new(prompt_tokens, completion_tokens),
    };
    let id = body.id.clone();
    Ok(super::with_request_id(Json(body).into_response(), &id))
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
            Ok(ChatMessage { role: m.role.clone(), content })
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
    logprobs: bool,
    tokenizer: Arc<Tokenizer>,
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
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
    }
}

fn stream_response(
    meta: Meta,
    choices: Vec<Choice>,
    prompt_tokens: usize,
    include_usage: bool,
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
                },
                logprobs: None,
                finish_reason: None,
                stop_reason: None,
            };
            sse_json(&meta.chunk(vec![choice], None))
        })
        .collect();
    let m = meta.clone();
    let chunk = move |event: ChoiceEvent, tokens: Vec<TokenInfo>| {
        let content = (!event.text.is_empty()).then_some(event.text);
        let choice = ChatChunkChoice {
            index: event.index,
            delta: ChatDelta {
                role: None,
                content,
            },
            logprobs: m.logprobs(&tokens),
            finish_reason: generate::finish_reason(event.finish),
            stop_reason: generate::stop_reason(event.stop_reason),
        };
        sse_json(&m.chunk(vec![choice], None))
    };
    let with_logprobs = meta.logprobs;
    let usage = include_usage.then_some(move |completion_tokens| {
        sse_json(&meta.chunk(
            Vec::new(),
            Some(Usage::new(prompt_tokens, completion_tokens)),
        ))
    });
    generate::sse_response(role_chunks, choices, with_logprobs, chunk, usage)
}
