//! Per-model limits: one [`Gate`] per model key for the whole process, shared by every use of
//! the model (target or judge). A call takes a concurrency permit first, then waits out any
//! `Retry-After` pause, then the `tokens_per_minute` reservation and the requests-per-minute
//! limiter (governor, burst 1), and only then runs. Taking the permit first keeps admitted calls
//! from piling up and firing together.
//!
//! The permits follow an [`AdaptiveWindow`]: `max_concurrent_requests` until a 429 without
//! `Retry-After` halves it. With shared limits (`--limits`, [`SharedModel`]) the pause, rate,
//! tokens and a concurrency lease are decided by one Redis script for every process instead of
//! by this process's limiters; the local permit still bounds what this process runs.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::model::adaptive::{AdaptiveWindow, WindowPermit};
use crate::model::shared_limits::{Lease, LimitsError, SharedModel, SharedTokens, SharedWait};
use crate::model::token_rate::TokenRate;

#[derive(Debug)]
pub struct Gate {
    window: Arc<AdaptiveWindow>,
    limiter: Option<DefaultDirectRateLimiter>,
    tokens: Option<Arc<TokenRate>>,
    /// Set once before the run starts when the run uses shared limits.
    shared: OnceLock<Arc<SharedModel>>,
    /// Set when the shared limits server stayed unreachable: no call may start any more.
    broken: OnceLock<LimitsError>,
    /// Calls may not start before this instant (ms since `epoch`), set by `Retry-After`.
    paused_until_ms: AtomicU64,
    /// Calls waiting for the limiter right now (asking the limiter itself would use up a cell).
    limiter_waiting: AtomicUsize,
    tokens_waiting: AtomicUsize,
    /// Calls holding a permit (admitted or about to be).
    in_flight: Arc<AtomicUsize>,
    epoch: Instant,
    pub concurrency: usize,
    pub rate_limit: Option<u32>,
    pub tokens_per_minute: Option<u32>,
}

/// Time a call spent waiting at the gate.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct GateWait {
    pub permit: Duration,
    pub limiter: Duration,
}

/// A call allowed to run; its place is given back when this is dropped or finished.
pub struct Admission {
    pub wait: GateWait,
    /// When the call was let through (a 429 counts once per decrease of the window).
    pub started: Instant,
    place: Option<Place>,
    lease: Option<Lease>,
    tokens: TokenTicket,
}

/// A call's local place: its permit and its count in `in_flight`.
struct Place {
    _permit: WindowPermit,
    _counted: Counted,
}

/// What a call reserved of `tokens_per_minute`, to settle with the tokens it used. Dropping it
/// keeps the estimate.
#[derive(Default)]
pub struct TokenTicket(Option<Reserved>);

enum Reserved {
    Local { rate: Arc<TokenRate>, estimate: u64 },
    Shared(SharedTokens),
}

/// Why calls of a model are being held back right now, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    Paused,
    RateLimit(u32),
    TokensPerMinute(u32),
    MaxConcurrent(usize),
    /// The adaptive window, below `max_concurrent_requests` after 429s.
    Adaptive {
        window: usize,
        max: usize,
    },
    Shared(SharedWait),
}

impl Gate {
    pub fn new(concurrency: usize, rate_limit: Option<u32>) -> Gate {
        let limiter = rate_limit
            .and_then(NonZeroU32::new)
            .map(|rpm| RateLimiter::direct(Quota::per_minute(rpm).allow_burst(NonZeroU32::MIN)));
        Gate {
            window: AdaptiveWindow::new(concurrency),
            limiter,
            tokens: None,
            shared: OnceLock::new(),
            broken: OnceLock::new(),
            paused_until_ms: AtomicU64::new(0),
            limiter_waiting: AtomicUsize::new(0),
            tokens_waiting: AtomicUsize::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            epoch: Instant::now(),
            concurrency: concurrency.max(1),
            rate_limit,
            tokens_per_minute: None,
        }
    }

    /// Adds a `tokens_per_minute` limit.
    pub fn with_tokens_per_minute(mut self, tokens_per_minute: Option<u32>) -> Gate {
        self.tokens = tokens_per_minute.map(|tpm| Arc::new(TokenRate::new(tpm)));
        self.tokens_per_minute = tokens_per_minute;
        self
    }

    /// Hands the model's pause, rate, token and concurrency limits to the shared limits (once,
    /// before any call).
    pub fn share(&self, shared: Arc<SharedModel>) {
        let _ = self.shared.set(shared);
    }

