//! From request fields to engine [`SamplingParams`], with vLLM's range checks.
//!
//! Everything a client can get wrong is rejected here with a 400 naming the field,
//! before any token is queued: negative or zero `max_tokens`, `n < 1`, `top_k < -1`,
//! too many `logprobs`, and a prompt that leaves no room in `--max-model-len`
//! (vLLM answers 400 for that too). `max_tokens` absent means "up to the context
//! length": `max_model_len - prompt_len`.

use candela_core::SamplingParams;

use super::error::ApiError;
use super::protocol::SamplingFields;

/// Most choices (`n` × batched prompts) one request may ask for.
pub const MAX_CHOICES: usize = 256;

/// What a generation request asks for, checked and ready to fan out.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationPlan {
    /// Params of choice 0; choice `i` gets `seed + i` when a seed is set.
    pub params: SamplingParams,
    /// Choices per prompt.
    pub n: usize,
    pub priority: i32,
    pub include_stop_str_in_output: bool,
    pub skip_special_tokens: bool,
    /// `max_tokens` as given; the per-prompt value comes from [`GenerationPlan::for_prompt`].
    requested_max_tokens: Option<usize>,
}

impl GenerationPlan {
    /// Checks every field that does not depend on the prompt.
    ///
    /// `logprobs` is the number of alternatives (`None`: no logprobs).
    ///
    /// # Errors
    /// A 400 [`ApiError`] naming the first bad field.
    pub fn new(
        fields: &SamplingFields,
        max_tokens: Option<i64>,
        logprobs: Option<i64>,
        num_prompts: usize,
    ) -> Result<Self, ApiError> {
        let requested_max_tokens = match max_tokens {
            None => None,
            Some(v) if v < 1 => {
                return Err(ApiError::invalid_param(
                    "max_tokens",
                    format!("max_tokens must be at least 1, got {v}."),
                ));
            }
            Some(v) => Some(usize::try_from(v).unwrap_or(usize::MAX)),
        };
        let n = match fields.n {
            None => 1,
            Some(n) if n < 1 => {
                return Err(ApiError::invalid_param(
                    "n",
                    format!("n must be at least 1, got {n}."),
                ));
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        if n.saturating_mul(num_prompts.max(1)) > MAX_CHOICES {
            return Err(ApiError::invalid_param(
                "n",
                format!(
                    "n × number of prompts must be at most {MAX_CHOICES}, got {n} × {num_prompts}."
                ),
            ));
        }
        let top_k = match fields.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k < -1 => {
                return Err(ApiError::invalid_param(
                    "top_k",
                    format!("top_k must be -1 (disable), or at least 1, got {k}."),
                ));
            }
            Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
        };
        let min_tokens = non_negative("min_tokens", fields.min_tokens)?.unwrap_or(0);
        let logprobs = non_negative("logprobs", logprobs)?;
        let defaults = SamplingParams::default();
        let params = SamplingParams {
            temperature: fields.temperature.unwrap_or(defaults.temperature),
            top_p: fields.top_p.unwrap_or(defaults.top_p),
            top_k,
            min_p: fields.min_p.unwrap_or(defaults.min_p),
            repetition_penalty: fields
                .repetition_penalty
                .unwrap_or(defaults.repetition_penalty),
            presence_penalty: fields.presence_penalty.unwrap_or(defaults.presence_penalty),
            frequency_penalty: fields
                .frequency_penalty
                .unwrap_or(defaults.frequency_penalty),
            // Negative seeds are accepted and reinterpreted, as Python's random does.
            seed: fields.seed.map(|s| s as u64),
            // Placeholder until the prompt length is known; validated then.
            max_tokens: requested_max_tokens.unwrap_or(min_tokens.max(1)),
            min_tokens,
            stop_token_ids: fields.stop_token_ids.clone().unwrap_or_default(),
            stop: fields
                .stop
                .clone()
                .map(|s| s.into_vec())
                .unwrap_or_default(),
            ignore_eos: fields.ignore_eos.unwrap_or(false),
            logprobs,
        };
        params.validate()?;
        Ok(Self {
            params,
            n,
            priority: fields.priority.unwrap_or(0),
            include_stop_str_in_output: fields.include_stop_str_in_output.unwrap_or(false),
            skip_special_tokens: fields.skip_special_tokens.unwrap_or(true),
            requested_max_tokens,
        })
    }

    /// The params of choice `choice` of a prompt of `prompt_len` tokens.
    ///
    /// # Errors
    /// 400 when the prompt is empty, or prompt plus `max_tokens` exceeds `max_model_len`.
    pub fn for_prompt(
        &self,
        prompt_len: usize,
        max_model_len: usize,
        choice: usize,
    ) -> Result<SamplingParams, ApiError> {
        if prompt_len == 0 {
            return Err(candela_core::Error::EmptyPrompt.into());
        }
        let max_tokens = match self.requested_max_tokens {
            Some(m) => m,
            None => max_model_len.saturating_sub(prompt_len).max(1),
        };
        if prompt_len.saturating_add(max_tokens) > max_model_len {
            return Err(candela_core::Error::TooLong {
                max_model_len,
                requested: prompt_len.saturating_add(max_tokens),
                prompt: prompt_len,
                max_tokens,
            }
            .into());
        }
        let mut params = self.params.clone();
        params.max_tokens = max_tokens;
        params.seed = params.seed.map(|s| s.wrapping_add(choice as u64));
        params.validate()?;
        Ok(params)
    }
}

fn non_negative(name: &str, value: Option<i64>) -> Result<Option<usize>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if v < 0 => Err(ApiError::invalid_param(
            name,
            format!("{name} must be non-negative, got {v}."),
        )),
        Some(v) => Ok(Some(usize::try_from(v).unwrap_or(usize::MAX))),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    fn fields(json: &str) -> SamplingFields {
        serde_json::from_str(json).unwrap()
    }

