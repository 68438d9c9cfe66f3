//! One model's shared limits in one process: admissions through `admit.lua` (one task per
//! process and model talks to Redis at a time, the others queue behind it, so N queued calls do
//! not become N pollers), leases renewed by one heartbeat task, releases and token settlements
//! sent in the background so a call only ever waits for the admission round trip.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Notify;

use super::{Keys, LimitsError, SharedLimits};

/// The longest single sleep between two admission attempts, so that a refund or a state that
/// vanished (a Redis restart) is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(5);
/// Polling bounds while every lease is taken (a lease frees when some call ends, anywhere).
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(100);
/// Backoff bounds while Redis does not answer.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// The GCRA's allowance for lateness (timers, scheduling, the round trip): without it every
/// winner arrives a little after its slot, the limiter forgets that lateness, and the aggregate
/// rate ends up a few percent low. Capped at a fifth of the interval, so the burst stays 1 (no
/// two calls closer than 4/5 of the interval).
const RATE_TOLERANCE_US: u64 = 20_000;
/// While waiting for tokens, look again this often: a settled call may have given some back.
const TOKEN_RECHECK: Duration = Duration::from_millis(250);

// Refusal reasons, as `admit.lua` returns them (a bit set).
const PAUSED: u8 = 1;
const FULL: u8 = 2;
const RATE: u8 = 4;
const TOKENS: u8 = 8;

/// The limits of one model, as its YAML declares them; only declared limits are shared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelLimits {
    pub max_concurrent: Option<u32>,
    pub rate_limit: Option<u32>,
    pub tokens_per_minute: Option<u32>,
}

impl ModelLimits {
    fn rate_interval_us(&self) -> u64 {
        self.rate_limit.map_or(0, |rpm| 60_000_000 / u64::from(rpm.max(1)))
    }

    fn token_interval_us(&self) -> f64 {
        self.tokens_per_minute.map_or(0.0, |tpm| 60e6 / f64::from(tpm.max(1)))
    }
}

/// What an admission is waiting for, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedWait {
    Paused,
    Concurrency { in_use: u32, max: u32 },
    Rate,
    Tokens,
}

pub struct SharedModel {
    limits: SharedLimits,
    keys: Keys,
    model: ModelLimits,
    turn: tokio::sync::Mutex<()>,
    /// Leases of calls running in this process: what the heartbeat renews.
    live: Mutex<HashSet<String>>,
    /// A lease of this process was released: a queued admission need not wait for its poll.
    freed: Notify,
    /// Admissions waiting right now, and why the last refusal refused.
    waiting: AtomicUsize,
    last_refusal: AtomicU8,
    in_use: AtomicU64,
    /// Calls whose lease expired and could not be taken again (they ran over the limit).
    lost: AtomicU64,
}

impl std::fmt::Debug for SharedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedModel")
            .field("key", &self.keys.leases)
            .field("limits", &self.model)
            .finish_non_exhaustive()
    }
}

/// A concurrency lease; released (in the background) when dropped.
pub struct Lease {
    /// The model and the lease id, until released.
    taken: Option<(Arc<SharedModel>, String)>,
}

/// A token reservation to settle with the call's real usage; dropping it keeps the estimate.
pub struct SharedTokens {
    model: Arc<SharedModel>,
    estimate: u64,
}

impl SharedModel {
    pub(super) fn start(limits: SharedLimits, key: &str, model: ModelLimits) -> Arc<SharedModel> {
        let shared = Arc::new(SharedModel {
            keys: Keys::new(&limits.inner.namespace, key),
            limits,
            model,
            turn: tokio::sync::Mutex::new(()),
            live: Mutex::new(HashSet::new()),
            freed: Notify::new(),
            waiting: AtomicUsize::new(0),
            last_refusal: AtomicU8::new(0),
            in_use: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        });
        if model.max_concurrent.is_some() {
            tokio::spawn(renew_leases(Arc::downgrade(&shared), shared.limits.inner.lease / 3));
        }
        shared
    }

