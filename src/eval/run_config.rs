//! A run config (`lfeval run -f run.yaml`, aigo.md §8.8): inline `model_adapters`, `models`
//! (full definitions or `$provider` shorthands), `datasets`, `tasks`, `evaluation`, `secrets` and
//! `config`, each inline or by `$ref`, merged with the entities of the project's folders
//! (`models/`, `model_adapters/`, `adapters/`, `datasets/`, `tasks/`, `evaluations/`). The project
//! is the run file's directory unless `-C` says otherwise.
//!
//! A run config may only register entities (no `evaluation`, the `lf add -f run.yaml` pattern),
//! or leave the evaluation's `config` values to another file (an assessment plan): [`load_file`]
//! reads it either way, for `validate`; [`load`] insists on an evaluation ready to run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use crate::config_value::ConfigValue;
use crate::diagnostic::{Diagnostic, Location};
use crate::entity::{EntityKind, HostedFeature};
use crate::eval::dataset::DatasetSpec;
use crate::eval::entities::Entities;
use crate::eval::evaluation::{self, Evaluation, RunOverrides};
use crate::eval::policy::Policy;
use crate::eval::task::{self, TaskDef};
use crate::model::provider;
use crate::project::{Project, yaml_files};
use crate::yaml::{self, Node, SourceFile, from_node};

#[derive(Debug, Clone)]
pub struct DatasetEntry {
    pub spec: DatasetSpec,
    /// Relative `file_path`s resolve against the directory of the file that defined it.
    pub base_dir: PathBuf,
    pub file: String,
    /// Every file the definition was read from (the data files are hashed separately).
    pub sources: Vec<Arc<SourceFile>>,
}

pub struct RunConfig {
    pub file: PathBuf,
    pub project: Project,
    pub datasets: Entities<DatasetEntry>,
    pub tasks: Entities<TaskDef>,
    pub evaluation: Evaluation,
    /// The config as loaded, credentials masked: stored with the results.
    pub resolved: Value,
    /// The files of the run config itself and of its evaluation (for the fingerprint).
    pub sources: Vec<Arc<SourceFile>>,
    /// Quality gates checked when the run ends.
    pub policies: Vec<Policy>,
}

/// A run file as `validate` sees it: everything it registers, and its evaluation if it has one
/// that can run.
pub struct RunFile {
    pub file: PathBuf,
    pub project: Project,
    pub datasets: Entities<DatasetEntry>,
    pub tasks: Entities<TaskDef>,
    pub evaluation: Option<Evaluation>,
    /// The evaluation's key, when it has one.
    pub evaluation_key: Option<String>,
    /// `config_spec` values of the evaluation that neither `config` nor a default provides.
    pub missing_config: Vec<String>,
    /// What the file itself defines (inline or by `$ref`), by kind.
    pub declared: Declared,
    pub resolved: Value,
    pub sources: Vec<Arc<SourceFile>>,
    /// Quality gates checked when the run ends.
    pub policies: Vec<Policy>,
}

#[derive(Debug, Default, Clone)]
pub struct Declared {
    pub adapters: Vec<String>,
    pub models: Vec<String>,
    pub datasets: Vec<String>,
    pub tasks: Vec<String>,
}

/// Only checks the top-level keys (so a typo gets "did you mean").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "only the key names are checked")]
struct TopLevel {
    secrets: Option<IgnoredAny>,
    model_adapters: Option<IgnoredAny>,
    models: Option<IgnoredAny>,
    dataset_generators: Option<IgnoredAny>,
    datasets: Option<IgnoredAny>,
    tasks: Option<IgnoredAny>,
    evaluation: Option<IgnoredAny>,
    config: Option<IgnoredAny>,
    run_config: Option<IgnoredAny>,
    policies: Option<IgnoredAny>,
}

