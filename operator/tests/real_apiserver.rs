//! Tests on a real kube-apiserver + etcd + kube-controller-manager (see
//! `common/testenv.rs`): the generated CRD and its validation rules, the reconciler running
//! under the operator's own ClusterRole, and leader election.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use candela_operator::builders::BuildConfig;
use candela_operator::builders::thirdparty::ThirdParty;
use candela_operator::controller::{self, Context, RunConfig};
use candela_operator::crd::InferenceDeployment;
use candela_operator::leader::{LeaderElector, LeaseConfig};
use candela_operator::metrics::Metrics;

use common::{testenv, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn data(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

#[tokio::test]
async fn crd_is_accepted_and_the_schema_validates_examples() {
    let env = testenv::shared();
    let admin = env.admin().await;
    common::install_candela_crd(&admin).await;
    let ns = "validation";
    common::create_namespace(&admin, ns).await;
    let api = common::dynamic_infds(&admin, ns);

    let mut good = 0;
    // The test specs, and the shipped examples (deploy/examples/) in a namespace of their
    // own (some share names with the specs): schema and CEL rules on a real apiserver.
    let examples_ns = "validation-examples";
    common::create_namespace(&admin, examples_ns).await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    for (dir, ns) in [(data("specs"), ns), (examples, examples_ns)] {
        let api = common::dynamic_infds(&admin, ns);
        for entry in std::fs::read_dir(&dir).expect("examples dir") {
            let mut obj = common::load_dynamic(&entry.expect("entry").path());
            obj.metadata.namespace = Some(ns.into());
            let name = obj.name_any();
            api.create(&PostParams::default(), &obj)
                .await
                .unwrap_or_else(|e| panic!("good example {name} rejected: {e}"));
            good += 1;
        }
    }
    assert!(good >= 9, "{good} good examples");

    let mut bad = 0;
    for entry in std::fs::read_dir(data("invalid")).expect("invalid dir") {
        let path = entry.expect("entry").path();
        let mut obj = common::load_dynamic(&path);
        obj.metadata.namespace = Some(ns.into());
        let expect = obj
            .annotations()
            .get("test.candela.dev/expect")
            .cloned()
            .expect("expect annotation");
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => panic!(
                "{} was accepted, expected rejection with {expect:?}",
                path.display()
            ),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{}: {status:?}", path.display());
                assert!(
                    status.message.contains(&expect),
                    "{}: message {:?} lacks {expect:?}",
                    path.display(),
                    status.message
                );
            }
            Err(e) => panic!("{}: unexpected error {e}", path.display()),
        }
        bad += 1;
    }
    assert!(bad >= 8);

    // Defaults are applied by the schema: the stored object has them.
    let stored = Api::<InferenceDeployment>::namespaced(admin.clone(), ns)
        .get("smollm2")
        .await
        .expect("stored");
    assert_eq!(stored.spec.replicas, 1);
    assert_eq!(stored.spec.resources.gpu_resource_name, "nvidia.com/gpu");
    assert!(stored.spec.monitoring.service_monitor.enabled);
}

