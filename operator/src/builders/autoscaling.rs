//! Autoscaler objects. Both target the InferenceDeployment's scale subresource (not the
//! Deployment), so `spec.replicas` stays the one source of truth the operator applies.
//!
//! Signals: `sum(vllm:num_requests_waiting)` per replica and `avg(vllm:kv_cache_usage_perc)`.
//! The hpa backend reads them per pod through prometheus-adapter (rules shipped in the
//! chart); the keda backend queries Prometheus directly.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Resource;
use serde_json::json;

use super::promql::{self, Scope};
use super::thirdparty::ThirdParty;
use super::{BuildConfig, Owner};
use crate::crd::{AutoscalingBackend, InferenceDeployment};

fn scale_target(owner: &Owner<'_>) -> CrossVersionObjectReference {
    CrossVersionObjectReference {
        api_version: Some(InferenceDeployment::api_version(&()).into_owned()),
        kind: InferenceDeployment::kind(&()).into_owned(),
        name: owner.name.clone(),
    }
}

pub(super) fn hpa(owner: &Owner<'_>) -> Option<HorizontalPodAutoscaler> {
    let a = owner
        .infd
        .spec
        .active_autoscaling()
        .filter(|a| a.backend == AutoscalingBackend::Hpa)?;
    let pods_metric = |name: &str, average: String| MetricSpec {
        type_: "Pods".into(),
        pods: Some(PodsMetricSource {
            metric: MetricIdentifier {
                name: name.into(),
                selector: None,
            },
            target: MetricTarget {
                type_: "AverageValue".into(),
                average_value: Some(Quantity(average)),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    };
    let mut metrics = vec![pods_metric(
        promql::ADAPTER_WAITING,
        a.targets.waiting_requests_per_replica.to_string(),
    )];
    if a.hpa
        .as_ref()
        .and_then(|h| h.scale_on_kv_cache_usage)
        .unwrap_or(true)
    {
        metrics.push(pods_metric(
            promql::ADAPTER_KV_USAGE,
            milli(a.targets.kv_cache_usage),
        ));
    }
    Some(HorizontalPodAutoscaler {
        metadata: owner.meta(owner.name.clone(), &Default::default()),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: scale_target(owner),
            min_replicas: Some(a.min_replicas.max(1)),
            max_replicas: a.max_replicas,
            metrics: Some(metrics),
            behavior: a.behavior.clone(),
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

pub(super) fn scaled_object(
    owner: &Owner<'_>,
    config: &BuildConfig,
) -> Option<kube::api::DynamicObject> {
    let a = owner
        .infd
        .spec
        .active_autoscaling()
        .filter(|a| a.backend == AutoscalingBackend::Keda)?;
    let scope = Scope::new(&owner.namespace, &owner.served_name);
    let server = a
        .prometheus_address
        .clone()
        .unwrap_or_else(|| config.prometheus_url.clone());
    let keda = a.keda.clone().unwrap_or_default();
    let target = scale_target(owner);
    let mut spec = json!({
        "scaleTargetRef": {
            "apiVersion": target.api_version,
            "kind": target.kind,
            "name": target.name,
        },
        "minReplicaCount": a.min_replicas,
        "maxReplicaCount": a.max_replicas,
        "pollingInterval": keda.polling_interval.unwrap_or(15),
        "cooldownPeriod": keda.cooldown_period.unwrap_or(300),
        "triggers": [
            {
                "type": "prometheus",
                "name": "waiting-requests",
                // AverageValue: KEDA divides the sum by the replica count.
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": server,
                    "query": scope.sum(promql::WAITING),
                    "threshold": a.targets.waiting_requests_per_replica.to_string(),
                },
            },
            {
                "type": "prometheus",
                "name": "kv-cache-usage",
                "metricType": "Value",
                "metadata": {
                    "serverAddress": server,
                    "query": scope.avg(promql::KV_USAGE),
                    "threshold": a.targets.kv_cache_usage.to_string(),
                },
            },
        ],
    });
    if let Some(behavior) = &a.behavior {
        spec["advanced"] = json!({ "horizontalPodAutoscalerConfig": { "behavior": behavior } });
    }
    let mut obj = ThirdParty::ScaledObject.object(&owner.name, &owner.namespace);
    obj.metadata = owner.meta(owner.name.clone(), &Default::default());
    obj.data = json!({ "spec": spec });
    Some(obj)
}

/// prometheus-adapter rules (its `config.yaml`, or the prometheus-adapter chart's
/// `rules.custom`) that serve the per-pod custom metrics the hpa backend's HPAs read:
/// [`promql::ADAPTER_WAITING`] from `vllm:num_requests_waiting` and
/// [`promql::ADAPTER_KV_USAGE`] from `vllm:kv_cache_usage_perc`. The series must carry the
/// `namespace` and `pod` labels (the ServiceMonitor's target labels).
pub fn adapter_rules() -> serde_json::Value {
    let rule = |series: &str, name: &str, aggregation: &str| {
        json!({
            "seriesQuery": format!("{{__name__=\"{series}\",namespace!=\"\",pod!=\"\"}}"),
            "resources": {
                "overrides": {
                    "namespace": { "resource": "namespace" },
                    "pod": { "resource": "pod" },
                },
            },
            "name": { "matches": format!("^{series}$"), "as": name },
            "metricsQuery": format!("{aggregation}(<<.Series>>{{<<.LabelMatchers>>}}) by (<<.GroupBy>>)"),
        })
    };
    json!({
        "rules": [
            // One engine per pod: the aggregation only drops the labels the custom
            // metrics API does not group by.
            rule(promql::WAITING, promql::ADAPTER_WAITING, "sum"),
            rule(promql::KV_USAGE, promql::ADAPTER_KV_USAGE, "max"),
        ]
    })
}

/// A fraction as a milli-quantity (`0.9` → `900m`), the exact form HPA compares.
fn milli(value: f64) -> String {
    format!("{}m", (value * 1000.0).round() as i64)
}
