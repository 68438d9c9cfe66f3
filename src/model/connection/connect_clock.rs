//! How long a request spent opening its connection: a connector layer for reqwest that adds
//! the time of each new connection to the clock of the request that asked for it. The clock
//! is a task-local set around one request ([`timed`]); the pool asks the connector from inside
//! that request's future, so a connection opened for it is charged to it, and a reused one
//! costs nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Clock {
    nanos: AtomicU64,
}

tokio::task_local! {
    static CLOCK: Arc<Clock>;
}

/// Runs `request` and says how long it spent connecting (read when it finishes: a connection
/// it started but did not use, finishing later in the background, is not charged).
pub async fn timed<F: Future>(request: F) -> (F::Output, Duration) {
    let clock = Arc::new(Clock::default());
    let out = CLOCK.scope(Arc::clone(&clock), request).await;
    (out, Duration::from_nanos(clock.nanos.load(Ordering::Relaxed)))
}

/// The layer for `reqwest::ClientBuilder::connector_layer`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectClockLayer;

impl<S> tower_layer::Layer<S> for ConnectClockLayer {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Timed<S> {
        Timed(inner)
    }
}

#[derive(Clone, Debug)]
pub struct Timed<S>(S);

impl<S, R> tower_service::Service<R> for Timed<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let clock = CLOCK.try_with(Arc::clone).ok();
        let started = Instant::now();
        let connecting = self.0.call(request);
        Box::pin(async move {
            let out = connecting.await;
            if let Some(clock) = clock {
                let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                clock.nanos.fetch_add(nanos, Ordering::Relaxed);
            }
            out
        })
    }
}
