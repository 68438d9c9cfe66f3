//! `lfeval validate [PATH…]`: check every entity of the project (or the given files) as the kind
//! its content says it is — models, adapters, datasets, tasks, evaluations, run configs resolved
//! down to every task, dataset, model and snippet (without calling a model), scorer and action
//! rule fragments — and report every error at once. Governance files (AI apps) are recognised
//! and skipped with a note; what only the hosted platform runs is refused by name.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Map;

use crate::cli::{GlobalArgs, ValidateArgs};
use crate::diagnostic::Diagnostic;
use crate::entity::{self, EntityKind};
use crate::eval::{dataset::DatasetSpec, evaluation, prepare, run_config, scorer, task};
use crate::exit_status::ExitStatus;
use crate::model::Connection;
use crate::model::adapter::CompiledAdapter;
use crate::model::connection::snippet;
use crate::printer::Printer;
use crate::project::{Project, yaml_files};
use crate::python::PythonRuntime;
use crate::yaml::{self, Node, from_node};

/// Folders lf (and lfeval) keep entities in.
const FOLDERS: &[&str] = &[
    "model_adapters",
    "adapters",
    "models",
    "dataset_generators",
    "datasets",
    "tasks",
    "evaluations",
    "apps",
    "ai_apps",
    "frameworks",
    "risk_scoring_methodologies",
    "action_rules",
];

/// How one file fared.
enum Verdict {
    /// Checked: what it is.
    Valid(String),
    /// Recognised, not used by lfeval.
    Skipped(String),
    /// Needs the hosted platform.
    Refused(Diagnostic),
    Invalid(Vec<Diagnostic>),
}

struct Checker<'a> {
    global: &'a GlobalArgs,
    project: Project,
    python: OnceCell<Result<PythonRuntime, String>>,
    warnings: Vec<String>,
}

