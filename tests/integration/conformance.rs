//! Conformance with `lf` itself, measured on LatticeFlow's own integration bundle. The wheels
//! `latticeflow-go-sdk` 3.17.0 (and the docs-era 3.6.2) and `latticeflow-core` 3.17.0 are
//! downloaded at test time by `tests/conformance/fetch.sh` (cached under `target/conformance`,
//! never copied into the repository). lf's own validators give the reference verdict per bundle
//! file (`oracle.py`, cached per oracle version); lfeval must load every file lf accepts, or
//! refuse it by naming the hosted feature it needs. Adapters must render byte for byte as Jinja2
//! renders them with lf's own environment (`render_oracle.py`). The bundle's run configs run end
//! to end in `conformance_runs.rs`.
//!
//! Without network the suite is skipped (with a note on stderr) unless
//! `LFEVAL_CONFORMANCE_REQUIRED` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::test::Test;

/// The words every by-name refusal carries (`lfeval::entity::REFUSAL_MARK`).
const REFUSAL: &str = "need the hosted AI GO! platform; lfeval does not run them";

/// What the suite works on once fetched.
pub struct Suite {
    pub cache: PathBuf,
    /// `.../latticeflow/go/skills_data/integrations` of go-sdk 3.17.0.
    pub bundle: PathBuf,
    /// Every `$VAR` the bundle names, set to `dummy-<name>` as the oracle sets them.
    pub env: Vec<(String, String)>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fetched wheels, or `None` (after saying why) when they cannot be had and the suite is
/// not required.
pub fn suite() -> Option<&'static Suite> {
    static SUITE: OnceLock<Option<Suite>> = OnceLock::new();
    SUITE
        .get_or_init(|| {
            let dir = std::env::var_os("LFEVAL_CONFORMANCE_DIR")
                .map_or_else(|| repo().join("target/conformance"), PathBuf::from);
            let out = Command::new(repo().join("tests/conformance/fetch.sh"))
                .arg(&dir)
                .stderr(Stdio::inherit())
                .output()
                .expect("run tests/conformance/fetch.sh");
            if !out.status.success() {
                assert!(
                    std::env::var_os("LFEVAL_CONFORMANCE_REQUIRED").is_none(),
                    "tests/conformance/fetch.sh failed and LFEVAL_CONFORMANCE_REQUIRED is set"
                );
                eprintln!("conformance: skipped (the wheels could not be fetched)");
                return None;
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            let cache = PathBuf::from(stdout.lines().last().expect("fetch.sh prints the cache dir").trim());
            let bundle = cache.join("lf-3.17.0/latticeflow/go/skills_data/integrations");
            Some(Suite {
                env: dummy_env(&bundle),
                cache,
                bundle,
            })
        })
        .as_ref()
}

/// Every YAML file under `dir`, sorted, relative to it.
fn yaml_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.push(path.strip_prefix(dir).expect("inside").to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn dummy_env(bundle: &Path) -> Vec<(String, String)> {
    let var = Regex::new(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))").expect("regex");
    let mut names = BTreeSet::new();
    for file in yaml_files(bundle) {
        let text = std::fs::read_to_string(bundle.join(&file)).expect("read");
        for caps in var.captures_iter(&text) {
            names.insert(caps.get(1).or_else(|| caps.get(2)).expect("name").as_str().to_owned());
        }
    }
    names.remove("ref");
    names.remove("provider");
    names
        .into_iter()
        .map(|n| {
            let value = format!("dummy-{}", n.to_lowercase().replace('_', "-"));
            (n, value)
        })
        .collect()
}

impl Suite {
    pub fn python(&self) -> PathBuf {
        self.cache.join("venv/bin/python")
    }

    /// The virtualenv lfeval runs the bundle's snippets in (httpx and latticeflow-core).
    pub fn snippet_venv(&self) -> PathBuf {
        self.cache.join("snippet-venv")
    }

