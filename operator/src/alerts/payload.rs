//! Alertmanager's webhook payload (version 4), parsed and checked: the alerts grouped by
//! the InferenceDeployment they name (`namespace` + `inference_deployment` labels), with
//! the fields the scaling state machine orders them by (`startsAt`, `endsAt`,
//! `fingerprint`).
//!
//! A payload that is not JSON, not version 4, or whose alerts lack a valid `status` or
//! `startsAt` is rejected as a whole ([`PayloadError`], answered 400), so a malformed
//! notification never changes anything.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use crate::crd::AlertState;

/// Label that marks an alert as a scale-up signal for the alerts backend.
pub const SCALE_UP_LABEL: &str = "candela_autoscaling";
/// Value of [`SCALE_UP_LABEL`] on scale-up alerts.
pub const SCALE_UP_VALUE: &str = "scale-up";

/// Why a payload was rejected.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The body is not JSON of the webhook's shape.
    #[error("not an Alertmanager webhook payload: {0}")]
    Json(#[from] serde_json::Error),
    /// Another payload version than 4.
    #[error("unsupported payload version {0:?} (Alertmanager webhook version 4 is expected)")]
    Version(String),
    /// An alert is not usable.
    #[error("alert {index}: {message}")]
    Alert {
        /// Position of the alert in `alerts`.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// An InferenceDeployment named by alert labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// `namespace` label.
    pub namespace: String,
    /// `inference_deployment` label.
    pub name: String,
}

/// One alert of a notification, as the state machine sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingAlert {
    /// `alertname` label.
    pub alertname: String,
    /// Alertmanager's fingerprint (computed from the labels when the payload lacks it).
    pub fingerprint: String,
    /// `firing` or `resolved`.
    pub status: AlertState,
    /// Start of the alert's episode.
    pub starts_at: Timestamp,
    /// End of the episode; `None` while firing (Alertmanager sends year 1 then).
    pub ends_at: Option<Timestamp>,
    /// Whether it carries `candela_autoscaling="scale-up"`.
    pub scale_up: bool,
}

