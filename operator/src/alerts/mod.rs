//! The `alerts` autoscaling backend: Alertmanager posts the scale-up alerts the operator
//! generates for an InferenceDeployment (labels `namespace`, `inference_deployment`,
//! `candela_autoscaling="scale-up"`) to the operator's webhook, which steps the custom
//! resource's scale subresource within `minReplicas`..`maxReplicas`.
//!
//! - [`payload`]: the webhook body, parsed and checked (malformed → rejected whole).
//! - [`state`]: the pure state machine (ordering by `startsAt`/`endsAt`/fingerprint,
//!   cooldown, bounds), unit-tested without a cluster.
//! - [`scaler`]: reads the custom resource, writes the state to `status.alertScaling` and
//!   the step to the scale subresource with optimistic concurrency, records events. The
//!   webhook calls it per notification; the reconciler calls it as the scale-down timer.

pub mod payload;
pub mod scaler;
pub mod state;

pub use payload::{Notification, SCALE_UP_LABEL, SCALE_UP_VALUE, Target};
pub use scaler::{Outcome, Scaler, Verdict};

/// Names of the scale-up alerts the operator generates for the alerts backend.
pub const SCALE_UP_ALERTS: [&str; 2] = [
    "CandelaScaleUpQueueBacklog",
    "CandelaScaleUpKVCachePressure",
];