    /// lf's verdicts, computed once per oracle version and kept in the cache.
    fn oracle(&self, version: &str) -> Vec<Verdict> {
        let script = repo().join("tests/conformance/oracle.py");
        let mut hash = Sha256::new();
        hash.update(std::fs::read(&script).expect("read oracle.py"));
        hash.update(version.as_bytes());
        let digest = hex::encode(hash.finalize());
        let cached = self.cache.join(format!("oracle-{version}-{}.jsonl", &digest[..16]));
        if !cached.is_file() {
            let mut cmd = Command::new(self.python());
            cmd.arg(&script).arg(&self.bundle);
            if version != "3.17.0" {
                let kinds = self.cache.join(format!("oracle-3.17.0-kinds-{}.jsonl", &digest[..16]));
                let lines: Vec<String> = self
                    .oracle("3.17.0")
                    .iter()
                    .map(|v| json!({"file": v.file, "kind": v.kind, "via": v.via, "parent": v.parent}).to_string())
                    .collect();
                std::fs::write(&kinds, lines.join("\n") + "\n").expect("write kinds");
                cmd.arg("--lf-root")
                    .arg(self.cache.join(format!("lf-{version}")))
                    .arg("--kinds")
                    .arg(&kinds);
            }
            let out = cmd.stderr(Stdio::inherit()).output().expect("run oracle.py");
            assert!(out.status.success(), "oracle.py failed");
            let tmp = cached.with_extension("tmp");
            std::fs::write(&tmp, &out.stdout).expect("write oracle output");
            std::fs::rename(&tmp, &cached).expect("keep oracle output");
        }
        std::fs::read_to_string(&cached)
            .expect("read oracle output")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("oracle line"))
            .collect()
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Verdict {
    pub file: String,
    pub kind: String,
    pub valid: bool,
    pub via: String,
    pub parent: Option<String>,
}

/// The project a bundle file belongs to: its guide, tutorial, agent tutorial, or `references/`.
pub fn project_of(file: &str) -> String {
    let parts: Vec<&str> = file.split('/').collect();
    match parts.as_slice() {
        ["references", ..] => "references".to_owned(),
        ["tutorials", "agents", agent, ..] => format!("tutorials/agents/{agent}"),
        [top, project, ..] => format!("{top}/{project}"),
        _ => String::new(),
    }
}

/// lfeval's verdict on one bundle file.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: String,
    pub messages: Vec<String>,
    pub warnings: Vec<String>,
}

impl Outcome {
    fn refused_by_name(&self) -> bool {
        self.verdict == "refused" && self.messages.iter().all(|m| m.contains(REFUSAL))
    }

    fn accepted(&self) -> bool {
        matches!(self.verdict.as_str(), "valid" | "skipped") || self.refused_by_name()
    }
}

/// `lfeval -C <project> validate --json <files…>` for every project of the bundle, four at a
/// time; verdicts by bundle file. Computed once for all tests.
fn lfeval_verdicts(suite: &Suite) -> &'static BTreeMap<String, Outcome> {
    static VERDICTS: OnceLock<BTreeMap<String, Outcome>> = OnceLock::new();
    VERDICTS.get_or_init(|| {
        let mut by_project: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for file in yaml_files(&suite.bundle) {
            by_project.entry(project_of(&file)).or_default().push(file);
        }
        let groups: Vec<(String, Vec<String>)> = by_project.into_iter().collect();
        let results = std::sync::Mutex::new(BTreeMap::new());
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((project, files)) = groups.get(i) else { break };
                        let found = validate_group(suite, project, files);
                        results.lock().expect("lock").extend(found);
                    }
                });
            }
        });
        results.into_inner().expect("lock")
    })
}

