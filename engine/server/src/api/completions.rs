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

use super::generate::{self, CollectedChoice, PreparedPrompt, Submission, TokenInfo};
use super::params::GenerationPlan;
use super::protocol::{
    CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, PromptInput,
    TopLogprobMap, Usage,
};
use super::{ApiError, ApiJson, AppState};
use crate::detokenizer::token_text;

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
    let sampling = req.sampling();
    let inputs = req.prompt.into_inputs();
    if inputs.is_empty() {
        return Err(ApiError::invalid_param(
            "prompt",
            "prompt must not be empty.",
        ));
    }
    let plan = GenerationPlan::new(&sampling, req.max_tokens, req.logprobs, inputs.len())?;
    let echo = req.echo.unwrap_or(false);
    let add_special_tokens = req.add_special_tokens.unwrap_or(true);

    let mut prompts = Vec::with_capacity(inputs.len());
    let mut echo_texts = Vec::with_capacity(inputs.len());
    for input in inputs {
        let (token_ids, text) = match input {
            PromptInput::Text(text) => {
                let kept = if echo { text.clone() } else { String::new() };
                (
                    generate::tokenize(&state.tokenizer, text, add_special_tokens).await?,
                    kept,
                )
            }
            PromptInput::Tokens(ids) => {
                generate::check_token_ids(&state.tokenizer, &ids)?;
                let text = if echo {
                    state.tokenizer.decode(&ids, false).unwrap_or_default()
                } else {
                    String::new()
                };
                (ids, text)
            }
        };
        prompts.push(PreparedPrompt { token_ids });
        echo_texts.push(text);
    }
    let prompt_tokens: usize = prompts.iter().map(|p| p.token_ids.len()).sum();

    let submission = Submission {
        engine: &state.engine,
        tokenizer: &state.tokenizer,
        eos_token_ids: &state.eos_token_ids,
        max_model_len: state.max_model_len,
        plan: &plan,
        arrival,
    };
    let choices = submission.submit(&prompts).await?;
    let id = super::request_id("cmpl", &headers);
    let stream = req.stream.unwrap_or(false);
    tracing::info!(
        request_id = %id, prompt_tokens, prompts = prompts.len(), n = plan.n, stream,
        "completion request admitted"
    );
    let meta = Meta {
        id,
        created: generate::unix_now(),
        model,
        echo: echo_texts,
        n: plan.n,
        logprobs: plan.params.logprobs.is_some(),
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
    let collected = generate::collect_all(choices).await?;
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
        finish_reason: c.finish,
    }
}

fn stream_response(
    meta: Meta,
    choices: Vec<generate::Choice>,
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
            };
            sse_json(&meta.response(vec![choice], None))
        })
        .collect();
    let m = meta.clone();
    let chunk = move |event: generate::ChoiceEvent, tokens: Vec<TokenInfo>| {
        let choice = CompletionChoice {
            index: event.index,
            logprobs: m.logprobs(event.index, &tokens),
            text: event.text,
            finish_reason: event.finish,
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
