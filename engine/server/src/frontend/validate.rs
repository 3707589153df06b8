//! The one validation of a generation request (TGI's `Validation::validate` is the model).
//!
//! [`validate`] tokenizes the prompts (or checks client token ids against the
//! vocabulary) and hands them to [`check`], a pure function that applies vLLM's range
//! checks, resolves `max_tokens` per prompt (absent = `max_model_len - prompt_len`),
//! checks each prompt fits, and returns the [`SamplingParams`] the core runs as given.
//! Every refusal is an [`Error`] naming the field, before any token is queued.

use std::sync::Arc;

use candela_core::{SamplingParams, ServiceTier};
use candela_structured::Grammar;
use tokenizers::Tokenizer;

use super::request::{GenerationRequest, Prompt, SamplingOptions};
use super::structured::{self, Compiler};
use super::tier::TierAccess;
use crate::error::{Error, Result};

/// Most choices (`n` × batched prompts) one request may ask for.
pub const MAX_CHOICES: usize = 256;

/// A request the engine can run: token ids and resolved parameters per prompt.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub prompts: Vec<ValidPrompt>,
    /// The compiled structured-output constraint; each choice gets its own matcher.
    pub grammar: Option<Grammar>,
    /// Choices per prompt.
    pub n: usize,
    pub priority: i32,
    /// The tier it runs at: `service_tier` within what the caller may use.
    pub service_tier: ServiceTier,
    pub include_stop_str_in_output: bool,
    pub skip_special_tokens: bool,
    /// The LoRA adapter the request's `model` named (set by the endpoint after validation).
    pub lora: Option<crate::lora::LoraHandle>,
}

/// One prompt, tokenized, with the parameters of its first choice.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPrompt {
    pub token_ids: Vec<u32>,
    /// Choice `i` runs with `seed + i` when a seed is set (see [`ValidPrompt::choice`]).
    pub params: SamplingParams,
}

impl ValidPrompt {
    /// The parameters of choice `i` of this prompt.
    pub fn choice(&self, i: usize) -> SamplingParams {
        let mut params = self.params.clone();
        params.seed = params.seed.map(|s| s.wrapping_add(i as u64));
        params
    }
}

impl ValidRequest {
    /// True when the client asked for log-probabilities.
    pub fn logprobs(&self) -> bool {
        self.prompts
            .first()
            .is_some_and(|p| p.params.logprobs.is_some())
    }

    /// Prompt tokens over all prompts.
    pub fn prompt_tokens(&self) -> usize {
        self.prompts.iter().map(|p| p.token_ids.len()).sum()
    }
}

/// Tokenizes `request`'s prompts, [`check`]s it and compiles its structured-output
/// constraint with `compiler`.
///
/// # Errors
/// [`Error::InvalidRequest`] naming the field (a schema or grammar that does not
/// compile included), [`Error::Rejected`] for a prompt that does not fit,
/// [`Error::Internal`] when the tokenizer fails.
pub async fn validate(
    request: GenerationRequest,
    tokenizer: &Arc<Tokenizer>,
    max_model_len: usize,
    compiler: &Arc<Compiler>,
) -> Result<ValidRequest> {
    let GenerationRequest {
        prompts,
        options,
        constraint,
        access,
    } = request;
    let requested = match (constraint, structured::constraint(&options)?) {
        (Some(tools), Some(other)) => {
            return Err(Error::invalid(
                other.field,
                format!(
                    "{} cannot be combined with tool_choice {:?}.",
                    other.field, tools.field
                ),
            ));
        }
        (tools, other) => tools.or(other),
    };
    let mut token_ids = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        token_ids.push(match prompt {
            Prompt::Text {
                text,
                add_special_tokens,
            } => tokenize(tokenizer, text, add_special_tokens).await?,
            Prompt::Tokens(ids) => {
                check_token_ids(tokenizer.get_vocab_size(true), &ids)?;
                ids
            }
        });
    }
    let mut valid = check(&options, token_ids, max_model_len, access)?;
    // `check` read the keys as ids; only the vocabulary size is left to check.
    let vocab = tokenizer.get_vocab_size(true);
    let biased = valid
        .prompts
        .first()
        .map_or(&[][..], |p| &p.params.logit_bias[..]);
    if let Some((id, _)) = biased.iter().find(|&&(id, _)| id as usize >= vocab) {
        return Err(Error::invalid(
            "logit_bias",
            format!("logit_bias keys must be token ids below {vocab}, got {id}."),
        ));
    }
    if let Some(requested) = requested {
        valid.grammar = Some(structured::compile(compiler, requested).await?);
    }
    Ok(valid)
}

