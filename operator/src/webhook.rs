//! The `alerts` autoscaling backend: an Alertmanager webhook receiver
//! (`POST /alertmanager`) that scales an InferenceDeployment through its scale
//! subresource when the operator's own alerts fire for it.
//!
//! A firing pressure alert (queueing, KV cache nearly full, swapping, slow TTFT) adds
//! `step` replicas up to `maxReplicas`; a notification in which all of them are resolved
//! removes `step` down to `minReplicas`. Consecutive changes are at least `cooldownSeconds`
//! apart; the time of the last change is kept in an annotation on the custom resource, so
//! the cooldown survives operator restarts and leader changes.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use crate::Result;
use crate::controller::apply::MANAGER;
use crate::crd::{AutoscalingBackend, InferenceDeployment};

/// Alerts that mean "this InferenceDeployment needs more replicas".
pub const SCALE_UP_ALERTS: [&str; 4] = [
    "CandelaRequestsWaiting",
    "CandelaKVCacheNearlyFull",
    "CandelaSequencesSwapped",
    "CandelaTTFTHigh",
];

/// Annotation holding the RFC 3339 time of the last alert-driven scale change.
pub const LAST_SCALE_ANNOTATION: &str = "candela.dev/alerts-last-scale";

/// The parts of Alertmanager's webhook payload the receiver reads.
#[derive(Clone, Debug, Deserialize)]
pub struct Payload {
    /// Alerts of the notification.
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Clone, Debug, Deserialize)]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    /// The alert's labels (the rules set `namespace` and `inference_deployment`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// For each (namespace, name) the payload mentions: whether a scale-up alert is firing.
pub fn pressure_by_target(payload: &Payload) -> BTreeMap<(String, String), bool> {
    let mut targets: BTreeMap<(String, String), bool> = BTreeMap::new();
    for alert in &payload.alerts {
        let Some(alertname) = alert.labels.get("alertname") else {
            continue;
        };
        if !SCALE_UP_ALERTS.contains(&alertname.as_str()) {
            continue;
        }
        let (Some(ns), Some(name)) = (
            alert.labels.get("namespace"),
            alert.labels.get("inference_deployment"),
        ) else {
            continue;
        };
        let firing = targets.entry((ns.clone(), name.clone())).or_insert(false);
        *firing |= alert.status == "firing";
    }
    targets
}

/// The replica count to set, or `None` to leave it.
pub fn decide(infd: &InferenceDeployment, firing: bool, now: Timestamp) -> Option<i32> {
    let a = infd
        .spec
        .active_autoscaling()
        .filter(|a| a.backend == AutoscalingBackend::Alerts)?;
    let settings = a.alerts.clone().unwrap_or_default();
    let cooldown = SignedDuration::from_secs(i64::from(settings.cooldown_seconds.unwrap_or(300)));
    let last = infd
        .metadata
        .annotations
        .as_ref()
        .and_then(|m| m.get(LAST_SCALE_ANNOTATION));
    if let Some(last) = last.and_then(|t| t.parse::<Timestamp>().ok())
        && now.duration_since(last) < cooldown
    {
        return None;
    }
    let step = settings.step.unwrap_or(1);
    let current = infd.spec.replicas;
    let target = if firing {
        current.saturating_add(step).min(a.max_replicas)
    } else {
        current.saturating_sub(step).max(a.min_replicas)
    };
    (target != current).then_some(target)
}

/// Handles one notification: scales every InferenceDeployment it concerns.
/// Returns the (namespace, name, replicas) changes made.
///
/// # Errors
/// [`crate::Error::Kube`] when reading or scaling a custom resource fails.
pub async fn handle(client: &Client, payload: &Payload) -> Result<Vec<(String, String, i32)>> {
    let mut changes = Vec::new();
    for ((ns, name), firing) in pressure_by_target(payload) {
        let api: Api<InferenceDeployment> = Api::namespaced(client.clone(), &ns);
        let Some(infd) = api.get_opt(&name).await? else {
            continue;
        };
        let now = Timestamp::now();
        let Some(replicas) = decide(&infd, firing, now) else {
            continue;
        };
        let pp = PatchParams::default();
        api.patch_scale(
            &name,
            &pp,
            &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
        )
        .await?;
        let annotate =
            json!({ "metadata": { "annotations": { LAST_SCALE_ANNOTATION: now.to_string() } } });
        api.patch(
            &name,
            &PatchParams {
                field_manager: Some(MANAGER.into()),
                ..pp
            },
            &Patch::Merge(annotate),
        )
        .await?;
        info!(namespace = %ns, name = %name, replicas, firing, "scaled by alert");
        changes.push((ns, name, replicas));
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::infd;

    fn alerts(replicas: i32, annotation: Option<&str>) -> InferenceDeployment {
        let mut obj = infd(&format!(
            "spec: {{model: {{source: hf://org/m}}, replicas: {replicas}, \
             autoscaling: {{backend: alerts, minReplicas: 1, maxReplicas: 4, alerts: {{cooldownSeconds: 60, step: 2}}}}}}"
        ));
        if let Some(t) = annotation {
            obj.metadata.annotations = Some(BTreeMap::from([(
                LAST_SCALE_ANNOTATION.to_owned(),
                t.to_owned(),
            )]));
        }
        obj
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("timestamp")
    }

    #[test]
    fn firing_scales_up_by_step_within_max() {
        assert_eq!(decide(&alerts(1, None), true, at(0)), Some(3));
        assert_eq!(decide(&alerts(3, None), true, at(0)), Some(4));
        assert_eq!(decide(&alerts(4, None), true, at(0)), None);
    }

    #[test]
    fn resolved_scales_down_within_min() {
        assert_eq!(decide(&alerts(4, None), false, at(0)), Some(2));
        assert_eq!(decide(&alerts(2, None), false, at(0)), Some(1));
        assert_eq!(decide(&alerts(1, None), false, at(0)), None);
    }

    #[test]
    fn cooldown_blocks_changes() {
        let last = at(1_000).to_string();
        assert_eq!(decide(&alerts(1, Some(&last)), true, at(1_030)), None);
        assert_eq!(decide(&alerts(1, Some(&last)), true, at(1_061)), Some(3));
    }

    #[test]
    fn other_backends_are_ignored() {
        let obj = infd(
            "spec: {model: {source: hf://org/m}, autoscaling: {backend: hpa, maxReplicas: 4}}",
        );
        assert_eq!(decide(&obj, true, at(0)), None);
    }

    #[test]
    fn payload_groups_alerts_by_target() {
        let payload: Payload = serde_json::from_value(json!({ "alerts": [
            { "status": "resolved", "labels": { "alertname": "CandelaTTFTHigh", "namespace": "a", "inference_deployment": "x" } },
            { "status": "firing", "labels": { "alertname": "CandelaRequestsWaiting", "namespace": "a", "inference_deployment": "x" } },
            { "status": "resolved", "labels": { "alertname": "CandelaKVCacheNearlyFull", "namespace": "b", "inference_deployment": "y" } },
            { "status": "firing", "labels": { "alertname": "CandelaRequestErrors", "namespace": "c", "inference_deployment": "z" } },
            { "status": "firing", "labels": { "alertname": "CandelaRequestsWaiting" } },
        ]}))
        .expect("payload");
        let targets = pressure_by_target(&payload);
        assert_eq!(
            targets,
            BTreeMap::from([
                (("a".into(), "x".into()), true),
                (("b".into(), "y".into()), false)
            ])
        );
    }
}
