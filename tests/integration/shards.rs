//! Sharded runs and `lfeval merge`: shard processes running side by side add up, through
//! `merge`, to exactly what one process writes; a merge refuses shards that do not add up and
//! names the samples that are missing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};

use serde_json::{Value, json};

use super::runs::{command, echo_project, read_json, samples};
use super::server::{TestServer, openai_chat};
use super::test::Test;

/// An exact-match scorer that a third of the samples miss, and a Python scorer that fails every
/// seventh sample and whose Python metric depends on the order it is given the scores in:
/// merged shards must hand it the samples in the same order as a single run.
const SCORERS: &str = r#"
- type: string_equals
  key: exact
  ground_truth: "echo: {{ sample.expected }}"
  metrics:
    - {type: mean, field: is_correct}
- type: python
  key: weight
  compute_scores_snippet: |
    def compute_scores(sample, solver_output):
        if sample["boom"]:
            raise ValueError("boom")
        return {"w": sample["x"] / 7.0, "len": len(solver_output["text"])}
  metrics:
    - {type: mean, field: w}
    - {type: std_dev, field: w}
    - {type: max, field: len}
    - type: python
      compute_metrics_snippet: |
        def compute_metrics(scores):
            total = 0.0
            for i, s in enumerate(scores):
                total = total * 0.5 + s.values["w"] * (i + 1)
            return {"ordered": total}
"#;

fn rows(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let question = format!("question {i}");
            let expected = if i % 3 == 0 { "something else".to_owned() } else { question.clone() };
            json!({"id": format!("r{i:03}"), "question": question, "expected": expected, "x": (i * 37 % 11) as f64 + 0.1, "boom": i % 7 == 0})
        })
        .collect()
}

/// A project of `n` rows of which the run selects 40 at random (seeded), so shards must split the
/// selection, not the file.
fn project(server: &TestServer, n: usize) -> Test {
    echo_project(
        server,
        "max_concurrent_requests: 4",
        &rows(n),
        "cache_policy: no-cache\nnum_samples: 40\nsubsampling: random",
        SCORERS,
    )
}

