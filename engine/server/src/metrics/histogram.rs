//! A plain-data Prometheus histogram: fixed upper bounds, per-bucket counts, sum.
//! The engine thread owns the live ones; snapshots travel to `/metrics`, the
//! stats log, gRPC `WatchStats` and the sidecar, which all render the same data.

/// Counts per bucket (`counts[i]` for `bounds[i-1] < v <= bounds[i]`; the last is `+Inf`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: Vec<f64>) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        let counts = vec![0; bounds.len() + 1];
        Histogram {
            bounds,
            counts,
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i] += 1;
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(le, cumulative count)` pairs, `+Inf` last, as the exposition format lists them.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY));
        bounds.zip(self.counts.iter().scan(0u64, |acc, &c| {
            *acc += c;
            Some(*acc)
        }))
    }
}

/// vLLM's `build_1_2_5_buckets(max_value)`: 1, 2, 5, 10, 20, 50, … up to `max_value`.
pub fn buckets_1_2_5(max_value: usize) -> Vec<f64> {
    let mut out = Vec::new();
    let mut exponent = 1usize;
    loop {
        for m in [1, 2, 5] {
            let v = m * exponent;
            if v > max_value {
                return out;
            }
            out.push(v as f64);
        }
        exponent *= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_le_buckets() {
        let mut h = Histogram::new(vec![0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 2.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![2, 1, 1]);
        let cum: Vec<_> = h.cumulative().collect();
        assert_eq!(cum, vec![(0.1, 2), (1.0, 3), (f64::INFINITY, 4)]);
        assert!((h.sum - 2.65).abs() < 1e-12);
    }

    #[test]
    fn one_two_five_series_stops_at_the_max() {
        assert_eq!(
            buckets_1_2_5(100),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(buckets_1_2_5(8192).last(), Some(&5000.0));
    }
}
