//! Retrying failed attempts: the [`RetryPolicy`] a model declares (`retry:`, an lfeval
//! extension) and the jittered exponential [`backoff`] between attempts.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

/// How failed attempts are retried (an lfeval extension: `retry:` on a model).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in total, including the first.
    pub max_attempts: u32,
    /// Seconds before the first retry; doubles each time, with jitter.
    pub initial_backoff: f64,
    /// Upper bound on one backoff, in seconds.
    pub max_backoff: f64,
    /// Upper bound on a pause an endpoint asks for with `Retry-After` (or a snippet with
    /// `lfeval.RateLimited`), in seconds: a server answering `Retry-After: 100000` must not
    /// stop a run for a day.
    pub max_retry_after: f64,
}

/// `max_retry_after` when a model sets none.
pub const DEFAULT_MAX_RETRY_AFTER: f64 = 120.0;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: 1.0,
            max_backoff: 30.0,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

impl RetryPolicy {
    /// A `Retry-After` an endpoint sent, held to [`RetryPolicy::max_retry_after`].
    pub fn cap_retry_after(&self, asked: Duration) -> Duration {
        asked.min(Duration::try_from_secs_f64(self.max_retry_after.max(0.0)).unwrap_or(Duration::MAX))
    }
}

/// The wait before retry `attempt + 1`: exponential with jitter, and never less than what the
/// endpoint asked for with `Retry-After`.
pub fn backoff(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    backoff_with(policy, attempt, retry_after, &mut rand::rng())
}

/// [`backoff`] with the jitter drawn from `rng`: a uniform factor in `[0.5, 1]` of the capped
/// exponential delay, so retries of calls that failed together spread out.
pub fn backoff_with(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
    let base = policy.initial_backoff.max(0.0) * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
    let capped = base.min(policy.max_backoff.max(0.0));
    let jittered = capped * rng.random_range(0.5..=1.0);
    let delay = Duration::try_from_secs_f64(jittered).unwrap_or(Duration::MAX);
    retry_after.map_or(delay, |r| r.max(delay))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: 1.0,
            max_backoff: 5.0,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn delays_double_within_their_jitter_band_and_stop_at_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        for (attempt, full) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0)] {
            for _ in 0..50 {
                let d = backoff_with(&policy(), attempt, None, &mut rng).as_secs_f64();
                assert!(
                    d >= full * 0.5 && d <= full,
                    "attempt {attempt}: {d}s not in [{}, {full}]",
                    full * 0.5
                );
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..5)
                .map(|a| backoff_with(&policy(), a, None, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn retry_after_is_a_floor_and_huge_values_do_not_panic() {
        let mut rng = StdRng::seed_from_u64(3);
        let d = backoff_with(&policy(), 1, Some(Duration::from_secs(30)), &mut rng);
        assert_eq!(d, Duration::from_secs(30));
        let wild = RetryPolicy {
            initial_backoff: 1e300,
            max_backoff: f64::INFINITY,
            ..policy()
        };
        assert_eq!(backoff_with(&wild, 20, None, &mut rng), Duration::MAX);
    }

    #[test]
    fn retry_after_is_held_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.cap_retry_after(Duration::from_secs(100_000)),
            Duration::from_secs(120)
        );
        assert_eq!(p.cap_retry_after(Duration::from_secs(3)), Duration::from_secs(3));
    }
}