fn condition(infd: &InferenceDeployment, type_: &str) -> Option<(String, String, String)> {
    let c = infd
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_condition(
    api: &Api<InferenceDeployment>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> InferenceDeployment {
    wait_for(
        &format!("{name} {type_}={status} ({reason})"),
        WAIT,
        || async {
            let infd = api.get(name).await.ok()?;
            let (s, r, _) = condition(&infd, type_)?;
            (s == status && r == reason).then_some(infd)
        },
    )
    .await
}

#[tokio::test]
async fn operator_reconciles_children_under_its_cluster_role() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            std::env::var("RUST_LOG")
                .unwrap_or_else(|_| "candela_operator=debug,kube_runtime=info".into()),
        )
        .try_init();
    let env = testenv::shared();
    let admin = env.admin().await;
    common::install_candela_crd(&admin).await;
    common::grant_operator_rbac(&admin, "candela-system").await;
    let ns = "reconcile";
    common::create_namespace(&admin, ns).await;

    let operator = env.operator().await;
    let forbidden = Api::<Secret>::all(operator.clone())
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(forbidden, Err(kube::Error::Api(ref s)) if s.code == 403),
        "operator must not be admin: {forbidden:?}"
    );

    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(
        Context::new(
            operator.clone(),
            BuildConfig::default(),
            Arc::clone(&metrics),
        )
        .with_capability_ttl(Duration::from_secs(1)),
    );
    let run = tokio::spawn(controller::run(
        ctx,
        RunConfig {
            namespace: None,
            concurrency: 4,
        },
    ));

    // 1. A fresh InferenceDeployment gets every child, owned by it.
    let infds: Api<InferenceDeployment> = Api::namespaced(admin.clone(), ns);
    let mut obj = common::load_dynamic(&data("specs/minimal.yaml"));
    obj.metadata.namespace = Some(ns.into());
    common::dynamic_infds(&admin, ns)
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    let name = "smollm2";
    let uid = infds.get(name).await.expect("get").uid().expect("uid");

    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    let deployment = wait_for("Deployment", WAIT, || async {
        deployments.get_opt(name).await.ok().flatten()
    })
    .await;
    assert!(common::owned_by(&deployment, &uid));
    let services: Api<Service> = Api::namespaced(admin.clone(), ns);
    let service = wait_for("Service", WAIT, || async {
        services.get_opt(name).await.ok().flatten()
    })
    .await;
    assert!(common::owned_by(&service, &uid));
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    let dashboards_name = format!("{name}-dashboards");
    let dashboards = wait_for("dashboards ConfigMap", WAIT, || async {
        config_maps.get_opt(&dashboards_name).await.ok().flatten()
    })
    .await;
    assert!(common::owned_by(&dashboards, &uid));
    assert_eq!(
        dashboards
            .labels()
            .get("grafana_dashboard")
            .map(String::as_str),
        Some("1")
    );

    // 2. Missing ServiceMonitor/PrometheusRule CRDs give a condition, not a crash; the pods
    //    are Pending (no kubelet), so the CR is not Ready.
    let infd = wait_condition(&infds, name, "MonitoringReady", "False", "CRDMissing").await;
    let (_, _, message) = condition(&infd, "MonitoringReady").expect("condition");
    assert!(
        message.contains("servicemonitors.monitoring.coreos.com"),
        "{message}"
    );
    assert!(
        message.contains("prometheusrules.monitoring.coreos.com"),
        "{message}"
    );
    let infd = wait_condition(&infds, name, "Ready", "False", "NoReplicasAvailable").await;
    let status = infd.status.expect("status");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/instance=smollm2,app.kubernetes.io/name=candela")
    );

    // 2b. Asking for KEDA without its CRD gives an AutoscalingReady condition naming it.
    let keda = json!({ "spec": { "autoscaling": { "backend": "keda", "minReplicas": 1, "maxReplicas": 3 } } });
    infds
        .patch(name, &PatchParams::default(), &Patch::Merge(keda))
        .await
        .expect("keda");
    let infd = wait_condition(&infds, name, "AutoscalingReady", "False", "CRDMissing").await;
    let (_, _, message) = condition(&infd, "AutoscalingReady").expect("condition");
    assert!(message.contains("scaledobjects.keda.sh"), "{message}");

    // 3. Pods become ready (as a kubelet would report): the real Deployment and ReplicaSet
    //    controllers mark the Deployment available and the CR becomes Ready.
    wait_for("pods created by the ReplicaSet", WAIT, || async {
        (common::make_pods_ready(&admin, ns, name).await > 0).then_some(())
    })
    .await;
    let infd = wait_condition(&infds, name, "Ready", "True", "ReplicasAvailable").await;
    assert_eq!(infd.status.as_ref().map(|s| s.ready_replicas), Some(1));
    wait_condition(&infds, name, "Progressing", "False", "RolloutComplete").await;

    // 4. A spec change rolls the Deployment.
    infds
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "engine": { "maxNumSeqs": 64 } } })),
        )
        .await
        .expect("patch");
    wait_for("Deployment args updated", WAIT, || async {
        let d = deployments.get(name).await.ok()?;
        let args = d.spec?.template.spec?.containers.first()?.args.clone()?;
        args.iter().any(|a| a == "--max-num-seqs=64").then_some(())
    })
    .await;
    wait_for("status observes generation 3", WAIT, || async {
        let infd = infds.get(name).await.ok()?;
        (infd.status?.observed_generation == Some(3)).then_some(())
    })
    .await;

    // 5. The scale subresource (what HPA and KEDA use) drives the Deployment's replicas.
    let scale = infds.get_scale(name).await.expect("scale");
    assert_eq!(
        scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .as_deref(),
        Some("app.kubernetes.io/instance=smollm2,app.kubernetes.io/name=candela")
    );
    infds
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 2 } })),
        )
        .await
        .expect("scale");
    wait_for("Deployment scaled to 2", WAIT, || async {
        (deployments.get(name).await.ok()?.spec?.replicas == Some(2)).then_some(())
    })
    .await;

    // 6. Once the third-party CRDs are installed, the operator discovers them and creates
    //    the ServiceMonitor and PrometheusRule.
    for kind in ThirdParty::ALL {
        if kind == ThirdParty::Certificate {
            // The real one (another test relies on its schema).
            common::install_cert_manager_crd(&admin).await;
        } else {
            common::apply_crd(&admin, &common::stand_in_crd(kind)).await;
        }
    }
    for kind in [ThirdParty::ServiceMonitor, ThirdParty::PrometheusRule] {
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &kind.api_resource());
        let child = wait_for(kind.kind(), WAIT, || async {
            api.get_opt(name).await.ok().flatten()
        })
        .await;
        assert!(common::owned_by(&child, &uid));
    }
    wait_condition(&infds, name, "MonitoringReady", "True", "Applied").await;

    // 7. Autoscaling: keda creates a ScaledObject on the CR's scale subresource; switching
    //    to hpa replaces it with an HPA.
    let keda = json!({ "spec": { "autoscaling": { "backend": "keda", "minReplicas": 1, "maxReplicas": 3 } } });
    infds
        .patch(name, &PatchParams::default(), &Patch::Merge(keda))
        .await
        .expect("keda");
    let scaled_objects: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), ns, &ThirdParty::ScaledObject.api_resource());
    let so = wait_for("ScaledObject", WAIT, || async {
        scaled_objects.get_opt(name).await.ok().flatten()
    })
    .await;
    assert_eq!(
        so.data["spec"]["scaleTargetRef"]["kind"],
        "InferenceDeployment"
    );
    wait_condition(
        &infds,
        name,
        "AutoscalingReady",
        "True",
        "ScaledObjectApplied",
    )
    .await;
    infds
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "autoscaling": { "backend": "hpa" } } })),
        )
        .await
        .expect("hpa");
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(admin.clone(), ns);
    let hpa = wait_for("HPA", WAIT, || async {
        hpas.get_opt(name).await.ok().flatten()
    })
    .await;
    assert_eq!(
        hpa.spec.as_ref().map(|s| s.scale_target_ref.kind.as_str()),
        Some("InferenceDeployment")
    );
    wait_for("ScaledObject deleted", WAIT, || async {
        scaled_objects
            .get_opt(name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        infds
            .get(name)
            .await
            .expect("get")
            .status
            .and_then(|s| s.autoscaling)
            .as_deref(),
        Some("hpa 1-3")
    );

    // 8. Events were published for the condition transitions.
    let events: Api<Event> = Api::namespaced(admin.clone(), ns);
    let list = events.list(&ListParams::default()).await.expect("events");
    assert!(
        list.items
            .iter()
            .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)),
        "no events for {name}"
    );

    // 9. Deleting the CR leaves nothing it created (garbage collector).
    infds
        .delete(name, &DeleteParams::background())
        .await
        .expect("delete");
    wait_for(
        "children garbage-collected",
        Duration::from_secs(90),
        || async {
            let gone = deployments.get_opt(name).await.ok()?.is_none()
                && Api::<Service>::namespaced(admin.clone(), ns)
                    .get_opt(name)
                    .await
                    .ok()?
                    .is_none()
                && Api::<ConfigMap>::namespaced(admin.clone(), ns)
                    .get_opt(&format!("{name}-dashboards"))
                    .await
                    .ok()?
                    .is_none()
                && hpas.get_opt(name).await.ok()?.is_none();
            gone.then_some(())
        },
    )
    .await;

    let text = metrics.encode();
    assert!(
        !text.contains("candela_operator_reconciliations_total 0"),
        "{text}"
    );
    run.abort();
}

