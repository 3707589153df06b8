//! A stand-in engine for router tests: replays the prompt tokens as output.
//! SCRATCH VERSION — to be rebased on the real engine's test hooks.

use std::sync::atomic::Ordering;

use crate::engine::EngineClient;

pub fn engine(eos: u32) -> (EngineClient, Handle) {
    let client = EngineClient::fake(eos);
    (client.clone(), Handle(client))
}

pub struct Handle(EngineClient);

impl Handle {
    pub fn live(&self) -> usize {
        self.0.live.load(Ordering::SeqCst)
    }
    pub fn submitted(&self) -> usize {
        self.0.shared.submitted.load(Ordering::SeqCst)
    }
    pub fn seeds(&self) -> Vec<Option<u64>> {
        self.0.shared.seeds.lock().unwrap().clone()
    }
    pub fn set_queue_full(&self, on: bool) {
        self.0.shared.queue_full.store(on, Ordering::SeqCst);
    }
    pub fn set_slow(&self, on: bool) {
        self.0.shared.slow.store(on, Ordering::SeqCst);
    }
    /// Waits until every request stream has been dropped.
    pub async fn wait_idle(&self) {
        for _ in 0..500 {
            if self.live() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        panic!("{} request streams still alive", self.live());
    }
}