fn items<'a>(node: &'a Node, key: &str) -> Result<Vec<(String, &'a Node)>, Diagnostic> {
    match node.get(key).map(|n| &n.value) {
        None | Some(yaml::Value::Null) => Ok(Vec::new()),
        Some(yaml::Value::Seq(items)) => Ok(items
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{key}[{i}]"), n))
            .collect()),
        Some(_) => {
            let n = node.get(key).unwrap_or(node);
            Err(Diagnostic::new(format!("`{key}` must be a list, found {}", n.kind()))
                .at(&n.span)
                .with_path(key.to_owned()))
        }
    }
}

/// Loads a run config whose evaluation can run.
pub fn load(run_file: &Path, project_dir: Option<&Path>, env_file: Option<&Path>) -> anyhow::Result<RunConfig> {
    let loaded = load_file(run_file, project_dir, env_file)?;
    let display = yaml::display_path(&loaded.project.root, &loaded.file);
    let Some(evaluation) = loaded.evaluation else {
        if let Some(key) = &loaded.evaluation_key {
            let names: Vec<String> = loaded.missing_config.iter().map(|k| format!("`{k}`")).collect();
            return Err(Diagnostic::new(format!(
                "evaluation `{key}` needs config value(s) {} to run",
                names.join(", ")
            ))
            .with_hint(format!(
                "set them under `config:` in `{display}`, e.g. `config: {{{}: ...}}`",
                loaded.missing_config.first().map_or("", String::as_str)
            ))
            .into());
        }
        return Err(Diagnostic::new(format!("`{display}` has no `evaluation` to run"))
            .with_note("it only registers entities (models, adapters, datasets, tasks)")
            .with_hint("add an `evaluation:` with `task_specifications`")
            .into());
    };
    Ok(RunConfig {
        file: loaded.file,
        project: loaded.project,
        datasets: loaded.datasets,
        tasks: loaded.tasks,
        evaluation,
        resolved: loaded.resolved,
        sources: loaded.sources,
        policies: loaded.policies,
    })
}

