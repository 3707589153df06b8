//! The engine loop and the handle the HTTP/gRPC side uses to reach it.
//!
//! One OS thread owns the [`candela_core::Scheduler`] and the model runner and
//! runs `schedule() → execute() → update_from_output()` while there is work,
//! blocking on its command channel when idle. Callers talk to it only through
//! [`EngineClient`]: `submit` returns one [`RequestStream`] per sequence, and
//! dropping that stream aborts the request and frees its KV blocks at once.

use std::time::Instant;

use candela_core::{
    FinishReason, PromptLogprob, SamplingParams, ServiceTier, StopReason, TokenConstraint,
    TokenLogprobs,
};

/// What a caller submits for one sequence (the API layer fans `n > 1` out into `n` of these).
#[derive(Debug)]
pub struct GenerateRequest {
    pub prompt_token_ids: Vec<u32>,
    pub params: SamplingParams,
    /// Lower runs first under `--scheduling-policy priority` (within a tier).
    pub priority: i32,
    /// The service tier: the scheduler's first ordering key.
    pub tier: ServiceTier,
    /// When the HTTP request arrived (TTFT and queue time count from here).
    pub arrival: Instant,
    /// Structured outputs: this sequence's own matcher (never shared between choices).
    pub constraint: Option<Box<dyn TokenConstraint>>,
    /// The LoRA adapter it runs with (`None`: the base model).
    pub lora: Option<crate::lora::LoraHandle>,
}

/// One event on a request's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent {
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
    /// On the first event of a request with `prompt_logprobs`: one entry per prompt
    /// token after the first.
    pub prompt_logprobs: Option<Vec<PromptLogprob>>,
    /// Set on the last event of the stream.
    pub finish: Option<FinishReason>,
    /// With a `Stop` finish: the EOS or stop token that ended the sequence.
    pub stop_reason: Option<StopReason>,
}

mod driver;

pub use driver::{EngineCore, Step, spawn};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;

use candela_core::{RequestId, SchedulerStats};

use crate::error::Error;
use crate::metrics::{EngineMetrics, SharedMetrics};
use tokio::sync::{mpsc, oneshot};

/// A message from the async side to the engine thread.
pub(crate) enum Command {
    Add {
        id: RequestId,
        request: Box<GenerateRequest>,
        events: mpsc::UnboundedSender<TokenEvent>,
        reply: oneshot::Sender<Result<(), candela_core::Error>>,
    },
    Abort {
        id: RequestId,
        reason: FinishReason,
    },
}

/// Cheap, cloneable handle to the engine thread.
#[derive(Clone, Debug)]
pub struct EngineClient {
    commands: std_mpsc::Sender<Command>,
    next_id: Arc<AtomicU64>,
    metrics: SharedMetrics,
    alive: Arc<AtomicBool>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Add { id, .. } => write!(f, "Add({id})"),
            Command::Abort { id, reason } => write!(f, "Abort({id}, {reason:?})"),
        }
    }
}

impl EngineClient {
    pub(crate) fn new(
        commands: std_mpsc::Sender<Command>,
        metrics: SharedMetrics,
        alive: Arc<AtomicBool>,
    ) -> Self {
        EngineClient {
            commands,
            next_id: Arc::new(AtomicU64::new(1)),
            metrics,
            alive,
        }
    }

    /// A copy of every engine metric as of the last step (what `/metrics` renders).
    pub fn metrics(&self) -> EngineMetrics {
        self.metrics.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The engine's live metrics, shared (what `/metrics` renders on each scrape).
    pub fn shared_metrics(&self) -> SharedMetrics {
        self.metrics.clone()
    }

    /// Records an API-level request parameter (`n`) in the engine's metrics.
    pub fn record_api_request(&self, n: usize) {
        if let Ok(mut m) = self.metrics.lock() {
            m.on_api_request(n);
        }
    }

    /// False once the engine thread has stopped (a panic or shutdown); `/health` answers 503 then.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// The scheduler and KV pool gauges as of the engine's last step or command.
    pub fn stats(&self) -> SchedulerStats {
        self.metrics
            .lock()
            .map(|m| m.scheduler.clone())
            .unwrap_or_default()
    }

    /// Queues one sequence; refusals (queue full, too long, invalid parameters,
    /// engine stopped) come back before any token.
    ///
    /// # Errors
    /// [`Error::Rejected`] with the core's reason, or [`Error::EngineDead`].
    pub async fn submit(&self, request: GenerateRequest) -> Result<RequestStream, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (events, rx) = mpsc::unbounded_channel();
        let (reply, accepted) = oneshot::channel();
        self.commands
            .send(Command::Add {
                id,
                request: Box::new(request),
                events,
                reply,
            })
            .map_err(|_| Error::EngineDead)?;
        // From here on the engine may hold the request: a stream that is dropped,
        // even before acceptance is confirmed, aborts it.
        let mut stream = RequestStream {
            id,
            events: rx,
            client: self.clone(),
            done: false,
        };
        match accepted.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(e)) => {
                stream.done = true;
                Err(Error::Rejected(e))
            }
            Err(_) => {
                stream.done = true;
                Err(Error::EngineDead)
            }
        }
    }

    /// Aborts a request (client gone); idempotent, and a no-op for finished requests.
    pub fn abort(&self, id: RequestId) {
        let _ = self.commands.send(Command::Abort {
            id,
            reason: FinishReason::Abort,
        });
    }

    /// Ends a request whose stop string the server found in its text (counted as `stop`).
    pub fn stop(&self, id: RequestId) {
        let _ = self.commands.send(Command::Abort {
            id,
            reason: FinishReason::Stop,
        });
    }
}

/// The token stream of one sequence. Dropping it before the end aborts the
/// request in the engine, which frees its KV blocks at its next step.
#[derive(Debug)]
pub struct RequestStream {
    id: RequestId,
    events: mpsc::UnboundedReceiver<TokenEvent>,
    client: EngineClient,
    done: bool,
}

impl RequestStream {
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The next token; `None` after the event carrying `finish`, or when the engine stopped.
    pub async fn next(&mut self) -> Option<TokenEvent> {
        if self.done {
            return None;
        }
        let event = self.events.recv().await;
        match &event {
            Some(e) if e.finish.is_none() => {}
            _ => self.done = true,
        }
        event
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if !self.done {
            self.client.abort(self.id);
        }
    }
}
