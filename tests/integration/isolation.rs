//! Hostile snippets: `isolation: process` (a crash, `os._exit` or a GIL-holding C call costs one
//! call of that model, a timeout kills the worker and a fresh one takes over, each worker is a
//! process of its own) and the in-process guards (`os._exit` fails the call, `os.fork` is
//! refused, stray threads and subprocesses never write into lfeval's stdout, stuck calls are
//! bounded).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::test::{Test, record_of_line};

/// A run over `words` (one sample each, id = word) through model `m`, whose snippet is
/// `snippets/m.py`; `model_extra` adds model-level keys.
pub(crate) fn snippet_run(model_extra: &str, timeout: u32, snippet: &str, words: &[&str]) -> Test {
    let model = format!(
        "key: m\ndisplay_name: M\ntask: chat_completion\nretry:\n  max_attempts: 1\n{model_extra}\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include \"../snippets/m.py\"\n  environment: {{}}\n  timeout: {timeout}\n"
    );
    let rows: String = words
        .iter()
        .map(|w| format!("{{\"id\": \"{w}\", \"word\": \"{w}\"}}\n"))
        .collect();
    Test::new()
        .write("models/m.yaml", &model)
        .write("snippets/m.py", snippet)
        .write(
            "tasks/t.yaml",
            r#"key: t
display_name: T
definition:
  type: benchmark_task
  dataset: {key: words}
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
      ground_truth: "ok {{ sample.word }}"
      metrics:
        - {type: mean, field: is_correct}
"#,
        )
        .write(
            "datasets/words.yaml",
            "key: words\ndisplay_name: Words\nsource:\n  type: local\n  file_path: words.jsonl\nid_column: id\n",
        )
        .write("datasets/words.jsonl", &rows)
        .write(
            "run.yaml",
            "evaluation:\n  key: hostile\n  display_name: Hostile\n  cache_policy: no-cache\n  task_specifications:\n    - {key: s, task_key: t, model_key: m, dataset_key: words}\n",
        )
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"])
}

/// Every record of `out/samples.jsonl`, by sample id.
pub(crate) fn records(test: &Test) -> std::collections::BTreeMap<String, Value> {
    let text = std::fs::read_to_string(test.path().join("out/samples.jsonl")).expect("samples.jsonl");
    text.lines()
        .map(record_of_line)
        .map(|r| (r["sample_id"].as_str().unwrap_or_default().to_owned(), r))
        .collect()
}

/// `(class, message)` of a record's first error.
pub(crate) fn first_error(record: &Value) -> (String, String) {
    let error = &record["errors"][0];
    (
        error["class"].as_str().unwrap_or_default().to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

const REPLY: &str = r#"
def reply(text):
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]})
"#;

