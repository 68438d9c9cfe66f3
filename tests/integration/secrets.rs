//! The local secret store (`lfeval secret set|list|delete`) and secret hygiene: the store file is
//! private (mode 0600), listings show names only, and a secret's value never reaches lfeval's
//! output, whichever way it travels (bearer token, custom header, snippet environment, inline
//! `secrets:` map, credential `$VAR`) and even when the endpoint or the snippet echoes it back.

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use crate::lfeval_snapshot;
use crate::server::{Request, Response, TestServer, openai_chat_with_key};
use crate::test::{Output, Test};

/// Planted values; none of them may ever appear in what lfeval prints.
const CANARY: &str = "sk-canary-8c1f7e0d";
const INLINE_CANARY: &str = "sk-inline-5b2a9e41";
const ENV_CANARY: &str = "sk-env-3f9d1c77";

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).expect("store exists").permissions().mode() & 0o777
}

fn store(t: &Test) -> Value {
    serde_json::from_str(&std::fs::read_to_string(t.secrets_file()).expect("read store")).expect("store is JSON")
}

fn set(t: Test, name: &str, value: &str) -> Test {
    let t = t.args(["secret", "set", name]).stdin(&format!("{value}\n"));
    let out = t.run();
    assert_eq!(out.code, 0, "secret set {name}: {}", out.stderr);
    t
}

#[test]
fn set_creates_a_private_store_and_never_echoes_the_value() {
    let t = Test::new()
        .args(["secret", "set", "OPENAI_API_KEY"])
        .stdin(&format!("{CANARY}\n"));
    assert!(!t.secrets_file().exists());
    let out = t.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains(CANARY) && !out.stderr.contains(CANARY));
    assert_eq!(mode(&t.secrets_file()), 0o600);
    // The trailing newline of the piped line is not part of the value.
    assert_eq!(store(&t), json!({"OPENAI_API_KEY": CANARY}));
    insta::assert_snapshot!(t.render(&out));
}

