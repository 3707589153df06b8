//! The alerts backend against the API server: read an InferenceDeployment, run the state
//! machine ([`super::state::plan`]), write the new state to its status, then the new
//! replica count to its scale subresource, and record the decision as an event.
//!
//! Both writes carry the `resourceVersion` the decision was made on, so concurrent
//! deliveries (several operator replicas, several Alertmanagers) serialize: the loser
//! gets 409 Conflict, re-reads, and finds the winner's step in the state (the cooldown
//! then holds). The state goes first: a crash between the two writes leaves a recorded
//! step that the next evaluation completes ([`super::state::Decision::Scale`] with
//! `completes_recorded_step`), never a step taken twice.

use std::sync::Arc;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Reporter;
use kube::{Client, Resource};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use super::payload::IncomingAlert;
use super::state::{Decision, Direction, MergeCounts, Settings, plan};
use crate::crd::{AlertScalingStatus, InferenceDeployment};
use crate::metrics::Metrics;

/// Field manager of the status writes of the alerts backend (the reconciler's status
/// apply never names `status.alertScaling`, so it never removes it).
pub const FIELD_MANAGER: &str = "candela-operator-alerts";

/// Attempts before giving up on repeated conflicts.
const ATTEMPTS: usize = 5;

/// What happened to one InferenceDeployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// `spec.replicas` went up.
    ScaledUp,
    /// `spec.replicas` went down.
    ScaledDown,
    /// Evaluated; nothing to do (the reason says why).
    Unchanged,
    /// No such InferenceDeployment.
    NotFound,
    /// It exists but the alerts backend does not scale it.
    Ignored,
    /// An API call failed; Alertmanager should retry.
    Failed,
}

impl Verdict {
    /// The label of the decisions counter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaledUp => "scaled_up",
            Self::ScaledDown => "scaled_down",
            Self::Unchanged => "unchanged",
            Self::NotFound => "not_found",
            Self::Ignored => "ignored",
            Self::Failed => "failed",
        }
    }
}

/// The decision for one InferenceDeployment, as the webhook answers it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What happened.
    pub result: Verdict,
    /// Why.
    pub reason: String,
    /// `spec.replicas` after the decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// `spec.replicas` before a step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<i32>,
    /// How the notification's alerts compared with the stored state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<MergeCounts>,
    /// Whether the stored state changed.
    pub state_changed: bool,
    /// When a scale-down step becomes due (the reconciler requeues for it).
    #[serde(skip)]
    pub due: Option<Timestamp>,
}

/// Evaluates and applies alert-driven scaling decisions.
#[derive(Clone)]
pub struct Scaler {
    client: Client,
    reporter: Reporter,
    metrics: Arc<Metrics>,
}