/// vLLM's checks on tokenized prompts, and the tier `access` gives the request; the pure
/// half of [`validate`].
///
/// # Errors
/// As [`validate`], in field order: `max_tokens`, `n`, `top_k`, `min_tokens`,
/// `logprobs`, `service_tier`, the ranges of [`SamplingParams::validate`], then each prompt.
pub fn check(
    o: &SamplingOptions,
    prompts: Vec<Vec<u32>>,
    max_model_len: usize,
    access: TierAccess,
) -> Result<ValidRequest> {
    if prompts.is_empty() {
        return Err(Error::invalid("prompt", "prompt must not be empty."));
    }
    let max_tokens = match o.max_tokens {
        None => None,
        Some(v) if v < 1 => {
            return Err(Error::invalid(
                "max_tokens",
                format!("max_tokens must be at least 1, got {v}."),
            ));
        }
        Some(v) => Some(usize::try_from(v).unwrap_or(usize::MAX)),
    };
    let n = match o.n {
        None => 1,
        Some(n) if n < 1 => {
            return Err(Error::invalid(
                "n",
                format!("n must be at least 1, got {n}."),
            ));
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    if n.saturating_mul(prompts.len()) > MAX_CHOICES {
        return Err(Error::invalid(
            "n",
            format!(
                "n × number of prompts must be at most {MAX_CHOICES}, got {n} × {}.",
                prompts.len()
            ),
        ));
    }
    let top_k = match o.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k < -1 => {
            return Err(Error::invalid(
                "top_k",
                format!("top_k must be -1 (disable), or at least 1, got {k}."),
            ));
        }
        Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
    };
    let min_tokens = non_negative("min_tokens", o.min_tokens)?.unwrap_or(0);
    let logprobs = non_negative("logprobs", o.logprobs)?;
    let prompt_logprobs = non_negative("prompt_logprobs", o.prompt_logprobs)?;
    let service_tier = access.resolve(o.service_tier.as_deref())?;
    // Keys are checked against the vocabulary in `validate`; here only that they are ids.
    let mut logit_bias: Vec<(u32, f32)> = o
        .logit_bias
        .iter()
        .flatten()
        .map(|(k, &b)| {
            k.parse::<u32>().map(|id| (id, b)).map_err(|_| {
                Error::invalid(
                    "logit_bias",
                    format!("logit_bias keys must be token ids, got {k:?}."),
                )
            })
        })
        .collect::<Result<_>>()?;
    logit_bias.sort_by_key(|&(id, _)| id);
    let defaults = SamplingParams::default();
    let params = |max_tokens| SamplingParams {
        temperature: o.temperature.unwrap_or(defaults.temperature),
        top_p: o.top_p.unwrap_or(defaults.top_p),
        top_k,
        min_p: o.min_p.unwrap_or(defaults.min_p),
        repetition_penalty: o.repetition_penalty.unwrap_or(defaults.repetition_penalty),
        presence_penalty: o.presence_penalty.unwrap_or(defaults.presence_penalty),
        frequency_penalty: o.frequency_penalty.unwrap_or(defaults.frequency_penalty),
        // Negative seeds are accepted and reinterpreted, as Python's random does.
        seed: o.seed.map(|s| s as u64),
        max_tokens,
        min_tokens,
        stop_token_ids: o.stop_token_ids.clone().unwrap_or_default(),
        stop: o.stop.clone().unwrap_or_default(),
        ignore_eos: o.ignore_eos.unwrap_or(false),
        logprobs,
        logit_bias: logit_bias.clone(),
        prompt_logprobs,
    };
    let prompts = prompts
        .into_iter()
        .map(|token_ids| {
            let max_tokens =
                SamplingParams::resolve_max_tokens(max_tokens, token_ids.len(), max_model_len)?;
            let params = params(max_tokens);
            params.validate()?;
            Ok(ValidPrompt { token_ids, params })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ValidRequest {
        prompts,
        grammar: None,
        n,
        priority: o.priority.unwrap_or(0),
        service_tier,
        include_stop_str_in_output: o.include_stop_str_in_output.unwrap_or(false),
        skip_special_tokens: o.skip_special_tokens.unwrap_or(true),
        lora: None,
    })
}

fn non_negative(name: &'static str, value: Option<i64>) -> Result<Option<usize>> {
    match value {
        None => Ok(None),
        Some(v) if v < 0 => Err(Error::invalid(
            name,
            format!("{name} must be non-negative, got {v}."),
        )),
        Some(v) => Ok(Some(usize::try_from(v).unwrap_or(usize::MAX))),
    }
}

/// Tokenizes text off the async runtime (a 1 MB prompt takes a while).
///
/// # Errors
/// [`Error::Internal`] if the tokenizer fails.
pub async fn tokenize(
    tokenizer: &Arc<Tokenizer>,
    text: String,
    add_special_tokens: bool,
) -> Result<Vec<u32>> {
    let tokenizer = tokenizer.clone();
    let encoded =
        tokio::task::spawn_blocking(move || tokenizer.encode_fast(text, add_special_tokens))
            .await
            .map_err(|e| Error::Internal(format!("tokenizer task failed: {e}")))?;
    encoded
        .map(|enc| enc.get_ids().to_vec())
        .map_err(|e| Error::Internal(format!("tokenization failed: {e}")))
}

/// Checks client-supplied token ids against a vocabulary of `vocab` ids.
///
/// # Errors
/// [`Error::InvalidRequest`] naming the first id out of range.
pub fn check_token_ids(vocab: usize, ids: &[u32]) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(bad) => Err(Error::invalid(
            "prompt",
            format!("Token id {bad} is out of vocabulary (size {vocab})."),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn options(json: &str) -> SamplingOptions {
        serde_json::from_str(json).unwrap()
    }

    fn one(json: &str, prompt_len: usize, max_model_len: usize) -> Result<ValidRequest> {
        check(
            &options(json),
            vec![vec![1; prompt_len]],
            max_model_len,
            TierAccess::OPEN,
        )
    }

    /// The message of a 400, and that it is one.
    fn refusal(r: Result<ValidRequest>) -> String {
        match r.unwrap_err() {
            Error::InvalidRequest { message, .. } => message,
            Error::Rejected(
                e @ (candela_core::Error::InvalidParams(_)
                | candela_core::Error::TooLong { .. }
                | candela_core::Error::EmptyPrompt),
            ) => e.to_string(),
            other => panic!("not a client error: {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_max_tokens_from_context() {
        let v = one("{}", 10, 100).unwrap();
        assert_eq!(v.n, 1);
        assert!(v.skip_special_tokens);
        assert_eq!(v.prompts[0].params.max_tokens, 90);
        assert_eq!(v.prompts[0].params.temperature, 1.0);
    }

    #[test]
    fn hostile_values_are_400_naming_the_field() {
        assert!(refusal(one(r#"{"max_tokens":-1}"#, 4, 100)).contains("max_tokens"));
        assert!(refusal(one(r#"{"max_tokens":0}"#, 4, 100)).contains("max_tokens"));
        assert!(refusal(one(r#"{"n":0}"#, 4, 100)).contains("n must be at least 1"));
        assert!(refusal(one(r#"{"n":100000}"#, 4, 100)).contains("n ×"));
        assert!(refusal(one(r#"{"temperature":-1}"#, 4, 100)).contains("temperature"));
        assert!(refusal(one(r#"{"logprobs":50}"#, 4, 100)).contains("logprobs"));
        assert!(refusal(one(r#"{"logprobs":-2}"#, 4, 100)).contains("logprobs"));
        assert!(refusal(one(r#"{"top_k":-5}"#, 4, 100)).contains("top_k"));
        assert!(refusal(one(r#"{"top_p":0}"#, 4, 100)).contains("top_p"));
        assert!(refusal(one(r#"{"min_tokens":-1}"#, 4, 100)).contains("min_tokens"));
        assert!(refusal(one(r#"{"stop":[""]}"#, 4, 100)).contains("stop"));
        assert!(refusal(one(r#"{"min_tokens":5,"max_tokens":2}"#, 4, 100)).contains("min_tokens"));
        assert!(
            refusal(check(&options("{}"), vec![], 100, TierAccess::OPEN))
                .contains("prompt must not be empty")
        );
        let named = |json, field| match one(json, 4, 100).unwrap_err() {
            Error::InvalidRequest { param, .. } => assert_eq!(param, Some(field)),
            other => panic!("{other:?}"),
        };
        named(r#"{"max_tokens":0}"#, "max_tokens");
        named(r#"{"n":0}"#, "n");
        named(r#"{"top_k":-5}"#, "top_k");
    }

    #[test]
    fn service_tier_is_resolved_against_the_callers_access() {
        assert_eq!(
            one("{}", 4, 100).unwrap().service_tier,
            ServiceTier::Default
        );
        let flex = one(r#"{"service_tier":"flex"}"#, 4, 100).unwrap();
        assert_eq!(flex.service_tier, ServiceTier::Flex);
        let batch = |json| {
            check(
                &options(json),
                vec![vec![1; 4]],
                100,
                TierAccess::key(ServiceTier::Flex),
            )
        };
        assert_eq!(
            batch(r#"{"service_tier":"priority"}"#)
                .unwrap()
                .service_tier,
            ServiceTier::Flex,
            "a flex key cannot claim priority"
        );
        assert_eq!(batch("{}").unwrap().service_tier, ServiceTier::Flex);
        let msg = refusal(one(r#"{"service_tier":"scale"}"#, 4, 100));
        assert!(
            msg.contains("service_tier") && msg.contains("scale"),
            "{msg}"
        );
    }

    #[test]
    fn huge_max_tokens_is_too_long_not_overflow() {
        let msg = refusal(one(&format!(r#"{{"max_tokens":{}}}"#, i64::MAX), 5, 2048));
        assert!(msg.contains("maximum context length is 2048"), "{msg}");
    }

    #[test]
    fn prompt_over_context_is_400() {
        assert!(refusal(one("{}", 5000, 2048)).contains("5000"));
        assert!(refusal(one("{}", 2048, 2048)).contains("2048"));
        assert!(refusal(one("{}", 0, 2048)).contains("at least one token"));
        assert_eq!(
            one("{}", 2047, 2048).unwrap().prompts[0].params.max_tokens,
            1
        );
    }

    #[test]
    fn vllm_extras_and_seed_per_choice() {
        let v = one(
            r#"{"top_k":-1,"min_p":0.05,"repetition_penalty":1.2,"min_tokens":2,"ignore_eos":true,
                "stop_token_ids":[5],"priority":3,"seed":-1,"n":3,"stop":"x",
                "include_stop_str_in_output":true,"skip_special_tokens":false,
                "max_tokens":8,"logprobs":2}"#,
            4,
            100,
        )
        .unwrap();
        assert_eq!(v.n, 3);
        assert_eq!(v.priority, 3);
        assert!(v.include_stop_str_in_output && !v.skip_special_tokens);
        let (c0, c2) = (v.prompts[0].choice(0), v.prompts[0].choice(2));
        assert_eq!(c0.top_k, 0);
        assert_eq!(c0.stop, vec!["x".to_owned()]);
        assert_eq!(c0.stop_token_ids, vec![5]);
        assert_eq!(c0.logprobs, Some(2));
        assert_eq!(c0.seed, Some(u64::MAX));
        assert_eq!(c2.seed, Some(1));
        assert_eq!(c0.max_tokens, 8);
        assert!(c0.ignore_eos);
        assert!(v.logprobs());
    }

    #[test]
    fn each_prompt_of_a_batch_gets_its_own_max_tokens() {
        let v = check(
            &options("{}"),
            vec![vec![1; 10], vec![1; 30]],
            100,
            TierAccess::OPEN,
        )
        .unwrap();
        assert_eq!(v.prompts[0].params.max_tokens, 90);
        assert_eq!(v.prompts[1].params.max_tokens, 70);
        assert_eq!(v.prompt_tokens(), 40);
    }

    #[test]
    fn token_ids_must_be_in_the_vocabulary() {
        assert!(check_token_ids(10, &[0, 9]).is_ok());
        let e = check_token_ids(10, &[3, 10, 11]).unwrap_err();
        assert_eq!(e.to_string(), "Token id 10 is out of vocabulary (size 10).");
    }

    proptest! {
        /// Whatever the numbers, a request is either refused with a client error or
        /// valid: params in range and every prompt fitting the context.
        #[test]
        fn accepted_requests_fit_the_context(
            max_tokens in proptest::option::of(-5i64..5000),
            min_tokens in proptest::option::of(-2i64..50),
            n in proptest::option::of(-1i64..300),
            lens in proptest::collection::vec(0usize..3000, 1..4),
            max_model_len in 1usize..2048,
        ) {
            let o = SamplingOptions { max_tokens, min_tokens, n, ..SamplingOptions::default() };
            let prompts = lens.iter().map(|&l| vec![1; l]).collect();
            match check(&o, prompts, max_model_len, TierAccess::OPEN) {
                Ok(v) => {
                    prop_assert!(v.n * v.prompts.len() <= MAX_CHOICES);
                    for p in &v.prompts {
                        prop_assert!(!p.token_ids.is_empty());
                        prop_assert!(p.token_ids.len() + p.params.max_tokens <= max_model_len);
                        prop_assert!(p.params.validate().is_ok());
                    }
                }
                Err(Error::InvalidRequest { .. } | Error::Rejected(_)) => {}
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
