#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
//! What shared limits (`--limits redis://…`) add to one model call: the gate's admission with
//! every limit declared (concurrency lease, rate, tokens, pause), through a real `redis-server`
//! on 127.0.0.1 that this benchmark starts, against a local gate with only its permit.
//! Releases and token settlements are sent in the background, so the admission is the whole
//! added latency on a call's critical path; it is measured sequentially (one call at a time:
//! pure round trip) and with 8 calls at once on the one multiplexed connection (throughput).
//!
//! Run with `cargo bench --bench shared_limits` (needs `redis-server` on the `PATH`).

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lfeval::model::gate::Gate;
use lfeval::model::shared_limits::{LimitsConfig, ModelLimits, SharedLimits};

const CALLS: usize = 10_000;
const WARMUP: usize = 500;
const TASKS: usize = 8;

/// Limits high enough never to hold a call back, so only the cost of checking them shows.
const LIMITS: ModelLimits = ModelLimits {
    max_concurrent: Some(64),
    rate_limit: Some(6_000_000),
    tokens_per_minute: Some(1_000_000_000),
};

#[path = "../tests/integration/redis.rs"]
mod redis_server;

fn main() -> Result<(), Box<dyn Error>> {
    let server = redis_server::RedisServer::start();
    bench(server.port)
}

fn bench(port: u16) -> Result<(), Box<dyn Error>> {
    let tokio = lfeval::async_runtime::build()?;
    let config = LimitsConfig {
        url: format!("redis://127.0.0.1:{port}"),
        origin: "`--limits`",
        namespace: "bench".to_owned(),
        lease: Duration::from_secs(30),
    };
    // The local baseline declares no rate: locally, 6 000 000/min would space calls 10 µs apart.
    let local = Arc::new(Gate::new(64, None));
    let shared = Arc::new(Gate::new(64, LIMITS.rate_limit).with_tokens_per_minute(LIMITS.tokens_per_minute));
    tokio.block_on(async {
        let limits = SharedLimits::connect(&config).await?;
        shared.share(limits.model("bench", LIMITS));
        Ok::<_, Box<dyn Error>>(())
    })?;

    println!("admission through the gate, {CALLS} calls, release build recommended");
    let local_one = tokio.block_on(sequential(&local));
    let shared_one = tokio.block_on(sequential(&shared));
    report("local limits, one at a time", &local_one);
    report("shared limits, one at a time", &shared_one);
    println!(
        "  added per call (p50): {:.1} µs",
        percentile(&shared_one, 0.5).as_secs_f64() * 1e6 - percentile(&local_one, 0.5).as_secs_f64() * 1e6
    );
    let (elapsed, latencies) = tokio.block_on(concurrent(&shared));
    report(&format!("shared limits, {TASKS} at once"), &latencies);
    println!(
        "  throughput: {:.0} admissions/s on one connection",
        CALLS as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

async fn sequential(gate: &Gate) -> Vec<Duration> {
    for _ in 0..WARMUP {
        admit_once(gate).await;
    }
    let mut latencies = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        latencies.push(admit_once(gate).await);
    }
    latencies
}

async fn admit_once(gate: &Gate) -> Duration {
    let started = Instant::now();
    #[expect(clippy::expect_used, reason = "a benchmark with a server it started itself")]
    let admission = gate.admit_call(100).await.expect("admission");
    let took = started.elapsed();
    admission.finish().settle(100);
    took
}

async fn concurrent(gate: &Arc<Gate>) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let gate = Arc::clone(gate);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(CALLS / TASKS);
            for _ in 0..CALLS / TASKS {
                latencies.push(admit_once(&gate).await);
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(CALLS);
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    (started.elapsed(), all)
}

fn report(what: &str, latencies: &[Duration]) {
    println!(
        "{what}: p50 {:.1} µs, p99 {:.1} µs",
        percentile(latencies, 0.5).as_secs_f64() * 1e6,
        percentile(latencies, 0.99).as_secs_f64() * 1e6
    );
}

fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted
        .get(((sorted.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or_default()
}
