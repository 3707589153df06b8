//! Sampling parameters of one request, as the OpenAI / vLLM API spells them.
//!
//! These are plain data: the core validates them and reads the stop conditions
//! it owns (`max_tokens`, `min_tokens`, `stop_token_ids`, `ignore_eos`); the
//! model crate's sampler reads the rest. Stop *strings* need detokenized text
//! and are checked by the server's output side, which then aborts the request
//! with [`crate::FinishReason::Stop`].

use serde::{Deserialize, Serialize};

use crate::Error;

/// How the next token is chosen and when generation ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose mass reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Drop tokens whose probability is below `min_p` × the top token's (0 = off).
    pub min_p: f32,
    /// > 1 discourages any token already in the prompt or output (1 = off).
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated.
    pub frequency_penalty: f32,
    /// Seed of this request's own random stream; `None` draws one.
    pub seed: Option<u64>,
    /// Most tokens to generate. The server fills it with `max_model_len - prompt_len` when absent.
    pub max_tokens: usize,
    /// Stop conditions (EOS, stop ids, stop strings) are ignored before this many tokens.
    pub min_tokens: usize,
    /// Token ids that end generation (the token is kept in the output ids, not in the text).
    pub stop_token_ids: Vec<u32>,
    /// Strings that end generation; checked by the server on detokenized text.
    pub stop: Vec<String>,
    /// Keep generating past the EOS token.
    pub ignore_eos: bool,
    /// Return this many top alternatives with each sampled token's log-probability.
    pub logprobs: Option<usize>,
    /// Added to a token's logit before anything else (OpenAI's `logit_bias`, in [-100, 100]).
    pub logit_bias: Vec<(u32, f32)>,
    /// Log-probabilities of the prompt's tokens with this many alternatives (vLLM's
    /// `prompt_logprobs`); the prompt is then computed whole, never read from the
    /// prefix cache.
    pub prompt_logprobs: Option<usize>,
}

/// A per-sequence rule on which token may come next (structured outputs): the
/// runner asks it to mask a row of logits before sampling and tells it the token
/// that was sampled. It lives as long as its request, preemption included (it is
/// keyed to the output tokens, which preemption keeps).
pub trait TokenConstraint: Send + std::fmt::Debug {
    /// Sets the logits of every token the constraint forbids now to `-inf`.
    ///
    /// # Errors
    /// A message when the constraint cannot compute its mask (the sequence is then
    /// ended with an EOS token).
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), String>;

    /// True when the last mask allowed nothing but end-of-sequence tokens: the
    /// constrained text is complete, and the request ends with this token even under
    /// `ignore_eos` or an unmet `min_tokens`.
    fn only_end_allowed(&self) -> bool;

    /// Advances past `token`, the token sampled under the last mask.
    ///
    /// # Errors
    /// A message when `token` is not allowed (only possible if the mask was bypassed).
    fn accept(&mut self, token: u32) -> Result<(), String>;
}

