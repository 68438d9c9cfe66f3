//! The shared limits against a real `redis-server` (Debian's package; `.ci/test` installs it),
//! started here on 127.0.0.1 with a random port and no persistence. Each test uses its own
//! server, so tests run in parallel without seeing each other's keys.

#![allow(
    clippy::print_stderr,
    reason = "tests print measured figures to help diagnose failures"
)]

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

#[path = "../../../tests/integration/redis.rs"]
mod redis_server;

use redis_server::RedisServer;

fn config(server: &RedisServer, lease: Duration) -> LimitsConfig {
    LimitsConfig {
        url: server.url(),
        origin: "`--limits`",
        namespace: "test".to_owned(),
        lease,
    }
}

const LEASE: Duration = Duration::from_secs(30);

fn limits(max_concurrent: Option<u32>, rate_limit: Option<u32>, tokens_per_minute: Option<u32>) -> ModelLimits {
    ModelLimits {
        max_concurrent,
        rate_limit,
        tokens_per_minute,
    }
}

/// One "process": its own connection, as separate lfeval processes have.
async fn process(server: &RedisServer, lease: Duration, model: ModelLimits) -> Arc<SharedModel> {
    SharedLimits::connect(&config(server, lease))
        .await
        .unwrap()
        .model("m", model)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_one_rate_of_600_per_minute() {
    let server = RedisServer::start();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let model = process(&server, LEASE, limits(None, Some(600), None)).await;
        for _ in 0..4 {
            let model = Arc::clone(&model);
            tasks.push(tokio::spawn(async move {
                let mut at = Vec::new();
                for _ in 0..4 {
                    model.admit(0).await.unwrap();
                    at.push(Instant::now());
                }
                at
            }));
        }
    }
    let mut starts = Vec::new();
    for task in tasks {
        starts.extend(task.await.unwrap());
    }
    starts.sort();
    let span = starts[starts.len() - 1] - starts[0];
    let rate = (starts.len() - 1) as f64 / span.as_secs_f64();
    eprintln!("48 admissions in {span:?}: {rate:.3}/s");
    assert!(
        (rate - 10.0).abs() <= 0.3,
        "600/min across three processes gave {rate:.3}/s"
    );
}

#[tokio::test]
async fn the_concurrency_cap_holds_across_processes_and_a_release_frees_a_place() {
    let server = RedisServer::start();
    let a = process(&server, LEASE, limits(Some(2), None, None)).await;
    let b = process(&server, LEASE, limits(Some(2), None, None)).await;
    let first = a.admit(0).await.unwrap();
    let _second = b.admit(0).await.unwrap();
    let third = tokio::time::timeout(Duration::from_millis(300), a.admit(0)).await;
    assert!(third.is_err(), "a third call was admitted under a cap of 2");
    assert_eq!(
        b.waiting(),
        None,
        "nothing waits once the refused admission is given up"
    );
    drop(first);
    let third = tokio::time::timeout(Duration::from_secs(2), b.admit(0)).await;
    assert!(third.is_ok(), "the released lease was not taken again");
}

#[test]
fn the_leases_of_a_process_that_died_expire_after_the_lease_time() {
    let server = RedisServer::start();
    let lease = Duration::from_millis(800);
    let config = config(&server, lease);
    // A process that takes both places and dies: its runtime stops, so nothing renews or
    // releases its leases.
    let dead = tokio::runtime::Runtime::new().unwrap();
    dead.block_on(async {
        let model = SharedLimits::connect(&config)
            .await
            .unwrap()
            .model("m", limits(Some(2), None, None));
        let held = (model.admit(0).await.unwrap(), model.admit(0).await.unwrap());
        std::mem::forget(held);
    });
    dead.shutdown_background();
    let died = Instant::now();
    let alive = tokio::runtime::Runtime::new().unwrap();
    let admitted = alive.block_on(async {
        let other = process(&server, lease, limits(Some(2), None, None)).await;
        tokio::time::timeout(Duration::from_secs(5), other.admit(0))
            .await
            .is_ok()
    });
    let waited = died.elapsed();
    assert!(admitted, "the dead process's leases never expired");
    eprintln!("a dead process's lease was taken again after {waited:?} (lease {lease:?})");
    assert!(
        waited >= lease - Duration::from_millis(100) && waited <= lease + Duration::from_millis(400),
        "taken again after {waited:?} with a lease of {lease:?}"
    );
}