/// A checked notification.
#[derive(Clone, Debug, Default)]
pub struct Notification {
    /// The alerts of each InferenceDeployment the notification names.
    pub targets: BTreeMap<Target, Vec<IncomingAlert>>,
    /// Alerts without both target labels (not the operator's; ignored).
    pub unlabelled: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPayload {
    #[serde(default)]
    version: Option<String>,
    alerts: Vec<RawAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAlert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// Parses and checks a webhook body.
///
/// # Errors
/// [`PayloadError`] when the body is not a usable version-4 payload.
pub fn parse(body: &[u8]) -> Result<Notification, PayloadError> {
    let raw: RawPayload = serde_json::from_slice(body)?;
    if let Some(v) = raw.version.as_deref()
        && v != "4"
    {
        return Err(PayloadError::Version(v.to_owned()));
    }
    let mut notification = Notification::default();
    for (index, alert) in raw.alerts.into_iter().enumerate() {
        let bad = |message: String| PayloadError::Alert { index, message };
        let status = match alert.status.as_str() {
            "firing" => AlertState::Firing,
            "resolved" => AlertState::Resolved,
            other => {
                return Err(bad(format!(
                    "status {other:?} is neither firing nor resolved"
                )));
            }
        };
        let (Some(namespace), Some(name)) = (
            alert.labels.get("namespace").filter(|s| !s.is_empty()),
            alert
                .labels
                .get("inference_deployment")
                .filter(|s| !s.is_empty()),
        ) else {
            notification.unlabelled += 1;
            continue;
        };
        if !is_dns_label(namespace) {
            return Err(bad(format!(
                "label namespace={namespace:?} is not a namespace name"
            )));
        }
        if !is_dns_subdomain(name) {
            return Err(bad(format!(
                "label inference_deployment={name:?} is not an object name"
            )));
        }
        let starts_at = alert
            .starts_at
            .as_deref()
            .ok_or_else(|| bad("startsAt is missing".into()))
            .and_then(|t| parse_time(t).map_err(|e| bad(format!("startsAt {t:?}: {e}"))))?
            .ok_or_else(|| bad("startsAt is the zero time".into()))?;
        let ends_at = match alert.ends_at.as_deref() {
            None | Some("") => None,
            Some(t) => parse_time(t).map_err(|e| bad(format!("endsAt {t:?}: {e}")))?,
        };
        let fingerprint = match alert.fingerprint.filter(|f| !f.is_empty()) {
            Some(f) if f.len() <= 64 && f.bytes().all(|b| b.is_ascii_hexdigit()) => f,
            Some(f) => return Err(bad(format!("fingerprint {f:?} is not hexadecimal"))),
            None => fingerprint(&alert.labels),
        };
        let incoming = IncomingAlert {
            alertname: alert.labels.get("alertname").cloned().unwrap_or_default(),
            fingerprint,
            status,
            starts_at,
            ends_at: if status == AlertState::Resolved {
                ends_at
            } else {
                None
            },
            scale_up: alert.labels.get(SCALE_UP_LABEL).map(String::as_str) == Some(SCALE_UP_VALUE),
        };
        notification
            .targets
            .entry(Target {
                namespace: namespace.clone(),
                name: name.clone(),
            })
            .or_default()
            .push(incoming);
    }
    Ok(notification)
}

/// An RFC 3339 time, truncated to microseconds; `None` for Go's zero time (year 1), which
/// Alertmanager sends as the `endsAt` of firing alerts.
fn parse_time(text: &str) -> Result<Option<Timestamp>, String> {
    /// 0002-01-01T00:00:00Z: anything before is Go's zero time.
    const YEAR_2: i64 = -62_104_060_800;
    let t: Timestamp = text.parse().map_err(|e| format!("{e}"))?;
    Ok((t.as_second() >= YEAR_2).then_some(micro(t)))
}

/// `t` truncated to microseconds, the precision the state is stored with, so that a
/// stored time and a freshly parsed one compare equal.
pub fn micro(t: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

/// Alertmanager's fingerprint of a label set (Prometheus' `LabelSet.Fingerprint`: FNV-1a
/// 64 over the labels sorted by name, each name and value followed by byte 255), as 16
/// hex digits.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[255]);
        add(value.as_bytes());
        add(&[255]);
    }
    format!("{hash:016x}")
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(alerts: serde_json::Value) -> Vec<u8> {
        json!({ "version": "4", "status": "firing", "alerts": alerts })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn groups_alerts_by_target_and_reads_their_times() {
        let n = parse(&body(json!([
            { "status": "firing", "labels": { "alertname": "A", "namespace": "ns", "inference_deployment": "x", "candela_autoscaling": "scale-up" },
              "startsAt": "2026-01-02T03:04:05.123Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "00ff" },
            { "status": "resolved", "labels": { "alertname": "B", "namespace": "ns", "inference_deployment": "x" },
              "startsAt": "2026-01-02T03:00:00Z", "endsAt": "2026-01-02T03:10:00Z" },
            { "status": "firing", "labels": { "alertname": "C" }, "startsAt": "2026-01-02T03:00:00Z" },
        ])))
        .expect("parses");
        assert_eq!(n.unlabelled, 1);
        let alerts = &n.targets[&Target {
            namespace: "ns".into(),
            name: "x".into(),
        }];
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].status, AlertState::Firing);
        assert!(alerts[0].scale_up);
        assert_eq!(alerts[0].ends_at, None, "year 1 means no end");
        assert_eq!(alerts[0].fingerprint, "00ff");
        assert_eq!(
            alerts[0].starts_at,
            "2026-01-02T03:04:05.123Z".parse::<Timestamp>().unwrap()
        );
        let n = parse(&body(json!([
            { "status": "firing", "labels": { "namespace": "ns", "inference_deployment": "x" },
              "startsAt": "2026-01-02T03:04:05.123456789Z" },
        ])))
        .expect("parses");
        let t = n.targets.values().next().unwrap()[0].starts_at;
        assert_eq!(
            t.to_string(),
            "2026-01-02T03:04:05.123456Z",
            "kept to microseconds"
        );
        assert!(!alerts[1].scale_up);
        assert_eq!(
            alerts[1].ends_at,
            Some("2026-01-02T03:10:00Z".parse().unwrap())
        );
        assert_eq!(alerts[1].fingerprint.len(), 16, "computed from the labels");
    }

    #[test]
    fn rejects_malformed_payloads() {
        for (text, want) in [
            ("{", "not an Alertmanager webhook payload"),
            ("[]", "not an Alertmanager webhook payload"),
            (r#"{"version":"4"}"#, "missing field `alerts`"),
            (
                r#"{"version":"3","alerts":[]}"#,
                "unsupported payload version",
            ),
        ] {
            let e = parse(text.as_bytes()).expect_err(text).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let labels = json!({ "alertname": "A", "namespace": "ns", "inference_deployment": "x" });
        for (alert, want) in [
            (
                json!({ "status": "pending", "labels": labels, "startsAt": "2026-01-01T00:00:00Z" }),
                "neither firing nor resolved",
            ),
            (
                json!({ "status": "firing", "labels": labels }),
                "startsAt is missing",
            ),
            (
                json!({ "status": "firing", "labels": labels, "startsAt": "yesterday" }),
                "startsAt \"yesterday\"",
            ),
            (
                json!({ "status": "firing", "labels": labels, "startsAt": "0001-01-01T00:00:00Z" }),
                "zero time",
            ),
            (
                json!({ "status": "firing", "labels": labels, "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "xyz" }),
                "not hexadecimal",
            ),
            (
                json!({ "status": "firing", "labels": { "namespace": "Bad_NS", "inference_deployment": "x" }, "startsAt": "2026-01-01T00:00:00Z" }),
                "not a namespace name",
            ),
            (
                json!({ "status": "firing", "labels": { "namespace": "ns", "inference_deployment": "a/b" }, "startsAt": "2026-01-01T00:00:00Z" }),
                "not an object name",
            ),
        ] {
            let e = parse(&body(json!([alert]))).expect_err(want).to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.starts_with("alert 0: "), "{e}");
        }
    }

    #[test]
    fn fingerprint_matches_prometheus_label_set_fingerprint() {
        // prometheus/common: the empty label set's fingerprint is FNV-1a's offset basis.
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
    }
}
