//! Metric samples over time: a [`Series`] is the snapshots of one or more
//! targets taken across a window, and the aggregations doctor reads from it,
//! computed the way PromQL would over the same samples:
//!
//! - gauges per snapshot, summed or maxed over label sets (`sum`, `max`);
//! - counter increases with reset handling (a drop restarts the counter from
//!   zero, as `increase()` assumes), summed over label sets;
//! - histogram bucket increases per `le`, summed over other labels, and
//!   `histogram_quantile` over them (linear interpolation inside the bucket; the
//!   highest finite bound when the rank falls in `+Inf`).
//!
//! Pure: no I/O.

use std::collections::BTreeMap;

use super::expo::Sample;

/// All samples of one scrape (or one Prometheus evaluation step), at `t` seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Unix time, seconds.
    pub t: f64,
    pub samples: Vec<Sample>,
}

/// Snapshots in time order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub snapshots: Vec<Snapshot>,
}

/// A gauge's aggregated value at each snapshot where it was present.
pub type Trace = Vec<(f64, f64)>;

/// Labels of a sample minus `le`, as a key.
fn key(s: &Sample) -> Vec<(String, String)> {
    s.labels
        .iter()
        .filter(|(k, _)| k != "le")
        .cloned()
        .collect()
}

impl Series {
    /// Builds a series, sorting snapshots by time.
    pub fn new(mut snapshots: Vec<Snapshot>) -> Self {
        snapshots.sort_by(|a, b| a.t.total_cmp(&b.t));
        Self { snapshots }
    }

    /// First to last snapshot, seconds.
    pub fn span(&self) -> f64 {
        match (self.snapshots.first(), self.snapshots.last()) {
            (Some(a), Some(b)) => b.t - a.t,
            _ => 0.0,
        }
    }

    /// Whether any snapshot has a sample named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.snapshots
            .iter()
            .any(|s| s.samples.iter().any(|x| x.name == name))
    }

    /// The first of `names` present anywhere in the series.
    pub fn first_present<'a>(&self, names: &[&'a str]) -> Option<&'a str> {
        names.iter().copied().find(|n| self.has(n))
    }

    /// Distinct label sets of `name` in the last snapshot that has it.
    pub fn label_sets(&self, name: &str) -> usize {
        self.snapshots
            .iter()
            .rev()
            .map(|s| s.samples.iter().filter(|x| x.name == name).count())
            .find(|&n| n > 0)
            .unwrap_or(0)
    }

    fn gauge(&self, name: &str, fold: fn(f64, f64) -> f64) -> Trace {
        self.snapshots
            .iter()
            .filter_map(|s| {
                s.samples
                    .iter()
                    .filter(|x| x.name == name && !x.value.is_nan())
                    .map(|x| x.value)
                    .reduce(fold)
                    .map(|v| (s.t, v))
            })
            .collect()
    }

    /// A gauge summed over label sets, per snapshot.
    pub fn sum(&self, name: &str) -> Trace {
        self.gauge(name, |a, b| a + b)
    }

    /// A gauge's largest value over label sets (the worst target), per snapshot.
    pub fn max(&self, name: &str) -> Trace {
        self.gauge(name, f64::max)
    }

    /// A counter's increase between snapshot indices `from` and `to` (inclusive),
    /// summed over the label sets that `keep` accepts. A value lower than the
    /// previous one is a reset: the counter restarted from zero.
    pub fn increase_where(
        &self,
        name: &str,
        from: usize,
        to: usize,
        keep: impl Fn(&Sample) -> bool,
    ) -> f64 {
        let mut last: BTreeMap<Vec<(String, String)>, f64> = BTreeMap::new();
        let mut total = 0.0;
        for snap in self.snapshots.iter().take(to + 1).skip(from) {
            for s in snap.samples.iter().filter(|s| s.name == name && keep(s)) {
                if s.value.is_nan() {
                    continue;
                }
                let k = s.labels.clone();
                if let Some(prev) = last.insert(k, s.value) {
                    total += if s.value >= prev {
                        s.value - prev
                    } else {
                        s.value
                    };
                }
            }
        }
        total
    }

    /// A counter's increase over the whole series.
    pub fn increase(&self, name: &str) -> f64 {
        self.increase_where(name, 0, self.snapshots.len().saturating_sub(1), |_| true)
    }

    /// A histogram's bucket increases between snapshot indices, per `le` (summed
    /// over other labels), sorted by bound: `sum by (le) (increase(x_bucket))`.
    pub fn bucket_increase(&self, family: &str, from: usize, to: usize) -> Vec<(f64, f64)> {
        let name = format!("{family}_bucket");
        let mut per_le: BTreeMap<(Vec<(String, String)>, String), f64> = BTreeMap::new();
        let mut last: BTreeMap<(Vec<(String, String)>, String), f64> = BTreeMap::new();
        for snap in self.snapshots.iter().take(to + 1).skip(from) {
            for s in snap.samples.iter().filter(|s| s.name == name) {
                let Some(le) = s.label("le") else { continue };
                let k = (key(s), le.to_string());
                if let Some(prev) = last.insert(k.clone(), s.value) {
                    let d = if s.value >= prev {
                        s.value - prev
                    } else {
                        s.value
                    };
                    *per_le.entry(k).or_default() += d;
                } else {
                    per_le.entry(k).or_default();
                }
            }
        }
        let mut by_bound: BTreeMap<String, f64> = BTreeMap::new();
        for ((_, le), v) in per_le {
            *by_bound.entry(le).or_default() += v;
        }
        let mut out: Vec<(f64, f64)> = by_bound
            .into_iter()
            .filter_map(|(le, v)| parse_le(&le).map(|b| (b, v)))
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    /// A histogram's observations and their mean over snapshot indices
    /// (`increase(x_sum) / increase(x_count)`); `None` without observations.
    pub fn histogram_mean(&self, family: &str, from: usize, to: usize) -> Option<(f64, f64)> {
        let count = self.increase_where(&format!("{family}_count"), from, to, |_| true);
        let sum = self.increase_where(&format!("{family}_sum"), from, to, |_| true);
        (count > 0.0).then(|| (count, sum / count))
    }

    /// The index of the snapshot nearest the middle of the window.
    pub fn middle(&self) -> usize {
        let Some(first) = self.snapshots.first() else {
            return 0;
        };
        let mid = first.t + self.span() / 2.0;
        self.snapshots
            .iter()
            .enumerate()
            .min_by(|a, b| (a.1.t - mid).abs().total_cmp(&(b.1.t - mid).abs()))
            .map_or(0, |(i, _)| i)
    }
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        _ => le.parse().ok(),
    }
}

