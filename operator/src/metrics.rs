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

/// Label set of the alerts backend's decisions counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `scaled_up`, `scaled_down`, `unchanged`, `not_found`, `ignored` or `failed`.
    pub result: String,
}

/// Label set of the webhook requests counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// HTTP status code of the answer.
    pub code: String,
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
    /// Alerts-backend decisions per InferenceDeployment, by result.
    pub alert_decisions: Family<DecisionLabels, Counter>,
    /// Alertmanager webhook requests, by answer code.
    pub webhook_requests: Family<CodeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("candela_operator");
        let reconciliations = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let leader = Gauge::default();
        let alert_decisions = Family::<DecisionLabels, Counter>::default();
        let webhook_requests = Family::<CodeLabels, Counter>::default();
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
        registry.register(
            "alert_scaling_decisions",
            "Alerts-backend decisions per InferenceDeployment, by result",
            alert_decisions.clone(),
        );
        registry.register(
            "alertmanager_webhook_requests",
            "Alertmanager webhook requests, by HTTP answer code",
            webhook_requests.clone(),
        );
        Self {
            registry,
            reconciliations,
            failures,
            duration,
            leader,
            alert_decisions,
            webhook_requests,
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

    /// Counts an alerts-backend decision.
    pub fn alert_decision(&self, result: &str) {
        self.alert_decisions
            .get_or_create(&DecisionLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts an answered webhook request.
    pub fn webhook_request(&self, code: u16) {
        self.webhook_requests
            .get_or_create(&CodeLabels {
                code: code.to_string(),
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
