//! The sidecar's subscription to the engine's `WatchStats`, kept alive forever.
//!
//! While a stream delivers, each snapshot replaces the last in the [`Feed`]. When
//! the stream fails, ends or stalls (no snapshot for three intervals plus two
//! seconds — a half-open connection), the feed is marked down and its engine
//! metrics are dropped, and the task reconnects with exponential backoff
//! ([`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`], reset once a new stream delivers).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::grpc::{GrpcClient, WatchStatsRequest};
use crate::metrics::EngineMetrics;

/// First retry delay after the engine went away.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between reconnection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// What the sidecar knows about the engine right now.
#[derive(Debug, Default)]
pub struct FeedState {
    /// The last snapshot of the current stream; `None` while disconnected.
    pub metrics: Option<EngineMetrics>,
    /// When that snapshot arrived.
    pub received_at: Option<Instant>,
}

/// Shared between the watch task (writer) and `/metrics` (readers).
pub type Feed = Arc<RwLock<FeedState>>;

/// Subscribes to the engine at `endpoint` for as long as the process lives.
pub async fn run(endpoint: Endpoint, interval_ms: u32, feed: Feed) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut delivered = false;
        let result = subscribe(&endpoint, interval_ms, &feed, &mut delivered).await;
        if let Ok(mut state) = feed.write() {
            *state = FeedState::default();
        }
        if delivered {
            backoff = BACKOFF_MIN;
        }
        match result {
            // Losing a working stream is news; each failed retry while the engine is away is not.
            Err(e) if delivered => {
                warn!(engine = %endpoint.uri(), error = %e, "lost the engine's stats stream; reconnecting")
            }
            Err(e) => {
                debug!(engine = %endpoint.uri(), error = %e, retry_in = ?backoff, "engine not reachable")
            }
            Ok(()) => {
                info!(engine = %endpoint.uri(), "the engine closed its stats stream; reconnecting")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn subscribe(
    endpoint: &Endpoint,
    interval_ms: u32,
    feed: &Feed,
    delivered: &mut bool,
) -> Result<(), Error> {
    let channel = endpoint.connect().await?;
    let mut client = GrpcClient::new(channel);
    let mut stream = client
        .watch_stats(WatchStatsRequest { interval_ms })
        .await?
        .into_inner();
    let stall = Duration::from_millis(u64::from(interval_ms.max(1))) * 3 + Duration::from_secs(2);
    loop {
        let next = tokio::time::timeout(stall, stream.message())
            .await
            .map_err(|_| Error::Stalled(stall))??;
        let Some(snapshot) = next else { return Ok(()) };
        let metrics = EngineMetrics::try_from(snapshot)?;
        if !*delivered {
            info!(engine = %endpoint.uri(), model = %metrics.model_name, "receiving the engine's stats");
            *delivered = true;
        }
        if let Ok(mut state) = feed.write() {
            state.metrics = Some(metrics);
            state.received_at = Some(Instant::now());
        }
    }
}
