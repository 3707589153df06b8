//! The alerts backend's state machine: pure functions from (settings, current replicas,
//! stored state, the alerts of one notification, now) to the new state and a decision.
//!
//! State per InferenceDeployment ([`AlertScalingStatus`], kept in its status): the latest
//! known state of each scale-up alert episode, keyed by fingerprint and ordered by
//! `startsAt`, so that
//! - a resend of the same notification changes nothing (the state compares equal, and the
//!   cooldown blocks a second step);
//! - a stale `resolved` (an older episode's `startsAt`) after a newer `firing` is ignored,
//!   and so is a stale `firing` after the same episode's `resolved`;
//! - scale-down is timed from the alerts' own `endsAt`, not from when a notification
//!   happened to arrive.
//!
//! Steps: up by `step` (to at most `maxReplicas`) on a notification while a scale-up alert
//! fires and the last step is at least `cooldownSeconds` old; down by `step` (to at least
//! `minReplicas`) once every scale-up alert has been resolved for `cooldownSeconds` and the
//! last step is as old — the reconciler's timer takes those steps, since Alertmanager sends
//! nothing more once a group is resolved. A step written to the status but not yet to
//! the scale subresource (a crash between the two writes) is completed within its cooldown
//! (after [`COMPLETION_GRACE`], so the writer that recorded it is not raced).

use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime as Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::payload::IncomingAlert;
use crate::crd::{
    AlertRecord, AlertScalingStatus, AlertState, AutoscalingBackend, InferenceDeploymentSpec,
};

/// Most alert records kept per InferenceDeployment; the oldest resolved ones go first.
pub const MAX_RECORDS: usize = 32;

/// How old a recorded step must be before another evaluation completes it: the writer
/// that recorded it normally sets the replicas within milliseconds, and must not be raced.
pub const COMPLETION_GRACE: SignedDuration = SignedDuration::from_secs(10);

/// The alerts backend's settings of one InferenceDeployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `autoscaling.minReplicas`.
    pub min: i32,
    /// `autoscaling.maxReplicas`.
    pub max: i32,
    /// `autoscaling.alerts.step`.
    pub step: i32,
    /// `autoscaling.alerts.cooldownSeconds`.
    pub cooldown: SignedDuration,
}

impl Settings {
    /// The settings, or why the alerts backend does not scale this spec.
    ///
    /// # Errors
    /// A sentence saying which backend (or none) the spec uses.
    pub fn of(spec: &InferenceDeploymentSpec) -> Result<Self, String> {
        let Some(a) = &spec.autoscaling else {
            return Err("spec.autoscaling is not set: the replica count is fixed".into());
        };
        if !a.enabled {
            return Err(
                "spec.autoscaling.enabled is false: the replica count is pinned to spec.replicas"
                    .into(),
            );
        }
        if a.backend != AutoscalingBackend::Alerts {
            return Err(format!(
                "spec.autoscaling.backend is {}: only the alerts backend is scaled by alerts",
                a.backend.as_str()
            ));
        }
        let alerts = a.alerts.clone().unwrap_or_default();
        Ok(Self {
            min: a.min_replicas,
            max: a.max_replicas,
            step: alerts.step(),
            cooldown: SignedDuration::from_secs(i64::from(alerts.cooldown_seconds())),
        })
    }
}

/// How the alerts of one notification compared with the stored state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MergeCounts {
    /// New episodes (unknown fingerprint, or a later `startsAt`).
    pub new: u32,
    /// Known episodes that moved from firing to resolved.
    pub resolved: u32,
    /// Exactly what the state already says (resends).
    pub unchanged: u32,
    /// Older than the state (out-of-order deliveries): ignored.
    pub stale: u32,
    /// Not scale-up alerts (no `candela_autoscaling="scale-up"` label): ignored.
    pub other: u32,
    /// Scale-up alerts that fire according to the merged state (new episodes and resends
    /// of known firing ones): the evidence a step up needs.
    pub firing: u32,
}

/// Direction of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
}

/// What to do with `spec.replicas`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Set `spec.replicas` to `to`.
    Scale {
        /// The new replica count.
        to: i32,
        /// Up or down.
        direction: Direction,
        /// Why, for the event and the status.
        reason: String,
        /// Completes a step already recorded in the status (no new record).
        completes_recorded_step: bool,
    },
    /// Leave it.
    Hold {
        /// Why.
        reason: String,
        /// When a scale-down step becomes due (the reconciler's timer).
        due: Option<Timestamp>,
    },
}

