//! `lfeval init`, `model new`, `schema`, `completions` and `model test --watch`: a scaffolded
//! project validates, passes `model test` and runs offline; every YAML entity file (scaffolded
//! and the repository's examples) satisfies its kind's JSON Schema, judged by a real validator,
//! and the schemas under `schema/` are what the binary generates.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lfeval::schema::{SchemaKind, generate};
use serde_json::Value;

use crate::server::{TestServer, openai_chat};
use crate::test::Test;

const SCAFFOLDED: &[(&str, SchemaKind)] = &[
    ("run.yaml", SchemaKind::Run),
    ("models/my-model.yaml", SchemaKind::Model),
    ("adapters/chat-api.yaml", SchemaKind::Adapter),
    ("datasets/questions.yaml", SchemaKind::Dataset),
    ("tasks/qa.yaml", SchemaKind::Task),
];

#[test]
fn init_scaffolds_a_project_that_validates_tests_and_runs_offline() {
    let mut t = Test::new().args(["init"]).stdin("");
    insta::assert_snapshot!("init_output", t.snapshot());
    for file in [
        "run.yaml",
        "models/my-model.yaml",
        "snippets/my_model.py",
        "adapters/chat-api.yaml",
        "datasets/questions.yaml",
        "datasets/questions.jsonl",
        "tasks/qa.yaml",
        ".gitignore",
    ] {
        let text = std::fs::read_to_string(t.path().join(file)).expect("scaffolded file");
        insta::assert_snapshot!(format!("init_file_{}", file.replace(['/', '.'], "_")), text);
    }
    for kind in SchemaKind::ALL {
        let written = std::fs::read_to_string(t.path().join(".lfeval/schema").join(kind.file_name())).expect("schema");
        assert_eq!(written, generate(kind), "`.lfeval/schema/{}`", kind.file_name());
    }

    t.set_args(["validate"]).success();
    let out = t.set_args(["model", "test", "my-model"]).success();
    assert!(out.stdout.contains("passed all 4 steps"), "{}", out.stdout);
    // The offline echo answers with the prompt itself.
    assert!(out.stdout.contains(r#""content": "Hello!""#), "{}", out.stdout);
    let out = t
        .set_args(["run", "-f", "run.yaml", "--no-progress", "--json"])
        .success();
    let summary: Value = serde_json::from_str(&out.stdout).expect("summary JSON");
    assert_eq!(count_samples(&t.path().join("runs")), 3, "{}", out.stdout);
    assert!(summary.to_string().contains("exact"), "{summary}");
}

fn count_samples(runs: &Path) -> usize {
    let dir = std::fs::read_dir(runs)
        .expect("runs/")
        .next()
        .expect("a run")
        .expect("entry")
        .path();
    std::fs::read_to_string(dir.join("samples.jsonl"))
        .expect("samples")
        .lines()
        .count()
}

#[test]
fn init_into_a_new_directory_and_its_snippet_runs_by_hand() {
    let t = Test::new().args(["init", "evals", "--model", "acme"]);
    insta::assert_snapshot!("init_into_directory", t.snapshot());
    let root = t.path().join("evals");
    assert!(root.join("models/acme.yaml").is_file());
    // The snippet's `__main__` block: try the model with plain `python`, no lfeval involved.
    let python = std::env::var("VIRTUAL_ENV").map_or_else(|_| "python3".into(), |v| format!("{v}/bin/python"));
    let out = Command::new(python)
        .args(["snippets/acme.py", "Hi there"])
        .current_dir(&root)
        .env_remove("ACME_URL")
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).expect("JSON reply");
    assert_eq!(reply["choices"][0]["message"]["content"], "Hi there");
    Test::new()
        .current_dir(&root)
        .args(["-C", root.to_str().expect("utf-8"), "model", "test", "acme"])
        .success();
}

#[test]
fn init_never_overwrites_without_force() {
    let mut t = Test::new().write("run.yaml", "# mine\n").args(["init"]);
    insta::assert_snapshot!("init_refuses_existing", t.snapshot());
    assert_eq!(
        std::fs::read_to_string(t.path().join("run.yaml")).expect("run.yaml"),
        "# mine\n"
    );
    assert!(
        !t.path().join("models").exists(),
        "nothing is written when anything would be replaced"
    );
    t.set_args(["init", "--force"]).success();
    assert!(
        std::fs::read_to_string(t.path().join("run.yaml"))
            .expect("run.yaml")
            .contains("first-eval")
    );
}

#[test]
fn init_rejects_a_bad_model_key() {
    let t = Test::new().args(["init", "--model", "my model"]);
    insta::assert_snapshot!("init_bad_key", t.snapshot());
}

#[test]
fn model_new_adds_a_model_that_calls_its_url() {
    let server = TestServer::start(openai_chat());
    let url = server.url_for("/v1/chat/completions");
    let mut t = Test::new().args(["init"]);
    t.success();
    let out = t.set_args(["model", "new", "remote", "--url", &url]).success();
    assert!(out.stdout.contains("models/remote.yaml"), "{}", out.stdout);
    let model = std::fs::read_to_string(t.path().join("models/remote.yaml")).expect("model");
    assert!(model.contains(&format!("${{REMOTE_URL:-{url}}}")), "{model}");
    assert!(model.contains("latticeflow$openai_chat_completion"), "{model}");
    t.set_args(["validate"]).success();
    let out = t.set_args(["model", "test", "remote"]).success();
    assert!(out.stdout.contains("echo: Hello!"), "{}", out.stdout);
    assert_eq!(server.count(), 1);
    let sent = server.last_request().expect("a request");
    assert!(String::from_utf8_lossy(&sent.request.body).contains("Hello!"));

    let again = t.set_args(["model", "new", "remote", "--url", &url]).config_error();
    assert!(again.stderr.contains("already exist"), "{}", again.stderr);
}

#[test]
fn scaffolded_and_example_files_satisfy_their_schemas() {
    let t = Test::new().args(["init"]);
    t.success();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<(std::path::PathBuf, std::path::PathBuf, SchemaKind)> = SCAFFOLDED
        .iter()
        .map(|(f, k)| (t.path().to_path_buf(), t.path().join(f), *k))
        .collect();
    for (folder, kind) in [
        ("models", SchemaKind::Model),
        ("adapters", SchemaKind::Adapter),
        ("adapters/builtin", SchemaKind::Adapter),
        ("examples/quickstart/models", SchemaKind::Model),
        ("examples/quickstart/datasets", SchemaKind::Dataset),
        ("examples/quickstart/tasks", SchemaKind::Task),
    ] {
        for entry in std::fs::read_dir(repo.join(folder)).expect("folder") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push((repo.to_path_buf(), path, kind));
            }
        }
    }
    files.push((
        repo.to_path_buf(),
        repo.join("examples/quickstart/run.yaml"),
        SchemaKind::Run,
    ));
    let mut failures = Vec::new();
    for (root, path, kind) in &files {
        let instance = load_json(root, path);
        let validator = validator(*kind);
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        if !errors.is_empty() {
            failures.push(format!("{}: {}", path.display(), errors.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "files that fail their schema:\n{}",
        failures.join("\n")
    );
    assert!(files.len() > 20, "only {} files checked", files.len());
}

#[test]
fn schemas_reject_unknown_keys() {
    let t = Test::new().args(["init"]);
    t.success();
    for (file, kind) in SCAFFOLDED {
        let mut instance = load_json(t.path(), &t.path().join(file));
        assert!(validator(*kind).is_valid(&instance), "{file} is valid as written");
        instance
            .as_object_mut()
            .expect("a mapping")
            .insert("colour".into(), Value::from("red"));
        assert!(
            !validator(*kind).is_valid(&instance),
            "{file} with an unknown key `colour`"
        );
    }
    // Deeper: a typo inside a model's `config`, and inside a task's scorer.
    let mut model = load_json(t.path(), &t.path().join("models/my-model.yaml"));
    model["config"]["timout"] = Value::from(5);
    assert!(!validator(SchemaKind::Model).is_valid(&model));
    let mut task = load_json(t.path(), &t.path().join("tasks/qa.yaml"));
    task["definition"]["scorers"][0]["ground_truht"] = Value::from("x");
    assert!(!validator(SchemaKind::Task).is_valid(&task));
    // A run config's policies: the README's example holds, a misspelt operator does not.
    let mut run = load_json(t.path(), &t.path().join("run.yaml"));
    run["policies"] = serde_json::json!([{
        "key": "quality",
        "display_name": "Quality gates",
        "rules": [{
            "key": "accuracy",
            "display_name": "Accuracy at least 85%",
            "definition": {"type": "threshold", "metric": "exact.is_correct_mean", "operator": ">=", "threshold": 0.85},
            "scope": "all_latest"
        }]
    }]);
    assert!(validator(SchemaKind::Run).is_valid(&run), "{run:#}");
    run["policies"][0]["rules"][0]["definition"]["operator"] = Value::from("=>");
    assert!(!validator(SchemaKind::Run).is_valid(&run));
}

#[test]
fn committed_schemas_are_current() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for kind in SchemaKind::ALL {
        let path = repo.join("schema").join(kind.file_name());
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generate(kind),
            "`schema/{}` is stale\nhint: run `cargo run -- schema --output schema` and commit the result",
            kind.file_name()
        );
        let printed = Test::new().args(["schema", kind.name()]).success();
        assert_eq!(printed.stdout, committed, "`lfeval schema {}`", kind.name());
    }
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef lfeval"),
        ("fish", "complete -c lfeval"),
    ] {
        let out = Test::new().args(["completions", shell]).success();
        assert!(
            out.stdout.contains(marker),
            "{shell}: {}",
            &out.stdout[..out.stdout.len().min(300)]
        );
        assert!(out.stdout.contains("init"), "{shell} completes subcommands");
    }
    Test::new().args(["completions", "tcsh"]).config_error();
}