fn validate_group(suite: &Suite, project: &str, files: &[String]) -> Vec<(String, Outcome)> {
    let root = suite.bundle.join(project);
    let mut t = Test::new()
        .env("VIRTUAL_ENV", &suite.snippet_venv().display().to_string())
        .args(
            [
                "-C".to_owned(),
                root.display().to_string(),
                "validate".to_owned(),
                "--json".to_owned(),
            ]
            .into_iter()
            .chain(files.iter().map(|f| suite.bundle.join(f).display().to_string())),
        );
    for (k, v) in &suite.env {
        t = t.env(k, v);
    }
    let out = t.run();
    let report: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`validate --json` in `{project}` printed no JSON ({e}):\n{}\n{}",
            out.stdout, out.stderr
        )
    });
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    report["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|entry| {
            let shown = entry["file"].as_str().expect("file");
            let file = if project.is_empty() {
                shown.to_owned()
            } else {
                format!("{project}/{shown}")
            };
            let outcome = Outcome {
                verdict: entry["verdict"].as_str().expect("verdict").to_owned(),
                messages: strings(&entry["messages"]),
                warnings: strings(&entry["warnings"]),
            };
            (file, outcome)
        })
        .collect()
}

/// The hosted feature a refusal names (its words before "need the hosted…").
fn refused_feature(outcome: &Outcome) -> String {
    let message = outcome.messages.first().map_or("", String::as_str);
    let before = message.split(REFUSAL).next().unwrap_or("");
    before.rsplit(": ").next().unwrap_or(before).trim().to_owned()
}

fn check_against(oracle: &[Verdict], verdicts: &BTreeMap<String, Outcome>, era: &str) -> (usize, Vec<String>) {
    let mut wrong = Vec::new();
    let mut accepted = 0;
    for v in oracle.iter().filter(|v| v.valid) {
        accepted += 1;
        match verdicts.get(&v.file) {
            Some(outcome) if outcome.accepted() => {}
            Some(outcome) => wrong.push(format!(
                "{} ({}): lfeval says {}: {}",
                v.file,
                v.kind,
                outcome.verdict,
                outcome.messages.join(" | ")
            )),
            None => wrong.push(format!("{} ({}): lfeval gave no verdict", v.file, v.kind)),
        }
    }
    eprintln!(
        "conformance ({era}): lf accepts {accepted} of {} bundle files",
        oracle.len()
    );
    (accepted, wrong)
}