#[test]
fn a_crash_os_exit_and_a_gil_holding_regex_cost_one_call_each_in_worker_processes() {
    let snippet = format!(
        r#"import ctypes, json, os, re
{REPLY}
def run_inference(body, environment, sample):
    word = sample["word"]
    if word == "segfault":
        ctypes.string_at(0)
    if word == "exit":
        os._exit(3)
    if word == "regex":
        re.match(r"(a+)+$", "a" * 40 + "b")
    return reply(f"ok {{word}} from {{os.getpid()}}")
"#
    );
    let words = ["segfault", "alpha", "exit", "beta", "regex", "gamma"];
    let test = snippet_run("isolation: process\nmax_concurrent_requests: 2", 2, &snippet, &words);
    let started = Instant::now();
    let out = test.failure();
    let wall = started.elapsed();
    assert!(
        out.stdout.contains("6 sample(s), 3 failed"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let records = records(&test);
    assert_eq!(records.len(), 6);

    let (class, message) = first_error(&records["segfault"]);
    assert_eq!(class, "worker_exited");
    assert_eq!(
        message,
        "model `m`: run_inference ended its worker process during the call (killed by SIGSEGV); the worker is replaced"
    );
    let (class, message) = first_error(&records["exit"]);
    assert_eq!(class, "snippet_error");
    assert!(
        message.contains("called `os._exit(3)` (snippets/m.py:11, in run_inference)"),
        "{message}"
    );
    let (class, message) = first_error(&records["regex"]);
    assert_eq!(class, "timeout");
    assert_eq!(
        message,
        "model `m`: run_inference timed out after 2s; its worker process was killed"
    );

    // The healthy samples were answered by worker processes, not by lfeval itself.
    let mut pids = BTreeSet::new();
    for word in ["alpha", "beta", "gamma"] {
        let record = &records[word];
        assert_eq!(record["errors"], Value::Array(Vec::new()), "{record}");
        let text = record["solver_output"]["text"].as_str().expect("text");
        let pid = text.rsplit(' ').next().unwrap_or_default().to_owned();
        assert!(text.starts_with(&format!("ok {word} from ")), "{text}");
        pids.insert(pid);
    }
    assert!(!pids.is_empty());
    // The regex holds its worker's GIL for ever: only killing it ended the call.
    eprintln!("run with a segfault, os._exit and a catastrophic regex: {wall:?}");
    assert!(wall < Duration::from_secs(20), "{wall:?}");

    // Everything was recorded once; a resume has nothing left to do and finishes.
    let resumed = test.args(["run", "--resume", "out", "--no-progress"]);
    let again = resumed.failure();
    assert!(again.stderr.contains("6 sample(s) already done"), "{}", again.stderr);
    assert_eq!(self::records(&resumed).len(), 6);
}

#[test]
fn a_timeout_kills_the_worker_and_a_fresh_one_answers_the_next_call() {
    let snippet = format!(
        r#"import json, os, time
{REPLY}
def run_inference(body, environment, sample):
    if sample["word"] == "hang":
        print("hanging in", os.getpid(), flush=True)
        time.sleep(60)
    return reply(f"ok {{sample['word']}} from {{os.getpid()}}")
"#
    );
    // Two samples are in flight for one permit, so `next` may take it first (then no call
    // follows the timeout); records are appended as samples finish, which tells the order.
    let (test, out) = (0..5)
        .map(|_| {
            let test = snippet_run(
                "isolation: process\nmax_concurrent_requests: 1",
                1,
                &snippet,
                &["hang", "next"],
            );
            let out = test.failure();
            (test, out)
        })
        .find(|(test, _)| {
            let text = std::fs::read_to_string(test.path().join("out/samples.jsonl")).unwrap_or_default();
            text.find("\"sample_id\":\"hang\"") < text.find("\"sample_id\":\"next\"")
        })
        .expect("in five runs, `hang` took the permit first at least once");
    assert!(out.stdout.contains("2 sample(s), 1 failed"), "{}", out.stdout);
    let records = records(&test);
    let (class, message) = first_error(&records["hang"]);
    assert_eq!(class, "timeout");
    // The worker stopped the call itself and said where it was, then it was killed.
    assert_eq!(
        message,
        "model `m`: run_inference timed out after 1s (snippets/m.py:9, in run_inference); its worker process was killed"
    );
    let detail = records["hang"]["errors"][0]["detail"].as_str().unwrap_or_default();
    let hung_pid = detail
        .split("hanging in ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("captured output names the worker: {detail}"));
    let text = records["next"]["solver_output"]["text"].as_str().expect("answered");
    let next_pid = text.rsplit(' ').next().unwrap_or_default();
    assert_ne!(hung_pid, next_pid, "a fresh worker answered");
    // No worker outlives lfeval.
    assert!(!std::path::Path::new(&format!("/proc/{hung_pid}")).exists());
    assert!(!std::path::Path::new(&format!("/proc/{next_pid}")).exists());
}

#[test]
fn output_and_tracebacks_read_the_same_in_a_worker_process() {
    let snippet = "import json\n\nprint(\"loading\")\n\n\ndef run_inference(body, environment):\n    print(\"about to fail\")\n    data = json.loads(body)\n    return data[\"missing\"]\n";
    let model = |isolation: &str| {
        format!(
            "key: m\ndisplay_name: M\n{isolation}\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include \"../snippets/m.py\"\n  environment: {{}}\n  timeout: 5\n"
        )
    };
    let run = |isolation: &str| {
        let test = Test::new()
            .write("models/m.yaml", &model(isolation))
            .write("snippets/m.py", snippet)
            .args(["model", "test", "m", "--verbose"]);
        let out = test.failure();
        test.filtered(&format!("{}\n{}", out.stdout, out.stderr))
    };
    let in_process = run("");
    let in_worker = run("isolation: process");
    assert!(
        in_process.contains("raised `KeyError: 'missing'` (snippets/m.py:9, in run_inference)"),
        "{in_process}"
    );
    assert!(in_process.contains("about to fail"), "{in_process}");
    assert!(in_process.contains("Traceback"), "{in_process}");
    assert_eq!(in_worker, in_process);
}

#[test]
fn os_exit_in_process_fails_its_sample_and_the_run_and_its_resume_finish() {
    let snippet = format!(
        r#"import json, os
{REPLY}
def run_inference(body, environment, sample):
    if sample["word"] == "exit":
        print("leaving")
        os._exit(1)
    return reply("ok " + sample["word"])
"#
    );
    let test = snippet_run("", 5, &snippet, &["alpha", "exit", "gamma"]);
    let out = test.failure();
    assert!(
        out.stdout.contains("3 sample(s), 1 failed"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let (class, message) = first_error(&records(&test)["exit"]);
    assert_eq!(class, "snippet_error");
    assert_eq!(
        message,
        "model `m`: run_inference called `os._exit(1)` (snippets/m.py:9, in run_inference); a snippet cannot end lfeval, so this call failed instead"
    );
    // Running the failed sample again meets the same `os._exit`, and still finishes.
    let retried = test.args(["run", "--resume", "out", "--retry-failed", "--no-progress"]);
    let again = retried.failure();
    assert!(
        again.stdout.contains("3 sample(s), 1 failed"),
        "{}\n{}",
        again.stdout,
        again.stderr
    );
}

#[test]
fn fork_without_exec_is_refused_and_subprocesses_still_work() {
    let snippet = format!(
        r#"import json, multiprocessing, os, subprocess
{REPLY}
def run_inference(body, environment, sample):
    word = sample["word"]
    if word == "fork":
        os.fork()
    if word == "pool":
        multiprocessing.get_context("fork").Process(target=print).start()
    done = subprocess.run(["echo", "ok " + word], capture_output=True, text=True, check=True)
    return reply(done.stdout.strip())
"#
    );
    let test = snippet_run("", 10, &snippet, &["fork", "pool", "spawn"]);
    let out = test.failure();
    assert!(
        out.stdout.contains("3 sample(s), 2 failed"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let records = records(&test);
    for word in ["fork", "pool"] {
        let (class, message) = first_error(&records[word]);
        assert_eq!(class, "snippet_error");
        assert!(
            message.contains("raised `lfeval.ForkRefused: os.fork() is refused in lfeval snippets"),
            "{message}"
        );
        assert!(message.contains("hint: start programs with `subprocess`"), "{message}");
    }
    assert_eq!(records["spawn"]["solver_output"]["text"], "ok spawn");
}

#[test]
fn stray_threads_and_subprocesses_never_write_into_json_stdout() {
    let snippet = format!(
        r#"import json, os, subprocess, sys, threading, time
{REPLY}
def chatter():
    for i in range(20):
        print("stray thread line", i)
        sys.stdout.flush()
        time.sleep(0.01)

def run_inference(body, environment, sample):
    threading.Thread(target=chatter, daemon=True).start()
    subprocess.run(["echo", "stray subprocess line"])
    os.write(1, b"stray fd write\n")
    return reply("ok " + (sample["word"] if sample else "test"))
"#
    );
    let test = snippet_run("", 5, &snippet, &["alpha", "beta"]).args([
        "run",
        "-f",
        "run.yaml",
        "-o",
        "out",
        "--no-progress",
        "--json",
    ]);
    let out = test.success();
    let summary: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", out.stdout));
    assert_eq!(summary["totals"]["samples"], 2);
    // What they wrote is not lost: it went to stderr.
    for line in ["stray subprocess line", "stray fd write", "stray thread line"] {
        assert!(
            out.stderr.contains(line),
            "`{line}` missing from stderr:\n{}",
            out.stderr
        );
    }

    let model_test = test.args(["model", "test", "m", "--json"]);
    let out = model_test.success();
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", out.stdout));
    assert_eq!(report["ok"], true);
}

#[test]
fn calls_stuck_in_c_are_bounded_and_then_fail_fast() {
    let snippet = format!(
        r#"import json, time
{REPLY}
def run_inference(body, environment, sample):
    time.sleep(30)
    return reply("never")
"#
    );
    let words: Vec<String> = (0..40).map(|i| format!("w{i:02}")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let test = snippet_run("max_concurrent_requests: 8", 1, &snippet, &words);
    let started = Instant::now();
    let out = test.failure();
    let wall = started.elapsed();
    assert!(
        out.stdout.contains("40 sample(s), 40 failed"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let records = records(&test);
    let (mut timed_out, mut refused) = (0, 0);
    for record in records.values() {
        match first_error(record) {
            (class, message) if class == "timeout" => {
                assert_eq!(
                    message,
                    "model `m`: run_inference timed out after 1s (snippets/m.py:7, in run_inference)"
                );
                timed_out += 1;
            }
            (class, message) => {
                assert_eq!(class, "snippet_error", "{message}");
                assert!(
                    message.contains("was not started: ")
                        && message.contains("earlier calls of this snippet are stuck in C code after timing out")
                        && message.contains("hint: set `isolation: process`"),
                    "{message}"
                );
                refused += 1;
            }
        }
    }
    // At most one batch in the pool and one queued behind it got stuck; the rest failed fast
    // instead of stranding a thread each.
    assert!(timed_out <= 16, "{timed_out} timed out");
    assert!(refused >= 24, "{refused} refused");
    eprintln!("40 calls stuck in C: {timed_out} timed out, {refused} refused, {wall:?}");
}
