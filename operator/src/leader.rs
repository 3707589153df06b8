//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one operator replica
//! reconciles at a time.
//!
//! The algorithm is client-go's: a replica takes the lease when it is free or expired
//! (`renewTime + leaseDurationSeconds` in the past) and renews it while it leads. Every
//! write carries the lease's `resourceVersion`, so two candidates can never both win: the
//! loser gets a 409 Conflict. A leader that cannot renew within the lease duration stops
//! (and is restarted by its Deployment) rather than risk two active controllers.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{debug, info, warn};

use crate::{Error, Result};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the operator's own namespace).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews and candidates retry.
    pub retry_period: Duration,
}

/// One candidate for leadership.
#[derive(Clone, Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    /// A candidate using `client`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// Tries once to take or renew the lease; true when this replica holds it afterwards.
    ///
    /// # Errors
    /// [`Error::Kube`] for API failures other than a lost race.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                Err(e) => Err(e.into()),
            };
        };

        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(MicroTime(renewed)), Some(secs)) => renewed
                .checked_add(SignedDuration::from_secs(i64::from(secs)))
                .map_or(true, |end| end < now),
            _ => true,
        };
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        if !(ours || expired || free) {
            debug!(holder = ?spec.holder_identity, "lease held by another replica");
            return Ok(false);
        }

        let mut next = lease.clone();
        next.spec = Some(LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: if ours {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!ours)),
            ..spec
        });
        // `replace` sends metadata.resourceVersion: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => {
                if !ours {
                    info!(identity = %self.config.identity, "acquired leader lease");
                }
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until this replica holds the lease.
    ///
    /// # Errors
    /// Never returns an error for API failures: they are logged and retried.
    pub async fn acquire(&self) -> Result<()> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the lease forever; returns when leadership is lost (not renewed within the
    /// lease duration, or taken by another replica).
    pub async fn hold(&self) -> Error {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return Error::Lease("another replica took the leader lease".into()),
                Err(e) => warn!(error = %e, "renewing the leader lease failed"),
            }
            if last_renewed.elapsed() > self.config.lease_duration {
                return Error::Lease("could not renew the leader lease in time".into());
            }
        }
    }
}
