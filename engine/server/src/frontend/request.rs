//! The neutral generation request both transports convert their wire types into.
//!
//! [`SamplingOptions`] is every sampling field as a client sent it (absent = default),
//! typed loosely on purpose: integers are `i64` so that `-1` reaches
//! [`super::validate`] and gets a message naming the field. The field list is written
//! once, in [`with_sampling_fields!`]: it defines [`SamplingOptions`] here and the
//! same fields inline in the HTTP request structs (`crate::api::protocol`), so the two
//! cannot drift.

use serde::{Deserialize, Deserializer};

use super::structured::Requested;

/// Calls `$callback! { $($args)* ; <field list> }` with the sampling fields shared by
/// every generation endpoint (OpenAI's plus vLLM's extras), each with its serde attributes.
macro_rules! with_sampling_fields {
    ($callback:ident ! { $($args:tt)* }) => {
        $callback! {
            $($args)* ;
            temperature: Option<f32>,
            top_p: Option<f32>,
            top_k: Option<i64>,
            min_p: Option<f32>,
            repetition_penalty: Option<f32>,
            presence_penalty: Option<f32>,
            frequency_penalty: Option<f32>,
            seed: Option<i64>,
            n: Option<i64>,
            #[serde(default, deserialize_with = "crate::frontend::request::one_or_many")]
            stop: Option<Vec<String>>,
            stop_token_ids: Option<Vec<u32>>,
            min_tokens: Option<i64>,
            ignore_eos: Option<bool>,
            priority: Option<i32>,
            service_tier: Option<String>,
            include_stop_str_in_output: Option<bool>,
            skip_special_tokens: Option<bool>,
            logit_bias: Option<std::collections::HashMap<String, f32>>,
            prompt_logprobs: Option<i64>,
            response_format: Option<crate::frontend::structured::ResponseFormat>,
            structured_outputs: Option<crate::frontend::structured::StructuredOutputs>,
            guided_json: Option<serde_json::Value>,
            guided_regex: Option<String>,
            guided_choice: Option<Vec<String>>,
            guided_grammar: Option<String>,
            guided_whitespace_pattern: Option<String>,
            guided_decoding_backend: Option<String>,
        }
    };
}
pub(crate) use with_sampling_fields;

macro_rules! define_sampling_options {
    ( ; $($(#[$fmeta:meta])* $field:ident : $ty:ty,)* ) => {
        /// A request's sampling fields as sent (absent = the default), plus the two whose
        /// wire spelling differs per endpoint: `max_tokens` and `logprobs`.
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        pub struct SamplingOptions {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Most tokens to generate; absent = the rest of the context.
            pub max_tokens: Option<i64>,
            /// Alternatives per token with log-probabilities; absent = no logprobs.
            pub logprobs: Option<i64>,
        }
    };
}
with_sampling_fields!(define_sampling_options! {});

/// One prompt of a request, before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text; `add_special_tokens` adds BOS etc. (a chat template writes its own).
    Text {
        text: String,
        add_special_tokens: bool,
    },
    /// Token ids the client tokenized itself.
    Tokens(Vec<u32>),
}

/// What HTTP and gRPC both hand the front end: prompts and how to sample them.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// One or more prompts (a completions batch); each gets `n` choices.
    pub prompts: Vec<Prompt>,
    pub options: SamplingOptions,
    /// A constraint the endpoint adds itself (chat's `tool_choice`), on top of the
    /// structured-output fields of `options`.
    pub constraint: Option<Requested>,
    /// The service tiers the caller may use (its API key's; `service_tier` asks).
    pub access: super::TierAccess,
}

/// `stop`: one string or a list of strings, read as a list (`null` = absent).
pub(crate) fn one_or_many<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|s| match s {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_is_one_string_or_a_list_and_null_is_absent() {
        let o: SamplingOptions = serde_json::from_str(r#"{"stop":"x"}"#).unwrap();
        assert_eq!(o.stop, Some(vec!["x".to_owned()]));
        let o: SamplingOptions = serde_json::from_str(r#"{"stop":["a","b"]}"#).unwrap();
        assert_eq!(o.stop, Some(vec!["a".to_owned(), "b".to_owned()]));
        let o: SamplingOptions = serde_json::from_str(r#"{"stop":null}"#).unwrap();
        assert_eq!(o.stop, None);
        assert!(serde_json::from_str::<SamplingOptions>(r#"{"stop":7}"#).is_err());
    }
}
