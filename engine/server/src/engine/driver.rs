//! The engine thread: owns the scheduler and the model runner and drives
//! `schedule() → execute() → update_from_output()` while any request is live.
//!
//! Commands (add, abort) are drained at the start of every step; an idle engine
//! blocks on its channel, so it costs nothing between requests. Tokens leave
//! through each request's own unbounded channel: sending never blocks the loop,
//! and a receiver that is gone only means its abort command is on the way.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candela_core::{
    FinishReason, NewRequest, PromptLogprob, RequestId, RequestOutput, Scheduler, SchedulerOutput,
};
use candela_model::{ModelRunner, PromptLogprobsArgs, PromptLogprobsChunk, SampleArgs, StepSeq};
use tokio::sync::mpsc;
use tracing::{debug, error};

use super::{Command, EngineClient, TokenEvent};
use crate::metrics::{EngineMetrics, SharedMetrics};

/// The synchronous heart of the engine: one scheduler, one runner, one step at a time.
/// The engine thread drives it; tests drive it directly.
#[derive(Debug)]
pub struct EngineCore {
    pub scheduler: Scheduler,
    pub runner: ModelRunner,
}

impl EngineCore {
    /// Plans and runs one step; `None` when nothing could be scheduled. `clock` gives
    /// the engine's time in seconds: read when planning and again when tokens come out.
    ///
    /// # Errors
    /// A failed forward pass; the step's requests are aborted.
    pub fn step(&mut self, clock: &dyn Fn() -> f64) -> candela_model::Result<Option<Step>> {
        let step = tracing::trace_span!(
            "step",
            seqs = tracing::field::Empty,
            batched_tokens = tracing::field::Empty,
            decode_tokens = tracing::field::Empty,
            prefill_tokens = tracing::field::Empty,
        )
        .entered();
        let plan = tracing::trace_span!("schedule").in_scope(|| self.scheduler.schedule(clock()));
        if plan.scheduled.is_empty() && plan.swap_out.is_empty() && plan.swap_in.is_empty() {
            self.runner.finish(&plan.finished);
            return Ok(None);
        }
        // Batch composition, for the profiler's step events.
        // Decode tokens: each decoding request's last token and its drafts.
        let decode: usize = plan
            .scheduled
            .iter()
            .filter(|s| s.sample && s.num_known_tokens() == 1)
            .map(|s| s.num_tokens)
            .sum();
        step.record("seqs", plan.scheduled.len());
        step.record("batched_tokens", plan.num_batched_tokens);
        step.record("decode_tokens", decode);
        step.record("prefill_tokens", plan.num_batched_tokens - decode);
        let outputs = self.execute(&plan, clock)?;
        let prompt_logprobs = self.runner.take_prompt_logprobs();
        Ok(Some(Step {
            plan,
            outputs,
            prompt_logprobs,
        }))
    }

    /// Runs a planned step: swaps, forward, sampling, then the scheduler's update.
    ///
    /// # Errors
    /// A failed forward pass; the step's requests are aborted.
    fn execute(
        &mut self,
        out: &SchedulerOutput,
        clock: &dyn Fn() -> f64,
    ) -> candela_model::Result<Vec<RequestOutput>> {
        self.runner.finish(&out.finished);
        let scheduler = &self.scheduler;
        let seqs: Vec<StepSeq<'_>> = out
            .scheduled
            .iter()
            .map(|s| {
                let req = scheduler
                    .request(s.id)
                    .expect("invariant: scheduled requests are live");
                StepSeq {
                    id: s.id,
                    tokens: &req.token_ids()[s.start..s.start + s.num_known_tokens()],
                    draft: &s.draft_tokens,
                    start: s.start,
                    block_table: scheduler.block_table(s.id),
                    sample: s.sample.then(|| SampleArgs {
                        params: &req.params,
                        prompt: req.prompt_token_ids(),
                        output: req.output_token_ids(),
                        eos: &scheduler.config().eos_token_ids,
                    }),
                    prompt_logprobs: req.needs_prompt_logits().then(|| PromptLogprobsArgs {
                        top: req.params.prompt_logprobs.unwrap_or(0),
                        prompt: req.prompt_token_ids(),
                    }),
                }
            })
            .collect();
        match self.runner.execute(&out.swap_out, &out.swap_in, &seqs) {
            Ok(sampled) => {
                let outputs = self.scheduler.update_from_output(&sampled, clock());
                for (id, draft) in self.runner.take_draft_tokens() {
                    self.scheduler.set_draft_tokens(id, draft);
                }
                Ok(outputs)
            }
            Err(e) => {
                // A step that cannot run would fail again: end its requests.
                for s in &out.scheduled {
                    self.scheduler.abort(s.id, FinishReason::Abort);
                }
                Err(e)
            }
        }
    }
}

/// One executed step: what was planned and what came out.
#[derive(Debug)]
pub struct Step {
    pub plan: SchedulerOutput,
    pub outputs: Vec<RequestOutput>,
    /// Prompt log-probabilities computed this step (a part of a prompt per request).
    pub prompt_logprobs: Vec<PromptLogprobsChunk>,
}

struct Driver {
    core: EngineCore,
    epoch: Instant,
    streams: HashMap<RequestId, mpsc::UnboundedSender<TokenEvent>>,
    /// Prompt log-probabilities gathered until the request's first token carries them.
    prompt_logprobs: HashMap<RequestId, Vec<PromptLogprob>>,
    metrics: SharedMetrics,
}

