//! The reconcile loop: for each InferenceDeployment, build the children, apply them with
//! server-side apply, and write a status computed from the Deployment's real state.
//!
//! Invariants:
//! - A spec that passes the schema but cannot be built is reported as `Degraded` with
//!   reason `InvalidSpec` and retried slowly; it never becomes an error loop.
//! - Third-party children are applied only when their CRD is served; otherwise a
//!   condition names the missing CRD. TLS certificates are the exception: a spec whose
//!   certificates cert-manager must issue, without cert-manager, is an `InvalidSpec`
//!   (never plain HTTP, never pods waiting for a Secret nothing writes).
//! - Failures back off exponentially per object (5 s doubling to 5 min).
//! - With the `alerts` autoscaling backend, reconcile is also the scale-down timer: it
//!   runs the alerts state machine without a notification and requeues for the time the
//!   next step down becomes due (see [`crate::alerts`]). `status.alertScaling` belongs to
//!   the alerts backend; the status written here never names it.

pub mod apply;
pub mod capabilities;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use self::apply::MANAGER;
use self::capabilities::CapabilityCache;
use self::status::ApplyOutcome;
use crate::alerts::Scaler;
use crate::alerts::state::Settings;
use crate::builders::thirdparty::ThirdParty;
use crate::builders::{self, BuildConfig};
use crate::crd::{InferenceDeployment, InferenceDeploymentStatus};
use crate::metrics::Metrics;
use crate::{Error, Result};

/// Requeue interval of a healthy object (drift correction).
const RESYNC: Duration = Duration::from_secs(300);
/// Requeue interval while a rollout progresses.
const PROGRESS_POLL: Duration = Duration::from_secs(30);
/// First retry after a failure; doubles up to [`RESYNC`].
const BACKOFF_BASE: Duration = Duration::from_secs(5);

/// Everything reconcile needs, shared by all reconciles.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Operator-wide builder settings.
    pub build: BuildConfig,
    /// Event recorder.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Cached API discovery of third-party kinds.
    pub capabilities: CapabilityCache,
    /// The alerts backend's scaler (the scale-down timer runs in reconcile).
    pub scaler: Scaler,
    /// Consecutive failures per object, for the backoff.
    failures: Mutex<HashMap<ObjectRef<InferenceDeployment>, u32>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, build: BuildConfig, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(client.clone(), reporter.clone());
        Self {
            scaler: Scaler::new(client.clone(), reporter, Arc::clone(&metrics)),
            recorder,
            client,
            build,
            metrics,
            capabilities: CapabilityCache::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Uses `ttl` for API discovery results (tests use a short one).
    #[must_use]
    pub fn with_capability_ttl(mut self, ttl: Duration) -> Self {
        self.capabilities = CapabilityCache::new(ttl);
        self
    }

    /// Backoff for the next retry of `obj`, counting this failure.
    fn backoff(&self, obj: &ObjectRef<InferenceDeployment>) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(obj.clone()).or_insert(0);
        *n = n.saturating_add(1);
        BACKOFF_BASE
            .saturating_mul(1u32 << (*n - 1).min(6))
            .min(RESYNC)
    }

    fn succeeded(&self, obj: &ObjectRef<InferenceDeployment>) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(obj);
    }
}

/// Reconciles one InferenceDeployment.
///
/// # Errors
/// API failures; the controller retries them with [`error_policy`].
#[instrument(skip(infd, ctx), fields(namespace = %infd.namespace().unwrap_or_default(), name = %infd.name_any()))]
pub async fn reconcile(infd: Arc<InferenceDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let namespace = infd
        .namespace()
        .ok_or(Error::MissingMetadata("metadata.namespace"))?;
    let name = infd.name_any();
    let uid = infd.uid().ok_or(Error::MissingMetadata("metadata.uid"))?;

    let children = match builders::build(&infd, &ctx.build) {
        Ok(children) => children,
        Err(Error::InvalidSpec(message)) => {
            return report_invalid(&ctx, &infd, &namespace, &name, message).await;
        }
        Err(e) => return Err(e),
    };

    let caps = ctx.capabilities.get(&ctx.client).await?;
    // TLS never falls back to plain HTTP: without cert-manager nothing issues the
    // certificates the pods would wait for.
    if let Some(field) = children.cert_manager_fields.first()
        && !caps.has(ThirdParty::Certificate)
    {
        let message = format!(
            "{field}: no secretName, and cert-manager is not installed ({} is not served): \
             install cert-manager, or set {field}.secretName to a kubernetes.io/tls Secret \
             with tls.crt, tls.key and ca.crt",
            ThirdParty::Certificate.crd_name()
        );
        return report_invalid(&ctx, &infd, &namespace, &name, message).await;
    }
    let applied =
        apply::apply_children(&ctx.client, &namespace, &name, &uid, &children, &caps).await?;
    let new = status::compute(
        &infd,
        Some(&applied.deployment),
        &applied.outcome,
        Timestamp::now(),
    );
    publish_transitions(&ctx, &infd, &new).await;
    let progressing = is_true(&new, "Progressing");
    if !same_status(infd.status.as_ref(), &new) {
        patch_status(&ctx.client, &namespace, &name, &new).await?;
    }
    let mut requeue = if progressing { PROGRESS_POLL } else { RESYNC };
    if Settings::of(&infd.spec).is_ok() {
        let outcome = ctx.scaler.evaluate(&namespace, &name, &[]).await;
        if outcome.result == crate::alerts::Verdict::Failed {
            return Err(Error::AlertScaling(outcome.reason));
        }
        if let Some(due) = outcome.due {
            let wait = Timestamp::now().duration_until(due);
            let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
            // A little after the due time, so the step is not a hair early.
            requeue = requeue.min(wait + Duration::from_millis(200));
        }
    }
    ctx.succeeded(&ObjectRef::from_obj(&*infd));
    Ok(Action::requeue(requeue))
}

