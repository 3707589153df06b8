//! `POST /v1/completions`: text or token-id prompts (batched), `n`, `echo`,
//! `logprobs` in the legacy parallel-array shape, SSE streaming.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use tokenizers::Tokenizer;

use super::generate;
use super::protocol::{
    CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, PromptInput,
    TopLogprobMap, Usage,
};
use super::{ApiError, ApiJson, AppState};
use crate::detokenizer::token_text;
use crate::frontend::{
    self, Choice, ChoiceEvent, CollectedChoice, GenerationRequest, Prompt, TokenInfo,
};

const OBJECT: &str = "text_completion";

/// Per-request constants every chunk repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
    /// Echoed prompt text per prompt (empty strings without `echo`).
    echo: Vec<String>,
    /// Choices per prompt.
    n: usize,
    logprobs: bool,
    tokenizer: Arc<Tokenizer>,
}

impl Meta {
    fn echo_for(&self, choice: usize) -> &str {
        self.echo
            .get(choice / self.n.max(1))
            .map_or("", String::as_str)
    }

    fn logprobs(&self, choice: usize, tokens: &[TokenInfo]) -> Option<CompletionLogprobs> {
        if !self.logprobs {
            return None;
        }
        let base = self.echo_for(choice).chars().count();
        Some(completion_logprobs(&self.tokenizer, tokens, base))
    }

    fn response(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> CompletionResponse {
        CompletionResponse {
            id: self.id.clone(),
            object: OBJECT,
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
    }
}

/// Handler of `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    let model = state.resolve_model(req.model.as_deref())?;
    let options = req.options(req.max_tokens, req.logprobs);
    let echo = req.echo.unwrap_or(false);
    let add_special_tokens = req.add_special_tokens.unwrap_or(true);
    let inputs = req.prompt.into_inputs();
    let echo_texts: Vec<String> = inputs
        .iter()
        .map(|input| match input {
            _ if !echo => String::new(),
            PromptInput::Text(text) => text.clone(),
            PromptInput::Tokens(ids) => state.tokenizer.decode(ids, false).unwrap_or_default(),
        })
        .collect();
    let prompts = inputs
        .into_iter()
        .map(|input| match input {
            PromptInput::Text(text) => Prompt::Text {
                text,
                add_special_tokens,
            },
            PromptInput::Tokens(ids) => Prompt::Tokens(ids),
        })
        .collect();
    let request = GenerationRequest { prompts, options };
    let valid = frontend::validate(request, &state.tokenizer, state.max_model_len).await?;
    let prompt_tokens = valid.prompt_tokens();
    let choices = frontend::submit(&state.engine, &state.tokenizer, &valid, arrival).await?;
    let id = super::request_id("cmpl", &headers);
    let stream = req.stream.unwrap_or(false);
    tracing::info!(
        request_id = %id, prompt_tokens, prompts = valid.prompts.len(), n = valid.n, stream,
        "completion request admitted"
    );
    let meta = Meta {
        id,
        created: generate::unix_now(),
        model,
        echo: echo_texts,
        n: valid.n,
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
        .map(|c| full_choice(&meta, c))
        .collect();
    let body = meta.response(choices, Some(Usage::new(prompt_tokens, completion_tokens)));
    let id = body.id.clone();
    Ok(super::with_request_id(Json(body).into_response(), &id))
}

fn full_choice(meta: &Meta, c: CollectedChoice) -> CompletionChoice {
    CompletionChoice {
        index: c.index,
        text: format!("{}{}", meta.echo_for(c.index), c.text),
        logprobs: meta.logprobs(c.index, &c.tokens),
        finish_reason: generate::finish_reason(c.finish),
        stop_reason: generate::stop_reason(c.stop_reason),
    }
}

fn stream_response(
    meta: Meta,
    choices: Vec<Choice>,
    prompt_tokens: usize,
    include_usage: bool,
) -> Response {
    let meta = Arc::new(meta);
    // With `echo`, each choice starts with its prompt text, as vLLM streams it.
    let echo_chunks: Vec<Event> = (0..choices.len())
        .filter(|&i| !meta.echo_for(i).is_empty())
        .map(|i| {
            let choice = CompletionChoice {
                index: i,
                text: meta.echo_for(i).to_owned(),
                logprobs: None,
                finish_reason: None,
                stop_reason: None,
            };
            sse_json(&meta.response(vec![choice], None))
        })
        .collect();
    let m = meta.clone();
    let chunk = move |event: ChoiceEvent, tokens: Vec<TokenInfo>| {
        let choice = CompletionChoice {
            index: event.index,
            logprobs: m.logprobs(event.index, &tokens),
            text: event.text,
            finish_reason: generate::finish_reason(event.finish),
            stop_reason: generate::stop_reason(event.stop_reason),
        };
        sse_json(&m.response(vec![choice], None))
    };
    let with_logprobs = meta.logprobs;
    let usage = include_usage.then_some(move |completion_tokens| {
        sse_json(&meta.response(
            Vec::new(),
            Some(Usage::new(prompt_tokens, completion_tokens)),
        ))
    });
    generate::sse_response(echo_chunks, choices, with_logprobs, chunk, usage)
}

/// One SSE `data:` event holding `value` as JSON.
pub(super) fn sse_json<T: serde::Serialize>(value: &T) -> Event {
    let json = serde_json::to_string(value).unwrap_or_else(|e| {
        ApiError::internal(format!("serialization failed: {e}"))
            .to_json()
            .to_string()
    });
    Event::default().data(json)
}

/// Legacy completions logprobs for `tokens`; offsets start at `base` characters.
fn completion_logprobs(
    tokenizer: &Tokenizer,
    tokens: &[TokenInfo],
    base: usize,
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for t in tokens {
        let text = token_text(tokenizer, t.id);
        let (logprob, top) = match &t.logprobs {
            Some(lp) => {
                let mut top: Vec<(String, f32)> = lp
                    .top
                    .iter()
                    .map(|&(id, l)| (token_text(tokenizer, id), l))
                    .collect();
                // vLLM always lists the sampled token among the alternatives.
                if !lp.top.iter().any(|&(id, _)| id == t.id) {
                    top.push((text.clone(), lp.logprob));
                }
                (Some(lp.logprob), Some(TopLogprobMap(top)))
            }
            None => (None, None),
        };
        out.tokens.push(text);
        out.token_logprobs.push(logprob);
        out.top_logprobs.push(top);
        out.text_offset.push(base + t.text_offset);
    }
    out
}