/// Starts the engine loop on its own OS thread; it stops when the last
/// [`EngineClient`] is dropped.
///
/// # Errors
/// When the OS cannot spawn the thread.
pub fn spawn(
    scheduler: Scheduler,
    runner: ModelRunner,
    metrics: EngineMetrics,
) -> std::io::Result<(EngineClient, JoinHandle<()>)> {
    let (tx, rx) = std_mpsc::channel();
    let driver = Driver {
        core: EngineCore { scheduler, runner },
        epoch: Instant::now(),
        streams: HashMap::new(),
        prompt_logprobs: HashMap::new(),
        metrics: Arc::new(Mutex::new(metrics)),
    };
    let alive = Arc::new(AtomicBool::new(true));
    let client = EngineClient::new(tx, driver.metrics.clone(), alive.clone());
    let handle = std::thread::Builder::new()
        .name("candela-engine".into())
        .spawn(move || {
            // Marks the engine dead however the loop ends, a panic included.
            let _alive = AliveGuard(alive);
            driver.run(rx);
        })?;
    Ok((client, handle))
}

struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Driver {
    fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        loop {
            self.publish_stats(None);
            if self.core.scheduler.is_idle() {
                match commands.recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => return, // every client is gone
                }
            }
            while let Ok(cmd) = commands.try_recv() {
                self.handle(cmd);
            }
            if self.core.scheduler.is_idle() {
                continue;
            }
            let epoch = self.epoch;
            match self.core.step(&|| epoch.elapsed().as_secs_f64()) {
                Ok(Some(step)) => {
                    self.publish_stats(Some(&step));
                    for chunk in step.prompt_logprobs {
                        let list = self.prompt_logprobs.entry(chunk.id).or_default();
                        // A recomputed prompt (preempted mid-prefill) replaces its tail.
                        list.truncate(chunk.start);
                        list.extend(chunk.logprobs);
                    }
                    self.dispatch(step.outputs);
                }
                Ok(None) => {
                    // Held back (scheduler delay factor): wait for a command or a moment.
                    if let Ok(cmd) = commands.recv_timeout(Duration::from_millis(2)) {
                        self.handle(cmd);
                    }
                }
                Err(e) => {
                    error!(error = %e, "model step failed; its requests were aborted");
                    let scheduler = &self.core.scheduler;
                    self.streams
                        .retain(|id, _| scheduler.request(*id).is_some());
                    self.prompt_logprobs
                        .retain(|id, _| scheduler.request(*id).is_some());
                }
            }
        }
    }

    /// Refreshes the shared gauges and records requests that left the engine.
    fn publish_stats(&mut self, step: Option<&Step>) {
        let finished = self.core.scheduler.take_finished();
        let now = self.now();
        if let Ok(mut m) = self.metrics.lock() {
            if let Some(step) = step {
                m.on_step(&step.plan, &step.outputs, now);
            }
            for req in &finished {
                m.on_finished(req, now);
            }
            m.set_scheduler(self.core.scheduler.stats(), crate::metrics::unix_seconds());
        }
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Add {
                id,
                request,
                events,
                reply,
            } => {
                let arrival = request
                    .arrival
                    .checked_duration_since(self.epoch)
                    .unwrap_or_default();
                let new = NewRequest {
                    id,
                    prompt_token_ids: request.prompt_token_ids,
                    params: request.params,
                    priority: request.priority,
                    tier: request.tier,
                    arrival_time: arrival.as_secs_f64(),
                    lora: request.lora.as_ref().map(|l| l.id),
                };
                let result = self.core.scheduler.add_request(new);
                if result.is_ok() {
                    self.streams.insert(id, events);
                    if let Some(constraint) = request.constraint {
                        self.core.runner.constrain(id, constraint);
                    }
                    if let Some(lora) = request.lora {
                        if let Ok(mut m) = self.metrics.lock() {
                            m.on_lora_request(lora.id, &lora.name);
                        }
                        self.core.runner.set_lora(id, lora.adapter);
                    }
                }
                if reply.send(result).is_err() {
                    // The submitter gave up before hearing back.
                    self.abort(id, FinishReason::Abort);
                }
            }
            Command::Abort { id, reason } => self.abort(id, reason),
        }
    }

    fn abort(&mut self, id: RequestId, reason: FinishReason) {
        if self.core.scheduler.abort(id, reason) {
            debug!(
                request_id = id,
                reason = reason.as_str(),
                "request ended early"
            );
        }
        self.streams.remove(&id);
        self.prompt_logprobs.remove(&id);
    }

    /// Sends each output to its request's stream; a finished stream is closed.
    fn dispatch(&mut self, outputs: Vec<RequestOutput>) {
        for o in outputs {
            let event = TokenEvent {
                token: o.token,
                logprobs: o.logprobs,
                prompt_logprobs: self.prompt_logprobs.remove(&o.id),
                finish: o.finish,
                stop_reason: o.stop_reason,
            };
            let Some(tx) = self.streams.get(&o.id) else {
                continue;
            };
            let _ = tx.send(event);
            if o.finish.is_some() {
                self.streams.remove(&o.id);
            }
        }
    }
}
