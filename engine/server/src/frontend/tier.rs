//! `service_tier`: the tier a request asks for, resolved against what its caller may use.
//!
//! OpenAI's values are `auto`, `default`, `flex` and `priority` (anything else is a 400
//! naming the field). A caller is a [`TierAccess`]: the most important tier it may use
//! (its ceiling) and the tier it gets without asking (absent or `auto`). A request asking
//! above its ceiling is *lowered* to it, not refused — as OpenAI runs a project without
//! access to a tier at the tier it has, and says so in the response's `service_tier` — so
//! a batch client's key mapped to `flex` cannot claim `priority`, and a client written for
//! OpenAI keeps working. The response echoes the tier the request ran at.

use candela_core::ServiceTier;

use crate::error::{Error, Result};

/// The tiers one caller may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierAccess {
    /// The most important tier its requests run at.
    pub ceiling: ServiceTier,
    /// What a request without `service_tier` (or with `auto`) runs at.
    pub auto: ServiceTier,
}

impl TierAccess {
    /// Any tier, `auto` = `default`: no API key, `--api-key`'s key, the gRPC API.
    pub const OPEN: TierAccess = TierAccess {
        ceiling: ServiceTier::Priority,
        auto: ServiceTier::Default,
    };

    /// A key of `--api-key-tiers` mapped to `tier`: at most `tier`, and `tier` by default.
    pub fn key(tier: ServiceTier) -> TierAccess {
        TierAccess {
            ceiling: tier,
            auto: tier,
        }
    }

    /// The tier a request asking for `requested` runs at.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] naming `service_tier` for a value OpenAI does not define.
    pub fn resolve(self, requested: Option<&str>) -> Result<ServiceTier> {
        match requested {
            None | Some("auto") => Ok(self.auto),
            Some(name) => ServiceTier::parse(name)
                .map(|t| t.at_most(self.ceiling))
                .ok_or_else(|| {
                    Error::invalid(
                        "service_tier",
                        format!(
                            "Invalid value for service_tier: {name:?}. Supported values are \
                             'auto', 'default', 'flex' and 'priority'."
                        ),
                    )
                }),
        }
    }
}

impl Default for TierAccess {
    fn default() -> Self {
        TierAccess::OPEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServiceTier::{Default as Def, Flex, Priority};

    #[test]
    fn open_callers_get_what_they_ask_and_auto_is_default() {
        let open = TierAccess::OPEN;
        assert_eq!(open.resolve(None).unwrap(), Def);
        assert_eq!(open.resolve(Some("auto")).unwrap(), Def);
        for t in ServiceTier::ALL {
            assert_eq!(open.resolve(Some(t.as_str())).unwrap(), t);
        }
    }

    #[test]
    fn a_keys_tier_is_its_default_and_its_ceiling() {
        let batch = TierAccess::key(Flex);
        for asked in [
            None,
            Some("auto"),
            Some("default"),
            Some("priority"),
            Some("flex"),
        ] {
            assert_eq!(batch.resolve(asked).unwrap(), Flex, "{asked:?}");
        }
        let app = TierAccess::key(Def);
        assert_eq!(app.resolve(Some("priority")).unwrap(), Def, "lowered");
        assert_eq!(
            app.resolve(Some("flex")).unwrap(),
            Flex,
            "a key may go lower"
        );
        assert_eq!(app.resolve(None).unwrap(), Def);
        assert_eq!(TierAccess::key(Priority).resolve(None).unwrap(), Priority);
    }

    #[test]
    fn unknown_tiers_are_400_naming_the_field() {
        for bad in ["scale", "Flex", "", "batch"] {
            match TierAccess::OPEN.resolve(Some(bad)).unwrap_err() {
                Error::InvalidRequest { param, message } => {
                    assert_eq!(param, Some("service_tier"));
                    assert!(message.contains("service_tier"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
