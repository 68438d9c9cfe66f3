//! End-to-end tests of `lfeval run`: real evaluations against HTTP servers on 127.0.0.1, checked
//! against values computed here from the dataset rows and the servers' documented behaviour
//! (metrics, judge verdicts, multi-turn conversations, token usage), plus resuming a killed run,
//! the response cache, early stops, exit codes, dataset selection and filters, the result files
//! and secret masking.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::server::{Request, Response, TestServer, delayed, judge, judge_verdict, openai_chat, scripted, words};
use super::test::Test;

/// The default system prompt of judge scorers (aigo.md §8.6).
const JUDGE_SYSTEM: &str = "You are a helpful assistant and will be used to judge the output of another model. \
     Answer with only a JSON object of this form: {\"prediction\": \"<label>\", \"reasoning\": \"<one or two sentences>\", \"confidence\": <number between 0 and 1>}";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A `custom_connection` model speaking OpenAI chat completions to `server`.
pub(crate) fn model(key: &str, server: &TestServer, extra: &str) -> String {
    let mut yaml = format!(
        r#"  - key: {key}
    display_name: "{key}"
    config:
      connection_type: custom_connection
      url: "{url}"
      adapter:
        key: "latticeflow$openai_chat_completion"
"#,
        url = server.url_for("/v1/chat/completions")
    );
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        yaml.push_str("    ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

pub(crate) fn jsonl(rows: &[Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

pub(crate) fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("`{}` is not JSON: {e}\n{text}", path.display()))
}

/// Every record of `samples.jsonl`, in file order.
pub(crate) fn samples(run: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(run.join("samples.jsonl")).expect("samples.jsonl");
    text.lines().map(super::test::record_of_line).collect()
}

/// Records keyed by sample id; panics on a duplicate id.
pub(crate) fn by_id(records: &[Value]) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for r in records {
        let id = r["sample_id"].as_str().expect("sample_id").to_owned();
        assert!(
            map.insert(id.clone(), r.clone()).is_none(),
            "sample `{id}` recorded twice"
        );
    }
    map
}

pub(crate) fn ids(records: &[Value]) -> BTreeSet<String> {
    by_id(records).into_keys().collect()
}

/// The metric values a scorer's metric of `metric_type` produced, from `summary.json`.
pub(crate) fn metric<'a>(spec: &'a Value, scorer: &str, metric_type: &str) -> &'a Value {
    spec["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .find(|m| m["scorer_name"] == scorer && m["metric_type"] == metric_type)
        .map(|m| &m["values"])
        .unwrap_or_else(|| panic!("no `{metric_type}` metric of `{scorer}` in {spec:#}"))
}

pub(crate) fn assert_close(actual: &Value, expected: f64, what: &str) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {actual}"));
    assert!(
        (actual - expected).abs() < 1e-9,
        "{what}: lfeval says {actual}, expected {expected}"
    );
}

/// The `role`/`content` pairs of a message list (dropping extra fields such as `refusal`).
pub(crate) fn turns(messages: &Value) -> Vec<(String, String)> {
    messages
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().expect("role").to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

pub(crate) fn turn(role: &str, content: &str) -> (String, String) {
    (role.to_owned(), content.to_owned())
}

/// An OpenAI chat completion answering `text`, with word-count usage like the canned handlers.
pub(crate) fn completion(req: &Request, text: &str) -> Response {
    let prompt: usize = req
        .json()
        .and_then(|b| b["messages"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|m| words(m["content"].as_str().unwrap_or_default()))
        .sum();
    Response::json(
        200,
        &json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": words(text), "total_tokens": prompt + words(text)}
        }),
    )
}

/// The messages of a request the server received.
pub(crate) fn request_turns(r: &Request) -> Vec<(String, String)> {
    turns(&r.json().expect("json request")["messages"])
}

/// A `Command` for the real binary with the same clean environment `Test::run` uses, for tests
/// that must control the process themselves (killing it mid-run).
pub(crate) fn command(t: &Test, args: &[&str]) -> Command {
    let home = t.path().join(".test-home");
    std::fs::create_dir_all(&home).expect("home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lfeval"));
    cmd.args(args)
        .current_dir(t.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("NO_COLOR", "1")
        .env("LANG", "C.UTF-8")
        .env("LFEVAL_SECRETS_FILE", t.secrets_file())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Ok(venv) = std::env::var("VIRTUAL_ENV") {
        cmd.env("VIRTUAL_ENV", venv);
    }
    cmd
}

/// Number of complete lines in a file (0 when it does not exist yet).
fn complete_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// Every regular file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

pub(crate) fn out_dir(t: &Test, name: &str) -> PathBuf {
    t.path().join(name)
}

// ---------------------------------------------------------------------------------------------
// Metrics computed independently
// ---------------------------------------------------------------------------------------------

const STATS_SCORER: &str = r#"
def compute_scores(sample, solver_output):
    n = len(solver_output["text"].split())
    return {"scores": {"words": n, "gt": sample["label"], "pred": "yes" if n % 2 == 0 else "no"}, "metadata": {"n": n}}
"#;

const TOTAL_WORDS_METRIC: &str = r#"
def compute_metrics(scores):
    return {"total_words": sum(s.values["words"] for s in scores), "count": len(scores)}
"#;

