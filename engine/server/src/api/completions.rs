//! `POST /v1/completions`: text or token-id prompts (batched), `n`, `echo`,
//! `logprobs` in the legacy parallel-array shape, SSE streaming.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tokenizers::Tokenizer;

use super::generate::{self, UsageReport};
use super::protocol::{
    CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, PromptInput,
    PromptLogprobs, TopLogprobMap, Usage,
};
use super::{ApiError, ApiJson, AppState};
use crate::detokenizer::token_text;
use crate::frontend::{
    self, Choice, ChoiceEvent, CollectedChoice, GenerationRequest, Prompt, TierAccess, TokenInfo,
};
use candela_core::PromptLogprob;

const OBJECT: &str = "text_completion";

/// Per-request constants every chunk repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
    /// The tier the request runs at (echoed as chat answers do).
    service_tier: &'static str,
    /// Echoed prompt text per prompt (empty strings without `echo`).
    echo: Vec<String>,
    /// Choices per prompt.
    n: usize,
    logprobs: bool,
    /// The client asked for vLLM's `prompt_logprobs` field (not only `echo` + `logprobs`).
    prompt_logprobs: bool,
    /// Each prompt's token ids (with `echo`, their logprobs lead the choice's).
    prompt_ids: Vec<Vec<u32>>,
    /// Per prompt: the `text_offset` of the first generated token — the echoed text's
    /// length, counted over its token strings as vLLM does when their logprobs are listed.
    offset_base: Vec<usize>,
    tokenizer: Arc<Tokenizer>,
}

impl Meta {
    fn echo_for(&self, choice: usize) -> &str {
        self.echo
            .get(choice / self.n.max(1))
            .map_or("", String::as_str)
    }

    /// The choice's `logprobs`; with `echo`, the echoed prompt's tokens come first
    /// (its first token with `null`s, as OpenAI and vLLM return it) once `prompt` —
    /// the choice's prompt logprobs, which arrive with its first token — is there.
    fn logprobs(
        &self,
        choice: usize,
        tokens: &[TokenInfo],
        prompt: Option<&[PromptLogprob]>,
    ) -> Option<CompletionLogprobs> {
        if !self.logprobs {
            return None;
        }
        let echo = self.echo_for(choice);
        let mut out = CompletionLogprobs::default();
        if let (false, Some(lps)) = (echo.is_empty(), prompt) {
            let ids = self
                .prompt_ids
                .get(choice / self.n.max(1))
                .map_or(&[][..], Vec::as_slice);
            out = echoed_prompt_logprobs(&self.tokenizer, ids, lps);
        }
        let base = self
            .offset_base
            .get(choice / self.n.max(1))
            .copied()
            .unwrap_or(0);
        out.extend(completion_logprobs(&self.tokenizer, tokens, base));
        Some(out)
    }

    /// vLLM's per-choice `prompt_logprobs` when the client asked for them.
    fn prompt_logprobs(&self, prompt: Option<&[PromptLogprob]>) -> Option<PromptLogprobs> {
        let lps = prompt.filter(|_| self.prompt_logprobs)?;
        Some(generate::prompt_logprobs(&self.tokenizer, lps))
    }

    fn response(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> CompletionResponse {
        CompletionResponse {
            prompt_logprobs: None,
            id: self.id.clone(),
            object: OBJECT,
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            service_tier: self.service_tier,
        }
    }
}

/// Handler of `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    access: Option<Extension<TierAccess>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let arrival = Instant::now();
    let model = state.resolve_model(req.model.as_deref())?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid_param(
            "suffix",
            "suffix (insertion) is not supported by this model.",
        ));
    }
    let mut options = req.options(req.max_tokens, req.logprobs);
    let echo = req.echo.unwrap_or(false);
    let report_prompt_logprobs = options.prompt_logprobs.is_some();
    if echo && options.prompt_logprobs.is_none() {
        // `echo` + `logprobs` returns the prompt's tokens with their logprobs too.
        options.prompt_logprobs = req.logprobs;
    }
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
    let request = GenerationRequest {
        prompts,
        options,
        constraint: None,
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
    let id = super::request_id("cmpl", &headers);
    let stream = req.stream.unwrap_or(false);
    tracing::info!(
        request_id = %id, prompt_tokens, prompts = valid.prompts.len(), n = valid.n, stream,
        service_tier = %valid.service_tier, "completion request admitted"
    );
    let offset_base: Vec<usize> = valid
        .prompts
        .iter()
        .zip(&echo_texts)
        .map(|(p, echoed)| match (echo, valid.logprobs()) {
            (false, _) => 0,
            (true, false) => echoed.chars().count(),
            (true, true) => p
                .token_ids
                .iter()
                .map(|&id| token_text(&state.tokenizer, id).chars().count())
                .sum(),
        })
        .collect();
    let meta = Meta {
        id,
        created: generate::unix_now(),
        model,
        service_tier: valid.service_tier.as_str(),
        echo: echo_texts,
        n: valid.n,
        logprobs: valid.logprobs(),
        prompt_logprobs: report_prompt_logprobs,
        offset_base,
        prompt_ids: valid.prompts.iter().map(|p| p.token_ids.clone()).collect(),
        tokenizer: state.tokenizer.clone(),
    };

    if stream {
        let usage = UsageReport::from_options(req.stream_options.as_ref());
        let id = meta.id.clone();
        let response = stream_response(meta, choices, prompt_tokens, usage);
        return Ok(super::with_request_id(response, &headers, &id));
    }
    let collected = frontend::collect_all(choices).await?;
    let completion_tokens = collected.iter().map(|c| c.tokens.len()).sum();
    let choices = collected
        .into_iter()
        .map(|c| full_choice(&meta, c))
        .collect();
    let body = meta.response(choices, Some(Usage::new(prompt_tokens, completion_tokens)));
    let id = body.id.clone();
    Ok(super::with_request_id(
        Json(body).into_response(),
        &headers,
        &id,
    ))
}