#[tokio::test]
async fn a_live_process_keeps_its_leases_past_the_lease_time() {
    let server = RedisServer::start();
    let lease = Duration::from_millis(600);
    let a = process(&server, lease, limits(Some(1), None, None)).await;
    let b = process(&server, lease, limits(Some(1), None, None)).await;
    let held = a.admit(0).await.unwrap();
    // Three lease times: only the heartbeat keeps the lease alive.
    let stolen = tokio::time::timeout(lease * 3, b.admit(0)).await;
    assert!(stolen.is_err(), "a renewed lease was taken by another process");
    assert_eq!(a.lost_leases(), 0);
    drop(held);
}

#[tokio::test]
async fn a_retry_after_pause_holds_every_process() {
    let server = RedisServer::start();
    let a = process(&server, LEASE, limits(None, None, None)).await;
    let b = process(&server, LEASE, limits(None, None, None)).await;
    a.pause_for(Duration::from_millis(400));
    // The pause is sent in the background; give it a moment to land.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    b.admit(0).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(700),
        "the other process waited {waited:?}"
    );
}

#[tokio::test]
async fn token_reservations_pace_calls_and_settle_with_the_real_usage() {
    let server = RedisServer::start();
    // 60 000 tokens/min = one token per millisecond.
    let a = process(&server, LEASE, limits(None, None, Some(60_000))).await;
    let b = process(&server, LEASE, limits(None, None, Some(60_000))).await;
    let (_, tokens) = a.admit(2000).await.unwrap();
    let held = tokio::time::timeout(Duration::from_millis(300), b.admit(10)).await;
    assert!(
        held.is_err(),
        "the second call did not wait for the first one's 2000 tokens"
    );
    // It used 400 of them: the next call may go 1.6 s earlier, that is now.
    tokens.unwrap().settle(400);
    // The settlement is sent in the background.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(1), b.admit(10)).await;
    assert!(next.is_ok(), "settling did not give the unused tokens back");
    assert!(start.elapsed() < Duration::from_millis(300), "{:?}", start.elapsed());
}

#[tokio::test]
async fn a_server_that_cannot_be_reached_is_an_error_naming_where_the_url_came_from() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = LimitsConfig {
        url: format!("redis://:hunter22@127.0.0.1:{port}"),
        origin: "`LFEVAL_LIMITS`",
        namespace: "test".to_owned(),
        lease: LEASE,
    };
    let error = SharedLimits::connect(&config).await.err().expect("a closed port");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "shared limits: cannot use redis://127.0.0.1:{port} (from `LFEVAL_LIMITS`): "
        )),
        "{text}"
    );
    assert!(!text.contains("hunter22"), "the password leaked: {text}");
}

#[tokio::test]
async fn a_server_gone_for_a_whole_lease_time_stops_admissions() {
    let mut server = RedisServer::start();
    let lease = Duration::from_millis(700);
    let model = process(&server, lease, limits(Some(2), Some(6000), None)).await;
    model.admit(0).await.unwrap();
    server.stop();
    let start = Instant::now();
    let error = model.admit(0).await.err().expect("no server");
    let waited = start.elapsed();
    assert!(matches!(error, LimitsError::Unreachable { .. }), "{error}");
    assert!(
        waited >= lease && waited < lease + Duration::from_secs(6),
        "gave up after {waited:?}"
    );
}

#[test]
fn keys_keep_one_hash_tag_per_model() {
    let keys = Keys::new("team {a}", "gpt-4$x");
    assert_eq!(keys.rate, "lfeval:{team%20%7Ba%7D/gpt-4$x}:rate");
    assert_eq!(keys.leases, "lfeval:{team%20%7Ba%7D/gpt-4$x}:leases");
}
