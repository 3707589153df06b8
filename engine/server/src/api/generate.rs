//! Shared by both generation endpoints: fan a request out into engine sequences and
//! turn each sequence's token stream into text events.
//!
//! A [`Choice`] owns its [`RequestStream`]; nothing else does. The handlers poll
//! choices inside the response future (non-streamed) or inside the SSE body stream
//! (streamed), never in a detached task, so a client that hangs up drops the future,
//! which drops every `RequestStream`, which aborts the engine requests and frees
//! their KV blocks at once. A stop string found here ends the choice the same way:
//! the stream is dropped (and the engine told to abort) as soon as it matches.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use candela_core::{FinishReason, SamplingParams, TokenLogprobs};
use futures::stream::{self, BoxStream, StreamExt};
use tokenizers::Tokenizer;

use super::error::ApiError;
use super::params::GenerationPlan;
use crate::detokenizer::{IncrementalDecoder, OutputText, StopStrings};
use crate::engine::{EngineClient, GenerateRequest, RequestStream};

/// Logprobs engines return as `-inf` are clamped to this (JSON has no infinity; vLLM's value).
const MIN_LOGPROB: f32 = -9999.0;

/// One sampled token as a choice event reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    pub id: u32,
    pub logprobs: Option<TokenLogprobs>,
    /// Character offset of the token's text in the choice's text.
    pub text_offset: usize,
}

/// What one engine event changed in one choice.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceEvent {
    pub index: usize,
    /// Text released now (may be empty while a possible stop string is held back).
    pub text: String,
    /// The token of this event (with logprobs when asked for).
    pub token: Option<TokenInfo>,
    /// Set on the choice's last event: `stop`, `length` or `abort`.
    pub finish: Option<&'static str>,
    /// The engine went away without finishing this choice.
    pub error: Option<ApiError>,
}

/// One choice of a response: one engine sequence plus its text state.
pub struct Choice {
    index: usize,
    prompt_len: usize,
    /// `None` once finished: dropping it aborts the engine request.
    stream: Option<RequestStream>,
    engine: EngineClient,
    text: OutputText,
    /// Token ids whose text is dropped when they end the sequence (EOS, stop ids).
    hidden_on_stop: Vec<u32>,
    num_tokens: usize,
}

impl Choice {
    /// The index of this choice in the response.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Prompt tokens of this choice's sequence.
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// Tokens generated so far.
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    /// Waits for the next engine event; `None` after the finishing event.
    pub async fn next(&mut self) -> Option<ChoiceEvent> {
        let stream = self.stream.as_mut()?;
        let Some(event) = stream.next().await else {
            self.stream = None;
            return Some(ChoiceEvent {
                index: self.index,
                text: self.text.finish(),
                token: None,
                finish: Some(FinishReason::Abort.as_str()),
                error: Some(ApiError::engine_dead()),
            });
        };
        self.num_tokens += 1;
        let hide =
            event.finish == Some(FinishReason::Stop) && self.hidden_on_stop.contains(&event.token);
        let delta = self.text.push(event.token, hide);
        let mut finish = event.finish.map(FinishReason::as_str);
        if delta.stopped {
            if let Some(stream) = self.stream.as_ref() {
                // Ends the request as `stop` (dropping the stream below would count it as an abort).
                self.engine.stop(stream.id());
            }
            finish = Some(FinishReason::Stop.as_str());
        }
        let mut text = delta.text;
        if finish.is_some() {
            text.push_str(&self.text.finish());
            self.stream = None;
        }
        Some(ChoiceEvent {
            index: self.index,
            text,
            token: Some(TokenInfo {
                id: event.token,
                logprobs: event.logprobs.map(clamp_logprobs),
                text_offset: delta.token_offset,
            }),
            finish,
            error: None,
        })
    }

    /// Polls the choice to its end, collecting text and tokens.
    pub async fn collect(mut self) -> Result<CollectedChoice, ApiError> {
        let mut out = CollectedChoice {
            index: self.index,
            ..CollectedChoice::default()
        };
        while let Some(event) = self.next().await {
            if let Some(err) = event.error {
                return Err(err);
            }
            out.text.push_str(&event.text);
            out.tokens.extend(event.token);
            out.finish = event.finish;
        }
        out.prompt_len = self.prompt_len;
        Ok(out)
    }
}

/// A whole choice, for non-streamed answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectedChoice {
    pub index: usize,
    pub text: String,
    pub tokens: Vec<TokenInfo>,
    pub finish: Option<&'static str>,
    pub prompt_len: usize,
}

/// What the server knows about one tokenized prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedPrompt {
    pub token_ids: Vec<u32>,
}

/// Everything needed to start a request's choices.
pub struct Submission<'a> {
    pub engine: &'a EngineClient,
    pub tokenizer: &'a Arc<Tokenizer>,
    pub eos_token_ids: &'a [u32],
    pub max_model_len: usize,
    pub plan: &'a GenerationPlan,
    pub arrival: Instant,
}