impl Checker<'_> {
    fn python(&self) -> Result<&PythonRuntime, Diagnostic> {
        self.python
            .get_or_init(|| super::start_python(self.global).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| Diagnostic::new(e.clone()))
    }

    fn display(&self, path: &Path) -> String {
        yaml::display_path(&self.project.root, path)
    }

    /// Checks a file. A snippet that imports a package this environment lacks is the machine's
    /// problem, not the file's: it is a warning, like an unset variable.
    fn check_file(&mut self, path: &Path) -> Verdict {
        match self.check_kind(path) {
            Verdict::Invalid(ds) if !ds.is_empty() && ds.iter().all(|d| missing_module(d).is_some()) => {
                for d in &ds {
                    self.warnings.push(format!(
                        "cannot be used here yet: {}{}",
                        d.message,
                        d.hint.as_ref().map(|h| format!("\nhint: {h}")).unwrap_or_default()
                    ));
                }
                Verdict::Valid(format!(
                    "valid, but imports `{}`, which is not installed here",
                    ds.iter().filter_map(missing_module).collect::<Vec<_>>().join("`, `")
                ))
            }
            other => other,
        }
    }

    fn check_kind(&mut self, path: &Path) -> Verdict {
        let node = match yaml::load(path, &self.project.root, &self.project.vars) {
            Ok(node) => node,
            Err(d) => return Verdict::Invalid(vec![d]),
        };
        let Some(kind) = entity::classify(&node, path) else {
            return Verdict::Invalid(vec![entity::unknown_kind(&node)]);
        };
        let file = self.display(path);
        // Where the folder already says what the file is, saying it again is noise.
        let looks_like = |d: Diagnostic| {
            if entity::from_location(path) == Some(kind) {
                d
            } else {
                d.with_note(format!("this file looks like {}", kind.described()))
            }
        };
        if let Some(feature) = kind.hosted() {
            return Verdict::Refused(feature.diagnostic(&format!("`{file}` is {}", kind.described())));
        }
        let checked = match kind {
            EntityKind::RunConfig => return self.check_run_config(path),
            EntityKind::Model => self.check_model(node),
            EntityKind::ModelAdapter => check_adapter(&node),
            EntityKind::Dataset => return check_dataset(&node, &file, &mut self.warnings),
            EntityKind::Task => self.check_task(node),
            EntityKind::Evaluation => check_evaluation(&node),
            EntityKind::AiApp => {
                return match entity::check_app(&node) {
                    Ok(key) => Verdict::Skipped(format!(
                        "`{file}` is an AI app (`{key}`): AI apps are governance objects of the hosted AI GO! platform; lfeval skips them"
                    )),
                    Err(d) => Verdict::Invalid(vec![looks_like(d)]),
                };
            }
            EntityKind::Scorer => scorer::from_yaml(&node, "").map(|s| format!("a scorer (`{}`)", s.kind_name)),
            EntityKind::ActionRule => {
                from_node::<task::ActionRule>(&node, "").map(|r| format!("an action rule (`{}`)", r.key))
            }
            EntityKind::DatasetGenerator
            | EntityKind::AssessmentPlan
            | EntityKind::RiskScorers
            | EntityKind::RiskScoringMethodology
            | EntityKind::Framework => Ok(kind.described()),
        };
        match checked {
            Ok(what) => Verdict::Valid(what),
            Err(d) => Verdict::Invalid(vec![looks_like(d)]),
        }
    }

    fn check_model(&mut self, node: Node) -> Result<String, Diagnostic> {
        let model = crate::model::from_yaml(node, "")?;
        let adapter = self.project.adapter(&model.adapter.value).map_err(|d| {
            d.at_location(model.adapter.location.clone())
                .with_path(model.adapter.path.clone())
        })?;
        CompiledAdapter::compile(Arc::clone(&adapter))?;
        if let Connection::CustomInference(config) = &model.connection {
            snippet::load(&model, config, 1, self.python()?)?;
        }
        if let Err(d) = self.project.register_model_secrets(&model) {
            self.warnings.push(d.to_string());
        }
        for value in model.deferred_values() {
            if let Err(d) = value.resolve(&self.project.secrets, true) {
                self.warnings
                    .push(format!("model `{}` cannot be used here yet: {d}", model.key));
            }
        }
        Ok(format!("a model (`{}`)", model.key))
    }

    fn check_task(&mut self, node: Node) -> Result<String, Diagnostic> {
        let task = task::from_yaml(node)?;
        prepare::check_task(&task, self.python()?)?;
        Ok(format!("a task (`{}`)", task.key))
    }

    fn check_run_config(&mut self, path: &Path) -> Verdict {
        let loaded = match run_config::load_file(path, Some(&self.project.root), self.global.env_file.as_deref()) {
            Ok(loaded) => loaded,
            Err(e) => {
                let d = match e.downcast::<Diagnostic>() {
                    Ok(d) => d,
                    Err(e) => Diagnostic::new(format!("{e:#}")),
                };
                if d.message.contains(entity::REFUSAL_MARK) {
                    return Verdict::Refused(d);
                }
                return Verdict::Invalid(vec![d]);
            }
        };
        let python = match self.python() {
            Ok(p) => p.clone(),
            Err(d) => return Verdict::Invalid(vec![d]),
        };
        let file = self.display(path);
        let (verdict, used) = match &loaded.evaluation {
            Some(evaluation) => {
                let scope = prepare::Scope {
                    project: &loaded.project,
                    datasets: &loaded.datasets,
                    tasks: &loaded.tasks,
                    evaluation,
                };
                match prepare::check(&scope, &python) {
                    Ok((specs, warnings)) => {
                        self.warnings.extend(warnings);
                        let used = used_keys(&specs);
                        (
                            Verdict::Valid(format!(
                                "a run config: {} task specification(s) ready to run",
                                specs.len()
                            )),
                            used,
                        )
                    }
                    Err(e) => (Verdict::Invalid(vec![to_diagnostic(e)]), Vec::new()),
                }
            }
            None => {
                let checked = prepare::check_declared(&loaded, &python);
                let note = match &loaded.evaluation_key {
                    Some(key) => {
                        let names: Vec<String> = loaded.missing_config.iter().map(|k| format!("`{k}`")).collect();
                        self.warnings.push(format!(
                            "`{file}`: evaluation `{key}` needs config value(s) {} before `lfeval run` can run it (set `config:` in the run config)",
                            names.join(", ")
                        ));
                        format!("a run config whose evaluation `{key}` waits for its config")
                    }
                    None => "a run config that registers entities (no evaluation)".to_owned(),
                };
                match checked {
                    Ok(n) => (Verdict::Valid(format!("{note}; {n} entit(ies) checked")), Vec::new()),
                    Err(d) => (Verdict::Invalid(vec![d]), Vec::new()),
                }
            }
        };
        let mut datasets_used: Vec<String> = loaded.declared.datasets.clone();
        datasets_used.extend(used);
        let tasks_used: Vec<String> = loaded
            .evaluation
            .iter()
            .flat_map(|e| e.specs.iter().map(|s| s.task_key.value.clone()))
            .chain(loaded.declared.tasks.iter().cloned())
            .collect();
        self.warnings.extend(run_config::unused_load_errors(
            &file,
            &loaded.datasets,
            &loaded.tasks,
            &tasks_used,
            &datasets_used,
        ));
        verdict
    }
}