fn spawn(t: &Test, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd: Command = command(t, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn lfeval")
}

/// `summary.json` without what differs between any two runs (times, place, sessions).
fn comparable_summary(dir: &Path) -> Value {
    let mut summary = read_json(&dir.join("summary.json"));
    for key in ["run_dir", "started_at", "ended_at", "wall_time_s", "sessions"] {
        summary.as_object_mut().expect("object").remove(key);
    }
    // Time differs between runs; how many calls the means are over does not.
    for spec in summary["specifications"].as_array_mut().expect("specifications") {
        let samples = spec["samples"].as_u64();
        let timings = spec["timings"].as_object_mut().expect("timings");
        assert!(timings["mean"]["total_ms"].as_f64() > Some(0.0), "{timings:?}");
        // Calls over HTTP say when their first byte came.
        assert!(timings["mean"]["first_byte_ms"].as_f64() > Some(0.0), "{timings:?}");
        assert!(timings["calls"].as_u64() >= samples, "{timings:?}");
        timings.remove("mean");
    }
    summary
}

/// The task log's evidence and metrics (its execution times differ between runs).
fn task_log_evidence(dir: &Path) -> Value {
    let log = read_json(&dir.join("task_results/echo/task_result_log.json"));
    json!({"evidence": log["evidence"], "errors": log["errors"], "status": log["status"], "usage": log["execution"]["model_usage"]})
}

/// What a record says about its sample, without timings.
fn outcome(record: &Value) -> Value {
    json!({
        "id": record["sample_id"], "index": record["sample_index"], "scores": record["scores"],
        "errors": record["errors"], "output": record["solver_output"], "usage": record["usage"],
    })
}

/// Runs a `run` that finishes: exit 0, or 1 when it holds samples that fail by design.
#[track_caller]
fn ran(t: &Test) {
    let out = t.run();
    assert!(
        matches!(out.code, 0 | 1),
        "exit {}\n{}\n{}",
        out.code,
        out.stdout,
        out.stderr
    );
}

#[test]
fn three_shard_processes_and_a_merge_equal_one_run_exactly() {
    let server = TestServer::start(openai_chat());
    let t = project(&server, 60);
    // Started together; the third takes its index from the environment, as a Kubernetes
    // Indexed Job gives it.
    let children = vec![
        spawn(
            &t,
            &["run", "-f", "run.yaml", "--shard", "0/3", "-o", "s0", "--no-progress"],
            &[],
        ),
        spawn(
            &t,
            &["run", "-f", "run.yaml", "--shard", "1/3", "-o", "s1", "--no-progress"],
            &[],
        ),
        spawn(
            &t,
            &["run", "-f", "run.yaml", "--shards", "3", "-o", "s2", "--no-progress"],
            &[("JOB_COMPLETION_INDEX", "2")],
        ),
    ];
    for mut child in children {
        let status = child.wait().expect("wait for a shard");
        // Exit 1 when the shard holds one of the samples that fail by design.
        assert!(matches!(status.code(), Some(0 | 1)), "a shard ended with {status}");
    }
    let shard_ids: Vec<BTreeSet<String>> = ["s0", "s1", "s2"]
        .iter()
        .map(|d| {
            samples(&t.path().join(d))
                .iter()
                .map(|r| r["sample_id"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    for ids in &shard_ids {
        assert!(ids.len() >= 5, "an uneven split: {shard_ids:?}");
    }
    let requests_by_shards = server.count();

    let t = t.args(["merge", "s0", "s1", "s2", "--output", "merged"]);
    let out = t.failure();
    assert!(out.stdout.contains("merged 3 shard(s) into merged"), "{}", out.stdout);
    assert_eq!(server.count(), requests_by_shards, "a merge calls no model");
    let merged = t.path().join("merged");

    let t = t.args(["run", "-f", "run.yaml", "-o", "single", "--no-progress"]);
    t.failure();
    let single = t.path().join("single");

    // Every sample once: the shards are disjoint and add up to the single run's selection.
    let single_records = samples(&single);
    let merged_records = samples(&merged);
    let single_ids: BTreeSet<String> = single_records
        .iter()
        .map(|r| r["sample_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(single_ids.len(), 40);
    let union: BTreeSet<String> = shard_ids.iter().flatten().cloned().collect();
    assert_eq!(union, single_ids);
    assert_eq!(
        shard_ids.iter().map(BTreeSet::len).sum::<usize>(),
        40,
        "a sample ran in two shards"
    );
    assert_eq!(merged_records.len(), 40);

    // The merged records are in sample order and say what the single run's say.
    let indices: Vec<u64> = merged_records
        .iter()
        .map(|r| r["sample_index"].as_u64().unwrap())
        .collect();
    assert!(
        indices.windows(2).all(|w| w[0] < w[1]),
        "not in sample order: {indices:?}"
    );
    let mut single_sorted: Vec<Value> = single_records.iter().map(outcome).collect();
    single_sorted.sort_by_key(|o| o["index"].as_u64());
    assert_eq!(merged_records.iter().map(outcome).collect::<Vec<_>>(), single_sorted);

    // Metrics are bit-identical (compared as JSON, every digit), and so are the task logs.
    assert_eq!(comparable_summary(&merged), comparable_summary(&single));
    assert_eq!(task_log_evidence(&merged), task_log_evidence(&single));
    let spec = &comparable_summary(&merged)["specifications"][0];
    assert!(spec["failed"].as_u64() > Some(0), "no sample failed: {spec:#}");
    assert!(spec["metrics"].to_string().contains("\"ordered\""), "{spec:#}");
}

#[test]
fn a_merge_with_a_missing_or_unfinished_shard_names_the_missing_samples() {
    let server = TestServer::start(openai_chat());
    let mut t = project(&server, 60);
    for shard in ["0/3", "2/3"] {
        let dir = format!("s{}", &shard[..1]);
        t = t.args(["run", "-f", "run.yaml", "--shard", shard, "-o", &dir, "--no-progress"]);
        ran(&t);
    }
    let done: BTreeSet<String> = ["s0", "s2"]
        .iter()
        .flat_map(|d| samples(&t.path().join(d)))
        .map(|r| r["sample_id"].as_str().unwrap().to_owned())
        .collect();

    // Shard 1 was never run: its samples are missing, and nothing is written.
    let t = t.args(["merge", "s0", "s2", "-o", "merged", "--json"]);
    let out = t.failure();
    assert!(!t.path().join("merged").exists(), "a refused merge wrote `merged`");
    let report: Value = serde_json::from_str(&out.stdout).expect("--json");
    let groups = report["missing"].as_array().expect("missing");
    assert_eq!(groups.len(), 1, "{report:#}");
    assert_eq!(groups[0]["shard"], json!({"index": 1, "count": 3}));
    assert_eq!(groups[0]["dir"], Value::Null);
    assert_eq!(groups[0]["spec"], "echo");
    let missing: BTreeSet<String> = groups[0]["sample_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(missing.is_disjoint(&done));
    assert_eq!(missing.len() + done.len(), 40, "missing {missing:?}");
    // The text names the shard and every missing id (there are fewer than twenty).
    for id in &missing {
        assert!(
            out.stderr.contains(&format!("`{id}`")),
            "`{id}` not named:\n{}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("shard 1/3 (not given), `echo`"), "{}", out.stderr);

    // An unfinished shard (its last record lost) is named with its directory.
    let t = t.args(["run", "-f", "run.yaml", "--shard", "1/3", "-o", "s1", "--no-progress"]);
    ran(&t);
    let s1 = t.path().join("s1/samples.jsonl");
    let text = std::fs::read_to_string(&s1).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let cut: Value = serde_json::from_str(lines.pop().unwrap()).unwrap();
    std::fs::write(&s1, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let t = t.args(["merge", "s0", "s1", "s2", "-o", "merged"]);
    let out = t.failure();
    let id = cut["sample_id"].as_str().unwrap();
    assert!(out.stderr.contains(&format!("`{id}`")), "{}", out.stderr);
    let t = t.filter(&format!("`{id}`"), "`[ID]`");
    insta::assert_snapshot!(t.render(&out));

    // The same shard twice is refused.
    let t = t.args(["merge", "s0", "s0", "s2", "-o", "merged"]);
    let out = t.config_error();
    assert!(
        out.stderr.contains("shard 0/3 is given twice (`s0` and `s0`)"),
        "{}",
        out.stderr
    );
    assert!(!t.path().join("merged").exists());
}

#[test]
fn a_merge_refuses_runs_that_are_not_shards_of_one_run() {
    let server = TestServer::start(openai_chat());
    let t = project(&server, 12).args(["run", "-f", "run.yaml", "--shard", "0/2", "-o", "a0", "--no-progress"]);
    ran(&t);
    let t = t.args(["run", "-f", "run.yaml", "-o", "whole", "--no-progress"]);
    ran(&t);
    // The data changed between the two shards.
    let t = t.write("rows.jsonl", &super::runs::jsonl(&rows(13))).args([
        "run",
        "-f",
        "run.yaml",
        "--shard",
        "1/2",
        "-o",
        "a1",
        "--no-progress",
    ]);
    ran(&t);
    // A shard resumes as itself only.
    let t = t.args(["run", "--resume", "a0", "--shard", "1/2", "--no-progress"]);
    let out = t.config_error();
    assert!(
        out.stderr.contains("flags changed from `--shard 0/2` to `--shard 1/2`"),
        "{}",
        out.stderr
    );
    let t = t.args(["merge", "a0", "whole", "-o", "m"]);
    crate::lfeval_snapshot!("not_a_shard", t);
    let t = t.args(["merge", "a0", "a1", "-o", "m"]);
    crate::lfeval_snapshot!("different_runs", t);
    // A shard index past the count, from the scheduler.
    let t = t
        .args(["run", "-f", "run.yaml", "--shards", "2", "-o", "x"])
        .env("SLURM_ARRAY_TASK_ID", "2");
    crate::lfeval_snapshot!("bad_index", t);
}

#[test]
fn a_specification_that_reads_an_earlier_ones_results_merges_every_shards_records() {
    let server = TestServer::start(openai_chat());
    let yaml = super::runs::echo_yaml(&server, "", "cache_policy: no-cache", super::runs::EXACT_SCORER);
    // `again` asks the model about `echo`'s answers; each shard numbers the records it has.
    let again = r#"  - key: again
    display_name: "Again"
    definition:
      dataset: {source: task_result, key: echo}
      solver:
        type: single_turn_solver
        input_builder:
          type: chat_completion
          input_messages:
            - {role: user, content: "{{ sample.solver_output.text }}"}
      scorers:
        - type: string_equals
          key: twice
          ground_truth: "echo: echo: {{ sample.sample.question }}"
          metrics: [{type: mean, field: is_correct}]
evaluation:
"#;
    let yaml = yaml.replacen("evaluation:\n", again, 1).replace(
        "    - {key: echo, task_key: echo, model_key: target}\n",
        "    - {key: echo, task_key: echo, model_key: target}\n    - {key: again, task_key: again, model_key: target}\n",
    );
    let mut t = Test::new()
        .write("run.yaml", &yaml)
        .write("rows.jsonl", &super::runs::jsonl(&rows(12)));
    for (shard, dir) in [("0/2", "s0"), ("1/2", "s1")] {
        t = t.args(["run", "-f", "run.yaml", "--shard", shard, "-o", dir, "--no-progress"]);
        t.success();
    }
    let t = t.args(["merge", "s0", "s1", "--output", "merged"]);
    let out = t.success();
    assert!(out.stdout.contains("merged 2 shard(s) into merged"), "{}", out.stdout);
    let records = samples(&t.path().join("merged"));
    let again: BTreeSet<&str> = records
        .iter()
        .filter(|r| r["spec"] == "again")
        .map(|r| r["sample_id"].as_str().unwrap())
        .collect();
    assert_eq!(again.len(), 12, "every shard's records, each once: {again:?}");
    assert_eq!(records.len(), 24);
    let summary = read_json(&t.path().join("merged/summary.json"));
    let spec = &summary["specifications"][1];
    assert_eq!(
        (spec["key"].as_str(), spec["samples"].as_u64()),
        (Some("again"), Some(12)),
        "{spec:#}"
    );
    assert_eq!(spec["metrics"][0]["values"]["is_correct_mean"], 1.0, "{spec:#}");

    // Numbered as one run numbers them, not as each shard did.
    let t = t.args(["run", "-f", "run.yaml", "-o", "single", "--no-progress"]);
    t.success();
    let places = |dir: &str| -> Vec<Value> {
        samples(&t.path().join(dir))
            .iter()
            .filter(|r| r["spec"] == "again")
            .map(|r| json!([r["sample_index"], r["sample_id"]]))
            .collect()
    };
    let mut single = places("single");
    single.sort_by_key(|p| p[0].as_u64());
    assert_eq!(places("merged"), single);
}
