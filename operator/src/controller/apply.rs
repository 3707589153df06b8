//! Applying the built children with server-side apply, and deleting the ones the spec no
//! longer wants.
//!
//! All writes use one field manager ([`MANAGER`]) with `force`, so the operator owns the
//! fields it sets and nothing else: an autoscaler or a human may still own other fields.
//! Third-party kinds are only touched when their CRD is served.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::debug;

use super::capabilities::Capabilities;
use super::status::ApplyOutcome;
use crate::Result;
use crate::builders::{Children, dashboard_name, lora, thirdparty::ThirdParty, tls};

/// The field manager of every server-side apply.
pub const MANAGER: &str = "candela-operator";

/// Result of applying one InferenceDeployment's children.
#[derive(Debug)]
pub struct Applied {
    /// The Deployment as the API server returned it (with its status).
    pub deployment: Deployment,
    /// Missing CRDs and the applied HPA.
    pub outcome: ApplyOutcome,
}

/// Applies `children` in `namespace`, deleting children that are no longer wanted.
///
/// # Errors
/// [`crate::Error::Kube`] when an apply or delete fails.
pub async fn apply_children(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
    children: &Children,
    caps: &Capabilities,
) -> Result<Applied> {
    let pp = PatchParams::apply(MANAGER).force();
    // The LoRA adapter list and the certificates first: new pods mount them and wait
    // until they exist. (The reconciler refuses certificates without cert-manager.)
    if let Some(cm) = &children.lora_config_map {
        apply_typed(client, namespace, cm, &pp).await?;
    }
    apply_certificates(client, namespace, name, owner_uid, children, caps, &pp).await?;
    let deployment = apply_typed(client, namespace, &children.deployment, &pp).await?;
    if children.lora_config_map.is_none() {
        delete::<ConfigMap>(
            &Api::namespaced(client.clone(), namespace),
            &lora::config_map_name(name),
            owner_uid,
        )
        .await?;
    }
    apply_typed(client, namespace, &children.service, &pp).await?;

    let mut outcome = ApplyOutcome::default();
    match &children.hpa {
        Some(hpa) => outcome.hpa = Some(apply_typed(client, namespace, hpa, &pp).await?),
        None => {
            delete::<HorizontalPodAutoscaler>(
                &Api::namespaced(client.clone(), namespace),
                name,
                owner_uid,
            )
            .await?
        }
    }
    let dashboards = dashboard_name(name);
    match &children.dashboard_config_map {
        Some(cm) => drop(apply_typed(client, namespace, cm, &pp).await?),
        None => {
            delete::<ConfigMap>(
                &Api::namespaced(client.clone(), namespace),
                &dashboards,
                owner_uid,
            )
            .await?
        }
    }

    let third_party = [
        (
            ThirdParty::ServiceMonitor,
            &children.service_monitor,
            name.to_owned(),
        ),
        (
            ThirdParty::PrometheusRule,
            &children.prometheus_rule,
            name.to_owned(),
        ),
        (
            ThirdParty::ScaledObject,
            &children.scaled_object,
            name.to_owned(),
        ),
        (
            ThirdParty::GrafanaDashboard,
            &children.grafana_dashboard,
            dashboards,
        ),
    ];
    for (kind, wanted, child_name) in third_party {
        let served = caps.has(kind);
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
        match (wanted, served) {
            (Some(obj), true) => {
                api.patch(&child_name, &pp, &Patch::Apply(obj)).await?;
            }
            (Some(_), false) => outcome.missing.push(kind),
            (None, true) => delete(&api, &child_name, owner_uid).await?,
            (None, false) => {}
        }
    }
    Ok(Applied {
        deployment,
        outcome,
    })
}

/// Applies the wanted Certificates and deletes the operator's others (only where
/// cert-manager is installed). The Secrets cert-manager wrote stay: cert-manager owns them.
async fn apply_certificates(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
    children: &Children,
    caps: &Capabilities,
    pp: &PatchParams,
) -> Result<()> {
    if !caps.has(ThirdParty::Certificate) {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &ThirdParty::Certificate.api_resource(),
    );
    for cert_name in tls::certificate_names(name) {
        let wanted = children
            .certificates
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(cert_name.as_str()));
        match wanted {
            Some(cert) => drop(api.patch(&cert_name, pp, &Patch::Apply(cert)).await?),
            None => delete(&api, &cert_name, owner_uid).await?,
        }
    }
    Ok(())
}

async fn apply_typed<K>(client: &Client, namespace: &str, obj: &K, pp: &PatchParams) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(crate::Error::MissingMetadata("child metadata.name"))?;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api.patch(&name, pp, &Patch::Apply(obj)).await?)
}

/// Deletes `name` if it exists and is controlled by the owner with `owner_uid`; objects of
/// the same name that someone else created are left alone.
async fn delete<K>(api: &Api<K>, name: &str, owner_uid: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(());
    };
    let ours = existing
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == owner_uid && r.controller == Some(true));
    if !ours {
        return Ok(());
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            debug!(name, "deleted child the spec no longer wants");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
