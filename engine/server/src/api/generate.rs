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
use super::protocol::StopReason;
use crate::frontend::{Choice, ChoiceEvent, Stopped, TokenInfo, merge};

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

/// vLLM's `stop_reason`: the stop token id or stop string; `null` for EOS.
pub fn stop_reason(stopped: Option<Stopped>) -> Option<StopReason> {
    match stopped? {
        Stopped::Eos => None,
        Stopped::Token(t) => Some(StopReason::Token(t)),
        Stopped::String(s) => Some(StopReason::String(s)),
    }
}

/// The SSE body both endpoints stream: `head` events first (sent together with
/// the first chunk, not before the prompt is processed), then one event per
/// choice event built by `chunk` (events with no text, no finish and no
/// logprobs to report are skipped), then — when `usage` is given — the usage
/// chunk built from the number of completion tokens, then `[DONE]`. An engine
/// failure goes out as OpenAI error JSON in place of its chunk.
pub fn sse_response<C, U>(
    head: Vec<Event>,
    choices: Vec<Choice>,
    with_logprobs: bool,
    chunk: C,
    usage: Option<U>,
) -> Response
where
    C: Fn(ChoiceEvent, Vec<TokenInfo>) -> Event + Send + Sync + 'static,
    U: FnOnce(usize) -> Event + Send + 'static,
{
    let completion_tokens = Arc::new(AtomicUsize::new(0));
    let counter = completion_tokens.clone();
    let body = merge(choices).filter_map(move |mut event| {
        let out = if let Some(err) = event.error.take() {
            Some(Event::default().data(ApiError::from(err).to_json().to_string()))
        } else {
            if event.token.is_some() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            let tokens: Vec<TokenInfo> = event.token.take().into_iter().collect();
            let silent = event.text.is_empty() && event.finish.is_none() && !with_logprobs;
            (!silent).then(|| chunk(event, tokens))
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
