//! API keys: `--api-key` and the keys of `--api-key-tiers`, and what each caller may use
//! ([`TierAccess`]). The HTTP API checks them on every `/v1/*` call (`crate::api::auth`),
//! the gRPC API on `Generate`; the paths vLLM leaves open (`/health`, `/metrics`, the
//! profiler) and their gRPC twins (`Health`, `WatchStats`, profiling) stay open on both.
//! Without any key configured every caller is open. Keys are compared in constant time,
//! all of them every time, and are never logged.

use std::path::Path;

use candela_core::ServiceTier;

use super::TierAccess;
use crate::error::Error;

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No key was presented.
    Missing,
    /// The key is none of ours.
    Wrong,
}

/// The keys the APIs accept.
#[derive(Clone, Default)]
pub struct ApiKeys {
    /// `--api-key`: any tier.
    key: Option<String>,
    /// `--api-key-tiers`: each key with the most important tier it may use.
    tiers: Vec<(String, ServiceTier)>,
}

impl std::fmt::Debug for ApiKeys {
    /// Counts, never keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("api_key", &self.key.is_some())
            .field("tier_keys", &self.tiers.len())
            .finish()
    }
}

impl ApiKeys {
    /// `--api-key` and the pairs of an `--api-key-tiers` file. A key in both gets its
    /// file tier.
    pub fn new(key: Option<String>, tiers: Vec<(String, ServiceTier)>) -> Self {
        ApiKeys { key, tiers }
    }

    /// Only `--api-key` (or nothing).
    pub fn single(key: Option<String>) -> Self {
        ApiKeys::new(key, Vec::new())
    }

    /// `--api-key` and the keys of the `--api-key-tiers` file, read now (at start).
    ///
    /// # Errors
    /// [`Error::Config`] naming the flag and the file, with the line at fault (never a
    /// key) when the file does not read.
    pub fn load(key: Option<String>, tiers_file: Option<&Path>) -> Result<Self, Error> {
        let Some(path) = tiers_file else {
            return Ok(ApiKeys::single(key));
        };
        let flag = candela_contract::serve::flag::API_KEY_TIERS;
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("--{flag} {}: {e}", path.display())))?;
        let tiers = candela_contract::tiers::parse_api_key_tiers(&text)
            .map_err(|e| Error::Config(format!("--{flag} {}: {e}", path.display())))?;
        Ok(ApiKeys::new(
            key,
            tiers
                .into_iter()
                .map(|k| (k.key, crate::cli::service_tier(k.tier)))
                .collect(),
        ))
    }

    /// Whether callers need a key at all.
    pub fn required(&self) -> bool {
        self.key.is_some() || !self.tiers.is_empty()
    }

    /// How many tier-file keys map to each tier (for the start-up log line).
    pub fn tier_counts(&self) -> [usize; 3] {
        ServiceTier::ALL.map(|t| self.tiers.iter().filter(|(_, k)| *k == t).count())
    }

    /// The access of the presented key; `None` when it is no key of ours.
    pub fn access(&self, provided: &str) -> Option<TierAccess> {
        // Every key is compared (no early exit), so timing tells nothing of which matched.
        let mut found = None;
        for (key, tier) in &self.tiers {
            if constant_time_eq(provided.as_bytes(), key.as_bytes()) && found.is_none() {
                found = Some(TierAccess::key(*tier));
            }
        }
        let main = self
            .key
            .as_deref()
            .is_some_and(|k| constant_time_eq(provided.as_bytes(), k.as_bytes()));
        found.or(main.then_some(TierAccess::OPEN))
    }

    /// The access of a caller presenting `authorization` (an `Authorization` header's or
    /// gRPC metadata's value, `Bearer KEY` or the bare key).
    ///
    /// # Errors
    /// [`Refused`] when keys are configured and the value is missing or wrong.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<TierAccess, Refused> {
        if !self.required() {
            return Ok(TierAccess::OPEN);
        }
        let key = authorization
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
            .ok_or(Refused::Missing)?;
        self.access(key).ok_or(Refused::Wrong)
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_access_and_unknown_keys_to_none() {
        let keys = ApiKeys::new(
            Some("main".into()),
            vec![
                ("batch".into(), ServiceTier::Flex),
                ("web".into(), ServiceTier::Priority),
            ],
        );
        assert!(keys.required());
        assert_eq!(keys.access("main"), Some(TierAccess::OPEN));
        assert_eq!(
            keys.access("batch"),
            Some(TierAccess::key(ServiceTier::Flex))
        );
        assert_eq!(
            keys.access("web"),
            Some(TierAccess::key(ServiceTier::Priority))
        );
        assert_eq!(keys.access("bat"), None);
        assert_eq!(keys.access(""), None);
        assert_eq!(keys.tier_counts(), [1, 0, 1]);
        assert!(!format!("{keys:?}").contains("batch"), "Debug hides keys");
        assert!(!ApiKeys::single(None).required());
        let both = ApiKeys::new(Some("k".into()), vec![("k".into(), ServiceTier::Flex)]);
        assert_eq!(both.access("k"), Some(TierAccess::key(ServiceTier::Flex)));
    }

    #[test]
    fn the_tier_file_is_read_at_start_and_its_errors_show_no_key() {
        let dir = std::env::temp_dir().join(format!("candela-tiers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "# clients\nsk-batch flex\nsk-web priority\n").unwrap();
        let keys = ApiKeys::load(None, Some(&good)).unwrap();
        assert!(keys.required(), "the file's keys turn auth on");
        assert_eq!(
            keys.access("sk-batch"),
            Some(TierAccess::key(ServiceTier::Flex))
        );
        assert_eq!(keys.tier_counts(), [1, 0, 1]);
        let bad = dir.join("bad");
        std::fs::write(&bad, "sk-batch flex\nsk-secret-key turbo\n").unwrap();
        let e = ApiKeys::load(None, Some(&bad)).unwrap_err().to_string();
        assert!(
            e.starts_with("--api-key-tiers ") && e.contains("line 2"),
            "{e}"
        );
        assert!(!e.contains("sk-"), "{e}");
        let e = ApiKeys::load(None, Some(&dir.join("missing")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--api-key-tiers") && e.contains("missing"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