/// `model test --watch` tests again when the snippet changes, loading the new code in the same
/// process.
#[test]
fn model_test_watch_reruns_when_the_snippet_changes() {
    let t = Test::new().args(["init"]);
    t.success();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lfeval"))
        .args(["model", "test", "my-model", "--watch"])
        .current_dir(t.path())
        .env("NO_COLOR", "1")
        .env_remove("MY_MODEL_URL")
        .env("LFEVAL_SECRETS_FILE", t.secrets_file())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = child.stderr.take().expect("stderr");
    let (etx, erx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if etx.send(line).is_err() {
                break;
            }
        }
    });
    let first = read_until(&rx, "passed all 4 steps");
    assert!(first.contains(r#""content": "Hello!""#), "{first}");
    // The watcher is set up once it says so on stderr.
    wait_for_line(&erx, "watching 3 file(s)");
    let snippet = t.path().join("snippets/my_model.py");
    let text = std::fs::read_to_string(&snippet).expect("snippet");
    std::fs::write(&snippet, text.replace("reply = next(", "reply = \"edited: \" + next(")).expect("edit");
    let second = read_until(&rx, "passed all 4 steps");
    let _ = child.kill();
    let _ = child.wait();
    assert!(second.contains("changed: snippets/my_model.py"), "{second}");
    assert!(second.contains(r#""content": "edited: Hello!""#), "{second}");
}

/// Lines up to and including the first containing `marker`, waiting at most 60 s.
fn read_until(rx: &mpsc::Receiver<String>, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(marker) {
                    return seen;
                }
            }
            Err(_) => panic!("no `{marker}` within 60 s; output so far:\n{seen}"),
        }
    }
}

fn wait_for_line(rx: &mpsc::Receiver<String>, marker: &str) {
    read_until(rx, marker);
}

fn load_json(root: &Path, path: &Path) -> Value {
    let vars = lfeval::variables::Variables::fixed(std::collections::HashMap::new());
    let node = lfeval::yaml::load(path, root, &vars).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    lfeval::yaml::to_json(&node)
}

fn validator(kind: SchemaKind) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&generate(kind)).expect("schema JSON");
    jsonschema::validator_for(&schema).expect("a valid schema")
}
