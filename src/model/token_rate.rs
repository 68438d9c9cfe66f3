//! `tokens_per_minute`: a call reserves an estimate of its tokens before it starts, and is
//! settled with the usage its response reports. The limiter is a GCRA weighted by tokens with no
//! burst (pacing): a call may start once the previous reservations have drained, and moves the
//! theoretical arrival time (TAT) on by its tokens × 60 s / `tokens_per_minute`. Settling moves
//! the TAT by the difference: later for an underestimate (the debt is paid by the next calls),
//! earlier for an overestimate, but never before now, so an idle limiter banks no credit. The
//! shared limiter (`shared_limits/admit.lua`, `release.lua`) is the same algorithm on Redis.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Output tokens assumed for a request that does not say (`max_tokens`); settling corrects it.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 256;

/// The tokens a request body is expected to cost: about one per 4 bytes of input, plus the
/// output it allows (`max_tokens` / `max_completion_tokens`, as providers count it).
pub fn estimate(body: &str) -> u64 {
    #[derive(Deserialize)]
    struct Limits {
        max_tokens: Option<u64>,
        max_completion_tokens: Option<u64>,
    }
    let input = (body.len() as u64).div_ceil(4);
    let output = serde_json::from_str::<Limits>(body)
        .ok()
        .and_then(|l| l.max_completion_tokens.or(l.max_tokens))
        .unwrap_or(DEFAULT_OUTPUT_TOKENS);
    input + output
}

#[derive(Debug)]
pub struct TokenRate {
    /// Time one token is worth, in µs.
    interval_us: f64,
    /// TAT in µs since `epoch`.
    tat_us: Mutex<f64>,
    epoch: Instant,
}

impl TokenRate {
    pub fn new(tokens_per_minute: u32) -> TokenRate {
        TokenRate {
            interval_us: 60e6 / f64::from(tokens_per_minute.max(1)),
            tat_us: Mutex::new(0.0),
            epoch: Instant::now(),
        }
    }

    fn now_us(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1e6
    }

    /// Reserves `tokens` if the limiter conforms now; otherwise how long until it will.
    pub fn try_reserve(&self, tokens: u64) -> Result<(), Duration> {
        let now = self.now_us();
        let mut tat = self.tat_us.lock().unwrap_or_else(PoisonError::into_inner);
        if *tat > now {
            return Err(Duration::from_secs_f64((*tat - now) / 1e6));
        }
        *tat = now + tokens as f64 * self.interval_us;
        Ok(())
    }

    /// Waits until `tokens` are reserved.
    pub async fn reserve(&self, tokens: u64) {
        while let Err(wait) = self.try_reserve(tokens) {
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// Corrects a reservation by `actual - estimate` tokens.
    pub fn settle(&self, delta: i64) {
        let now = self.now_us();
        let mut tat = self.tat_us.lock().unwrap_or_else(PoisonError::into_inner);
        *tat = (tat.max(now) + delta as f64 * self.interval_us).max(now);
    }

    /// Whether a call would have to wait right now.
    pub fn is_holding(&self) -> bool {
        *self.tat_us.lock().unwrap_or_else(PoisonError::into_inner) > self.now_us()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_count_the_input_and_the_output_it_allows() {
        assert_eq!(estimate(r#"{"max_tokens": 100, "messages": []}"#), 9 + 100);
        assert_eq!(estimate(r#"{"max_completion_tokens": 7, "max_tokens": 100}"#), 12 + 7);
        assert_eq!(estimate("not json"), 2 + DEFAULT_OUTPUT_TOKENS);
    }

    #[test]
    fn a_reservation_holds_the_next_call_for_its_tokens_and_settling_moves_that() {
        // 60 000 tokens/min = one token per millisecond.
        let rate = TokenRate::new(60_000);
        assert_eq!(rate.try_reserve(1000), Ok(()), "an idle limiter lets the first call go");
        let wait = rate.try_reserve(1).unwrap_err();
        assert!(
            wait > Duration::from_millis(990) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // The call used 200 tokens, not 1000: 800 ms are given back.
        rate.settle(-800);
        let wait = rate.try_reserve(1).unwrap_err();
        assert!(
            wait > Duration::from_millis(190) && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        // A refund larger than what is left never banks credit for later calls.
        rate.settle(-10_000);
        assert_eq!(rate.try_reserve(100), Ok(()));
        assert!(rate.try_reserve(1).is_err(), "the refund did not turn into a burst");
    }
}
