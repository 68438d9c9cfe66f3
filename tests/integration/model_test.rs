//! `lfeval model test` end to end against real servers on 127.0.0.1: the repository's example
//! models (httpx, stdlib, async, session/poll snippets and the custom connection), a snippet
//! speaking a non-OpenAI wire format, credential masking, `--json`, and runs under an empty
//! environment.

use std::process::Command;

use serde_json::{Value, json};

use super::server::{TestServer, custom_wire, openai_chat_with_key, session_poll};
use super::test::Test;
use crate::lfeval_snapshot;

/// An API key planted in the environment; it must never be printed.
const API_KEY: &str = "sk-planted-4be1c07d9a2f";

/// A test project with one of the repository's models and its snippet, pointed at `server`.
fn repo_model(model: &str, snippet: Option<&str>, server: &TestServer) -> Test {
    let test = Test::new().copy_from_repo(&format!("models/{model}"));
    let test = match snippet {
        Some(snippet) => test.copy_from_repo(&format!("snippets/{snippet}")),
        None => test,
    };
    test.env("OPENAI_CHAT_COMPLETIONS_URL", &server.url_for("/v1/chat/completions"))
        .env("OPENAI_API_KEY", API_KEY)
}

/// Asserts the one request the OpenAI server received: the model name, the key and "Hello!".
fn assert_openai_request(server: &TestServer) {
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "one inference, one request");
    let request = &requests[0].request;
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    let body = request.json().expect("json request body");
    assert_eq!(body["model"], "gpt-4.1-nano");
    assert_eq!(body["messages"], json!([{"role": "user", "content": "Hello!"}]));
}

fn assert_no_leak(test: &Test, secret: &str) -> String {
    let out = test.run();
    assert!(!out.stdout.contains(secret), "secret leaked to stdout:\n{}", out.stdout);
    assert!(!out.stderr.contains(secret), "secret leaked to stderr:\n{}", out.stderr);
    test.filtered(&format!(
        "exit_code: {}\n----- stdout -----\n{}\n----- stderr -----\n{}",
        out.code,
        out.stdout.trim_end(),
        out.stderr.trim_end()
    ))
}

#[test]
fn httpx_snippet_against_openai_server() {
    let server = TestServer::start(openai_chat_with_key(API_KEY));
    let test = repo_model("gpt-4-1-nano-custom-inference.yaml", Some("run_inference.py"), &server).args([
        "model",
        "test",
        "gpt-4-1-nano-custom-inference",
    ]);
    insta::assert_snapshot!(assert_no_leak(&test, API_KEY));
    assert_openai_request(&server);
}

#[test]
fn httpx_snippet_reports_a_rejected_key() {
    let server = TestServer::start(openai_chat_with_key("sk-some-other-key"));
    let test = repo_model("gpt-4-1-nano-custom-inference.yaml", Some("run_inference.py"), &server).args([
        "model",
        "test",
        "gpt-4-1-nano-custom-inference",
    ]);
    let out = test.run();
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("step `run inference` failed"), "{}", out.stderr);
    assert!(out.stderr.contains("HTTPStatusError"), "{}", out.stderr);
    assert!(out.stderr.contains("401 Unauthorized"), "{}", out.stderr);
    // The snippet's own frame, not httpx internals.
    assert!(
        out.stderr.contains("(snippets/run_inference.py:20, in run_inference)"),
        "{}",
        out.stderr
    );
    // A 401 is not transient: exactly one request.
    assert_eq!(server.count(), 1);
    assert!(!out.stdout.contains(API_KEY) && !out.stderr.contains(API_KEY));
}

#[test]
fn stdlib_snippet_runs_without_a_virtualenv() {
    let server = TestServer::start(openai_chat_with_key(API_KEY));
    let test = repo_model("gpt-4-1-nano-stdlib.yaml", Some("run_inference_stdlib.py"), &server)
        // An empty VIRTUAL_ENV counts as unset.
        .env("VIRTUAL_ENV", "")
        .args(["model", "test", "gpt-4-1-nano-stdlib"]);
    let out = test.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("\"content\": \"echo: Hello!\""), "{}", out.stdout);
    assert!(
        out.stdout.contains("MODEL_ENDPOINT_API_KEY: $OPENAI_API_KEY"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(API_KEY) && !out.stderr.contains(API_KEY));
    assert_openai_request(&server);
}

