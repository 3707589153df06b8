//! Candela operator: turns an `InferenceDeployment` into engine pods and everything that
//! watches and scales them.
//!
//! Layers: [`crd`] (the custom resource types), [`builders`] (pure functions from a spec to
//! the child objects), [`controller`] (reconcile loop with server-side apply and status),
//! plus the operator's own [`metrics`], [`http`] endpoints, [`leader`] election, and the
//! `alerts` autoscaling backend: its state machine and scaler ([`alerts`]) behind the
//! Alertmanager [`webhook`]. [`generated`] lists the files
//! (CRD, RBAC, dashboards, rules) that `crdgen` writes for `deploy/` and the Helm chart.

pub mod alerts;
pub mod builders;
pub mod controller;
pub mod crd;
mod error;
pub mod generated;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod webhook;

pub use error::{Error, Result};

#[cfg(test)]
mod fixtures;