    /// Waits until a call may start under this process's limits alone (no shared limits, no
    /// token estimate); the call runs while the returned admission is alive.
    pub async fn admit(&self) -> Admission {
        let (place, wait) = self.take_place().await;
        let limiter_start = Instant::now();
        self.wait_for_pause().await;
        self.wait_for_limiter().await;
        Admission {
            wait: GateWait {
                permit: wait,
                limiter: limiter_start.elapsed(),
            },
            started: Instant::now(),
            place: Some(place),
            lease: None,
            tokens: TokenTicket::default(),
        }
    }

    /// Waits until a call of about `tokens` tokens (used with `tokens_per_minute`) may start,
    /// under the shared limits when the run has them. Fails only when the shared limits server
    /// has been unreachable for a whole lease time.
    pub async fn admit_call(&self, tokens: u64) -> Result<Admission, LimitsError> {
        if let Some(e) = self.broken.get() {
            return Err(e.clone());
        }
        let (place, permit_wait) = self.take_place().await;
        let limiter_start = Instant::now();
        self.wait_for_pause().await;
        let (lease, ticket) = match self.shared.get() {
            Some(shared) => {
                let (lease, reserved) = shared
                    .admit(tokens)
                    .await
                    .inspect_err(|e| drop(self.broken.set(e.clone())))?;
                (lease, TokenTicket(reserved.map(Reserved::Shared)))
            }
            None => {
                let mut ticket = TokenTicket::default();
                if let Some(rate) = &self.tokens {
                    let _waiting = Waiting::new(&self.tokens_waiting);
                    rate.reserve(tokens).await;
                    ticket = TokenTicket(Some(Reserved::Local {
                        rate: Arc::clone(rate),
                        estimate: tokens,
                    }));
                }
                self.wait_for_limiter().await;
                (None, ticket)
            }
        };
        Ok(Admission {
            wait: GateWait {
                permit: permit_wait,
                limiter: limiter_start.elapsed(),
            },
            started: Instant::now(),
            place: Some(place),
            lease,
            tokens: ticket,
        })
    }

    async fn take_place(&self) -> (Place, Duration) {
        let start = Instant::now();
        let permit = self.window.acquire().await;
        let place = Place {
            _permit: permit,
            _counted: Counted::new(&self.in_flight),
        };
        (place, start.elapsed())
    }