#[test]
fn every_bundle_file_lf_accepts_loads_or_is_refused_by_name() {
    let Some(suite) = suite() else { return };
    let oracle = suite.oracle("3.17.0");
    assert_eq!(oracle.len(), 225, "the pinned bundle has 225 YAML files");
    let verdicts = lfeval_verdicts(suite);
    let (accepted, wrong) = check_against(&oracle, verdicts, "lf 3.17.0");
    assert_eq!(accepted, 225, "lf 3.17 accepts every bundle file");

    let mut by_verdict: BTreeMap<&str, usize> = BTreeMap::new();
    let mut features: BTreeMap<String, usize> = BTreeMap::new();
    let mut with_warnings = 0;
    for outcome in verdicts.values() {
        *by_verdict.entry(outcome.verdict.as_str()).or_default() += 1;
        if outcome.verdict == "valid" && !outcome.warnings.is_empty() {
            with_warnings += 1;
        }
        if outcome.verdict == "refused" {
            *features.entry(refused_feature(outcome)).or_default() += 1;
        }
    }
    eprintln!(
        "conformance: lfeval loads {} file(s) ({with_warnings} with warnings about this machine), skips {} (AI apps), refuses {} by name: {}",
        by_verdict.get("valid").unwrap_or(&0),
        by_verdict.get("skipped").unwrap_or(&0),
        by_verdict.get("refused").unwrap_or(&0),
        features
            .iter()
            .map(|(f, n)| format!("{f} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        wrong.is_empty(),
        "{} lf-valid file(s) rejected:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn every_run_config_without_a_dataset_generator_is_ready() {
    let Some(suite) = suite() else { return };
    let oracle = suite.oracle("3.17.0");
    let verdicts = lfeval_verdicts(suite);
    let run_configs: Vec<&Verdict> = oracle.iter().filter(|v| v.kind == "run_config").collect();
    assert_eq!(run_configs.len(), 47);
    let mut ready = 0;
    let mut generators = 0;
    let mut not_ready = Vec::new();
    for v in &run_configs {
        let outcome = &verdicts[&v.file];
        if outcome.verdict == "valid" {
            ready += 1;
        } else if outcome.refused_by_name() && outcome.messages.iter().all(|m| m.contains("dataset generators")) {
            generators += 1;
        } else {
            not_ready.push(format!(
                "{}: {} {}",
                v.file,
                outcome.verdict,
                outcome.messages.join(" | ")
            ));
        }
    }
    eprintln!("conformance: {ready} of 47 run configs ready; {generators} need a dataset generator");
    assert!(not_ready.is_empty(), "run configs not ready:\n{}", not_ready.join("\n"));
    assert_eq!((ready, generators), (34, 13));
}

#[test]
fn docs_era_verdicts_hold_too() {
    let Some(suite) = suite() else { return };
    let oracle = suite.oracle("3.6.2");
    let verdicts = lfeval_verdicts(suite);
    let (accepted, wrong) = check_against(&oracle, verdicts, "lf 3.6.2");
    assert!(accepted > 100, "lf 3.6.2 accepts most of the bundle ({accepted})");
    assert!(
        wrong.is_empty(),
        "{} file(s) lf 3.6.2 accepts are rejected:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The repository's own example projects, judged by lf's docs-era (3.6.2) and current
/// validators: whatever lf accepts, lfeval loads.
#[test]
fn repository_fixtures_lf_accepts_load() {
    let Some(suite) = suite() else { return };
    let root = tempfile::tempdir().expect("temp dir");
    let mut kinds = Vec::new();
    let fixtures = [
        ("models", "model"),
        ("adapters/acme-chat.yaml", "model_adapter"),
        ("examples/quickstart/run.yaml", "run_config"),
        ("examples/quickstart/models", "model"),
        ("examples/quickstart/tasks", "task"),
        ("examples/quickstart/datasets", "dataset"),
    ];
    for (path, kind) in fixtures {
        let from = repo().join(path);
        let files: Vec<String> = if from.is_dir() {
            yaml_files(&from).into_iter().map(|f| format!("{path}/{f}")).collect()
        } else {
            vec![path.to_owned()]
        };
        for file in files {
            kinds.push(json!({"file": file, "kind": kind, "via": "fixture", "parent": null}));
        }
    }
    for dir in ["models", "adapters", "snippets", "examples"] {
        copy_tree(&repo().join(dir), &root.path().join(dir));
    }
    let kinds_file = root.path().join("kinds.jsonl");
    let lines: Vec<String> = kinds.iter().map(Value::to_string).collect();
    std::fs::write(&kinds_file, lines.join("\n") + "\n").expect("write kinds");
    for version in ["3.6.2", "3.17.0"] {
        let out = Command::new(suite.python())
            .arg(repo().join("tests/conformance/oracle.py"))
            .arg(root.path())
            .arg("--lf-root")
            .arg(suite.cache.join(format!("lf-{version}")))
            .arg("--kinds")
            .arg(&kinds_file)
            .envs(suite.env.iter().cloned())
            .output()
            .expect("run oracle.py");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let verdicts: Vec<Verdict> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("oracle line"))
            .collect();
        let accepted: Vec<&Verdict> = verdicts.iter().filter(|v| v.valid).collect();
        eprintln!(
            "conformance: lf {version} accepts {} of {} repository fixtures",
            accepted.len(),
            verdicts.len()
        );
        for v in accepted {
            let project = if v.file.starts_with("examples/quickstart") {
                root.path().join("examples/quickstart")
            } else {
                root.path().to_path_buf()
            };
            let t = Test::new()
                .env("VIRTUAL_ENV", &suite.snippet_venv().display().to_string())
                .env("OPENAI_API_KEY", "dummy")
                .env("ACME_URL", "http://127.0.0.1:9/x")
                .args([
                    "-C",
                    &project.display().to_string(),
                    "validate",
                    &root.path().join(&v.file).display().to_string(),
                ]);
            let out = t.run();
            assert_eq!(
                out.code, 0,
                "lf {version} accepts `{}`, lfeval does not:\n{}",
                v.file, out.stderr
            );
        }
    }
}

pub fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir").flatten() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from, to).expect("copy");
    }
}

/// Inputs every adapter gets.
fn model_inputs() -> Vec<(&'static str, Value, Value)> {
    vec![
        (
            "hello",
            json!({"messages": [{"role": "user", "content": "Hello!"}]}),
            json!({}),
        ),
        (
            "system-and-quotes",
            json!({"messages": [
                {"role": "system", "content": "Answer in \"one\" word.\nNo <html> & no ünïcödé tricks."},
                {"role": "user", "content": "Capital of France? \u{2603}"}
            ]}),
            json!({"temperature": 0.0, "max_tokens": 16}),
        ),
        (
            "multi-turn-with-state",
            json!({"messages": [
                {"role": "user", "content": "Hi, I am Alice."},
                {"role": "assistant", "content": "Hello Alice!", "conversation_id": "c-1", "response_id": "resp_1"},
                {"role": "user", "content": "What is my name?"}
            ]}),
            json!({}),
        ),
        (
            "structured",
            json!({"messages": [{"role": "user", "content": "Judge this."}],
                   "response_format": {"type": "json_schema", "json_schema": {"name": "judgement", "strict": true,
                       "schema": {"type": "object", "properties": {"score": {"type": "number"}}, "required": ["score"]}}}}),
            json!({"seed": 7}),
        ),
    ]
}

/// Recorded responses every adapter gets (most adapters fail on most of them, in both engines).
fn bodies() -> Vec<(&'static str, String, u16)> {
    vec![
        (
            "openai-chat",
            json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}).to_string(),
            200,
        ),
        (
            "openai-refusal",
            json!({"choices": [{"message": {"role": "assistant", "content": null, "refusal": "I cannot help."}}]}).to_string(),
            200,
        ),
        (
            "sse-stream",
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo \\\"x\\\"\"}}]}\n\ndata: [DONE]\n\n".to_owned(),
            200,
        ),
        (
            "dify",
            json!({"answer": "Your name is Alice.", "conversation_id": "c-1", "metadata": {"retriever_resources": [{"content": "Alice is a user."}]}}).to_string(),
            200,
        ),
        (
            "ragflow",
            json!({"choices": [{"message": {"role": "assistant", "content": "Bern", "reference": [{"content": "Bern is the capital."}]}}]}).to_string(),
            200,
        ),
        (
            "responses",
            json!({"id": "resp_2", "object": "response", "output": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "lookup", "arguments": "{\"q\": \"x\"}", "status": "completed"},
                {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": "Done.", "annotations": []}]}
            ], "usage": {"input_tokens": 20, "output_tokens": 3}}).to_string(),
            200,
        ),
        (
            "anthropic",
            json!({"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "text", "text": "Bonjour"}], "usage": {"input_tokens": 9, "output_tokens": 2}}).to_string(),
            200,
        ),
        (
            "gemini",
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hallo"}, {"text": " Welt"}]}}], "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2}}).to_string(),
            200,
        ),
        ("server-error", "{\"error\": {\"message\": \"overloaded\"}}".to_owned(), 500),
    ]
}

