//! Snippet timeouts: a call that overruns the model's `timeout` fails within timeout + grace
//! (`TIMEOUT_GRACE`, 1 s) whatever it is stuck in, and the model keeps working: in one
//! `lfeval run` over two samples, the first call hangs and the second one succeeds.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::server::{Request, Response, TestServer, openai_chat};
use super::test::Test;
use crate::lfeval_snapshot;

/// The model's `timeout` in these tests.
const TIMEOUT: Duration = Duration::from_secs(1);
/// `TIMEOUT_GRACE` in src/python/mod.rs (async calls).
const GRACE: Duration = Duration::from_secs(1);
/// `STOP_GRACE` in src/python/mod.rs (sync calls stuck in C).
const STOP_GRACE: Duration = Duration::from_millis(250);
/// Scheduling slack on a loaded machine, on top of timeout + grace.
const SLACK: Duration = Duration::from_millis(700);

const TASK: &str = r#"key: echo-task
display_name: Echo task
definition:
  type: benchmark_task
  dataset:
    key: two
  solver:
    type: single_turn_solver
    input_builder:
      type: chat_completion
      input_messages:
        - role: user
          content: "{{ sample.word }}"
  scorers:
    - type: string_equals
      key: exact
      ground_truth: "never"
      metrics:
        - type: mean
          field: is_correct
"#;

const DATASET: &str = r#"key: two
display_name: Two samples
source:
  type: local
  file_path: two.jsonl
id_column: id
"#;

const RUN: &str = r#"evaluation:
  key: timeouts
  display_name: Timeouts
  cache_policy: no-cache
  task_specifications:
    - key: hang
      task_key: echo-task
      model_key: hang
      dataset_key: two
"#;

/// A model allowing one call at a time, no retries, and a 1 s timeout. `environment` is YAML
/// flow mapping.
fn model(environment: &str) -> String {
    format!(
        r#"key: hang
display_name: Hangs once
task: chat_completion
max_concurrent_requests: 1
retry:
  max_attempts: 1
config:
  connection_type: custom_inference
  run_inference_snippet: !include "../snippets/hang.py"
  environment: {environment}
  timeout: {}
"#,
        TIMEOUT.as_secs()
    )
}

/// Module-level state makes only the first call hang (at the line marked `# hangs`); later
/// calls answer `call <n> for <sample id>`.
fn snippet(is_async: bool, hang: &str) -> String {
    let def = if is_async { "async def" } else { "def" };
    format!(
        r#"import asyncio
import json
import time

CALLS = 0


{def} run_inference(body, environment, sample=None):
    global CALLS
    CALLS += 1
    if CALLS == 1:
        print("call 1 hangs", flush=True)
{hang}
    reply = f"call {{CALLS}} for {{sample['id']}}"
    return json.dumps({{"choices": [{{"message": {{"role": "assistant", "content": reply}}}}]}})
"#
    )
}

/// The 1-based line of `# hangs` in `source`.
fn hang_line(source: &str) -> usize {
    source
        .lines()
        .position(|l| l.contains("# hangs"))
        .expect("a `# hangs` marker")
        + 1
}

struct Outcome {
    wall: Duration,
    failed: Value,
    succeeded: Value,
}

fn run_two_samples(source: &str, environment: &str) -> Outcome {
    let test = Test::new()
        .write("models/hang.yaml", &model(environment))
        .write("snippets/hang.py", source)
        .write("tasks/echo.yaml", TASK)
        .write("datasets/two.yaml", DATASET)
        .write(
            "datasets/two.jsonl",
            "{\"id\": \"s1\", \"word\": \"one\"}\n{\"id\": \"s2\", \"word\": \"two\"}\n",
        )
        .write("run.yaml", RUN)
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let start = Instant::now();
    let out = test.run();
    let wall = start.elapsed();
    // One sample failed, so the run exits 1.
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("2 sample(s), 1 failed"), "{}", out.stdout);
    let text = std::fs::read_to_string(test.path().join("out/samples.jsonl")).expect("samples.jsonl");
    let records: Vec<Value> = text.lines().map(super::test::record_of_line).collect();
    assert_eq!(records.len(), 2, "{text}");
    let (failed, succeeded): (Vec<Value>, Vec<Value>) = records
        .into_iter()
        .partition(|r| r["errors"].as_array().is_some_and(|e| !e.is_empty()));
    assert_eq!((failed.len(), succeeded.len()), (1, 1), "{text}");
    let (failed, succeeded) = (
        failed.into_iter().next().expect("failed"),
        succeeded.into_iter().next().expect("succeeded"),
    );
    Outcome {
        wall,
        failed,
        succeeded,
    }
}

fn ms(v: &Value) -> Duration {
    Duration::from_secs_f64(v.as_f64().expect("a number of milliseconds") / 1000.0)
}