/// The module a snippet failed to import, when that is all that is wrong.
fn missing_module(d: &Diagnostic) -> Option<String> {
    static MISSING: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"No module named '([^']+)'").expect("valid regex"));
    MISSING.captures(&d.message).map(|c| c[1].to_owned())
}

fn to_diagnostic(e: anyhow::Error) -> Diagnostic {
    match e.downcast::<Diagnostic>() {
        Ok(d) => d,
        Err(e) => Diagnostic::new(format!("{e:#}")),
    }
}

/// The dataset keys prepared specifications read.
fn used_keys(specs: &[prepare::Prepared]) -> Vec<String> {
    specs
        .iter()
        .flat_map(|p| p.datasets().into_iter().map(|d| d.spec.key.clone()))
        .collect()
}

fn check_adapter(node: &Node) -> Result<String, Diagnostic> {
    let adapter = crate::model::adapter::from_yaml(node, "")?;
    let key = adapter.key.clone();
    CompiledAdapter::compile(Arc::new(adapter))?;
    Ok(format!("a model adapter (`{key}`)"))
}

fn check_dataset(node: &Node, file: &str, warnings: &mut Vec<String>) -> Verdict {
    let spec: DatasetSpec = match from_node(node, "") {
        Ok(spec) => spec,
        Err(d) => return Verdict::Invalid(vec![d.with_note("this file looks like a dataset")]),
    };
    match spec.effective_source() {
        Ok(source) if !source.is_local() => warnings.push(format!(
            "dataset `{}` (`{file}`): its source is `{}`, which `lfeval run` cannot read yet",
            spec.key,
            source.type_name()
        )),
        Ok(_) => {}
        Err(crate::eval::dataset::DatasetError::GeneratorUnsupported { .. }) => {
            return Verdict::Refused(crate::entity::HostedFeature::DatasetGenerators.diagnostic(&format!(
                "dataset `{}` (`{file}`) is made by a dataset generator",
                spec.key
            )));
        }
        Err(e) => return Verdict::Invalid(vec![Diagnostic::new(e.to_string()).at(&node.span)]),
    }
    Verdict::Valid(format!("a dataset (`{}`)", spec.key))
}

/// An evaluation on its own: `config_spec` defaults or placeholders stand in for its config.
fn check_evaluation(node: &Node) -> Result<String, Diagnostic> {
    let spec = evaluation::config_spec(node)?;
    let values: Map<String, serde_json::Value> = spec.iter().map(|p| (p.key.clone(), p.placeholder())).collect();
    let mut node = node.clone();
    yaml::substitute_known_config(&mut node, &values)?;
    let evaluation = evaluation::from_yaml(&node, &evaluation::RunOverrides::default())?;
    Ok(format!(
        "an evaluation (`{}`, {} task specification(s))",
        evaluation.key,
        evaluation.specs.len() + evaluation.repeats.len()
    ))
}