#[test]
fn set_tightens_an_existing_store_and_keeps_other_secrets() {
    let t = Test::new().write(".test-home/secrets.json", r#"{"EXISTING": "value-1"}"#);
    std::fs::set_permissions(t.secrets_file(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let t = set(t, "NEW", "value-2");
    assert_eq!(mode(&t.secrets_file()), 0o600);
    assert_eq!(store(&t), json!({"EXISTING": "value-1", "NEW": "value-2"}));
    // Setting it again replaces the value and says so.
    let t = t.args(["secret", "set", "NEW"]).stdin("value-3\n");
    let out = t.run();
    insta::assert_snapshot!(t.render(&out));
    assert_eq!(store(&t)["NEW"], "value-3");
    assert_eq!(mode(&t.secrets_file()), 0o600);
}

#[test]
fn list_shows_names_only() {
    let t = set(set(Test::new(), "ZED_TOKEN", CANARY), "ALPHA-KEY", INLINE_CANARY);
    let t = t.args(["secret", "list"]);
    let out = t.run();
    assert!(!out.stdout.contains(CANARY) && !out.stdout.contains(INLINE_CANARY));
    lfeval_snapshot!("list", t);
    let t = t.args(["secret", "list", "--json"]);
    let out = t.run();
    assert!(!out.stdout.contains(CANARY) && !out.stdout.contains(INLINE_CANARY));
    let listed: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(listed["secrets"], json!(["ALPHA-KEY", "ZED_TOKEN"]));
    lfeval_snapshot!("list_json", t);
}

#[test]
fn list_of_an_empty_store() {
    lfeval_snapshot!("empty_list", Test::new().args(["secret", "list"]));
    lfeval_snapshot!("empty_list_json", Test::new().args(["secret", "list", "--json"]));
}

#[test]
fn delete_removes_one_secret() {
    let t = set(set(Test::new(), "KEEP", "value-keep"), "DROP", "value-drop");
    let t = t.args(["secret", "delete", "DROP"]);
    lfeval_snapshot!("delete", t);
    assert_eq!(store(&t), json!({"KEEP": "value-keep"}));
    assert_eq!(mode(&t.secrets_file()), 0o600);
    let t = t.args(["secret", "delete", "DROP"]);
    lfeval_snapshot!("delete_again", t);
    assert_eq!(store(&t), json!({"KEEP": "value-keep"}));
}

#[test]
fn bad_names_are_rejected_before_anything_is_stored() {
    for (i, name) in ["bad name", "a.b", "path/like", "", "ümlaut"].iter().enumerate() {
        // No stdin: the name is checked before any value is read (and a value piped to a
        // process that already exited would only race with it).
        let t = Test::new().args(["secret", "set", name]);
        let out = t.run();
        assert_eq!(out.code, 2, "`{name}` must be rejected: {}", out.stderr);
        assert!(out.stderr.contains("invalid secret name"), "{}", out.stderr);
        assert!(!t.secrets_file().exists(), "`{name}` created the store");
        if i == 0 {
            lfeval_snapshot!("bad_name", t);
        }
    }
    let t = Test::new().args(["secret", "delete", "a.b"]);
    assert_eq!(t.run().code, 2);
}

#[test]
fn an_empty_value_is_rejected() {
    let t = Test::new().args(["secret", "set", "EMPTY"]).stdin("\n");
    lfeval_snapshot!(t);
    assert!(!t.secrets_file().exists());
}

#[test]
fn unknown_secret_lists_where_it_looked() {
    let t = set(Test::new(), "OPENAI_KEY", CANARY)
        .write(
            "models/m.yaml",
            "key: m\ndisplay_name: M\nsecrets:\n  TEAM_TOKEN: team-value\nconfig:\n  url: http://localhost:8000/v1/chat/completions\n  api_key: << secrets.OPENAI_API_KEY >>\n",
        )
        .args(["model", "test", "m"]);
    let out = t.run();
    assert_eq!(out.code, 2, "a missing secret is a configuration error");
    assert!(out.stderr.contains("unknown secret `OPENAI_API_KEY`"), "{}", out.stderr);
    assert!(out.stderr.contains(".test-home/secrets.json"), "{}", out.stderr);
    assert_no_canary("model test m", &out);
    insta::assert_snapshot!(t.render(&out));
}

/// The endpoint requires the canary as bearer token and echoes what it received, in the reply
/// text and in a response header, so lfeval gets the value back from the wire.
fn echoing_endpoint() -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    let inner = openai_chat_with_key(CANARY);
    move |req: &Request| {
        let resp = inner(req);
        if resp.status != 200 {
            return resp;
        }
        let mut body = resp.json_body().expect("json reply");
        let headers = format!(
            "auth={} canary={} inline={} env={}",
            req.header("authorization").unwrap_or(""),
            req.header("x-canary").unwrap_or(""),
            req.header("x-inline").unwrap_or(""),
            req.header("x-env").unwrap_or("")
        );
        body["choices"][0]["message"]["content"] = json!(headers);
        Response::json(200, &body).with_header("X-Echo", req.header("x-canary").unwrap_or(""))
    }
}

const SNIPPET: &str = r#"import json


def run_inference(body: str, environment: dict) -> str:
    token = environment["TOKEN"]
    print(f"calling with token={token}")
    if json.loads(body)["messages"][-1]["content"] == "fail":
        raise RuntimeError(f"endpoint rejected token {token}")
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": f"echo {token}"}}]})
"#;

fn canary_project(server: &TestServer) -> Test {
    set(Test::new(), "CANARY_KEY", CANARY)
        .write(".env", &format!("INLINE_VALUE={INLINE_CANARY}\nENV_KEY={ENV_CANARY}\n"))
        .write(
            "models/http.yaml",
            &format!(
                "key: canary-http\ndisplay_name: Canary over HTTP\nsecrets:\n  INLINE_TOKEN: $INLINE_VALUE\nconfig:\n  url: {}\n  api_key: << secrets.CANARY_KEY >>\n  model_key: gpt-test\n  adapter:\n    key: latticeflow$openai_chat_completion\n  custom_headers:\n    X-Canary: \"<< secrets.CANARY_KEY >>\"\n    X-Inline: << secrets.INLINE_TOKEN >>\n    X-Env: $ENV_KEY\n",
                server.url_for("/v1/chat/completions")
            ),
        )
        .write(
            "models/snippet.yaml",
            "key: canary-snippet\ndisplay_name: Canary in a snippet environment\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include ../snippets/canary.py\n  environment:\n    TOKEN: << secrets.CANARY_KEY >>\n  timeout: 10\n",
        )
        .write("snippets/canary.py", SNIPPET)
        .write("fail.json", r#"{"messages": [{"role": "user", "content": "fail"}]}"#)
        .write("body.json", r#"{"choices": [{"message": {"role": "assistant", "content": "ok"}}]}"#)
}

fn assert_no_canary(what: &str, out: &Output) {
    for canary in [CANARY, INLINE_CANARY, ENV_CANARY] {
        assert!(
            !out.stdout.contains(canary) && !out.stderr.contains(canary),
            "`{what}` leaked `{canary}`:\n--- stdout\n{}\n--- stderr\n{}",
            out.stdout,
            out.stderr
        );
    }
}

#[test]
fn secret_values_never_reach_the_output() {
    let server = TestServer::start(echoing_endpoint());
    let mut t = canary_project(&server);
    let commands: &[&[&str]] = &[
        &["model", "list"],
        &["model", "list", "--json"],
        &["validate"],
        &["adapter", "list", "--json"],
        &[
            "adapter",
            "test",
            "latticeflow$openai_chat_completion",
            "--model-key",
            "gpt-test",
            "--body",
            "body.json",
        ],
        &["model", "test", "canary-http"],
        &["model", "test", "canary-http", "--json"],
        &["model", "test", "canary-http", "--verbose"],
        &["model", "test", "canary-snippet"],
        &["model", "test", "canary-snippet", "--json"],
        &["model", "test", "canary-snippet", "--model-input", "fail.json"],
        &[
            "model",
            "test",
            "canary-snippet",
            "--model-input",
            "fail.json",
            "--verbose",
        ],
        &[
            "model",
            "test",
            "canary-snippet",
            "--model-input",
            "fail.json",
            "--json",
        ],
    ];
    let mut http_test = String::new();
    let mut snippet_test = String::new();
    let mut snippet_failure = String::new();
    for command in commands {
        t = t.args(command.iter().copied());
        let out = t.run();
        let expect_failure = command.contains(&"fail.json");
        assert_eq!(
            out.code,
            if expect_failure { 1 } else { 0 },
            "`{}`:\n{}\n{}",
            command.join(" "),
            out.stdout,
            out.stderr
        );
        assert_no_canary(&command.join(" "), &out);
        match *command {
            ["model", "test", "canary-http"] => http_test = t.filtered(&format!("{}\n{}", out.stdout, out.stderr)),
            ["model", "test", "canary-snippet"] => {
                snippet_test = t.filtered(&format!("{}\n{}", out.stdout, out.stderr))
            }
            ["model", "test", "canary-snippet", "--model-input", "fail.json"] => {
                snippet_failure = t.filtered(&format!("{}\n{}", out.stdout, out.stderr));
            }
            _ => {}
        }
    }

    // The endpoint did receive the real values...
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "one request per `model test canary-http`");
    for r in &requests {
        assert_eq!(
            r.request.header("authorization"),
            Some(format!("Bearer {CANARY}").as_str())
        );
        assert_eq!(r.request.header("x-canary"), Some(CANARY));
        assert_eq!(r.request.header("x-inline"), Some(INLINE_CANARY));
        assert_eq!(r.request.header("x-env"), Some(ENV_CANARY));
    }
    // ...and what it echoed back is shown masked (by the reference that first resolved the
    // value), not dropped.
    assert!(
        http_test.contains(
            "auth=Bearer <<secrets.CANARY_KEY>> canary=<<secrets.CANARY_KEY>> inline=$INLINE_VALUE env=$ENV_KEY"
        ),
        "{http_test}"
    );
    assert!(http_test.contains("<<secrets.CANARY_KEY>>"), "{http_test}");
    assert!(
        snippet_test.contains("calling with token=<<secrets.CANARY_KEY>>"),
        "{snippet_test}"
    );
    assert!(snippet_test.contains("echo <<secrets.CANARY_KEY>>"), "{snippet_test}");
    assert!(
        snippet_failure.contains("endpoint rejected token <<secrets.CANARY_KEY>>"),
        "{snippet_failure}"
    );
    assert!(
        snippet_failure.contains("captured output:\ncalling with token=<<secrets.CANARY_KEY>>"),
        "{snippet_failure}"
    );
    // What the failed snippet printed is shown with the error; step 3 must not deny it.
    assert!(
        !snippet_failure.contains("the snippet printed nothing"),
        "{snippet_failure}"
    );
}

/// Nothing lfeval writes into the project (caches, results) may hold a secret either.
#[test]
fn model_test_leaves_no_secret_in_project_files() {
    let server = TestServer::start(echoing_endpoint());
    let t = canary_project(&server).args(["model", "test", "canary-http"]);
    assert_eq!(t.run().code, 0);
    let mut pending = vec![t.path().to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.ends_with(".test-home") || path.ends_with(".env") {
                continue; // the store and the `.env` are where the values are supposed to live
            }
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                for canary in [CANARY, INLINE_CANARY, ENV_CANARY] {
                    assert!(!text.contains(canary), "`{}` holds `{canary}`", path.display());
                }
            }
        }
    }
}
