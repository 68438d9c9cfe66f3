//! Everything a run resolves before its first sample: for each task specification its task
//! (instantiated with its config), where its samples come from (a dataset, several datasets
//! aligned by row, an earlier specification's results, or a system task's evidence), its solver,
//! scorers, trials and action rules, every Python snippet and template compiled; and one model
//! runtime per model key, with its cache handle.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::diagnostic::Diagnostic;
use crate::eval::entities::Entities;
use crate::eval::evaluation::{Evaluation, TaskSpecification};
use crate::eval::metric::MetricSpec;
use crate::eval::run_config::{DatasetEntry, RunConfig, RunFile};
use crate::eval::scorer::{self, ScorerDef, ScorerKind};
use crate::eval::solver_def::{self, SolverDef, SolverKind};
use crate::eval::task::{ActionRule, TaskDataset, TaskDef, Trials};
use crate::model::cache::{CacheHandle, CachePolicy, ResponseCache, fingerprint};
use crate::model::connection::snippet_http::SnippetHttp;
use crate::model::registry::Registry;
use crate::model::runtime::ModelRuntime;
use crate::project::Project;
use crate::python::{PythonRuntime, ReturnKind, Snippet, SnippetSpec};
use crate::template::{TemplateEngine, TemplateOrigin};
use crate::yaml::SourceText;

/// Where a specification's samples come from.
#[derive(Clone)]
pub enum Samples {
    Dataset(Box<DatasetEntry>),
    /// `dataset.keys`: row i of every dataset makes sample i, `{dataset key: row}`.
    Aligned(Vec<(String, DatasetEntry)>),
    /// The records of an earlier specification of the same run.
    TaskResult(String),
    /// A system task: one `compute_evidence()` call instead of samples.
    Evidence(Snippet),
}

/// A task specification made ready to run.
pub struct Prepared {
    pub spec: TaskSpecification,
    pub task: TaskDef,
    pub samples: Samples,
    pub model: Option<Arc<ModelRuntime>>,
    pub solver: Option<SolverDef>,
    /// A `python` solver's `run_solver`.
    pub solver_snippet: Option<Snippet>,
    /// The solver's `postprocess`.
    pub postprocessor: Option<Snippet>,
    pub scorers: Vec<(ScorerDef, Option<Snippet>)>,
    pub metric_snippets: HashMap<(String, usize), Snippet>,
    pub trials: Option<Trials>,
    pub actions: Vec<ActionRule>,
    pub origin: TemplateOrigin,
    /// The task's templates, compiled once (keyed by their source text).
    pub templates: TemplateEngine,
    pub task_config: Map<String, Value>,
}

impl Prepared {
    /// The scorer definitions, for the summary.
    pub fn scorer_defs(&self) -> Vec<ScorerDef> {
        self.scorers.iter().map(|(def, _)| def.clone()).collect()
    }

    /// Every dataset the specification reads.
    pub fn datasets(&self) -> Vec<&DatasetEntry> {
        match &self.samples {
            Samples::Dataset(d) => vec![d],
            Samples::Aligned(list) => list.iter().map(|(_, d)| d).collect(),
            Samples::TaskResult(_) | Samples::Evidence(_) => Vec::new(),
        }
    }

    /// What summaries and logs name as the specification's dataset.
    pub fn dataset_label(&self) -> String {
        match &self.samples {
            Samples::Dataset(d) => d.spec.key.clone(),
            Samples::Aligned(list) => list
                .iter()
                .map(|(_, d)| d.spec.key.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            Samples::TaskResult(key) => format!("task_result:{key}"),
            Samples::Evidence(_) => String::new(),
        }
    }

    /// Trials per sample (1 without trials).
    pub fn num_trials(&self) -> u32 {
        self.trials.as_ref().map_or(1, |t| t.num_trials)
    }
}

/// What a run resolves its specifications against.
pub struct Scope<'a> {
    pub project: &'a Project,
    pub datasets: &'a Entities<DatasetEntry>,
    pub tasks: &'a Entities<TaskDef>,
    pub evaluation: &'a Evaluation,
}

impl RunConfig {
    pub fn scope(&self) -> Scope<'_> {
        Scope {
            project: &self.project,
            datasets: &self.datasets,
            tasks: &self.tasks,
            evaluation: &self.evaluation,
        }
    }
}

/// Resolves every task specification of a run config and builds its models (compiling adapters
/// and snippets) without running anything: what `lfeval validate run.yaml` checks. Variables and
/// secrets depend on the machine, not on the files: a model whose credentials are missing here
/// is a warning (its adapter is still compiled), not an error.
pub fn check(scope: &Scope<'_>, python: &PythonRuntime) -> anyhow::Result<(Vec<Prepared>, Vec<String>)> {
    let mut warnings = Vec::new();
    let (prepared, _) = prepare_inner(scope, python, None, CachePolicy::NoCache, Some(&mut warnings))?;
    Ok((prepared, warnings))
}

