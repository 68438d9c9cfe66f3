//! `lfeval.http` in snippets: sync and async requests and streams on lfeval's own client, each
//! recorded as call evidence (credentials masked, secrets never written), timed (connect, first
//! byte, first token), `Retry-After` pausing the model, `max_response_bytes` enforced, the call
//! timeout ending a request it is blocked in, and the same in worker processes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::isolation::{first_error, records};
use crate::server::{Request, Response, TestServer};
use crate::test::Test;

const CANARY: &str = "sk-http-canary-41d9e2";

/// A run over `words` through model `m` (snippet `snippets/m.py`, the server's URL and a
/// secret `KEY` in its environment); `model_extra` adds model-level keys.
fn http_run(server: &TestServer, model_extra: &str, timeout: u32, snippet: &str, words: &[&str]) -> Test {
    let model = format!(
        "key: m\ndisplay_name: M\ntask: chat_completion\n{model_extra}\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include \"../snippets/m.py\"\n  environment:\n    URL: \"{}\"\n    KEY: \"$HTTP_CANARY\"\n  timeout: {timeout}\n",
        server.url()
    );
    let rows: String = words
        .iter()
        .map(|w| format!("{{\"id\": \"{w}\", \"word\": \"{w}\"}}\n"))
        .collect();
    Test::new()
        .env("HTTP_CANARY", CANARY)
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
            "evaluation:\n  key: http\n  display_name: HTTP\n  cache_policy: no-cache\n  task_specifications:\n    - {key: s, task_key: t, model_key: m, dataset_key: words}\n",
        )
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"])
}

const SSE: &str = "event: delta\ndata: {\"t\": \"o\"}\n\n: a comment\ndata: {\"t\": \"k\"}\n\ndata: [DONE]\n\n";

/// `/chat` answers the word it was posted (and the headers it got), `/ping` a text, `/sse` an
/// event stream, `/lines` plain lines.
fn endpoint(req: &Request) -> Response {
    match req.path.as_str() {
        "/chat" => {
            let body = req.json().unwrap_or(Value::Null);
            Response::json(
                200,
                &json!({"word": body["word"], "auth": req.header("authorization"), "query": req.query}),
            )
            .with_header("X-Echo", "yes")
        }
        "/ping" => Response::text(200, "pong"),
        "/sse" => Response {
            body: SSE.as_bytes().to_vec(),
            ..Response::empty(200)
        }
        .with_header("Content-Type", "text/event-stream"),
        "/lines" => Response::text(200, "first\r\nsecond\nthird"),
        _ => Response::text(404, "no such page"),
    }
}

fn assert_no_canary(test: &Test) {
    let mut pending = vec![test.path().join("out")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                let text = String::from_utf8_lossy(&bytes);
                assert!(!text.contains(CANARY), "`{}` holds the secret", path.display());
            }
        }
    }
}

const SYNC_SNIPPET: &str = r#"import json
from lfeval import http

def run_inference(body, environment, sample):
    word = sample["word"]
    headers = {"Authorization": "Bearer " + environment["KEY"], "X-Note": "key " + environment["KEY"]}
    r = http.post(environment["URL"] + "/chat", json={"word": word}, headers=headers, params={"q": "1"})
    r.raise_for_status()
    assert r.status_code == 200 and r.is_success, r
    assert r.headers["x-echo"] == "yes" and r.headers["content-type"] == "application/json", r.headers
    got = r.json()
    assert got["query"] == "q=1" and got["auth"].startswith("Bearer "), got
    assert json.loads(r.content) == got and json.loads(r.text) == got
    assert http.get(environment["URL"] + "/ping").text == "pong"
    with http.stream("POST", environment["URL"] + "/sse", content=body) as s:
        events = [(e.event, e.data) for e in s]
    assert events == [("delta", '{"t": "o"}'), ("message", '{"t": "k"}'), ("message", "[DONE]")], events
    lines = list(http.stream("GET", environment["URL"] + "/lines"))
    assert lines == ["first", "second", "third"], lines
    missing = http.get(environment["URL"] + "/nowhere")
    try:
        missing.raise_for_status()
        raise AssertionError("no error for a 404")
    except http.HTTPStatusError as e:
        assert e.response.status_code == 404 and "'404 Not Found'" in str(e), e
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok " + got["word"]}}]})
"#;