pub(crate) fn indent(text: &str, by: usize) -> String {
    text.trim_matches('\n')
        .lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

/// Twelve rows whose questions have 1 to 4 words, a third of which the echo server answers
/// exactly as `expected`.
fn metric_rows() -> Vec<Value> {
    (0..12)
        .map(|i| {
            let question = format!("q{i} {}", "w ".repeat(i % 4)).trim_end().to_owned();
            let expected = if i % 3 == 0 { format!("echo: {question}") } else { "something else".to_owned() };
            json!({"id": format!("r{i:02}"), "question": question, "expected": expected, "label": if i % 3 == 0 { "yes" } else { "no" }})
        })
        .collect()
}

#[test]
fn metrics_match_values_computed_from_the_rows_and_the_server() {
    let server = TestServer::start(openai_chat());
    let rows = metric_rows();
    let run_yaml = format!(
        r#"models:
{model}
datasets:
  - key: questions
    source: {{type: local, file_path: questions.jsonl}}
    id_column: id
tasks:
  - key: echo-qa
    display_name: "Echo QA"
    definition:
      dataset: {{key: questions}}
      solver:
        type: single_turn_solver
        input_builder:
          type: chat_completion
          input_messages:
            - role: system
              content: "Reply briefly."
            - role: user
              content: "{{{{ sample.question }}}}"
      scorers:
        - type: string_equals
          key: exact
          ground_truth: "{{{{ sample.expected }}}}"
          metrics:
            - type: mean
              field: is_correct
        - type: python
          key: stats
          compute_scores_snippet: |
{stats}          metrics:
            - {{type: mean, field: words}}
            - {{type: max, field: words}}
            - {{type: min, field: words}}
            - {{type: std_dev, field: words}}
            - {{type: frequency, field: pred}}
            - {{type: binary-classification, field_gt: gt, field_pred: pred, positive_answer: "yes", negative_answer: "no"}}
            - type: python
              compute_metrics_snippet: |
{metric}evaluation:
  key: metrics
  cache_policy: no-cache
  task_specifications:
    - key: echo
      task_key: echo-qa
      model_key: target
"#,
        model = model("target", &server, ""),
        stats = indent(STATS_SCORER, 12),
        metric = indent(TOTAL_WORDS_METRIC, 16),
    );
    let t = Test::new()
        .write("run.yaml", &run_yaml)
        .write("questions.jsonl", &jsonl(&rows))
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let snapshot = t.snapshot();
    let out = out_dir(&t, "out");

    // What the echo server answers and what follows from it, computed from the rows alone.
    let replies: Vec<String> = rows
        .iter()
        .map(|r| format!("echo: {}", r["question"].as_str().unwrap()))
        .collect();
    let n = rows.len() as f64;
    let exact: Vec<f64> = rows
        .iter()
        .zip(&replies)
        .map(|(r, reply)| f64::from(u8::from(r["expected"] == reply.as_str())))
        .collect();
    let word_counts: Vec<f64> = replies.iter().map(|r| words(r) as f64).collect();
    let mean = word_counts.iter().sum::<f64>() / n;
    let std_dev = (word_counts.iter().map(|w| (w - mean).powi(2)).sum::<f64>() / n).sqrt();
    let preds: Vec<&str> = word_counts
        .iter()
        .map(|&w| if (w as u64).is_multiple_of(2) { "yes" } else { "no" })
        .collect();
    let gts: Vec<&str> = rows.iter().map(|r| r["label"].as_str().unwrap()).collect();
    let count = |gt: &str, pred: &str| gts.iter().zip(&preds).filter(|(g, p)| **g == gt && **p == pred).count() as f64;
    let (tp, fp, tn, fneg) = (
        count("yes", "yes"),
        count("no", "yes"),
        count("no", "no"),
        count("yes", "no"),
    );
    let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
    let recall = if tp + fneg > 0.0 { tp / (tp + fneg) } else { 0.0 };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    let prompt_tokens: usize = rows
        .iter()
        .map(|r| words("Reply briefly.") + words(r["question"].as_str().unwrap()))
        .sum();
    let completion_tokens: usize = replies.iter().map(|r| words(r)).sum();

    // Guard against a degenerate dataset that would make the checks below vacuous.
    assert!(exact.contains(&1.0) && exact.contains(&0.0));
    assert!(
        tp > 0.0 && fp > 0.0 && tn > 0.0 && fneg > 0.0,
        "every confusion cell should be populated"
    );

    let summary = read_json(&out.join("summary.json"));
    let spec = &summary["specifications"][0];
    assert_eq!(spec["samples"], 12);
    assert_eq!(spec["failed"], 0);
    assert_close(
        &metric(spec, "exact", "mean")["is_correct_mean"],
        exact.iter().sum::<f64>() / n,
        "exact.is_correct_mean",
    );
    assert_close(&metric(spec, "stats", "mean")["words_mean"], mean, "words_mean");
    assert_close(
        &metric(spec, "stats", "max")["words_max"],
        word_counts.iter().copied().fold(f64::MIN, f64::max),
        "words_max",
    );
    assert_close(
        &metric(spec, "stats", "min")["words_min"],
        word_counts.iter().copied().fold(f64::MAX, f64::min),
        "words_min",
    );
    assert_close(
        &metric(spec, "stats", "std_dev")["words_std_dev"],
        std_dev,
        "words_std_dev",
    );
    let frequency = &metric(spec, "stats", "frequency")["pred_frequency"];
    assert_eq!(frequency["yes"], json!(preds.iter().filter(|p| **p == "yes").count()));
    assert_eq!(frequency["no"], json!(preds.iter().filter(|p| **p == "no").count()));
    let binary = metric(spec, "stats", "binary-classification");
    assert_close(&binary["accuracy"], (tp + tn) / n, "accuracy");
    assert_close(&binary["precision"], precision, "precision");
    assert_close(&binary["recall"], recall, "recall");
    assert_close(&binary["f1_score"], f1, "f1_score");
    assert_eq!(
        binary["confusion_matrix"],
        json!({"tp": tp as u64, "fp": fp as u64, "tn": tn as u64, "fn": fneg as u64})
    );
    let python = metric(spec, "stats", "python");
    assert_close(&python["total_words"], word_counts.iter().sum(), "python total_words");
    assert_close(&python["count"], n, "python count");
    assert_eq!(
        summary["totals"]["usage"],
        json!({"num_prompt_tokens": prompt_tokens, "num_completion_tokens": completion_tokens})
    );

    // Per sample: the request the server got and the scores recorded for it.
    assert_eq!(server.count(), 12);
    let records = by_id(&samples(&out));
    for (i, row) in rows.iter().enumerate() {
        let record = &records[row["id"].as_str().unwrap()];
        assert_eq!(record["solver_output"]["text"], replies[i].as_str());
        assert_eq!(record["scores"]["exact"]["values"]["is_correct"], json!(exact[i]));
        assert_eq!(record["scores"]["stats"]["values"]["pred"], preds[i]);
        assert_eq!(record["scores"]["stats"]["metadata"]["n"], json!(word_counts[i] as u64));
        let sent = server
            .requests()
            .into_iter()
            .filter(|r| request_turns(&r.request).last() == Some(&turn("user", row["question"].as_str().unwrap())))
            .count();
        assert_eq!(sent, 1, "one request for `{}`", row["id"]);
    }
    insta::assert_snapshot!(snapshot);
}

// ---------------------------------------------------------------------------------------------
// Judge scorer
// ---------------------------------------------------------------------------------------------

#[test]
fn judge_classifier_verdicts_follow_the_judge_server() {
    let target = TestServer::start(openai_chat());
    let judge_server = TestServer::start(judge());
    // (question, answer): the target echoes the question, so the judge compares
    // `echo: <answer>` with `echo: <question>`, ignoring case and surrounding spaces.
    let cases = [
        ("paris", "Paris"),
        ("rome", "Milan"),
        ("4", "4"),
        ("x  y", "x y"),
        ("Blue", "blue "),
    ];
    let rows: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, (q, a))| json!({"id": format!("j{i}"), "question": q, "answer": a}))
        .collect();
    let run_yaml = format!(
        r#"models:
{target}{judge}datasets:
  - key: qa
    source: {{type: local, file_path: qa.jsonl}}
    id_column: id
tasks:
  - key: judged
    display_name: "Judged"
    definition:
      dataset: {{key: qa}}
      solver:
        type: single_turn_solver
        input_builder:
          type: chat_completion
          input_messages:
            - role: user
              content: "{{{{ sample.question }}}}"
      scorers:
        - type: model_as_a_judge_classifier
          key: verdict
          model_key: judge
          use_structured_outputs: true
          user_prompt: |
            expected: echo: {{{{ sample.answer }}}}
            answer: {{{{ model_output }}}}
          correct_labels: [CORRECT]
          incorrect_labels: [INCORRECT]
          metrics:
            - {{type: mean, field: is_correct}}
evaluation:
  key: judged
  cache_policy: no-cache
  task_specifications:
    - {{key: judged, task_key: judged, model_key: target}}
"#,
        target = model("target", &target, ""),
        judge = model("judge", &judge_server, ""),
    );
    let t = Test::new()
        .write("run.yaml", &run_yaml)
        .write("qa.jsonl", &jsonl(&rows))
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let out = t.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    let records = by_id(&samples(&out_dir(&t, "out")));
    let judge_requests = judge_server.requests();
    assert_eq!(judge_requests.len(), cases.len(), "one judge call per sample");
    assert_eq!(target.count(), cases.len());
    let mut correct = 0.0;
    for (i, (question, answer)) in cases.iter().enumerate() {
        let prompt = format!("expected: echo: {answer}\nanswer: echo: {question}");
        let (expected_correct, reasoning) = judge_verdict(&prompt);
        correct += f64::from(u8::from(expected_correct));
        let record = &records[&format!("j{i}")];
        let verdict = &record["scores"]["verdict"];
        assert_eq!(
            verdict["values"]["is_correct"],
            json!(if expected_correct { 1.0 } else { 0.0 }),
            "sample j{i}: {verdict}"
        );
        assert_eq!(
            verdict["metadata"]["prediction"],
            if expected_correct { "CORRECT" } else { "INCORRECT" }
        );
        assert_eq!(verdict["metadata"]["reasoning"], reasoning.as_str());
        // The judge saw the default system prompt, the rendered user prompt and the schema.
        let request = judge_requests
            .iter()
            .map(|r| r.request.json().expect("json"))
            .find(|b| b["messages"][1]["content"].as_str().map(str::trim_end) == Some(prompt.as_str()))
            .unwrap_or_else(|| panic!("no judge request with prompt {prompt:?}"));
        assert_eq!(turns(&request["messages"])[0], turn("system", JUDGE_SYSTEM));
        assert_eq!(request["response_format"]["type"], "json_schema");
        assert_eq!(
            request["response_format"]["json_schema"]["schema"]["required"],
            json!(["prediction", "reasoning", "confidence"])
        );
        let purposes: Vec<&str> = record["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["purpose"].as_str().unwrap())
            .collect();
        assert_eq!(purposes, ["solver", "judge"]);
    }
    assert!(
        correct > 0.0 && correct < cases.len() as f64,
        "the cases should mix verdicts"
    );
    let summary = read_json(&out_dir(&t, "out").join("summary.json"));
    assert_close(
        &metric(&summary["specifications"][0], "verdict", "mean")["is_correct_mean"],
        correct / cases.len() as f64,
        "judge mean",
    );
}

