//! A stand-in engine thread for router tests: speaks the real [`EngineClient`]
//! command protocol and "generates" by replaying the prompt tokens, one per step.
//!
//! It keeps the set of requests it holds, so tests can check that every
//! `RequestStream` dropped by the HTTP side (client gone, stop string) reached the
//! engine as an abort.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use candela_core::{FinishReason, RequestId, SchedulerStats, TokenLogprobs};
use tokio::sync::mpsc;

use crate::engine::{Command, EngineClient, GenerateRequest, TokenEvent};

/// What tests can observe and steer.
#[derive(Default)]
struct Shared {
    held: Mutex<Vec<RequestId>>,
    seeds: Mutex<Vec<Option<u64>>>,
    queue_full: AtomicBool,
    slow: AtomicBool,
    submitted: AtomicUsize,
}

/// The test's view of the fake engine.
pub struct Handle(Arc<Shared>);

struct Active {
    id: RequestId,
    request: GenerateRequest,
    events: mpsc::UnboundedSender<TokenEvent>,
    generated: usize,
}

/// Starts the fake engine thread; it ends when every client is dropped.
pub fn engine(eos: u32) -> (EngineClient, Handle) {
    let (tx, rx) = std_mpsc::channel::<Command>();
    let shared = Arc::new(Shared::default());
    let state = shared.clone();
    std::thread::spawn(move || run(rx, &state, eos));
    let stats = Arc::new(Mutex::new(SchedulerStats::default()));
    (EngineClient::new(tx, stats, Arc::new(AtomicBool::new(true))), Handle(shared))
}

fn run(rx: std_mpsc::Receiver<Command>, shared: &Shared, eos: u32) {
    let mut active: HashMap<RequestId, Active> = HashMap::new();
    loop {
        if active.is_empty() {
            match rx.recv() {
                Ok(cmd) => handle(cmd, &mut active, shared),
                Err(_) => return,
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            handle(cmd, &mut active, shared);
        }
        let delay = if shared.slow.load(Ordering::SeqCst) { 20 } else { 1 };
        std::thread::sleep(Duration::from_millis(delay));
        let mut finished = Vec::new();
        for a in active.values_mut() {
            let p = &a.request.prompt_token_ids;
            let token = p[a.generated % p.len()];
            a.generated += 1;
            let params = &a.request.params;
            let finish = if token == eos && !params.ignore_eos {
                Some(FinishReason::Stop)
            } else if a.generated >= params.max_tokens {
                Some(FinishReason::Length)
            } else {
                None
            };
            let logprobs = params.logprobs.map(|k| TokenLogprobs {
                logprob: -0.5,
                top: (0..k as u32).map(|t| (t + 100, -1.0 - t as f32)).collect(),
            });
            let _ = a.events.send(TokenEvent { token, logprobs, finish });
            if finish.is_some() {
                finished.push(a.id);
            }
        }
        for id in finished {
            release(id, &mut active, shared);
        }
    }
}

fn handle(cmd: Command, active: &mut HashMap<RequestId, Active>, shared: &Shared) {
    match cmd {
        Command::Add { id, request, events, reply } => {
            let result = if shared.queue_full.load(Ordering::SeqCst) {
                Err(candela_core::Error::QueueFull { waiting: 3 })
            } else if request.prompt_token_ids.is_empty() {
                Err(candela_core::Error::EmptyPrompt)
            } else {
                request.params.validate()
            };
            if result.is_ok() {
                // Recorded before the reply so a test sees it as soon as `submit` returns.
                shared.submitted.fetch_add(1, Ordering::SeqCst);
                shared.seeds.lock().unwrap().push(request.params.seed);
                shared.held.lock().unwrap().push(id);
                active.insert(id, Active { id, request, events, generated: 0 });
            }
            if reply.send(result).is_err() {
                release(id, active, shared);
            }
        }
        Command::Abort { id, .. } => release(id, active, shared),
    }
}

fn release(id: RequestId, active: &mut HashMap<RequestId, Active>, shared: &Shared) {
    active.remove(&id);
    shared.held.lock().unwrap().retain(|&h| h != id);
}

impl Handle {
    /// Requests the engine still holds (not finished, not aborted).
    pub fn live(&self) -> usize {
        self.0.held.lock().unwrap().len()
    }

    pub fn submitted(&self) -> usize {
        self.0.submitted.load(Ordering::SeqCst)
    }

    pub fn seeds(&self) -> Vec<Option<u64>> {
        self.0.seeds.lock().unwrap().clone()
    }

    pub fn set_queue_full(&self, on: bool) {
        self.0.queue_full.store(on, Ordering::SeqCst);
    }

    pub fn set_slow(&self, on: bool) {
        self.0.slow.store(on, Ordering::SeqCst);
    }

    /// Waits until the engine holds no request.
    pub async fn wait_idle(&self) {
        for _ in 0..1000 {
            if self.live() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the engine still holds {} requests", self.live());
    }
}