fn snippet_spec(owner: String, text: &SourceText, function: &str, arities: Vec<usize>) -> SnippetSpec {
    SnippetSpec {
        owner,
        file: text.file.clone(),
        source: text.text.clone(),
        display_source: None,
        line_offset: text.line_offset,
        function: function.to_owned(),
        arities,
        returns: ReturnKind::Json,
        workers: 4,
        // Python solvers call back into lfeval (`model.predict`), which only works in-process.
        isolation: crate::python::Isolation::InProcess,
        max_return_bytes: None,
    }
}

fn load(python: &PythonRuntime, spec: SnippetSpec, text: &SourceText) -> Result<Snippet, Diagnostic> {
    python
        .load_snippet(spec)
        .map_err(|e| crate::model::connection::snippet::load_diagnostic(&e, Some(text)))
}

/// Resolves every task specification and builds every model runtime before anything runs, so
/// configuration errors surface at once (exit 2) and never halfway through.
pub fn prepare(
    scope: &Scope<'_>,
    python: &PythonRuntime,
    cache: Option<&Arc<ResponseCache>>,
    policy: CachePolicy,
) -> anyhow::Result<(Vec<Prepared>, Registry)> {
    prepare_inner(scope, python, cache, policy, None)
}

fn prepare_inner(
    scope: &Scope<'_>,
    python: &PythonRuntime,
    cache: Option<&Arc<ResponseCache>>,
    policy: CachePolicy,
    mut lenient: Option<&mut Vec<String>>,
) -> anyhow::Result<(Vec<Prepared>, Registry)> {
    let project = scope.project;
    // Snippets that belong to no model (scorers, metrics, Python solvers, threads a snippet
    // starts) get an `lfeval.http` of their own, held to no model's limits or gate.
    crate::python::set_default_backend(Arc::new(SnippetHttp::new(crate::model::DEFAULT_MAX_RESPONSE_BYTES)));
    let (mut prepared, model_keys) = prepare_tasks(scope, python)?;
    let mut runtimes = HashMap::new();
    for key in &model_keys {
        let model = project.model(key)?;
        let adapter = project
            .adapter(&model.adapter.value)
            .map_err(|d| d.at_location(model.adapter.location.clone()))?;
        if let Some(warnings) = lenient.as_deref_mut() {
            let unresolved = project.register_model_secrets(&model).err().or_else(|| {
                model
                    .deferred_values()
                    .into_iter()
                    .find_map(|v| v.resolve(&project.secrets, true).err())
            });
            if let Some(d) = unresolved {
                warnings.push(format!("model `{key}` cannot be used here yet: {}", d.message));
                crate::model::adapter::CompiledAdapter::compile(adapter)?;
                continue;
            }
        }
        project.register_model_secrets(&model)?;
        let fingerprint = fingerprint(&model, &adapter, &project.secrets);
        let mut runtime = ModelRuntime::new(model, adapter, Some(python), &project.secrets)?;
        if let Some(cache) = cache {
            runtime.cache = Some(CacheHandle::new(Arc::clone(cache), policy, fingerprint));
        }
        runtimes.insert(key.clone(), Arc::new(runtime));
    }
    for p in &mut prepared {
        if let Some(key) = &p.spec.model_key
            && p.solver.as_ref().is_some_and(|s| s.kind.calls_model())
        {
            p.model = runtimes.get(key).cloned();
        }
    }
    Ok((prepared, Registry::new(runtimes)))
}

