//! Service tiers on the command line: OpenAI's tier names, `--max-num-seqs-per-tier
//! TIER=N` entries ([`TierCap`]) and the `--api-key-tiers` file ([`parse_api_key_tiers`]).
//!
//! The file holds one `KEY TIER` pair per line (blank lines and `#` comments ignored). Each
//! key is a valid API key; its tier is the most important one its requests may use and
//! the one they get when they name none (or `auto`). A file, not a flag value, so keys
//! stay out of argv and `ps` and can come from a mounted Secret. Error messages name
//! line numbers, never keys.

use std::fmt;
use std::str::FromStr;

/// A tier name as OpenAI's `service_tier` spells it (`auto` is a request value, not a tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceTier {
    Priority,
    Default,
    Flex,
}

impl ServiceTier {
    /// Every tier, most important first.
    pub const ALL: [ServiceTier; 3] = [
        ServiceTier::Priority,
        ServiceTier::Default,
        ServiceTier::Flex,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTier::Priority => "priority",
            ServiceTier::Default => "default",
            ServiceTier::Flex => "flex",
        }
    }
}

impl FromStr for ServiceTier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceTier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!("unknown service tier {s:?} (expected priority, default or flex)")
            })
    }
}

impl fmt::Display for ServiceTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `--max-num-seqs-per-tier` entry: `TIER=N`, at most `N` (≥ 1) requests of the tier
/// run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierCap {
    pub tier: ServiceTier,
    pub max_num_seqs: usize,
}

impl FromStr for TierCap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tier, n) = s
            .split_once('=')
            .ok_or_else(|| format!("expected TIER=N (e.g. flex=4), got {s:?}"))?;
        let tier = tier.trim().parse()?;
        let max_num_seqs = n
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| format!("{tier}={n}: N must be a whole number of at least 1"))?;
        Ok(TierCap { tier, max_num_seqs })
    }
}

impl fmt::Display for TierCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.tier, self.max_num_seqs)
    }
}

/// clap's value parser for `--max-num-seqs-per-tier`.
///
/// # Errors
/// One line naming what is wrong.
pub fn parse_cap(value: &str) -> Result<TierCap, String> {
    value.parse()
}

/// Checks the caps together: each tier capped once.
///
/// # Errors
/// One line naming the tier given twice.
pub fn check_caps(caps: &[TierCap]) -> Result<(), String> {
    for (i, cap) in caps.iter().enumerate() {
        if caps[..i].iter().any(|c| c.tier == cap.tier) {
            return Err(format!("{} is capped twice", cap.tier));
        }
    }
    Ok(())
}

/// One key of an `--api-key-tiers` file and its tier.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyTier {
    pub key: String,
    pub tier: ServiceTier,
}

impl fmt::Debug for ApiKeyTier {
    /// Never shows the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyTier")
            .field("key", &"<redacted>")
            .field("tier", &self.tier)
            .finish()
    }
}

/// Reads an `--api-key-tiers` file's text: `KEY TIER` per line.
///
/// # Errors
/// One line naming the line number (never the key): a line without exactly a key and a
/// tier, an unknown tier, a key given twice, a file without keys.
pub fn parse_api_key_tiers(text: &str) -> Result<Vec<ApiKeyTier>, String> {
    let mut keys: Vec<(usize, ApiKeyTier)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [key, tier] = fields[..] else {
            return Err(format!(
                "line {n}: expected `KEY TIER` (two fields), got {} fields",
                fields.len()
            ));
        };
        let tier = tier.parse().map_err(|e: String| format!("line {n}: {e}"))?;
        if let Some((first, _)) = keys.iter().find(|(_, k)| k.key == key) {
            return Err(format!("line {n}: the key of line {first} is given again"));
        }
        keys.push((
            n,
            ApiKeyTier {
                key: key.to_owned(),
                tier,
            },
        ));
    }
    if keys.is_empty() {
        return Err("the file lists no keys (`KEY TIER` per line)".into());
    }
    Ok(keys.into_iter().map(|(_, k)| k).collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn caps_parse_display_and_refuse_bad_values() {
        let cap: TierCap = "flex=4".parse().unwrap();
        assert_eq!(
            cap,
            TierCap {
                tier: ServiceTier::Flex,
                max_num_seqs: 4
            }
        );
        assert_eq!(cap.to_string(), "flex=4");
        for (bad, wanted) in [
            ("flex", "expected TIER=N"),
            ("batch=4", "unknown service tier \"batch\""),
            ("auto=4", "unknown service tier \"auto\""),
            ("flex=0", "at least 1"),
            ("flex=-1", "at least 1"),
            ("flex=x", "at least 1"),
        ] {
            let e = bad.parse::<TierCap>().unwrap_err();
            assert!(e.contains(wanted), "{bad}: {e}");
        }
        let twice = ["flex=1", "default=2", "flex=3"].map(|c| c.parse().unwrap());
        assert_eq!(check_caps(&twice).unwrap_err(), "flex is capped twice");
        assert!(check_caps(&twice[..2]).is_ok());
    }

    #[test]
    fn key_files_read_pairs_and_name_lines_never_keys() {
        let keys = parse_api_key_tiers(
            "# batch clients\nsk-batch-1 flex\n\n  sk-web\tpriority  \nsk-app default\n",
        )
        .unwrap();
        let pairs: Vec<(&str, ServiceTier)> =
            keys.iter().map(|k| (k.key.as_str(), k.tier)).collect();
        assert_eq!(
            pairs,
            vec![
                ("sk-batch-1", ServiceTier::Flex),
                ("sk-web", ServiceTier::Priority),
                ("sk-app", ServiceTier::Default)
            ]
        );
        assert!(!format!("{keys:?}").contains("sk-"), "Debug hides keys");
        for (text, wanted) in [
            (
                "sk-secret\n",
                "line 1: expected `KEY TIER` (two fields), got 1 fields",
            ),
            (
                "a flex\nsk-secret flex extra\n",
                "line 2: expected `KEY TIER`",
            ),
            ("sk-secret auto\n", "line 1: unknown service tier \"auto\""),
            (
                "sk-secret flex\n\nsk-secret default\n",
                "line 3: the key of line 1 is given again",
            ),
            ("# nothing\n\n", "no keys"),
        ] {
            let e = parse_api_key_tiers(text).unwrap_err();
            assert!(e.contains(wanted), "{text:?}: {e}");
            assert!(!e.contains("sk-secret"), "the message shows a key: {e}");
        }
    }

    proptest! {
        #[test]
        fn a_cap_displays_as_what_parses_back(tier in 0usize..3, n in 1usize..100_000) {
            let cap = TierCap { tier: ServiceTier::ALL[tier], max_num_seqs: n };
            prop_assert_eq!(cap.to_string().parse::<TierCap>(), Ok(cap));
        }
    }
}
