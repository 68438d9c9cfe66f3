//! How snippet problems reach the user: load-time errors (syntax, missing function, arity,
//! imports, module-level exceptions), call-time errors (exceptions with the snippet's own
//! frame and its printed output, wrong return types, `SystemExit`), `--verbose` tracebacks,
//! and `lfeval doctor`.

use serde_json::Value;

use super::test::Test;
use crate::lfeval_snapshot;

const MODEL: &str = r#"key: broken
display_name: Broken
task: chat_completion
config:
  connection_type: custom_inference
  run_inference_snippet: !include "../snippets/broken.py"
  timeout: 5
"#;

/// A project whose only model runs `source` as its snippet.
fn snippet(source: &str) -> Test {
    Test::new()
        .write("models/broken.yaml", MODEL)
        .write("snippets/broken.py", source)
}

fn model_test(source: &str) -> Test {
    snippet(source).args(["model", "test", "broken"])
}

#[test]
fn syntax_error() {
    lfeval_snapshot!(model_test(
        "import json\n\n\ndef run_inference(body, environment)\n    return body\n"
    ));
}

#[test]
fn missing_function() {
    lfeval_snapshot!(model_test("def run(body, environment):\n    return body\n"));
}

#[test]
fn name_bound_to_something_else() {
    lfeval_snapshot!(model_test("run_inference = \"not a function\"\n"));
}

#[test]
fn bad_arity() {
    lfeval_snapshot!(model_test("def run_inference(body):\n    return body\n"));
}

#[test]
fn too_many_required_parameters() {
    lfeval_snapshot!(model_test(
        "def run_inference(body, environment, sample, extra):\n    return body\n"
    ));
}

#[test]
fn import_error() {
    lfeval_snapshot!(model_test(
        "print(\"loading the client\")\nimport lfeval_no_such_package\n\n\ndef run_inference(body, environment):\n    return body\n"
    ));
}

#[test]
fn module_level_exception() {
    lfeval_snapshot!(model_test(
        "import os\n\nTOKEN = os.environ[\"LFEVAL_TEST_UNSET_TOKEN\"]\n\n\ndef run_inference(body, environment):\n    return body\n"
    ));
}

#[test]
fn non_str_return() {
    lfeval_snapshot!(model_test(
        "def run_inference(body, environment):\n    return {\"choices\": []}\n"
    ));
}

#[test]
fn async_function_declared_with_def() {
    // A coroutine returned by a plain `def` gets a hint towards `async def`.
    let out = model_test("import asyncio\n\n\nasync def work():\n    return \"x\"\n\n\ndef run_inference(body, environment):\n    return work()\n").run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("must return `str`, got `coroutine`; hint: declare the function with `async def`"),
        "{}",
        out.stderr
    );
}

/// Raises two frames deep after printing; line 9 is the `raise`.
const RAISES: &str = r#"import json


def parse_reply(raw):
    print("upstream said:", raw)
    data = json.loads(raw)
    if "answer" not in data:
        print("no answer field")
        raise ValueError(f"unexpected reply: {data}")
    return data["answer"]


def run_inference(body, environment):
    print("calling upstream")
    return parse_reply('{"status": "busy"}')
"#;

#[test]
fn exception_shows_the_snippet_frame_and_printed_output() {
    let test = model_test(RAISES);
    let out = test.run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("(snippets/broken.py:9, in parse_reply)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains(
            "snippet output:\n  calling upstream\n  upstream said: {\"status\": \"busy\"}\n  no answer field\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains("Traceback"),
        "the traceback is for --verbose:\n{}",
        out.stderr
    );
    lfeval_snapshot!(test);
}

#[test]
fn verbose_shows_the_traceback() {
    let test = snippet(RAISES).args(["model", "test", "broken", "--verbose"]);
    let out = test.run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("Traceback (most recent call last):"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("lfeval-support"),
        "lfeval's own frames are left out:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("line 15, in run_inference"), "{}", out.stderr);
    assert!(out.stderr.contains("line 9, in parse_reply"), "{}", out.stderr);
    assert!(
        out.stderr.contains("ValueError: unexpected reply: {'status': 'busy'}"),
        "{}",
        out.stderr
    );
    lfeval_snapshot!(test);
}

#[test]
fn json_failure_carries_traceback_and_output() {
    let out = snippet(RAISES).args(["model", "test", "broken", "--json"]).run();
    assert_eq!(out.code, 1);
    let doc: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["failed_step"], "run_inference");
    assert_eq!(
        doc["error"],
        "model `broken`: run_inference raised `ValueError: unexpected reply: {'status': 'busy'}` (snippets/broken.py:9, in parse_reply)"
    );
    assert_eq!(
        doc["run_inference"]["captured_output"],
        "calling upstream\nupstream said: {\"status\": \"busy\"}\nno answer field\n"
    );
    let detail = doc["error_detail"].as_str().expect("detail");
    assert!(
        detail.contains("Traceback (most recent call last):") && detail.contains("captured output:\ncalling upstream"),
        "{detail}"
    );
}