/// The outcome of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// State to store (equal to the old one when nothing changed).
    pub state: AlertScalingStatus,
    /// What to do.
    pub decision: Decision,
    /// How the notification's alerts compared with the old state.
    pub counts: MergeCounts,
}

/// Evaluates a notification's alerts (empty for the reconciler's timer) against the
/// stored state.
pub fn plan(
    settings: &Settings,
    replicas: i32,
    old: &AlertScalingStatus,
    incoming: &[IncomingAlert],
    now: Timestamp,
) -> Plan {
    let (mut state, counts) = merge(old, incoming, now);
    let decision = decide(settings, replicas, &state, counts.firing > 0, now);
    if let Decision::Scale {
        to,
        reason,
        completes_recorded_step: false,
        direction,
    } = &decision
    {
        state.last_scale_time = Some(Time(now));
        state.last_scale_from = Some(replicas);
        state.last_scale_to = Some(*to);
        let verb = match direction {
            Direction::Up => "ScaledUp",
            Direction::Down => "ScaledDown",
        };
        state.last_scale_reason = Some(format!("{verb} {replicas} -> {to}: {reason}"));
    }
    Plan {
        state,
        decision,
        counts,
    }
}

/// Folds a notification's scale-up alerts into the state.
pub fn merge(
    old: &AlertScalingStatus,
    incoming: &[IncomingAlert],
    now: Timestamp,
) -> (AlertScalingStatus, MergeCounts) {
    let mut state = old.clone();
    let mut counts = MergeCounts::default();
    let mut latest_end: Option<Timestamp> = None;
    for alert in incoming {
        if !alert.scale_up {
            counts.other += 1;
            continue;
        }
        let record = AlertRecord {
            alertname: alert.alertname.clone(),
            fingerprint: alert.fingerprint.clone(),
            status: alert.status,
            starts_at: Time(alert.starts_at),
            ends_at: alert.ends_at.map(Time),
        };
        let end = alert.ends_at.unwrap_or(now);
        match state
            .alerts
            .iter_mut()
            .find(|r| r.fingerprint == alert.fingerprint)
        {
            None => {
                counts.new += 1;
                match alert.status {
                    AlertState::Firing => counts.firing += 1,
                    AlertState::Resolved => latest_end = latest_end.max(Some(end)),
                }
                state.alerts.push(record);
            }
            Some(known) if alert.starts_at > known.starts_at.0 => {
                counts.new += 1;
                match alert.status {
                    AlertState::Firing => counts.firing += 1,
                    AlertState::Resolved => latest_end = latest_end.max(Some(end)),
                }
                *known = record;
            }
            Some(known) if alert.starts_at < known.starts_at.0 => counts.stale += 1,
            Some(known) => match (known.status, alert.status) {
                (AlertState::Firing, AlertState::Resolved) => {
                    counts.resolved += 1;
                    latest_end = latest_end.max(Some(end));
                    *known = record;
                }
                (AlertState::Resolved, AlertState::Firing) => counts.stale += 1,
                (AlertState::Firing, AlertState::Firing) => {
                    counts.unchanged += 1;
                    counts.firing += 1;
                }
                (AlertState::Resolved, AlertState::Resolved) => counts.unchanged += 1,
            },
        }
    }
    if state.alerts.iter().any(|r| r.status == AlertState::Firing) {
        state.clear_since = None;
    } else if let Some(end) = latest_end {
        let previous = state.clear_since.as_ref().map(|t| t.0);
        state.clear_since = Some(Time(previous.max(Some(end)).unwrap_or(end)));
    }
    prune(&mut state.alerts);
    (state, counts)
}

/// Sorts records by fingerprint (a stable serialization, so resends compare equal) and
/// drops the oldest resolved ones beyond [`MAX_RECORDS`].
fn prune(records: &mut Vec<AlertRecord>) {
    if records.len() > MAX_RECORDS {
        // Firing first, then the most recent; keep the head.
        records.sort_by(|a, b| {
            (
                a.status == AlertState::Resolved,
                std::cmp::Reverse(a.starts_at.0),
            )
                .cmp(&(
                    b.status == AlertState::Resolved,
                    std::cmp::Reverse(b.starts_at.0),
                ))
        });
        records.truncate(MAX_RECORDS);
    }
    records.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
}