// ---------------------------------------------------------------------------------------------
// Multi-turn solver
// ---------------------------------------------------------------------------------------------

/// A user simulator: answers `more <n>` where n counts the assistant turns it was shown, and
/// `BYE` from the second assistant turn on, unless the conversation mentions `endless`.
fn simulator() -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    |req: &Request| {
        let messages = request_turns(req);
        let assistants = messages.iter().filter(|(role, _)| role == "assistant").count();
        let endless = messages.iter().any(|(_, text)| text.contains("endless"));
        let text = if assistants >= 2 && !endless {
            "BYE".to_owned()
        } else {
            format!("more {assistants}")
        };
        completion(req, &text)
    }
}

#[test]
fn multi_turn_conversations_follow_builders_loops_and_terminate_rules() {
    let target = TestServer::start(openai_chat());
    let sim = TestServer::start(simulator());
    let rows = [
        json!({"id": "plain", "question": "hello there", "final": "echo: more 1"}),
        json!({"id": "done", "question": "[[done]] right away", "final": "echo: [[done]] right away"}),
        json!({"id": "endless", "question": "endless chat", "final": "-"}),
    ];
    let run_yaml = format!(
        r#"models:
{target}{sim}datasets:
  - key: chats
    source: {{type: local, file_path: chats.jsonl}}
    id_column: id
tasks:
  - key: chat
    display_name: "Chat"
    definition:
      dataset: {{key: chats}}
      solver:
        type: multi_turn_solver
        message_builders:
          - type: chat_message
            role: system
            content: "You are terse."
          - type: chat_message
            role: user
            content: "{{{{ sample.question }}}}"
          - type: loop
            max_iterations: 3
            message_builders:
              - type: generate
                terminate_if: {{includes: "[[done]]"}}
              - type: generate_message
                model_key: simulator
                extra_input_messages:
                  - role: user
                    content: "turn {{{{ loop_index }}}}"
                output_role: user
                terminate_if: {{includes: "BYE", keep_iteration: false}}
      scorers:
        - type: string_equals
          key: final
          ground_truth: "{{{{ sample.final }}}}"
          metrics:
            - {{type: mean, field: is_correct}}
evaluation:
  key: chat
  cache_policy: no-cache
  task_specifications:
    - {{key: chat, task_key: chat, model_key: target}}
"#,
        target = model("target", &target, ""),
        sim = model("simulator", &sim, ""),
    );
    let t = Test::new()
        .write("run.yaml", &run_yaml)
        .write("chats.jsonl", &jsonl(&rows))
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let out = t.run();
    // `endless` never meets a terminate rule, so its loop ends in an error: one failed sample.
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let records = by_id(&samples(&out_dir(&t, "out")));

    let system = turn("system", "You are terse.");
    let plain = &records["plain"];
    assert_eq!(
        turns(&plain["solver_output"]["messages"]),
        vec![
            system.clone(),
            turn("user", "hello there"),
            turn("assistant", "echo: hello there"),
            turn("user", "more 1"),
            turn("assistant", "echo: more 1"),
        ],
        "the simulator's `BYE` ends the loop and is dropped (keep_iteration: false)"
    );
    assert_eq!(plain["scores"]["final"]["values"]["is_correct"], 1.0);
    assert_eq!(plain["errors"], json!([]));

    let done = &records["done"];
    assert_eq!(
        turns(&done["solver_output"]["messages"]),
        vec![
            system.clone(),
            turn("user", "[[done]] right away"),
            turn("assistant", "echo: [[done]] right away")
        ],
        "`terminate_if` on `generate` keeps the matching reply and skips the simulator"
    );
    assert_eq!(done["scores"]["final"]["values"]["is_correct"], 1.0);

    let endless = &records["endless"];
    let errors = endless["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{endless:#}");
    assert_eq!(errors[0]["stage"], "solver");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("`max_iterations` (3)"),
        "{}",
        errors[0]
    );
    assert_eq!(endless["scores"], json!({}));

    // What each server was asked, conversation by conversation.
    let target_requests: Vec<Vec<(String, String)>> =
        target.requests().iter().map(|r| request_turns(&r.request)).collect();
    let sim_requests: Vec<Vec<(String, String)>> = sim.requests().iter().map(|r| request_turns(&r.request)).collect();
    let about = |requests: &[Vec<(String, String)>], question: &str| -> Vec<Vec<(String, String)>> {
        let mut found: Vec<_> = requests
            .iter()
            .filter(|m| m.get(1) == Some(&turn("user", question)))
            .cloned()
            .collect();
        found.sort_by_key(Vec::len);
        found
    };
    assert_eq!(
        about(&target_requests, "hello there"),
        vec![
            vec![system.clone(), turn("user", "hello there")],
            vec![
                system.clone(),
                turn("user", "hello there"),
                turn("assistant", "echo: hello there"),
                turn("user", "more 1")
            ],
        ]
    );
    assert_eq!(
        about(&sim_requests, "hello there"),
        vec![
            vec![
                system.clone(),
                turn("user", "hello there"),
                turn("assistant", "echo: hello there"),
                turn("user", "turn 0")
            ],
            vec![
                system.clone(),
                turn("user", "hello there"),
                turn("assistant", "echo: hello there"),
                turn("user", "more 1"),
                turn("assistant", "echo: more 1"),
                turn("user", "turn 1"),
            ],
        ],
        "the simulator sees the conversation plus the rendered extra message with `loop_index`"
    );
    assert_eq!(about(&target_requests, "[[done]] right away").len(), 1);
    assert_eq!(about(&sim_requests, "[[done]] right away").len(), 0);
    assert_eq!(
        about(&target_requests, "endless chat").len(),
        3,
        "one generate per iteration"
    );
    assert_eq!(about(&sim_requests, "endless chat").len(), 3);
    assert_eq!(target.count(), 6);
    assert_eq!(sim.count(), 5);

    let summary = read_json(&out_dir(&t, "out").join("summary.json"));
    let spec = &summary["specifications"][0];
    assert_eq!(spec["failed"], 1);
    assert_eq!(spec["errors_by_stage"], json!({"solver": 1}));
    assert_close(
        &metric(spec, "final", "mean")["is_correct_mean"],
        1.0,
        "mean over the two scored samples",
    );
}