    fn plan(
        json: &str,
        max_tokens: Option<i64>,
        logprobs: Option<i64>,
    ) -> Result<GenerationPlan, ApiError> {
        GenerationPlan::new(&fields(json), max_tokens, logprobs, 1)
    }

    fn err_msg(r: Result<GenerationPlan, ApiError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        e.message().to_owned()
    }

    #[test]
    fn defaults_fill_max_tokens_from_context() {
        let p = plan("{}", None, None).unwrap();
        assert_eq!(p.n, 1);
        assert!(p.skip_special_tokens);
        let params = p.for_prompt(10, 100, 0).unwrap();
        assert_eq!(params.max_tokens, 90);
        assert_eq!(params.temperature, 1.0);
    }

    #[test]
    fn hostile_values_are_400_naming_the_field() {
        assert!(err_msg(plan("{}", Some(-1), None)).contains("max_tokens"));
        assert!(err_msg(plan("{}", Some(0), None)).contains("max_tokens"));
        assert!(err_msg(plan(r#"{"n":0}"#, None, None)).contains("n must be at least 1"));
        assert!(err_msg(plan(r#"{"n":100000}"#, None, None)).contains("n ×"));
        assert!(err_msg(plan(r#"{"temperature":-1}"#, None, None)).contains("temperature"));
        assert!(err_msg(plan("{}", None, Some(50))).contains("logprobs"));
        assert!(err_msg(plan("{}", None, Some(-2))).contains("logprobs"));
        assert!(err_msg(plan(r#"{"top_k":-5}"#, None, None)).contains("top_k"));
        assert!(err_msg(plan(r#"{"top_p":0}"#, None, None)).contains("top_p"));
        assert!(err_msg(plan(r#"{"min_tokens":-1}"#, None, None)).contains("min_tokens"));
        assert!(err_msg(plan(r#"{"stop":[""]}"#, None, None)).contains("stop"));
        assert!(err_msg(plan(r#"{"min_tokens":5}"#, Some(2), None)).contains("min_tokens"));
    }

    #[test]
    fn huge_max_tokens_is_too_long_not_overflow() {
        let p = plan("{}", Some(i64::MAX), None).unwrap();
        let e = p.for_prompt(5, 2048, 0).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(
            e.message().contains("maximum context length is 2048"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn prompt_over_context_is_400() {
        let p = plan("{}", None, None).unwrap();
        let e = p.for_prompt(5000, 2048, 0).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.message().contains("5000"));
        let e = p.for_prompt(2048, 2048, 0).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            p.for_prompt(0, 2048, 0).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(p.for_prompt(2047, 2048, 0).unwrap().max_tokens, 1);
    }

    #[test]
    fn vllm_extras_and_seed_per_choice() {
        let p = plan(
            r#"{"top_k":-1,"min_p":0.05,"repetition_penalty":1.2,"min_tokens":2,"ignore_eos":true,
                "stop_token_ids":[5],"priority":3,"seed":-1,"n":3,"stop":"x",
                "include_stop_str_in_output":true,"skip_special_tokens":false}"#,
            Some(8),
            Some(2),
        )
        .unwrap();
        assert_eq!(p.n, 3);
        assert_eq!(p.priority, 3);
        assert!(p.include_stop_str_in_output && !p.skip_special_tokens);
        let c0 = p.for_prompt(4, 100, 0).unwrap();
        let c2 = p.for_prompt(4, 100, 2).unwrap();
        assert_eq!(c0.top_k, 0);
        assert_eq!(c0.stop, vec!["x".to_owned()]);
        assert_eq!(c0.logprobs, Some(2));
        assert_eq!(c0.seed, Some(u64::MAX));
        assert_eq!(c2.seed, Some(1));
        assert_eq!(c0.max_tokens, 8);
        assert!(c0.ignore_eos);
    }
}
