//! Hostile configuration: an alias bomb is stopped naming the alias and the limit, `$ref` stays
//! inside the project like `!include`, a huge mapping loads, and limits outside their allowed
//! range are configuration errors (exit 2 from `run`, 1 from `validate`).

use super::isolation::snippet_run;

const SNIPPET: &str = "def run_inference(body, environment):\n    return body\n";

/// The model file of [`snippet_run`] with `extra` model-level keys.
fn model(extra: &str) -> String {
    format!(
        "key: m\ndisplay_name: M\n{extra}\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include \"../snippets/m.py\"\n  environment: {{}}\n  timeout: 5\n"
    )
}

/// Runs `run` and `validate` over a project whose model file is `model_yaml`; both must fail
/// with `message` in stderr (and `run` exit 2, `validate` exit 1).
fn assert_config_error(model_yaml: &str, message: &str) {
    let test = snippet_run("", 5, SNIPPET, &["alpha"]).write("models/m.yaml", model_yaml);
    let out = test.config_error();
    assert!(out.stderr.contains(message), "run: `{message}` not in\n{}", out.stderr);
    let validate = test.args(["validate"]);
    let out = validate.failure();
    assert!(
        out.stderr.contains(message),
        "validate: `{message}` not in\n{}",
        out.stderr
    );
}

#[test]
fn an_alias_bomb_is_stopped_naming_the_alias_and_the_limit() {
    let mut bomb =
        String::from("key: m\ndisplay_name: M\nlol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let alias = format!("*l{}", i - 1);
        bomb.push_str(&format!("lol{i}: &l{i} [{}]\n", [alias.as_str(); 10].join(", ")));
    }
    bomb.push_str("config:\n  connection_type: custom_inference\n  run_inference_snippet: x\n");
    assert!(bomb.len() < 1024, "a 1 KB file");
    assert_config_error(
        &bomb,
        "error: alias `*l3` expands the document past the limit of 100000 nodes added by aliases\n --> models/m.yaml:7:",
    );
}

#[test]
fn a_ref_outside_the_project_is_refused_like_an_include() {
    let test = snippet_run("", 5, SNIPPET, &["alpha"]);
    // A file next to the project directory, reached from `models/m.yaml` by climbing out.
    let parent = test.path().parent().expect("parent").to_path_buf();
    let outside = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile_in(&parent)
        .expect("a file outside the project");
    std::fs::write(outside.path(), "timeout: 5\n").expect("write");
    let name = outside.path().file_name().expect("name").to_string_lossy().into_owned();
    let yaml = format!(
        "key: m\ndisplay_name: M\nconfig:\n  $ref: ../../{name}\n  connection_type: custom_inference\n  run_inference_snippet: x\n"
    );
    let message = format!("`$ref: ../../{name}` escapes the project directory");
    let test = test.write("models/m.yaml", &yaml);
    let out = test.config_error();
    assert!(out.stderr.contains(&message), "{}", out.stderr);
    let out = test.args(["validate"]).failure();
    assert!(out.stderr.contains(&message), "{}", out.stderr);
}

#[test]
fn a_mapping_of_200000_keys_loads() {
    let mut environment = String::with_capacity(200_000 * 24);
    for i in 0..200_000 {
        environment.push_str(&format!("    K{i}: v{i}\n"));
    }
    let yaml = format!(
        "key: m\ndisplay_name: M\nconfig:\n  connection_type: custom_inference\n  run_inference_snippet: !include \"../snippets/m.py\"\n  timeout: 5\n  environment:\n{environment}"
    );
    let test = snippet_run("", 5, SNIPPET, &["alpha"])
        .write("models/m.yaml", &yaml)
        .args(["validate"]);
    let out = test.success();
    assert!(out.stderr.contains(": 4 valid; 0 error(s)"), "{}", out.stderr);
}

#[test]
fn limits_outside_their_range_are_configuration_errors() {
    for (extra, message) in [
        (
            "max_concurrent_requests: 100000000",
            "`max_concurrent_requests` must be from 1 to 10000, found `100000000`",
        ),
        (
            "max_concurrent_requests: 0",
            "`max_concurrent_requests` must be from 1 to 10000, found `0`",
        ),
        ("rate_limit: 0", "`rate_limit` must be from 1 to 1000000, found `0`"),
        (
            "rate_limit: 4000000",
            "`rate_limit` must be from 1 to 1000000, found `4000000`",
        ),
        (
            "max_response_bytes: 10",
            "`max_response_bytes` must be from 1024 to 1073741824 (1 GiB), found `10`",
        ),
        ("retry:\n  max_retry_after: 99999", "invalid `retry` policy"),
        ("retry:\n  max_attempts: 0", "invalid `retry` policy"),
        ("isolation: sandbox", "unknown value `sandbox`"),
    ] {
        assert_config_error(&model(extra), message);
    }
    // A timeout is checked where it is written.
    assert_config_error(
        &model("").replace("timeout: 5", "timeout: 0"),
        "`timeout` must be a number of seconds greater than 0, found `0`",
    );
    // Worker processes are for snippets.
    assert_config_error(
        "key: m\ndisplay_name: M\nisolation: process\nconfig:\n  connection_type: custom_connection\n  url: http://127.0.0.1:1/\n",
        "`isolation: process` applies to `custom_inference` models only",
    );
}
