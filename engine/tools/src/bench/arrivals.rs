//! When each request is sent: vLLM's arrival process, pure and seeded.
//!
//! Gaps between requests are gamma-distributed with shape `burstiness` and
//! scale `1 / (rate * burstiness)`, so the mean gap is `1 / rate` for every
//! burstiness and the variance is `1 / (rate² * burstiness)`: burstiness 1 is a
//! Poisson process, below 1 burstier, above 1 more uniform, infinity a fixed
//! interval. As vLLM does, the cumulative send times are then rescaled so the
//! last request goes out at exactly `n / rate`, which removes the 1–2 % run-to-run
//! spread of the sum and keeps throughput comparable across seeds.

use rand::Rng;
use rand_distr::{Distribution, Gamma};

/// Raw gaps (seconds) between consecutive requests, before rescaling.
/// An infinite `rate` sends everything at once (all gaps 0).
pub fn sample_gaps(n: usize, rate: f64, burstiness: f64, rng: &mut impl Rng) -> Vec<f64> {
    assert!(rate > 0.0, "request rate must be positive");
    assert!(burstiness > 0.0, "burstiness must be positive");
    if rate.is_infinite() {
        return vec![0.0; n];
    }
    if burstiness.is_infinite() {
        return vec![1.0 / rate; n];
    }
    let gamma = Gamma::new(burstiness, 1.0 / (rate * burstiness)).expect("positive parameters");
    (0..n).map(|_| gamma.sample(rng)).collect()
}

/// Send offsets (seconds from the benchmark start) for `n` requests: the
/// cumulative gaps, rescaled so the last offset is exactly `n / rate`.
pub fn send_offsets(n: usize, rate: f64, burstiness: f64, rng: &mut impl Rng) -> Vec<f64> {
    let mut offsets = sample_gaps(n, rate, burstiness, rng);
    for i in 1..offsets.len() {
        offsets[i] += offsets[i - 1];
    }
    if let Some(&last) = offsets.last()
        && last > 0.0
    {
        let factor = (n as f64 / rate) / last;
        for t in &mut offsets {
            *t *= factor;
        }
    }
    offsets
}

/// "Poisson process" or "Gamma distribution", as vLLM prints it.
pub fn distribution_name(burstiness: f64) -> &'static str {
    if burstiness == 1.0 {
        "Poisson process"
    } else {
        "Gamma distribution"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    }

    #[test]
    fn ten_thousand_gaps_have_mean_one_over_rate_within_three_percent() {
        for (rate, seed) in [(0.5, 1), (4.0, 2), (20.0, 3), (100.0, 4)] {
            for burstiness in [0.5, 1.0, 4.0] {
                let gaps = sample_gaps(10_000, rate, burstiness, &mut StdRng::seed_from_u64(seed));
                let (mean, _) = mean_var(&gaps);
                let err = (mean * rate - 1.0).abs();
                assert!(
                    err < 0.03,
                    "rate {rate} burstiness {burstiness}: mean {mean} (err {err})"
                );
            }
        }
    }

    #[test]
    fn burstiness_sets_the_variance_as_a_gamma_process() {
        let rate = 10.0;
        let mut variances = Vec::new();
        for burstiness in [0.25, 1.0, 4.0] {
            let gaps = sample_gaps(10_000, rate, burstiness, &mut StdRng::seed_from_u64(7));
            let (_, var) = mean_var(&gaps);
            let expected = 1.0 / (rate * rate * burstiness);
            assert!(
                (var / expected - 1.0).abs() < 0.12,
                "burstiness {burstiness}: variance {var}, gamma says {expected}"
            );
            variances.push(var);
        }
        // Burstier traffic (smaller burstiness) spreads the gaps more.
        assert!(variances[0] > 3.0 * variances[1] && variances[1] > 3.0 * variances[2]);
        // Poisson: exponential gaps have coefficient of variation 1.
        let gaps = sample_gaps(10_000, rate, 1.0, &mut StdRng::seed_from_u64(9));
        let (mean, var) = mean_var(&gaps);
        assert!((var.sqrt() / mean - 1.0).abs() < 0.05);
    }

    #[test]
    fn offsets_are_rescaled_to_end_at_n_over_rate_and_increase() {
        let offsets = send_offsets(1000, 8.0, 1.0, &mut StdRng::seed_from_u64(3));
        assert!((offsets[999] - 125.0).abs() < 1e-9);
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn infinite_rate_sends_at_once_and_infinite_burstiness_is_a_fixed_interval() {
        let mut rng = StdRng::seed_from_u64(0);
        assert!(
            send_offsets(5, f64::INFINITY, 1.0, &mut rng)
                .iter()
                .all(|&t| t == 0.0)
        );
        let fixed = send_offsets(4, 2.0, f64::INFINITY, &mut rng);
        assert_eq!(fixed, vec![0.5, 1.0, 1.5, 2.0]);
    }

    #[test]
    fn same_seed_same_schedule() {
        let a = send_offsets(50, 3.0, 0.7, &mut StdRng::seed_from_u64(42));
        let b = send_offsets(50, 3.0, 0.7, &mut StdRng::seed_from_u64(42));
        assert_eq!(a, b);
    }
}
