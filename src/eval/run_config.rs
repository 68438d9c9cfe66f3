//! A run config (`lfeval run -f run.yaml`, aigo.md §8.8): inline `model_adapters`, `models`,
//! `datasets`, `tasks`, `evaluation`, `secrets` and `config`, each inline or by `$ref`, merged
//! with the entities of the project's folders (`models/`, `adapters/`, `datasets/`, `tasks/`,
//! `evaluations/`). The project is the run file's directory unless `-C` says otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use indexmap::IndexMap;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use crate::config_value::ConfigValue;
use crate::diagnostic::Diagnostic;
use crate::eval::dataset::DatasetSpec;
use crate::eval::evaluation::{self, Evaluation, RunOverrides};
use crate::eval::policy::Policy;
use crate::eval::task::{self, TaskDef};
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
    pub datasets: BTreeMap<String, DatasetEntry>,
    pub tasks: BTreeMap<String, TaskDef>,
    pub evaluation: Evaluation,
    /// The config as loaded, credentials masked: stored with the results.
    pub resolved: Value,
    /// The files of the run config itself and of its evaluation (for the fingerprint).
    pub sources: Vec<Arc<SourceFile>>,
    /// Quality gates checked when the run ends.
    pub policies: Vec<Policy>,
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

pub fn load(run_file: &Path, project_dir: Option<&Path>, env_file: Option<&Path>) -> anyhow::Result<RunConfig> {
    let run_file = run_file
        .canonicalize()
        .with_context(|| format!("cannot read run config `{}`", run_file.display()))?;
    let dir = match project_dir {
        Some(d) => d.to_path_buf(),
        None => run_file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    let mut project = Project::load(&dir, env_file)?;
    let root = yaml::load(&run_file, &project.root, &project.vars)?;
    from_node::<TopLevel>(&root, "")?;
    let file_display = yaml::display_path(&project.root, &run_file);

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
        if let Some(existing) = project.adapters.get(&adapter.key) {
            return Err(Diagnostic::new(format!("duplicate adapter key `{}`", adapter.key))
                .at_location(adapter.location.clone())
                .with_note(format!("also defined in `{}`", existing.file))
                .into());
        }
        project
            .adapters
            .insert(adapter.key.clone(), std::sync::Arc::new(adapter));
    }
    for (path, node) in items(&root, "models")? {
        if node.get("$provider").is_some() {
            return Err(
                Diagnostic::new("provider models (`$provider`) need the hosted platform")
                    .at(&node.span)
                    .with_hint("describe the endpoint with `connection_type: custom_connection` instead")
                    .into(),
            );
        }
        let model = crate::model::from_yaml(node.clone(), &path)?;
        if let Some(existing) = project.models.get(&model.key) {
            return Err(Diagnostic::new(format!("duplicate model key `{}`", model.key))
                .at_location(model.location.clone())
                .with_note(format!("also defined in `{}`", existing.file))
                .into());
        }
        project.add_model(model, &run_file);
    }
    if !items(&root, "dataset_generators")?.is_empty() {
        let node = root.get("dataset_generators").unwrap_or(&root);
        return Err(Diagnostic::new("dataset generators are not supported yet")
            .at(&node.span)
            .into());
    }

    let mut datasets = BTreeMap::new();
    let mut tasks = BTreeMap::new();
    for path in yaml_files(&project.root.join("datasets"), None) {
        let node = yaml::load(&path, &project.root, &project.vars)?;
        add_dataset(&mut datasets, &node, "", &path)?;
    }
    for (p, node) in items(&root, "datasets")? {
        add_dataset(&mut datasets, node, &p, &run_file)?;
    }
    for path in yaml_files(&project.root.join("tasks"), None) {
        let node = yaml::load(&path, &project.root, &project.vars)?;
        add_task(&mut tasks, node)?;
    }
    for (_, node) in items(&root, "tasks")? {
        add_task(&mut tasks, node.clone())?;
    }

    let overrides: RunOverrides = match root.get("run_config") {
        Some(n) => from_node(n, "run_config")?,
        None => RunOverrides::default(),
    };
    let config: Map<String, Value> = match root.get("config") {
        Some(n) => from_node(n, "config")?,
        None => Map::new(),
    };
    let mut evaluation_node = match root.get("evaluation") {
        Some(n) => n.clone(),
        None => {
            let found = yaml_files(&project.root.join("evaluations"), None);
            match found.as_slice() {
                [one] => yaml::load(one, &project.root, &project.vars)?,
                [] => {
                    return Err(Diagnostic::new(format!("`{file_display}` has no `evaluation`"))
                        .at(&root.span)
                        .with_hint("add an `evaluation:` with `task_specifications`")
                        .into());
                }
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
    yaml::substitute_config(&mut evaluation_node, &config)?;
    let evaluation = evaluation::from_yaml(&evaluation_node, &overrides)?;

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
    let mut sources = yaml::sources(&root);
    sources.extend(yaml::sources(&evaluation_node));
    Ok(RunConfig {
        file: run_file,
        project,
        datasets,
        tasks,
        evaluation,
        resolved,
        sources,
        policies,
    })
}

fn add_dataset(
    datasets: &mut BTreeMap<String, DatasetEntry>,
    node: &Node,
    path: &str,
    file: &Path,
) -> Result<(), Diagnostic> {
    let spec: DatasetSpec = from_node(node, path)?;
    let display = node.span.file.display.clone();
    if let Some(existing) = datasets.get(&spec.key) {
        return Err(Diagnostic::new(format!("duplicate dataset key `{}`", spec.key))
            .at(&node.span)
            .with_note(format!(
                "`{}` is defined in both `{}` and `{display}`",
                spec.key, existing.file
            )));
    }
    let base_dir = node
        .span
        .file
        .path
        .parent()
        .or_else(|| file.parent())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    datasets.insert(
        spec.key.clone(),
        DatasetEntry {
            spec,
            base_dir,
            file: display,
            sources: yaml::sources(node),
        },
    );
    Ok(())
}

fn add_task(tasks: &mut BTreeMap<String, TaskDef>, node: Node) -> Result<(), Diagnostic> {
    let span = node.span.clone();
    let task = task::from_yaml(node)?;
    if let Some(existing) = tasks.get(&task.key) {
        return Err(Diagnostic::new(format!("duplicate task key `{}`", task.key))
            .at(&span)
            .with_note(format!(
                "`{}` is defined in both `{}` and `{}`",
                task.key, existing.file, task.file
            )));
    }
    tasks.insert(task.key.clone(), task);
    Ok(())
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
