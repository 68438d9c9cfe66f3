//! The statistics behind the report and `compare`: Wilson intervals for proportions, seeded
//! percentile bootstrap intervals for other statistics, the paired bootstrap of a difference,
//! and the exact McNemar test for paired pass/fail outcomes. Every random draw comes from a
//! fixed seed, so the same run gives the same intervals every time.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::factorial::ln_binomial;

/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 1000;

/// The seed of every bootstrap.
pub const SEED: u64 = 0x1f_e7a1;

/// Confidence level of every interval.
pub const LEVEL: f64 = 0.95;

/// The two-sided normal quantile for [`LEVEL`] (1.95996…).
pub fn z() -> f64 {
    // Normal(0, 1) always exists; the fallback is the same number.
    Normal::new(0.0, 1.0).map_or(1.959_963_984_540_054, |n| n.inverse_cdf(1.0 - (1.0 - LEVEL) / 2.0))
}

/// The Wilson score interval of `successes` out of `n`; `None` when `n` is 0.
pub fn wilson(successes: u64, n: u64) -> Option<[f64; 2]> {
    if n == 0 {
        return None;
    }
    let (k, n) = (successes as f64, n as f64);
    let z = z();
    let p = k / n;
    let denominator = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denominator;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denominator;
    Some([(centre - half).max(0.0), (centre + half).min(1.0)])
}

/// What a bootstrap recomputes on each resample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    Mean,
    /// Population standard deviation, as the `std_dev` metric computes it.
    StdDev,
    Max,
    Min,
}

impl Statistic {
    pub fn of(self, values: &[f64]) -> f64 {
        let n = values.len() as f64;
        match self {
            Statistic::Mean => values.iter().sum::<f64>() / n,
            Statistic::StdDev => {
                let mean = values.iter().sum::<f64>() / n;
                (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt()
            }
            Statistic::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Statistic::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
        }
    }
}

/// The 2.5th and 97.5th percentiles of `draws` (sorted in place).
fn percentile_interval(draws: &mut [f64]) -> [f64; 2] {
    draws.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((draws.len() - 1) as f64 * q).round() as usize;
        draws[i.min(draws.len() - 1)]
    };
    let tail = (1.0 - LEVEL) / 2.0;
    [at(tail), at(1.0 - tail)]
}

/// A percentile bootstrap interval of `statistic` over `values`; `None` for fewer than 2
/// values.
pub fn bootstrap(values: &[f64], statistic: Statistic) -> Option<[f64; 2]> {
    if values.len() < 2 {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(SEED);
    let n = values.len();
    let mut resample = vec![0.0; n];
    let mut draws = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        let value = if statistic == Statistic::Mean {
            // The common case without the copy.
            (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64
        } else {
            for slot in resample.iter_mut() {
                *slot = values[rng.random_range(0..n)];
            }
            statistic.of(&resample)
        };
        draws.push(value);
    }
    Some(percentile_interval(&mut draws))
}

/// The paired bootstrap of `statistic(b) − statistic(a)` over pairs `(a[i], b[i])`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedBootstrap {
    pub ci: [f64; 2],
    /// Two-sided: twice the share of resampled differences on the far side of 0.
    pub p_value: f64,
}

pub fn paired_bootstrap(a: &[f64], b: &[f64], statistic: Statistic) -> Option<PairedBootstrap> {
    let n = a.len().min(b.len());
    if n < 2 {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(SEED);
    let (mut ra, mut rb) = (vec![0.0; n], vec![0.0; n]);
    let mut draws = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        let delta = if statistic == Statistic::Mean {
            (0..n)
                .map(|_| {
                    let i = rng.random_range(0..n);
                    b[i] - a[i]
                })
                .sum::<f64>()
                / n as f64
        } else {
            for k in 0..n {
                let i = rng.random_range(0..n);
                ra[k] = a[i];
                rb[k] = b[i];
            }
            statistic.of(&rb) - statistic.of(&ra)
        };
        draws.push(delta);
    }
    let at_or_below = draws.iter().filter(|d| **d <= 0.0).count();
    let at_or_above = draws.iter().filter(|d| **d >= 0.0).count();
    let p_value = (2.0 * at_or_below.min(at_or_above) as f64 / RESAMPLES as f64).min(1.0);
    Some(PairedBootstrap {
        ci: percentile_interval(&mut draws),
        p_value,
    })
}