/// Loads a run file, with or without a runnable evaluation.
pub fn load_file(run_file: &Path, project_dir: Option<&Path>, env_file: Option<&Path>) -> anyhow::Result<RunFile> {
    let run_file = run_file
        .canonicalize()
        .with_context(|| format!("cannot read run config `{}`", run_file.display()))?;
    let dir = match project_dir {
        Some(d) => d.to_path_buf(),
        None => run_file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    let mut project = Project::load(&dir, env_file)?;
    let root = yaml::load(&run_file, &project.root, &project.vars)?;
    let file_display = yaml::display_path(&project.root, &run_file);
    if !crate::entity::is_run_config(&root)
        && let Some(kind) = crate::entity::classify(&root, &run_file).filter(|k| *k != EntityKind::RunConfig)
    {
        return Err(Diagnostic::new(format!(
            "`{file_display}` is {}, not a run config",
            kind.described()
        ))
        .at(&root.span)
        .with_hint("a run config lists `models`, `datasets`, `tasks` and an `evaluation` (each inline or by `$ref`); `lfeval validate FILE` checks any entity file")
        .into());
    }
    from_node::<TopLevel>(&root, "")?;
    let mut declared = Declared::default();

    // Secrets first: models may refer to them.
    if let Some(secrets_node) = root.get("secrets") {
        let secrets: IndexMap<String, ConfigValue> = from_node(secrets_node, "secrets")?;
        for (name, value) in secrets {
            let resolved = value.resolve(&project.secrets, true)?;
            let text = resolved.as_str().map_or_else(|| resolved.to_string(), str::to_owned);
            project
                .secrets
                .add_inline(&name, &text, &format!("{file_display}:{}", value.location.line))?;
        }
    }
    for (path, node) in items(&root, "model_adapters")? {
        let adapter = crate::model::adapter::from_yaml(node, &path)?;
        declared.adapters.push(adapter.key.clone());
        if let Some(existing) = project.adapters.get(&adapter.key) {
            if existing.file == node.span.file.display {
                continue;
            }
            return Err(Diagnostic::new(format!("duplicate adapter key `{}`", adapter.key))
                .at_location(adapter.location.clone())
                .with_note(format!("also defined in `{}`", existing.file))
                .into());
        }
        project.adapters.insert(adapter.key.clone(), Arc::new(adapter));
    }
    for (path, node) in items(&root, "models")? {
        if let Some(reference) = node.get("$provider") {
            let model = provider_model(&project, reference, &file_display)?;
            declared.models.push(model.key.clone());
            if !project.models.contains_key(&model.key) {
                project.add_model(model, &run_file);
            }
            continue;
        }
        let model = crate::model::from_yaml(node.clone(), &path)?;
        declared.models.push(model.key.clone());
        if let Some(existing) = project.models.get(&model.key) {
            if existing.file == node.span.file.display {
                continue;
            }
            return Err(Diagnostic::new(format!("duplicate model key `{}`", model.key))
                .at_location(model.location.clone())
                .with_note(format!("also defined in `{}`", existing.file))
                .into());
        }
        project.add_model(model, &run_file);
    }
    if let Some((_, node)) = items(&root, "dataset_generators")?.first() {
        return Err(HostedFeature::DatasetGenerators
            .diagnostic(&format!("`{file_display}` defines dataset generators"))
            .at(&node.span)
            .with_path("dataset_generators")
            .into());
    }

    let mut datasets = Entities::new("dataset", "the run config's `datasets:` or `datasets/`");
    let mut tasks = Entities::new("task", "the run config's `tasks:` or `tasks/`");
    for path in folder_entities(&project, "datasets", EntityKind::Dataset) {
        let display = yaml::display_path(&project.root, &path);
        match yaml::load(&path, &project.root, &project.vars).and_then(|node| dataset_entry(&node, "", &path)) {
            Ok(entry) => {
                let key = entry.spec.key.clone();
                datasets.insert(&key, entry, &display, &path, false)?;
            }
            Err(d) => datasets.record(None, &display, d),
        }
    }
    for (p, node) in items(&root, "datasets")? {
        let entry = dataset_entry(node, &p, &run_file)?;
        let key = entry.spec.key.clone();
        declared.datasets.push(key.clone());
        let path = node.span.file.path.clone();
        datasets.insert(&key, entry, &node.span.file.display, &path, true)?;
    }
    for path in folder_entities(&project, "tasks", EntityKind::Task) {
        let display = yaml::display_path(&project.root, &path);
        match yaml::load(&path, &project.root, &project.vars).and_then(task::from_yaml) {
            Ok(task) => {
                let key = task.key.clone();
                tasks.insert(&key, task, &display, &path, false)?;
            }
            Err(d) => tasks.record(None, &display, d),
        }
    }
    for (_, node) in items(&root, "tasks")? {
        let path = node.span.file.path.clone();
        let display = node.span.file.display.clone();
        let task = task::from_yaml(node.clone())?;
        let key = task.key.clone();
        declared.tasks.push(key.clone());
        tasks.insert(&key, task, &display, &path, true)?;
    }

    let overrides: RunOverrides = match root.get("run_config") {
        Some(n) => from_node(n, "run_config")?,
        None => RunOverrides::default(),
    };
    let config: Map<String, Value> = match root.get("config") {
        Some(n) => from_node(n, "config")?,
        None => Map::new(),
    };
    let evaluation_node = match root.get("evaluation") {
        Some(n) => Some(n.clone()),
        None => {
            let found = yaml_files(&project.root.join("evaluations"), None);
            match found.as_slice() {
                [one] => Some(yaml::load(one, &project.root, &project.vars)?),
                [] => None,
                _ => {
                    return Err(Diagnostic::new(format!(
                        "`{file_display}` has no `evaluation` and `evaluations/` holds several"
                    ))
                    .at(&root.span)
                    .into());
                }
            }
        }
    };
    let mut sources = yaml::sources(&root);
    let (evaluation, evaluation_key, missing_config) = match evaluation_node {
        None => (None, None, Vec::new()),
        Some(node) => {
            sources.extend(yaml::sources(&node));
            let key = node.get("key").and_then(Node::as_str).map(str::to_owned);
            let (values, missing) = evaluation::config_values(&evaluation::config_spec(&node)?, &config);
            if missing.is_empty() {
                let mut node = node;
                yaml::substitute_config(&mut node, &values)?;
                let mut evaluation = evaluation::from_yaml(&node, &overrides)?;
                resolve_repeats(&mut evaluation, &project, &run_file)?;
                (Some(evaluation), key, missing)
            } else {
                (None, key, missing)
            }
        }
    };

    let policies: Vec<Policy> = match root.get("policies") {
        Some(n) if !matches!(n.value, yaml::Value::Null) => {
            let policies: Vec<Policy> = from_node(n, "policies")?;
            crate::eval::policy::check_keys(&policies).map_err(|message| {
                Diagnostic::new(message)
                    .at(&n.span)
                    .with_path("policies".to_owned())
                    .with_hint("keys are 1 to 250 characters: letters, digits, `_` and `-`")
            })?;
            policies
        }
        _ => Vec::new(),
    };
    project.register_inline_secrets();
    let resolved = masked_json(&root);
    Ok(RunFile {
        file: run_file,
        project,
        datasets,
        tasks,
        evaluation,
        evaluation_key,
        missing_config,
        declared,
        resolved,
        sources,
        policies,
    })
}

/// Warnings for the project's entity files that failed to load but that nothing in the run
/// uses: `used_tasks` and `used_datasets` are the keys the run reads.
pub fn unused_load_errors(
    file: &str,
    datasets: &Entities<DatasetEntry>,
    tasks: &Entities<TaskDef>,
    used_tasks: &[String],
    used_datasets: &[String],
) -> Vec<String> {
    datasets
        .unused_errors(used_datasets)
        .chain(tasks.unused_errors(used_tasks))
        .map(|e| {
            format!(
                "`{file}` does not use `{}`, which failed to load: {}",
                e.file, e.diagnostic.message
            )
        })
        .collect()
}

impl Declared {
    pub fn is_empty(&self) -> bool {
        self.adapters.is_empty() && self.models.is_empty() && self.datasets.is_empty() && self.tasks.is_empty()
    }
}

/// The model behind a `$provider: "<provider>/<model>"` item.
fn provider_model(project: &Project, reference: &Node, file: &str) -> Result<crate::model::Model, Diagnostic> {
    let text = reference.as_str().ok_or_else(|| {
        Diagnostic::new(format!("`$provider` must be a string, found {}", reference.kind()))
            .at(&reference.span)
            .with_path("$provider")
    })?;
    let location = Location::from(&reference.span);
    let (p, name) = provider::parse_reference(text).map_err(|d| d.at_location(location.clone()))?;
    if p.hosted_refusal(&name).is_some() {
        return Err(HostedFeature::LatticeFlowModels
            .diagnostic(&format!("`$provider: \"{text}\"`"))
            .at_location(location));
    }
    provider::model(p, &name, &project.vars, &project.secrets, file, location)
}

/// The files of a project folder that hold `kind` (a scorer or action rule kept next to the
/// tasks that `$ref` it is a fragment, not a task). Files that cannot even be parsed are kept:
/// their error is reported when their entity is used.
fn folder_entities(project: &Project, folder: &str, kind: EntityKind) -> Vec<PathBuf> {
    yaml_files(&project.root.join(folder), None)
        .into_iter()
        .filter(|path| {
            yaml::load(path, &project.root, &project.vars)
                .map(|node| crate::entity::classify(&node, path).is_none_or(|k| k == kind))
                .unwrap_or(true)
        })
        .collect()
}

/// The run files at the top of a project, other than `except`.
pub fn project_run_files(project: &Project, except: Option<&Path>) -> Vec<(PathBuf, Node)> {
    let Ok(entries) = std::fs::read_dir(&project.root) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .filter(|p| Some(p.as_path()) != except)
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let node = yaml::load(&path, &project.root, &project.vars).ok()?;
            crate::entity::is_run_config(&node).then_some((path, node))
        })
        .collect()
}

