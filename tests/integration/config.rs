//! What a new user trips over in configuration: exit codes (a configuration error is 2 from
//! every command, failed checks or samples are 1), `.env` files written the way dotenv tools
//! write them, a model whose file does not load, and templates that read a missing attribute.

use super::runs::{echo_yaml, numbered_rows};
use super::server::{TestServer, openai_chat};
use super::test::Test;

const OK_SNIPPET: &str = "def run_inference(body, environment):\n    return body\n";

fn snippet_model(key: &str, config: &str) -> String {
    format!(
        "key: {key}\ndisplay_name: {key}\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include ../snippets/{key}.py\n{config}"
    )
}

/// Models that cannot be set up, each for its own reason.
fn broken_models() -> Test {
    Test::new()
        .write(
            "models/unset.yaml",
            &snippet_model("unset", "  environment:\n    KEY: $NOT_SET_ANYWHERE\n"),
        )
        .write("snippets/unset.py", OK_SNIPPET)
        .write(
            "models/badadapter.yaml",
            &snippet_model("badadapter", "  adapter: {key: nope}\n"),
        )
        .write("snippets/badadapter.py", OK_SNIPPET)
        .write("models/syntax.yaml", &snippet_model("syntax", ""))
        .write(
            "snippets/syntax.py",
            "def run_inference(body, environment)\n    return body\n",
        )
        .write("models/broken.yaml", "key: broken\ndisplay_name: [unclosed\n")
}

#[test]
fn model_test_exits_2_for_every_configuration_error_and_shows_the_cause() {
    let t = broken_models();
    for (key, cause) in [
        ("unset", "NOT_SET_ANYWHERE"),
        ("badadapter", "unknown adapter `nope`"),
        ("syntax", "snippets/syntax.py:1"),
        // The file is broken before its key could be read; its error is still the one shown.
        ("broken", "models/broken.yaml:2"),
    ] {
        let t = Test::args(Test::new(), ["-C", t.path().to_str().unwrap(), "model", "test", key]);
        let out = t.config_error();
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(text.contains(cause), "`{key}`: expected `{cause}` in:\n{text}");
        assert!(!text.contains("unknown model"), "`{key}`: {text}");
    }
}

#[test]
fn run_exits_2_for_configuration_errors_and_1_for_failed_samples() {
    let server = TestServer::start(openai_chat());
    let base = echo_yaml(&server, "", "cache_policy: no-cache", super::runs::EXACT_SCORER);
    let rows = super::runs::jsonl(&numbered_rows(2));
    for (name, yaml) in [
        (
            "an unset variable",
            base.replace("model_key: target}", "model_key: unset}"),
        ),
        (
            "an unknown adapter",
            base.replace("model_key: target}", "model_key: badadapter}"),
        ),
        (
            "a snippet syntax error",
            base.replace("model_key: target}", "model_key: syntax}"),
        ),
    ] {
        let t = broken_models()
            .write("run.yaml", &yaml)
            .write("rows.jsonl", &rows)
            .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
        let out = t.status(2);
        assert!(!out.stderr.is_empty(), "{name}: says why");
    }
    assert_eq!(server.count(), 0, "nothing runs when the configuration is wrong");
    // validate's job is the check: a broken file is a failed check.
    let t = broken_models().args(["validate"]);
    t.failure();
}

#[test]
fn dotenv_files_follow_dotenv_conventions() {
    // Values from `$VAR` in `environment` are masked wherever they appear, so the snippet
    // answers with each one reversed.
    let snippet = "import json\n\ndef run_inference(body, environment):\n    text = repr(sorted((k, v[::-1]) for k, v in environment.items()))\n    return json.dumps({\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": text}}]})\n";
    let t = Test::new()
        .write(
            "models/env.yaml",
            &snippet_model(
                "env",
                "  adapter: {key: \"latticeflow$identity\"}\n  environment:\n    A: $A\n    B: $B\n    C: $C\n    D: $D\n    E: $E\n",
            ),
        )
        .write("snippets/env.py", snippet)
        .write(
            ".env",
            "# settings\nA=\"quoted\" # a comment after quotes\nexport B=exported\nC='single # not a comment'\nD=\"two\\nlines\"\nE=plain # trailing comment\n",
        )
        .args(["model", "test", "env", "--json"]);
    let out = t.success();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let text = report.to_string();
    for expected in [
        r#"('A', 'detouq')"#,
        r#"('B', 'detropxe')"#,
        r#"('C', 'tnemmoc a ton # elgnis')"#,
        r#"('D', 'senil\\nowt')"#,
        r#"('E', 'nialp')"#,
    ] {
        assert!(text.contains(expected), "expected {expected} in {text}");
    }
}

#[test]
fn an_output_template_reading_a_missing_attribute_is_an_error_not_an_empty_answer() {
    let adapter = r#"key: strict
display_name: Strict
process_input:
  language: jinja
  source_code: '{{ input | tojson }}'
process_output:
  language: jinja
  source_code: |
    {%- set r = body | fromjson -%}
    {{ {"choices": [{"message": {"role": "assistant", "content": r.answer.line | join(" ")}}]} | tojson }}
"#;
    let t = Test::new()
        .write("adapters/strict.yaml", adapter)
        .write("body.json", r#"{"answer": {"text": "hi"}}"#)
        .args(["adapter", "test", "strict", "--body", "body.json"]);
    let out = t.failure();
    assert!(out.stderr.contains("undefined value `r.answer.line`"), "{}", out.stderr);
    assert!(out.stderr.contains("adapters/strict.yaml:10"), "{}", out.stderr);
    // `default` is how a template says a value may be missing.
    let t = t.write(
        "adapters/strict.yaml",
        &adapter.replace("| join(\" \")", "| default(\"none\")"),
    );
    let out = t.success();
    assert!(out.stdout.contains("\"content\": \"none\""), "{}", out.stdout);
}