/// What every run of the sync/async snippets must have recorded for sample `word`.
fn assert_evidence(record: &Value, streams: usize) {
    assert_eq!(record["errors"], json!([]), "{record}");
    let call = &record["calls"][0];
    let http = call["http"].as_array().expect("http evidence");
    assert_eq!(http.len(), 3 + streams, "{http:?}");
    let chat = http
        .iter()
        .find(|e| e["url"].as_str().unwrap().contains("/chat"))
        .expect("chat exchange");
    assert_eq!(chat["method"], "POST");
    assert!(chat["url"].as_str().unwrap().ends_with("/chat?q=1"), "{chat}");
    assert_eq!(chat["status"], 200);
    assert!(chat["request_body"].as_str().unwrap().contains("\"word\""), "{chat}");
    assert!(
        chat["response_body"].as_str().unwrap().contains("\"query\":\"q=1\""),
        "{chat}"
    );
    let headers: Vec<(String, String)> = serde_json::from_value(chat["request_headers"].clone()).unwrap();
    assert!(
        headers.contains(&("Authorization".to_owned(), "<masked>".to_owned())),
        "{headers:?}"
    );
    assert!(chat["first_byte_ms"].as_f64().unwrap() > 0.0, "{chat}");
    assert!(chat["network_ms"].as_f64().unwrap() >= chat["first_byte_ms"].as_f64().unwrap());
    let sse = http
        .iter()
        .find(|e| e["url"].as_str().unwrap().ends_with("/sse"))
        .expect("sse exchange");
    assert_eq!(sse["streamed"], true);
    assert!(sse["first_token_ms"].as_f64().is_some(), "{sse}");
    assert!(sse["response_body"].as_str().unwrap().contains("[DONE]"), "{sse}");
    assert_eq!(http.last().unwrap()["status"], 404);
    let timings = &call["timings"];
    assert!(timings["first_byte_ms"].as_f64().is_some(), "{timings}");
    assert!(timings["first_token_ms"].as_f64().is_some(), "{timings}");
    let network = timings["network_ms"].as_f64().expect("network_ms");
    // Summed over requests, so concurrent ones (`asyncio.gather`) may add up past the Python time.
    assert!(
        network > 0.0 && timings["python_ms"].as_f64().unwrap() > 0.0,
        "{timings}"
    );
}

#[test]
fn a_sync_snippet_posts_gets_and_streams_with_every_request_recorded_and_no_secret_written() {
    let server = TestServer::start(endpoint);
    let test = http_run(
        &server,
        "max_concurrent_requests: 2",
        10,
        SYNC_SNIPPET,
        &["alpha", "beta", "gamma"],
    );
    let out = test.success();
    assert!(out.stdout.contains("3 sample(s)"), "{}\n{}", out.stdout, out.stderr);
    let records = records(&test);
    for word in ["alpha", "beta", "gamma"] {
        assert_evidence(&records[word], 2);
    }
    // The secret went to the server, both as the bearer token and inside an innocent header...
    let sent = server.requests();
    assert!(
        sent.iter()
            .any(|r| r.request.header("x-note") == Some(&*format!("key {CANARY}")))
    );
    // ...and the first request opened a connection that later ones reused.
    let connects: f64 = records
        .values()
        .flat_map(|r| r["calls"][0]["http"].as_array().cloned().unwrap_or_default())
        .map(|e| e["connect_ms"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(connects > 0.0);
    assert!(server.connections() < sent.len(), "connections are pooled");
    // Neither made it into the run directory.
    assert_no_canary(&test);
    let samples = std::fs::read_to_string(test.path().join("out/samples.jsonl")).unwrap();
    assert!(
        samples.contains(r#"["X-Note","key $HTTP_CANARY"]"#),
        "the header value is masked"
    );
}

#[test]
fn an_async_snippet_awaits_requests_and_streams() {
    let snippet = r#"import asyncio, json
from lfeval import http

async def run_inference(body, environment, sample):
    word = sample["word"]
    headers = {"Authorization": "Bearer " + environment["KEY"]}
    r, ping = await asyncio.gather(
        http.apost(environment["URL"] + "/chat", json={"word": word}, headers=headers, params={"q": "1"}),
        http.aget(environment["URL"] + "/ping"),
    )
    got = r.raise_for_status().json()
    assert ping.text == "pong"
    async with http.astream("POST", environment["URL"] + "/sse", content=body) as s:
        assert s.status_code == 200
        events = [e.data async for e in s]
    assert events == ['{"t": "o"}', '{"t": "k"}', "[DONE]"], events
    missing = await http.arequest("GET", environment["URL"] + "/nowhere")
    assert missing.status_code == 404
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok " + got["word"]}}]})
"#;
    let server = TestServer::start(endpoint);
    let test = http_run(&server, "max_concurrent_requests: 4", 10, snippet, &["alpha", "beta"]);
    test.success();
    let records = records(&test);
    for word in ["alpha", "beta"] {
        assert_evidence(&records[word], 1);
    }
    assert_no_canary(&test);
}

#[test]
fn a_429_with_retry_after_pauses_the_model_and_is_retried() {
    let seen = AtomicUsize::new(0);
    let arrivals = Mutex::new(Vec::new());
    let server = TestServer::start(move |_req: &Request| {
        arrivals.lock().unwrap().push(Instant::now());
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Response::text(429, "slow down").with_header("Retry-After", "1")
        } else {
            Response::json(200, &json!({"ok": true}))
        }
    });
    let snippet = r#"import json
from lfeval import http

def run_inference(body, environment, sample):
    http.post(environment["URL"] + "/chat", content=body).raise_for_status()
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok " + sample["word"]}}]})
"#;
    let test = http_run(
        &server,
        "max_concurrent_requests: 1\nretry:\n  max_attempts: 3\n  initial_backoff: 0.01",
        10,
        snippet,
        &["alpha", "beta"],
    );
    let started = Instant::now();
    test.success();
    let records = records(&test);
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "one 429, then one call per sample");
    // The 429's `Retry-After: 1` held every call of the model back for a second.
    assert!(started.elapsed() >= Duration::from_secs(1));
    let retried = records
        .values()
        .find(|r| r["retries"] == 1)
        .expect("the refused sample was retried");
    let http = retried["calls"][0]["http"].as_array().unwrap();
    assert_eq!(http[0]["status"], 429);
    assert_eq!(http[0]["retry_after_ms"], 1000.0);
    assert_eq!(http[1]["status"], 200);
    let attempts = retried["calls"][0]["attempts"].as_array().unwrap();
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("'429 Too Many Requests'"),
        "{attempts:?}"
    );
}

