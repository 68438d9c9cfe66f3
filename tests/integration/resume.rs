//! Exact resume and reproducible numbers: a resume refuses a changed configuration (naming what
//! changed) and accepts it once restored, `--retry-failed` runs the failed samples again, metrics
//! do not depend on the order samples finish in, and failures are listed by cause at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};

use super::runs::{model, out_dir, read_json, samples};
use super::server::{Request, Response, TestServer, openai_chat};
use super::test::Test;

/// A project whose task lives in its own file, `tasks/echo.yaml`.
fn project(server: &TestServer, model_extra: &str, rows: usize, scorer: &str) -> Test {
    let rows: String = (0..rows)
        .map(|i| {
            format!(
                "{}\n",
                json!({"id": format!("s{i:02}"), "n": i, "question": format!("question {i}")})
            )
        })
        .collect();
    Test::new()
        .write(
            "run.yaml",
            &format!(
                r#"models:
{}datasets:
  - key: rows
    source: {{type: local, file_path: rows.jsonl}}
    id_column: id
evaluation:
  key: echo
  cache_policy: no-cache
  task_specifications:
    - {{key: echo, task_key: echo, model_key: target}}
"#,
                model("target", server, model_extra)
            ),
        )
        .write(
            "tasks/echo.yaml",
            &format!(
                r#"key: echo
display_name: Echo
definition:
  dataset: {{key: rows}}
  solver:
    type: single_turn_solver
    input_builder:
      type: chat_completion
      input_messages:
        - {{role: user, content: "{{{{ sample.question }}}}"}}
  scorers:
{scorer}"#
            ),
        )
        .write("rows.jsonl", &rows)
}

const EXACT: &str = r#"    - type: string_equals
      key: exact
      ground_truth: "echo: {{ sample.question }}"
      metrics:
        - {type: mean, field: is_correct}
"#;

#[test]
fn a_resume_is_refused_after_a_task_file_changed_and_accepted_once_it_is_restored() {
    let server = TestServer::start(openai_chat());
    let t = project(&server, "", 3, EXACT).args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    t.success();
    let task = std::fs::read_to_string(t.path().join("tasks/echo.yaml")).unwrap();

    let t = t
        .write(
            "tasks/echo.yaml",
            &task.replace("{{ sample.question }}\"}", "Q: {{ sample.question }}\"}"),
        )
        .args(["run", "--resume", "out", "--no-progress"]);
    let out = t.config_error();
    assert!(
        out.stderr.contains("file `tasks/echo.yaml` changed"),
        "the refusal names the file: {}",
        out.stderr
    );
    assert!(out.stderr.contains("--force-resume"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("run.yaml` changed"),
        "only what changed is named: {}",
        out.stderr
    );

    let t = t.write("tasks/echo.yaml", &task);
    let out = t.success();
    assert!(out.stderr.contains("3 sample(s) already done"), "{}", out.stderr);
    assert_eq!(server.count(), 3, "a resume of a finished run calls nothing");

    // Forced, the changed task is accepted.
    let t = t.write("tasks/echo.yaml", &task.replace("Echo", "Echo again")).args([
        "run",
        "--resume",
        "out",
        "--no-progress",
        "--force-resume",
    ]);
    t.success();
}

#[test]
fn a_forced_resume_after_rows_moved_finds_each_recorded_sample_by_its_id() {
    let server = TestServer::start(openai_chat());
    let t = project(&server, "", 3, EXACT).args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    t.success();
    assert_eq!(server.count(), 3);
    // Two new rows at the head: every recorded sample now sits two places further on.
    let rows = std::fs::read_to_string(t.path().join("rows.jsonl")).unwrap();
    let head: String = ["new-a", "new-b"]
        .iter()
        .map(|id| format!("{}\n", json!({"id": id, "n": 9, "question": format!("question {id}")})))
        .collect();
    let t = t.write("rows.jsonl", &format!("{head}{rows}")).args([
        "run",
        "--resume",
        "out",
        "--no-progress",
        "--force-resume",
    ]);
    let out = t.success();
    assert!(out.stderr.contains("3 sample(s) already done"), "{}", out.stderr);
    assert_eq!(server.count(), 5, "only the two new rows are called");
    let mut ids: Vec<String> = samples(&out_dir(&t, "out"))
        .iter()
        .map(|r| r["sample_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["new-a", "new-b", "s00", "s01", "s02"], "each sample once");
}

#[test]
fn a_resume_reuses_the_flags_the_run_started_with() {
    let server = TestServer::start(openai_chat());
    let t = project(&server, "", 2, EXACT).args([
        "run",
        "-f",
        "run.yaml",
        "-o",
        "out",
        "--no-progress",
        "--max-errors",
        "4",
    ]);
    t.success();
    let fingerprint = read_json(&out_dir(&t, "out").join("fingerprint.json"));
    assert_eq!(fingerprint["flags"]["max_errors"], 4);
    assert!(fingerprint["files"]["tasks/echo.yaml"].is_string(), "{fingerprint:#}");
    assert!(
        fingerprint["files"]["rows.jsonl"].is_string(),
        "dataset files are hashed: {fingerprint:#}"
    );
    // Without flags the recorded ones apply, so nothing changed.
    let t = t.args(["run", "--resume", "out", "--no-progress"]);
    t.success();
    // Other flags are a change.
    let t = t.args(["run", "--resume", "out", "--no-progress", "--max-errors", "1"]);
    let out = t.config_error();
    assert!(
        out.stderr
            .contains("flags changed from `--max-errors 4` to `--max-errors 1`"),
        "{}",
        out.stderr
    );
}

/// Fails the first `n` requests with a 400, then echoes.
fn failing_first(n: usize) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    let seen = Arc::new(AtomicUsize::new(0));
    let echo = openai_chat();
    move |req: &Request| {
        if seen.fetch_add(1, Ordering::SeqCst) < n {
            Response::json(400, &json!({"error": {"message": "not now"}}))
        } else {
            echo(req)
        }
    }
}

#[test]
fn retry_failed_runs_the_failed_samples_again_and_keeps_their_old_records() {
    let server = TestServer::start(failing_first(2));
    let t = project(
        &server,
        "max_concurrent_requests: 1\nretry: {max_attempts: 1}",
        4,
        EXACT,
    )
    .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    t.failure();
    let first = samples(&out_dir(&t, "out"));
    let failed: Vec<&Value> = first.iter().filter(|r| r["errors"] != json!([])).collect();
    assert_eq!(failed.len(), 2);

    // A plain resume has nothing to do: failed samples are finished samples.
    let t = t.args(["run", "--resume", "out", "--no-progress"]);
    t.failure();
    assert_eq!(server.count(), 4);

    let t = t.args(["run", "--resume", "out", "--no-progress", "--retry-failed"]);
    let out = t.success();
    assert!(out.stderr.contains("2 failed one(s) to run again"), "{}", out.stderr);
    assert_eq!(server.count(), 6, "only the two failed samples ran again");
    let records = samples(&out_dir(&t, "out"));
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| r["errors"] == json!([])), "{records:#?}");
    let retried = std::fs::read_to_string(out_dir(&t, "out").join("samples.retried.jsonl")).unwrap();
    assert_eq!(retried.lines().count(), 2, "the failed records are kept aside");
    let summary = read_json(&out_dir(&t, "out").join("summary.json"));
    assert_eq!(summary["totals"]["failed"], 0);
    assert_eq!(
        summary["specifications"][0]["metrics"][0]["values"]["is_correct_mean"],
        1.0
    );
    assert_eq!(summary["sessions"], 3);
}

