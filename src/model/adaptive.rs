//! Adaptive concurrency: how many calls of one model this process lets run at once, between 1
//! and `max_concurrent_requests`. A 429 without `Retry-After` says the provider is overloaded
//! without saying for how long, so the window halves (multiplicative decrease) and grows back by
//! about one call per window of successes (additive increase), as TCP does. Only a 429 from a
//! call that started after the last decrease counts: the calls already in flight when the
//! provider tipped over all fail together, and that is one signal, not twenty.
//!
//! The state is per process even with shared limits: independent AIMD controllers sharing one
//! bottleneck converge to a fair share without coordinating, and a slow Redis never makes this
//! controller oscillate. The global cap stays the lease set, so the window can only lower what
//! runs.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct AdaptiveWindow {
    max: usize,
    permits: Arc<Semaphore>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The window, fractional so that `+1/w` per success adds up to one per window.
    window: f64,
    last_decrease: Option<Instant>,
    /// Permits taken out of circulation that were in use when the window shrank: the next ones
    /// returned are forgotten instead.
    debt: usize,
}

/// One call's place in the window; returned (or forgotten, if the window shrank) on drop.
#[derive(Debug)]
pub struct WindowPermit {
    permit: Option<OwnedSemaphorePermit>,
    window: Arc<AdaptiveWindow>,
}

impl AdaptiveWindow {
    pub fn new(max: usize) -> Arc<AdaptiveWindow> {
        let max = max.max(1);
        Arc::new(AdaptiveWindow {
            max,
            permits: Arc::new(Semaphore::new(max)),
            state: Mutex::new(State {
                window: max as f64,
                last_decrease: None,
                debt: 0,
            }),
        })
    }

    pub async fn acquire(self: &Arc<Self>) -> WindowPermit {
        #[expect(clippy::expect_used, reason = "the semaphore is owned here and never closed")]
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("window semaphore is never closed");
        WindowPermit {
            permit: Some(permit),
            window: Arc::clone(self),
        }
    }

    /// Calls that may run at once right now.
    pub fn current(&self) -> usize {
        self.lock().window as usize
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A call succeeded: grow by `1/w`.
    pub fn on_success(&self) {
        let mut state = self.lock();
        if state.window >= self.max as f64 {
            return;
        }
        let before = state.window as usize;
        state.window = (state.window + 1.0 / state.window).min(self.max as f64);
        if state.window as usize > before {
            if state.debt > 0 {
                state.debt -= 1;
            } else {
                self.permits.add_permits(1);
            }
        }
    }

    /// A call that started at `started` was refused with a 429 and no `Retry-After`: halve,
    /// once per congestion event.
    pub fn on_throttle(&self, started: Instant) {
        let mut state = self.lock();
        if state.last_decrease.is_some_and(|at| started <= at) {
            return;
        }
        let before = state.window as usize;
        state.window = (state.window / 2.0).max(1.0);
        state.last_decrease = Some(Instant::now());
        let cut = before - state.window as usize;
        let forgotten = self.permits.forget_permits(cut);
        state.debt += cut - forgotten;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for WindowPermit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else { return };
        let mut state = self.window.lock();
        if state.debt > 0 {
            state.debt -= 1;
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn try_acquire(window: &Arc<AdaptiveWindow>) -> Option<WindowPermit> {
        tokio::time::timeout(Duration::from_millis(20), window.acquire())
            .await
            .ok()
    }

    #[tokio::test]
    async fn a_429_halves_the_window_and_successes_grow_it_back_to_the_cap() {
        let window = AdaptiveWindow::new(8);
        let started = Instant::now();
        window.on_throttle(started);
        assert_eq!(window.current(), 4);
        // The other calls of the same burst fail too: still one decrease.
        window.on_throttle(started);
        assert_eq!(window.current(), 4);
        // A call started after the decrease that fails again halves once more.
        window.on_throttle(Instant::now());
        assert_eq!(window.current(), 2);
        let mut successes = 0;
        while window.current() < 8 {
            window.on_success();
            successes += 1;
        }
        // From 2 to 8 at +1/w per success: about one per window of calls, w²/2 in all
        // (30, counted with the same arithmetic independently).
        assert_eq!(successes, 30);
        window.on_success();
        assert_eq!(window.current(), 8, "never above max_concurrent_requests");
    }

    #[tokio::test]
    async fn the_window_bounds_calls_even_when_it_shrinks_under_calls_in_flight() {
        let window = AdaptiveWindow::new(4);
        let held: Vec<WindowPermit> = futures_permits(&window, 4).await;
        window.on_throttle(Instant::now());
        assert_eq!(window.current(), 2);
        // Four in flight, window 2: two returns are forgotten before anything new may start.
        let mut held = held.into_iter();
        drop(held.next());
        assert!(try_acquire(&window).await.is_none(), "3 in flight with a window of 2");
        drop(held.next());
        assert!(try_acquire(&window).await.is_none(), "2 in flight with a window of 2");
        drop(held.next());
        let third = try_acquire(&window).await;
        assert!(third.is_some(), "1 in flight with a window of 2");
        assert!(try_acquire(&window).await.is_none(), "2 in flight with a window of 2");
        drop(third);
    }

    async fn futures_permits(window: &Arc<AdaptiveWindow>, n: usize) -> Vec<WindowPermit> {
        let mut permits = Vec::new();
        for _ in 0..n {
            permits.push(try_acquire(window).await.expect("a free permit"));
        }
        permits
    }
}