/// Resolves every task specification (task, dataset, solver, scorers, snippets, templates) but
/// no model: enough to summarise records, as `merge` does. Also returns the model keys the
/// specifications call.
pub fn prepare_tasks(scope: &Scope<'_>, python: &PythonRuntime) -> anyhow::Result<(Vec<Prepared>, BTreeSet<String>)> {
    let mut prepared: Vec<Prepared> = Vec::new();
    let mut model_keys = BTreeSet::new();
    for spec in &scope.evaluation.specs {
        let at = |d: Diagnostic| d.at_location(spec.task_key.location.clone());
        let task = scope
            .tasks
            .get(&spec.task_key.value)
            .cloned()
            .map_err(|d| if d.location.is_some() { d } else { at(d) })?;
        let values = task.config_values(&spec.task_config).map_err(at)?;
        let definition = task.instantiate(&values)?;
        let dataset = match (&spec.dataset_key, &definition.dataset) {
            (Some(key), _) => Some(TaskDataset::Key(key.clone())),
            (None, d) => d.clone(),
        };
        let get = |key: &str| scope.datasets.get(key).cloned().map_err(at);
        let samples = match (&definition.evidence, dataset) {
            (Some(text), _) => {
                let owner = format!("system task `{}`", task.key);
                Samples::Evidence(load(
                    python,
                    snippet_spec(owner, text, "compute_evidence", vec![0]),
                    text,
                )?)
            }
            (None, Some(TaskDataset::Key(key))) => Samples::Dataset(Box::new(get(&key)?)),
            (None, Some(TaskDataset::Keys(keys))) => Samples::Aligned(
                keys.iter()
                    .map(|key| Ok((key.clone(), get(key)?)))
                    .collect::<Result<_, Diagnostic>>()?,
            ),
            (None, Some(TaskDataset::TaskResult(key))) => {
                if !prepared.iter().any(|p| p.spec.key == key) {
                    let earlier: Vec<String> = prepared.iter().map(|p| format!("`{}`", p.spec.key)).collect();
                    return Err(at(Diagnostic::new(format!(
                        "task specification `{}` reads the results of `{key}`, which is not an earlier task specification of this evaluation",
                        spec.key
                    ))
                    .with_hint(if earlier.is_empty() {
                        "list the specification that produces the results before this one".to_owned()
                    } else {
                        format!("earlier specifications: {}", earlier.join(", "))
                    }))
                    .into());
                }
                Samples::TaskResult(key)
            }
            (None, None) => {
                return Err(at(
                    Diagnostic::new(format!("task specification `{}` has no dataset", spec.key))
                        .with_hint("set `dataset_key` on the task specification or `dataset: {key: ...}` in the task"),
                )
                .into());
            }
        };
        let mut solver_snippet = None;
        let mut postprocessor = None;
        if let Some(solver) = &definition.solver {
            if let SolverKind::GroupedSingleTurn { .. } = solver.kind {
                return Err(at(Diagnostic::new(format!(
                    "task `{}`: `grouped_single_turn_solver` is not supported by lfeval yet",
                    task.key
                )))
                .into());
            }
            if solver.kind.calls_model() {
                let key = spec.model_key.clone().ok_or_else(|| {
                    at(Diagnostic::new(format!(
                        "task specification `{}` runs a solver but names no `model_key`",
                        spec.key
                    )))
                })?;
                model_keys.insert(key);
            }
            if let SolverKind::Python { snippet } = &solver.kind {
                let owner = format!("solver of task `{}`", task.key);
                solver_snippet = Some(load(
                    python,
                    snippet_spec(owner, snippet, "run_solver", vec![3]),
                    snippet,
                )?);
            }
            if let Some(text) = &solver.postprocessor {
                let owner = format!("postprocessor of task `{}`", task.key);
                postprocessor = Some(load(python, snippet_spec(owner, text, "postprocess", vec![2]), text)?);
            }
            model_keys.extend(solver_def::other_models(solver).into_iter().map(str::to_owned));
        }
        for s in &definition.scorers {
            match &s.kind {
                ScorerKind::JudgeClassifier { judge, .. }
                | ScorerKind::JudgeScorer { judge, .. }
                | ScorerKind::Labeler { judge, .. } => {
                    model_keys.insert(judge.model_key.clone());
                }
                ScorerKind::Unsupported => {
                    return Err(at(Diagnostic::new(format!(
                        "task `{}`: scorer type `{}` is not supported by lfeval yet",
                        task.key, s.kind_name
                    )))
                    .into());
                }
                ScorerKind::PythonAllSamples { .. } if definition.solver.is_some() => {
                    return Err(at(Diagnostic::new(format!(
                        "task `{}`: `python_all_samples` scorers are supported on dataset tasks (without a solver) only",
                        task.key
                    )))
                    .into());
                }
                _ => {}
            }
        }
        let mut scorers_defs = definition.scorers;
        scorer::dedupe_names(&mut scorers_defs);
        let mut scorers = Vec::new();
        let mut metric_snippets = HashMap::new();
        for def in scorers_defs {
            let snippet = scorer::load_python(&def, &task.key, python)?;
            for (i, metric) in def.metrics.iter().enumerate() {
                if let MetricSpec::Python {
                    compute_metrics_snippet,
                    ..
                } = metric
                {
                    let spec = SnippetSpec {
                        owner: format!("metric {} of scorer `{}`", i + 1, def.name),
                        file: task.file.clone(),
                        source: compute_metrics_snippet.clone(),
                        display_source: None,
                        line_offset: 0,
                        function: "compute_metrics".to_owned(),
                        arities: vec![1],
                        returns: ReturnKind::Json,
                        workers: 1,
                        isolation: crate::python::Isolation::InProcess,
                        max_return_bytes: None,
                    };
                    let snippet = python
                        .load_snippet(spec)
                        .map_err(|e| crate::model::connection::snippet::load_diagnostic(&e, None))?;
                    metric_snippets.insert((def.name.clone(), i), snippet);
                }
            }
            scorers.push((def, snippet));
        }
        let origin = TemplateOrigin {
            file: task.file.clone(),
            line_offset: 0,
            column_offset: 0,
        };
        let mut templates = TemplateEngine::new();
        let sources = definition
            .solver
            .iter()
            .flat_map(solver_def::templates)
            .chain(scorers.iter().flat_map(|(d, _)| scorer::templates(d)));
        for source in sources {
            if !templates.contains(source) {
                templates.add(source, source, origin.clone()).map_err(|e| {
                    Diagnostic::new(format!("task `{}`: {}", task.key, e.message))
                        .with_note(e.excerpt.clone().unwrap_or_default())
                })?;
            }
        }
        let trials = match (spec.trials, definition.trials) {
            (Some(n), Some(t)) => Some(Trials { num_trials: n, ..t }),
            (Some(n), None) => Some(Trials {
                num_trials: n,
                aggregators: Vec::new(),
            }),
            (None, t) => t,
        };
        prepared.push(Prepared {
            spec: spec.clone(),
            task,
            samples,
            model: None,
            solver: definition.solver,
            solver_snippet,
            postprocessor,
            scorers,
            metric_snippets,
            trials,
            actions: definition.actions,
            origin,
            templates,
            task_config: values,
        });
    }

    Ok((prepared, model_keys))
}

