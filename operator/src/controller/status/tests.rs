//! Status computation from Deployment states.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
};
use k8s_openapi::jiff::Timestamp;

use super::{ApplyOutcome, compute};
use crate::builders::thirdparty::ThirdParty;
use crate::crd::InferenceDeploymentStatus;
use crate::fixtures::infd;

fn deployment(generation: i64, status: DeploymentStatus) -> Deployment {
    let mut d = Deployment::default();
    d.metadata.generation = Some(generation);
    d.status = Some(status);
    d
}

fn available(replicas: i32) -> DeploymentStatus {
    DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        updated_replicas: Some(replicas),
        ready_replicas: Some(replicas),
        available_replicas: Some(replicas),
        ..DeploymentStatus::default()
    }
}

fn cond<'a>(status: &'a InferenceDeploymentStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_}"));
    (c.status.as_str(), c.reason.as_str())
}

const NOW: Timestamp = Timestamp::UNIX_EPOCH;

#[test]
fn available_deployment_is_ready_and_rolled_out() {
    let obj = infd("spec: {model: {source: hf://org/m}, engine: {maxNumSeqs: 50}, replicas: 2}");
    let status = compute(
        &obj,
        Some(&deployment(1, available(2))),
        &ApplyOutcome::default(),
        NOW,
    );
    assert_eq!(cond(&status, "Ready"), ("True", "ReplicasAvailable"));
    assert_eq!(cond(&status, "Progressing"), ("False", "RolloutComplete"));
    assert_eq!(cond(&status, "Degraded"), ("False", "AsExpected"));
    assert_eq!(cond(&status, "AutoscalingReady"), ("False", "Disabled"));
    assert_eq!(cond(&status, "MonitoringReady"), ("True", "Applied"));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.ready_replicas, 2);
    assert_eq!(
        status.capacity.and_then(|c| c.max_num_seqs_total),
        Some(100)
    );
    assert_eq!(status.served_model_name.as_deref(), Some("org/m"));
    assert_eq!(
        status.endpoint.as_deref(),
        Some("http://test.ns.svc:8000/v1")
    );
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1))
    );
}

#[test]
fn unavailable_deployment_is_not_ready_and_progressing() {
    let obj = infd("spec: {model: {source: hf://org/m}}");
    let d = deployment(
        1,
        DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(1),
            updated_replicas: Some(1),
            ..Default::default()
        },
    );
    let status = compute(&obj, Some(&d), &ApplyOutcome::default(), NOW);
    assert_eq!(cond(&status, "Ready"), ("False", "NoReplicasAvailable"));
    assert_eq!(cond(&status, "Progressing"), ("True", "RollingOut"));
}

#[test]
fn stale_deployment_generation_is_still_progressing() {
    let obj = infd("spec: {model: {source: hf://org/m}}");
    let status = compute(
        &obj,
        Some(&deployment(2, available(1))),
        &ApplyOutcome::default(),
        NOW,
    );
    assert_eq!(cond(&status, "Ready"), ("True", "ReplicasAvailable"));
    assert_eq!(cond(&status, "Progressing"), ("True", "RollingOut"));
}

#[test]
fn progress_deadline_makes_it_degraded() {
    let obj = infd("spec: {model: {source: hf://org/m}}");
    let mut s = available(0);
    s.conditions = Some(vec![DeploymentCondition {
        type_: "Progressing".into(),
        status: "False".into(),
        reason: Some("ProgressDeadlineExceeded".into()),
        ..DeploymentCondition::default()
    }]);
    let status = compute(&obj, Some(&deployment(1, s)), &ApplyOutcome::default(), NOW);
    assert_eq!(
        cond(&status, "Degraded"),
        ("True", "ProgressDeadlineExceeded")
    );
    assert_eq!(
        cond(&status, "Progressing"),
        ("False", "ProgressDeadlineExceeded")
    );
}

#[test]
fn replica_failure_makes_it_degraded_with_the_deployment_message() {
    let obj = infd("spec: {model: {source: hf://org/m}}");
    let mut s = available(0);
    s.conditions = Some(vec![DeploymentCondition {
        type_: "ReplicaFailure".into(),
        status: "True".into(),
        message: Some("exceeded quota: gpu".into()),
        ..DeploymentCondition::default()
    }]);
    let status = compute(&obj, Some(&deployment(1, s)), &ApplyOutcome::default(), NOW);
    assert_eq!(cond(&status, "Degraded"), ("True", "ReplicaFailure"));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.message == "exceeded quota: gpu")
    );
}

