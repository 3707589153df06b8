//! From a [`ValidRequest`] to running engine sequences and their text events, for
//! either transport.
//!
//! A [`Choice`] owns its [`RequestStream`]; nothing else does. The transports poll
//! choices inside the response future (non-streamed) or inside the response stream
//! (streamed), never in a detached task, so a client that hangs up drops the future,
//! which drops every `RequestStream`, which aborts the engine requests and frees
//! their KV blocks at once. A stop string found here ends the choice the same way:
//! the stream is dropped (and the engine told to stop) as soon as it matches.

use std::sync::Arc;
use std::time::Instant;

use candela_core::{FinishReason, PromptLogprob, StopReason, TokenConstraint, TokenLogprobs};
use futures::stream::{self, BoxStream, StreamExt};
use tokenizers::Tokenizer;

use super::validate::{ValidPrompt, ValidRequest};
use crate::detokenizer::{IncrementalDecoder, OutputText, StopStrings};
use crate::engine::{EngineClient, GenerateRequest, RequestStream};
use crate::error::{Error, Result};

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

/// What ended a choice with `finish_reason: "stop"` (vLLM's `stop_reason`): `None`
/// for EOS, the token id of a `stop_token_ids` match, the matched stop string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    Eos,
    Token(u32),
    String(String),
}

/// What one engine event changed in one choice.
#[derive(Debug)]
pub struct ChoiceEvent {
    pub index: usize,
    /// Text released now (may be empty while a possible stop string is held back).
    pub text: String,
    /// The token of this event (with logprobs when asked for).
    pub token: Option<TokenInfo>,
    /// With the first token of a `prompt_logprobs` request: the prompt's, from its
    /// second token on.
    pub prompt_logprobs: Option<Vec<PromptLogprob>>,
    /// Set on the choice's last event: `stop`, `length` or `abort`.
    pub finish: Option<FinishReason>,
    /// With a `stop` finish: which condition matched.
    pub stop_reason: Option<Stopped>,
    /// The engine went away without finishing this choice.
    pub error: Option<Error>,
}

/// One choice of a response: one engine sequence plus its text state.
pub struct Choice {
    index: usize,
    prompt_len: usize,
    /// `None` once finished: dropping it aborts the engine request.
    stream: Option<RequestStream>,
    engine: EngineClient,
    text: OutputText,
    /// Show the text of a stop token (EOS or a stop id) that ends the sequence.
    include_stop_in_output: bool,
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
                prompt_logprobs: None,
                finish: Some(FinishReason::Abort),
                stop_reason: None,
                error: Some(Error::EngineDead),
            });
        };
        self.num_tokens += 1;
        // The core says which token stopped the sequence; its text is hidden unless asked for.
        let hide = event.stop_reason.is_some() && !self.include_stop_in_output;
        let delta = self.text.push(event.token, hide);
        let mut finish = event.finish;
        let mut stop_reason = event.stop_reason.map(|r| match r {
            StopReason::Eos(_) => Stopped::Eos,
            StopReason::StopToken(t) => Stopped::Token(t),
        });
        if delta.stopped {
            if let Some(stream) = self.stream.as_ref() {
                // Ends the request as `stop` (dropping the stream below would count it as an abort).
                self.engine.stop(stream.id());
            }
            finish = Some(FinishReason::Stop);
            let matched = self.text.matched_stop().unwrap_or_default().to_owned();
            stop_reason = Some(Stopped::String(matched));
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
            prompt_logprobs: event
                .prompt_logprobs
                .map(|lps| lps.into_iter().map(clamp_prompt_logprob).collect()),
            finish,
            stop_reason,
            error: None,
        })
    }

    /// Polls the choice to its end, collecting text and tokens.
    ///
    /// # Errors
    /// [`Error::EngineDead`] when the engine stopped mid-request.
    pub async fn collect(mut self) -> Result<CollectedChoice> {
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
            if event.prompt_logprobs.is_some() {
                out.prompt_logprobs = event.prompt_logprobs;
            }
            out.finish = event.finish;
            out.stop_reason = event.stop_reason;
        }
        Ok(out)
    }
}

/// A whole choice, for non-streamed answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectedChoice {
    pub index: usize,
    pub text: String,
    pub tokens: Vec<TokenInfo>,
    pub prompt_logprobs: Option<Vec<PromptLogprob>>,
    pub finish: Option<FinishReason>,
    pub stop_reason: Option<Stopped>,
}

/// Submits `n` sequences per prompt of a validated request; choice `p * n + i` is
/// prompt `p`'s `i`-th sample (OpenAI's order).
///
/// # Errors
/// The engine's refusal ([`Error::Rejected`], e.g. the queue is full) or
/// [`Error::EngineDead`]. Sequences already submitted are dropped, which aborts them.
pub async fn submit(
    engine: &EngineClient,
    tokenizer: &Arc<Tokenizer>,
    request: &ValidRequest,
    arrival: Instant,
) -> Result<Vec<Choice>> {
    let n = request.n;
    let mut choices = Vec::with_capacity(request.prompts.len() * n);
    for prompt in &request.prompts {
        for i in 0..n {
            let index = choices.len();
            choices.push(submit_one(engine, tokenizer, request, prompt, i, index, arrival).await?);
        }
    }
    // vLLM counts each prompt as one request with parameter `n`.
    for _ in &request.prompts {
        engine.record_api_request(n);
    }
    Ok(choices)
}

async fn submit_one(
    engine: &EngineClient,
    tokenizer: &Arc<Tokenizer>,
    request: &ValidRequest,
    prompt: &ValidPrompt,
    sample: usize,
    index: usize,
    arrival: Instant,
) -> Result<Choice> {
    let params = prompt.choice(sample);
    let stops = StopStrings {
        stop: params.stop.clone(),
        include_in_output: request.include_stop_str_in_output,
        min_tokens: params.min_tokens,
    };
    let stream = engine
        .submit(GenerateRequest {
            prompt_token_ids: prompt.token_ids.clone(),
            params,
            priority: request.priority,
            tier: request.service_tier,
            arrival,
            constraint: request
                .grammar
                .as_ref()
                .map(|g| Box::new(g.matcher()) as Box<dyn TokenConstraint>),
            lora: request.lora.clone(),
        })
        .await?;
    let decoder = IncrementalDecoder::new(
        tokenizer.clone(),
        &prompt.token_ids,
        request.skip_special_tokens,
    );
    Ok(Choice {
        index,
        prompt_len: prompt.token_ids.len(),
        stream: Some(stream),
        engine: engine.clone(),
        text: OutputText::new(decoder, stops),
        include_stop_in_output: request.include_stop_str_in_output,
        num_tokens: 0,
    })
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
pub async fn collect_all(choices: Vec<Choice>) -> Result<Vec<CollectedChoice>> {
    let results = futures::future::join_all(choices.into_iter().map(Choice::collect)).await;
    results.into_iter().collect()
}

fn clamp(x: f32) -> f32 {
    if x.is_finite() { x } else { MIN_LOGPROB }
}

fn clamp_logprobs(mut lp: TokenLogprobs) -> TokenLogprobs {
    lp.logprob = clamp(lp.logprob);
    for (_, l) in &mut lp.top {
        *l = clamp(*l);
    }
    lp
}

fn clamp_prompt_logprob(mut lp: PromptLogprob) -> PromptLogprob {
    lp.logprob = clamp(lp.logprob);
    for (_, l) in &mut lp.top {
        *l = clamp(*l);
    }
    lp
}
