//! The secret canary: secrets holding `& < > ' é`, long keys, planted in every way a secret
//! reaches lfeval (an inline `secrets:` map, the local store, a credential `$VAR`, a `$VAR` under
//! a plain `environment` key), echoed back by the endpoint, cut by the built-in adapter's
//! 500-character excerpt, printed and returned by a snippet in escaped and encoded forms, and
//! raised in an exception. Every byte lfeval writes (stdout and stderr of `secret set`,
//! `validate`, `model test`, `run`, `--json`; the run directories; the response cache) is
//! scanned for every form of every secret and for any 12-character prefix of one.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde_json::json;

use super::server::{Request, Response, TestServer};
use super::test::{Output, Test};

fn long(prefix: &str) -> String {
    format!("{prefix}{}", "Zq8-Wx4_Yv6".repeat(10))
}

/// The planted secrets: (name, value). The two sent as HTTP headers stay ASCII, as headers
/// must; the two a snippet gets carry non-ASCII too.
fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("INLINE", long("sk-inline-A1&b<2>c'3-")),
        ("STORE", long("store-ÅÄÖ&<>'é-key-")),
        ("API_TOKEN", long("tok-&<>'-9x8y7z6w-")),
        ("ENDPOINT", long("plain-é&'<>-endpoint-")),
    ]
}

fn json_escape(value: &str, ascii: bool, html: bool) -> String {
    let mut out = String::new();
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '<' | '>' | '&' | '\'' if html => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ascii && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Base64 characters that encode the secret alone when it starts `alignment` bytes into a
/// 3-byte group of a longer text.
fn base64_inner(value: &str, alignment: usize, url_safe: bool) -> String {
    let mut bytes = vec![b'x'; alignment];
    bytes.extend_from_slice(value.as_bytes());
    let encoded = if url_safe {
        URL_SAFE_NO_PAD.encode(&bytes)
    } else {
        STANDARD_NO_PAD.encode(&bytes)
    };
    let start = (alignment * 8).div_ceil(6);
    let end = bytes.len() * 8 / 6;
    encoded[start..end].to_owned()
}

/// Every form to look for, with what it is.
fn forms(value: &str) -> Vec<(String, String)> {
    let html = value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#x27;");
    let mut forms = vec![
        ("raw".to_owned(), value.to_owned()),
        ("json".to_owned(), json_escape(value, false, false)),
        ("json ascii".to_owned(), json_escape(value, true, false)),
        ("tojson".to_owned(), json_escape(value, true, true)),
        (
            "json in json".to_owned(),
            json_escape(&json_escape(value, true, true), false, false),
        ),
        ("html".to_owned(), html),
        ("url".to_owned(), url_encode(value)),
        ("hex".to_owned(), hex::encode(value)),
        ("HEX".to_owned(), hex::encode_upper(value)),
    ];
    for alignment in 0..3 {
        forms.push((format!("base64/{alignment}"), base64_inner(value, alignment, false)));
        forms.push((format!("base64url/{alignment}"), base64_inner(value, alignment, true)));
    }
    let prefixes: Vec<(String, String)> = forms
        .iter()
        .filter(|(what, _)| !what.starts_with("base64") && !what.starts_with("hex") && what != "HEX")
        .map(|(what, form)| {
            (
                format!("12-character prefix of the {what} form"),
                form.chars().take(12).collect(),
            )
        })
        .collect();
    forms.extend(prefixes);
    forms
}

fn find(haystack: &[u8], needle: &str) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle.as_bytes())
}

/// Fails naming the secret, the form and where it was found, with some context.
fn assert_clean(what: &str, bytes: &[u8]) {
    for (name, value) in secrets() {
        for (form_name, form) in forms(&value) {
            if let Some(at) = find(bytes, &form) {
                let from = at.saturating_sub(80);
                let to = (at + form.len() + 80).min(bytes.len());
                panic!(
                    "{what} holds the {form_name} of secret {name}:\n…{}…",
                    String::from_utf8_lossy(&bytes[from..to])
                );
            }
        }
    }
}

