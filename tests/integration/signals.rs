//! Signals and pauses: SIGTERM stops a run like Ctrl-C (nothing new starts, what finished is
//! saved, exit 130 with the resume hint), an endpoint's `Retry-After` is held to the model's
//! `retry.max_retry_after` and shown on the progress line, and a snippet raising
//! `lfeval.RateLimited` pauses its model like an HTTP 429.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::isolation::{records, snippet_run};
use super::server::{Response, TestServer};
use super::test::Test;

/// The real binary in the clean environment `Test::run` uses, for tests that signal it.
fn spawn(test: &Test, args: &[&str]) -> std::process::Child {
    let home = test.path().join(".test-home");
    std::fs::create_dir_all(&home).expect("home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lfeval"));
    cmd.args(args)
        .current_dir(test.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("NO_COLOR", "1")
        .env("LFEVAL_SECRETS_FILE", test.secrets_file())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Ok(venv) = std::env::var("VIRTUAL_ENV") {
        cmd.env("VIRTUAL_ENV", venv);
    }
    cmd.spawn().expect("spawn lfeval")
}

fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

#[test]
fn sigterm_stops_a_run_like_ctrl_c_and_the_run_resumes() {
    let snippet = "import json, time\n\ndef run_inference(body, environment, sample):\n    time.sleep(0.2)\n    return json.dumps({\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": \"ok \" + sample[\"word\"]}}]})\n";
    let words: Vec<String> = (0..20).map(|i| format!("w{i:02}")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let test = snippet_run("max_concurrent_requests: 2", 5, snippet, &words);
    let samples = test.path().join("out/samples.jsonl");
    let child = spawn(&test, &["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines_in(&samples) < 2 {
        assert!(Instant::now() < deadline, "no sample was written within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(term.success());
    let output = child.wait_with_output().expect("wait for lfeval");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: every finished sample is saved in `out`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: resume with `lfeval run --resume out`"),
        "{stderr}"
    );
    assert!(
        !test.path().join("out/summary.json").exists(),
        "an interrupted run writes no summary"
    );
    let before = lines_in(&samples);
    assert!(before < words.len(), "stopped early: {before} samples");

    let resumed = test.args(["run", "--resume", "out", "--no-progress"]);
    resumed.success();
    let records = records(&resumed);
    assert_eq!(records.len(), words.len(), "every sample exactly once");
}

#[test]
fn retry_after_is_held_to_the_model_cap_and_shown_while_it_pauses() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let server = TestServer::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Response::json(429, &json!({"error": "slow down"})).with_header("Retry-After", "100000")
        } else {
            Response::json(
                200,
                &json!({"choices": [{"message": {"role": "assistant", "content": "ok alpha"}}]}),
            )
        }
    });
    let model = format!(
        "key: m\ndisplay_name: M\nretry:\n  max_attempts: 2\n  max_retry_after: 6\nconfig:\n  connection_type: custom_connection\n  url: \"{}\"\n  adapter:\n    key: \"latticeflow$openai_chat_completion\"\n",
        server.url()
    );
    let test = snippet_run("", 5, "", &["alpha"])
        .write("models/m.yaml", &model)
        .args(["run", "-f", "run.yaml", "-o", "out"]);
    let started = Instant::now();
    let out = test.success();
    let wall = started.elapsed();
    // The endpoint asked for 28 hours; the model allows 6 seconds.
    assert!(wall >= Duration::from_secs(6), "{wall:?}");
    assert!(wall < Duration::from_secs(30), "{wall:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Plain progress lines (stderr is not a terminal) say why nothing moves.
    assert!(
        out.stderr.contains("paused by Retry-After of `m` for "),
        "{}",
        out.stderr
    );
    let record = &records(&test)["alpha"];
    assert_eq!(record["attempts"], 2);
    assert_eq!(record["calls"][0]["attempts"][0]["error"], "the endpoint answered 429");
}

#[test]
fn a_snippet_raising_rate_limited_pauses_its_model_like_a_429() {
    let snippet = r#"import json, time
import lfeval

CALLS = []

def run_inference(body, environment):
    CALLS.append(time.monotonic())
    if len(CALLS) == 1:
        raise lfeval.RateLimited("quota exhausted", retry_after=1.5)
    waited = CALLS[1] - CALLS[0]
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": f"ok alpha after {waited:.1f}s"}}]})
"#;
    let test = snippet_run("", 5, snippet, &["alpha"]).write(
        "models/m.yaml",
        "key: m\ndisplay_name: M\nretry:\n  max_attempts: 2\n  initial_backoff: 0\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include \"../snippets/m.py\"\n  environment: {}\n  timeout: 5\n",
    );
    test.success();
    let record = &records(&test)["alpha"];
    assert_eq!(record["attempts"], 2);
    assert_eq!(
        record["calls"][0]["attempts"][0]["error"],
        "model `m`: run_inference was rate limited (`lfeval.RateLimited`: quota exhausted, retry after 1.5s) (snippets/m.py:9, in run_inference)"
    );
    let text = record["solver_output"]["text"].as_str().expect("answered");
    let waited: f64 = text
        .trim_start_matches("ok alpha after ")
        .trim_end_matches('s')
        .parse()
        .expect("seconds");
    // Without the pause the retry would come at once (`initial_backoff: 0`).
    assert!(waited >= 1.4, "retried after {waited}s");

    // Past its retries, the sample fails as a model error.
    std::fs::remove_dir_all(test.path().join("out")).expect("clear the first run");
    let test = test.write(
        "models/m.yaml",
        "key: m\ndisplay_name: M\nretry:\n  max_attempts: 1\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include \"../snippets/m.py\"\n  environment: {}\n  timeout: 5\n",
    );
    test.failure();
    let error = &records(&test)["alpha"]["errors"][0];
    assert_eq!(error["class"], "model_error");
}
