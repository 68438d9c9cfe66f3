//! The bundle's own run configs, run end to end as a user runs them (`lfeval run -f run.yaml`
//! in a copy of the guide), with `$provider: "openai/…"` models pointed at a local fake provider
//! through `OPENAI_BASE_URL` and every other endpoint (Dify, RAGFlow, streaming) served on
//! 127.0.0.1 too; metrics and records are checked against what the fake answered.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::conformance::{Suite, suite};
use crate::server::{Request, Response, TestServer};
use crate::test::{Output, Test};

/// One chat call as the fake provider saw it.
pub struct Call {
    /// `(role, text)` per message.
    pub messages: Vec<(String, String)>,
    /// The request asked for structured output (`response_format` / `text.format`).
    pub structured: bool,
    pub body: Value,
}

impl Call {
    /// A field of the request body.
    pub fn field(&self, name: &str) -> &Value {
        &self.body[name]
    }
}

impl Call {
    fn text(&self, role: &str) -> Vec<&str> {
        self.messages
            .iter()
            .filter(|(r, _)| r == role)
            .map(|(_, t)| t.as_str())
            .collect()
    }

    pub fn system(&self) -> &str {
        self.text("system").first().copied().unwrap_or("")
    }

    pub fn last_user(&self) -> &str {
        self.text("user").last().copied().unwrap_or("")
    }

