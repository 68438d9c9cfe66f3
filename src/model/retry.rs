//! Retrying failed attempts: the [`RetryPolicy`] a model declares (`retry:`, an lfeval
//! extension) and the jittered exponential [`backoff`] between attempts.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

/// How failed attempts are retried (an lfeval extension: `retry:` on a model).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in total, including the first.
    pub max_attempts: u32,
    /// Seconds before the first retry; doubles each time, with jitter.
    pub initial_backoff: f64,
    /// Upper bound on one backoff, in seconds.
    pub max_backoff: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: 1.0,
            max_backoff: 30.0,
        }
    }
}

/// The wait before retry `attempt + 1`: exponential with jitter, and never less than what the
/// endpoint asked for with `Retry-After`.
pub fn backoff(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let base = policy.initial_backoff.max(0.0) * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
    let capped = base.min(policy.max_backoff.max(0.0));
    let jittered = capped * rand::rng().random_range(0.5..=1.0);
    let delay = Duration::try_from_secs_f64(jittered).unwrap_or(Duration::MAX);
    retry_after.map_or(delay, |r| r.max(delay))
}
