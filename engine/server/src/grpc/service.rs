//! The server side of `candela.engine.v1.Engine`.
//!
//! `Generate` converts its protobuf request into the front end's neutral
//! [`GenerationRequest`] and from there takes the path HTTP takes — the same
//! validation, tokenizer, detokenization and stop strings ([`crate::frontend`]) — so a
//! gRPC caller gets exactly what `/v1/completions` would return. The response stream
//! owns the request's [`Choice`]: a cancelled call drops it, which aborts the engine
//! request. Errors map to `Status` codes here, in one place.
//! `Generate` needs a valid key (`authorization: Bearer KEY` metadata) when `--api-key` or
//! `--api-key-tiers` is set, as `/v1/*` does, and a tier file's key caps its
//! `service_tier`; `Health`, `WatchStats` and profiling stay open like `/health`,
//! `/metrics` and `/start_profile`.
//! `WatchStats` sends a copy of the engine's [`crate::metrics::EngineMetrics`] per
//! tick; each subscriber costs one clone of the metrics per interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, BoxStream, StreamExt};
use tokenizers::Tokenizer;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::IntervalStream;
use tonic::{Request, Response, Status};

use super::pb;
use crate::engine::EngineClient;
use crate::error::Error;
use crate::frontend::keys::{ApiKeys, Refused};
use crate::frontend::structured::Compiler;
use crate::frontend::{
    self, Choice, ChoiceEvent, GenerationRequest, Prompt, SamplingOptions, TierAccess,
};
use crate::profiler::Profiler;

/// `WatchStats` interval when the request leaves it at 0.
const DEFAULT_STATS_INTERVAL: Duration = Duration::from_millis(1000);
/// Shortest `WatchStats` interval served (a tighter loop only burns the engine's lock).
const MIN_STATS_INTERVAL: Duration = Duration::from_millis(10);

/// Implements the engine API over a running engine and its tokenizer.
#[derive(Clone)]
pub struct EngineService {
    engine: EngineClient,
    tokenizer: Arc<Tokenizer>,
    grammars: Arc<Compiler>,
    max_model_len: usize,
    model_name: String,
    profiler: Profiler,
    api_keys: ApiKeys,
}

impl EngineService {
    /// Serves `engine` (with its tokenizer and `--max-model-len`) as `model_name`,
    /// profiling through `profiler`, `Generate` for callers with one of `api_keys`.
    pub fn new(
        engine: EngineClient,
        tokenizer: Arc<Tokenizer>,
        grammars: Arc<Compiler>,
        max_model_len: usize,
        model_name: String,
        profiler: Profiler,
        api_keys: ApiKeys,
    ) -> Self {
        EngineService {
            engine,
            tokenizer,
            grammars,
            max_model_len,
            model_name,
            profiler,
            api_keys,
        }
    }
}

#[tonic::async_trait]
impl pb::engine_server::Engine for EngineService {
    type GenerateStream = BoxStream<'static, Result<pb::GenerateResponse, Status>>;
    type WatchStatsStream = BoxStream<'static, Result<pb::StatsSnapshot, Status>>;

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let arrival = Instant::now();
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let access = self.api_keys.authorize(authorization).map_err(|e| {
            Status::unauthenticated(match e {
                Refused::Missing => {
                    "an API key is required: send `authorization: Bearer KEY` metadata"
                }
                Refused::Wrong => "incorrect API key provided",
            })
        })?;
        let request = generation_request(request.into_inner(), access)?;
        let valid =
            frontend::validate(request, &self.tokenizer, self.max_model_len, &self.grammars)
                .await?;
        let choice = frontend::submit(&self.engine, &self.tokenizer, &valid, arrival)
            .await?
            .pop()
            .ok_or_else(|| Status::internal("no sequence was submitted"))?;
        Ok(Response::new(token_stream(choice, valid.service_tier)))
    }

    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        use pb::health_response::ServingStatus;
        let status = if self.engine.is_alive() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(Response::new(pb::HealthResponse {
            status: status.into(),
            model_name: self.model_name.clone(),
            max_model_len: self.max_model_len as u64,
        }))
    }

    async fn watch_stats(
        &self,
        request: Request<pb::WatchStatsRequest>,
    ) -> Result<Response<Self::WatchStatsStream>, Status> {
        let interval = match request.into_inner().interval_ms {
            0 => DEFAULT_STATS_INTERVAL,
            ms => Duration::from_millis(u64::from(ms)).max(MIN_STATS_INTERVAL),
        };
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let engine = self.engine.clone();
        let snapshots =
            IntervalStream::new(ticks).map(move |_| Ok(pb::StatsSnapshot::from(&engine.metrics())));
        Ok(Response::new(snapshots.boxed()))
    }

    async fn start_profile(
        &self,
        _: Request<pb::StartProfileRequest>,
    ) -> Result<Response<pb::StartProfileResponse>, Status> {
        self.profiler.start().map_err(Status::from)?;
        Ok(Response::new(pb::StartProfileResponse {}))
    }

    async fn stop_profile(
        &self,
        _: Request<pb::StopProfileRequest>,
    ) -> Result<Response<pb::StopProfileResponse>, Status> {
        // Writing the trace is file I/O: keep it off the async workers.
        let profiler = self.profiler.clone();
        let path = tokio::task::spawn_blocking(move || profiler.stop())
            .await
            .map_err(|e| Status::internal(format!("profile writer failed: {e}")))?
            .map_err(Status::from)?;
        Ok(Response::new(pb::StopProfileResponse {
            path: path.display().to_string(),
        }))
    }
}

