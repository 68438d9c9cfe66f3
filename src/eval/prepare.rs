//! Everything a run resolves before its first sample: for each task specification its task
//! (instantiated with its config), dataset, solver, scorers, Python scorer and metric snippets
//! and compiled templates; and one model runtime per model key, with its cache handle.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::diagnostic::Diagnostic;
use crate::eval::evaluation::TaskSpecification;
use crate::eval::metric::MetricSpec;
use crate::eval::run_config::{DatasetEntry, RunConfig};
use crate::eval::scorer::{self, ScorerDef};
use crate::eval::solver::{self, SolverDef};
use crate::eval::task::TaskDef;
use crate::model::cache::{CacheHandle, CachePolicy, ResponseCache, fingerprint};
use crate::model::registry::Registry;
use crate::model::runtime::ModelRuntime;
use crate::python::{PythonRuntime, ReturnKind, Snippet, SnippetSpec};
use crate::template::{TemplateEngine, TemplateOrigin};

/// A task specification made ready to run.
pub struct Prepared {
    pub spec: TaskSpecification,
    pub task: TaskDef,
    pub dataset: DatasetEntry,
    pub model: Option<Arc<ModelRuntime>>,
    pub solver: Option<SolverDef>,
    pub scorers: Vec<(ScorerDef, Option<Snippet>)>,
    pub metric_snippets: HashMap<(String, usize), Snippet>,
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
}

/// Resolves every task specification of a run config and builds its models (compiling adapters
/// and snippets) without running anything: what `lfeval validate run.yaml` checks.
pub fn check(config: &RunConfig, python: &PythonRuntime) -> anyhow::Result<usize> {
    let (prepared, _) = prepare(config, python, None, CachePolicy::NoCache)?;
    Ok(prepared.len())
}

/// Resolves every task specification and builds every model runtime before anything runs, so
/// configuration errors surface at once (exit 2) and never halfway through.
pub fn prepare(
    config: &RunConfig,
    python: &PythonRuntime,
    cache: Option<&Arc<ResponseCache>>,
    policy: CachePolicy,
) -> anyhow::Result<(Vec<Prepared>, Registry)> {
    let project = &config.project;
    let mut prepared = Vec::new();
    let mut model_keys = BTreeSet::new();
    for spec in &config.evaluation.specs {
        let task = config.tasks.get(&spec.task_key.value).cloned().ok_or_else(|| {
            crate::project::unknown(
                "task",
                &spec.task_key.value,
                config.tasks.keys(),
                "the run config's `tasks:` or `tasks/`",
            )
            .at_location(spec.task_key.location.clone())
        })?;
        let values = task
            .config_values(&spec.task_config)
            .map_err(|d| d.at_location(spec.task_key.location.clone()))?;
        let definition = task.instantiate(&values)?;
        let dataset_key = spec
            .dataset_key
            .clone()
            .or(definition.dataset_key.clone())
            .ok_or_else(|| {
                Diagnostic::new(format!("task specification `{}` has no dataset", spec.key))
                    .at_location(spec.task_key.location.clone())
                    .with_hint("set `dataset_key` on the task specification or `dataset: {key: ...}` in the task")
            })?;
        let dataset = config.datasets.get(&dataset_key).cloned().ok_or_else(|| {
            crate::project::unknown(
                "dataset",
                &dataset_key,
                config.datasets.keys(),
                "the run config's `datasets:` or `datasets/`",
            )
            .at_location(spec.task_key.location.clone())
        })?;
        if definition.solver.is_some() {
            let key = spec.model_key.clone().ok_or_else(|| {
                Diagnostic::new(format!(
                    "task specification `{}` runs a solver but names no `model_key`",
                    spec.key
                ))
                .at_location(spec.task_key.location.clone())
            })?;
            model_keys.insert(key);
        }
        collect_models(definition.solver.as_ref(), &definition.scorers, &mut model_keys);
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
            .flat_map(solver::templates)
            .chain(scorers.iter().flat_map(|(d, _)| scorer::templates(d)));
        for source in sources {
            if !templates.contains(source) {
                templates.add(source, source, origin.clone()).map_err(|e| {
                    Diagnostic::new(format!("task `{}`: {}", task.key, e.message))
                        .with_note(e.excerpt.clone().unwrap_or_default())
                })?;
            }
        }
        prepared.push(Prepared {
            spec: spec.clone(),
            task,
            dataset,
            model: None,
            solver: definition.solver,
            scorers,
            metric_snippets,
            origin,
            templates,
            task_config: values,
        });
    }

    let mut runtimes = HashMap::new();
    for key in &model_keys {
        let model = project.model(key)?;
        project.register_model_secrets(&model)?;
        let adapter = project
            .adapter(&model.adapter.value)
            .map_err(|d| d.at_location(model.adapter.location.clone()))?;
        let fingerprint = fingerprint(&model, &adapter, &project.secrets);
        let mut runtime = ModelRuntime::new(model, adapter, Some(python), &project.secrets)?;
        if let Some(cache) = cache {
            runtime.cache = Some(CacheHandle {
                cache: Arc::clone(cache),
                policy,
                fingerprint,
            });
        }
        runtimes.insert(key.clone(), Arc::new(runtime));
    }
    for p in &mut prepared {
        if let Some(key) = &p.spec.model_key
            && p.solver.is_some()
        {
            p.model = runtimes.get(key).cloned();
        }
    }
    Ok((prepared, Registry::new(runtimes)))
}

fn collect_models(solver: Option<&SolverDef>, scorers: &[ScorerDef], keys: &mut BTreeSet<String>) {
    fn builders(list: &[solver::MessageBuilder], keys: &mut BTreeSet<String>) {
        for b in list {
            match b {
                solver::MessageBuilder::GenerateMessage { model_key, .. } => {
                    keys.insert(model_key.clone());
                }
                solver::MessageBuilder::Loop { message_builders, .. } => builders(message_builders, keys),
                _ => {}
            }
        }
    }
    if let Some(SolverDef::MultiTurnSolver { message_builders, .. }) = solver {
        builders(message_builders, keys);
    }
    for s in scorers {
        match &s.kind {
            scorer::ScorerKind::JudgeClassifier { judge, .. }
            | scorer::ScorerKind::JudgeScorer { judge, .. }
            | scorer::ScorerKind::Labeler { judge, .. } => {
                keys.insert(judge.model_key.clone());
            }
            _ => {}
        }
    }
}