    async fn wait_for_limiter(&self) {
        if let Some(limiter) = &self.limiter {
            let _waiting = Waiting::new(&self.limiter_waiting);
            limiter.until_ready().await;
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

    /// Holds every new call of this model for `delay` (an endpoint asked us to back off); with
    /// shared limits, in every process.
    pub fn pause_for(&self, delay: Duration) {
        let until = (self.epoch.elapsed() + delay).as_millis() as u64;
        self.paused_until_ms.fetch_max(until, Ordering::AcqRel);
        if let Some(shared) = self.shared.get() {
            shared.pause_for(delay);
        }
    }

    /// The endpoint refused a call that started at `started` as too many requests (429): with
    /// `Retry-After` the model pauses; without, the concurrency window halves.
    pub fn throttled(&self, started: Instant, retry_after: Option<Duration>) {
        match retry_after {
            Some(delay) => self.pause_for(delay),
            None => self.window.on_throttle(started),
        }
    }

    /// A call succeeded: the concurrency window grows back towards `max_concurrent_requests`.
    pub fn succeeded(&self) {
        self.window.on_success();
    }

    /// Calls that ran over the shared concurrency limit because their lease expired under them
    /// (this process stalled past the lease time).
    pub fn lost_leases(&self) -> u64 {
        self.shared.get().map_or(0, |s| s.lost_leases())
    }

    /// Why calls can no longer start: the shared limits server stayed unreachable.
    pub fn broken(&self) -> Option<&LimitsError> {
        self.broken.get()
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
        self.in_flight.load(Ordering::Acquire)
    }

    /// Calls that may run at once right now (the adaptive window).
    pub fn window(&self) -> usize {
        self.window.current()
    }

    /// What holds calls back right now, the most specific reason first.
    pub fn holding(&self) -> Option<Holding> {
        let now = self.epoch.elapsed().as_millis() as u64;
        if self.paused_until_ms.load(Ordering::Acquire) > now {
            return Some(Holding::Paused);
        }
        if let Some(wait) = self.shared.get().and_then(|s| s.waiting()) {
            return Some(Holding::Shared(wait));
        }
        if self.tokens_waiting.load(Ordering::Acquire) > 0 {
            return self.tokens_per_minute.map(Holding::TokensPerMinute);
        }
        if self.is_rate_limited() {
            return Some(Holding::RateLimit(self.rate_limit.unwrap_or(0)));
        }
        let window = self.window();
        if self.in_flight() >= window {
            return Some(if window < self.concurrency {
                Holding::Adaptive {
                    window,
                    max: self.concurrency,
                }
            } else {
                Holding::MaxConcurrent(self.concurrency)
            });
        }
        None
    }
}

impl Holding {
    /// E.g. `rate_limit 60/min`, for "held by … of `model`".
    pub fn describe(&self, gate: &Gate) -> String {
        match *self {
            Holding::Paused => "a Retry-After pause".to_owned(),
            Holding::RateLimit(rpm) => format!("rate_limit {rpm}/min"),
            Holding::TokensPerMinute(tpm) => format!("tokens_per_minute {tpm}"),
            Holding::MaxConcurrent(n) => format!("max_concurrent_requests {n}"),
            Holding::Adaptive { window, max } => {
                format!("adaptive concurrency {window} of {max} (429s without Retry-After)")
            }
            Holding::Shared(SharedWait::Paused) => "a shared Retry-After pause".to_owned(),
            Holding::Shared(SharedWait::Rate) => format!("shared rate_limit {}/min", gate.rate_limit.unwrap_or(0)),
            Holding::Shared(SharedWait::Tokens) => {
                format!("shared tokens_per_minute {}", gate.tokens_per_minute.unwrap_or(0))
            }
            Holding::Shared(SharedWait::Concurrency { in_use, max }) => {
                format!("shared max_concurrent_requests {max} ({in_use} in use)")
            }
        }
    }
}

impl Admission {
    /// The call is over: its place is given back (a shared lease in the background) and what
    /// it reserved of `tokens_per_minute` is returned, to settle once its usage is known.
    pub fn finish(mut self) -> TokenTicket {
        std::mem::take(&mut self.tokens)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            // The local place stays taken until Redis has the release, so the next call here
            // does not find this lease still counted.
            lease.release_then(self.place.take());
        }
    }
}

impl TokenTicket {
    /// Settles the reservation with the tokens the call used.
    pub fn settle(self, actual: u64) {
        match self.0 {
            None => {}
            Some(Reserved::Local { rate, estimate }) => rate.settle(actual as i64 - estimate as i64),
            Some(Reserved::Shared(tokens)) => tokens.settle(actual),
        }
    }
}

/// Counts a call as waiting (for the limiter or tokens) until dropped, also when cancelled.
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

/// [`Waiting`] for a count that outlives the borrow of the gate (a call's place).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(counter: &Arc<AtomicUsize>) -> Counted {
        counter.fetch_add(1, Ordering::AcqRel);
        Counted(Arc::clone(counter))
    }
}

impl Drop for Counted {
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

    #[tokio::test]
    async fn a_429_without_retry_after_narrows_the_window_and_the_progress_line_says_so() {
        let gate = Gate::new(4, None);
        let calls: Vec<Admission> = vec![gate.admit().await, gate.admit().await];
        gate.throttled(calls[0].started, None);
        assert_eq!(gate.window(), 2);
        assert_eq!(gate.holding(), Some(Holding::Adaptive { window: 2, max: 4 }));
        assert_eq!(
            gate.holding().unwrap().describe(&gate),
            "adaptive concurrency 2 of 4 (429s without Retry-After)"
        );
        drop(calls);
        assert_eq!(gate.holding(), None);
        // With Retry-After the window stays and the model pauses instead.
        gate.throttled(Instant::now(), Some(Duration::from_secs(60)));
        assert_eq!(gate.window(), 2);
        assert_eq!(gate.holding(), Some(Holding::Paused));
    }

    #[tokio::test]
    async fn tokens_per_minute_paces_calls_by_their_estimate_and_settling_gives_back_the_rest() {
        // 600 000 tokens/min = 10 tokens per millisecond.
        let gate = Gate::new(4, None).with_tokens_per_minute(Some(600_000));
        let first = gate.admit_call(10_000).await.unwrap();
        // The estimate holds the next call for about a second ...
        let held = tokio::time::timeout(Duration::from_millis(300), gate.admit_call(10)).await;
        assert!(held.is_err(), "the second call did not wait for the first one's tokens");
        // ... until the response says the call used 100 tokens: 990 ms are given back.
        first.finish().settle(100);
        let started = Instant::now();
        let second = tokio::time::timeout(Duration::from_millis(500), gate.admit_call(10)).await;
        assert!(second.is_ok(), "settling did not release the reservation");
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
    }
}