/// The exact two-sided McNemar test on `b` pairs that went one way and `c` the other:
/// `min(1, 2·Σ_{k≤min(b,c)} C(b+c, k) / 2^(b+c))`, 1 when there are no discordant pairs.
/// Summed in log space, so it stays exact for hundreds of thousands of pairs.
pub fn mcnemar(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let terms: Vec<f64> = (0..=b.min(c)).map(|k| ln_binomial(n, k)).collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ln_tail = max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln() - n as f64 * std::f64::consts::LN_2;
    (2.0 * ln_tail.exp()).min(1.0)
}

/// A p-value as people read it: four decimals, or two significant digits below 0.0001.
pub fn format_p(p: f64) -> String {
    if p >= 0.0001 || p == 0.0 {
        format!("{p:.4}")
    } else {
        format!("{p:.1e}")
    }
}

/// The nearest-rank quantile `q` (0–1) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    Some(sorted[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn wilson_matches_the_textbook_interval() {
        // 81 of 263 (Wilson 1927 style example): [0.2553, 0.3662].
        let [lo, hi] = wilson(81, 263).unwrap();
        assert!(close(lo, 0.2553, 1e-4) && close(hi, 0.3662, 1e-4), "{lo} {hi}");
        let [lo, hi] = wilson(0, 10).unwrap();
        assert!(close(lo, 0.0, 1e-12), "{lo}");
        assert!(close(hi, 0.2775, 1e-4), "{hi}");
        assert!(wilson(0, 0).is_none());
        assert!(close(z(), 1.959_963_984_540_054, 1e-9));
    }

    #[test]
    fn mcnemar_is_the_exact_binomial_tail() {
        // b=1, c=6: 2 · (1 + 7) / 128 = 0.125.
        assert!(close(mcnemar(1, 6), 0.125, 1e-12));
        assert!(close(mcnemar(6, 1), 0.125, 1e-12));
        assert_eq!(mcnemar(0, 0), 1.0);
        assert_eq!(mcnemar(5, 5), 1.0);
        // b=0, c=10: 2 / 1024.
        assert!(close(mcnemar(0, 10), 2.0 / 1024.0, 1e-15));
        // Large counts stay finite and small: 4000 against 5000.
        let p = mcnemar(4000, 5000);
        assert!(p > 0.0 && p < 1e-20, "{p}");
    }

    #[test]
    fn a_bootstrap_interval_covers_the_mean_and_repeats_exactly() {
        let values: Vec<f64> = (0..200).map(|i| f64::from(i % 7)).collect();
        let mean = Statistic::Mean.of(&values);
        let a = bootstrap(&values, Statistic::Mean).unwrap();
        assert!(a[0] < mean && mean < a[1], "{a:?} around {mean}");
        assert_eq!(bootstrap(&values, Statistic::Mean), Some(a), "seeded");
        assert!(bootstrap(&[1.0], Statistic::Mean).is_none());
    }

    #[test]
    fn a_paired_bootstrap_sees_a_consistent_shift() {
        let a: Vec<f64> = (0..100).map(|i| f64::from(i % 10)).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 0.5).collect();
        let r = paired_bootstrap(&a, &b, Statistic::Mean).unwrap();
        assert!(close(r.ci[0], 0.5, 1e-9) && close(r.ci[1], 0.5, 1e-9), "{r:?}");
        assert_eq!(r.p_value, 0.0);
        let same = paired_bootstrap(&a, &a, Statistic::Mean).unwrap();
        assert_eq!(same.p_value, 1.0);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&sorted, 0.5), Some(51.0));
        assert_eq!(quantile(&sorted, 0.95), Some(96.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
