//! Adapters: `adapter list` (built-ins next to project adapters), `adapter test` of every
//! built-in (identity, OpenAI chat completion with its kwargs-free request body, usage mapping,
//! refusals and non-2xx answers, OpenAI embeddings), the legacy identity keys, and a user adapter
//! for a non-OpenAI wire format, rendered offline and then driven against a server that speaks
//! only that format.

use serde_json::{Value, json};

use crate::lfeval_snapshot;
use crate::server::{TestServer, custom_wire};
use crate::test::Test;

const OPENAI: &str = "latticeflow$openai_chat_completion";
const IDENTITY: &str = "latticeflow$identity";

/// A user adapter for `server::custom_wire` (`POST /generate`): system prompt and turns in,
/// `result.completion.text` and `result.tokens` out; any error status becomes `{"error": ...}`.
const WIRE_ADAPTER: &str = r#"key: custom-wire
display_name: Custom wire format
description: Speaks the `/generate` protocol (prompt.system, prompt.turns, params).
process_input:
  language: jinja
  source_code: |
    {%- set system = input.messages | selectattr("role", "equalto", "system") | map(attribute="content") | list -%}
    {%- set turns = [] -%}
    {%- for m in input.messages if m.role != "system" -%}
      {%- do turns.append({"speaker": "human" if m.role == "user" else "bot", "text": m.content}) -%}
    {%- endfor -%}
    {{ {"prompt": {"system": system | join("\n") if system else none, "turns": turns}, "params": kwargs} | tojson }}
process_output:
  language: jinja
  source_code: |
    {%- set response = body | fromjson -%}
    {%- if status_code != 200 -%}
    {{ {"error": "the endpoint answered " ~ status_code ~ ": " ~ response.reason} | tojson }}
    {%- else -%}
    {{ {
         "choices": [{"message": {"role": "assistant", "content": response.result.completion.text}}],
         "usage": {"num_prompt_tokens": response.result.tokens["in"], "num_completion_tokens": response.result.tokens.out}
       } | tojson }}
    {%- endif -%}
"#;

const CONVERSATION: &str = r#"{"messages": [
  {"role": "system", "content": "Be brief."},
  {"role": "user", "content": "What is two plus two?"},
  {"role": "assistant", "content": "Four."},
  {"role": "user", "content": "And times three?"}
]}"#;

/// Runs `adapter test ... --json` and returns the report.
fn report(t: &Test) -> Value {
    let out = t.run();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", out.stdout, out.stderr))
}

fn openai_response(message: Value, usage: Option<Value>) -> String {
    let mut body = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]
    });
    if let Some(usage) = usage {
        body["usage"] = usage;
    }
    body.to_string()
}

#[test]
fn list_shows_builtins_and_project_adapters() {
    let t = Test::new()
        .write("adapters/custom-wire.yaml", WIRE_ADAPTER)
        .write(
            "adapters/broken.yaml",
            "key: broken\ndisplay_name: Broken\nprocess_input: {language: python, source_code: x}\n",
        )
        .args(["adapter", "list"]);
    lfeval_snapshot!("list", t);
    let t = t.args(["adapter", "list", "--json"]);
    lfeval_snapshot!("list_json", t);
    let listed = report(&t);
    let keys: Vec<&str> = listed["adapters"]
        .as_array()
        .expect("adapters")
        .iter()
        .filter_map(|a| a["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "custom-wire",
            "latticeflow$anthropic_messages",
            "latticeflow$gemini_generate_content",
            IDENTITY,
            OPENAI,
            "latticeflow$openai_embeddings",
            "latticeflow$openai_responses"
        ]
    );
}

#[test]
fn identity_passes_input_and_canonical_output_through() {
    let canonical = r#"{"choices": [{"message": {"role": "assistant", "content": "hi"}}], "usage": {"num_prompt_tokens": 2, "num_completion_tokens": 1}}"#;
    let t = Test::new()
        .write("conversation.json", CONVERSATION)
        .write("body.json", canonical)
        .args([
            "adapter",
            "test",
            IDENTITY,
            "--input",
            "conversation.json",
            "--body",
            "body.json",
        ]);
    lfeval_snapshot!(t);
    let t = t.args([
        "adapter",
        "test",
        IDENTITY,
        "--input",
        "conversation.json",
        "--body",
        "body.json",
        "--json",
    ]);
    let r = report(&t);
    assert_eq!(r["ok"], true);
    let sent: Value = serde_json::from_str(r["request_body"].as_str().expect("request body")).expect("json");
    let given: Value = serde_json::from_str(CONVERSATION).expect("json");
    assert_eq!(sent, given);
    assert_eq!(r["output"], serde_json::from_str::<Value>(canonical).expect("json"));
}

