//! One focused snapshot per class of user-facing error: what the message says, where it points
//! (`file:line:col`, key path, caret), and which hint it gives. Loader errors go through
//! `validate`; template errors through `adapter test` with a broken adapter; errors that only
//! exist when a value is needed (unset variables, unknown secrets) through `model test`.

use crate::lfeval_snapshot;
use crate::server::{TestServer, openai_chat};
use crate::test::Test;

const URL: &str = "http://localhost:8000/v1/chat/completions";
const OPENAI: &str = "  adapter:\n    key: latticeflow$openai_chat_completion\n";

fn model(key: &str, extra: &str) -> String {
    format!("key: {key}\ndisplay_name: Model {key}\n{extra}config:\n  url: {URL}\n")
}

/// An adapter whose `process_input` is `input` and whose `process_output` is `output`, both as
/// literal block scalars starting on lines 5 and (5 + lines of input + 2).
fn adapter(key: &str, input: &str, output: &str) -> String {
    let indent = |t: &str| t.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "key: {key}\ndisplay_name: Adapter {key}\nprocess_input:\n  language: jinja\n  source_code: |\n{}process_output:\n  language: jinja\n  source_code: |\n{}",
        indent(input),
        indent(output)
    )
}

#[test]
fn unknown_key() {
    let t = Test::new()
        .write("models/ok.yaml", &model("ok", ""))
        .write(
            "models/typo.yaml",
            &format!("key: typo\ndisplay_name: Typo\nconfig:\n  url: {URL}\n  custom_header:\n    X-Team: eval\n"),
        )
        .args(["validate"]);
    lfeval_snapshot!(t);
}

#[test]
fn wrong_type() {
    let t = Test::new()
        .write(
            "models/m.yaml",
            &format!("key: m\ndisplay_name: M\nmax_concurrent_requests: [4]\nconfig:\n  url: {URL}\n"),
        )
        .args(["validate"]);
    lfeval_snapshot!(t);
}

#[test]
fn bad_include() {
    let t = Test::new()
        .write(
            "models/m.yaml",
            "key: m\ndisplay_name: M\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include \"./run_inference.py\"\n  environment: {}\n  timeout: 10\n",
        )
        .write("snippets/run_inference.py", "def run_inference(body, environment):\n    return body\n")
        .args(["validate"]);
    lfeval_snapshot!(t);
}

#[test]
fn include_escaping_the_project() {
    let t = Test::new()
        .write("outside.txt", "not part of the project")
        .write(
            "project/models/m.yaml",
            &model("m", "description: !include ../../outside.txt\n"),
        )
        .args(["-C", "project", "validate"]);
    let out = t.run();
    assert!(!out.stderr.contains("not part of the project") && !out.stdout.contains("not part of the project"));
    insta::assert_snapshot!(t.render(&out));
}

#[test]
fn duplicate_key_within_a_file() {
    let t = Test::new()
        .write(
            "models/m.yaml",
            &format!("key: m\ndisplay_name: M\nconfig:\n  url: {URL}\n  timeout: 10\ndisplay_name: N\n"),
        )
        .args(["validate"]);
    lfeval_snapshot!(t);
}

#[test]
fn duplicate_entity_key_across_files_names_both_files() {
    let t = Test::new()
        .write("models/openai.yaml", &model("gpt-4o", ""))
        .write("models/azure/gpt-4o.yaml", &model("gpt-4o", ""))
        .write("models/other.yaml", &model("other", ""))
        .args(["validate"]);
    let out = t.run();
    assert!(
        out.stderr.contains("`models/azure/gpt-4o.yaml`") && out.stderr.contains("`models/openai.yaml`"),
        "{}",
        out.stderr
    );
    insta::assert_snapshot!(t.render(&out));
}

#[test]
fn todo_placeholders_list_every_key_path() {
    let t = Test::new()
        .write(
            "models/m.yaml",
            "key: m\ndisplay_name: ((TODO))\nconfig:\n  url: http://localhost:8000/((TODO))\n  custom_headers: !include ../shared/headers.yaml\n",
        )
        .write("shared/headers.yaml", "X-Team: eval\nX-Token: ((TODO))\n")
        .args(["validate"]);
    lfeval_snapshot!(t);
}

#[test]
fn ref_merge_with_a_non_mapping() {
    let t = Test::new()
        .write(
            "models/m.yaml",
            "key: m\ndisplay_name: M\nconfig:\n  $ref: ../shared/connections.yaml\n  timeout: 5\n",
        )
        .write(
            "shared/connections.yaml",
            "- url: http://localhost:8000/a\n- url: http://localhost:8000/b\n",
        )
        .args(["validate"]);
    lfeval_snapshot!(t);
}

/// The merge itself: referenced keys win, siblings the referenced file lacks are kept. Checked on
/// the wire, where `model_key` and the URL path become visible.
#[test]
fn ref_merge_reaches_the_endpoint() {
    let server = TestServer::start(openai_chat());
    let t = Test::new()
        .write(
            "shared/connection.yaml",
            &format!("url: {}\nmodel_key: from-ref\n", server.url_for("/ref/v1/chat/completions")),
        )
        .write(
            "models/m.yaml",
            "key: merged\ndisplay_name: Merged\nconfig:\n  $ref: ../shared/connection.yaml\n  url: http://localhost:1/sibling-loses\n  model_key: sibling-loses\n  adapter:\n    key: latticeflow$openai_chat_completion\n",
        )
        .args(["model", "test", "merged"]);
    let out = t.run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let request = server.last_request().expect("the endpoint was called").request;
    assert_eq!(request.path, "/ref/v1/chat/completions");
    assert_eq!(request.json().expect("json body")["model"], "from-ref");
}