/// What `validate` checks of a run file that only registers entities: every model it declares
/// (adapter and snippet included) and every task it declares, with placeholder config values.
pub fn check_declared(file: &RunFile, python: &PythonRuntime) -> Result<usize, Diagnostic> {
    let project = &file.project;
    let mut checked = 0;
    for key in &file.declared.models {
        let model = project.model(key)?;
        let adapter = project
            .adapter(&model.adapter.value)
            .map_err(|d| d.at_location(model.adapter.location.clone()))?;
        crate::model::adapter::CompiledAdapter::compile(adapter)?;
        if let crate::model::Connection::CustomInference(config) = &model.connection {
            crate::model::connection::snippet::load(&model, config, 1, python)?;
        }
        checked += 1;
    }
    for key in &file.declared.adapters {
        crate::model::adapter::CompiledAdapter::compile(project.adapter(key)?)?;
        checked += 1;
    }
    for key in &file.declared.tasks {
        let task = file.tasks.get(key)?;
        check_task(task, python)?;
        checked += 1;
    }
    for key in &file.declared.datasets {
        file.datasets.get(key)?;
        checked += 1;
    }
    Ok(checked)
}

/// Checks a task on its own: its definition with placeholder config values, its templates and
/// snippets.
pub fn check_task(task: &TaskDef, python: &PythonRuntime) -> Result<(), Diagnostic> {
    let definition = task.instantiate(&task.placeholder_values())?;
    let mut templates = TemplateEngine::new();
    let origin = TemplateOrigin::file(task.file.clone());
    let sources = definition
        .solver
        .iter()
        .flat_map(solver_def::templates)
        .chain(definition.scorers.iter().flat_map(scorer::templates));
    for source in sources {
        if !templates.contains(source) {
            templates.add(source, source, origin.clone()).map_err(|e| {
                Diagnostic::new(format!("task `{}`: {}", task.key, e.message))
                    .with_note(e.excerpt.clone().unwrap_or_default())
            })?;
        }
    }
    for def in &definition.scorers {
        scorer::load_python(def, &task.key, python)?;
    }
    if let Some(text) = &definition.evidence {
        load(
            python,
            snippet_spec(format!("system task `{}`", task.key), text, "compute_evidence", vec![0]),
            text,
        )?;
    }
    if let Some(solver) = &definition.solver {
        if let SolverKind::Python { snippet } = &solver.kind {
            load(
                python,
                snippet_spec(format!("solver of task `{}`", task.key), snippet, "run_solver", vec![3]),
                snippet,
            )?;
        }
        if let Some(text) = &solver.postprocessor {
            load(
                python,
                snippet_spec(
                    format!("postprocessor of task `{}`", task.key),
                    text,
                    "postprocess",
                    vec![2],
                ),
                text,
            )?;
        }
    }
    Ok(())
}
