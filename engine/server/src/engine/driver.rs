//! The engine thread: owns the scheduler and the model runner and drives
//! `schedule() → execute() → update_from_output()` while any request is live.
//!
//! Commands (add, abort) are drained at the start of every step; an idle engine
//! blocks on its channel, so it costs nothing between requests. Tokens leave
//! through each request's own unbounded channel: sending never blocks the loop,
//! and a receiver that is gone only means its abort command is on the way.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candela_core::{FinishReason, NewRequest, RequestId, Scheduler, SchedulerOutput};
use candela_model::{ModelRunner, SampleArgs, StepSeq};
use tokio::sync::mpsc;
use tracing::{debug, error};

use super::{Command, EngineClient, TokenEvent};

/// Spawns and owns the engine thread.
pub struct Engine;

struct Driver {
    scheduler: Scheduler,
    runner: ModelRunner,
    eos_token_ids: Vec<u32>,
    epoch: Instant,
    streams: HashMap<RequestId, mpsc::UnboundedSender<TokenEvent>>,
}

impl Engine {
    /// Starts the engine loop on its own OS thread.
    ///
    /// # Errors
    /// When the OS cannot spawn the thread.
    pub fn spawn(
        scheduler: Scheduler,
        runner: ModelRunner,
        eos_token_ids: Vec<u32>,
    ) -> std::io::Result<(EngineClient, JoinHandle<()>)> {
        let (tx, rx) = std_mpsc::channel();
        let driver =
            Driver { scheduler, runner, eos_token_ids, epoch: Instant::now(), streams: HashMap::new() };
        let handle = std::thread::Builder::new().name("candela-engine".into()).spawn(move || driver.run(rx))?;
        Ok((EngineClient::new(tx), handle))
    }
}

impl Driver {
    fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        loop {
            if self.scheduler.is_idle() {
                match commands.recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => return, // every client is gone
                }
            }
            while let Ok(cmd) = commands.try_recv() {
                self.handle(cmd);
            }
            if self.scheduler.is_idle() {
                continue;
            }
            let out = self.scheduler.schedule(self.now());
            if out.scheduled.is_empty() && out.swap_out.is_empty() && out.swap_in.is_empty() {
                // Held back (scheduler delay factor): wait for a command or a moment.
                if let Ok(cmd) = commands.recv_timeout(Duration::from_millis(2)) {
                    self.handle(cmd);
                }
                self.runner.finish(&out.finished);
                continue;
            }
            self.step(&out);
        }
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Add { id, request, events, reply } => {
                let arrival = request.arrival.checked_duration_since(self.epoch).unwrap_or_default();
                let new = NewRequest {
                    id,
                    prompt_token_ids: request.prompt_token_ids,
                    params: request.params,
                    priority: request.priority,
                    eos_token_ids: self.eos_token_ids.clone(),
                    arrival_time: arrival.as_secs_f64(),
                };
                let result = self.scheduler.add_request(new);
                if result.is_ok() {
                    self.streams.insert(id, events);
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
        if self.scheduler.abort(id, reason) {
            debug!(request_id = id, reason = reason.as_str(), "request ended early");
        }
        self.streams.remove(&id);
    }

    fn step(&mut self, out: &SchedulerOutput) {
        self.runner.finish(&out.finished);
        let seqs: Vec<StepSeq<'_>> = out
            .scheduled
            .iter()
            .map(|s| {
                let req = self.scheduler.request(s.id).expect("invariant: scheduled requests are live");
                StepSeq {
                    id: s.id,
                    tokens: &req.token_ids()[s.start..s.start + s.num_tokens],
                    start: s.start,
                    block_table: self.scheduler.block_table(s.id),
                    sample: s.sample.then(|| SampleArgs {
                        params: &req.params,
                        prompt: req.prompt_token_ids(),
                        output: req.output_token_ids(),
                    }),
                }
            })
            .collect();
        let sampled = match self.runner.execute(&out.swap_out, &out.swap_in, &seqs) {
            Ok(sampled) => sampled,
            Err(e) => {
                error!(error = %e, "model step failed; aborting its requests");
                for s in &out.scheduled {
                    self.abort(s.id, FinishReason::Abort);
                }
                return;
            }
        };
        let now = self.now();
        for o in self.scheduler.update_from_output(&sampled, now) {
            let event = TokenEvent { token: o.token, logprobs: o.logprobs, finish: o.finish };
            let Some(tx) = self.streams.get(&o.id) else { continue };
            let _ = tx.send(event);
            if o.finish.is_some() {
                self.streams.remove(&o.id);
            }
        }
        let _ = self.scheduler.take_finished();
    }
}