    pub fn last(&self) -> &str {
        self.messages.last().map_or("", |(_, t)| t.as_str())
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

type Reply = Arc<dyn Fn(&Call) -> String + Send + Sync>;

/// A fake OpenAI: `POST …/chat/completions` (a streamed answer when the request says
/// `"stream": true`) and `POST …/responses`; `reply` writes the assistant's text.
pub fn provider(reply: impl Fn(&Call) -> String + Send + Sync + 'static) -> TestServer {
    let reply: Reply = Arc::new(reply);
    let responses = Arc::new(AtomicUsize::new(0));
    TestServer::start(move |req: &Request| {
        let Some(body) = req.json() else {
            return Response::json(400, &json!({"error": {"message": "not json"}}));
        };
        if req.path.ends_with("/responses") {
            let items = body["input"].as_array().cloned().unwrap_or_default();
            let call = Call {
                messages: items
                    .iter()
                    .map(|m| (m["role"].as_str().unwrap_or("").to_owned(), text_of(&m["content"])))
                    .collect(),
                structured: body.get("text").is_some(),
                body: body.clone(),
            };
            let text = reply(&call);
            let n = responses.fetch_add(1, Ordering::SeqCst) + 1;
            return Response::json(
                200,
                &json!({"id": format!("resp_{n}"), "object": "response", "output": [
                    {"type": "message", "id": format!("msg_{n}"), "status": "completed", "role": "assistant",
                     "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                    "usage": {"input_tokens": 10, "output_tokens": 2}}),
            );
        }
        if !req.path.ends_with("/chat/completions") {
            return Response::json(404, &json!({"error": {"message": "not found"}}));
        }
        let call = Call {
            messages: body["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| (m["role"].as_str().unwrap_or("").to_owned(), text_of(&m["content"])))
                .collect(),
            structured: body.get("response_format").is_some(),
            body: body.clone(),
        };
        let text = reply(&call);
        if body["stream"] == json!(true) {
            let mut sse = String::from("data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n");
            let chars: Vec<char> = text.chars().collect();
            for chunk in chars.chunks(3) {
                let piece: String = chunk.iter().collect();
                sse.push_str(&format!(
                    "data: {}\n\n",
                    json!({"choices": [{"delta": {"content": piece}}]})
                ));
            }
            sse.push_str("data: [DONE]\n\n");
            return Response::text(200, &sse).with_header("Content-Type", "text/event-stream");
        }
        Response::json(
            200,
            &json!({"id": "chatcmpl-1", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}),
        )
    })
}

/// A judge answer as the structured-output schema lfeval sends asks for.
pub fn judgement(field: &str, value: Value) -> String {
    json!({field: value, "reasoning": "checked by the fake judge", "confidence": 0.9}).to_string()
}

/// A copy of a bundle project in a fresh test directory, ready to run with the bundle's
/// variables, the snippet virtualenv and the fake provider.
pub fn project(suite: &Suite, name: &str, server: Option<&TestServer>) -> Test {
    let mut t = Test::new().env("VIRTUAL_ENV", &suite.snippet_venv().display().to_string());
    crate::conformance::copy_tree(&suite.bundle.join(name), t.path());
    for (k, v) in &suite.env {
        t = t.env(k, v);
    }
    if let Some(server) = server {
        t = t.env("OPENAI_BASE_URL", &format!("{}/v1", server.url()));
    }
    t
}

/// `lfeval run -f <file> --json`: the summary and every record.
pub fn run(t: Test, file: &str) -> (Output, Value, Vec<Value>) {
    let t = t.args(["run", "-f", file, "--json", "--no-progress"]);
    let out = t.run();
    let summary: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("no summary ({e}); exit {}:\n{}\n{}", out.code, out.stdout, out.stderr));
    let dir = Path::new(summary["run_dir"].as_str().expect("run_dir")).to_path_buf();
    let records = std::fs::read_to_string(dir.join("samples.jsonl"))
        .expect("samples.jsonl")
        .lines()
        .map(super::test::record_of_line)
        .collect();
    (out, summary, records)
}

/// `values` of the metric `name` of specification `spec`.
pub fn metric(summary: &Value, spec: &str, name: &str) -> Value {
    let specs = summary["specifications"].as_array().expect("specifications");
    let spec = specs
        .iter()
        .find(|s| s["key"] == spec)
        .unwrap_or_else(|| panic!("no specification `{spec}` in {summary:#}"));
    spec["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .find_map(|m| m["values"].get(name).cloned())
        .unwrap_or_else(|| panic!("no metric `{name}` in {spec:#}"))
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

/// The dataset rows of a bundle JSONL file.
fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("dataset")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect()
}

fn csv_column(path: &Path, column: &str) -> Vec<String> {
    let mut reader = csv::Reader::from_path(path).expect("csv");
    let headers = reader.headers().expect("headers").clone();
    let at = headers.iter().position(|h| h == column).expect("column");
    reader
        .records()
        .map(|r| r.expect("row").get(at).unwrap_or("").to_owned())
        .collect()
}

#[test]
fn a_judge_scorer_evaluation_runs_against_a_provider_model() {
    let Some(suite) = suite() else { return };
    let guide = "guides/evaluation-qa-llm-scorer";
    let data = suite.bundle.join(guide).join("datasets/hp_trivia.csv");
    let questions = csv_column(&data, "question");
    let answers = csv_column(&data, "gt_answer");
    let known: BTreeMap<String, String> = questions.iter().cloned().zip(answers.iter().cloned()).collect();
    let server = provider(move |call| {
        if call.system().contains("rate whether the ground truth answer") {
            let prompt = call.last_user();
            let truth = prompt
                .lines()
                .find_map(|l| l.strip_prefix("Ground Truth Answer: "))
                .unwrap_or("");
            let candidate = prompt
                .lines()
                .find_map(|l| l.strip_prefix("Candidate Answer: "))
                .unwrap_or("");
            let label = if candidate.to_lowercase().contains(&truth.to_lowercase()) {
                "correct"
            } else {
                "incorrect"
            };
            return if call.structured {
                judgement("prediction", json!(label))
            } else {
                label.to_owned()
            };
        }
        let question = call
            .last_user()
            .trim_start_matches("Respond to this question concisely. ");
        // Every third question gets a wrong answer.
        let index = questions.iter().position(|q| q == question).unwrap_or(0);
        if index % 3 == 2 {
            "I do not know.".to_owned()
        } else {
            format!("It is {}.", known.get(question).cloned().unwrap_or_default())
        }
    });
    let (out, summary, records) = run(project(suite, guide, Some(&server)), "run.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(records.len(), answers.len());
    for record in &records {
        let index = record["sample_index"].as_u64().expect("index") as usize;
        let expected = if index % 3 == 2 { 0.0 } else { 1.0 };
        assert_eq!(
            record["scores"]["model_as_a_judge_classifier"]["values"]["is_correct"],
            json!(expected)
        );
    }
    // The judge was asked for structured output; identical judge prompts (same truth, same wrong
    // answer) were answered once, from the response cache.
    let requests = server.requests();
    let judge_calls: Vec<_> = requests
        .iter()
        .filter(|r| r.request.body_str().contains("rate whether the ground truth"))
        .collect();
    assert!(!judge_calls.is_empty());
    assert!(
        judge_calls
            .iter()
            .all(|r| r.request.body_str().contains("\"response_format\""))
    );
    let distinct: std::collections::BTreeSet<&str> = judge_calls.iter().map(|r| r.request.body_str()).collect();
    assert_eq!(distinct.len(), judge_calls.len());
    assert_eq!(summary["specifications"][0]["model"], "openai$gpt-4-1-nano");
}

#[test]
fn a_multi_turn_solver_with_a_user_simulator_runs() {
    let Some(suite) = suite() else { return };
    let guide = "guides/task-multiturn-solver";
    let rows = jsonl(&suite.bundle.join(guide).join("datasets/qa_single_answers.jsonl"));
    let targets: BTreeMap<String, String> = rows
        .iter()
        .map(|r| {
            (
                r["question"].as_str().unwrap_or("").to_owned(),
                r["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let european = [
        "Austria", "Germany", "France", "Italy", "Spain", "Portugal", "Norway", "Sweden", "Poland",
    ];
    let server = provider(move |call| {
        if call.last().contains("If the previous message is a question") {
            // The simulator: confirms a clarifying question, else ends the conversation.
            let previous = &call.messages[call.messages.len() - 2].1;
            return if previous.ends_with('?') {
                "Yes".to_owned()
            } else {
                "<done>".to_owned()
            };
        }
        let question = call.text("user").first().copied().unwrap_or("");
        let answer = targets.get(question).cloned().unwrap_or_default();
        if call.last() == "Yes" || !european.iter().any(|c| question.contains(c)) {
            answer
        } else {
            format!("You are asking: {question} Is that right?")
        }
    });
    let (out, summary, records) = run(project(suite, guide, Some(&server)), "run.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(records.len(), rows.len());
    for record in &records {
        let question = record["sample"]["question"].as_str().unwrap_or("");
        assert_eq!(
            record["scores"]["string_equals"]["values"]["is_correct"],
            json!(1.0),
            "{question}: {:#}",
            record["solver_output"]["messages"]
        );
        let calls = record["calls"].as_array().expect("calls").len();
        let clarified = european.iter().any(|c| question.contains(c));
        // target, simulator, (target again after "Yes")
        assert_eq!(calls, if clarified { 3 } else { 2 }, "{question}");
        // `<done>` is dropped from the conversation (`keep_iteration: false`).
        assert!(!record["solver_output"]["messages"].to_string().contains("<done>"));
    }
    assert_eq!(summary["totals"]["failed"], 0);
}

#[test]
fn trials_repeat_samples_and_aggregate_pass_hat_k() {
    let Some(suite) = suite() else { return };
    let guide = "guides/task-with-trials";
    let rows = jsonl(&suite.bundle.join(guide).join("datasets/rag_qa.jsonl"));
    let contexts: Vec<String> = rows
        .iter()
        .map(|r| r["context"].as_str().unwrap_or("").to_owned())
        .collect();
    let server = provider(move |call| {
        if call.system().contains("groundedness") {
            // Grounded for the samples at even positions, whatever the trial.
            let prompt = call.last_user();
            let index = contexts.iter().position(|c| prompt.contains(c.as_str())).unwrap_or(1);
            let label = if index % 2 == 0 { "GROUNDED" } else { "NOT_GROUNDED" };
            return judgement("prediction", json!(label));
        }
        "An answer from the context.".to_owned()
    });
    let (out, summary, records) = run(project(suite, guide, Some(&server)), "run.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The specification overrides the task's 5 trials with 2.
    assert_eq!(records.len(), rows.len() * 2);
    let mut trials: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &records {
        trials
            .entry(r["sample_id"].as_str().expect("id").to_owned())
            .or_default()
            .push(r["trial"].as_u64().expect("trial"));
    }
    assert!(
        trials.values().all(|t| {
            let mut t = t.clone();
            t.sort();
            t == [1, 2]
        }),
        "{trials:?}"
    );
    // Each trial asked the model itself (no cached answer from the other trial).
    let target_calls = server
        .requests()
        .iter()
        .filter(|r| !r.request.body_str().contains("groundedness"))
        .count();
    assert_eq!(target_calls, rows.len() * 2);
    let even = rows.len().div_ceil(2) as f64 / rows.len() as f64;
    let reliability = metric(&summary, "rag-qa-groundedness", "Model Reliability (pass^3.mean)");
    assert!(close(&reliability, even), "pass^3 mean {reliability}, expected {even}");
}

#[test]
fn a_python_scorer_reads_the_trace_through_latticeflow_core() {
    let Some(suite) = suite() else { return };
    // Offline: a pass-through solver over recorded tau2bench traces, scored by a Python scorer
    // that walks `trace.items` (function calls with extra fields) as latticeflow-core objects.
    let (out, summary, records) = run(project(suite, "tutorials/scorer-tutorial", None), "run.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!records.is_empty());
    let spec = summary["specifications"][0]["key"].as_str().expect("key").to_owned();
    let metrics = summary["specifications"][0]["metrics"].as_array().expect("metrics");
    assert!(!metrics.is_empty(), "{summary:#}");
    // No model was called: the solver passes the recorded trace through.
    assert!(records.iter().all(|r| r["calls"].as_array().is_some_and(Vec::is_empty)));
    let scored = records
        .iter()
        .filter(|r| !r["scores"].as_object().expect("scores").is_empty())
        .count();
    assert_eq!(scored, records.len(), "{spec}: {}", out.stderr);
}

#[test]
fn the_openai_responses_adapter_is_stateful_through_the_previous_response_id() {
    let Some(suite) = suite() else { return };
    let guide = "guides/evaluation-multiturn-stateful-responses";
    let server = provider(|call| {
        let last = call.last_user();
        let name = ["Alice", "Bob", "Charlie", "Dana", "Eve"]
            .into_iter()
            .find(|n| last.contains(n))
            .unwrap_or("friend");
        format!("Sure, {name}: {last}")
    });
    let t = project(suite, guide, None);
    let model = t.path().join("models/model.yaml");
    let text = std::fs::read_to_string(&model).expect("model");
    std::fs::write(
        &model,
        text.replace(
            "https://api.openai.com/v1/responses",
            &format!("{}/v1/responses", server.url()),
        ),
    )
    .expect("point the model at the fake");
    let (out, summary, records) = run(t, "run.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let requests = server.requests();
    assert_eq!(requests.len(), records.len() * 2);
    // The second turn continues the first response and sends only the new message.
    let second: Vec<Value> = requests
        .iter()
        .filter_map(|r| r.request.json())
        .filter(|b| b.get("previous_response_id").is_some())
        .collect();
    assert_eq!(second.len(), records.len());
    for body in &second {
        assert!(
            body["previous_response_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("resp_"))
        );
        assert_eq!(body["input"].as_array().map(Vec::len), Some(1), "{body}");
        assert_eq!(body["model"], "gpt-4.1-nano");
    }
    // The scorer tests `name in assistant_messages[0].content`, a list of content parts in
    // latticeflow-core: as in lf, that membership test is false.
    let mentioned = metric(&summary, "conversation_memory", "Name Mentioned in First Response");
    assert!(close(&mentioned, 0.0), "{mentioned}");
    assert!(
        records
            .iter()
            .all(|r| r["errors"].as_array().is_some_and(Vec::is_empty))
    );
}

const STATEFUL_RUN: &str = r#"
secrets:
  DIFY_API_KEY: "dify-test-key"

datasets:
  - key: "names"
    display_name: "Names"
    source:
      type: "local"
      file_path: "names.jsonl"

tasks:
  - key: "remember-the-name"
    display_name: "Remember the name"
    description: "Two turns: the name, then the question."
    definition:
      dataset:
        key: "names"
      solver:
        type: "multi_turn_solver"
        message_builders:
          - type: "chat_message"
            role: "user"
            content: "Hi, I am {{ sample.name }}."
          - type: "generate"
          - type: "chat_message"
            role: "user"
            content: "What is my name?"
          - type: "generate"
      scorers:
        - type: "string_equals"
          ground_truth: "Your name is {{ sample.name }}."
          metrics:
            - type: "mean"
              field: "is_correct"
              name: "Remembered"
        - type: "python"
          key: "state"
          compute_scores_snippet: |
            def compute_scores(sample, solver_output):
                last = solver_output.trace.assistant_messages[-1]
                return {
                    "kept_state": getattr(last, "conversation_id", None) == "conv-" + sample["name"],
                    "lf_objects": type(solver_output).__module__.startswith("latticeflow."),
                    "last_text": solver_output.trace.get_last_assistant_text(),
                }
          metrics:
            - type: "mean"
              field: "kept_state"
              name: "State kept"
            - type: "mean"
              field: "lf_objects"
              name: "Real latticeflow-core objects"

evaluation:
  key: "stateful"
  display_name: "Stateful adapter"
  description: "A conversation through a stateful adapter."
  task_specifications:
    - key: "remember"
      task_key: "remember-the-name"
      model_key: "MODEL"
"#;

#[test]
fn a_dify_style_adapter_keeps_state_on_the_assistant_message() {
    let Some(suite) = suite() else { return };
    let conversations = Arc::new(std::sync::Mutex::new(BTreeMap::<String, String>::new()));
    let seen = Arc::clone(&conversations);
    let server = TestServer::start(move |req: &Request| {
        let body = req.json().unwrap_or_default();
        let query = body["query"].as_str().unwrap_or("");
        let mut known = seen.lock().expect("lock");
        let (id, answer) = match body["conversation_id"].as_str().filter(|c| !c.is_empty()) {
            Some(id) => (
                id.to_owned(),
                format!("Your name is {}.", known.get(id).cloned().unwrap_or_default()),
            ),
            None => {
                let name = query.trim_start_matches("Hi, I am ").trim_end_matches('.').to_owned();
                let id = format!("conv-{name}");
                known.insert(id.clone(), name.clone());
                (id, format!("Hello {name}!"))
            }
        };
        Response::json(
            200,
            &json!({"answer": answer, "conversation_id": id, "metadata": {"retriever_resources": [{"content": "a note"}]}}),
        )
    });
    let dify = |venv: &Path| {
        project(suite, "guides/model-dify", None)
            .write("names.jsonl", "{\"name\": \"Alice\"}\n{\"name\": \"Bob\"}\n")
            .write("stateful.yaml", &STATEFUL_RUN.replace("MODEL", "model-dify"))
            .env("DIFY_URL", &format!("{}/v1/chat-messages", server.url()))
            .env("VIRTUAL_ENV", &venv.display().to_string())
    };
    let (out, summary, _) = run(dify(&suite.snippet_venv()), "stateful.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(close(&metric(&summary, "remember", "Remembered"), 1.0), "{summary:#}");
    assert!(close(&metric(&summary, "remember", "State kept"), 1.0), "{summary:#}");
    assert!(
        close(&metric(&summary, "remember", "Real latticeflow-core objects"), 1.0),
        "{summary:#}"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    for r in &requests {
        assert_eq!(r.request.header("authorization"), Some("Bearer dify-test-key"));
    }
    let continued = requests
        .iter()
        .filter_map(|r| r.request.json())
        .filter(|b| b["conversation_id"].as_str().is_some_and(|c| c.starts_with("conv-")))
        .count();
    assert_eq!(continued, 2);

    // Without latticeflow-core the same scorer gets lfeval's look-alike objects: same answers.
    if let Ok(plain) = std::env::var("VIRTUAL_ENV") {
        let (out, summary, records) = run(dify(Path::new(&plain)), "stateful.yaml");
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(close(&metric(&summary, "remember", "State kept"), 1.0), "{summary:#}");
        assert!(
            close(&metric(&summary, "remember", "Real latticeflow-core objects"), 0.0),
            "{summary:#}"
        );
        assert!(records.iter().all(|r| {
            r["scores"]["state"]["values"]["last_text"]
                .as_str()
                .is_some_and(|t| t.starts_with("Your name is"))
        }));
    }
}

#[test]
fn a_streaming_adapter_reads_the_whole_event_stream() {
    let Some(suite) = suite() else { return };
    let server = provider(|call| {
        assert_eq!(call.field("stream"), &json!(true));
        format!(
            "Your name is {}.",
            call.last_user().trim_start_matches("Hi, I am ").trim_end_matches('.')
        )
    });
    let run_file = STATEFUL_RUN
        .replace("MODEL", "openai-gpt-4-1-nano")
        .replace(
            "          - type: \"generate\"\n          - type: \"chat_message\"\n            role: \"user\"\n            content: \"What is my name?\"\n",
            "",
        );
    let t = project(suite, "guides/model-streaming", None)
        .write("names.jsonl", "{\"name\": \"Alice\"}\n{\"name\": \"Bob\"}\n")
        .write("streamed.yaml", &run_file);
    let model = t.path().join("models/openai_gpt-4-1-nano.yaml");
    let text = std::fs::read_to_string(&model).expect("model");
    std::fs::write(
        &model,
        text.replace(
            "https://api.openai.com/v1/chat/completions",
            &format!("{}/v1/chat/completions", server.url()),
        ),
    )
    .expect("point the model at the fake");
    let (out, summary, records) = run(t, "streamed.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(close(&metric(&summary, "remember", "Remembered"), 1.0), "{summary:#}");
    assert!(records.iter().all(|r| {
        r["calls"][0]["response"]["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("data: ") && b.contains("[DONE]"))
    }));
}

#[test]
fn offline_guides_run_as_lf_defines_them() {
    let Some(suite) = suite() else { return };
    // A custom_inference model whose snippet takes the sample (no network).
    let (out, _, records) = run(
        project(suite, "guides/model-sample-dependent-inference", None),
        "run.yaml",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r["solver_output"]["text"].as_str().is_some()),
        "{:#}",
        records[0]
    );

    // Recorded traces scored by `string_equals` over `trace.get_last_assistant_text()`.
    let (out, summary, records) = run(project(suite, "guides/task-pass-through-solver", None), "run.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(records.iter().all(|r| r["calls"].as_array().is_some_and(Vec::is_empty)));
    assert_eq!(summary["totals"]["failed"], 0, "{summary:#}");

    // Dataset tasks: a per-sample and an all-samples Python scorer.
    let (out, summary, _) = run(project(suite, "guides/task-dataset-python-scorers", None), "run.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let specs = summary["specifications"].as_array().expect("specs");
    assert!(
        specs
            .iter()
            .all(|s| !s["metrics"].as_array().expect("metrics").is_empty()),
        "{summary:#}"
    );

    // Two datasets aligned by row (`dataset.keys`).
    let (out, summary, records) = run(project(suite, "guides/task-dataset-multiple-keys", None), "run.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let a = jsonl(
        &suite
            .bundle
            .join("guides/task-dataset-multiple-keys/datasets/annotator_a.jsonl"),
    );
    assert_eq!(records.len(), a.len());
    assert!(
        records[0]["sample"].get("annotator-a-labels").is_some(),
        "{:#}",
        records[0]["sample"]
    );
    assert!(
        !summary["specifications"][0]["metrics"]
            .as_array()
            .expect("metrics")
            .is_empty()
    );
}

#[test]
fn python_solvers_and_postprocessors_run_with_latticeflow_core_objects() {
    let Some(suite) = suite() else { return };
    // `run_solver(sample, model, trace)` builds the trace and awaits `model.predict`.
    let rows = jsonl(
        &suite
            .bundle
            .join("guides/task-python-solver/datasets/geography_qa.jsonl"),
    );
    let answers: BTreeMap<String, String> = rows
        .iter()
        .map(|r| {
            (
                r["question"].as_str().unwrap_or("").to_owned(),
                r["answer"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let server = provider(move |call| {
        assert!(
            call.system().contains("single word"),
            "the solver's system message comes first"
        );
        answers.get(call.last_user()).cloned().unwrap_or_default()
    });
    let (out, summary, records) = run(project(suite, "guides/task-python-solver", Some(&server)), "run.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(close(&metric(&summary, "geography-qa", "Accuracy"), 1.0), "{summary:#}");
    assert_eq!(server.count(), rows.len());
    assert!(records.iter().all(|r| r["calls"].as_array().map(Vec::len) == Some(1)));

    // A postprocessor splits one answer into one scored row per question.
    let rows = jsonl(
        &suite
            .bundle
            .join("guides/task-solver-postprocessor/datasets/multi_qa.jsonl"),
    );
    let targets: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .map(|t| t.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .collect();
    let questions: Vec<String> = rows
        .iter()
        .map(|r| r["questions"][0].as_str().unwrap_or("").to_owned())
        .collect();
    let server = provider(move |call| {
        let prompt = call.last_user();
        let i = questions.iter().position(|q| prompt.contains(q.as_str())).unwrap_or(0);
        targets[i].join("---")
    });
    let (out, summary, records) = run(
        project(suite, "guides/task-solver-postprocessor", Some(&server)),
        "run.yaml",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let parts: usize = rows.iter().map(|r| r["questions"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(records.len(), parts);
    assert!(
        records
            .iter()
            .all(|r| r["part"].is_u64() && r["sample"].get("question").is_some())
    );
    assert!(
        records
            .iter()
            .all(|r| r["scores"]["string_equals"]["values"]["is_correct"] == json!(1.0)),
        "{summary:#}"
    );
    assert_eq!(server.count(), rows.len());
}

#[test]
fn action_rules_leave_samples_out_of_the_metrics() {
    let Some(suite) = suite() else { return };
    let english = ["1", "3", "5", "8"];
    let server = provider(move |call| {
        if call.system().contains("language detection") {
            let text = call.last_user();
            let id = text.split("#").nth(1).unwrap_or("").trim_end_matches("</TEXT>").trim();
            let id = id.split_whitespace().next().unwrap_or("");
            return if english.contains(&id) { "ENGLISH" } else { "OTHER" }.to_owned();
        }
        if call.system().contains("expert evaluator") {
            // Only sample 1 is a good answer: every other one must be excluded for the mean to be 1.
            return if call.last_user().contains("answer #1 ") {
                "100"
            } else {
                "0"
            }
            .to_owned();
        }
        let question = call.last_user();
        let id = [
            "How far",
            "Quelle",
            "Who invented",
            "Wer hat",
            "What is the speed",
            "Qui a",
            "Was ist",
            "What year",
        ]
        .iter()
        .position(|p| question.starts_with(p))
        .map_or(0, |i| i + 1);
        format!("answer #{id} here")
    });
    let (out, summary, records) = run(project(suite, "guides/task-action-rules", Some(&server)), "run.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(records.len(), 8);
    let excluded: BTreeMap<String, String> = records
        .iter()
        .filter_map(|r| {
            Some((
                r["sample_id"].as_str()?.to_owned(),
                r["excluded_by"].as_str()?.to_owned(),
            ))
        })
        .collect();
    assert_eq!(excluded.len(), 7, "{excluded:?}");
    assert_eq!(excluded["2"], "exclude_non_english");
    assert_eq!(excluded["3"], "exclude_sample_ids");
    assert_eq!(excluded["5"], "exclude_holdout");
    let quality = &summary["specifications"][0]["metrics"][0];
    assert_eq!(quality["n"], 1, "{summary:#}");
    assert!(close(&quality["values"]["Mean Answer Quality"], 1.0), "{summary:#}");
}

#[test]
fn repeatability_runs_a_specification_again_without_reusing_answers() {
    let Some(suite) = suite() else { return };
    let server = provider(|call| {
        if call.structured {
            return judgement("prediction", json!("correct"));
        }
        "An answer.".to_owned()
    });
    let (out, summary, records) = run(
        project(suite, "guides/evaluation-repeatability", Some(&server)),
        "run.yaml",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let specs: Vec<&str> = summary["specifications"]
        .as_array()
        .expect("specs")
        .iter()
        .filter_map(|s| s["key"].as_str())
        .collect();
    assert_eq!(
        specs,
        [
            "hp-trivia-repeatability-run-1",
            "hp-trivia-repeatability-run-2",
            "hp-trivia-repeatability-run-3"
        ]
    );
    assert_eq!(records.len(), 15);
    let targets = server
        .requests()
        .iter()
        .filter(|r| !r.request.body_str().contains("response_format"))
        .count();
    assert_eq!(targets, 15, "every run asks the model itself");
}

#[test]
fn a_system_task_computes_its_evidence() {
    let Some(suite) = suite() else { return };
    let redirecting =
        TestServer::start(|_req: &Request| Response::empty(301).with_header("Location", "https://127.0.0.1/secure"));
    let plain = TestServer::start(|_req: &Request| Response::text(200, "hello"));
    let t = project(suite, "guides/task-system-enforce-https", None);
    let run_file = t.path().join("run.yaml");
    let text = std::fs::read_to_string(&run_file).expect("run.yaml");
    let text = text
        .replace(
            "url: \"https://github.com\"",
            &format!("url: \"{}\"", redirecting.addr()),
        )
        .replace(
            "url: \"http://httpforever.com/\"",
            &format!("url: \"{}\"", plain.addr()),
        );
    std::fs::write(&run_file, text).expect("write run.yaml");
    let (out, summary, records) = run(t, "run.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(records.len(), 2);
    assert!(
        close(&metric(&summary, "enforces-https-github", "Enforces HTTPS"), 1.0),
        "{summary:#}"
    );
    assert!(
        close(&metric(&summary, "enforces-https-httpforever", "Enforces HTTPS"), 0.0),
        "{summary:#}"
    );
    let github = records
        .iter()
        .find(|r| r["spec"] == "enforces-https-github")
        .expect("github record");
    let reason = github["scores"]["compute_evidence"]["metadata"]["Enforces HTTPS"]
        .as_str()
        .unwrap_or("");
    assert!(reason.contains("301"), "{reason}");
}

#[test]
fn a_task_can_score_an_earlier_specifications_results() {
    let Some(suite) = suite() else { return };
    let guide = "guides/task-dataset-from-task-result";
    let server = provider(|call| {
        // Right in English and French, wrong in every other language.
        let q = call.last_user();
        if q.contains("capital") || q.contains("capitale") {
            "Paris"
        } else {
            "?"
        }
        .to_owned()
    });
    let (out, summary, records) = run(project(suite, guide, Some(&server)), "run.yaml");
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let second: Vec<&Value> = records
        .iter()
        .filter(|r| r["spec"] == "cross-language-consistency")
        .collect();
    let first = records.iter().filter(|r| r["spec"] == "multilingual-trivia").count();
    assert_eq!(second.len(), first, "one row per record of the first specification");
    assert!(
        second
            .iter()
            .all(|r| r["sample"]["scores"]["correctness"]["values"].is_object())
    );
    // English rows are excluded by the task's action rule.
    assert!(second.iter().any(|r| r["excluded_by"] == "exclude_english_samples"));
    let spec = summary["specifications"]
        .as_array()
        .expect("specs")
        .iter()
        .find(|s| s["key"] == "cross-language-consistency")
        .expect("second spec");
    assert!(!spec["metrics"].as_array().expect("metrics").is_empty(), "{spec:#}");
}

#[test]
fn repeatability_of_an_existing_evaluation_finds_it_in_the_projects_other_run_file() {
    let Some(suite) = suite() else { return };
    let server = provider(|call| {
        if call.structured {
            return judgement("prediction", json!("correct"));
        }
        "An answer.".to_owned()
    });
    let t = project(
        suite,
        "guides/evaluation-repeatability-for-existing-eval",
        Some(&server),
    );
    let (out, summary, records) = run(t, "run_repeatability_of_existing_eval.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let specs: Vec<&str> = summary["specifications"]
        .as_array()
        .expect("specs")
        .iter()
        .filter_map(|s| s["key"].as_str())
        .collect();
    assert_eq!(specs.len(), 3, "{specs:?}");
    assert!(
        specs.iter().all(|s| s.starts_with("repeatability-hp-hp-trivia-run-")),
        "{specs:?}"
    );
    assert_eq!(records.len(), 15, "`num_samples: 5` for each of the 3 runs");
}

const RAG_RUN: &str = r#"
datasets:
  - key: "questions"
    display_name: "Questions"
    source:
      type: "local"
      file_path: "questions.jsonl"

tasks:
  - key: "grounded"
    display_name: "Grounded"
    description: "Answers must cite the retrieved chunk."
    definition:
      dataset:
        key: "questions"
      solver:
        type: "single_turn_solver"
        input_builder:
          type: "chat_completion"
          input_messages:
            - role: "user"
              content: "{{ sample.question }}"
      scorers:
        - type: "python"
          compute_scores_snippet: |
            def compute_scores(sample, solver_output):
                answer = solver_output.trace.assistant_messages[-1]
                citations = [a.content for a in answer.content[0].annotations]
                return {"cited": citations == [sample["chunk"]], "model": solver_output.output.choices[0].message.content}
          metrics:
            - type: "mean"
              field: "cited"
              name: "Cited"

evaluation:
  key: "rag"
  display_name: "RAG"
  description: "References become citations in the trace."
  task_specifications:
    - key: "grounded"
      task_key: "grounded"
      model_key: "model-ragflow"
"#;

#[test]
fn rag_references_become_citations_in_the_trace() {
    let Some(suite) = suite() else { return };
    let server = TestServer::start(|req: &Request| {
        let body = req.json().unwrap_or_default();
        assert_eq!(body["reference"], json!(true));
        assert_eq!(body["model"], "rag-model");
        let question = body["messages"][0]["content"].as_str().unwrap_or("").to_owned();
        Response::json(
            200,
            &json!({"choices": [{"message": {"role": "assistant", "content": format!("About {question}"),
                "reference": [{"content": format!("chunk for {question}")}]}}]}),
        )
    });
    let t = project(suite, "guides/model-ragflow", None)
        .write(
            "questions.jsonl",
            "{\"question\": \"tides\", \"chunk\": \"chunk for tides\"}\n{\"question\": \"moons\", \"chunk\": \"chunk for moons\"}\n",
        )
        .write("rag.yaml", RAG_RUN)
        .env("RAGFLOW_URL", &format!("{}/api/v1/chats_openai/x/chat/completions", server.url()))
        .env("RAGFLOW_MODEL", "rag-model");
    let (out, summary, records) = run(t, "rag.yaml");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(close(&metric(&summary, "grounded", "Cited"), 1.0), "{summary:#}");
    // Records are written as samples finish, in any order.
    let tides = records
        .iter()
        .find(|r| r["sample"]["question"] == "tides")
        .expect("tides");
    assert_eq!(tides["scores"]["python"]["values"]["model"], "About tides");
}

/// A provider that answers any bundle prompt plausibly: judges get a label quoted in their
/// system prompt (or the first number it names, for scores), in the JSON shape their structured
/// output asks for; everything else gets a one-word answer.
fn any_judge() -> TestServer {
    let quoted = regex::Regex::new(r#"'([A-Za-z_ ]+)'|"([A-Za-z_]+)""#).expect("regex");
    let shown = regex::Regex::new(r#"(?:prediction|label)`?"?\s*:\s*"([A-Za-z_]+)""#).expect("regex");
    let number = regex::Regex::new(r"\b(\d+(?:\.\d+)?)\b").expect("regex");
    provider(move |call| {
        let system = call.system();
        let field = call
            .field("response_format")
            .pointer("/json_schema/schema/properties")
            .and_then(Value::as_object)
            .and_then(|p| {
                ["prediction", "label", "score"]
                    .into_iter()
                    .find(|f| p.contains_key(*f))
            });
        let wants_score = field == Some("score") || system.contains("numeric score");
        let answer = if wants_score {
            json!(
                number
                    .captures(system)
                    .and_then(|c| c[1].parse::<f64>().ok())
                    .unwrap_or(1.0)
            )
        } else {
            match shown.captures(system).or_else(|| quoted.captures(system)) {
                Some(c) => json!(c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str()).trim()),
                None => json!("A"),
            }
        };
        match field {
            Some(field) => judgement(field, answer),
            None if wants_score => answer.to_string(),
            None => answer.as_str().unwrap_or("A").to_owned(),
        }
    })
}

#[test]
fn the_other_ready_run_configs_run_to_their_metrics() {
    let Some(suite) = suite() else { return };
    let guides = [
        ("guides/task-string-equals-scorer", "run.yaml"),
        ("guides/task-string-equals-mcqa-scorer", "run.yaml"),
        ("guides/task-singleturn-solver-generic-input", "run.yaml"),
        ("guides/task-python-metric", "run.yaml"),
        ("guides/task-generate-loop", "run.yaml"),
        ("guides/task-model-as-a-judge-scorer", "run.yaml"),
        ("guides/policy-quality-gate", "run.yaml"),
        ("guides/risk-scorers", "run.yaml"),
        ("guides/task-result-log-download-upload", "run.yaml"),
        (
            "guides/evaluation-repeatability-for-existing-eval",
            "run_original_eval.yaml",
        ),
        ("guides/dataset-generator-task-result", "run_evaluation.yaml"),
        ("tutorials/my_first_evaluation", "run.yaml"),
    ];
    let mut problems = Vec::new();
    for (guide, file) in guides {
        let server = any_judge();
        let (out, summary, records) = run(project(suite, guide, Some(&server)), file);
        let failed = summary["totals"]["failed"].as_u64().unwrap_or(u64::MAX);
        let metrics: usize = summary["specifications"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["metrics"].as_array().map_or(0, Vec::len))
            .sum();
        if out.code != 0 || failed != 0 || records.is_empty() {
            problems.push(format!(
                "{guide}/{file}: exit {}, {failed} failed, {metrics} metric(s)\n{}",
                out.code, out.stderr
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