/// The checks every scenario shares; returns how long the timed-out call took.
fn assert_timed_out_then_recovered(outcome: &Outcome, line: usize) -> Duration {
    let failed = &outcome.failed;
    let message = failed["errors"][0]["message"].as_str().expect("an error message");
    assert_eq!(
        message,
        format!("model `hang`: run_inference timed out after 1s (snippets/hang.py:{line}, in run_inference)"),
    );
    let attempts = failed["calls"][0]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "retry.max_attempts is 1");
    assert_eq!(attempts[0]["error"], "timed out after 1s");
    let elapsed = ms(&attempts[0]["elapsed_ms"]);
    assert!(
        elapsed >= TIMEOUT - Duration::from_millis(50),
        "stopped before the timeout: {elapsed:?}"
    );
    assert!(elapsed <= TIMEOUT + GRACE + SLACK, "took {elapsed:?}");

    // The next call on the same model (same process, same module state) works, and it only
    // started once the hung call had given its permit back.
    let id = outcome.succeeded["sample_id"].as_str().expect("sample id");
    assert_eq!(outcome.succeeded["solver_output"]["text"], format!("call 2 for {id}"));
    let waited = ms(&outcome.succeeded["calls"][0]["timings"]["permit_wait_ms"]);
    assert!(
        waited >= TIMEOUT - Duration::from_millis(50),
        "the second call did not wait for the first: {waited:?}"
    );

    // Process start-up, two calls and writing results; the hung call dominates.
    assert!(
        outcome.wall <= TIMEOUT + GRACE + Duration::from_secs(5),
        "the run took {:?}",
        outcome.wall
    );
    eprintln!("timed-out call: {elapsed:?}; whole run: {:?}", outcome.wall);
    elapsed
}

#[test]
fn sync_busy_loop_that_swallows_exceptions() {
    let source = snippet(
        false,
        "        while True:  # hangs\n            try:\n                pass\n            except Exception:\n                pass",
    );
    let outcome = run_two_samples(&source, "{}");
    let elapsed = assert_timed_out_then_recovered(&outcome, hang_line(&source));
    // Pure Python is interrupted at the deadline, without waiting for the grace period.
    assert!(elapsed < TIMEOUT + GRACE, "{elapsed:?}");
}

#[test]
fn sync_sleep_longer_than_the_timeout() {
    let source = snippet(false, "        time.sleep(30)  # hangs");
    let outcome = run_two_samples(&source, "{}");
    let elapsed = assert_timed_out_then_recovered(&outcome, hang_line(&source));
    // Blocked in C: reported promptly, once the short stop grace is over; the thread is
    // abandoned (the run does not wait the 30 s out).
    assert!(
        elapsed >= TIMEOUT + STOP_GRACE - Duration::from_millis(50),
        "{elapsed:?}"
    );
    assert!(elapsed < TIMEOUT + STOP_GRACE * 2 + SLACK, "{elapsed:?}");
}

#[test]
fn async_sleep_is_cancelled_at_the_deadline() {
    let source = snippet(true, "        await asyncio.sleep(30)  # hangs");
    let outcome = run_two_samples(&source, "{}");
    let elapsed = assert_timed_out_then_recovered(&outcome, hang_line(&source));
    assert!(
        elapsed < TIMEOUT + GRACE,
        "cancelled inside the event loop: {elapsed:?}"
    );
}

#[test]
fn async_busy_loop_is_interrupted() {
    // A coroutine that never awaits holds the event loop itself.
    let source = snippet(
        true,
        "        while True:  # hangs\n            try:\n                pass\n            except Exception:\n                pass",
    );
    let outcome = run_two_samples(&source, "{}");
    assert_timed_out_then_recovered(&outcome, hang_line(&source));
}

#[test]
fn async_httpx_request_to_a_stalled_server() {
    let source = r#"import json

import httpx

CALLS = 0
CLIENT = httpx.AsyncClient(timeout=30.0)


async def run_inference(body, environment, sample=None):
    global CALLS
    CALLS += 1
    url = environment["URL"] + ("/stall" if CALLS == 1 else "") + "/v1/chat/completions"
    response = await CLIENT.post(url, json=json.loads(body))  # hangs
    response.raise_for_status()
    text = response.json()["choices"][0]["message"]["content"]
    reply = f"call {CALLS} for {sample['id']}"
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": reply, "upstream": text}}]})
"#;
    // The first request stalls far beyond the timeout; later ones are answered at once.
    let stalling = TestServer::start({
        let chat = openai_chat();
        move |req: &Request| -> Response {
            let resp = chat(req);
            if req.path.starts_with("/stall/") {
                resp.with_delay(Duration::from_secs(30))
            } else {
                resp
            }
        }
    });
    let outcome = run_two_samples(source, &format!("{{URL: \"{}\"}}", stalling.url()));
    let elapsed = assert_timed_out_then_recovered(&outcome, hang_line(source));
    assert!(
        elapsed < TIMEOUT + GRACE,
        "cancelled inside the event loop: {elapsed:?}"
    );
    let paths: Vec<String> = stalling.requests().iter().map(|r| r.request.path.clone()).collect();
    assert_eq!(paths, ["/stall/v1/chat/completions", "/v1/chat/completions"]);
}

#[test]
fn model_test_reports_where_the_call_was_stuck() {
    let source = "import time\n\n\ndef run_inference(body, environment):\n    print(\"waiting for the backend\")\n    time.sleep(30)\n    return body\n";
    let model = "key: slow\ndisplay_name: Slow\ntask: chat_completion\nretry:\n  max_attempts: 1\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include \"../snippets/slow.py\"\n  timeout: 1\n";
    let test = Test::new()
        .write("models/slow.yaml", model)
        .write("snippets/slow.py", source)
        .args(["model", "test", "slow"]);
    let start = Instant::now();
    lfeval_snapshot!(test);
    let wall = start.elapsed();
    assert!(wall <= TIMEOUT + GRACE + Duration::from_secs(4), "{wall:?}");
}