/// Resolves `type: repeatability` specifications: the evaluation they repeat is this one, one in
/// `evaluations/`, or the evaluation of another run file of the project (with that file's
/// `config`). The platform's stored evaluations are not reachable from here.
fn resolve_repeats(evaluation: &mut Evaluation, project: &Project, run_file: &Path) -> Result<(), Diagnostic> {
    let repeats = std::mem::take(&mut evaluation.repeats);
    for repeat in &repeats {
        for input in &repeat.inputs {
            let specs = if input.evaluation_key == evaluation.key {
                evaluation.specs.clone()
            } else {
                find_evaluation(project, &input.evaluation_key, run_file)?
                    .ok_or_else(|| {
                        HostedFeature::StoredEvaluations
                            .diagnostic(&format!(
                                "evaluation `{}` is not defined in this project",
                                input.evaluation_key
                            ))
                            .at_location(repeat.location.clone())
                            .with_note("lfeval looks for it in `evaluations/` and in the project's other run files")
                    })?
                    .specs
            };
            let chosen: Vec<_> = specs
                .into_iter()
                .filter(|s| input.task_specification_key.as_ref().is_none_or(|k| *k == s.key))
                .collect();
            if chosen.is_empty() {
                return Err(Diagnostic::new(format!(
                    "evaluation `{}` has no task specification `{}`",
                    input.evaluation_key,
                    input.task_specification_key.as_deref().unwrap_or_default()
                ))
                .at_location(repeat.location.clone()));
            }
            evaluation.add_repetitions(repeat, &chosen);
        }
    }
    Ok(())
}