#[tokio::test]
async fn leader_election_hands_over_an_expired_lease() {
    let env = testenv::shared();
    let admin = env.admin().await;
    common::create_namespace(&admin, "lease-test").await;
    let config = |identity: &str| LeaseConfig {
        namespace: "lease-test".into(),
        name: "candela-operator".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
    };
    let a = LeaderElector::new(admin.clone(), config("a"));
    let b = LeaderElector::new(admin.clone(), config("b"));
    assert!(a.try_acquire_or_renew().await.expect("a"));
    assert!(
        !b.try_acquire_or_renew().await.expect("b"),
        "b must not take a live lease"
    );
    assert!(a.try_acquire_or_renew().await.expect("a renews"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        b.try_acquire_or_renew()
            .await
            .expect("b takes the expired lease")
    );
    assert!(!a.try_acquire_or_renew().await.expect("a lost it"));
}

/// The webhook and the alerts scaler on the real apiserver, under the operator's RBAC:
/// eight simultaneous deliveries of the same firing notification (as from an
/// Alertmanager cluster) make exactly one step; a resend changes nothing (not even the
/// resourceVersion); a stale `resolved` changes nothing; the state and the step are in
/// `status.alertScaling` and in an event.
#[tokio::test]
async fn alertmanager_webhook_serializes_concurrent_deliveries_under_rbac() {
    use axum::body::Body;
    use candela_operator::alerts::Scaler;
    use candela_operator::webhook::{WebhookState, router};
    use kube::runtime::events::Reporter;
    use tower::ServiceExt;

    let env = testenv::shared();
    let admin = env.admin().await;
    common::install_candela_crd(&admin).await;
    common::grant_operator_rbac(&admin, "candela-system").await;
    let ns = "alerts";
    common::create_namespace(&admin, ns).await;
    let infds: Api<InferenceDeployment> = Api::namespaced(admin.clone(), ns);
    let obj: InferenceDeployment = serde_json::from_value(json!({
        "apiVersion": "candela.dev/v1alpha1", "kind": "InferenceDeployment",
        "metadata": { "name": "chat", "namespace": ns },
        "spec": {
            "model": { "source": "hf://org/chat" },
            "autoscaling": { "backend": "alerts", "minReplicas": 1, "maxReplicas": 3, "alerts": { "cooldownSeconds": 3600, "step": 1 } },
        },
    }))
    .expect("object");
    infds
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");

    let operator = env.operator().await;
    let metrics = Arc::new(Metrics::default());
    let reporter = Reporter {
        controller: "candela-operator".into(),
        instance: None,
    };
    let state = WebhookState {
        token: Some(Arc::from("webhook-secret")),
        scaler: Some(Scaler::new(operator, reporter, Arc::clone(&metrics))),
        metrics: Arc::clone(&metrics),
    };
    let labels = json!({ "alertname": "CandelaScaleUpQueueBacklog", "namespace": ns, "inference_deployment": "chat", "candela_autoscaling": "scale-up", "severity": "none" });
    let notify = |status: &str, starts: &str, ends: &str| {
        let body = json!({ "version": "4", "status": status, "receiver": "candela-operator", "alerts": [{
            "status": status, "labels": labels, "startsAt": starts, "endsAt": ends,
        }]});
        http::Request::post("/alertmanager")
            .header("content-type", "application/json")
            .header("authorization", "Bearer webhook-secret")
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    let post = |request: http::Request<Body>| {
        let state = state.clone();
        async move {
            let response = router(state).oneshot(request).await.expect("response");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
            (status.as_u16(), value)
        }
    };
    let zero = "0001-01-01T00:00:00Z";
    let start = "2026-01-01T10:00:00Z";

    let answers =
        futures::future::join_all((0..8).map(|_| post(notify("firing", start, zero)))).await;
    let results: Vec<String> = answers
        .iter()
        .map(|(code, v)| {
            assert_eq!(*code, 200, "{v}");
            v["targets"][0]["result"]
                .as_str()
                .expect("result")
                .to_owned()
        })
        .collect();
    assert_eq!(
        results.iter().filter(|r| *r == "scaled_up").count(),
        1,
        "exactly one step from eight simultaneous deliveries: {results:?}"
    );
    assert!(
        results.iter().all(|r| r == "scaled_up" || r == "unchanged"),
        "{results:?}"
    );
    let infd = infds.get("chat").await.expect("get");
    assert_eq!(infd.spec.replicas, 2);
    let state_now = infd
        .status
        .as_ref()
        .and_then(|s| s.alert_scaling.clone())
        .expect("status.alertScaling");
    assert_eq!(
        (state_now.last_scale_from, state_now.last_scale_to),
        (Some(1), Some(2))
    );
    assert_eq!(state_now.alerts.len(), 1);
    let version = infd.metadata.resource_version.clone();

    // A resend, and a stale resolved of an older episode: nothing changes at all.
    let (code, answer) = post(notify("firing", start, zero)).await;
    assert_eq!(code, 200);
    assert_eq!(answer["targets"][0]["result"], "unchanged", "{answer}");
    assert_eq!(answer["targets"][0]["alerts"]["unchanged"], 1, "{answer}");
    let (code, answer) = post(notify(
        "resolved",
        "2026-01-01T09:00:00Z",
        "2026-01-01T09:30:00Z",
    ))
    .await;
    assert_eq!(code, 200);
    assert_eq!(answer["targets"][0]["alerts"]["stale"], 1, "{answer}");
    let infd = infds.get("chat").await.expect("get");
    assert_eq!(
        infd.metadata.resource_version, version,
        "replays leave the object untouched"
    );
    assert_eq!(infd.spec.replicas, 2);

    let events: Api<Event> = Api::namespaced(admin.clone(), ns);
    let list = events.list(&ListParams::default()).await.expect("events");
    let scaled: Vec<_> = list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ScaledUp"))
        .collect();
    assert_eq!(scaled.len(), 1, "{scaled:?}");
    assert!(
        scaled[0].note.as_deref().is_some_and(
            |n| n.starts_with("ScaledUp 1 -> 2: CandelaScaleUpQueueBacklog firing since")
        ),
        "{:?}",
        scaled[0].note
    );
    let text = metrics.encode();
    assert!(
        text.contains("candela_operator_alert_scaling_decisions_total{result=\"scaled_up\"} 1"),
        "{text}"
    );
}

/// LoRA adapters on the real apiserver, under the operator's RBAC: the list lands in the
/// `<name>-lora-adapters` ConfigMap and the engine starts with `--enable-lora`; editing the
/// list rewrites the ConfigMap and leaves the Deployment's template (and generation)
/// untouched, so no pod restarts; a bad list is an InvalidSpec condition that keeps the last
/// good ConfigMap; removing the field turns LoRA off and deletes the ConfigMap.
#[tokio::test]
async fn lora_adapter_edits_update_the_config_map_without_rolling_pods() {
    use candela_contract::sidecar::LoraAdapterList;

    let env = testenv::shared();
    let admin = env.admin().await;
    common::install_candela_crd(&admin).await;
    common::grant_operator_rbac(&admin, "candela-system").await;
    let ns = "lora";
    common::create_namespace(&admin, ns).await;
    let operator = env.operator().await;
    let ctx = Arc::new(
        Context::new(
            operator,
            BuildConfig::default(),
            Arc::new(Metrics::default()),
        )
        .with_capability_ttl(Duration::from_secs(1)),
    );
    let run = tokio::spawn(controller::run(
        ctx,
        RunConfig {
            namespace: Some(ns.into()),
            concurrency: 2,
        },
    ));

    let infds: Api<InferenceDeployment> = Api::namespaced(admin.clone(), ns);
    let name = "chat";
    let obj: InferenceDeployment = serde_json::from_value(json!({
        "apiVersion": "candela.dev/v1alpha1", "kind": "InferenceDeployment",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "model": { "source": "hf://org/base" },
            "resources": { "gpus": 0 },
            "engine": { "maxLoras": 2 },
            "apiKeySecretRef": { "name": "chat-api", "key": "key" },
            "loraAdapters": [
                { "name": "sql", "source": "hf://org/sql-lora" },
                { "name": "support", "source": "file:///adapters/support" },
            ],
        },
    }))
    .expect("object");
    infds
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    let uid = infds.get(name).await.expect("get").uid().expect("uid");

    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    let cm_name = format!("{name}-lora-adapters");
    let listed = |cm: &ConfigMap| -> Vec<(String, String)> {
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get("adapters.json"))
            .expect("adapters.json");
        LoraAdapterList::parse(text)
            .expect("the sidecar can read it")
            .adapters
            .into_iter()
            .map(|a| (a.name, a.path))
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    let cm = wait_for("LoRA ConfigMap", WAIT, || async {
        config_maps.get_opt(&cm_name).await.ok().flatten()
    })
    .await;
    assert!(common::owned_by(&cm, &uid));
    assert_eq!(
        listed(&cm),
        pairs(&[
            ("sql", "hf://org/sql-lora"),
            ("support", "/adapters/support")
        ])
    );

    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    let deployment = wait_for("Deployment", WAIT, || async {
        deployments.get_opt(name).await.ok().flatten()
    })
    .await;
    let template = deployment.spec.clone().expect("spec").template;
    let pod = template.spec.clone().expect("pod");
    let engine_args = pod.containers[0].args.clone().unwrap_or_default();
    assert!(
        engine_args.contains(&"--enable-lora".to_owned())
            && engine_args.contains(&"--max-loras=2".to_owned()),
        "{engine_args:?}"
    );
    assert!(
        !engine_args.iter().any(|a| a.contains("sql")),
        "{engine_args:?}"
    );
    let sidecar_args = pod.containers[1].args.clone().unwrap_or_default();
    assert!(
        sidecar_args.contains(&"--lora-adapters-file=/etc/candela/lora/adapters.json".to_owned()),
        "{sidecar_args:?}"
    );
    let sidecar_env = pod.containers[1].env.clone().unwrap_or_default();
    assert!(
        sidecar_env.iter().any(|e| e.name == "CANDELA_API_KEY"),
        "{sidecar_env:?}"
    );
    let status_lists = |want: &'static [&'static str]| {
        let infds = infds.clone();
        async move {
            wait_for(&format!("status.loraAdapters {want:?}"), WAIT, || async {
                let infd = infds.get(name).await.ok()?;
                let generation = infd.metadata.generation;
                let status = infd.status?;
                (status.observed_generation == generation
                    && status.lora_adapters.as_deref().is_some_and(|l| l == want))
                .then_some(())
            })
            .await
        }
    };
    status_lists(&["sql", "support"]).await;
    let generation = deployment.metadata.generation;

    // Edit the list: one moved, one removed, one added.
    let edit = json!({ "spec": { "loraAdapters": [
        { "name": "sql", "source": "hf://org/sql-lora-v2" },
        { "name": "french", "source": "file:///adapters/fr" },
    ] } });
    infds
        .patch(name, &PatchParams::default(), &Patch::Merge(edit))
        .await
        .expect("edit the list");
    wait_for("ConfigMap lists the edit", WAIT, || async {
        let cm = config_maps.get(&cm_name).await.ok()?;
        (listed(&cm) == pairs(&[("sql", "hf://org/sql-lora-v2"), ("french", "/adapters/fr")]))
            .then_some(())
    })
    .await;
    // The status has seen the new generation, so this reconcile applied the Deployment too.
    status_lists(&["sql", "french"]).await;
    let after = deployments.get(name).await.expect("Deployment");
    assert_eq!(
        after.metadata.generation, generation,
        "editing the list must not change the pod template"
    );
    assert_eq!(after.spec.expect("spec").template, template);

    // A bad list: InvalidSpec, the last good ConfigMap stays.
    let bad =
        json!({ "spec": { "loraAdapters": [{ "name": "org/base", "source": "file:///x" }] } });
    infds
        .patch(name, &PatchParams::default(), &Patch::Merge(bad))
        .await
        .expect("bad list");
    let infd = wait_condition(&infds, name, "Degraded", "True", "InvalidSpec").await;
    let (_, _, message) = condition(&infd, "Degraded").expect("condition");
    assert!(message.contains("is the served model name"), "{message}");
    assert_eq!(
        listed(&config_maps.get(&cm_name).await.expect("ConfigMap")),
        pairs(&[("sql", "hf://org/sql-lora-v2"), ("french", "/adapters/fr")])
    );

    // No field, no LoRA: the flag goes (a new template) and the ConfigMap is deleted.
    let off = json!({ "spec": { "loraAdapters": null, "engine": { "maxLoras": null } } });
    infds
        .patch(name, &PatchParams::default(), &Patch::Merge(off))
        .await
        .expect("LoRA off");
    wait_for("ConfigMap deleted", WAIT, || async {
        config_maps
            .get_opt(&cm_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let d = deployments.get(name).await.expect("Deployment");
    let args = d.spec.expect("spec").template.spec.expect("pod").containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(!args.contains(&"--enable-lora".to_owned()), "{args:?}");
    assert!(d.metadata.generation > generation);
    run.abort();
}

/// TLS under the operator's ClusterRole: the Certificates the operator creates pass
/// cert-manager's real schema (server-side apply refuses unknown fields), are owned by the
/// InferenceDeployment and come before the pods that mount their Secrets; a user Secret
/// needs no Certificate; dropping `monitoring.tls` deletes its Certificates and volume.
#[tokio::test]
async fn tls_certificates_are_applied_under_rbac_and_removed_with_the_field() {
    let env = testenv::shared();
    let admin = env.admin().await;
    common::install_candela_crd(&admin).await;
    common::install_cert_manager_crd(&admin).await;
    common::grant_operator_rbac(&admin, "candela-system").await;
    let ns = "tls";
    common::create_namespace(&admin, ns).await;
    let ctx = Arc::new(
        Context::new(
            env.operator().await,
            BuildConfig {
                cert_manager_issuer: Some(
                    candela_operator::crd::IssuerRef::parse_flag("ClusterIssuer/candela-ca")
                        .expect("issuer"),
                ),
                ..BuildConfig::default()
            },
            Arc::new(Metrics::default()),
        )
        .with_capability_ttl(Duration::from_secs(1)),
    );
    let run = tokio::spawn(controller::run(
        ctx,
        RunConfig {
            namespace: Some(ns.into()),
            concurrency: 2,
        },
    ));

    let infds: Api<InferenceDeployment> = Api::namespaced(admin.clone(), ns);
    let name = "chat";
    let obj: InferenceDeployment = serde_json::from_value(json!({
        "apiVersion": "candela.dev/v1alpha1", "kind": "InferenceDeployment",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "model": { "source": "hf://org/base" },
            "resources": { "gpus": 0 },
            "tls": { "secretName": "chat-api-tls" },
            "monitoring": { "tls": { "certManager": { "duration": "720h" } } },
        },
    }))
    .expect("object");
    infds
        .create(&PostParams::default(), &obj)
        .await
        .expect("create");
    let uid = infds.get(name).await.expect("get").uid().expect("uid");

    let certificates: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), ns, &ThirdParty::Certificate.api_resource());
    for cert in ["chat-metrics-tls", "chat-metrics-client"] {
        let c = wait_for(cert, WAIT, || async {
            certificates.get_opt(cert).await.ok().flatten()
        })
        .await;
        assert!(common::owned_by(&c, &uid), "{cert}");
        assert_eq!(c.data["spec"]["secretName"], cert);
        assert_eq!(c.data["spec"]["issuerRef"]["kind"], "ClusterIssuer");
        assert_eq!(c.data["spec"]["duration"], "720h");
    }
    // The API's certificate is the user's Secret: no Certificate for it.
    assert!(
        certificates
            .get_opt("chat-tls")
            .await
            .expect("get")
            .is_none()
    );
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    let volumes = |d: &Deployment| -> Vec<(String, String)> {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.volumes.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| Some((v.name, v.secret?.secret_name?)))
            .collect()
    };
    let deployment = wait_for("Deployment", WAIT, || async {
        deployments.get_opt(name).await.ok().flatten()
    })
    .await;
    assert_eq!(
        volumes(&deployment),
        [
            ("tls".to_owned(), "chat-api-tls".to_owned()),
            ("engine-ca".to_owned(), "chat-api-tls".to_owned()),
            ("metrics-tls".to_owned(), "chat-metrics-tls".to_owned()),
        ]
    );
    let status = wait_condition(&infds, name, "Degraded", "False", "AsExpected").await;
    assert_eq!(
        status.status.and_then(|s| s.endpoint).as_deref(),
        Some("https://chat.tls.svc:8000/v1")
    );

    // Dropping monitoring.tls deletes its Certificates and its volume.
    infds
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "monitoring": { "tls": null } } })),
        )
        .await
        .expect("patch");
    wait_for("metrics Certificates deleted", WAIT, || async {
        let left = certificates.list(&ListParams::default()).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    wait_for("metrics-tls volume removed", WAIT, || async {
        let d = deployments.get(name).await.ok()?;
        (volumes(&d).len() == 2).then_some(())
    })
    .await;
    run.abort();
}