#[test]
fn async_snippet_against_openai_server() {
    let server = TestServer::start(openai_chat_with_key(API_KEY));
    let test =
        repo_model("async-openai.yaml", Some("async_openai.py"), &server).args(["model", "test", "async-openai"]);
    let out = test.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("function     async def run_inference(body, environment)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\"content\": \"echo: Hello!\""), "{}", out.stdout);
    assert!(out.stdout.contains("\"num_completion_tokens\": 2"), "{}", out.stdout);
    assert!(!out.stdout.contains(API_KEY) && !out.stderr.contains(API_KEY));
    assert_openai_request(&server);
}

#[test]
fn custom_connection_against_openai_server() {
    let server = TestServer::start(openai_chat_with_key(API_KEY));
    let test = repo_model("gpt-4-1-nano-custom-connection.yaml", None, &server).args(["model", "test", "gpt-4-1-nano"]);
    insta::assert_snapshot!(assert_no_leak(&test, API_KEY));
    assert_openai_request(&server);
}

#[test]
fn session_poll_snippet() {
    let server = TestServer::start(session_poll());
    let test = Test::new()
        .copy_from_repo("models/session-poll.yaml")
        .copy_from_repo("snippets/session_poll.py")
        .env("SESSION_API_URL", &server.url())
        .args(["model", "test", "session-poll"]);
    lfeval_snapshot!(test);
    let calls: Vec<(String, String)> = server
        .requests()
        .iter()
        .map(|r| (r.request.method.clone(), r.request.path.clone()))
        .collect();
    let expected = [
        ("POST", "/sessions"),
        ("POST", "/sessions/s-1/messages"),
        ("GET", "/jobs/j-1"),
        ("GET", "/jobs/j-1"),
        ("GET", "/jobs/j-1"),
    ];
    assert_eq!(calls, expected.map(|(m, p)| (m.to_owned(), p.to_owned())));
    assert_eq!(server.requests()[1].request.json(), Some(json!({"text": "Hello!"})));
}

#[test]
fn session_poll_snippet_continues_a_session() {
    let server = TestServer::start(session_poll());
    let input = json!({"messages": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "echo: first", "session_id": "s-1"},
        {"role": "user", "content": "second"}
    ]});
    let test = Test::new()
        .copy_from_repo("models/session-poll.yaml")
        .copy_from_repo("snippets/session_poll.py")
        .write("input.json", &input.to_string())
        .env("SESSION_API_URL", &server.url());
    // The first call opens session s-1; the second one carries it on the assistant message.
    let first = test.args(["model", "test", "session-poll", "--json"]);
    let out = first.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(
        doc["transform_output"]["output"]["choices"][0]["message"]["session_id"],
        "s-1"
    );
    let second = first.args(["model", "test", "session-poll", "--json", "--model-input", "input.json"]);
    let out = second.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(
        doc["transform_output"]["output"]["choices"][0]["message"],
        json!({"role": "assistant", "content": "echo: second", "session_id": "s-1"})
    );
    assert_eq!(server.count_path("/sessions"), 1, "no second session");
    assert_eq!(server.count_path("/sessions/s-1/messages"), 2);
}