// ---------------------------------------------------------------------------------------------
// Resume after a kill
// ---------------------------------------------------------------------------------------------

/// A one-task project over `rows` answered by `server`'s model `target`.
pub(crate) fn echo_project(
    server: &TestServer,
    model_extra: &str,
    rows: &[Value],
    evaluation_extra: &str,
    scorer: &str,
) -> Test {
    Test::new()
        .write("run.yaml", &echo_yaml(server, model_extra, evaluation_extra, scorer))
        .write("rows.jsonl", &jsonl(rows))
}

/// The run config of [`echo_project`]: spec `echo` of task `echo` on dataset `rows`.
pub(crate) fn echo_yaml(server: &TestServer, model_extra: &str, evaluation_extra: &str, scorer: &str) -> String {
    format!(
        r#"models:
{model}datasets:
  - key: rows
    source: {{type: local, file_path: rows.jsonl}}
    id_column: id
tasks:
  - key: echo
    display_name: "Echo"
    definition:
      dataset: {{key: rows}}
      solver:
        type: single_turn_solver
        input_builder:
          type: chat_completion
          input_messages:
            - role: user
              content: "{{{{ sample.question }}}}"
      scorers:
{scorer}evaluation:
  key: echo
{evaluation_extra}  task_specifications:
    - {{key: echo, task_key: echo, model_key: target}}
"#,
        model = model("target", server, model_extra),
        scorer = indent(scorer, 8),
        evaluation_extra = indent(evaluation_extra, 2),
    )
}

pub(crate) const EXACT_SCORER: &str = r#"
- type: string_equals
  key: exact
  ground_truth: "echo: {{ sample.question }}"
  metrics:
    - {type: mean, field: is_correct}
"#;

/// A Python scorer: the length of the answer.
const LENGTH_SCORER: &str = r#"
- type: python
  key: length
  compute_scores_snippet: |
    def compute_scores(sample, solver_output):
        return {"chars": len(solver_output["text"])}
  metrics:
    - {type: mean, field: chars}
"#;

pub(crate) fn numbered_rows(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("s{i:02}"), "question": format!("question {i}")}))
        .collect()
}