#[test]
fn identity_turns_a_non_2xx_status_into_an_error() {
    let t = Test::new().write("body.json", r#"{"detail": "overloaded"}"#).args([
        "adapter",
        "test",
        IDENTITY,
        "--body",
        "body.json",
        "--status-code",
        "503",
    ]);
    lfeval_snapshot!(t);
}

#[test]
fn legacy_identity_keys_are_the_identity_adapter() {
    for key in [
        "latticeflow$identity_chat_completion",
        "latticeflow$identity_embeddings",
        "latticeflow$identity_custom",
    ] {
        let t = Test::new().args(["adapter", "test", key, "--json"]);
        let r = report(&t);
        assert_eq!(r["adapter"], IDENTITY, "{key}");
        assert_eq!(r["ok"], true, "{key}");
    }
}

/// The request body is exactly what `lf`'s Jinja `tojson` would send: keys sorted, `", "` and
/// `": "` separators, and with no kwargs nothing but `messages` and `model`.
#[test]
fn openai_request_body_without_kwargs() {
    let t = Test::new().args(["adapter", "test", OPENAI, "--model-key", "gpt-4o-mini", "--json"]);
    let r = report(&t);
    assert_eq!(
        r["request_body"],
        r#"{"messages": [{"content": "Hello!", "role": "user"}], "model": "gpt-4o-mini"}"#
    );
    // Without a model key there is no `model` at all, and a `response_format` is carried over.
    let input = json!({
        "messages": [{"role": "user", "content": "Give me JSON <now> & 'quickly'"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}}
    });
    let t = Test::new().write("input.json", &input.to_string()).args([
        "adapter",
        "test",
        OPENAI,
        "--input",
        "input.json",
        "--json",
    ]);
    let r = report(&t);
    assert_eq!(
        r["request_body"],
        r#"{"messages": [{"content": "Give me JSON \u003cnow\u003e \u0026 \u0027quickly\u0027", "role": "user"}], "response_format": {"json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}, "type": "json_schema"}}"#
    );
}