#[test]
fn session_poll_snippet_reports_an_unknown_session() {
    let server = TestServer::start(session_poll());
    let input = json!({"messages": [
        {"role": "assistant", "content": "earlier", "session_id": "s-404"},
        {"role": "user", "content": "again"}
    ]});
    let test = Test::new()
        .copy_from_repo("models/session-poll.yaml")
        .copy_from_repo("snippets/session_poll.py")
        .write("input.json", &input.to_string())
        .env("SESSION_API_URL", &server.url())
        .args(["model", "test", "session-poll", "--model-input", "input.json"]);
    let out = test.run();
    assert_eq!(out.code, 1);
    let stderr = test.filtered(&out.stderr);
    assert!(
        // Every `$VAR` in `environment` is masked, the endpoint's URL too.
        stderr.contains(
            "HTTP Error 404 from POST $SESSION_API_URL/sessions/s-404/messages: {\"error\":\"unknown session `s-404`\"}"
        ),
        "{stderr}"
    );
    // A 404 is not retried.
    assert_eq!(server.count(), 1);
}

/// A snippet for the non-OpenAI `POST /generate` format, written the way a user would.
const WIRE_SNIPPET: &str = r#"import json
import urllib.request


def run_inference(body: str, environment: dict) -> str:
    messages = json.loads(body)["messages"]
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    turns = [
        {"speaker": "human" if m["role"] == "user" else "bot", "text": m["content"]}
        for m in messages
        if m["role"] != "system"
    ]
    payload = {"prompt": {"system": system, "turns": turns}, "params": {"temperature": environment["TEMPERATURE"]}}
    request = urllib.request.Request(
        environment["URL"] + "/generate",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        result = json.loads(response.read())["result"]
    print("tokens:", result["tokens"])
    return json.dumps(
        {
            "choices": [{"message": {"role": "assistant", "content": result["completion"]["text"]}}],
            "usage": {"num_prompt_tokens": result["tokens"]["in"], "num_completion_tokens": result["tokens"]["out"]},
        }
    )
"#;

#[test]
fn stdlib_snippet_against_a_non_openai_wire_format() {
    let server = TestServer::start(custom_wire());
    let model = r#"key: wire
display_name: Wire
task: chat_completion
config:
  connection_type: custom_inference
  run_inference_snippet: !include "../snippets/wire.py"
  environment:
    URL: $WIRE_URL
    TEMPERATURE: 0.5
  timeout: 5
"#;
    let input = json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Say something short"}
    ]});
    let test = Test::new()
        .write("models/wire.yaml", model)
        .write("snippets/wire.py", WIRE_SNIPPET)
        .write("input.json", &input.to_string())
        .env("WIRE_URL", &server.url())
        .args(["model", "test", "wire", "--model-input", "input.json"]);
    lfeval_snapshot!(test);
    let request = server.last_request().expect("a request").request;
    assert_eq!(
        request.json(),
        Some(json!({
            "prompt": {"system": "Be brief.", "turns": [
                {"speaker": "human", "text": "Hi there"},
                {"speaker": "bot", "text": "Hello."},
                {"speaker": "human", "text": "Say something short"}
            ]},
            "params": {"temperature": 0.5}
        }))
    );
}

#[test]
fn json_output_of_a_passing_test() {
    let server = TestServer::start(openai_chat_with_key(API_KEY));
    let test = repo_model("gpt-4-1-nano-custom-inference.yaml", Some("run_inference.py"), &server).args([
        "model",
        "test",
        "gpt-4-1-nano-custom-inference",
        "--json",
    ]);
    let out = test.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stderr, "", "--json keeps stderr quiet on success");
    assert!(!out.stdout.contains(API_KEY));
    let doc: Value = serde_json::from_str(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(doc["ok"], true);
    assert!(doc.get("failed_step").is_none());
    let connection = &doc["connection"];
    assert_eq!(connection["key"], "gpt-4-1-nano-custom-inference");
    assert_eq!(connection["connection_type"], "custom_inference");
    assert_eq!(connection["snippet"], "snippets/run_inference.py");
    assert_eq!(connection["timeout_seconds"], 15.0);
    assert_eq!(connection["rate_limit"], 60);
    assert_eq!(connection["function"], "def run_inference(body, environment)");
    assert_eq!(connection["environment"]["MODEL_ENDPOINT_API_KEY"], "$OPENAI_API_KEY");
    assert_eq!(connection["environment"]["MODEL_KEY"], "gpt-4.1-nano");
    assert_eq!(
        connection["environment"]["MODEL_ENDPOINT_URL"],
        "$OPENAI_CHAT_COMPLETIONS_URL"
    );
    let request_body: Value =
        serde_json::from_str(doc["transform_input"]["request_body"].as_str().expect("request body"))
            .expect("json body");
    assert_eq!(
        request_body,
        json!({"messages": [{"role": "user", "content": "Hello!"}]})
    );
    let attempts = doc["run_inference"]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["error"], Value::Null);
    assert_eq!(doc["run_inference"]["captured_output"], "");
    let raw: Value = serde_json::from_str(doc["transform_output"]["raw_output"].as_str().expect("raw output"))
        .expect("json raw output");
    assert_eq!(raw["model"], "gpt-4.1-nano");
    assert_eq!(
        doc["transform_output"]["output"],
        json!({"choices": [{"message": {"role": "assistant", "content": "echo: Hello!", "refusal": null}}], "usage": {"num_prompt_tokens": 1, "num_completion_tokens": 2}})
    );
    assert!(doc["timings"]["total_ms"].as_f64().expect("total_ms") > 0.0);
}