#[test]
fn a_killed_run_resumes_without_losing_or_repeating_samples() {
    let server = TestServer::start(delayed(openai_chat(), Duration::from_millis(250)));
    let rows = numbered_rows(12);
    let t = echo_project(
        &server,
        "max_concurrent_requests: 2",
        &rows,
        "cache_policy: no-cache",
        EXACT_SCORER,
    );
    let out = out_dir(&t, "out");
    let samples_path = out.join("samples.jsonl");

    let mut child = command(&t, &["run", "-f", "run.yaml", "-o", "out", "--no-progress"])
        .spawn()
        .expect("spawn lfeval");
    let deadline = Instant::now() + Duration::from_secs(30);
    while complete_lines(&samples_path) < 3 {
        if let Some(status) = child.try_wait().expect("poll child") {
            panic!("lfeval exited ({status}) before it could be killed");
        }
        assert!(Instant::now() < deadline, "no samples were written within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL lfeval");
    child.wait().expect("reap lfeval");
    let before = complete_lines(&samples_path);
    assert!(
        before < rows.len(),
        "the run should have been killed mid-way, found {before} samples"
    );
    assert!(!out.join("summary.json").exists(), "a killed run writes no summary");
    // Requests of the killed process are those on connections it opened.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.in_flight() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let first_connections = server.connections();

    let t = t.args(["run", "--resume", "out", "--no-progress"]);
    let resumed = t.run();
    assert_eq!(resumed.code, 0, "{}\n{}", resumed.stdout, resumed.stderr);
    assert!(
        resumed.stderr.contains(&format!("{before} sample(s) already done")),
        "{}",
        resumed.stderr
    );

    let records = samples(&out);
    assert_eq!(records.len(), rows.len(), "every sample exactly once");
    let expected: BTreeSet<String> = rows.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids(&records), expected);
    assert!(records.iter().all(|r| r["errors"] == json!([])));
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["totals"]["samples"], 12);
    assert_eq!(summary["totals"]["failed"], 0);
    assert_close(
        &metric(&summary["specifications"][0], "exact", "mean")["is_correct_mean"],
        1.0,
        "mean over all samples",
    );
    // The task log holds both sessions' samples once each, in sample order: the killed
    // session's read back from `samples.jsonl`, the resumed one's from what it tallied.
    let log = read_json(&out.join("task_results/echo/task_result_log.json"));
    let logged: Vec<&str> = log["evidence"]["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| s["sample_id"].as_str().expect("sample_id"))
        .collect();
    assert_eq!(logged, expected.iter().map(String::as_str).collect::<Vec<_>>());
    for sample in log["evidence"]["samples"].as_array().expect("samples") {
        let question = sample["sample"]["question"].as_str().expect("question");
        assert!(
            sample["direct_ios"][0]["request"]["body"]
                .as_str()
                .expect("request body")
                .contains(question),
            "{sample}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(out.join("task_results/echo"))
        .expect("task_results")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["task_result_log.json"], "no side file is left behind");
    // The resumed run only asked for what was missing; the killed one at most for the samples
    // it had in flight (two slots per permit) on top of what it recorded.
    let (killed, resumed): (Vec<_>, Vec<_>) = server
        .requests()
        .into_iter()
        .partition(|r| r.connection < first_connections);
    assert_eq!(
        resumed.len(),
        rows.len() - before,
        "the resumed run asks only for missing samples"
    );
    assert!(
        killed.len() >= before && killed.len() <= before + 4,
        "{} requests for {before} recorded samples",
        killed.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Response cache
// ---------------------------------------------------------------------------------------------

/// Six samples asking the model the same thing at once.
fn same_question_project(server: &TestServer) -> Test {
    let rows: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("s{i}"), "question": "the same question"}))
        .collect();
    echo_project(server, "max_concurrent_requests: 6", &rows, "", EXACT_SCORER).args([
        "run",
        "-f",
        "run.yaml",
        "-o",
        "out",
        "--no-progress",
    ])
}

#[test]
fn identical_requests_in_flight_ask_the_model_once() {
    let server = TestServer::start(delayed(openai_chat(), Duration::from_millis(300)));
    let t = same_question_project(&server);
    let out = t.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(server.count(), 1, "the other five wait for the first answer");
    let records = samples(&out_dir(&t, "out"));
    assert_eq!(records.len(), 6);
    assert_eq!(records.iter().filter(|r| r["cached"] == true).count(), 5);
    assert!(records.iter().all(|r| r["errors"] == json!([])), "{records:?}");
}

#[test]
fn when_the_first_of_identical_requests_fails_the_others_ask_at_once() {
    let failed = Response::json(400, &json!({"error": {"message": "bad request"}}));
    let answer = delayed(openai_chat(), Duration::from_millis(300));
    let first = std::sync::atomic::AtomicBool::new(true);
    let server = TestServer::start(move |req: &Request| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            Response {
                delay: Some(Duration::from_millis(300)),
                ..failed.clone()
            }
        } else {
            answer(req)
        }
    });
    let t = same_question_project(&server);
    let out = t.run();
    assert_eq!(server.count(), 6, "one failed call, then the five that waited for it");
    assert!(server.max_in_flight() >= 2, "the five asked together, not in turn");
    let records = samples(&out_dir(&t, "out"));
    assert_eq!(records.len(), 6, "{}", out.stderr);
    let errored = records.iter().filter(|r| r["errors"] != json!([])).count();
    assert_eq!(errored, 1, "{records:?}");
}

#[test]
fn a_cached_rerun_with_a_changed_scorer_makes_no_calls_and_no_cache_does() {
    let server = TestServer::start(openai_chat());
    let rows = numbered_rows(6);
    let first = echo_project(&server, "", &rows, "cache_policy: reuse", EXACT_SCORER).args([
        "run",
        "-f",
        "run.yaml",
        "-o",
        "first",
        "--no-progress",
    ]);
    let out = first.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(server.count(), 6);
    assert!(first.path().join(".lfeval/cache.sqlite").exists());

    // Same model and requests, different scorer: every answer comes from the cache.
    let second = first
        .write(
            "run.yaml",
            &echo_yaml(&server, "", "cache_policy: reuse", LENGTH_SCORER),
        )
        .args(["run", "-f", "run.yaml", "-o", "second", "--no-progress"]);
    let out = second.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(server.count(), 6, "a cached re-run must not call the model");
    let records = samples(&out_dir(&second, "second"));
    assert_eq!(records.len(), 6);
    assert!(
        records.iter().all(|r| r["cached"] == true),
        "every record is marked cached"
    );
    let expected_chars = rows
        .iter()
        .map(|r| format!("echo: {}", r["question"].as_str().unwrap()).len() as f64)
        .sum::<f64>()
        / 6.0;
    let summary = read_json(&out_dir(&second, "second").join("summary.json"));
    assert_close(
        &metric(&summary["specifications"][0], "length", "mean")["chars_mean"],
        expected_chars,
        "new scorer on cached answers",
    );

    // `--no-cache` calls the model again for every sample.
    let third = second.args(["run", "-f", "run.yaml", "-o", "third", "--no-progress", "--no-cache"]);
    let out = third.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(server.count(), 12);
    assert!(samples(&out_dir(&third, "third")).iter().all(|r| r["cached"] == false));
}

// ---------------------------------------------------------------------------------------------
// Early stops and exit codes
// ---------------------------------------------------------------------------------------------

#[test]
fn fail_fast_and_max_errors_stop_early_with_exit_1() {
    let rows = numbered_rows(20);
    for (flag, errors) in [(vec!["--fail-fast"], 1), (vec!["--max-errors", "3"], 3)] {
        let server = TestServer::start(delayed(
            scripted(
                Vec::new(),
                Response::json(400, &json!({"error": {"message": "bad request"}})),
            ),
            Duration::from_millis(20),
        ));
        let mut args = vec!["run", "-f", "run.yaml", "-o", "out", "--no-progress"];
        args.extend(&flag);
        let t = echo_project(
            &server,
            "max_concurrent_requests: 1",
            &rows,
            "cache_policy: no-cache",
            EXACT_SCORER,
        )
        .args(args);
        let out = t.run();
        assert_eq!(out.code, 1, "{flag:?}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("stopped early after failed samples"),
            "{flag:?}: {}",
            out.stderr
        );
        let records = samples(&out_dir(&t, "out"));
        // Exactly the allowed number of failures is recorded. One request at a time gives two
        // sample slots, so one more sample may have been in flight when the last allowed failure
        // stopped the run: it is left unrecorded (a resume runs it again), and none starts after.
        assert_eq!(records.len(), errors, "{flag:?}: {} samples recorded", records.len());
        assert!(
            records
                .iter()
                .all(|r| r["errors"].as_array().is_some_and(|e| !e.is_empty()))
        );
        assert!(
            server.count() == records.len() || server.count() == records.len() + 1,
            "{flag:?}: {} requests for {} recorded samples; none may start after the stop",
            server.count(),
            records.len()
        );
        let summary = read_json(&out_dir(&t, "out").join("summary.json"));
        assert_eq!(summary["totals"]["failed"], json!(records.len()));
    }
}

