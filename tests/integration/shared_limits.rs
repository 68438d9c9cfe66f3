//! `--limits redis://…`: several lfeval processes share each model's `rate_limit` and
//! `max_concurrent_requests` through a real `redis-server`, observed from the endpoint's side;
//! a process killed with SIGKILL gives its places back within the lease time.

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::redis::RedisServer;
use serde_json::json;

use super::runs::{EXACT_SCORER, command, echo_project, numbered_rows, samples};
use super::server::{Request, TestServer, delayed, openai_chat};
use super::test::Test;

fn spawn_shards(t: &Test, redis: &RedisServer, extra: &[&str]) -> Vec<Child> {
    (0..3)
        .map(|i| {
            let shard = format!("{i}/3");
            let dir = format!("s{i}");
            let url = redis.url();
            let mut args = vec!["run", "-f", "run.yaml", "--shard", &shard, "-o", &dir, "--no-progress"];
            args.extend(["--limits", &url]);
            args.extend(extra);
            command(t, &args).spawn().expect("spawn lfeval")
        })
        .collect()
}

fn wait_all(children: Vec<Child>) {
    for mut child in children {
        let status = child.wait().expect("wait for lfeval");
        assert!(status.success(), "a shard ended with {status}");
    }
}

#[test]
fn three_processes_share_one_rate_limit_and_one_concurrency_cap() {
    let redis = RedisServer::start();
    let server = TestServer::start(delayed(openai_chat(), Duration::from_millis(200)));
    let n = 50;
    // One process alone could send 15 requests a second (3 × 1/0.2 s), three 45: only the
    // shared limit keeps the three at 10.
    let t = echo_project(
        &server,
        "rate_limit: 600\nmax_concurrent_requests: 3",
        &numbered_rows(n),
        "cache_policy: no-cache",
        EXACT_SCORER,
    );
    wait_all(spawn_shards(&t, &redis, &[]));
    let mut starts: Vec<Instant> = server.requests().iter().map(|r| r.started).collect();
    assert_eq!(starts.len(), n, "every sample once, no retries");
    starts.sort();
    let span = (starts[n - 1] - starts[0]).as_secs_f64();
    let rate = (n - 1) as f64 / span;
    let busiest = starts
        .iter()
        .map(|a| {
            starts
                .iter()
                .filter(|b| **b >= *a && **b - *a < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "three processes at rate_limit 600: {rate:.3} requests/s at the server over {span:.2} s, at most {busiest} in any second, at most {} in flight",
        server.max_in_flight()
    );
    assert!((rate - 10.0).abs() <= 0.3, "the server saw {rate:.3}/s, not 10/s ± 3 %");
    // Burst 1: a second holds at most rate × 1 s + 1 starts (its window may catch both ends).
    assert!(busiest <= 11, "{busiest} requests within one second");
    assert!(server.max_in_flight() <= 3, "{} in flight", server.max_in_flight());
}

#[test]
fn the_concurrency_cap_holds_across_processes() {
    let redis = RedisServer::start();
    let server = TestServer::start(delayed(openai_chat(), Duration::from_millis(300)));
    let t = echo_project(
        &server,
        "max_concurrent_requests: 2",
        &numbered_rows(21),
        "cache_policy: no-cache",
        EXACT_SCORER,
    );
    wait_all(spawn_shards(&t, &redis, &[]));
    assert_eq!(server.count(), 21);
    // Alone, each process would run two at once: six in all.
    assert_eq!(
        server.max_in_flight(),
        2,
        "the cap of 2 was not shared (or never reached)"
    );
}

#[test]
fn a_process_killed_with_sigkill_gives_its_places_back_within_the_lease_time() {
    let redis = RedisServer::start();
    let lease = Duration::from_secs(2);
    // The first two requests (the killed process's) never finish in time; later ones do.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let answer = openai_chat();
    let server = TestServer::start(move |req: &Request| {
        let mut response = answer(req);
        if counter.fetch_add(1, Ordering::SeqCst) < 2 {
            response.delay = Some(Duration::from_secs(10));
        }
        response
    });
    let t = echo_project(
        &server,
        "max_concurrent_requests: 2",
        &numbered_rows(4),
        "cache_policy: no-cache",
        EXACT_SCORER,
    );
    let url = redis.url();
    let args = |dir: &'static str| {
        vec![
            "run",
            "-f",
            "run.yaml",
            "-o",
            dir,
            "--no-progress",
            "--limits",
            url.as_str(),
            "--limits-lease",
            "2s",
        ]
    };
    let mut first = command(&t, &args("first")).spawn().expect("spawn lfeval");
    assert!(
        server.wait_for_count(2, Duration::from_secs(30)),
        "the first process never took both places"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.count(), 2, "a third call ran beside two held places");
    first.kill().expect("SIGKILL");
    let killed = Instant::now();
    first.wait().expect("reap the killed process");

    let second = command(&t, &args("second")).spawn().expect("spawn lfeval");
    assert!(
        server.wait_for_count(3, Duration::from_secs(10)),
        "the killed process's places never came back"
    );
    let waited = server.requests()[2].started.saturating_duration_since(killed);
    eprintln!("SIGKILL → the next process's first request after {waited:?} (lease {lease:?})");
    // A lease is renewed every third of its time, so it ends between 2/3 and 1 lease after
    // the kill; before that, the other process must wait.
    assert!(
        waited <= lease + Duration::from_millis(500),
        "places came back after {waited:?}"
    );
    assert!(
        waited >= lease * 2 / 3 - Duration::from_millis(200),
        "the second process did not wait for the dead one's leases ({waited:?})"
    );
    wait_all(vec![second]);
}

#[test]
fn a_shared_limits_server_that_cannot_be_reached_stops_the_run_before_any_request() {
    let server = TestServer::start(openai_chat());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let t = echo_project(
        &server,
        "rate_limit: 600",
        &numbered_rows(3),
        "cache_policy: no-cache",
        EXACT_SCORER,
    )
    .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"])
    .env("LFEVAL_LIMITS", &format!("redis://:hunter22@127.0.0.1:{closed}"));
    let out = t.config_error();
    assert_eq!(server.count(), 0);
    assert!(!out.stderr.contains("hunter22"), "{}", out.stderr);
    assert!(!t.path().join("out").exists(), "an empty run directory was left behind");
    insta::assert_snapshot!(t.render(&out));
}

#[test]
fn losing_the_shared_limits_server_mid_run_stops_the_run_and_resume_finishes_it() {
    let redis = RedisServer::start();
    let server = TestServer::start(openai_chat());
    let n = 40;
    let t = echo_project(
        &server,
        "rate_limit: 600\nmax_concurrent_requests: 2",
        &numbered_rows(n),
        "cache_policy: no-cache",
        EXACT_SCORER,
    );
    let url = redis.url();
    let run = [
        "run",
        "-f",
        "run.yaml",
        "-o",
        "out",
        "--no-progress",
        "--limits-lease",
        "1s",
        "--limits",
    ];
    let mut args = run.to_vec();
    args.push(&url);
    let child = command(&t, &args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lfeval");
    assert!(
        server.wait_for_count(5, Duration::from_secs(30)),
        "the run never started"
    );
    let lost = Instant::now();
    drop(redis);
    let out = child.wait_with_output().expect("wait for lfeval");
    let stopped = lost.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    eprintln!("the run stopped {stopped:?} after Redis went away");
    assert!(stderr.contains("has been unreachable for"), "{stderr}");
    assert!(stderr.contains("resume with `lfeval run --resume out`"), "{stderr}");
    // What finished is saved, and no sample was recorded as failed because Redis went away.
    let saved = samples(&t.path().join("out"));
    assert!(saved.len() >= 3 && saved.len() < n, "{} samples saved", saved.len());
    assert!(
        saved.iter().all(|r| r["errors"] == json!([])),
        "a sample failed for Redis"
    );

    // Redis is back (elsewhere): the resumed run finishes, every sample once.
    let redis = RedisServer::start();
    let url = redis.url();
    let t = t.args(["run", "--resume", "out", "--no-progress", "--limits", &url]);
    t.success();
    let records = samples(&t.path().join("out"));
    assert_eq!(records.len(), n);
    let ids: std::collections::BTreeSet<&str> = records.iter().map(|r| r["sample_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), n, "a sample was recorded twice");
}