#[test]
fn max_response_bytes_and_the_call_timeout_end_requests() {
    let server = TestServer::start(|req: &Request| match req.path.as_str() {
        "/big" => Response::text(200, &"x".repeat(5000)),
        _ => Response::text(200, "late").with_delay(Duration::from_secs(30)),
    });
    let snippet = r#"import json
from lfeval import http

def run_inference(body, environment, sample):
    word = sample["word"]
    if word == "big":
        http.get(environment["URL"] + "/big")
    elif word == "bigstream":
        for line in http.stream("GET", environment["URL"] + "/big"):
            pass
    elif word == "slow":
        http.get(environment["URL"] + "/slow")
    elif word == "own":
        http.get(environment["URL"] + "/slow", timeout=0.2)
    return "unreachable"
"#;
    let test = http_run(
        &server,
        "max_concurrent_requests: 4\nmax_response_bytes: 2000\nretry:\n  max_attempts: 1",
        1,
        snippet,
        &["big", "bigstream", "slow", "own"],
    );
    let started = Instant::now();
    test.failure();
    let wall = started.elapsed();
    let records = records(&test);
    for word in ["big", "bigstream"] {
        let (class, message) = first_error(&records[word]);
        assert_eq!(class, "snippet_error", "{word}: {message}");
        assert!(message.contains("ResponseTooLarge"), "{word}: {message}");
        assert!(message.contains("response too large"), "{word}: {message}");
    }
    // Blocked in a request, the snippet still ends at its timeout, as a timeout.
    let (class, message) = first_error(&records["slow"]);
    assert_eq!(class, "timeout", "{message}");
    assert!(
        message.starts_with("model `m`: run_inference timed out after 1s"),
        "{message}"
    );
    let http = records["slow"]["calls"][0]["http"].as_array().unwrap();
    assert_eq!(http[0]["error"], "the snippet call timed out", "{http:?}");
    // The request's own timeout is the snippet's to handle (here: not handled).
    let (class, message) = first_error(&records["own"]);
    assert!(message.contains("TimeoutException"), "{class}: {message}");
    assert!(
        wall < Duration::from_secs(20),
        "the 30 s answers were not waited for: {wall:?}"
    );
}

#[test]
fn worker_processes_use_lfeval_http_and_their_evidence_reaches_the_record() {
    let server = TestServer::start(endpoint);
    let test = http_run(
        &server,
        "isolation: process\nmax_concurrent_requests: 2",
        10,
        SYNC_SNIPPET,
        &["alpha", "beta"],
    );
    test.success();
    let records = records(&test);
    for word in ["alpha", "beta"] {
        assert_evidence(&records[word], 2);
    }
    assert_no_canary(&test);
}