/// `histogram_quantile(q, buckets)` as Prometheus computes it, over cumulative
/// bucket counts sorted by upper bound (the last one `+Inf`). `None` when there
/// are no observations, fewer than two buckets, or no `+Inf` bucket.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) || buckets.len() < 2 {
        return None;
    }
    let &(top, total) = buckets.last()?;
    if top != f64::INFINITY || total <= 0.0 {
        return None;
    }
    // Counts must not decrease with the bound (scrapes are not atomic): clamp, as Prometheus does.
    let mut counts = Vec::with_capacity(buckets.len());
    let mut run: f64 = 0.0;
    for &(_, c) in buckets {
        run = run.max(c);
        counts.push(run);
    }
    let total = counts[counts.len() - 1];
    let rank = q * total;
    let i = counts
        .iter()
        .position(|&c| c >= rank)
        .unwrap_or(counts.len() - 1);
    if i == buckets.len() - 1 {
        return Some(buckets[buckets.len() - 2].0);
    }
    if i == 0 && buckets[0].0 <= 0.0 {
        return Some(buckets[0].0);
    }
    let (start, prev) = if i == 0 {
        (0.0, 0.0)
    } else {
        (buckets[i - 1].0, counts[i - 1])
    };
    let end = buckets[i].0;
    let in_bucket = counts[i] - prev;
    if in_bucket <= 0.0 {
        return Some(end);
    }
    Some(start + (end - start) * (rank - prev) / in_bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    fn snap(t: f64, samples: Vec<Sample>) -> Snapshot {
        Snapshot { t, samples }
    }

    #[test]
    fn quantile_matches_prometheus() {
        // 100 observations: 50 in (0, 0.1], 40 in (0.1, 0.5], 10 in (0.5, 1].
        let b = [
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(histogram_quantile(0.5, &b), Some(0.1));
        assert!((histogram_quantile(0.25, &b).unwrap() - 0.05).abs() < 1e-12);
        assert!((histogram_quantile(0.7, &b).unwrap() - 0.3).abs() < 1e-12);
        assert!((histogram_quantile(0.95, &b).unwrap() - 0.75).abs() < 1e-12);
        // Rank in +Inf: the highest finite bound.
        let b = [(0.1, 1.0), (0.5, 2.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.95, &b), Some(0.5));
        // No observations, no +Inf, a single bucket: no answer.
        assert_eq!(
            histogram_quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(histogram_quantile(0.5, &[(0.1, 1.0), (0.2, 2.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(f64::INFINITY, 2.0)]), None);
        // A non-monotonic scrape is clamped, not trusted: [5, 4, 10] reads as [5, 5, 10].
        let b = [(0.1, 5.0), (0.2, 4.0), (0.3, 10.0), (f64::INFINITY, 10.0)];
        assert!((histogram_quantile(0.6, &b).unwrap() - 0.22).abs() < 1e-12);
    }

    #[test]
    fn counter_increase_handles_resets_and_label_sets() {
        let c = "vllm:generation_tokens_total";
        let series = Series::new(vec![
            snap(
                10.0,
                vec![s(c, &[("pod", "a")], 100.0), s(c, &[("pod", "b")], 5.0)],
            ),
            snap(0.0, vec![s(c, &[("pod", "a")], 90.0)]),
            snap(
                20.0,
                vec![s(c, &[("pod", "a")], 30.0), s(c, &[("pod", "b")], 15.0)],
            ),
        ]);
        assert_eq!(series.span(), 20.0);
        // a: 90 -> 100 (+10) -> reset to 30 (+30); b: appears at 5, -> 15 (+10).
        assert_eq!(series.increase(c), 50.0);
        assert_eq!(series.increase_where(c, 0, 1, |_| true), 10.0);
        assert_eq!(
            series.increase_where(c, 0, 2, |x| x.label("pod") == Some("b")),
            10.0
        );
        assert_eq!(series.middle(), 1);
    }

    #[test]
    fn gauges_sum_and_max_over_targets() {
        let g = "vllm:num_requests_waiting";
        let series = Series::new(vec![
            snap(
                0.0,
                vec![s(g, &[("pod", "a")], 3.0), s(g, &[("pod", "b")], 4.0)],
            ),
            snap(5.0, vec![]),
            snap(
                10.0,
                vec![s(g, &[("pod", "a")], f64::NAN), s(g, &[("pod", "b")], 1.0)],
            ),
        ]);
        assert_eq!(series.sum(g), vec![(0.0, 7.0), (10.0, 1.0)]);
        assert_eq!(series.max(g), vec![(0.0, 4.0), (10.0, 1.0)]);
        assert_eq!(series.label_sets(g), 2);
    }

    #[test]
    fn bucket_increases_sum_over_targets_per_bound() {
        let b = "h_bucket";
        let le = |pod: &'static str, le: &'static str, v: f64| s(b, &[("pod", pod), ("le", le)], v);
        let series = Series::new(vec![
            snap(
                0.0,
                vec![
                    le("a", "0.5", 1.0),
                    le("a", "+Inf", 2.0),
                    le("b", "0.5", 0.0),
                    le("b", "+Inf", 0.0),
                ],
            ),
            snap(
                5.0,
                vec![
                    le("a", "0.5", 3.0),
                    le("a", "+Inf", 6.0),
                    le("b", "0.5", 1.0),
                    le("b", "+Inf", 1.0),
                ],
            ),
        ]);
        assert_eq!(
            series.bucket_increase("h", 0, 1),
            vec![(0.5, 3.0), (f64::INFINITY, 5.0)]
        );
        let sum = |v| s("h_sum", &[], v);
        let count = |v| s("h_count", &[], v);
        let series = Series::new(vec![
            snap(0.0, vec![sum(1.0), count(2.0)]),
            snap(1.0, vec![sum(4.0), count(8.0)]),
        ]);
        assert_eq!(series.histogram_mean("h", 0, 1), Some((6.0, 0.5)));
        assert_eq!(series.histogram_mean("h", 0, 0), None);
    }
}
