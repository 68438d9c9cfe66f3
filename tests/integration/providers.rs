//! `$provider` models served locally: the key (`openai$gpt-4-1-nano`), the provider's key from
//! its usual variable or the secret store, base URLs overridable so a fake provider on
//! 127.0.0.1 stands in, the Anthropic and Gemini adapters, `model list` / `model test`, and the
//! refusal of LatticeFlow-hosted models by name.

use serde_json::{Value, json};

use crate::server::{Request, Response, TestServer};
use crate::test::Test;

const RUN: &str = r#"
models:
  - $provider: "openai/gpt-4.1-nano"
  - $provider: "anthropic/claude-3-5-haiku-latest"
  - $provider: "gemini/gemini-2.0-flash"
"#;

fn fake() -> TestServer {
    TestServer::start(|req: &Request| {
        let body = req.json().unwrap_or(Value::Null);
        if req.path.ends_with("/chat/completions") {
            let last = body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .cloned()
                .unwrap_or_default();
            return Response::json(
                200,
                &json!({"choices": [{"message": {"role": "assistant", "content": format!("openai says {}", last["content"].as_str().unwrap_or(""))}}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 3}}),
            );
        }
        if req.path.ends_with("/v1/messages") {
            return Response::json(
                200,
                &json!({"type": "message", "role": "assistant", "content": [{"type": "text", "text": "claude says hi"}],
                        "usage": {"input_tokens": 4, "output_tokens": 3}}),
            );
        }
        if req.path.contains(":generateContent") {
            return Response::json(
                200,
                &json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "gemini says hi"}]}}],
                        "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3}}),
            );
        }
        Response::json(404, &json!({"error": "no such path"}))
    })
}

fn project(server: &TestServer) -> Test {
    Test::new()
        .write("run.yaml", RUN)
        .env("OPENAI_BASE_URL", &format!("{}/v1", server.url()))
        .env("ANTHROPIC_BASE_URL", &server.url())
        .env("GEMINI_BASE_URL", &server.url())
        .env("OPENAI_API_KEY", "sk-openai-test")
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .env("GEMINI_API_KEY", "gm-test")
}

#[test]
fn model_list_shows_the_provider_models_of_the_run_files() {
    let server = fake();
    let out = project(&server).args(["model", "list", "--json"]).success();
    let listed: Value = serde_json::from_str(&out.stdout).expect("json");
    let keys: Vec<&str> = listed["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "anthropic$claude-3-5-haiku-latest",
            "gemini$gemini-2-0-flash",
            "openai$gpt-4-1-nano"
        ]
    );
    assert!(!out.stdout.contains("sk-openai-test"));
}

#[test]
fn model_test_calls_each_provider_through_its_own_api() {
    let server = fake();
    let mut t = project(&server);
    let out = t.set_args(["model", "test", "openai$gpt-4-1-nano", "--json"]).success();
    assert!(out.stdout.contains("openai says Hello!"), "{}", out.stdout);
    let request = server.last_request().expect("a request").request;
    assert_eq!(request.header("authorization"), Some("Bearer sk-openai-test"));
    assert_eq!(request.json().expect("json")["model"], "gpt-4.1-nano");

    t.set_args(["model", "test", "anthropic$claude-3-5-haiku-latest"])
        .success();
    let request = server.last_request().expect("a request").request;
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(request.header("authorization"), None);
    let body = request.json().expect("json");
    assert_eq!(body["model"], "claude-3-5-haiku-latest");
    assert_eq!(body["max_tokens"], 1024);

    t.set_args(["model", "test", "gemini$gemini-2-0-flash"]).success();
    let request = server.last_request().expect("a request").request;
    assert_eq!(request.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(request.header("x-goog-api-key"), Some("gm-test"));
    assert_eq!(
        request.json().expect("json")["contents"][0]["parts"][0]["text"],
        "Hello!"
    );
}

#[test]
fn a_provider_key_needs_no_run_file_and_may_come_from_the_secret_store() {
    let server = fake();
    let mut t = Test::new().env("OPENAI_BASE_URL", &format!("{}/v1", server.url()));
    // No key anywhere: the error names the variable and the secret.
    let out = t.set_args(["model", "test", "openai$gpt-4-1-mini"]).run();
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("OPENAI_API_KEY") && out.stderr.contains("lfeval secret set OPENAI_API_KEY"),
        "{}",
        out.stderr
    );
    let store = Test::new()
        .env("LFEVAL_SECRETS_FILE", &t.secrets_file().display().to_string())
        .args(["secret", "set", "OPENAI_API_KEY"])
        .stdin("sk-from-store\n");
    store.success();
    let out = t.set_args(["model", "test", "openai$gpt-4-1-mini"]).success();
    assert!(!out.stdout.contains("sk-from-store") && !out.stderr.contains("sk-from-store"));
    let request = server.last_request().expect("a request").request;
    assert_eq!(request.header("authorization"), Some("Bearer sk-from-store"));
    assert_eq!(request.json().expect("json")["model"], "gpt-4.1-mini");
}

#[test]
fn latticeflow_hosted_models_are_refused_by_name() {
    let t = Test::new()
        .write("run.yaml", "models:\n  - $provider: \"latticeflow/qwen3\"\n")
        .args(["validate", "run.yaml"]);
    let out = t.failure();
    assert!(
        out.stderr
            .contains("LatticeFlow-hosted models need the hosted AI GO! platform; lfeval does not run them"),
        "{}",
        out.stderr
    );
    let out = Test::new().args(["model", "test", "latticeflow$placeholder"]).run();
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("LatticeFlow-hosted models need the hosted AI GO! platform"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unset_variable_in_model_key_is_deferred_like_one_in_url() {
    let mut t = Test::new().write(
        "models/m.yaml",
        "key: m\ndisplay_name: M\nconfig:\n  url: http://127.0.0.1:9/v1/chat/completions\n  model_key: $MODEL_ID\n  adapter: {key: latticeflow$openai_chat_completion}\n",
    );
    let out = t.set_args(["model", "list", "--json"]).success();
    assert!(out.stdout.contains("\"key\": \"m\""), "{}", out.stdout);
    let out = t.set_args(["validate"]).success();
    assert!(out.stderr.contains("MODEL_ID"), "{}", out.stderr);
    let out = t.set_args(["model", "test", "m"]).run();
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("MODEL_ID"), "{}", out.stderr);
}