#[test]
fn a_timeout_ends_an_async_request_and_a_worker_request() {
    let server = TestServer::start(|_req: &Request| Response::text(200, "late").with_delay(Duration::from_secs(30)));
    let async_snippet = r#"from lfeval import http

async def run_inference(body, environment):
    await http.aget(environment["URL"] + "/slow")
    return "unreachable"
"#;
    for (extra, snippet) in [("", async_snippet), ("isolation: process\n", SYNC_SNIPPET)] {
        let test = http_run(
            &server,
            &format!("{extra}retry:\n  max_attempts: 1"),
            1,
            snippet,
            &["alpha"],
        );
        let started = Instant::now();
        test.failure();
        assert!(started.elapsed() < Duration::from_secs(15), "{extra}");
        let records = records(&test);
        let (class, message) = first_error(&records["alpha"]);
        assert_eq!(class, "timeout", "{extra}: {message}");
    }
}

/// `snippets/lfeval_http.py`, the README's example, against an OpenAI-style endpoint, plain and
/// streamed.
#[test]
fn the_example_snippet_answers_plain_and_streamed() {
    let server = TestServer::start(|req: &Request| {
        let body = req.json().unwrap_or(Value::Null);
        let word = body["messages"][0]["content"].as_str().unwrap_or_default().to_owned();
        if body["stream"] == true {
            let mut sse = String::new();
            for part in ["ok ", &word] {
                sse.push_str(&format!(
                    "data: {}\n\n",
                    json!({"choices": [{"delta": {"content": part}}]})
                ));
            }
            sse.push_str("data: [DONE]\n\n");
            return Response {
                body: sse.into_bytes(),
                ..Response::empty(200)
            }
            .with_header("Content-Type", "text/event-stream");
        }
        Response::json(
            200,
            &json!({"choices": [{"message": {"role": "assistant", "content": format!("ok {word}")}}]}),
        )
    });
    for stream in [false, true] {
        let model = format!(
            "key: m\ndisplay_name: M\ntask: chat_completion\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include \"../snippets/lfeval_http.py\"\n  environment:\n    MODEL_ENDPOINT_URL: \"{}\"\n    MODEL_ENDPOINT_API_KEY: \"$HTTP_CANARY\"\n    MODEL_KEY: echo\n    STREAM: {stream}\n  timeout: 10\n",
            server.url_for("/v1/chat/completions")
        );
        let test = http_run(&server, "", 10, "", &["alpha"])
            .copy_from_repo("snippets/lfeval_http.py")
            .write("models/m.yaml", &model);
        test.success();
        let record = &records(&test)["alpha"];
        assert_eq!(record["scores"]["exact"]["values"]["is_correct"], 1.0, "{record}");
        let timings = &record["calls"][0]["timings"];
        assert_eq!(timings["first_token_ms"].is_number(), stream, "{timings}");
        assert_no_canary(&test);
    }
}

#[test]
fn a_scorer_snippet_has_an_lfeval_http_of_its_own_not_a_models() {
    let server = TestServer::start(|req: &Request| match req.path.as_str() {
        "/big" => Response::text(200, &"x".repeat(5000)),
        _ => Response::text(404, "no such page"),
    });
    // The model allows 2,000-byte responses; the scorer's request is held to no model's limit.
    let snippet = r#"import json

def run_inference(body, environment, sample):
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok " + sample["word"]}}]})
"#;
    let test = http_run(&server, "max_response_bytes: 2000", 5, snippet, &["a", "b"]).write(
        "tasks/t.yaml",
        &format!(
            r#"key: t
display_name: T
definition:
  type: benchmark_task
  dataset: {{key: words}}
  solver:
    type: single_turn_solver
    input_builder:
      type: chat_completion
      input_messages:
        - role: user
          content: "{{{{ sample.word }}}}"
  scorers:
    - type: python
      key: fetched
      compute_scores_snippet: |
        from lfeval import http
        def compute_scores(sample, solver_output):
            return {{"bytes": len(http.get("{}/big").content)}}
      metrics:
        - {{type: mean, field: bytes}}
"#,
            server.url()
        ),
    );
    let out = test.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let records = records(&test);
    for word in ["a", "b"] {
        assert_eq!(records[word]["errors"], json!([]), "{word}");
        assert_eq!(records[word]["scores"]["fetched"]["values"]["bytes"], 5000, "{word}");
    }
    assert_eq!(server.count(), 2, "one request per sample, from the scorer");
}