fn assert_output_clean(command: &str, out: &Output) {
    assert_clean(&format!("stdout of `{command}`"), out.stdout.as_bytes());
    assert_clean(&format!("stderr of `{command}`"), out.stderr.as_bytes());
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
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

/// An OpenAI-style endpoint that answers with the credentials it was sent, and for the
/// question `fail` with a 401 whose body puts the token just before the adapter's 500-character
/// cut.
fn echoing() -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    move |request: &Request| {
        let auth = request.header("authorization").unwrap_or_default().to_owned();
        let canary = request.header("x-canary").unwrap_or_default().to_owned();
        let question = request
            .json()
            .and_then(|b| b["messages"][0]["content"].as_str().map(str::to_owned));
        if question.as_deref() == Some("fail") {
            let token = auth.trim_start_matches("Bearer ");
            let body = format!("{}{token} is not valid", "x".repeat(470));
            return Response::text(401, &body);
        }
        let content = format!("you sent {auth} and {canary}");
        Response::json(
            200,
            &json!({"choices": [{"message": {"role": "assistant", "content": content}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
        )
    }
}

const SNIPPET: &str = r#"import base64, html, json, urllib.parse

def run_inference(body, environment, sample):
    key, endpoint = environment["KEY"], environment["ENDPOINT"]
    for value in (key, endpoint):
        print("raw", value)
        print("repr", repr(environment))
        print("json", json.dumps({"v": value}))
        print("html", html.escape(value))
        print("url", urllib.parse.quote(value, safe=""))
        print("hex", value.encode().hex())
        for pad in ("", "a", "ab"):
            print("b64", base64.b64encode((pad + value).encode()).decode())
            print("b64url", base64.urlsafe_b64encode((pad + value).encode()).decode())
        print("cut", value[:15])
    if sample and sample["word"] == "raise":
        raise ValueError(f"the key {key} was refused")
    content = json.dumps(environment)
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
"#;

fn project(server: &TestServer) -> Test {
    let secrets = secrets();
    let (inline, store, api_token, endpoint) = (&secrets[0].1, &secrets[1].1, &secrets[2].1, &secrets[3].1);
    let yaml_quote = |s: &str| serde_json::to_string(s).expect("quoted");
    let http_model = format!(
        "key: http\ndisplay_name: HTTP\nretry:\n  max_attempts: 1\nsecrets:\n  INLINE: {}\nconfig:\n  connection_type: custom_connection\n  url: \"{}\"\n  api_key: $API_TOKEN\n  custom_headers:\n    X-Canary: \"<< secrets.INLINE >>\"\n  adapter:\n    key: \"latticeflow$openai_chat_completion\"\n",
        yaml_quote(inline),
        server.url_for("/v1/chat/completions")
    );
    let snippet_model = "key: snip\ndisplay_name: Snippet\nretry:\n  max_attempts: 1\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include \"../snippets/snip.py\"\n  environment:\n    KEY: \"<< secrets.STORE >>\"\n    ENDPOINT: $ENDPOINT\n  timeout: 10\n";
    let task = |key: &str| {
        format!(
            "key: {key}\ndisplay_name: {key}\ndefinition:\n  type: benchmark_task\n  dataset: {{key: words}}\n  solver:\n    type: single_turn_solver\n    input_builder:\n      type: chat_completion\n      input_messages:\n        - role: user\n          content: \"{{{{ sample.word }}}}\"\n  scorers:\n    - type: string_equals\n      key: exact\n      ground_truth: \"nothing\"\n      metrics:\n        - {{type: mean, field: is_correct}}\n"
        )
    };
    let test = Test::new()
        .write("models/http.yaml", &http_model)
        .write("models/snip.yaml", snippet_model)
        .write("snippets/snip.py", SNIPPET)
        .write("tasks/t.yaml", &task("t"))
        .write(
            "datasets/words.yaml",
            "key: words\ndisplay_name: Words\nsource:\n  type: local\n  file_path: words.jsonl\nid_column: id\n",
        )
        .write(
            "datasets/words.jsonl",
            "{\"id\": \"a\", \"word\": \"hello\"}\n{\"id\": \"b\", \"word\": \"fail\"}\n{\"id\": \"c\", \"word\": \"raise\"}\n",
        )
        .write(
            "run.yaml",
            "evaluation:\n  key: canary\n  display_name: Canary\n  cache_policy: reuse\n  task_specifications:\n    - {key: http-spec, task_key: t, model_key: http, dataset_key: words}\n    - {key: snippet-spec, task_key: t, model_key: snip, dataset_key: words}\n",
        )
        .write(".env", &format!("API_TOKEN={}\nENDPOINT={}\n", yaml_quote(api_token), yaml_quote(endpoint)));
    let test = test.args(["secret", "set", "STORE"]).stdin(&format!("{store}\n"));
    let out = test.success();
    assert_output_clean("secret set", &out);
    test
}

#[test]
fn no_form_of_any_planted_secret_reaches_any_byte_lfeval_writes() {
    let server = TestServer::start(echoing());
    let mut test = project(&server);
    let mut outputs = Vec::new();
    for args in [
        vec!["validate"],
        vec!["validate", "run.yaml"],
        vec!["model", "test", "http"],
        vec!["model", "test", "http", "--json"],
        vec!["model", "test", "http", "--verbose"],
        vec!["model", "test", "snip"],
        vec!["model", "test", "snip", "--json"],
        vec!["model", "test", "snip", "--verbose"],
        vec!["run", "-f", "run.yaml", "-o", "out", "--no-progress", "--json"],
        vec!["run", "-f", "run.yaml", "-o", "cached", "--no-progress"],
    ] {
        let command = args.join(" ");
        test = test.args(args);
        let out = test.run();
        assert!(
            out.code == 0 || out.code == 1,
            "`{command}` exited {}:\n{}",
            out.code,
            out.stderr
        );
        outputs.push((command, out));
    }
    for (command, out) in &outputs {
        assert_output_clean(command, out);
    }
    // The run did what the canary needs: the endpoint echoed the secrets, the 401 was cut by
    // the adapter, the snippet printed every form and raised.
    let run = &outputs[8].1;
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).expect("--json summary");
    assert_eq!(summary["totals"]["samples"], 6);
    let samples = std::fs::read_to_string(test.path().join("out/samples.jsonl")).expect("samples");
    assert!(
        samples.contains("you sent Bearer $API_TOKEN and <<secrets.INLINE>>"),
        "the echo was masked"
    );
    assert!(
        samples.contains("returned by the model: xxxxxxxxxx"),
        "the adapter cut the 401 body"
    );
    assert!(samples.contains("b64url"), "the snippet printed its forms");
    assert!(samples.contains("was refused"), "the snippet raised");

    let mut scanned = Vec::new();
    for dir in ["out", "cached", ".lfeval"] {
        for file in files_under(&test.path().join(dir)) {
            let bytes = std::fs::read(&file).expect("read");
            assert_clean(&file.display().to_string(), &bytes);
            scanned.push(file);
        }
    }
    assert!(scanned.iter().any(|f| f.ends_with("cache.sqlite")), "{scanned:?}");
    assert!(
        scanned.iter().any(|f| f.ends_with("task_result_log.json")),
        "{scanned:?}"
    );
    assert!(scanned.len() >= 10, "{scanned:?}");
}