#[test]
fn exit_codes_distinguish_success_failed_samples_and_configuration_errors() {
    // 0: everything scored.
    let ok = TestServer::start(openai_chat());
    let t = echo_project(&ok, "", &numbered_rows(2), "cache_policy: no-cache", EXACT_SCORER).args([
        "run",
        "-f",
        "run.yaml",
        "-o",
        "out",
        "--no-progress",
    ]);
    let out = t.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    // 1: a sample failed (the server rejects it).
    let failing = TestServer::start(scripted(
        vec![Response::json(400, &json!({"error": {"message": "no"}}))],
        Response::empty(200),
    ));
    let t = echo_project(
        &failing,
        "max_concurrent_requests: 1\nretry: {max_attempts: 1}",
        &numbered_rows(1),
        "cache_policy: no-cache",
        EXACT_SCORER,
    )
    .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let out = t.run();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);

    // 2: a configuration error, reported before anything runs.
    let unused = TestServer::start(openai_chat());
    let t = echo_project(&unused, "", &numbered_rows(1), "cache_policy: no-cache", EXACT_SCORER);
    let run_yaml = std::fs::read_to_string(t.path().join("run.yaml"))
        .unwrap()
        .replace("task_key: echo,", "task_key: ecoh,");
    let t = t
        .write("run.yaml", &run_yaml)
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let snapshot = t.snapshot();
    assert_eq!(unused.count(), 0);
    assert!(
        !out_dir(&t, "out").exists(),
        "a run that never started leaves no run directory"
    );
    // So the corrected config can run into the same directory.
    let t = t.write("run.yaml", &run_yaml.replace("task_key: ecoh,", "task_key: echo,"));
    let out = t.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(unused.count(), 1);
    insta::assert_snapshot!(snapshot);
}

// ---------------------------------------------------------------------------------------------
// Datasets: formats, selection, filters
// ---------------------------------------------------------------------------------------------

const TYPES_SCORER: &str = r#"
- type: python
  key: types
  compute_scores_snippet: |
    def compute_scores(sample, solver_output):
        return {"n_is_str": isinstance(sample["n"], str), "flag_is_str": isinstance(sample["flag"], str)}
  metrics:
    - {type: mean, field: n_is_str}
"#;

#[test]
fn csv_values_are_strings_and_jsonl_values_keep_their_types() {
    let server = TestServer::start(openai_chat());
    let csv = "id,question,n,flag\nc1,first,3,true\nc2,second,4.5,false\n";
    let jsonl_rows = [
        json!({"id": "c1", "question": "first", "n": 3, "flag": true}),
        json!({"id": "c2", "question": "second", "n": 4.5, "flag": false}),
    ];
    for (file, contents) in [("rows.csv", csv.to_owned()), ("rows.jsonl", jsonl(&jsonl_rows))] {
        let t = echo_project(&server, "", &[], "cache_policy: no-cache", TYPES_SCORER).write(file, &contents);
        let run_yaml = std::fs::read_to_string(t.path().join("run.yaml"))
            .unwrap()
            .replace("rows.jsonl", file);
        let t = t
            .write("run.yaml", &run_yaml)
            .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
        let out = t.run();
        assert_eq!(out.code, 0, "{file}: {}\n{}", out.stdout, out.stderr);
        let records = by_id(&samples(&out_dir(&t, "out")));
        assert_eq!(records.len(), 2);
        let strings = file.ends_with(".csv");
        if strings {
            assert_eq!(
                records["c1"]["sample"],
                json!({"id": "c1", "question": "first", "n": "3", "flag": "true"})
            );
            assert_eq!(records["c2"]["sample"]["n"], "4.5");
        } else {
            assert_eq!(records["c1"]["sample"], jsonl_rows[0]);
            assert_eq!(records["c2"]["sample"]["n"], 4.5);
        }
        for record in records.values() {
            // What the Python scorer saw matches what was recorded.
            assert_eq!(
                record["scores"]["types"]["values"],
                json!({"n_is_str": strings, "flag_is_str": strings}),
                "{file}"
            );
            assert_eq!(
                record["solver_output"]["text"],
                format!("echo: {}", record["sample"]["question"].as_str().unwrap())
            );
        }
    }
}

#[test]
fn num_samples_with_head_and_random_subsampling() {
    let server = TestServer::start(openai_chat());
    let rows = numbered_rows(20);
    let run = |subsampling: &str, out: &str| -> BTreeSet<String> {
        let t = echo_project(
            &server,
            "",
            &rows,
            &format!("cache_policy: no-cache\nnum_samples: 5\nsubsampling: {subsampling}"),
            EXACT_SCORER,
        )
        .args(["run", "-f", "run.yaml", "-o", out, "--no-progress"]);
        let output = t.run();
        assert_eq!(output.code, 0, "{}\n{}", output.stdout, output.stderr);
        let records = samples(&out_dir(&t, out));
        assert_eq!(
            read_json(&out_dir(&t, out).join("summary.json"))["totals"]["samples"],
            5
        );
        ids(&records)
    };
    let before = server.count();
    let head = run("head", "head");
    assert_eq!(head, (0..5).map(|i| format!("s{i:02}")).collect::<BTreeSet<_>>());
    assert_eq!(server.count() - before, 5, "only the selected samples are sent");

    let random = run("random", "random-1");
    assert_eq!(random.len(), 5);
    assert_ne!(random, head, "random subsampling should not just take the first rows");
    assert!(random.iter().all(|id| rows.iter().any(|r| r["id"] == id.as_str())));
    let again = run("random", "random-2");
    assert_eq!(again, random, "random subsampling is the same across runs");
}