struct AdapterUnderTest {
    name: String,
    adapter: lfeval::model::adapter::Adapter,
    /// The request to the oracle, without its cases.
    request: Value,
    /// Uses filters lf's docs-era environment lacks.
    needs_317: bool,
}

fn adapters_under_test(suite: &Suite) -> Vec<AdapterUnderTest> {
    let mut out = Vec::new();
    let oracle = suite.oracle("3.17.0");
    for v in oracle.iter().filter(|v| v.kind == "model_adapter") {
        let path = suite.bundle.join(&v.file);
        let root = suite.bundle.join(project_of(&v.file));
        let vars = lfeval::variables::Variables::fixed(suite.env.iter().cloned().collect());
        let node = lfeval::yaml::load(&path, &root, &vars).expect("load adapter");
        let adapter = lfeval::model::adapter::from_yaml(&node, "").expect("read adapter");
        out.push(AdapterUnderTest {
            name: v.file.clone(),
            needs_317: uses_317_filters(&adapter),
            adapter,
            request: json!({"adapter": path}),
        });
    }
    for adapter in lfeval::model::adapter::builtins().expect("built-in adapters") {
        out.push(AdapterUnderTest {
            name: adapter.key.clone(),
            needs_317: uses_317_filters(&adapter),
            request: json!({
                "process_input": adapter.process_input.text,
                "process_output": adapter.process_output.text,
            }),
            adapter,
        });
    }
    out
}