/// Most alternatives a request may ask for with `logprobs` (vLLM's default cap).
pub const MAX_LOGPROBS: usize = 20;

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            max_tokens: 16,
            min_tokens: 0,
            stop_token_ids: Vec::new(),
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: None,
            logit_bias: Vec::new(),
            prompt_logprobs: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of at most `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            max_tokens,
            ..Self::default()
        }
    }

    /// True when the next token is the argmax and no randomness is drawn.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }

    /// The `max_tokens` a prompt of `prompt_len` tokens gets: `requested`, or what is
    /// left of the context (`max_model_len - prompt_len`, vLLM's default) when absent.
    ///
    /// # Errors
    /// [`Error::EmptyPrompt`]; [`Error::TooLong`] when prompt plus `max_tokens` exceeds
    /// `max_model_len` (a prompt that fills the context leaves no room for one token).
    pub fn resolve_max_tokens(
        requested: Option<usize>,
        prompt_len: usize,
        max_model_len: usize,
    ) -> Result<usize, Error> {
        if prompt_len == 0 {
            return Err(Error::EmptyPrompt);
        }
        let max_tokens =
            requested.unwrap_or_else(|| max_model_len.saturating_sub(prompt_len).max(1));
        let requested = prompt_len.saturating_add(max_tokens);
        if requested > max_model_len {
            return Err(Error::TooLong {
                max_model_len,
                requested,
                prompt: prompt_len,
                max_tokens,
            });
        }
        Ok(max_tokens)
    }

    /// Checks ranges the way vLLM's `SamplingParams._verify_args` does.
    ///
    /// # Errors
    /// [`Error::InvalidParams`] naming the first offending field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::InvalidParams(msg));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "temperature must be non-negative, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty must be greater than zero, got {}",
                self.repetition_penalty
            ));
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return bad(format!(
                "presence_penalty must be in [-2, 2], got {}",
                self.presence_penalty
            ));
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return bad(format!(
                "frequency_penalty must be in [-2, 2], got {}",
                self.frequency_penalty
            ));
        }
        if self.max_tokens == 0 {
            return bad("max_tokens must be at least 1".into());
        }
        if self.min_tokens > self.max_tokens {
            return bad(format!(
                "min_tokens ({}) must be less than or equal to max_tokens ({})",
                self.min_tokens, self.max_tokens
            ));
        }
        if let Some(k) = self.logprobs
            && k > MAX_LOGPROBS
        {
            return bad(format!("logprobs must be at most {MAX_LOGPROBS}, got {k}"));
        }
        if let Some(k) = self.prompt_logprobs
            && k > MAX_LOGPROBS
        {
            return bad(format!(
                "prompt_logprobs must be at most {MAX_LOGPROBS}, got {k}"
            ));
        }
        if let Some((id, b)) = self
            .logit_bias
            .iter()
            .find(|(_, b)| !(-100.0..=100.0).contains(b))
        {
            return bad(format!(
                "logit_bias for token {id} must be in [-100, 100], got {b}"
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop strings must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tokens_defaults_to_the_rest_of_the_context_and_must_fit() {
        assert_eq!(SamplingParams::resolve_max_tokens(None, 10, 100), Ok(90));
        assert_eq!(
            SamplingParams::resolve_max_tokens(Some(90), 10, 100),
            Ok(90)
        );
        assert_eq!(SamplingParams::resolve_max_tokens(None, 99, 100), Ok(1));
        assert_eq!(
            SamplingParams::resolve_max_tokens(Some(91), 10, 100),
            Err(Error::TooLong {
                max_model_len: 100,
                requested: 101,
                prompt: 10,
                max_tokens: 91
            })
        );
        assert_eq!(
            SamplingParams::resolve_max_tokens(None, 100, 100),
            Err(Error::TooLong {
                max_model_len: 100,
                requested: 101,
                prompt: 100,
                max_tokens: 1
            })
        );
        assert_eq!(
            SamplingParams::resolve_max_tokens(Some(usize::MAX), 5, 2048)
                .unwrap_err()
                .to_string(),
            Error::TooLong {
                max_model_len: 2048,
                requested: usize::MAX,
                prompt: 5,
                max_tokens: usize::MAX
            }
            .to_string()
        );
        assert_eq!(
            SamplingParams::resolve_max_tokens(None, 0, 100),
            Err(Error::EmptyPrompt)
        );
    }

    #[test]
    fn defaults_are_valid_and_greedy_is_detected() {
        assert!(SamplingParams::default().validate().is_ok());
        assert!(!SamplingParams::default().is_greedy());
        assert!(SamplingParams::greedy(4).is_greedy());
    }

    #[test]
    fn out_of_range_values_are_named() {
        let p = SamplingParams {
            top_p: 1.5,
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("top_p"));
        let p = SamplingParams {
            min_tokens: 9,
            max_tokens: 3,
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("min_tokens"));
        let p = SamplingParams {
            logprobs: Some(21),
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("logprobs"));
        let p = SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        };
        assert!(p.validate().is_err());
    }
}