/// Writes the `InvalidSpec` status of a spec that cannot be turned into children (the
/// existing children are left as they are) and requeues slowly.
async fn report_invalid(
    ctx: &Context,
    infd: &InferenceDeployment,
    namespace: &str,
    name: &str,
    message: String,
) -> Result<Action> {
    let outcome = ApplyOutcome {
        invalid_spec: Some(message),
        ..ApplyOutcome::default()
    };
    let deployment = Api::<Deployment>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await?;
    let new = status::compute(infd, deployment.as_ref(), &outcome, Timestamp::now());
    publish_transitions(ctx, infd, &new).await;
    patch_status(&ctx.client, namespace, name, &new).await?;
    ctx.succeeded(&ObjectRef::from_obj(infd));
    Ok(Action::requeue(RESYNC))
}

/// Retry policy: exponential backoff per object, and a failure count by error kind.
pub fn error_policy(infd: Arc<InferenceDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(name = %infd.name_any(), error = %error, "reconcile failed");
    ctx.metrics.reconcile_failed(error);
    Action::requeue(ctx.backoff(&ObjectRef::from_obj(&*infd)))
}

/// Whether the stored status already equals `new`, ignoring `alertScaling` (the alerts
/// backend's, which `new` never carries).
fn same_status(old: Option<&InferenceDeploymentStatus>, new: &InferenceDeploymentStatus) -> bool {
    old.is_some_and(|old| {
        let mut old = old.clone();
        old.alert_scaling = None;
        old == *new
    })
}

fn is_true(status: &InferenceDeploymentStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

async fn patch_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &InferenceDeploymentStatus,
) -> Result<()> {
    let api: Api<InferenceDeployment> = Api::namespaced(client.clone(), namespace);
    let body = json!({
        "apiVersion": InferenceDeployment::api_version(&()),
        "kind": InferenceDeployment::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Publishes an event for every condition whose status changed.
async fn publish_transitions(
    ctx: &Context,
    infd: &InferenceDeployment,
    new: &InferenceDeploymentStatus,
) {
    let old = infd
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for c in &new.conditions {
        let before = old
            .iter()
            .find(|o| o.type_ == c.type_)
            .map(|o| o.status.as_str());
        if before == Some(c.status.as_str()) {
            continue;
        }
        let bad = match c.type_.as_str() {
            "Degraded" => c.status == "True",
            "Progressing" => false,
            // Not-yet-true conditions on a fresh object are expected, not warnings.
            _ => c.status == "False" && before.is_some() && c.reason != "Disabled",
        };
        let event = Event {
            type_: if bad {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: c.reason.clone(),
            note: Some(
                format!("{}={}: {}", c.type_, c.status, c.message)
                    .chars()
                    .take(1000)
                    .collect(),
            ),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &infd.object_ref(&())).await {
            warn!(error = %e, "publishing an event failed");
        }
    }
}

/// Runtime settings of the controller.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Most reconciles in flight (0: unbounded).
    pub concurrency: u16,
}

/// Runs the controller until the stream ends (shutdown signal).
pub async fn run(ctx: Arc<Context>, config: RunConfig) {
    let client = ctx.client.clone();
    let (infds, deployments, services, hpas, config_maps) = match &config.namespace {
        Some(ns) => (
            Api::<InferenceDeployment>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
            Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns),
            Api::<ConfigMap>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    // Children carry this label; watching only them keeps the caches small.
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=candela-operator");
    let capabilities_changed = capability_changes(Arc::clone(&ctx));
    Controller::new(infds, watcher::Config::default().any_semantic())
        .with_config(ControllerConfig::default().concurrency(config.concurrency))
        .owns(deployments, owned.clone())
        .owns(services, owned.clone())
        .owns(hpas, owned.clone())
        .owns(config_maps, owned)
        .reconcile_all_on(capabilities_changed)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(name = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile loop error"),
            }
        })
        .await;
    info!("controller stopped");
}

#[cfg(test)]
mod tests;

/// A stream that yields whenever the set of installed third-party CRDs changes.
fn capability_changes(ctx: Arc<Context>) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(ctx, |ctx| async move {
        loop {
            tokio::time::sleep(ctx.capabilities.ttl()).await;
            match ctx.capabilities.refresh(&ctx.client).await {
                Ok(true) => {
                    info!("installed third-party CRDs changed; reconciling everything");
                    return Some(((), ctx));
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "API discovery failed"),
            }
        }
    })
}