#[test]
fn unset_variable_when_the_value_is_needed() {
    let server = TestServer::start(openai_chat());
    let t = Test::new()
        .write(
            "models/needs-key.yaml",
            &format!(
                "key: needs-key\ndisplay_name: Needs a key\nconfig:\n{OPENAI}  url: {}\n  api_key: $MISSING_API_KEY\n",
                server.url_for("/v1/chat/completions")
            ),
        )
        .write(
            "models/fine.yaml",
            &format!(
                "key: fine\ndisplay_name: Fine\nconfig:\n{OPENAI}  url: {}\n",
                server.url_for("/v1/chat/completions")
            ),
        );
    // Listing never needs the value: both models are listed and nothing fails.
    let t = t.args(["model", "list"]);
    let list = t.run();
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stdout.contains("needs-key") && list.stdout.contains("fine"),
        "{}",
        list.stdout
    );
    assert_eq!(list.stderr, "");
    // Testing needs it: the error points at the `$VAR` and no request is sent.
    let t = t.args(["model", "test", "needs-key"]);
    lfeval_snapshot!(t);
    assert_eq!(server.count(), 0);
    // The other model is unaffected.
    let t = t.args(["model", "test", "fine"]);
    let fine = t.run();
    assert_eq!(fine.code, 0, "{}\n{}", fine.stdout, fine.stderr);
    assert_eq!(server.count(), 1);
}

#[test]
fn unset_variable_with_a_message() {
    let t = Test::new()
        .write(
            "models/m.yaml",
            &format!("key: m\ndisplay_name: M\nconfig:\n  url: {URL}\n  custom_headers:\n    X-Tenant: ${{TENANT_ID:?ask the platform team for your tenant id}}\n"),
        )
        .args(["model", "test", "m"]);
    lfeval_snapshot!(t);
}

#[test]
fn unknown_secret_says_where_it_looked() {
    let t = Test::new()
        .write(
            "models/m.yaml",
            &format!("key: m\ndisplay_name: M\nsecrets:\n  INLINE_ONE: inline-value-1\nconfig:\n  url: {URL}\n  api_key: << secrets.OPENAI_API_KEY >>\n"),
        )
        .args(["model", "test", "m"]);
    let out = t.run();
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains(".test-home/secrets.json"), "{}", out.stderr);
    insta::assert_snapshot!(t.render(&out));
}

#[test]
fn template_syntax_error() {
    let t = Test::new()
        .write(
            "adapters/broken.yaml",
            &adapter(
                "broken",
                "{\n  \"prompt\": {{ input.messages[-1].content | tojson }},\n  {% if kwargs %}\"options\": {{ kwargs | tojson }}\n}",
                "{{ body }}",
            ),
        )
        .args(["adapter", "test", "broken"]);
    lfeval_snapshot!(t);
}

#[test]
fn undefined_variable_in_a_template() {
    let t = Test::new()
        .write(
            "adapters/typo.yaml",
            &adapter(
                "typo",
                "{\n  \"messages\": {{ input.messages | tojson }},\n  \"model\": {{ model_info.model_name | tojson }}\n}",
                "{{ body }}",
            ),
        )
        .args(["adapter", "test", "typo", "--model-key", "gpt-4o"]);
    lfeval_snapshot!(t);
}

#[test]
fn undefined_attribute_in_the_output_template() {
    let t = Test::new()
        .write(
            "adapters/typo.yaml",
            &adapter(
                "typo",
                "{{ input | tojson }}",
                "{%- set response = body | fromjson -%}\n{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": {{ response.choices[0].text | tojson }}}}]}",
            ),
        )
        .write("body.json", r#"{"choices": [{"message": {"content": "hi"}}]}"#)
        .args(["adapter", "test", "typo", "--body", "body.json"]);
    lfeval_snapshot!(t);
}

#[test]
fn runaway_template() {
    let t = Test::new()
        .write(
            "adapters/loop.yaml",
            &adapter(
                "loop",
                "{%- set parts = [] -%}\n{%- for i in range(100000) -%}{%- for j in range(100000) -%}{%- do parts.append(j) -%}{%- endfor -%}{%- endfor -%}\n{{ parts | length }}",
                "{{ body }}",
            ),
        )
        .args(["adapter", "test", "loop"]);
    let started = std::time::Instant::now();
    let out = t.run();
    assert_eq!(out.code, 1);
    // The fuel limit stops it long before the loop would end on its own.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    insta::assert_snapshot!(t.render(&out));
}

#[test]
fn invalid_output_shape() {
    let t = Test::new()
        .write(
            "adapters/wire.yaml",
            &adapter(
                "wire",
                "{\"prompt\": {{ input.messages[-1].content | tojson }}}",
                "{%- set response = body | fromjson -%}\n{\"choices\": [{\"text\": {{ response.result | tojson }}}]}",
            ),
        )
        .write("body.json", r#"{"result": "4"}"#)
        .args(["adapter", "test", "wire", "--body", "body.json"]);
    lfeval_snapshot!(t);
}

#[test]
fn output_that_is_not_json() {
    let t = Test::new()
        .write(
            "adapters/wire.yaml",
            &adapter(
                "wire",
                "{{ input | tojson }}",
                "{%- set response = body | fromjson -%}\n{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": \"{{ response.result }}\"}}]}",
            ),
        )
        .write("body.json", r#"{"result": "she said \"hi\""}"#)
        .args(["adapter", "test", "wire", "--body", "body.json"]);
    lfeval_snapshot!(t);
}
