//! The request front end both transports share (TGI's `validation` + `infer` split):
//! HTTP (`crate::api`) and gRPC (`crate::grpc`) each convert only their own wire
//! types into a [`GenerationRequest`]; everything after that is one path.
//!
//! - [`request`]: the neutral request and the sampling field list (written once).
//! - [`validate`]: tokenize, check, resolve `max_tokens` → [`ValidRequest`] (one validation).
//! - [`generate`]: submit the sequences and turn their tokens into text events
//!   ([`Choice`]), with stop strings and the core's stop reasons.
//! - [`structured`]: the structured-output fields (`response_format`, `structured_outputs`,
//!   `guided_*`) read into one constraint and compiled (a 400 when it does not compile).
//! - [`tool_calls`]: the tool-call syntaxes of model families (`--tool-call-parser`),
//!   whole and streamed.
//! - [`keys`]: API keys and the access each gives ([`keys::ApiKeys`]), for both transports.
//! - [`tier`]: `service_tier` resolved against the caller's key ([`TierAccess`]).
//!
//! `max_tokens` from handler to stop check: wire field → [`SamplingOptions::max_tokens`]
//! (the one conversion) → [`validate::check`] resolves it against the prompt and the
//! context into `SamplingParams::max_tokens` (the one validation) → the engine's
//! `GenerateRequest` → the core's `Request` → `check_stop` in the scheduler.

pub mod generate;
pub mod keys;
pub mod request;
pub mod structured;
pub mod tier;
pub mod tool_calls;
pub mod validate;

pub use generate::{
    Choice, ChoiceEvent, CollectedChoice, Stopped, TokenInfo, collect_all, merge, submit,
};
pub use request::{GenerationRequest, Prompt, SamplingOptions};
pub use tier::TierAccess;
pub use validate::{ValidRequest, validate};