impl Scaler {
    /// A scaler writing with `client`; its events name `reporter`.
    pub fn new(client: Client, reporter: Reporter, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            reporter,
            metrics,
        }
    }

    /// Evaluates `incoming` (one notification's alerts for this InferenceDeployment; empty
    /// for the reconciler's timer) and applies the decision.
    pub async fn evaluate(
        &self,
        namespace: &str,
        name: &str,
        incoming: &[IncomingAlert],
    ) -> Outcome {
        let outcome = self.evaluate_inner(namespace, name, incoming).await;
        self.metrics.alert_decision(outcome.result.as_str());
        outcome
    }

    async fn evaluate_inner(
        &self,
        namespace: &str,
        name: &str,
        incoming: &[IncomingAlert],
    ) -> Outcome {
        let api: Api<InferenceDeployment> = Api::namespaced(self.client.clone(), namespace);
        let outcome = |result: Verdict, reason: String| Outcome {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            result,
            reason,
            replicas: None,
            from: None,
            alerts: None,
            state_changed: false,
            due: None,
        };
        let failed = |what: &str, e: &kube::Error| {
            warn!(namespace, name, error = %e, "alerts backend: {what} failed");
            outcome(Verdict::Failed, format!("{what}: {e}"))
        };
        for _ in 0..ATTEMPTS {
            let infd = match api.get_opt(name).await {
                Ok(Some(infd)) => infd,
                Ok(None) => {
                    return outcome(
                        Verdict::NotFound,
                        format!("no InferenceDeployment {namespace}/{name}"),
                    );
                }
                Err(e) => return failed("reading the InferenceDeployment", &e),
            };
            let settings = match Settings::of(&infd.spec) {
                Ok(s) => s,
                Err(reason) => {
                    let mut o = outcome(Verdict::Ignored, reason);
                    o.replicas = Some(infd.spec.replicas);
                    return o;
                }
            };
            let old = infd
                .status
                .as_ref()
                .and_then(|s| s.alert_scaling.clone())
                .unwrap_or_default();
            let replicas = infd.spec.replicas;
            let now = super::payload::micro(Timestamp::now());
            let plan = plan(&settings, replicas, &old, incoming, now);
            let mut version = infd.metadata.resource_version.clone();
            let state_changed = plan.state != old;
            if state_changed {
                match write_state(&api, name, version.as_deref(), &plan.state).await {
                    Ok(rv) => version = rv,
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return failed("writing status.alertScaling", &e),
                }
            }
            let mut o = outcome(Verdict::Unchanged, String::new());
            o.alerts = (!incoming.is_empty()).then_some(plan.counts);
            o.state_changed = state_changed;
            o.replicas = Some(replicas);
            match plan.decision {
                Decision::Hold { reason, due } => {
                    if state_changed {
                        self.event(&infd, "ScaleHeld", &reason).await;
                    }
                    o.reason = reason;
                    o.due = due;
                    return o;
                }
                Decision::Scale {
                    to,
                    direction,
                    reason,
                    completes_recorded_step,
                } => {
                    // The step is committed once the state records it (for a completion,
                    // it already was); set the replicas, re-reading on conflicts.
                    let recorded = plan.state.last_scale_time.clone();
                    match apply_step(&api, name, version, replicas, to, recorded).await {
                        Applied::Done => {}
                        Applied::Superseded(why) => {
                            o.reason = why;
                            return o;
                        }
                        Applied::Failed(e) => {
                            warn!(namespace, name, error = %e, "alerts backend: scaling failed");
                            return outcome(
                                Verdict::Failed,
                                format!("patching the scale subresource: {e}"),
                            );
                        }
                    }
                    let (result, verb) = match direction {
                        Direction::Up => (Verdict::ScaledUp, "ScaledUp"),
                        Direction::Down => (Verdict::ScaledDown, "ScaledDown"),
                    };
                    let note = if completes_recorded_step {
                        format!("{verb} {replicas} -> {to}: {reason}")
                    } else {
                        plan.state
                            .last_scale_reason
                            .clone()
                            .unwrap_or_else(|| reason.clone())
                    };
                    info!(namespace, name, from = replicas, to, %reason, "alerts backend scaled");
                    self.event(&infd, verb, &note).await;
                    o.result = result;
                    o.reason = note;
                    o.from = Some(replicas);
                    o.replicas = Some(to);
                    return o;
                }
            }
        }
        outcome(
            Verdict::Failed,
            format!("{ATTEMPTS} conflicting concurrent updates; retry"),
        )
    }

    /// Records one decision as its own event. (kube-runtime's `Recorder` folds events with
    /// the same reason into a series that keeps the first note; every step here has a note
    /// of its own.) Failures are logged: the decision is in the status either way.
    async fn event(&self, infd: &InferenceDeployment, reason: &str, note: &str) {
        let reference = infd.object_ref(&());
        let now = Timestamp::now();
        let name = format!(
            "{}.{:x}",
            infd.metadata
                .name
                .as_deref()
                .unwrap_or("inferencedeployment"),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: reference.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some("Scale".into()),
            reason: Some(reason.into()),
            note: Some(note.chars().take(1000).collect()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some("Normal".into()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(
            self.client.clone(),
            reference.namespace.as_deref().unwrap_or("default"),
        );
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            warn!(error = %e, "publishing an event failed");
        }
    }
}

/// Writes `status.alertScaling` (merge patch; `null`s remove stale fields) on the
/// condition that the object is still at `version`. Returns the new resourceVersion.
async fn write_state(
    api: &Api<InferenceDeployment>,
    name: &str,
    version: Option<&str>,
    state: &AlertScalingStatus,
) -> kube::Result<Option<String>> {
    let body = json!({
        "metadata": { "resourceVersion": version },
        "status": { "alertScaling": state },
    });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let written = api.patch_status(name, &pp, &Patch::Merge(&body)).await?;
    Ok(written.metadata.resource_version)
}

/// How a committed step ended.
enum Applied {
    /// `spec.replicas` is the step's target.
    Done,
    /// Another writer changed the replicas or the state first; the step is dropped.
    Superseded(String),
    /// An API call failed.
    Failed(String),
}

/// Sets `spec.replicas` from `from` to `to` through the scale subresource for the step
/// recorded at `recorded`. A conflict (the reconciler's status write often lands between
/// the state write and this one) re-reads the object: the step is retried while the
/// replicas are still `from` and the state still records it.
async fn apply_step(
    api: &Api<InferenceDeployment>,
    name: &str,
    mut version: Option<String>,
    from: i32,
    to: i32,
    recorded: Option<MicroTime>,
) -> Applied {
    for _ in 0..ATTEMPTS {
        let body = json!({
            "metadata": { "resourceVersion": version },
            "spec": { "replicas": to },
        });
        match api
            .patch_scale(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => return Applied::Done,
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Applied::Failed(e.to_string()),
        }
        let infd = match api.get(name).await {
            Ok(infd) => infd,
            Err(e) => return Applied::Failed(e.to_string()),
        };
        let state = infd.status.as_ref().and_then(|s| s.alert_scaling.as_ref());
        if state.and_then(|s| s.last_scale_time.clone()) != recorded {
            return Applied::Superseded("a later decision replaced this step".into());
        }
        match infd.spec.replicas {
            r if r == to => return Applied::Done,
            r if r != from => {
                return Applied::Superseded(format!(
                    "spec.replicas was changed to {r} by another writer"
                ));
            }
            _ => version = infd.metadata.resource_version,
        }
    }
    Applied::Failed(format!(
        "{ATTEMPTS} conflicting updates of the scale subresource"
    ))
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