#[test]
fn openai_maps_usage_to_aigo_names() {
    let body = openai_response(
        json!({"role": "assistant", "content": "Hello there"}),
        Some(json!({"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13})),
    );
    let t = Test::new().write("body.json", &body).args([
        "adapter",
        "test",
        OPENAI,
        "--model-key",
        "gpt-4o-mini",
        "--body",
        "body.json",
    ]);
    lfeval_snapshot!(t);
    let t = t.args(["adapter", "test", OPENAI, "--body", "body.json", "--json"]);
    let r = report(&t);
    assert_eq!(
        r["output"]["usage"],
        json!({"num_prompt_tokens": 11, "num_completion_tokens": 2})
    );
    assert_eq!(r["output"]["choices"][0]["message"]["content"], "Hello there");
    // A response without `usage` yields an output without `usage`, not an error.
    let t = Test::new()
        .write(
            "body.json",
            &openai_response(json!({"role": "assistant", "content": "x"}), None),
        )
        .args(["adapter", "test", OPENAI, "--body", "body.json", "--json"]);
    let r = report(&t);
    assert_eq!(r["ok"], true);
    assert!(r["output"].get("usage").is_none(), "{r}");
}

#[test]
fn openai_carries_a_refusal() {
    let body = openai_response(
        json!({"role": "assistant", "content": null, "refusal": "I can't help with that"}),
        Some(json!({"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5})),
    );
    let t = Test::new()
        .write("body.json", &body)
        .args(["adapter", "test", OPENAI, "--body", "body.json"]);
    lfeval_snapshot!(t);
    let t = t.args(["adapter", "test", OPENAI, "--body", "body.json", "--json"]);
    let r = report(&t);
    assert_eq!(r["ok"], true);
    assert_eq!(
        r["output"]["choices"][0]["message"],
        json!({"role": "assistant", "content": null, "refusal": "I can't help with that"})
    );
}

#[test]
fn openai_turns_a_non_2xx_status_into_an_error() {
    let t = Test::new()
        .write(
            "body.json",
            r#"{"error": {"message": "Rate limit reached", "type": "requests"}}"#,
        )
        .args(["adapter", "test", OPENAI, "--body", "body.json", "--status-code", "429"]);
    lfeval_snapshot!(t);
    let t = t.args([
        "adapter",
        "test",
        OPENAI,
        "--body",
        "body.json",
        "--status-code",
        "429",
        "--json",
    ]);
    let r = report(&t);
    assert_eq!(r["ok"], false);
    let error = r["output"]["error"].as_str().expect("error string");
    assert!(
        error.starts_with("A non-2xx status code (429) was returned by the model: "),
        "{error}"
    );
    assert!(error.contains("Rate limit reached"), "{error}");
}

#[test]
fn openai_embeddings_orders_vectors_by_index() {
    let body = json!({
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.5, -0.25]},
            {"object": "embedding", "index": 0, "embedding": [1, 0]}
        ],
        "usage": {"prompt_tokens": 6, "total_tokens": 6}
    });
    let t = Test::new()
        .write("input.json", r#"["first", "second"]"#)
        .write("body.json", &body.to_string())
        .args([
            "adapter",
            "test",
            "latticeflow$openai_embeddings",
            "--task",
            "embeddings",
            "--input",
            "input.json",
            "--model-key",
            "text-embedding-3-small",
            "--body",
            "body.json",
            "--json",
        ]);
    let r = report(&t);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        r["request_body"],
        r#"{"input": ["first", "second"], "model": "text-embedding-3-small"}"#
    );
    assert_eq!(
        r["output"],
        json!({"embeddings": [[1, 0], [0.5, -0.25]], "usage": {"num_prompt_tokens": 6, "num_completion_tokens": 0}})
    );
}

#[test]
fn user_adapter_for_a_non_openai_wire_format_offline() {
    let body = json!({"result": {"completion": {"text": "Twelve."}, "tokens": {"in": 14, "out": 1}}, "status": "ok"});
    let t = Test::new()
        .write("adapters/custom-wire.yaml", WIRE_ADAPTER)
        .write("conversation.json", CONVERSATION)
        .write("body.json", &body.to_string())
        .args([
            "adapter",
            "test",
            "custom-wire",
            "--input",
            "conversation.json",
            "--body",
            "body.json",
        ]);
    lfeval_snapshot!(t);
    let t = t.args([
        "adapter",
        "test",
        "custom-wire",
        "--input",
        "conversation.json",
        "--json",
    ]);
    let r = report(&t);
    let sent: Value = serde_json::from_str(r["request_body"].as_str().expect("request body")).expect("json");
    assert_eq!(
        sent,
        json!({"prompt": {"system": "Be brief.", "turns": [
            {"speaker": "human", "text": "What is two plus two?"},
            {"speaker": "bot", "text": "Four."},
            {"speaker": "human", "text": "And times three?"}
        ]}, "params": {}})
    );
    // The wire format's own errors come back through the adapter's error convention.
    let t = Test::new()
        .write("adapters/custom-wire.yaml", WIRE_ADAPTER)
        .write(
            "body.json",
            r#"{"status": "error", "reason": "no `human` turn to answer"}"#,
        )
        .args([
            "adapter",
            "test",
            "custom-wire",
            "--body",
            "body.json",
            "--status-code",
            "422",
        ]);
    lfeval_snapshot!("wire_error", t);
}

/// The same adapter against a server that rejects anything but its own format (422), so a
/// passing `model test` proves the rendered body is what the wire expects.
#[test]
fn user_adapter_for_a_non_openai_wire_format_end_to_end() {
    let server = TestServer::start(custom_wire());
    let t = Test::new()
        .write("adapters/custom-wire.yaml", WIRE_ADAPTER)
        .write(
            "models/wire.yaml",
            &format!(
                "key: wire-model\ndisplay_name: Wire model\nconfig:\n  url: {}\n  adapter:\n    key: custom-wire\n",
                server.url_for("/generate")
            ),
        )
        .write("conversation.json", CONVERSATION)
        .args([
            "model",
            "test",
            "wire-model",
            "--model-input",
            "conversation.json",
            "--json",
        ]);
    let out = t.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(doc["run_inference"]["status_code"], 200);
    assert_eq!(
        doc["transform_output"]["output"],
        json!({"choices": [{"message": {"content": "echo: And times three?", "role": "assistant"}}], "usage": {"num_completion_tokens": 4, "num_prompt_tokens": 11}})
    );
    assert_eq!(server.count(), 1);
    let request = server.last_request().expect("request").request;
    assert_eq!(request.path, "/generate");
    assert_eq!(
        request.json().expect("json")["prompt"]["turns"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}