/// The decision for `replicas` given the (merged) state. `notified_firing`: the
/// notification being handled carries a scale-up alert that fires (steps up need that
/// fresh evidence; the timer only steps down, so a lost `resolved` cannot drive the
/// replicas to the maximum on its own).
pub fn decide(
    settings: &Settings,
    replicas: i32,
    state: &AlertScalingStatus,
    notified_firing: bool,
    now: Timestamp,
) -> Decision {
    let Settings {
        min,
        max,
        step,
        cooldown,
    } = *settings;
    let scale = |to: i32, reason: String| Decision::Scale {
        to,
        direction: if to > replicas {
            Direction::Up
        } else {
            Direction::Down
        },
        reason,
        completes_recorded_step: false,
    };
    let hold = |reason: String, due: Option<Timestamp>| Decision::Hold { reason, due };
    let last = state.last_scale_time.as_ref().map(|t| t.0);
    let cooldown_end = last.map(|t| add(t, cooldown));

    // A recorded step whose scale write did not happen (or was undone) within its cooldown.
    if let (Some(from), Some(to), Some(end)) =
        (state.last_scale_from, state.last_scale_to, cooldown_end)
        && replicas == from
        && to != from
        && now < end
        && last.is_some_and(|t| now >= add(t, COMPLETION_GRACE))
        && (min..=max).contains(&to)
    {
        return Decision::Scale {
            to,
            direction: if to > from {
                Direction::Up
            } else {
                Direction::Down
            },
            reason: format!("completing the step recorded at {}", last.unwrap_or(now)),
            completes_recorded_step: true,
        };
    }
    if replicas < min {
        return scale(min, format!("below minReplicas {min}"));
    }
    if replicas > max {
        return scale(max, format!("above maxReplicas {max}"));
    }
    let firing: Vec<&AlertRecord> = state
        .alerts
        .iter()
        .filter(|r| r.status == AlertState::Firing)
        .collect();
    if !firing.is_empty() {
        let mut names: Vec<&str> = firing.iter().map(|r| r.alertname.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let since = firing.iter().map(|r| r.starts_at.0).min().unwrap_or(now);
        let what = format!("{} firing since {since}", names.join(", "));
        if replicas >= max {
            return hold(format!("{what}; at maxReplicas {max}"), None);
        }
        if !notified_firing {
            return hold(
                format!("{what}; the next step up waits for Alertmanager's next notification"),
                None,
            );
        }
        if let Some(end) = cooldown_end
            && now < end
        {
            return hold(
                format!("{what}; cooldown after the last step until {end}"),
                None,
            );
        }
        return scale((replicas.saturating_add(step)).min(max), what);
    }
    let Some(clear) = state.clear_since.as_ref().map(|t| t.0) else {
        return hold("no scale-up alert has fired".into(), None);
    };
    let mut what = format!("all scale-up alerts resolved since {clear}");
    if replicas <= min {
        let _ = write!(what, "; at minReplicas {min}");
        return hold(what, None);
    }
    let due = add(last.map_or(clear, |l| l.max(clear)), cooldown);
    if now < due {
        let _ = write!(what, "; next step down at {due}");
        return hold(what, Some(due));
    }
    let _ = write!(what, " (cooldown {}s)", cooldown.as_secs());
    scale((replicas.saturating_sub(step)).max(min), what)
}

fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings = Settings {
        min: 1,
        max: 3,
        step: 1,
        cooldown: SignedDuration::from_secs(60),
    };

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("timestamp")
    }

    fn alert(fp: &str, status: AlertState, starts: i64, ends: Option<i64>) -> IncomingAlert {
        IncomingAlert {
            alertname: format!("Alert{fp}"),
            fingerprint: fp.into(),
            status,
            starts_at: at(starts),
            ends_at: ends.map(at),
            scale_up: true,
        }
    }

    use AlertState::{Firing, Resolved};

    /// Applies a plan as the API side would: the state, and the replicas when it scales.
    fn apply(
        replicas: &mut i32,
        state: &mut AlertScalingStatus,
        incoming: &[IncomingAlert],
        now: i64,
    ) -> Plan {
        let p = plan(&S, *replicas, state, incoming, at(now));
        *state = p.state.clone();
        if let Decision::Scale { to, .. } = p.decision {
            *replicas = to;
        }
        p
    }

    #[test]
    fn firing_steps_up_once_per_cooldown_up_to_max() {
        let (mut r, mut st) = (1, AlertScalingStatus::default());
        let fire = [alert("a", Firing, 0, None)];
        apply(&mut r, &mut st, &fire, 10);
        assert_eq!(r, 2);
        assert_eq!(st.last_scale_from, Some(1));
        assert_eq!(st.last_scale_to, Some(2));
        let reason = st.last_scale_reason.clone().unwrap();
        assert!(
            reason.starts_with("ScaledUp 1 -> 2: Alerta firing since"),
            "{reason}"
        );
        // A resend within the cooldown changes nothing, not even the state.
        let before = st.clone();
        let p = apply(&mut r, &mut st, &fire, 30);
        assert_eq!((r, &st), (2, &before));
        assert_eq!(p.counts.unchanged, 1);
        assert!(
            matches!(p.decision, Decision::Hold { ref reason, .. } if reason.contains("cooldown"))
        );
        // After the cooldown, the next resend steps again; then max holds.
        apply(&mut r, &mut st, &fire, 71);
        assert_eq!(r, 3);
        let p = apply(&mut r, &mut st, &fire, 200);
        assert_eq!(r, 3);
        assert!(
            matches!(p.decision, Decision::Hold { ref reason, .. } if reason.contains("at maxReplicas 3"))
        );
    }

    #[test]
    fn scale_down_waits_for_cooldown_after_the_alerts_end() {
        let (mut r, mut st) = (3, AlertScalingStatus::default());
        apply(&mut r, &mut st, &[alert("a", Firing, 0, None)], 5);
        assert_eq!(r, 3, "at max");
        // Resolved at t=100 (its endsAt), delivered at t=130.
        let p = apply(&mut r, &mut st, &[alert("a", Resolved, 0, Some(100))], 130);
        assert_eq!(st.clear_since, Some(Time(at(100))));
        assert_eq!(p.counts.resolved, 1);
        assert_eq!(
            p.decision,
            Decision::Hold {
                reason: format!(
                    "all scale-up alerts resolved since {}; next step down at {}",
                    at(100),
                    at(160)
                ),
                due: Some(at(160)),
            }
        );
        assert_eq!(r, 3);
        // The timer (no alerts) at the due time steps down, then again a cooldown later.
        apply(&mut r, &mut st, &[], 160);
        assert_eq!(r, 2);
        let p = apply(&mut r, &mut st, &[], 200);
        assert!(matches!(p.decision, Decision::Hold { due: Some(d), .. } if d == at(220)));
        apply(&mut r, &mut st, &[], 220);
        assert_eq!(r, 1);
        let p = apply(&mut r, &mut st, &[], 1000);
        assert!(
            matches!(p.decision, Decision::Hold { ref reason, due: None } if reason.ends_with("at minReplicas 1"))
        );
    }

    #[test]
    fn stale_resolved_after_newer_firing_does_not_scale_down() {
        let (mut r, mut st) = (1, AlertScalingStatus::default());
        // Episode 1 fires and resolves; episode 2 (same fingerprint, later startsAt) fires.
        apply(&mut r, &mut st, &[alert("a", Firing, 0, None)], 1);
        apply(&mut r, &mut st, &[alert("a", Resolved, 0, Some(50))], 51);
        apply(&mut r, &mut st, &[alert("a", Firing, 300, None)], 301);
        assert_eq!(r, 3);
        // Episode 1's resolved arrives again, late: stale, nothing changes, ever.
        let before = st.clone();
        let p = apply(&mut r, &mut st, &[alert("a", Resolved, 0, Some(50))], 302);
        assert_eq!(p.counts.stale, 1);
        assert_eq!(st, before);
        let p = apply(&mut r, &mut st, &[], 10_000);
        assert_eq!(r, 3);
        assert!(matches!(p.decision, Decision::Hold { .. }));
    }

    #[test]
    fn stale_firing_after_the_same_episode_resolved_is_ignored() {
        let (mut r, mut st) = (2, AlertScalingStatus::default());
        apply(&mut r, &mut st, &[alert("a", Resolved, 0, Some(50))], 60);
        assert_eq!(st.clear_since, Some(Time(at(50))));
        let before = st.clone();
        let p = apply(&mut r, &mut st, &[alert("a", Firing, 0, None)], 61);
        assert_eq!(p.counts.stale, 1);
        assert_eq!(st, before);
        assert_eq!(r, 2);
        apply(&mut r, &mut st, &[], 110);
        assert_eq!(r, 1, "a cooldown after the end it stepped down");
    }

    #[test]
    fn one_firing_alert_keeps_the_target_busy() {
        let (mut r, mut st) = (1, AlertScalingStatus::default());
        apply(
            &mut r,
            &mut st,
            &[alert("a", Firing, 0, None), alert("b", Firing, 0, None)],
            1,
        );
        apply(
            &mut r,
            &mut st,
            &[
                alert("a", Resolved, 0, Some(10)),
                alert("b", Firing, 0, None),
            ],
            11,
        );
        assert_eq!(st.clear_since, None, "b still fires");
        let p = apply(&mut r, &mut st, &[], 500);
        assert_eq!(r, 2, "the timer never steps up");
        assert!(
            matches!(p.decision, Decision::Hold { ref reason, .. } if reason.contains("next notification"))
        );
        apply(&mut r, &mut st, &[alert("b", Firing, 0, None)], 501);
        assert_eq!(r, 3, "b's resend after the cooldown steps up");
    }

    #[test]
    fn non_scale_up_alerts_change_nothing() {
        let mut other = alert("x", Firing, 0, None);
        other.scale_up = false;
        let p = plan(&S, 1, &AlertScalingStatus::default(), &[other], at(1));
        assert_eq!(p.counts.other, 1);
        assert_eq!(p.state, AlertScalingStatus::default());
        assert!(matches!(p.decision, Decision::Hold { .. }));
    }

    #[test]
    fn bounds_are_enforced() {
        let st = AlertScalingStatus::default();
        let p = plan(&S, 0, &st, &[], at(0));
        assert!(matches!(p.decision, Decision::Scale { to: 1, .. }));
        let p = plan(&S, 7, &st, &[], at(0));
        assert!(matches!(
            p.decision,
            Decision::Scale {
                to: 3,
                direction: Direction::Down,
                ..
            }
        ));
        let big = Settings { step: 5, ..S };
        let p = plan(&big, 1, &st, &[alert("a", Firing, 0, None)], at(0));
        assert!(matches!(p.decision, Decision::Scale { to: 3, .. }));
    }

    #[test]
    fn a_recorded_step_not_yet_applied_is_completed_within_its_cooldown() {
        let (mut r, mut st) = (1, AlertScalingStatus::default());
        apply(&mut r, &mut st, &[alert("a", Firing, 0, None)], 1);
        // The scale write was lost: replicas still 1, the state says 1 -> 2. Within the
        // grace the writer may still be at it; after it, the step is completed.
        let p = plan(&S, 1, &st, &[], at(5));
        assert!(
            matches!(p.decision, Decision::Hold { .. }),
            "{:?}",
            p.decision
        );
        let p = plan(&S, 1, &st, &[], at(12));
        assert!(matches!(
            p.decision,
            Decision::Scale {
                to: 2,
                completes_recorded_step: true,
                ..
            }
        ));
        assert_eq!(p.state, st, "completing records nothing new");
        // After its cooldown it is history, not an order.
        let p = plan(&S, 1, &st, &[], at(100));
        assert!(!matches!(
            p.decision,
            Decision::Scale {
                completes_recorded_step: true,
                ..
            }
        ));
    }

    #[test]
    fn records_are_bounded_and_sorted() {
        let many: Vec<_> = (0..40)
            .map(|i| {
                alert(
                    &format!("{i:02}"),
                    if i == 0 { Firing } else { Resolved },
                    i,
                    Some(i + 1),
                )
            })
            .collect();
        let (st, counts) = merge(&AlertScalingStatus::default(), &many, at(100));
        assert_eq!(counts.new, 40);
        assert_eq!(st.alerts.len(), MAX_RECORDS);
        assert!(
            st.alerts.iter().any(|r| r.fingerprint == "00"),
            "firing kept"
        );
        assert!(
            !st.alerts.iter().any(|r| r.fingerprint == "01"),
            "oldest resolved dropped"
        );
        assert!(
            st.alerts
                .windows(2)
                .all(|w| w[0].fingerprint < w[1].fingerprint)
        );
    }
}
