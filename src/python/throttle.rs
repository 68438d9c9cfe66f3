//! How many of a snippet pool's threads may run calls at once. Python runs one thread at a time,
//! so once the snippets keep it busy, more threads in Python only queue for the interpreter, and
//! some libraries get slower the more of them there are: httpx's connection pool polls every idle
//! connection, with the GIL released and its lock held, on each request, so 64 threads sharing one
//! `httpx.Client` finish the same calls in half the time when only 32 of them run.
//!
//! The first 16 calls start at once. The first to finish says how many could share Python (its
//! wall time against its CPU time), which may raise the limit up to the pool's size
//! (`max_concurrent_requests`). From then on the limit moves only on evidence: each epoch (two
//! limits' worth of finished calls) measures the throughput and how busy Python was. While Python
//! is saturated, the limit probes a quarter lower, and keeps that if the throughput held; while
//! Python has room, it probes higher, and keeps that if the throughput grew. A probe that lost is
//! undone and not retried for a number of epochs that doubles with each loss, so a limit that is
//! right costs almost nothing to keep. Calls waiting for a place have not started: their timeouts
//! do not run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Threads that run calls before the first call has finished: enough for most endpoints' first
/// round trip, few enough that a library keeping per-thread state (httpx opens a connection per
/// concurrent request and keeps it for seconds) does not start out on the pool's full size.
const START: usize = 16;
/// The share of Python the first estimate of the limit aims for.
const TARGET: f64 = 0.75;
/// Python busier than this share of an epoch's wall time is saturated: fewer threads cannot
/// lose throughput, and may gain.
const SATURATED: f64 = 0.9;
/// Python less busy than this has room for more calls at once.
const ROOM: f64 = 0.75;
/// A lower limit is kept if the throughput stayed within this share of the one before (a
/// smaller pool that is as fast is better: its calls wait less for the interpreter).
const KEEP_LOWER: f64 = 0.97;
/// A higher limit is kept only if the throughput grew by this share.
const KEEP_HIGHER: f64 = 1.03;
/// Fewest calls an epoch needs to say anything about throughput.
const MIN_EPOCH_CALLS: u64 = 16;
/// Most epochs a lost probe waits before the next one.
const MAX_HOLD: u32 = 64;

/// The places in one pool: workers take one before they take a job, and give it back after.
pub(super) struct Throttle {
    /// CPU time of every sync snippet call in this process so far, in nanoseconds (the GIL is
    /// shared by every pool).
    busy_ns: Arc<AtomicU64>,
    state: Mutex<State>,
    freed: Condvar,
}

struct State {
    active: usize,
    control: Control,
}

impl Throttle {
    pub(super) fn new(size: usize, busy_ns: Arc<AtomicU64>) -> Throttle {
        Throttle {
            busy_ns,
            state: Mutex::new(State {
                active: 0,
                control: Control::new(size),
            }),
            freed: Condvar::new(),
        }
    }