#[test]
fn dataset_filters_select_the_matching_rows() {
    let server = TestServer::start(openai_chat());
    let rows: Vec<Value> = (0..12)
        .map(|i| {
            let level = ["easy", "hard", "medium"][i % 3];
            let mut row =
                json!({"id": format!("f{i:02}"), "question": format!("question {i}"), "level": level, "score": i});
            if i % 4 != 0 {
                row["note"] = json!(format!("note {i}"));
            }
            row
        })
        .collect();
    let t = echo_project(&server, "", &rows, "cache_policy: no-cache", EXACT_SCORER);
    let run_yaml = std::fs::read_to_string(t.path().join("run.yaml")).unwrap().replace(
        "source: {type: local, file_path: rows.jsonl}",
        r#"source:
      type: local
      file_path: rows.jsonl
      filters:
        - {expression: "level", op: in, values: [hard, medium]}
        - {expression: "sample.score", op: greater_or_equal, value: 3}
        - {expression: "note", op: exists}"#,
    );
    let t = t
        .write("run.yaml", &run_yaml)
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let out = t.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let expected: BTreeSet<String> = rows
        .iter()
        .filter(|r| {
            ["hard", "medium"].contains(&r["level"].as_str().unwrap())
                && r["score"].as_u64().unwrap() >= 3
                && r.get("note").is_some()
        })
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!expected.is_empty() && expected.len() < rows.len());
    assert_eq!(ids(&samples(&out_dir(&t, "out"))), expected);
    assert_eq!(server.count(), expected.len());
}

// ---------------------------------------------------------------------------------------------
// Result files
// ---------------------------------------------------------------------------------------------

#[test]
fn task_result_log_and_summary_have_the_ai_go_shape() {
    let server = TestServer::start(openai_chat());
    let rows = numbered_rows(3);
    let t = echo_project(&server, "", &rows, "cache_policy: no-cache", EXACT_SCORER).args([
        "run",
        "-f",
        "run.yaml",
        "-o",
        "out",
        "--no-progress",
    ]);
    let out = t.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let dir = out_dir(&t, "out");

    let log = read_json(&dir.join("task_results/echo/task_result_log.json"));
    assert_eq!(log["format_version"], "v1");
    assert_eq!(log["status"], "succeeded");
    assert!(log["app_version"].as_str().unwrap().starts_with("lfeval "));
    assert_eq!(log["specification"]["task"]["key"], "echo");
    assert_eq!(log["specification"]["task"]["display_name"], "Echo");
    assert_eq!(log["specification"]["evaluated_model"], "target");
    assert_eq!(log["specification"]["dataset"], "rows");
    let prompt: usize = rows.iter().map(|r| words(r["question"].as_str().unwrap())).sum();
    let completion: usize = rows.iter().map(|r| 1 + words(r["question"].as_str().unwrap())).sum();
    assert_eq!(
        log["execution"]["model_usage"],
        json!({"num_samples": 3, "num_prompt_tokens": prompt, "num_completion_tokens": completion})
    );
    for key in ["started_at", "ended_at"] {
        assert!(
            log["execution"][key].as_str().is_some_and(|s| s.ends_with('Z')),
            "execution.{key}"
        );
    }
    assert_eq!(log["errors"], json!([]));
    let evidence = &log["evidence"];
    assert_eq!(evidence["failures"], json!({"num_errors": 0, "num_total": 3}));
    assert_eq!(evidence["metrics"][0]["scorer_name"], "exact");
    assert_eq!(evidence["metrics"][0]["metric_type"], "mean");
    assert_eq!(evidence["metrics"][0]["values"], json!({"is_correct_mean": 1.0}));
    let logged = evidence["samples"].as_array().expect("evidence.samples");
    assert_eq!(logged.len(), 3);
    for sample in logged {
        let id = sample["sample_id"].as_str().unwrap();
        let row = rows.iter().find(|r| r["id"] == id).expect("a dataset row");
        assert_eq!(&sample["sample"], row);
        assert_eq!(
            sample["solver"]["output"]["text"],
            format!("echo: {}", row["question"].as_str().unwrap())
        );
        assert_eq!(sample["scores"]["exact"]["values"]["is_correct"], 1.0);
        let io = &sample["direct_ios"][0];
        assert_eq!(io["model"], "target");
        assert_eq!(io["response"]["status_code"], 200);
        let request: Value =
            serde_json::from_str(io["request"]["body"].as_str().unwrap()).expect("request body is JSON");
        assert_eq!(
            turns(&request["messages"]),
            vec![turn("user", row["question"].as_str().unwrap())]
        );
        let response: Value =
            serde_json::from_str(io["response"]["body"].as_str().unwrap()).expect("response body is JSON");
        assert_eq!(response["object"], "chat.completion");
    }

    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["evaluation"], "echo");
    let spec = &summary["specifications"][0];
    assert_eq!(
        (
            &spec["key"],
            &spec["task"],
            &spec["model"],
            &spec["dataset"],
            &spec["samples"],
            &spec["failed"]
        ),
        (
            &json!("echo"),
            &json!("echo"),
            &json!("target"),
            &json!("rows"),
            &json!(3),
            &json!(0)
        )
    );
    assert_eq!(
        summary["totals"],
        json!({"samples": 3, "failed": 0, "metric_errors": 0, "usage": {"num_prompt_tokens": prompt, "num_completion_tokens": completion}})
    );
    assert!(summary["wall_time_s"].as_f64().is_some_and(|s| s > 0.0));
    assert!(dir.join("run_config.json").exists());
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

const PLANTED: &str = "sk-planted-5e1f0c9a7b2d";
const PLANTED_ENV: &str = "hdr-planted-77c3a1e9f0";

/// Checks both credentials and echoes them back in the reply, so they reach every file the
/// run writes unless lfeval masks them.
fn leaky_server() -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    |req: &Request| {
        if req.header("authorization") != Some(&format!("Bearer {PLANTED}"))
            || req.header("x-extra-key") != Some(PLANTED_ENV)
        {
            return Response::json(401, &json!({"error": {"message": "invalid api key"}}));
        }
        let question = request_turns(req).last().map(|(_, t)| t.clone()).unwrap_or_default();
        completion(
            req,
            &format!(
                "echo: {question} (auth {} / {})",
                req.header("authorization").unwrap_or(""),
                req.header("x-extra-key").unwrap_or("")
            ),
        )
    }
}