fn uses_317_filters(adapter: &lfeval::model::adapter::Adapter) -> bool {
    let text = format!("{}{}", adapter.process_input.text, adapter.process_output.text);
    ["fromjson", "json_escape", "merge", "regex_replace"]
        .iter()
        .any(|f| text.contains(f))
}

#[test]
fn adapters_render_byte_identically_to_jinja2_as_lf_configures_it() {
    let Some(suite) = suite() else { return };
    let model_info = json!({"model_key": "gpt-4.1-nano", "task": "chat_completion", "modality": "text"});
    let mut compared = 0;
    let mut differences = Vec::new();
    for under_test in adapters_under_test(suite) {
        let mut cases = Vec::new();
        for (name, input, kwargs) in model_inputs() {
            cases.push(
                json!({"name": format!("in:{name}"), "input": input, "kwargs": kwargs, "model_info": model_info}),
            );
        }
        for (name, body, status) in bodies() {
            cases.push(
                json!({"name": format!("out:{name}"), "body": body, "status_code": status, "model_info": model_info}),
            );
        }
        let compiled =
            lfeval::model::adapter::CompiledAdapter::compile(std::sync::Arc::new(under_test.adapter.clone()))
                .expect("compile adapter");
        let info = lfeval::model::adapter::ModelInfo {
            model_key: Some("gpt-4.1-nano".to_owned()),
            task: lfeval::model::io::Task::ChatCompletion,
        };
        let eras: &[&str] = if under_test.needs_317 {
            &["3.17.0"]
        } else {
            &["3.17.0", "3.6.2"]
        };
        for era in eras {
            let mut request = under_test.request.clone();
            request["cases"] = Value::Array(cases.clone());
            let rendered = render_oracle(suite, era, &request);
            for (case, expected) in cases.iter().zip(rendered["cases"].as_array().expect("cases")) {
                let name = case["name"].as_str().expect("name");
                let (step, ours) = if let Some(input) = case.get("input") {
                    let kwargs = case["kwargs"].as_object().cloned().unwrap_or_default();
                    ("process_input", compiled.render_input(input, &info, &kwargs))
                } else {
                    let body = case["body"].as_str().expect("body");
                    let status = case["status_code"].as_u64().expect("status") as u16;
                    (
                        "process_output",
                        compiled.render_output(body, status, &serde_json::Map::new(), &info),
                    )
                };
                let theirs = &expected[step];
                compared += 1;
                match (theirs.get("rendered").and_then(Value::as_str), &ours) {
                    (Some(theirs), Ok(ours)) if theirs == ours => {}
                    (None, Err(_)) => {}
                    (theirs, ours) => differences.push(format!(
                        "{} {name} (Jinja2 of lf {era}):\n  Jinja2: {}\n  lfeval: {}",
                        under_test.name,
                        theirs.map_or_else(|| expected[step].to_string(), str::to_owned),
                        match ours {
                            Ok(s) => s.clone(),
                            Err(d) => format!("error: {}", d.message),
                        }
                    )),
                }
            }
        }
    }
    eprintln!("conformance: {compared} adapter renderings compared with Jinja2");
    assert!(
        differences.is_empty(),
        "{} rendering(s) differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

pub fn render_oracle(suite: &Suite, era: &str, request: &Value) -> Value {
    use std::io::Write;
    let mut child = Command::new(suite.python())
        .arg(repo().join("tests/conformance/render_oracle.py"))
        .arg("--lf-root")
        .arg(suite.cache.join(format!("lf-{era}")))
        .envs(suite.env.iter().cloned())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run render_oracle.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write request");
    let out = child.wait_with_output().expect("render_oracle.py");
    assert!(
        out.status.success(),
        "render_oracle.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("render_oracle.py output")
}