/// The files bare `validate` checks: every entity folder, and the YAML files at the top.
fn project_files(project: &Project) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let skip = project.root.join("adapters").join("builtin");
    for folder in FOLDERS {
        files.extend(yaml_files(&project.root.join(folder), Some(&skip)));
    }
    if let Ok(entries) = std::fs::read_dir(&project.root) {
        let mut top: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        top.sort();
        files.extend(top);
    }
    files
}

pub fn run(global: &GlobalArgs, args: &ValidateArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let explicit = !args.paths.is_empty();
    let project = super::load_project(global)?;
    let mut files = Vec::new();
    if explicit {
        for path in &args.paths {
            if path.is_dir() {
                files.extend(yaml_files(path, None));
            } else {
                files.push(path.clone());
            }
        }
    } else {
        files = project_files(&project);
    }
    let mut checker = Checker {
        global,
        project,
        python: OnceCell::new(),
        warnings: Vec::new(),
    };
    let (mut valid, mut skipped, mut refused, mut invalid) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    let mut refusals = Vec::new();
    let mut notes = Vec::new();
    let mut report = Vec::new();
    for file in &files {
        let Ok(path) = file.canonicalize() else {
            problems.push(Diagnostic::new(format!("cannot read `{}`", file.display())));
            invalid += 1;
            continue;
        };
        let shown = checker.display(&path);
        let warned = checker.warnings.len();
        let verdict = checker.check_file(&path);
        if args.json {
            let (name, messages) = match &verdict {
                Verdict::Valid(what) => ("valid", vec![what.clone()]),
                Verdict::Skipped(note) => ("skipped", vec![note.clone()]),
                Verdict::Refused(d) => ("refused", vec![d.to_string()]),
                Verdict::Invalid(ds) => ("invalid", ds.iter().map(ToString::to_string).collect()),
            };
            report.push(serde_json::json!({
                "file": shown,
                "verdict": name,
                "messages": messages,
                "warnings": checker.warnings[warned..],
            }));
        }
        match verdict {
            Verdict::Valid(what) => {
                valid += 1;
                if explicit {
                    notes.push(printer.ok(&format!("`{shown}`: {what}")));
                }
            }
            Verdict::Skipped(note) => {
                skipped += 1;
                notes.push(format!("note: {note}"));
            }
            Verdict::Refused(d) => {
                refused += 1;
                if explicit {
                    refusals.push(d);
                } else {
                    checker.warnings.push(d.to_string());
                }
            }
            Verdict::Invalid(ds) => {
                invalid += 1;
                problems.extend(ds);
            }
        }
    }
    if !explicit {
        // Each file was checked on its own; a key defined twice only shows across files.
        for error in &checker.project.errors {
            let message = &error.diagnostic.message;
            if message.starts_with("duplicate model key") || message.starts_with("duplicate adapter key") {
                problems.push(error.diagnostic.clone());
                invalid += 1;
            }
        }
    }
    if let Some(Ok(python)) = checker.python.get() {
        python.flush();
    }
    if args.json {
        printer.outln(&serde_json::to_string_pretty(&serde_json::json!({
            "files": report,
            "errors": problems.len(),
        }))?);
        let failed = invalid > 0 || (explicit && refused > 0);
        return Ok(if failed {
            ExitStatus::Failure
        } else {
            ExitStatus::Success
        });
    }
    for warning in &checker.warnings {
        printer.warn(warning);
        printer.errln("");
    }
    for problem in refusals.iter().chain(&problems) {
        printer.error(&problem.to_string());
        printer.errln("");
    }
    for note in &notes {
        printer.errln(note);
    }
    let mut parts = vec![format!("{valid} valid")];
    if skipped > 0 {
        parts.push(format!("{skipped} skipped"));
    }
    if refused > 0 {
        parts.push(format!("{refused} need the hosted platform"));
    }
    let summary = format!(
        "checked {} file(s): {}; {} error(s)",
        files.len(),
        parts.join(", "),
        problems.len()
    );
    let failed = invalid > 0 || (explicit && refused > 0);
    if failed {
        printer.errln(&printer.bad(&summary));
        Ok(ExitStatus::Failure)
    } else {
        printer.errln(&printer.ok(&summary));
        Ok(ExitStatus::Success)
    }
}
