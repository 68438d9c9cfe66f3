//! Per-model limits: one [`Gate`] per model key for the whole process, shared by every use of
//! the model (target or judge). A call takes a concurrency permit first, then waits out any
//! `Retry-After` pause, then the requests-per-minute limiter (governor, burst 1), and only then
//! runs. Taking the permit first keeps admitted calls from piling up and firing together.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct Gate {
    permits: Arc<Semaphore>,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Calls may not start before this instant (ms since `epoch`), set by `Retry-After`.
    paused_until_ms: AtomicU64,
    /// Calls waiting for the limiter right now (asking the limiter itself would use up a cell).
    limiter_waiting: AtomicUsize,
    epoch: Instant,
    pub concurrency: usize,
    pub rate_limit: Option<u32>,
}

/// Time a call spent waiting at the gate.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct GateWait {
    pub permit: Duration,
    pub limiter: Duration,
}

pub struct Admission {
    pub wait: GateWait,
    _permit: OwnedSemaphorePermit,
}

impl Gate {
    pub fn new(concurrency: usize, rate_limit: Option<u32>) -> Gate {
        let limiter = rate_limit
            .and_then(NonZeroU32::new)
            .map(|rpm| RateLimiter::direct(Quota::per_minute(rpm).allow_burst(NonZeroU32::MIN)));
        Gate {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            limiter,
            paused_until_ms: AtomicU64::new(0),
            limiter_waiting: AtomicUsize::new(0),
            epoch: Instant::now(),
            concurrency: concurrency.max(1),
            rate_limit,
        }
    }

    /// Waits until a call may start; the call runs while the returned admission is alive.
    pub async fn admit(&self) -> Admission {
        let start = Instant::now();
        #[expect(clippy::expect_used, reason = "the semaphore is owned here and never closed")]
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("gate semaphore is never closed");
        let permit_wait = start.elapsed();
        let limiter_start = Instant::now();
        self.wait_for_pause().await;
        if let Some(limiter) = &self.limiter {
            let _waiting = Waiting::new(&self.limiter_waiting);
            limiter.until_ready().await;
        }
        Admission {
            wait: GateWait {
                permit: permit_wait,
                limiter: limiter_start.elapsed(),
            },
            _permit: permit,
        }
    }

    async fn wait_for_pause(&self) {
        loop {
            let until = self.paused_until_ms.load(Ordering::Acquire);
            let now = self.epoch.elapsed().as_millis() as u64;
            if until <= now {
                return;
            }
            tokio::time::sleep(Duration::from_millis(until - now)).await;
        }
    }

    /// Holds every new call of this model for `delay` (an endpoint asked us to back off).
    pub fn pause_for(&self, delay: Duration) {
        let until = (self.epoch.elapsed() + delay).as_millis() as u64;
        self.paused_until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// How much longer a `Retry-After` pause holds this model's calls (for the progress display).
    pub fn paused_remaining(&self) -> Option<Duration> {
        let until = self.paused_until_ms.load(Ordering::Acquire);
        let now = self.epoch.elapsed().as_millis() as u64;
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Whether the limiter is holding a call right now (for the progress display).
    pub fn is_rate_limited(&self) -> bool {
        self.limiter_waiting.load(Ordering::Acquire) > 0
    }

    pub fn in_flight(&self) -> usize {
        self.concurrency - self.permits.available_permits()
    }
}

/// Counts a call as waiting for the limiter until dropped (also when the call is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(counter: &'a AtomicUsize) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::AcqRel);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn asking_whether_calls_are_held_does_not_use_up_the_rate() {
        // One call per minute: the first call may start at once, but only if nothing else
        // took that cell.
        let gate = Gate::new(1, Some(1));
        for _ in 0..3 {
            assert!(!gate.is_rate_limited());
        }
        let admitted = tokio::time::timeout(Duration::from_secs(5), gate.admit()).await;
        assert!(admitted.is_ok(), "the first call waited for the limiter");
    }
}