fn find_evaluation(project: &Project, key: &str, except: &Path) -> Result<Option<Evaluation>, Diagnostic> {
    let mut candidates: Vec<(Node, Map<String, Value>)> = Vec::new();
    for path in yaml_files(&project.root.join("evaluations"), None) {
        if let Ok(node) = yaml::load(&path, &project.root, &project.vars) {
            candidates.push((node, Map::new()));
        }
    }
    for (_, root) in project_run_files(project, Some(except)) {
        if let Some(node) = root.get("evaluation") {
            let config = root
                .get("config")
                .map(|n| from_node(n, "config"))
                .transpose()?
                .unwrap_or_default();
            candidates.push((node.clone(), config));
        }
    }
    for (mut node, config) in candidates {
        if node.get("key").and_then(Node::as_str) != Some(key) {
            continue;
        }
        let (values, _) = evaluation::config_values(&evaluation::config_spec(&node)?, &config);
        yaml::substitute_config(&mut node, &values)?;
        return evaluation::from_yaml(&node, &RunOverrides::default()).map(Some);
    }
    Ok(None)
}

fn dataset_entry(node: &Node, path: &str, file: &Path) -> Result<DatasetEntry, Diagnostic> {
    let spec: DatasetSpec = from_node(node, path)?;
    crate::model::check_key(
        &yaml::Located {
            value: spec.key.clone(),
            location: Location::from(&node.span),
            path: yaml::join(path, "key"),
        },
        "dataset",
        false,
    )?;
    let base_dir = node
        .span
        .file
        .path
        .parent()
        .or_else(|| file.parent())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    Ok(DatasetEntry {
        spec,
        base_dir,
        file: node.span.file.display.clone(),
        sources: yaml::sources(node),
    })
}

/// The config as JSON with every `$VAR` value shown as `$VAR`, never its value.
fn masked_json(node: &Node) -> Value {
    if let Some(var) = &node.env_var {
        return Value::String(format!("${var}"));
    }
    match &node.value {
        yaml::Value::Seq(items) => Value::Array(items.iter().map(masked_json).collect()),
        yaml::Value::Map(entries) => {
            Value::Object(entries.iter().map(|(k, v)| (k.name.clone(), masked_json(v))).collect())
        }
        yaml::Value::Unset(u) => Value::String(format!("${}", u.var)),
        _ => yaml::to_json(node),
    }
}