#[test]
fn json_output_of_a_failing_test() {
    let server = TestServer::start(openai_chat_with_key("sk-some-other-key"));
    let test = repo_model("gpt-4-1-nano-custom-inference.yaml", Some("run_inference.py"), &server).args([
        "model",
        "test",
        "gpt-4-1-nano-custom-inference",
        "--json",
    ]);
    let out = test.run();
    assert_eq!(out.code, 1);
    let doc: Value = serde_json::from_str(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["failed_step"], "run_inference");
    let error = doc["error"].as_str().expect("error");
    assert!(error.starts_with("model `gpt-4-1-nano-custom-inference`: run_inference raised `httpx.HTTPStatusError: Client error '401 Unauthorized'"), "{error}");
    assert!(
        doc["error_detail"]
            .as_str()
            .expect("traceback")
            .contains("Traceback (most recent call last)")
    );
    assert!(doc.get("transform_output").is_none(), "stops at the failed step");
    assert!(out.stderr.contains("step `run inference` failed"), "{}", out.stderr);
}

/// A snippet that prints its environment and answers with a credential in the text.
const LEAKY_SNIPPET: &str = r#"import json


def run_inference(body: str, environment: dict) -> str:
    print("environment:", environment)
    reply = "token=" + environment["API_TOKEN"] + " key=" + environment["SERVICE_KEY"]
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]})
"#;

#[test]
fn secrets_are_masked_everywhere() {
    let token = "tok-planted-93c1e0b7";
    let model = r#"key: leaky
display_name: Leaky
task: chat_completion
config:
  connection_type: custom_inference
  run_inference_snippet: !include "../snippets/leaky.py"
  environment:
    API_TOKEN: "<< secrets.API_TOKEN >>"
    SERVICE_KEY: $SERVICE_KEY
    REGION: eu-west-1
  timeout: 5
"#;
    let test = Test::new()
        .write("models/leaky.yaml", model)
        .write("snippets/leaky.py", LEAKY_SNIPPET)
        .write(".test-home/secrets.json", &json!({"API_TOKEN": token}).to_string())
        .env("SERVICE_KEY", API_KEY)
        .args(["model", "test", "leaky"]);
    let snapshot = assert_no_leak(&test, token);
    assert!(!snapshot.contains(API_KEY), "{snapshot}");
    insta::assert_snapshot!(snapshot);
    let json = test.args(["model", "test", "leaky", "--json"]).run();
    assert_eq!(json.code, 0, "{}", json.stderr);
    for leaked in [token, API_KEY] {
        assert!(!json.stdout.contains(leaked), "{}", json.stdout);
    }
    let doc: Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(
        doc["transform_output"]["output"]["choices"][0]["message"]["content"],
        "token=<<secrets.API_TOKEN>> key=$SERVICE_KEY"
    );
}