/// The one conversion of a protobuf request into the front end's neutral request.
///
/// # Errors
/// `INVALID_ARGUMENT` when no prompt is set.
fn generation_request(
    r: pb::GenerateRequest,
    access: TierAccess,
) -> Result<GenerationRequest, Status> {
    let s = r.sampling.unwrap_or_default();
    let prompt = match r.prompt {
        Some(pb::generate_request::Prompt::Text(text)) => Prompt::Text {
            text,
            add_special_tokens: true,
        },
        Some(pb::generate_request::Prompt::TokenIds(pb::TokenIds { ids })) => Prompt::Tokens(ids),
        None => {
            return Err(Status::invalid_argument(
                "prompt: set `text` or `token_ids`",
            ));
        }
    };
    let options = SamplingOptions {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        min_p: s.min_p,
        repetition_penalty: s.repetition_penalty,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        seed: s.seed,
        n: None,
        stop: (!s.stop.is_empty()).then_some(s.stop),
        stop_token_ids: Some(s.stop_token_ids),
        min_tokens: s.min_tokens,
        ignore_eos: s.ignore_eos,
        priority: s.priority,
        service_tier: s.service_tier,
        include_stop_str_in_output: s.include_stop_str_in_output,
        skip_special_tokens: s.skip_special_tokens,
        max_tokens: s.max_tokens,
        logprobs: None,
        ..SamplingOptions::default()
    };
    Ok(GenerationRequest {
        prompts: vec![prompt],
        options,
        constraint: None,
        access,
    })
}

/// One response per engine event; the stream owns the choice (and so the request).
fn token_stream(
    choice: Choice,
    tier: candela_core::ServiceTier,
) -> BoxStream<'static, Result<pb::GenerateResponse, Status>> {
    let prompt_tokens = u32::try_from(choice.prompt_len()).unwrap_or(u32::MAX);
    stream::unfold(choice, move |mut choice| async move {
        let event = choice.next().await?;
        let completion_tokens = u32::try_from(choice.num_tokens()).unwrap_or(u32::MAX);
        Some((
            response(event, prompt_tokens, completion_tokens, tier),
            choice,
        ))
    })
    .boxed()
}

fn response(
    event: ChoiceEvent,
    prompt_tokens: u32,
    completion_tokens: u32,
    tier: candela_core::ServiceTier,
) -> Result<pb::GenerateResponse, Status> {
    if let Some(err) = event.error {
        return Err(err.into());
    }
    use candela_core::FinishReason as F;
    let finish_reason = match event.finish {
        None => pb::FinishReason::Unspecified,
        Some(F::Stop) => pb::FinishReason::Stop,
        Some(F::Length) => pb::FinishReason::Length,
        Some(F::Abort) => pb::FinishReason::Abort,
    };
    Ok(pb::GenerateResponse {
        text: event.text,
        token_id: event.token.map(|t| t.id),
        finish_reason: finish_reason.into(),
        prompt_tokens,
        completion_tokens,
        service_tier: tier.as_str().to_owned(),
    })
}

/// The crate's errors as gRPC codes, message kept.
impl From<Error> for Status {
    fn from(e: Error) -> Self {
        use candela_core::Error as Core;
        let message = e.to_string();
        match e {
            Error::InvalidRequest { .. }
            | Error::Rejected(Core::InvalidParams(_) | Core::TooLong { .. } | Core::EmptyPrompt) => {
                Status::invalid_argument(message)
            }
            Error::Rejected(Core::QueueFull { .. }) | Error::EngineDead => {
                Status::unavailable(message)
            }
            Error::ProfilingDisabled | Error::NoProfileRunning => {
                Status::failed_precondition(message)
            }
            _ => Status::internal(message),
        }
    }
}
