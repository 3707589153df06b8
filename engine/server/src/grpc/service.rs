//! The server side of `candela.engine.v1.Engine`.
//!
//! `Generate` reuses the HTTP API's pieces end to end — [`GenerationPlan`] for
//! vLLM's parameter checks, the same tokenizer, [`Submission`] and [`Choice`] for
//! detokenization and stop strings — so a gRPC caller gets exactly what
//! `/v1/completions` would return. The response stream owns the request's
//! [`Choice`]: a cancelled call drops it, which aborts the engine request.
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
use crate::api::generate::{self, Choice, ChoiceEvent, PreparedPrompt, Submission};
use crate::api::params::GenerationPlan;
use crate::api::protocol::{SamplingFields, StringOrVec};
use crate::api::{ApiError, AppState};
use crate::engine::EngineClient;
use crate::profiler::{ProfileError, Profiler};

/// `WatchStats` interval when the request leaves it at 0.
const DEFAULT_STATS_INTERVAL: Duration = Duration::from_millis(1000);
/// Shortest `WatchStats` interval served (a tighter loop only burns the engine's lock).
const MIN_STATS_INTERVAL: Duration = Duration::from_millis(10);

/// Implements the engine API over a running engine and its tokenizer.
#[derive(Clone)]
pub struct EngineService {
    engine: EngineClient,
    tokenizer: Arc<Tokenizer>,
    eos_token_ids: Vec<u32>,
    max_model_len: usize,
    model_name: String,
    profiler: Profiler,
}

impl EngineService {
    /// Shares the engine, tokenizer and limits the HTTP API was built with, and its profiler.
    pub fn new(state: &AppState, profiler: Profiler) -> Self {
        EngineService {
            engine: state.engine.clone(),
            tokenizer: state.tokenizer.clone(),
            eos_token_ids: state.eos_token_ids.clone(),
            max_model_len: state.max_model_len,
            model_name: state
                .served_model_names
                .first()
                .cloned()
                .unwrap_or_default(),
            profiler,
        }
    }

    async fn prompt_ids(
        &self,
        prompt: Option<pb::generate_request::Prompt>,
    ) -> Result<Vec<u32>, Status> {
        use pb::generate_request::Prompt;
        match prompt {
            Some(Prompt::Text(text)) => Ok(generate::tokenize(&self.tokenizer, text, true).await?),
            Some(Prompt::TokenIds(pb::TokenIds { ids })) => {
                generate::check_token_ids(&self.tokenizer, &ids)?;
                Ok(ids)
            }
            None => Err(Status::invalid_argument(
                "prompt: set `text` or `token_ids`",
            )),
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
        let pb::GenerateRequest { prompt, sampling } = request.into_inner();
        let sampling = sampling.unwrap_or_default();
        let max_tokens = sampling.max_tokens;
        let plan = GenerationPlan::new(&sampling_fields(sampling), max_tokens, None, 1)?;
        let token_ids = self.prompt_ids(prompt).await?;
        self.engine.record_api_request(1);
        let submission = Submission {
            engine: &self.engine,
            tokenizer: &self.tokenizer,
            eos_token_ids: &self.eos_token_ids,
            max_model_len: self.max_model_len,
            plan: &plan,
            arrival,
        };
        let choice = submission
            .submit(&[PreparedPrompt { token_ids }])
            .await?
            .pop()
            .ok_or_else(|| Status::internal("no sequence was submitted"))?;
        Ok(Response::new(token_stream(choice)))
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
        self.profiler.start().map_err(profile_status)?;
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
            .map_err(profile_status)?;
        Ok(Response::new(pb::StopProfileResponse {
            path: path.display().to_string(),
        }))
    }
}

fn profile_status(e: ProfileError) -> Status {
    match e {
        ProfileError::Disabled | ProfileError::NotRunning => {
            Status::failed_precondition(e.to_string())
        }
        ProfileError::Write { .. } => Status::internal(e.to_string()),
    }
}

/// The request's fields in the HTTP API's shape, so both APIs validate alike.
fn sampling_fields(s: pb::SamplingParams) -> SamplingFields {
    SamplingFields {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        min_p: s.min_p,
        repetition_penalty: s.repetition_penalty,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        seed: s.seed,
        n: None,
        stop: (!s.stop.is_empty()).then_some(StringOrVec::Many(s.stop)),
        stop_token_ids: Some(s.stop_token_ids),
        min_tokens: s.min_tokens,
        ignore_eos: s.ignore_eos,
        priority: s.priority,
        include_stop_str_in_output: s.include_stop_str_in_output,
        skip_special_tokens: s.skip_special_tokens,
    }
}

/// One response per engine event; the stream owns the choice (and so the request).
fn token_stream(choice: Choice) -> BoxStream<'static, Result<pb::GenerateResponse, Status>> {
    let prompt_tokens = u32::try_from(choice.prompt_len()).unwrap_or(u32::MAX);
    stream::unfold(choice, move |mut choice| async move {
        let event = choice.next().await?;
        let completion_tokens = u32::try_from(choice.num_tokens()).unwrap_or(u32::MAX);
        Some((response(event, prompt_tokens, completion_tokens), choice))
    })
    .boxed()
}

fn response(
    event: ChoiceEvent,
    prompt_tokens: u32,
    completion_tokens: u32,
) -> Result<pb::GenerateResponse, Status> {
    if let Some(err) = event.error {
        return Err(err.into());
    }
    let finish_reason = match event.finish {
        None => pb::FinishReason::Unspecified,
        Some("stop") => pb::FinishReason::Stop,
        Some("length") => pb::FinishReason::Length,
        Some(_) => pb::FinishReason::Abort,
    };
    Ok(pb::GenerateResponse {
        text: event.text,
        token_id: event.token.map(|t| t.id),
        finish_reason: finish_reason.into(),
        prompt_tokens,
        completion_tokens,
    })
}

/// HTTP statuses of [`ApiError`] as gRPC codes, message kept.
impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        use axum::http::StatusCode;
        let message = e.message().to_owned();
        match e.status() {
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                Status::invalid_argument(message)
            }
            StatusCode::UNAUTHORIZED => Status::unauthenticated(message),
            StatusCode::NOT_FOUND => Status::not_found(message),
            StatusCode::TOO_MANY_REQUESTS => Status::resource_exhausted(message),
            StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(message),
            _ => Status::internal(message),
        }
    }
}