    /// Waits for a place.
    pub(super) fn enter(&self) {
        let mut state = self.lock();
        while state.active >= state.control.limit {
            state = self.freed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.active += 1;
    }

    /// Gives a place back after a call ran to its end. `first` is the (wall, CPU) time of a
    /// worker's first call, the only one measured: the pool's first call to finish is one.
    pub(super) fn leave(&self, first: Option<(Duration, Duration)>) {
        let mut state = self.lock();
        let before = state.control.limit;
        let busy = self.busy_ns.load(Ordering::Relaxed);
        state.control.finished(Instant::now(), busy, first);
        let grew = state.control.limit > before;
        self.release(state, grew);
    }

    /// Gives back the place of a call that was given up on: its thread may never return.
    pub(super) fn give_up(&self) {
        self.release(self.lock(), false);
    }

    /// Takes a place without waiting: a call that was given up on returned after all, and its
    /// thread carries on serving.
    pub(super) fn reenter(&self) {
        self.lock().active += 1;
    }

    /// `grew`: the limit rose, so more than one waiting worker may go.
    fn release(&self, mut state: MutexGuard<'_, State>, grew: bool) {
        state.active = state.active.saturating_sub(1);
        let room = state.active < state.control.limit;
        drop(state);
        if grew {
            self.freed.notify_all();
        } else if room {
            self.freed.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The limit and the experiment under way; time and busy counters come in from outside, so it
/// is tested with made-up clocks.
#[derive(Debug)]
struct Control {
    size: usize,
    limit: usize,
    /// `None` until the first call finished and set the limit.
    epoch: Option<Epoch>,
    probe: Option<Probe>,
    /// Epochs to sit out before the next probe, and how long the next loss will make it.
    hold: u32,
    next_hold: u32,
}

#[derive(Debug, Clone, Copy)]
struct Epoch {
    start: Instant,
    busy_ns: u64,
    calls: u64,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    from: usize,
    rate: f64,
}

impl Control {
    fn new(size: usize) -> Control {
        let size = size.max(1);
        Control {
            size,
            limit: size.min(START),
            epoch: None,
            probe: None,
            hold: 0,
            next_hold: 1,
        }
    }

    /// A call finished at `now`, when the busy counter read `busy_ns`; `first` is its (wall,
    /// CPU) time if it was measured.
    fn finished(&mut self, now: Instant, busy_ns: u64, first: Option<(Duration, Duration)>) {
        let fresh = Epoch {
            start: now,
            busy_ns,
            calls: 0,
        };
        let Some(epoch) = &mut self.epoch else {
            // One call alone says how many could share Python: a call that waits 50 ms for its
            // endpoint and spends 1 ms of CPU leaves room for about 50. Never lower than the
            // start: a call that is all CPU may be C code running outside the GIL, in parallel;
            // the probes below find out.
            if let Some((wall, cpu)) = first {
                let room = wall.as_secs_f64() / cpu.as_secs_f64().max(1e-9) * TARGET;
                self.limit = (room.min(self.size as f64) as usize).clamp(self.limit, self.size);
            }
            self.epoch = Some(fresh);
            return;
        };
        epoch.calls += 1;
        let wall = now.saturating_duration_since(epoch.start);
        if epoch.calls < MIN_EPOCH_CALLS.max(2 * self.limit as u64) || wall < Duration::from_millis(1) {
            return;
        }
        let rate = epoch.calls as f64 / wall.as_secs_f64();
        let busy = busy_ns.saturating_sub(epoch.busy_ns) as f64 / 1e9 / wall.as_secs_f64();
        self.epoch = Some(fresh);
        self.decide(rate, busy);
    }

    fn decide(&mut self, rate: f64, busy: f64) {
        if let Some(probe) = self.probe.take() {
            let kept = if self.limit < probe.from {
                rate >= probe.rate * KEEP_LOWER
            } else {
                rate >= probe.rate * KEEP_HIGHER
            };
            if kept {
                self.next_hold = 1;
            } else {
                self.limit = probe.from;
                self.hold = self.next_hold;
                self.next_hold = (self.next_hold * 2).min(MAX_HOLD);
            }
            return;
        }
        if self.hold > 0 {
            self.hold -= 1;
            return;
        }
        let to = if busy >= SATURATED && self.limit > 1 {
            (self.limit * 3 / 4).max(1)
        } else if busy < ROOM && self.limit < self.size {
            (self.limit + (self.limit / 4).max(1)).min(self.size)
        } else {
            return;
        };
        self.probe = Some(Probe { from: self.limit, rate });
        self.limit = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a controller through epochs of a workload whose throughput and Python share
    /// depend on the limit, on a made-up clock; the first call took `first` (wall, CPU).
    fn settle(
        size: usize,
        first: (Duration, Duration),
        epochs: usize,
        workload: impl Fn(usize) -> (f64, f64),
    ) -> Vec<usize> {
        let mut control = Control::new(size);
        let mut now = Instant::now();
        let mut busy_ns = 0u64;
        now += first.0;
        control.finished(now, busy_ns, Some(first));
        let mut limits = vec![control.limit];
        for _ in 0..epochs {
            let (rate, busy) = workload(control.limit);
            let calls = MIN_EPOCH_CALLS.max(2 * control.limit as u64);
            let step = Duration::from_secs_f64(1.0 / rate);
            for _ in 0..calls {
                now += step;
                busy_ns += (busy * step.as_secs_f64() * 1e9) as u64;
                control.finished(now, busy_ns, None);
            }
            limits.push(control.limit);
        }
        limits
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_snippet_waiting_on_the_network_runs_on_every_thread_from_its_first_answer() {
        // 50 ms calls with 0.2 ms of Python each: throughput grows with the limit.
        let limits = settle(64, (50 * MS, MS / 5), 40, |limit| (limit as f64 / 0.05, 0.2));
        assert!(limits.iter().all(|&l| l == 64), "{limits:?}");
        assert_eq!(Control::new(64).limit, START, "before the first answer");
        assert_eq!(Control::new(4).limit, 4, "never above the pool");
    }

    #[test]
    fn a_snippet_that_gets_slower_with_more_threads_settles_where_it_is_fastest() {
        // Like httpx: 1 ms of Python a call, saturated from 32 threads on, and each thread past
        // 32 costs throughput.
        let workload = |limit: usize| {
            let rate = if limit <= 32 {
                limit as f64 / 0.05
            } else {
                640.0 - (limit - 32) as f64 * 10.0
            };
            (rate, if limit >= 32 { 1.0 } else { limit as f64 / 32.0 * 0.8 })
        };
        let limits = settle(64, (50 * MS, MS), 60, workload);
        assert!(
            (30..=40).contains(&limits[0]),
            "the first answer leaves room for ~37: {limits:?}"
        );
        let late = &limits[30..];
        assert!(late.iter().all(|&l| (20..=40).contains(&l)), "{limits:?}");
        // Mostly within a tenth of the best throughput (640 at 32; the probes step by quarters,
        // and a probe that loses runs for one epoch).
        let near_best = late.iter().filter(|&&l| workload(l).0 >= 576.0).count();
        assert!(near_best * 5 >= late.len() * 4, "{limits:?}");
    }

    #[test]
    fn a_cpu_bound_snippet_ends_up_on_few_threads_at_the_same_throughput() {
        // Pure Python: the same throughput however many threads share the interpreter.
        let limits = settle(64, (5 * MS, 5 * MS), 40, |_| (200.0, 1.0));
        assert_eq!(limits[0], START);
        assert!(*limits.last().unwrap() <= 2, "{limits:?}");
    }

    #[test]
    fn code_that_runs_in_parallel_outside_the_gil_keeps_its_threads() {
        // All CPU, but C code with the GIL released on two cores: fewer than two threads lose.
        let limits = settle(8, (10 * MS, 10 * MS), 60, |limit| {
            (limit.min(2) as f64 * 100.0, limit.min(2) as f64)
        });
        let at_least_two = limits.iter().filter(|&&l| l >= 2).count();
        assert!(at_least_two * 10 >= limits.len() * 9, "{limits:?}");
    }

    #[test]
    fn a_lost_probe_waits_longer_each_time() {
        let mut control = Control::new(64);
        control.limit = 64;
        control.decide(1000.0, 1.0);
        assert_eq!(control.limit, 48, "saturated: probes lower");
        control.decide(500.0, 1.0);
        assert_eq!((control.limit, control.hold), (64, 1), "slower: undone");
        control.decide(1000.0, 1.0);
        assert_eq!(control.limit, 64, "holds for one epoch");
        control.decide(1000.0, 1.0);
        control.decide(500.0, 1.0);
        assert_eq!((control.limit, control.hold), (64, 2), "the next hold is twice as long");
    }

    #[test]
    fn places_follow_the_limit() {
        let throttle = Throttle::new(2, Arc::new(AtomicU64::new(0)));
        throttle.enter();
        throttle.enter();
        let (tx, rx) = std::sync::mpsc::channel();
        let third = std::thread::scope(|scope| {
            scope.spawn(|| {
                throttle.enter();
                tx.send(()).ok();
            });
            assert!(
                rx.recv_timeout(Duration::from_millis(50)).is_err(),
                "a third place while two are taken"
            );
            throttle.give_up();
            rx.recv_timeout(Duration::from_secs(5)).is_ok()
        });
        assert!(third, "a place given back lets the waiting worker in");
    }
}