    pub fn limits(&self) -> ModelLimits {
        self.model
    }

    /// Waits until every shared limit admits one call of about `tokens` tokens (used only with
    /// `tokens_per_minute`). Fails only when Redis has not answered for a whole lease time: by
    /// then every lease anyone held has expired, and guessing would break the shared limit.
    pub async fn admit(self: &Arc<Self>, tokens: u64) -> Result<(Option<Lease>, Option<SharedTokens>), LimitsError> {
        let _waiting = Counted::new(&self.waiting);
        let _turn = self.turn.lock().await;
        let inner = &self.limits.inner;
        let id = format!("{}:{}", inner.holder, inner.next_lease.fetch_add(1, Ordering::Relaxed));
        let mut poll = POLL_MIN;
        let mut retry = RETRY_MIN;
        let mut failing_since: Option<Instant> = None;
        loop {
            let error = match self.try_admit(&id, tokens).await {
                Ok((0, _, in_use)) => {
                    self.in_use.store(in_use.max(0) as u64, Ordering::Relaxed);
                    self.last_refusal.store(0, Ordering::Relaxed);
                    let lease = self.model.max_concurrent.map(|_| {
                        self.live_ids().insert(id.clone());
                        Lease {
                            taken: Some((Arc::clone(self), id.clone())),
                        }
                    });
                    let reserved = self.model.tokens_per_minute.map(|_| SharedTokens {
                        model: Arc::clone(self),
                        estimate: tokens,
                    });
                    return Ok((lease, reserved));
                }
                Ok((code, wait_ms, in_use)) => {
                    failing_since = None;
                    retry = RETRY_MIN;
                    self.in_use.store(in_use.max(0) as u64, Ordering::Relaxed);
                    self.last_refusal.store(code as u8, Ordering::Relaxed);
                    let wait = Duration::from_millis(wait_ms.max(0) as u64);
                    if code as u8 == FULL {
                        let nap = jitter(poll);
                        poll = (poll * 2).min(POLL_MAX);
                        let freed = self.freed.notified();
                        tokio::select! {
                            () = tokio::time::sleep(nap) => {}
                            () = freed => {}
                        }
                    } else {
                        let most = if code as u8 & TOKENS != 0 {
                            TOKEN_RECHECK
                        } else {
                            MAX_SLEEP
                        };
                        tokio::time::sleep(wait.clamp(Duration::from_millis(1), most)).await;
                    }
                    continue;
                }
                Err(e) => e,
            };
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= inner.lease {
                return Err(LimitsError::Unreachable {
                    url: inner.url.clone(),
                    after: since.elapsed(),
                    message: crate::redact::redact(&error.to_string()).into_owned(),
                });
            }
            tokio::time::sleep(jitter(retry)).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    async fn try_admit(&self, id: &str, tokens: u64) -> redis::RedisResult<(i64, i64, i64)> {
        let m = &self.model;
        let inner = &self.limits.inner;
        let rate_interval = m.rate_interval_us();
        inner
            .scripts
            .admit
            .key(&self.keys.pause)
            .key(&self.keys.rate)
            .key(&self.keys.tokens)
            .key(&self.keys.leases)
            .arg(id)
            .arg(m.max_concurrent.unwrap_or(0))
            .arg(inner.lease.as_millis() as u64)
            .arg(rate_interval)
            .arg(RATE_TOLERANCE_US.min(rate_interval / 5))
            .arg(tokens)
            .arg(m.token_interval_us())
            .arg(0)
            .invoke_async(&mut inner.con.clone())
            .await
    }

    /// Pauses the model for every process (a `Retry-After`); a shorter pause never cuts a
    /// longer one short. Sent in the background: this process's own pause holds meanwhile.
    pub fn pause_for(self: &Arc<Self>, delay: Duration) {
        let model = Arc::clone(self);
        spawn(async move {
            let inner = &model.limits.inner;
            let _: redis::RedisResult<i64> = inner
                .scripts
                .pause
                .key(&model.keys.pause)
                .arg("set")
                .arg(delay.as_millis().max(1) as u64)
                .invoke_async(&mut inner.con.clone())
                .await;
        });
    }

    /// What admissions are waiting for, if any is waiting.
    pub fn waiting(&self) -> Option<SharedWait> {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let code = self.last_refusal.load(Ordering::Relaxed);
        if code & PAUSED != 0 {
            Some(SharedWait::Paused)
        } else if code & RATE != 0 {
            Some(SharedWait::Rate)
        } else if code & TOKENS != 0 {
            Some(SharedWait::Tokens)
        } else if code & FULL != 0 {
            Some(SharedWait::Concurrency {
                in_use: self.in_use.load(Ordering::Relaxed) as u32,
                max: self.model.max_concurrent.unwrap_or(0),
            })
        } else {
            None
        }
    }

    /// Calls that ran over the shared concurrency limit after their lease expired under them.
    pub fn lost_leases(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    fn live_ids(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `release.lua` with a lease id (or `""`) and a token correction, retried a few times;
    /// when it never arrives the lease expires by itself and the estimate stands.
    async fn release(&self, id: &str, token_delta: i64) {
        let inner = &self.limits.inner;
        for attempt in 0..3u32 {
            let sent: redis::RedisResult<(i64, i64)> = inner
                .scripts
                .release
                .key(&self.keys.leases)
                .key(&self.keys.tokens)
                .arg(id)
                .arg(token_delta)
                .arg(self.model.token_interval_us())
                .invoke_async(&mut inner.con.clone())
                .await;
            if sent.is_ok() {
                return;
            }
            tokio::time::sleep(RETRY_MIN * 2u32.pow(attempt)).await;
        }
    }
}

impl Lease {
    /// Releases the lease in the background and drops `hold` once Redis has it, so that the
    /// next local call (which `hold`, a local permit, lets in) does not find this lease still
    /// counted.
    pub fn release_then<T: Send + 'static>(mut self, hold: T) {
        if let Some((model, id)) = self.taken.take() {
            release_in_background(model, id, hold);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some((model, id)) = self.taken.take() {
            release_in_background(model, id, ());
        }
    }
}

fn release_in_background<T: Send + 'static>(model: Arc<SharedModel>, id: String, hold: T) {
    // Out of the heartbeat at once, even if the release itself is late.
    model.live_ids().remove(&id);
    spawn(async move {
        model.release(&id, 0).await;
        drop(hold);
        model.freed.notify_waiters();
    });
}

impl SharedTokens {
    /// Settles the reservation with the tokens the call really used.
    pub fn settle(self, actual: u64) {
        let delta = actual as i64 - self.estimate as i64;
        if delta == 0 {
            return;
        }
        spawn(async move {
            self.model.release("", delta).await;
        });
    }
}

/// Renews every live lease of `model` in this process every `every`, in one script call.
async fn renew_leases(model: Weak<SharedModel>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(m) = model.upgrade() else { return };
        let ids: Vec<String> = m.live_ids().iter().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        let inner = &m.limits.inner;
        let renewed: redis::RedisResult<Vec<i64>> = inner
            .scripts
            .renew
            .key(&m.keys.leases)
            .arg(inner.lease.as_millis() as u64)
            .arg(m.model.max_concurrent.unwrap_or(0))
            .arg(&ids)
            .invoke_async(&mut inner.con.clone())
            .await;
        match renewed {
            Ok(statuses) => {
                let lost = statuses.iter().filter(|s| **s == 0).count() as u64;
                m.lost.fetch_add(lost, Ordering::Relaxed);
            }
            // The next tick is still well inside the lease; try again sooner than that.
            Err(_) => {
                drop(m);
                tokio::time::sleep(Duration::from_secs(1).min(every)).await;
                ticker.reset_immediately();
            }
        }
    }
}

/// Spawns on the current runtime, if there still is one (at shutdown a lease simply expires).
fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(task);
    }
}

/// ±20 %, so processes that were refused together do not come back together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// Counts a waiting admission until dropped (also when it is cancelled).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Counted<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