fn full_choice(meta: &Meta, c: CollectedChoice) -> CompletionChoice {
    let prompt = c.prompt_logprobs.as_deref();
    CompletionChoice {
        index: c.index,
        text: format!("{}{}", meta.echo_for(c.index), c.text),
        logprobs: meta.logprobs(c.index, &c.tokens, prompt),
        finish_reason: generate::finish_reason(c.finish),
        stop_reason: generate::stop_reason(c.stop_reason),
        prompt_logprobs: meta.prompt_logprobs(prompt),
    }
}

fn stream_response(
    meta: Meta,
    choices: Vec<Choice>,
    prompt_tokens: usize,
    usage: UsageReport,
) -> Response {
    let meta = Arc::new(meta);
    let m = meta.clone();
    // With `echo`, a choice's first chunk starts with its prompt text (and, with
    // `logprobs`, the prompt's logprobs, which come with the first token), as vLLM streams it.
    let mut echo_pending = vec![true; choices.len()];
    let chunk = move |event: ChoiceEvent, tokens: Vec<TokenInfo>, completion_tokens: usize| {
        let first = std::mem::replace(&mut echo_pending[event.index], false);
        let echo = if first { m.echo_for(event.index) } else { "" };
        let prompt = event.prompt_logprobs.as_deref();
        let logprobs = m.logprobs(event.index, &tokens, prompt);
        let choice = CompletionChoice {
            index: event.index,
            logprobs,
            text: format!("{echo}{}", event.text),
            finish_reason: generate::finish_reason(event.finish),
            stop_reason: generate::stop_reason(event.stop_reason),
            prompt_logprobs: m.prompt_logprobs(prompt),
        };
        let running = usage.running(prompt_tokens, completion_tokens);
        Some(sse_json(&m.response(vec![choice], running)))
    };
    let with_logprobs = meta.logprobs;
    let last = usage.last.then_some(move |completion_tokens| {
        sse_json(&meta.response(
            Vec::new(),
            Some(Usage::new(prompt_tokens, completion_tokens)),
        ))
    });
    generate::sse_response(Vec::new(), choices, with_logprobs, chunk, last)
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

/// Legacy completions logprobs of an echoed prompt: its first token has none (nothing
/// precedes it), the others their prompt logprob, listed among their alternatives.
fn echoed_prompt_logprobs(
    tokenizer: &Tokenizer,
    ids: &[u32],
    lps: &[PromptLogprob],
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    let mut offset = 0;
    for (i, &id) in ids.iter().enumerate() {
        let text = token_text(tokenizer, id);
        let lp = i.checked_sub(1).and_then(|j| lps.get(j));
        let top = lp.map(|lp| top_map(tokenizer, id, &text, lp.logprob, &lp.top));
        out.token_logprobs.push(lp.map(|lp| lp.logprob));
        out.top_logprobs.push(top);
        out.text_offset.push(offset);
        offset += text.chars().count();
        out.tokens.push(text);
    }
    out
}

/// A legacy `top_logprobs` entry: the alternatives, then `token` (whose text is `text`)
/// when it is not among them — vLLM always lists the chosen token.
fn top_map(
    tokenizer: &Tokenizer,
    token: u32,
    text: &str,
    logprob: f32,
    top: &[(u32, f32)],
) -> TopLogprobMap {
    let mut entries: Vec<(String, f32)> = top
        .iter()
        .map(|&(id, l)| (token_text(tokenizer, id), l))
        .collect();
    if !top.iter().any(|&(id, _)| id == token) {
        entries.push((text.to_owned(), logprob));
    }
    TopLogprobMap(entries)
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
            Some(lp) => (
                Some(lp.logprob),
                Some(top_map(tokenizer, t.id, &text, lp.logprob, &lp.top)),
            ),
            None => (None, None),
        };
        out.tokens.push(text);
        out.token_logprobs.push(logprob);
        out.top_logprobs.push(top);
        out.text_offset.push(base + t.text_offset);
    }
    out
}