#[test]
fn planted_secrets_never_reach_the_run_directory_or_the_cache() {
    let server = TestServer::start(leaky_server());
    let scorer = r#"
- type: python
  key: noisy
  compute_scores_snippet: |
    def compute_scores(sample, solver_output):
        print("model said", solver_output["text"])
        return {"length": len(solver_output["text"])}
  metrics:
    - {type: mean, field: length}
"#;
    let extra = "api_key: \"<< secrets.PLANTED_KEY >>\"\ncustom_headers:\n  X-Extra-Key: $EXTRA_KEY";
    let t = echo_project(&server, "", &numbered_rows(3), "cache_policy: reuse", scorer);
    let run_yaml = std::fs::read_to_string(t.path().join("run.yaml")).unwrap().replace(
        "        key: \"latticeflow$openai_chat_completion\"\n",
        &format!(
            "        key: \"latticeflow$openai_chat_completion\"\n{}",
            indent(extra, 6)
        ),
    );
    let t = t
        .write("run.yaml", &run_yaml)
        .write(".test-home/secrets.json", &json!({"PLANTED_KEY": PLANTED}).to_string())
        .write(".env", &format!("EXTRA_KEY={PLANTED_ENV}\n"))
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let out = t.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(server.count(), 3, "the server accepted the real credentials");

    let samples_text = std::fs::read_to_string(out_dir(&t, "out").join("samples.jsonl")).unwrap();
    assert!(
        samples_text.contains("<<secrets.PLANTED_KEY>>"),
        "the echoed key reached the results, masked: {samples_text}"
    );
    assert!(
        samples_text.contains("$EXTRA_KEY"),
        "the echoed header reached the results, masked"
    );
    let mut checked = files_under(&out_dir(&t, "out"));
    checked.extend(files_under(&t.path().join(".lfeval")));
    assert!(
        checked.iter().any(|p| p.ends_with("cache.sqlite")),
        "the cache was written: {checked:?}"
    );
    assert!(checked.len() >= 5, "{checked:?}");
    for file in &checked {
        let bytes = std::fs::read(file).unwrap();
        for secret in [PLANTED, PLANTED_ENV] {
            assert!(
                !contains(&bytes, secret),
                "`{}` contains a planted secret",
                file.display()
            );
        }
    }
    for secret in [PLANTED, PLANTED_ENV] {
        assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));
    }
}

#[test]
fn ctrl_c_stops_cleanly_and_says_how_to_resume() {
    let server = TestServer::start(delayed(openai_chat(), Duration::from_millis(250)));
    let rows = numbered_rows(12);
    let t = echo_project(
        &server,
        "max_concurrent_requests: 2",
        &rows,
        "cache_policy: no-cache",
        EXACT_SCORER,
    );
    let out = out_dir(&t, "out");
    let samples_path = out.join("samples.jsonl");

    let child = command(&t, &["run", "-f", "run.yaml", "-o", "out", "--no-progress"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn lfeval");
    let deadline = Instant::now() + Duration::from_secs(30);
    while complete_lines(&samples_path) < 2 {
        assert!(Instant::now() < deadline, "no samples were written within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("send SIGINT");
    assert!(interrupt.success());
    let output = child.wait_with_output().expect("wait for lfeval");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("hint: resume with `lfeval run --resume out`"),
        "{stderr}"
    );
    assert!(
        !out.join("summary.json").exists(),
        "an interrupted run writes no summary"
    );
    let before = complete_lines(&samples_path);
    assert!(
        before < rows.len(),
        "the run should have stopped early, found {before} samples"
    );

    // Keep the project alive: `args` returns the builder that owns the directory.
    let t = t.args(["run", "--resume", "out", "--no-progress"]);
    let resumed = t.run();
    assert_eq!(resumed.code, 0, "{}\n{}", resumed.stdout, resumed.stderr);
    let records = samples(&out);
    assert_eq!(records.len(), rows.len(), "every sample exactly once");
    let expected: BTreeSet<String> = rows.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids(&records), expected);
}

#[test]
fn the_cache_key_follows_resolved_variables() {
    let server = TestServer::start(openai_chat());
    let rows = numbered_rows(3);
    // Same request bodies, but a header whose value comes from `$VARIANT`: a different value
    // is a different configuration, so cached answers must not be reused across it.
    let yaml = echo_yaml(&server, "", "cache_policy: reuse", EXACT_SCORER).replace(
        "        key: \"latticeflow$openai_chat_completion\"\n",
        "        key: \"latticeflow$openai_chat_completion\"\n      custom_headers:\n        X-Variant: $VARIANT\n",
    );
    assert!(yaml.contains("X-Variant"), "{yaml}");
    let t = Test::new().write("run.yaml", &yaml).write("rows.jsonl", &jsonl(&rows));
    let run = |t: Test, variant: &str, out: &str| {
        let t = t
            .env("VARIANT", variant)
            .args(["run", "-f", "run.yaml", "-o", out, "--no-progress"]);
        let result = t.run();
        assert_eq!(result.code, 0, "{}\n{}", result.stdout, result.stderr);
        t
    };
    let t = run(t, "a", "first");
    assert_eq!(server.count(), 3);
    let t = run(t, "a", "second");
    assert_eq!(server.count(), 3, "same variable value: answers come from the cache");
    let _t = run(t, "b", "third");
    assert_eq!(server.count(), 6, "a changed variable must miss the cache");
    let variants: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| r.request.header("x-variant").map(str::to_owned))
        .collect();
    assert_eq!(variants, ["a", "a", "a", "b", "b", "b"]);
}

#[test]
fn validate_checks_a_run_config_without_calling_models() {
    let server = TestServer::start(openai_chat());
    let rows = numbered_rows(3);
    let t = echo_project(&server, "", &rows, "cache_policy: no-cache", EXACT_SCORER).args(["validate", "run.yaml"]);
    let out = t.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("1 task specification(s) ready to run"),
        "{}",
        out.stderr
    );
    assert_eq!(server.count(), 0, "validation makes no model calls");

    let broken =
        echo_yaml(&server, "", "cache_policy: no-cache", EXACT_SCORER).replace("task_key: echo", "task_key: ecoh");
    let t = t.write("run.yaml", &broken);
    let out = t.run();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("unknown task `ecoh`"), "{}", out.stderr);
    assert!(out.stderr.contains("did you mean `echo`?"), "{}", out.stderr);
    assert!(out.stderr.contains("--> run.yaml:"), "{}", out.stderr);
}

/// A run with nothing for Python to do never starts the interpreter: under a `PYTHONHOME` it
/// could not start from, an HTTP-only run still succeeds, while the same run with a Python
/// scorer cannot.
#[test]
fn a_run_without_python_never_starts_the_interpreter() {
    let server = TestServer::start(openai_chat());
    let broken_home = "/nonexistent/lfeval-python-home";
    let t = echo_project(&server, "", &numbered_rows(3), "", EXACT_SCORER)
        .env("PYTHONHOME", broken_home)
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let out = t.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(server.count(), 3);
    assert_eq!(samples(&out_dir(&t, "out")).len(), 3);

    let t = t.write("run.yaml", &echo_yaml(&server, "", "", LENGTH_SCORER)).args([
        "run",
        "-f",
        "run.yaml",
        "-o",
        "with-python",
        "--no-progress",
    ]);
    let out = t.run();
    // A diagnostic and lfeval's own exit code, not CPython's fatal error and an abort.
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(&format!("`PYTHONHOME` is `{broken_home}`, which holds no python 3."))
            && out.stderr.contains("hint: unset `PYTHONHOME`"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Fatal Python error"), "{}", out.stderr);
    assert_eq!(server.count(), 3, "nothing runs once Python cannot start");
}
