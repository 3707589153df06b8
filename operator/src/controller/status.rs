//! Status computation: a pure function from the spec, the Deployment's real state and
//! what the apply step could and could not create, to the InferenceDeployment's status.
//!
//! Condition `lastTransitionTime`s are carried over from the previous status unless the
//! condition's `status` changes, so repeated reconciles do not churn the object.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::builders::{self, thirdparty::ThirdParty};
use crate::crd::{
    AutoscalingBackend, CapacityStatus, ConditionType, InferenceDeployment,
    InferenceDeploymentStatus,
};

/// What the apply step found out, beyond the Deployment itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApplyOutcome {
    /// Third-party kinds the spec wants but whose CRDs are not installed.
    pub missing: Vec<ThirdParty>,
    /// The applied HPA, with its status (hpa backend only).
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// The spec could not be turned into children; the message says why.
    pub invalid_spec: Option<String>,
}

/// One condition's new `status`, `reason` and `message`.
struct Cond {
    type_: ConditionType,
    status: bool,
    reason: &'static str,
    message: String,
}

/// Computes the status of `infd` from its Deployment (absent before the first apply) and
/// the apply outcome, at time `now`.
pub fn compute(
    infd: &InferenceDeployment,
    deployment: Option<&Deployment>,
    outcome: &ApplyOutcome,
    now: Timestamp,
) -> InferenceDeploymentStatus {
    let name = infd.metadata.name.clone().unwrap_or_default();
    let namespace = infd.metadata.namespace.clone().unwrap_or_default();
    let generation = infd.metadata.generation;
    let spec = &infd.spec;
    let d_status = deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let ready = d_status.ready_replicas.unwrap_or(0);
    let available = d_status.available_replicas.unwrap_or(0);
    let updated = d_status.updated_replicas.unwrap_or(0);
    let current = d_status.replicas.unwrap_or(0);
    let desired = spec.replicas;

    let deployment_condition = |type_: &str| {
        d_status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
    };
    let deadline_exceeded = deployment_condition("Progressing").is_some_and(|c| {
        c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    let replica_failure = deployment_condition("ReplicaFailure").filter(|c| c.status == "True");
    let deployment_generation_seen = match (
        deployment.and_then(|d| d.metadata.generation),
        d_status.observed_generation,
    ) {
        (Some(g), Some(o)) => o >= g,
        _ => false,
    };

    let mut conds = Vec::with_capacity(5);
    conds.push(match (&outcome.invalid_spec, deployment) {
        (Some(msg), _) => Cond {
            type_: ConditionType::Ready,
            status: false,
            reason: "InvalidSpec",
            message: msg.clone(),
        },
        (None, None) => Cond {
            type_: ConditionType::Ready,
            status: false,
            reason: "DeploymentMissing",
            message: "the engine Deployment does not exist yet".into(),
        },
        (None, Some(_)) if desired == 0 => Cond {
            type_: ConditionType::Ready,
            status: false,
            reason: "ScaledToZero",
            message: "spec.replicas is 0".into(),
        },
        (None, Some(_)) if available >= 1 => Cond {
            type_: ConditionType::Ready,
            status: true,
            reason: "ReplicasAvailable",
            message: format!("{available}/{desired} replicas available"),
        },
        (None, Some(_)) => Cond {
            type_: ConditionType::Ready,
            status: false,
            reason: "NoReplicasAvailable",
            message: format!("0/{desired} replicas available"),
        },
    });

    let rollout_done = deployment_generation_seen
        && updated == desired
        && current == desired
        && available == desired;
    conds.push(if deadline_exceeded {
        Cond {
            type_: ConditionType::Progressing,
            status: false,
            reason: "ProgressDeadlineExceeded",
            message: "the engine Deployment exceeded its progress deadline".into(),
        }
    } else if deployment.is_some() && rollout_done {
        Cond {
            type_: ConditionType::Progressing,
            status: false,
            reason: "RolloutComplete",
            message: format!("{desired} replicas up to date"),
        }
    } else {
        Cond {
            type_: ConditionType::Progressing,
            status: outcome.invalid_spec.is_none(),
            reason: if outcome.invalid_spec.is_some() {
                "InvalidSpec"
            } else {
                "RollingOut"
            },
            message: format!("{updated}/{desired} replicas updated, {available} available"),
        }
    });

    conds.push(if let Some(msg) = &outcome.invalid_spec {
        Cond {
            type_: ConditionType::Degraded,
            status: true,
            reason: "InvalidSpec",
            message: msg.clone(),
        }
    } else if deadline_exceeded {
        Cond {
            type_: ConditionType::Degraded,
            status: true,
            reason: "ProgressDeadlineExceeded",
            message: "the rollout is stuck: check the engine pods' events and logs".into(),
        }
    } else if let Some(c) = replica_failure {
        Cond {
            type_: ConditionType::Degraded,
            status: true,
            reason: "ReplicaFailure",
            message: c
                .message
                .clone()
                .unwrap_or_else(|| "pods cannot be created".into()),
        }
    } else {
        Cond {
            type_: ConditionType::Degraded,
            status: false,
            reason: "AsExpected",
            message: String::new(),
        }
    });

    conds.push(autoscaling_condition(infd, outcome));
    conds.push(monitoring_condition(infd, outcome));

    let previous = infd
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let conditions = conds
        .into_iter()
        .map(|c| to_condition(c, previous, generation, now))
        .collect();

    let served = spec.served_name().ok();
    InferenceDeploymentStatus {
        observed_generation: generation,
        replicas: current,
        ready_replicas: ready,
        selector: Some(builders::selector_string(&name)),
        endpoint: Some(builders::endpoint(&name, &namespace, spec.tls.is_some())),
        served_model_name: served,
        autoscaling: Some(autoscaling_summary(infd)),
        lora_adapters: spec
            .lora_adapters
            .as_ref()
            .map(|list| list.iter().map(|a| a.name.clone()).collect()),
        capacity: Some(CapacityStatus {
            max_num_seqs_per_replica: spec.engine.max_num_seqs,
            max_num_seqs_total: spec
                .engine
                .max_num_seqs
                .map(|n| i64::from(n) * i64::from(ready)),
        }),
        alert_scaling: None,
        conditions,
    }
}

/// `keda 1-8`, `hpa 2-4`, `alerts 1-3` or `off`.
pub fn autoscaling_summary(infd: &InferenceDeployment) -> String {
    match infd.spec.active_autoscaling() {
        Some(a) => format!(
            "{} {}-{}",
            a.backend.as_str(),
            a.min_replicas,
            a.max_replicas
        ),
        None => "off".into(),
    }
}

fn autoscaling_condition(infd: &InferenceDeployment, outcome: &ApplyOutcome) -> Cond {
    let t = ConditionType::AutoscalingReady;
    let Some(a) = infd.spec.active_autoscaling() else {
        return Cond {
            type_: t,
            status: false,
            reason: "Disabled",
            message: "autoscaling is not enabled".into(),
        };
    };
    match a.backend {
        AutoscalingBackend::Keda if outcome.missing.contains(&ThirdParty::ScaledObject) => Cond {
            type_: t,
            status: false,
            reason: "CRDMissing",
            message: format!("{} is not installed: install KEDA or use backend hpa", ThirdParty::ScaledObject.crd_name()),
        },
        AutoscalingBackend::Keda => {
            Cond { type_: t, status: true, reason: "ScaledObjectApplied", message: "KEDA scales spec.replicas".into() }
        }
        AutoscalingBackend::Hpa => {
            let scaling_active = outcome
                .hpa
                .as_ref()
                .and_then(|h| h.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "ScalingActive"));
            match scaling_active {
                Some(c) if c.status == "False" => Cond {
                    type_: t,
                    status: false,
                    reason: "MetricsUnavailable",
                    message: c.message.clone().unwrap_or_else(|| "the HPA cannot read its metrics".into()),
                },
                _ => Cond { type_: t, status: true, reason: "HPAApplied", message: "the HPA scales spec.replicas".into() },
            }
        }
        AutoscalingBackend::Alerts if !infd.spec.monitoring.rules.enabled => Cond {
            type_: t,
            status: false,
            reason: "RulesDisabled",
            message: "the alerts backend scales on the scale-up alerts of this InferenceDeployment's PrometheusRule: set spec.monitoring.rules.enabled=true".into(),
        },
        AutoscalingBackend::Alerts if outcome.missing.contains(&ThirdParty::PrometheusRule) => Cond {
            type_: t,
            status: false,
            reason: "CRDMissing",
            message: format!("{} is not installed, so the scale-up alerts are not created: install prometheus-operator, or load the rules `crdgen rules` prints into Prometheus", ThirdParty::PrometheusRule.crd_name()),
        },
        AutoscalingBackend::Alerts => Cond {
            type_: t,
            status: true,
            reason: "AlertsWebhook",
            message: "the PrometheusRule carries the scale-up alerts; Alertmanager must route them to the operator's webhook (POST /alertmanager, --webhook-listen)".into(),
        },
    }
}

fn monitoring_condition(infd: &InferenceDeployment, outcome: &ApplyOutcome) -> Cond {
    let t = ConditionType::MonitoringReady;
    let mon = &infd.spec.monitoring;
    if !mon.service_monitor.enabled && !mon.rules.enabled && !mon.dashboards.enabled {
        return Cond {
            type_: t,
            status: false,
            reason: "Disabled",
            message: "all monitoring is disabled".into(),
        };
    }
    let missing: Vec<String> = outcome
        .missing
        .iter()
        .filter(|k| **k != ThirdParty::ScaledObject)
        .map(|k| format!("{} ({} skipped)", k.crd_name(), k.kind()))
        .collect();
    if missing.is_empty() {
        Cond {
            type_: t,
            status: true,
            reason: "Applied",
            message: "monitoring objects are applied".into(),
        }
    } else {
        Cond {
            type_: t,
            status: false,
            reason: "CRDMissing",
            message: format!("not installed: {}", missing.join(", ")),
        }
    }
}

fn to_condition(
    c: Cond,
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if c.status { "True" } else { "False" };
    let type_ = c.type_.as_str();
    let last_transition_time = previous
        .iter()
        .find(|p| p.type_ == type_ && p.status == status)
        .map(|p| p.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: c.reason.into(),
        message: c.message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests;
