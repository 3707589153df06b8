//! What both HTTP generation endpoints share after the front end: the SSE body of a
//! streamed answer, `created` timestamps, and the OpenAI spelling of how a choice ended.
//!
//! Choices come from [`crate::frontend`]; the SSE body owns them, so a client that
//! hangs up drops the body, which drops every choice and aborts its engine requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use candela_core::FinishReason;
use futures::stream::{self, StreamExt};

use super::error::ApiError;
use super::protocol::{
    PromptLogprobMap, PromptLogprobValue, PromptLogprobs, StopReason, StreamOptions, Usage,
};
use crate::detokenizer::token_text;
use crate::frontend::{Choice, ChoiceEvent, Stopped, TokenInfo, merge};
use candela_core::PromptLogprob;
use tokenizers::Tokenizer;

/// Seconds since the Unix epoch (OpenAI's `created`).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `finish_reason` as OpenAI spells it.
pub fn finish_reason(finish: Option<FinishReason>) -> Option<&'static str> {
    finish.map(FinishReason::as_str)
}

/// vLLM's `prompt_logprobs`: `null` for the first prompt token, then each token's
/// map of itself and its top alternatives.
pub fn prompt_logprobs(tokenizer: &Tokenizer, lps: &[PromptLogprob]) -> PromptLogprobs {
    let value = |id: u32, logprob: f32, rank: usize| PromptLogprobValue {
        logprob,
        rank,
        decoded_token: token_text(tokenizer, id),
    };
    std::iter::once(None)
        .chain(lps.iter().map(|lp| {
            let mut entries = vec![(lp.token, value(lp.token, lp.logprob, lp.rank))];
            entries.extend(
                lp.top
                    .iter()
                    .enumerate()
                    .map(|(i, &(id, l))| (id, value(id, l, i + 1))),
            );
            Some(PromptLogprobMap(entries))
        }))
        .collect()
}

/// vLLM's `stop_reason`: the stop token id or stop string; `null` for EOS.
pub fn stop_reason(stopped: Option<Stopped>) -> Option<StopReason> {
    match stopped? {
        Stopped::Eos => None,
        Stopped::Token(t) => Some(StopReason::Token(t)),
        Stopped::String(s) => Some(StopReason::String(s)),
    }
}

/// Where a streamed answer reports `usage` (`stream_options`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// `include_usage`: a last chunk with `usage` and no choices.
    pub last: bool,
    /// vLLM's `continuous_usage_stats` (with `include_usage`): every chunk carries
    /// the usage so far.
    pub every_chunk: bool,
}

impl UsageReport {
    pub fn from_options(options: Option<&StreamOptions>) -> Self {
        let last = options.and_then(|o| o.include_usage).unwrap_or(false);
        let continuous = options
            .and_then(|o| o.continuous_usage_stats)
            .unwrap_or(false);
        Self {
            last,
            every_chunk: last && continuous,
        }
    }

    /// The `usage` of a chunk sent after `completion_tokens` tokens.
    pub fn running(&self, prompt_tokens: usize, completion_tokens: usize) -> Option<Usage> {
        self.every_chunk
            .then(|| Usage::new(prompt_tokens, completion_tokens))
    }
}

/// The SSE body both endpoints stream: `head` events first (sent together with
/// the first chunk, not before the prompt is processed), then one event per
/// choice event built by `chunk` from the event, its tokens and its choice's
/// completion tokens so far (events with no text, no finish and no logprobs to report are
/// skipped, and so are those `chunk` answers `None` for), then — when `usage` is
/// given — the usage chunk built from the number of completion tokens, then
/// `[DONE]`. An engine failure goes out as OpenAI error JSON in place of its chunk.
pub fn sse_response<C, U>(
    head: Vec<Event>,
    choices: Vec<Choice>,
    with_logprobs: bool,
    mut chunk: C,
    usage: Option<U>,
) -> Response
where
    C: FnMut(ChoiceEvent, Vec<TokenInfo>, usize) -> Option<Event> + Send + 'static,
    U: FnOnce(usize) -> Event + Send + 'static,
{
    let completion_tokens = Arc::new(AtomicUsize::new(0));
    let counter = completion_tokens.clone();
    // Tokens per choice: a chunk's running usage is its own choice's (as vLLM counts).
    let mut per_choice = vec![0usize; choices.len()];
    let body = merge(choices).filter_map(move |mut event| {
        let out = if let Some(err) = event.error.take() {
            Some(Event::default().data(ApiError::from(err).to_json().to_string()))
        } else {
            if event.token.is_some() {
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = per_choice.get_mut(event.index) {
                    *n += 1;
                }
            }
            let so_far = per_choice.get(event.index).copied().unwrap_or(0);
            let tokens: Vec<TokenInfo> = event.token.take().into_iter().collect();
            let silent = event.text.is_empty()
                && event.finish.is_none()
                && !with_logprobs
                && event.prompt_logprobs.is_none();
            if silent {
                None
            } else {
                chunk(event, tokens, so_far)
            }
        };
        futures::future::ready(out)
    });
    // The head (chat's role chunk) goes out with the first engine output, as in
    // vLLM, so a client's time to first chunk is the time to the first token.
    let mut head = Some(head);
    let body = body.flat_map(move |event| {
        stream::iter(
            head.take()
                .unwrap_or_default()
                .into_iter()
                .chain(Some(event)),
        )
    });
    let tail =
        stream::once(async move { usage.map(|u| u(completion_tokens.load(Ordering::Relaxed))) })
            .filter_map(futures::future::ready);
    let events = body
        .chain(tail)
        .chain(stream::once(async { Event::default().data("[DONE]") }))
        .map(Ok::<_, std::convert::Infallible>);
    // Comments every 15 s keep proxies from timing out a request still queued.
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