impl Submission<'_> {
    /// Checks every prompt's length, then submits `n` sequences per prompt; choice
    /// `p * n + i` is prompt `p`'s `i`-th sample (OpenAI's order).
    ///
    /// # Errors
    /// 400 for a prompt that does not fit; the engine's refusal (503 when the queue
    /// is full). Sequences already submitted are dropped, which aborts them.
    pub async fn submit(&self, prompts: &[PreparedPrompt]) -> Result<Vec<Choice>, ApiError> {
        let n = self.plan.n;
        let mut requests = Vec::with_capacity(prompts.len() * n);
        for prompt in prompts {
            for i in 0..n {
                let params = self
                    .plan
                    .for_prompt(prompt.token_ids.len(), self.max_model_len, i)?;
                requests.push((prompt, params));
            }
        }
        let mut choices = Vec::with_capacity(requests.len());
        for (index, (prompt, params)) in requests.into_iter().enumerate() {
            choices.push(self.submit_one(index, prompt, params).await?);
        }
        // vLLM counts each prompt as one request with parameter `n`.
        for _ in prompts {
            self.engine.record_api_request(n);
        }
        Ok(choices)
    }

    async fn submit_one(
        &self,
        index: usize,
        prompt: &PreparedPrompt,
        params: SamplingParams,
    ) -> Result<Choice, ApiError> {
        let stops = StopStrings {
            stop: params.stop.clone(),
            include_in_output: self.plan.include_stop_str_in_output,
            min_tokens: params.min_tokens,
        };
        let mut hidden_on_stop = Vec::new();
        if !self.plan.include_stop_str_in_output {
            hidden_on_stop.extend_from_slice(&params.stop_token_ids);
            if !params.ignore_eos {
                hidden_on_stop.extend_from_slice(self.eos_token_ids);
            }
        }
        let request = GenerateRequest {
            prompt_token_ids: prompt.token_ids.clone(),
            params,
            priority: self.plan.priority,
            arrival: self.arrival,
        };
        let stream = self.engine.submit(request).await?;
        let decoder = IncrementalDecoder::new(
            self.tokenizer.clone(),
            &prompt.token_ids,
            self.plan.skip_special_tokens,
        );
        Ok(Choice {
            index,
            prompt_len: prompt.token_ids.len(),
            stream: Some(stream),
            engine: self.engine.clone(),
            text: OutputText::new(decoder, stops),
            hidden_on_stop,
            num_tokens: 0,
        })
    }
}

/// Interleaves the events of all choices as they arrive; each choice stays owned
/// by the returned stream, so dropping it aborts every sequence.
pub fn merge(choices: Vec<Choice>) -> BoxStream<'static, ChoiceEvent> {
    let per_choice = choices.into_iter().map(|choice| {
        stream::unfold(choice, |mut choice| async move {
            let event = choice.next().await?;
            Some((event, choice))
        })
        .boxed()
    });
    stream::select_all(per_choice).boxed()
}

/// Runs all choices to the end concurrently (in the caller's future).
///
/// # Errors
/// The first choice's error (the engine stopped mid-request).
pub async fn collect_all(choices: Vec<Choice>) -> Result<Vec<CollectedChoice>, ApiError> {
    let results = futures::future::join_all(choices.into_iter().map(Choice::collect)).await;
    results.into_iter().collect()
}

/// Tokenizes text off the async runtime (a 1 MB prompt takes a while).
///
/// # Errors
/// 500 if the tokenizer fails.
pub async fn tokenize(
    tokenizer: &Arc<Tokenizer>,
    text: String,
    add_special_tokens: bool,
) -> Result<Vec<u32>, ApiError> {
    let tokenizer = tokenizer.clone();
    let encoded =
        tokio::task::spawn_blocking(move || tokenizer.encode_fast(text, add_special_tokens))
            .await
            .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?;
    encoded
        .map(|enc| enc.get_ids().to_vec())
        .map_err(|e| ApiError::internal(format!("tokenization failed: {e}")))
}

/// Checks client-supplied token ids against the vocabulary.
///
/// # Errors
/// 400 naming the first id out of range.
pub fn check_token_ids(tokenizer: &Tokenizer, ids: &[u32]) -> Result<(), ApiError> {
    let vocab = tokenizer.get_vocab_size(true);
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(bad) => Err(ApiError::invalid_param(
            "prompt",
            format!("Token id {bad} is out of vocabulary (size {vocab})."),
        )),
        None => Ok(()),
    }
}

/// Seconds since the Unix epoch (OpenAI's `created`).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn clamp_logprobs(mut lp: TokenLogprobs) -> TokenLogprobs {
    let clamp = |x: f32| if x.is_finite() { x } else { MIN_LOGPROB };
    lp.logprob = clamp(lp.logprob);
    for (_, l) in &mut lp.top {
        *l = clamp(*l);
    }
    lp
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
            Some(Event::default().data(err.to_json().to_string()))
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