/// Answers after a random delay, so samples finish in a different order each run.
fn jittered() -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    let echo = openai_chat();
    move |req: &Request| {
        let mut resp = echo(req);
        resp.delay = Some(Duration::from_millis(rand::rng().random_range(0..25)));
        resp
    }
}

/// Values whose floating-point sum depends on the order they are added in.
const ORDER_SENSITIVE: &str = r#"    - type: python
      key: weights
      compute_scores_snippet: |
        def compute_scores(sample, solver_output):
            n = sample["n"]
            return {"w": [1e16, 0.1, -1e16, 0.3, 0.7, 1.1, 2.9][n % 7] * (1 + n / 997)}
      metrics:
        - {type: mean, field: w}
        - {type: std_dev, field: w}
"#;

#[test]
fn metrics_are_bit_identical_whatever_order_samples_finish_in() {
    let server = TestServer::start(jittered());
    let mut t = project(&server, "max_concurrent_requests: 8", 42, ORDER_SENSITIVE);
    let mut metrics = Vec::new();
    let mut out_of_order = false;
    for run in ["a", "b", "c"] {
        t = t.args(["run", "-f", "run.yaml", "-o", run, "--no-progress"]);
        t.success();
        let order: Vec<u64> = samples(&out_dir(&t, run))
            .iter()
            .map(|r| r["sample_index"].as_u64().unwrap())
            .collect();
        out_of_order |= order.windows(2).any(|w| w[0] > w[1]);
        let summary = read_json(&out_dir(&t, run).join("summary.json"));
        metrics.push(serde_json::to_string(&summary["specifications"][0]["metrics"]).unwrap());
    }
    assert!(
        out_of_order,
        "the jittered server should have reordered at least one run"
    );
    assert_eq!(metrics[0], metrics[1]);
    assert_eq!(metrics[1], metrics[2]);
}

#[test]
fn failures_are_listed_by_cause_at_the_end_of_a_run() {
    let server = TestServer::start(openai_chat());
    let scorers = r#"    - type: python
      key: f
      compute_scores_snippet: !include ../snippets/typo_score.py
      metrics:
        - {type: mean, field: ok}
    - type: string_equals
      key: exact
      ground_truth: "echo: {{ sample.question }}"
      metrics:
        - {type: mean, field: is_corect}
"#;
    let t = project(&server, "", 12, scorers)
        .write(
            "snippets/typo_score.py",
            "def compute_scores(sample, solver_output):\n    if sample[\"n\"] % 4 != 0:\n        raise ValueError(f\"reference answer missing for {sample['id']}\")\n    return {\"ok\": 1}\n",
        )
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let snapshot = t.snapshot();
    assert!(snapshot.starts_with("exit_code: 1"), "{snapshot}");
    insta::assert_snapshot!(snapshot);
}