#[test]
fn missing_crds_are_named() {
    let obj =
        infd("spec: {model: {source: hf://org/m}, autoscaling: {backend: keda, maxReplicas: 3}}");
    let outcome = ApplyOutcome {
        missing: vec![ThirdParty::ServiceMonitor, ThirdParty::ScaledObject],
        ..ApplyOutcome::default()
    };
    let status = compute(&obj, Some(&deployment(1, available(1))), &outcome, NOW);
    assert_eq!(cond(&status, "MonitoringReady"), ("False", "CRDMissing"));
    assert_eq!(cond(&status, "AutoscalingReady"), ("False", "CRDMissing"));
    let messages: Vec<&str> = status
        .conditions
        .iter()
        .map(|c| c.message.as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("servicemonitors.monitoring.coreos.com")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("scaledobjects.keda.sh")),
        "{messages:?}"
    );
    assert_eq!(status.autoscaling.as_deref(), Some("keda 1-3"));
}

#[test]
fn hpa_without_metrics_is_not_ready() {
    let obj = infd("spec: {model: {source: hf://org/m}, autoscaling: {maxReplicas: 3}}");
    let hpa = HorizontalPodAutoscaler {
        status: Some(HorizontalPodAutoscalerStatus {
            conditions: Some(vec![HorizontalPodAutoscalerCondition {
                type_: "ScalingActive".into(),
                status: "False".into(),
                message: Some("unable to get metric candela_num_requests_waiting".into()),
                ..HorizontalPodAutoscalerCondition::default()
            }]),
            ..HorizontalPodAutoscalerStatus::default()
        }),
        ..HorizontalPodAutoscaler::default()
    };
    let outcome = ApplyOutcome {
        hpa: Some(hpa),
        ..ApplyOutcome::default()
    };
    let status = compute(&obj, Some(&deployment(1, available(1))), &outcome, NOW);
    assert_eq!(
        cond(&status, "AutoscalingReady"),
        ("False", "MetricsUnavailable")
    );
}

#[test]
fn invalid_spec_is_degraded_not_an_error() {
    let obj = infd("spec: {model: {source: hf://org/m}}");
    let outcome = ApplyOutcome {
        invalid_spec: Some("bad source".into()),
        ..ApplyOutcome::default()
    };
    let status = compute(&obj, None, &outcome, NOW);
    assert_eq!(cond(&status, "Degraded"), ("True", "InvalidSpec"));
    assert_eq!(cond(&status, "Ready"), ("False", "InvalidSpec"));
}

#[test]
fn transition_times_survive_unchanged_conditions() {
    let mut obj = infd("spec: {model: {source: hf://org/m}}");
    let first = compute(
        &obj,
        Some(&deployment(1, available(1))),
        &ApplyOutcome::default(),
        NOW,
    );
    obj.status = Some(first.clone());
    let later = Timestamp::from_second(1_000).expect("timestamp");
    let second = compute(
        &obj,
        Some(&deployment(1, available(1))),
        &ApplyOutcome::default(),
        later,
    );
    assert_eq!(
        first, second,
        "an unchanged state must produce an identical status"
    );
    let third = compute(
        &obj,
        Some(&deployment(1, available(0))),
        &ApplyOutcome::default(),
        later,
    );
    let ready = third
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.last_transition_time.0, later);
}

#[test]
fn alerts_backend_needs_its_prometheus_rule() {
    let spec = |rules: bool| {
        infd(&format!(
            "spec: {{model: {{source: hf://org/m}}, monitoring: {{rules: {{enabled: {rules}}}}}, \
             autoscaling: {{backend: alerts, maxReplicas: 3}}}}"
        ))
    };
    let d = deployment(1, available(1));
    let ok = compute(&spec(true), Some(&d), &ApplyOutcome::default(), NOW);
    assert_eq!(cond(&ok, "AutoscalingReady"), ("True", "AlertsWebhook"));
    assert_eq!(ok.autoscaling.as_deref(), Some("alerts 1-3"));
    assert_eq!(
        ok.alert_scaling, None,
        "the reconciler never writes the backend's state"
    );
    let off = compute(&spec(false), Some(&d), &ApplyOutcome::default(), NOW);
    assert_eq!(cond(&off, "AutoscalingReady"), ("False", "RulesDisabled"));
    let missing = ApplyOutcome {
        missing: vec![ThirdParty::PrometheusRule],
        ..ApplyOutcome::default()
    };
    let no_crd = compute(&spec(true), Some(&d), &missing, NOW);
    assert_eq!(cond(&no_crd, "AutoscalingReady"), ("False", "CRDMissing"));
    assert!(
        no_crd
            .conditions
            .iter()
            .any(|c| c.message.contains("crdgen rules")),
        "{:?}",
        no_crd.conditions
    );
}

#[test]
fn lora_adapters_are_listed_by_name() {
    let obj = infd(
        "spec: {model: {source: hf://org/m}, loraAdapters: [{name: sql, source: file:///a}, {name: chat, source: hf://org/c}]}",
    );
    let status = compute(&obj, None, &ApplyOutcome::default(), NOW);
    assert_eq!(
        status.lora_adapters,
        Some(vec!["sql".to_owned(), "chat".to_owned()])
    );
    let obj = infd("spec: {model: {source: hf://org/m}}");
    let status = compute(&obj, None, &ApplyOutcome::default(), NOW);
    assert_eq!(status.lora_adapters, None);
}