#[test]
fn inline_snippet_errors_point_into_the_yaml_file() {
    let model = r#"key: inline
display_name: Inline
task: chat_completion
config:
  connection_type: custom_inference
  run_inference_snippet: |
    def run_inference(body, environment):
        raise RuntimeError("inline failure")
  timeout: 5
"#;
    let out = Test::new()
        .write("models/inline.yaml", model)
        .args(["model", "test", "inline"])
        .run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("raised `RuntimeError: inline failure` (models/inline.yaml:8, in run_inference)"),
        "{}",
        out.stderr
    );
}

#[test]
fn system_exit_fails_only_the_call() {
    let test = model_test(
        "import sys\n\n\ndef run_inference(body, environment):\n    print(\"giving up\")\n    sys.exit(3)\n",
    );
    let out = test.run();
    // lfeval itself keeps running and reports the step: exit code 1, not the snippet's 3.
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("step `run inference` failed"), "{}", out.stderr);
    lfeval_snapshot!(test);
}

const TASK: &str = r#"key: echo-task
display_name: Echo task
definition:
  type: benchmark_task
  dataset:
    key: words
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
        - type: mean
          field: is_correct
"#;

const DATASET: &str = r#"key: words
display_name: Words
source:
  type: local
  file_path: words.jsonl
id_column: id
"#;

const RUN: &str = r#"evaluation:
  key: errors
  display_name: Errors
  cache_policy: no-cache
  task_specifications:
    - key: echo
      task_key: echo-task
      model_key: broken
      dataset_key: words
"#;

#[test]
fn system_exit_in_a_run_fails_only_that_sample() {
    let source = r#"import json
import sys


def run_inference(body, environment):
    word = json.loads(body)["messages"][-1]["content"]
    if word == "exit":
        sys.exit("bye")
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok " + word}}]})
"#;
    let test = snippet(source)
        .write("tasks/echo.yaml", TASK)
        .write("datasets/words.yaml", DATASET)
        .write("datasets/words.jsonl", "{\"id\": \"a\", \"word\": \"alpha\"}\n{\"id\": \"b\", \"word\": \"exit\"}\n{\"id\": \"c\", \"word\": \"gamma\"}\n")
        .write("run.yaml", RUN)
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let out = test.run();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let samples = std::fs::read_to_string(test.path().join("out/samples.jsonl")).expect("samples.jsonl");
    let mut records: Vec<Value> = samples.lines().map(super::test::record_of_line).collect();
    records.sort_by_key(|r| r["sample_id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(records.len(), 3);
    for (record, text) in [(&records[0], "ok alpha"), (&records[2], "ok gamma")] {
        assert_eq!(record["errors"], Value::Array(Vec::new()), "{record}");
        assert_eq!(record["solver_output"]["text"], text);
    }
    let message = records[1]["errors"][0]["message"].as_str().expect("an error");
    assert!(
        message.contains("raised `SystemExit: bye` (snippets/broken.py:8, in run_inference)"),
        "{message}"
    );
    assert!(out.stdout.contains("3 sample(s), 1 failed"), "{}", out.stdout);
}

#[test]
fn doctor_lists_sys_path_and_httpx() {
    let Ok(venv) = std::env::var("VIRTUAL_ENV") else {
        panic!("run the integration tests with VIRTUAL_ENV set to a virtualenv that has httpx");
    };
    let out = Test::new().args(["doctor"]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let httpx = lines.iter().find(|l| l.starts_with("httpx ")).expect("an httpx line");
    let version = httpx.trim_start_matches("httpx").trim();
    assert!(
        version.split('.').count() >= 2 && version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "{httpx}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("python ") && l.contains("3.")),
        "{}",
        out.stdout
    );
    let start = lines.iter().position(|l| *l == "sys.path").expect("a sys.path section");
    let paths: Vec<&str> = lines[start + 1..].iter().map(|l| l.trim()).collect();
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with(venv.as_str()) && p.ends_with("site-packages")),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p.ends_with("lib-dynload")), "{paths:?}");
    assert_eq!(out.stderr, "", "no warning when httpx imports");
}

#[test]
fn a_missing_virtualenv_is_a_clear_error() {
    let test = Test::new()
        .env("VIRTUAL_ENV", "/nonexistent/lfeval-venv")
        .args(["doctor"]);
    lfeval_snapshot!(test);
}
