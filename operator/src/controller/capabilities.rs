//! Which third-party kinds the cluster serves, found by API discovery.
//!
//! One discovery round is a GET of `/apis/<group>/<version>` per third-party group (4
//! requests); results are cached for [`TTL`], so 200 InferenceDeployments reconciling at
//! once cost one round. A background loop re-discovers periodically and triggers a
//! reconcile of everything when the set changes (e.g. KEDA got installed).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kube::Client;
use tokio::sync::Mutex;

use crate::Result;
use crate::builders::thirdparty::ThirdParty;

/// Default time a discovery result is trusted.
pub const TTL: Duration = Duration::from_secs(30);

/// The set of installed third-party kinds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities(BTreeSet<ThirdParty>);

impl Capabilities {
    /// A set with exactly `kinds` (for tests and fixed configurations).
    pub fn with(kinds: impl IntoIterator<Item = ThirdParty>) -> Self {
        Self(kinds.into_iter().collect())
    }

    /// Whether `kind` is served.
    pub fn has(&self, kind: ThirdParty) -> bool {
        self.0.contains(&kind)
    }

    /// Discovers the installed kinds.
    ///
    /// # Errors
    /// [`crate::Error::Kube`] when discovery fails for another reason than "not found".
    pub async fn discover(client: &Client) -> Result<Self> {
        let mut found = BTreeSet::new();
        let mut groups: Vec<String> = ThirdParty::ALL.iter().map(|k| k.api_version()).collect();
        groups.dedup();
        for api_version in groups {
            let resources = match client.list_api_group_resources(&api_version).await {
                Ok(list) => list.resources,
                // An unknown group answers a plain-text 404, not a NotFound Status.
                Err(kube::Error::Api(status)) if status.code == 404 => continue,
                Err(e) => return Err(e.into()),
            };
            for kind in ThirdParty::ALL
                .into_iter()
                .filter(|k| k.api_version() == api_version)
            {
                if resources.iter().any(|r| r.kind == kind.kind()) {
                    found.insert(kind);
                }
            }
        }
        Ok(Self(found))
    }
}

/// A [`Capabilities`] cache with a time-to-live.
#[derive(Debug)]
pub struct CapabilityCache {
    ttl: Duration,
    cached: Mutex<Option<(Instant, Capabilities)>>,
}

impl Default for CapabilityCache {
    fn default() -> Self {
        Self::new(TTL)
    }
}

impl CapabilityCache {
    /// A cache whose entries live for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The time-to-live of a discovery result.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The cached capabilities, re-discovered when older than the TTL.
    ///
    /// # Errors
    /// Discovery errors (see [`Capabilities::discover`]).
    pub async fn get(&self, client: &Client) -> Result<Capabilities> {
        let mut cached = self.cached.lock().await;
        if let Some((at, caps)) = cached.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(caps.clone());
        }
        let caps = Capabilities::discover(client).await?;
        *cached = Some((Instant::now(), caps.clone()));
        Ok(caps)
    }

    /// Re-discovers now and reports whether the set changed since the last discovery.
    ///
    /// # Errors
    /// Discovery errors (see [`Capabilities::discover`]).
    pub async fn refresh(&self, client: &Client) -> Result<bool> {
        let caps = Capabilities::discover(client).await?;
        let mut cached = self.cached.lock().await;
        let changed = cached.as_ref().is_some_and(|(_, old)| *old != caps);
        *cached = Some((Instant::now(), caps));
        Ok(changed)
    }
}
