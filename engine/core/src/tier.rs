//! Service tiers: OpenAI's `service_tier` (`priority`, `default`, `flex`) as the
//! scheduler's first ordering key, with an optional running cap per tier.
//!
//! The scheduler orders waiting requests by tier before anything else — under both
//! policies: a request's `priority` (the `priority` policy) or its arrival (`fcfs`) only
//! orders requests of the same tier, so `flex` work never goes ahead of online work, and
//! a user of `service_tier` needs no other flag. When KV runs out the victim is taken
//! from the least important tier present (`flex` first), so a `flex` request never
//! preempts a `default` or `priority` one; a waiting request may preempt running
//! requests of a strictly less important tier to be admitted. A capped tier's requests
//! wait for a slot of their own tier instead of filling the batch (and then being
//! preempted into thrash); they are passed over, never refused. With every request in
//! the `default` tier (no client sets the field) the scheduler behaves as before tiers.

/// One of the three tiers; the derived order is the scheduling order (less runs first,
/// as vLLM's `priority` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ServiceTier {
    /// Online work that goes first and preempts the others.
    Priority,
    /// What a request without `service_tier` (or with `auto`) gets.
    #[default]
    Default,
    /// Offline / batch work: waits behind the others, preempted first.
    Flex,
}

impl ServiceTier {
    /// Every tier, most important first (the order of [`ServiceTier::index`]).
    pub const ALL: [ServiceTier; 3] = [
        ServiceTier::Priority,
        ServiceTier::Default,
        ServiceTier::Flex,
    ];

    /// OpenAI's spelling (also the metrics' `tier` label value).
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTier::Priority => "priority",
            ServiceTier::Default => "default",
            ServiceTier::Flex => "flex",
        }
    }

    /// Position in [`ServiceTier::ALL`] (0 = `priority`).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The tier named `s` (OpenAI's spelling; `auto` is the caller's to resolve).
    pub fn parse(s: &str) -> Option<ServiceTier> {
        ServiceTier::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// This tier, lowered to `ceiling` when it is more important than that.
    pub fn at_most(self, ceiling: ServiceTier) -> ServiceTier {
        self.max(ceiling)
    }
}

impl std::fmt::Display for ServiceTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most requests of each tier running at once (`--max-num-seqs-per-tier`); `None`: only
/// `--max-num-seqs` limits the tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierCaps([Option<usize>; 3]);

impl TierCaps {
    /// The cap of `tier`.
    pub fn get(&self, tier: ServiceTier) -> Option<usize> {
        self.0[tier.index()]
    }

    /// These caps with `tier` capped at `max` running requests.
    pub fn with(mut self, tier: ServiceTier, max: usize) -> TierCaps {
        self.0[tier.index()] = Some(max);
        self
    }

    /// Whether one more request of `tier` may run while `running` of it do.
    pub fn admits(&self, tier: ServiceTier, running: usize) -> bool {
        self.get(tier).is_none_or(|cap| running < cap)
    }
}

/// Requests of one tier in the scheduler's queues (Candela's per-tier gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    pub running: usize,
    pub waiting: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_names_and_ceilings() {
        assert!(ServiceTier::Priority < ServiceTier::Default);
        assert!(ServiceTier::Default < ServiceTier::Flex);
        for t in ServiceTier::ALL {
            assert_eq!(ServiceTier::parse(t.as_str()), Some(t));
            assert_eq!(ServiceTier::ALL[t.index()], t);
        }
        assert_eq!(ServiceTier::parse("auto"), None);
        assert_eq!(ServiceTier::parse("Flex"), None);
        assert_eq!(
            ServiceTier::Priority.at_most(ServiceTier::Flex),
            ServiceTier::Flex
        );
        assert_eq!(
            ServiceTier::Flex.at_most(ServiceTier::Priority),
            ServiceTier::Flex
        );
        let caps = TierCaps::default().with(ServiceTier::Flex, 2);
        assert!(caps.admits(ServiceTier::Flex, 1) && !caps.admits(ServiceTier::Flex, 2));
        assert!(caps.admits(ServiceTier::Default, 1000));
    }
}