#[test]
fn offline_echo_runs_in_an_empty_environment() {
    let test = Test::new()
        .copy_from_repo("models/offline-echo.yaml")
        .copy_from_repo("snippets/offline_echo.py");
    // `env -i`: no PATH, HOME, VIRTUAL_ENV or locale.
    let out = Command::new(env!("CARGO_BIN_EXE_lfeval"))
        .args(["model", "test", "offline-echo", "--json"])
        .current_dir(test.path())
        .env_clear()
        .output()
        .expect("run lfeval");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        doc["transform_output"]["output"]["choices"][0]["message"]["content"],
        "echo: Hello!"
    );
}

#[test]
fn offline_echo_without_a_virtualenv() {
    let test = Test::new()
        .copy_from_repo("models/offline-echo.yaml")
        .copy_from_repo("snippets/offline_echo.py")
        .env("VIRTUAL_ENV", "")
        .args(["model", "test", "offline-echo"]);
    lfeval_snapshot!(test);
}

/// What `sys.path` and an import look like from a snippet running in `venv`.
fn snippet_paths(test: &Test) -> (Vec<String>, String) {
    let out = test.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("--json");
    let content = report["transform_output"]["output"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let probe: Value = serde_json::from_str(content).expect("the snippet's JSON");
    let paths = probe["path"]
        .as_array()
        .expect("path")
        .iter()
        .map(|p| p.as_str().unwrap_or_default().to_owned());
    (paths.collect(), probe["probe"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn a_virtualenv_sees_what_its_own_python_would() {
    let test = Test::new()
        .write(
            "models/probe.yaml",
            "key: probe\ndisplay_name: probe\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include ../snippets/probe.py\n",
        )
        .write(
            "snippets/probe.py",
            "import json, sys\nimport lfeval_probe\n\ndef run_inference(body, environment):\n    content = json.dumps({\"path\": sys.path, \"probe\": lfeval_probe.VALUE})\n    return json.dumps({\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": content}}]})\n",
        )
        .args(["model", "test", "probe", "--json"]);
    let venv = test.path().join("venv");
    let test = test.env("VIRTUAL_ENV", &venv.display().to_string());
    let base = std::env::var("VIRTUAL_ENV").expect("VIRTUAL_ENV");
    let made = Command::new(format!("{base}/bin/python"))
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("python -m venv");
    assert!(made.success());
    let site = std::fs::read_dir(venv.join("lib"))
        .expect("venv lib")
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .expect("site-packages");
    std::fs::write(site.join("lfeval_probe.py"), "VALUE = 'from the venv'\n").expect("write");
    let venv_dir = venv.display().to_string();
    let outside = |paths: &[String]| -> Vec<String> {
        paths
            .iter()
            .filter(|p| p.ends_with("site-packages") && !p.starts_with(&venv_dir))
            .cloned()
            .collect()
    };

    // As `python -m venv` makes it: its own packages only, as its python would see them.
    let (paths, probe) = snippet_paths(&test);
    assert_eq!(probe, "from the venv");
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with(&venv_dir) && p.ends_with("site-packages")),
        "{paths:?}"
    );
    assert_eq!(
        outside(&paths),
        Vec::<String>::new(),
        "no other site-packages: {paths:?}"
    );

    // `include-system-site-packages = true`: the base interpreter's packages too, after its own.
    let cfg = venv.join("pyvenv.cfg");
    let text = std::fs::read_to_string(&cfg).expect("pyvenv.cfg");
    std::fs::write(
        &cfg,
        text.replace(
            "include-system-site-packages = false",
            "include-system-site-packages = true",
        ),
    )
    .expect("write pyvenv.cfg");
    let (paths, probe) = snippet_paths(&test);
    assert_eq!(probe, "from the venv");
    let own = paths
        .iter()
        .position(|p| p.starts_with(&venv_dir) && p.ends_with("site-packages"));
    let base_site = paths.iter().position(|p| outside(std::slice::from_ref(p)).len() == 1);
    assert!(own.is_some() && base_site.is_some() && own < base_site, "{paths:?}");
}
