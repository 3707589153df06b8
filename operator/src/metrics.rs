//! The operator's own Prometheus metrics: reconcile counts, durations and failures by
//! kind, plus leadership. Metric names are defined here and nowhere else.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Error;

/// Label set of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// [`Error::metric_label`] of the failure.
    pub error: String,
}

/// All operator metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciliations started.
    pub reconciliations: Counter,
    /// Failed reconciliations by error kind.
    pub failures: Family<ErrorLabels, Counter>,
    /// Reconcile duration in seconds.
    pub duration: Histogram,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("candela_operator");
        let reconciliations = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let leader = Gauge::default();
        registry.register(
            "reconciliations",
            "Reconciliations started",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciliations by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconciliation",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciliations,
            failures,
            duration,
            leader,
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a timer that records its duration when dropped.
    pub fn reconcile_started(self: &Arc<Self>) -> ReconcileTimer {
        self.reconciliations.inc();
        ReconcileTimer {
            start: Instant::now(),
            metrics: Arc::clone(self),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, error: &Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: error.metric_label().to_owned(),
            })
            .inc();
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Records a reconcile's duration when dropped, so early returns are measured too.
#[derive(Debug)]
pub struct ReconcileTimer {
    start: Instant,
    metrics: Arc<Metrics>,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.metrics
            .duration
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reconcile_metrics() {
        let metrics = Arc::new(Metrics::default());
        drop(metrics.reconcile_started());
        metrics.reconcile_failed(&Error::InvalidSpec("x".into()));
        let text = metrics.encode();
        assert!(
            text.contains("candela_operator_reconciliations_total 1"),
            "{text}"
        );
        assert!(
            text.contains("candela_operator_reconcile_failures_total{error=\"invalid_spec\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("candela_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }
}
