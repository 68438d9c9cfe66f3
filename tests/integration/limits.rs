//! Per-model limits and retries during `lfeval run`, observed from the server side: how many
//! requests are in flight, when each one started, and which failures are retried how often.

use std::time::Duration;

use serde_json::{Value, json};

use super::runs::{EXACT_SCORER, echo_project, jsonl, model, numbered_rows, out_dir, read_json, samples};
use super::server::{RecordedRequest, Response, TestServer, delayed, openai_chat, scripted};
use super::test::Test;

/// Seconds between two server-side instants.
fn secs(from: std::time::Instant, to: std::time::Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

fn starts(requests: &[RecordedRequest]) -> Vec<std::time::Instant> {
    let mut starts: Vec<_> = requests.iter().map(|r| r.started).collect();
    starts.sort();
    starts
}

#[test]
fn rate_limit_and_concurrency_cap_hold_at_the_server() {
    // Each answer takes longer than four request slots at 120/min (4 × 0.5 s), so both limits
    // bind: the limiter spaces the starts and the cap stops a fifth request from overlapping.
    let server = TestServer::start(delayed(openai_chat(), Duration::from_millis(2100)));
    let n = 6;
    let t = echo_project(
        &server,
        "rate_limit: 120\nmax_concurrent_requests: 4",
        &numbered_rows(n),
        "cache_policy: no-cache",
        EXACT_SCORER,
    )
    .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let out = t.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(server.count(), n);
    assert!(
        server.max_in_flight() <= 4,
        "max_concurrent_requests 4, but the server saw {} in flight",
        server.max_in_flight()
    );
    assert!(
        server.max_in_flight() >= 2,
        "requests should overlap, saw {}",
        server.max_in_flight()
    );

    let starts = starts(&server.requests());
    let gaps: Vec<f64> = starts.windows(2).map(|w| secs(w[0], w[1])).collect();
    let span = secs(starts[0], starts[n - 1]);
    eprintln!("rate limit 120/min: start gaps {gaps:.3?} s, first to last {span:.3} s");
    // 120/min with burst 1 = one start per 0.5 s. Server timestamps also carry the client's
    // scheduling and connection set-up, which can only delay a start; the slack covers a late
    // first request shrinking the measured span.
    assert!(
        span >= (n - 1) as f64 * 0.5 - 0.2,
        "{n} requests started within {span:.3} s"
    );
    for (i, gap) in gaps.iter().enumerate() {
        assert!(*gap >= 0.3, "requests {i} and {} started {gap:.3} s apart", i + 1);
    }
}

/// A chat completion any scripted server can answer with.
fn ok_body() -> Response {
    Response::json(
        200,
        &json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
    )
}

fn status(code: u16) -> Response {
    Response::json(
        code,
        &json!({"error": {"message": format!("status {code} from the test server")}}),
    )
}

#[test]
fn retries_follow_status_codes_and_retry_after() {
    let servers: Vec<(&str, TestServer)> = vec![
        // 429 asking for a one-second pause, then success.
        (
            "retry-after",
            TestServer::start(scripted(vec![status(429).with_header("Retry-After", "1")], ok_body())),
        ),
        // Two 503s, then success.
        (
            "unavailable",
            TestServer::start(scripted(vec![status(503), status(503)], ok_body())),
        ),
        // A client error is final.
        ("bad-request", TestServer::start(scripted(Vec::new(), status(400)))),
        // 503 forever: retries run out.
        ("exhausted", TestServer::start(scripted(Vec::new(), status(503)))),
        // A 200 whose body the adapter cannot read is not retried either.
        (
            "bad-body",
            TestServer::start(scripted(Vec::new(), Response::text(200, "this is not json"))),
        ),
    ];
    let models: String = servers
        .iter()
        .map(|(key, server)| {
            model(
                key,
                server,
                "max_concurrent_requests: 1\nretry: {max_attempts: 3, initial_backoff: 0.05}",
            )
        })
        .collect();
    let specs: String = servers
        .iter()
        .map(|(key, _)| format!("    - {{key: {key}, task_key: ask, model_key: {key}}}\n"))
        .collect();
    let run_yaml = format!(
        r#"models:
{models}datasets:
  - key: one
    source: {{type: local, file_path: one.jsonl}}
    id_column: id
tasks:
  - key: ask
    display_name: "Ask"
    definition:
      dataset: {{key: one}}
      solver:
        type: single_turn_solver
        input_builder:
          type: chat_completion
          input_messages:
            - {{role: user, content: "{{{{ sample.question }}}}"}}
      scorers:
        - {{type: string_equals, key: exact, ground_truth: "fine", metrics: [{{type: mean, field: is_correct}}]}}
evaluation:
  key: retries
  cache_policy: no-cache
  task_specifications:
{specs}"#
    );
    let t = Test::new()
        .write("run.yaml", &run_yaml)
        .write(
            "one.jsonl",
            &jsonl(&[json!({"id": "only", "question": "are you there?"})]),
        )
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let out = t.run();
    assert_eq!(out.code, 1, "three specifications fail\n{}\n{}", out.stdout, out.stderr);

    let records: Vec<Value> = samples(&out_dir(&t, "out"));
    let record = |spec: &str| -> Value {
        let matching: Vec<&Value> = records.iter().filter(|r| r["spec"] == spec).collect();
        assert_eq!(matching.len(), 1, "one record for `{spec}`");
        matching[0].clone()
    };
    let requests = |spec: &str| servers.iter().find(|(k, _)| *k == spec).expect("server").1.requests();
    let error_of = |spec: &str| -> (String, String) {
        let r = record(spec);
        let errors = r["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "`{spec}`: {r:#}");
        (
            errors[0]["stage"].as_str().unwrap_or_default().to_owned(),
            errors[0]["message"].as_str().unwrap_or_default().to_owned(),
        )
    };

    // 429 + Retry-After: 1 → one retry, no earlier than a second after the 429 went out.
    let r = requests("retry-after");
    assert_eq!(r.iter().map(|r| r.status).collect::<Vec<_>>(), [Some(429), Some(200)]);
    let pause = secs(r[0].finished, r[1].started);
    eprintln!("Retry-After: 1 → retry {pause:.3} s after the 429");
    assert!(pause >= 0.95, "the retry came {pause:.3} s after the 429");
    assert_eq!(record("retry-after")["errors"], json!([]));
    assert_eq!(record("retry-after")["retries"], 1);
    assert_eq!(record("retry-after")["scores"]["exact"]["values"]["is_correct"], 1.0);

    // 503 twice → three requests, the sample succeeds.
    let r = requests("unavailable");
    assert_eq!(r.len(), 3);
    assert_eq!(
        r.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Some(503), Some(503), Some(200)]
    );
    assert!(
        secs(r[0].finished, r[1].started) >= 0.02,
        "the first retry waits for its backoff"
    );
    let ok = record("unavailable");
    assert_eq!(ok["errors"], json!([]));
    assert_eq!((ok["attempts"].as_u64(), ok["retries"].as_u64()), (Some(3), Some(2)));

    // 400 → a single request and a failed sample that says why.
    assert_eq!(requests("bad-request").len(), 1, "a 400 is never retried");
    let (stage, message) = error_of("bad-request");
    assert_eq!(stage, "transform_output", "the adapter turned the 400 into an error");
    assert!(message.contains("status code (400)"), "{message}");
    assert_eq!(
        (
            record("bad-request")["attempts"].as_u64(),
            record("bad-request")["retries"].as_u64()
        ),
        (Some(1), Some(0))
    );

    // 503 three times → retries exhausted, the failure names the status.
    assert_eq!(
        requests("exhausted").len(),
        3,
        "max_attempts 3 means three requests in all"
    );
    let (stage, message) = error_of("exhausted");
    assert_eq!(stage, "transform_output");
    assert!(message.contains("status code (503)"), "{message}");
    let attempts = record("exhausted")["calls"][0]["attempts"].clone();
    let attempt_errors: Vec<&str> = attempts
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["error"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(attempt_errors, ["the endpoint answered 503"; 3]);

    // An unreadable 200 → one request, a transform-output failure.
    assert_eq!(
        requests("bad-body").len(),
        1,
        "an output the adapter cannot read is not retried"
    );
    let (stage, message) = error_of("bad-body");
    assert_eq!(stage, "transform_output");
    assert!(message.contains("`process_output` failed"), "{message}");
    assert_eq!(record("bad-body")["errors"][0]["class"], "template_error");

    let summary = read_json(&out_dir(&t, "out").join("summary.json"));
    let failed: Vec<(String, u64)> = summary["specifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["key"].as_str().unwrap().to_owned(), s["failed"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        failed,
        [
            ("retry-after", 0),
            ("unavailable", 0),
            ("bad-request", 1),
            ("exhausted", 1),
            ("bad-body", 1)
        ]
        .map(|(k, n)| (k.to_owned(), n))
    );
}

#[test]
fn a_429_without_retry_after_halves_the_concurrency_and_successes_grow_it_back() {
    // The first four requests (sent together, at max_concurrent_requests 4) are refused without
    // Retry-After; everything after that succeeds slowly.
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&seen);
    let answer = delayed(openai_chat(), Duration::from_millis(300));
    let server = TestServer::start(move |req: &super::server::Request| {
        if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 4 {
            status(429)
        } else {
            answer(req)
        }
    });
    let n = 16;
    let t = echo_project(
        &server,
        "max_concurrent_requests: 4\nretry: {max_attempts: 3, initial_backoff: 0.05}",
        &numbered_rows(n),
        "cache_policy: no-cache",
        EXACT_SCORER,
    )
    .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    t.success();
    let requests = server.requests();
    assert_eq!(requests.len(), n + 4, "each refused call retried once");
    let overlap = |window: &[RecordedRequest]| {
        window
            .iter()
            .map(|a| {
                window
                    .iter()
                    .filter(|b| b.started <= a.started && b.finished > a.started)
                    .count()
            })
            .max()
            .unwrap_or(0)
    };
    let mut after: Vec<RecordedRequest> = requests.iter().filter(|r| r.seq >= 4).cloned().collect();
    after.sort_by_key(|r| r.started);
    let early = overlap(&after[..4]);
    let late = overlap(&after[after.len() - 6..]);
    eprintln!("after four 429s: {early} in flight at first, {late} at the end (max 4)");
    assert!(
        early <= 2,
        "the window did not halve: {early} in flight right after the 429s"
    );
    assert!(late >= 3, "the window never grew back: {late} in flight at the end");
}
