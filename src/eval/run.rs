//! The evaluation runner. Samples stream from disk through a bounded pipeline (a semaphore caps
//! how many are in flight, so memory stays flat), each passing its models' gates. Every finished
//! sample is appended to `samples.jsonl` at once, so a crash or Ctrl-C loses nothing and
//! `--resume` skips what is done. Metrics are computed at the end by reading that file back.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::SeedableRng;
use rand::seq::IteratorRandom;
use serde_json::{Map, Value, json};

use crate::diagnostic::Diagnostic;
use crate::eval::dataset::{self, Sample};
use crate::eval::evaluation::{Subsampling, TaskSpecification};
use crate::eval::metric::MetricSpec;
use crate::eval::run_config::{DatasetEntry, RunConfig};
use crate::eval::run_dir::RunDir;
use crate::eval::scorer::{self, ScoreContext, ScorerDef};
use crate::eval::solver::{self, SolveContext, Solved, SolverDef};
use crate::eval::task::TaskDef;
use crate::exit_status::ExitStatus;
use crate::model::cache::CacheHandle;
use crate::model::cache::fingerprint;
use crate::model::cache::{CachePolicy, ResponseCache};
use crate::model::io::Usage;
use crate::model::registry::Registry;
use crate::model::runtime::ModelRuntime;
use crate::model::trace::Call;
use crate::printer::Printer;
use crate::progress::{self, Progress};
use crate::python::{PythonRuntime, ReturnKind, Snippet, SnippetSpec};
use crate::template::{TemplateEngine, TemplateOrigin};

/// How often the progress display is told which limit holds the run back.
const REPORT_EVERY: Duration = Duration::from_millis(500);

/// Seed for `subsampling: random`, so the same run picks the same samples.
const SUBSAMPLING_SEED: u64 = 42;

pub struct RunOptions {
    pub fail_fast: bool,
    pub max_errors: Option<usize>,
    pub no_cache: bool,
    pub progress: progress::Mode,
    pub json: bool,
}

/// A task specification made ready to run.
struct Prepared {
    spec: TaskSpecification,
    task: TaskDef,
    dataset: DatasetEntry,
    model: Option<Arc<ModelRuntime>>,
    solver: Option<SolverDef>,
    scorers: Vec<(ScorerDef, Option<Snippet>)>,
    metric_snippets: HashMap<(String, usize), Snippet>,
    origin: TemplateOrigin,
    /// The task's templates, compiled once (keyed by their source text).
    templates: TemplateEngine,
    task_config: Map<String, Value>,
}

struct Shared {
    registry: Registry,
    python: PythonRuntime,
    run_dir: RunDir,
    progress: Arc<Progress>,
    stop: AtomicBool,
    failed: AtomicUsize,
    /// Becomes `true` on Ctrl-C (see [`listen_for_interrupt`]).
    interrupt: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    fn interrupted(&self) -> bool {
        *self.interrupt.borrow()
    }
}

/// One Ctrl-C listener for the whole run: the first press asks everything to stop (finished
/// samples are already on disk); a second one leaves at once.
fn listen_for_interrupt(runtime: &tokio::runtime::Runtime) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    rx
}

/// Resolves every task specification and builds every model runtime before anything runs, so
/// configuration errors surface at once (exit 2) and never halfway through.
/// Resolves every task specification of a run config and builds its models (compiling adapters
/// and snippets) without running anything: what `lfeval validate run.yaml` checks.
pub fn check(config: &RunConfig, python: &PythonRuntime) -> anyhow::Result<usize> {
    let (prepared, _) = prepare(config, python, None, CachePolicy::NoCache)?;
    Ok(prepared.len())
}

fn prepare(
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

/// Runs the evaluation; returns the exit status (interrupted, failed samples or success).
pub fn run(
    config: RunConfig,
    run_dir: RunDir,
    completed: HashSet<(String, String)>,
    python: PythonRuntime,
    options: &RunOptions,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let policy = if options.no_cache {
        CachePolicy::NoCache
    } else {
        config.evaluation.cache_policy
    };
    let cache = if policy.reads() || policy.writes() {
        Some(Arc::new(ResponseCache::open(
            &config.project.root.join(".lfeval").join("cache.sqlite"),
        )?))
    } else {
        None
    };
    let (prepared, registry) = prepare(&config, &python, cache.as_ref(), policy)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let interrupt = listen_for_interrupt(&runtime);
    let shared = Arc::new(Shared {
        registry,
        python,
        run_dir,
        progress: Progress::new(options.progress, *printer),
        stop: AtomicBool::new(false),
        failed: AtomicUsize::new(0),
        interrupt,
    });
    let started = jiff::Timestamp::now();
    let clock = Instant::now();
    let prepared: Vec<Arc<Prepared>> = prepared.into_iter().map(Arc::new).collect();
    let mut started_specs = HashSet::new();
    let result = runtime.block_on(async {
        for p in &prepared {
            started_specs.insert(p.spec.key.clone());
            match run_spec(Arc::clone(p), Arc::clone(&shared), &completed, options).await? {
                SpecEnd::Done => {}
                SpecEnd::Interrupted | SpecEnd::Stopped => break,
            }
        }
        anyhow::Ok(())
    });
    result?;
    shared.run_dir.finish()?;
    // The runtime (and its Ctrl-C listener) stays alive while metrics are computed.
    let summary = if shared.interrupted() {
        None
    } else {
        finish(&prepared, &started_specs, &shared, &config, started, clock.elapsed())?
    };
    runtime.shutdown_background();
    let Some(summary) = summary else {
        printer.warn(&format!(
            "interrupted: every finished sample is saved in `{}`\nhint: resume with `lfeval run --resume {}`",
            shared.run_dir.path().display(),
            shared.run_dir.path().display()
        ));
        return Ok(ExitStatus::Interrupted);
    };
    print_summary(&summary, options.json, printer);
    if shared.stop.load(Ordering::Relaxed) {
        printer.warn(&format!(
            "stopped early after failed samples\nhint: resume with `lfeval run --resume {}` to finish the rest",
            shared.run_dir.path().display()
        ));
    }
    let failed = summary["totals"]["failed"].as_u64().unwrap_or(0);
    let metric_errors = summary["totals"]["metric_errors"].as_u64().unwrap_or(0);
    Ok(
        if failed > 0 || metric_errors > 0 || shared.stop.load(Ordering::Relaxed) {
            ExitStatus::Failure
        } else {
            ExitStatus::Success
        },
    )
}

enum SpecEnd {
    Done,
    Interrupted,
    Stopped,
}

/// Evaluates a dataset filter expression with the row's fields bare and as `sample.x`.
fn eval_filter(expr: &str, row: &Map<String, Value>) -> Result<Value, String> {
    static ENGINE: std::sync::LazyLock<TemplateEngine> = std::sync::LazyLock::new(TemplateEngine::new);
    let mut ctx = row.clone();
    ctx.insert("sample".into(), Value::Object(row.clone()));
    match ENGINE.eval_expression(expr, &ctx) {
        Ok(value) => Ok(value),
        // `dataset::open` expects undefined as `null`: a field missing from some rows is what
        // `exists` / `not_exists` test for.
        Err(e) if matches!(e.kind, crate::template::TemplateErrorKind::Undefined) => Ok(Value::Null),
        Err(e) => Err(e.message),
    }
}

fn open_samples(p: &Prepared) -> anyhow::Result<dataset::SampleIter<'static>> {
    dataset::open(&p.dataset.spec, &p.dataset.base_dir, &eval_filter).with_context(|| {
        format!(
            "cannot open dataset `{}` (defined in `{}`)",
            p.dataset.spec.key, p.dataset.file
        )
    })
}

/// The samples a specification runs, in dataset order: the first N, or N picked at random with a
/// fixed seed (only their indices are kept while choosing, so memory stays small).
fn selection(p: &Prepared) -> anyhow::Result<(u64, Option<HashSet<usize>>)> {
    let mut count = 0u64;
    let mut indices = Vec::new();
    for sample in open_samples(p)? {
        let sample = sample?;
        indices.push(sample.index);
        count += 1;
    }
    match (p.spec.num_samples, p.spec.subsampling) {
        (Some(n), Subsampling::Random) if (n as u64) < count => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(SUBSAMPLING_SEED);
            let chosen: HashSet<usize> = indices.into_iter().choose_multiple(&mut rng, n).into_iter().collect();
            Ok((n as u64, Some(chosen)))
        }
        (Some(n), _) => Ok((count.min(n as u64), None)),
        (None, _) => Ok((count, None)),
    }
}

async fn run_spec(
    p: Arc<Prepared>,
    shared: Arc<Shared>,
    completed: &HashSet<(String, String)>,
    options: &RunOptions,
) -> anyhow::Result<SpecEnd> {
    let (total, chosen) = selection(&p)?;
    let done_before = completed.iter().filter(|(spec, _)| spec == &p.spec.key).count() as u64;
    shared.progress.start(&p.spec.key, total, done_before.min(total));
    let limit = p.model.as_ref().map_or(8, |m| m.gate.concurrency * 2).clamp(2, 512);
    let slots = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut tasks = tokio::task::JoinSet::new();
    let mut taken = 0u64;
    let mut samples = open_samples(&p)?;
    if shared.interrupted() {
        return Ok(SpecEnd::Interrupted);
    }
    let mut interrupt = shared.interrupt.clone();
    let mut ticker = tokio::time::interval(REPORT_EVERY);
    let mut last_report = Instant::now();
    let end = loop {
        if shared.stop.load(Ordering::Relaxed) {
            break SpecEnd::Stopped;
        }
        let sample = if taken < total {
            match samples.next() {
                Some(s) => Some(s?),
                None => None,
            }
        } else {
            None
        };
        let Some(sample) = sample else { break SpecEnd::Done };
        if chosen.as_ref().is_some_and(|c| !c.contains(&sample.index)) {
            continue;
        }
        taken += 1;
        if shared.run_dir.is_recorded(&p.spec.key, &sample.id) {
            continue;
        }
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit?,
            Ok(()) = interrupt.changed() => break SpecEnd::Interrupted,
        };
        // A sample may have failed while this one waited for its slot.
        if shared.stop.load(Ordering::Relaxed) {
            break SpecEnd::Stopped;
        }
        let (p2, shared2) = (Arc::clone(&p), Arc::clone(&shared));
        let (fail_fast, max_errors) = (options.fail_fast, options.max_errors);
        tasks.spawn(async move {
            let result = process(&p2, &shared2, sample).await;
            if let Err(e) = &result {
                shared2.progress.set_limit(format!("cannot write results: {e}"));
                shared2.stop.store(true, Ordering::Relaxed);
            } else if let Ok(false) = result {
                let failed = shared2.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if fail_fast || max_errors.is_some_and(|m| failed >= m) {
                    shared2.stop.store(true, Ordering::Relaxed);
                }
            }
            // Only now, so that the loop waiting for this slot sees the stop.
            drop(permit);
            result
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
        if shared.interrupted() {
            break SpecEnd::Interrupted;
        }
        if last_report.elapsed() >= REPORT_EVERY {
            report_limit(&p, &shared);
            last_report = Instant::now();
        }
    };
    if let SpecEnd::Interrupted = end {
        tasks.abort_all();
        shared.progress.end();
        return Ok(SpecEnd::Interrupted);
    }
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(done) => { done??; }
                None => break,
            },
            Ok(()) = interrupt.changed() => {
                tasks.abort_all();
                shared.progress.end();
                return Ok(SpecEnd::Interrupted);
            }
            _ = ticker.tick() => report_limit(&p, &shared),
        }
    }
    shared.progress.end();
    Ok(end)
}

fn report_limit(p: &Prepared, shared: &Shared) {
    let Some(model) = &p.model else { return };
    let gate = &model.gate;
    let text = if gate.is_rate_limited() {
        format!(
            "held by rate_limit {}/min of `{}`",
            gate.rate_limit.unwrap_or(0),
            model.model.key
        )
    } else if gate.in_flight() >= gate.concurrency {
        format!(
            "held by max_concurrent_requests {} of `{}`",
            gate.concurrency, model.model.key
        )
    } else {
        String::new()
    };
    shared.progress.set_limit(text);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Solves and scores one sample and appends its record. `Ok(false)` when the sample failed.
async fn process(p: &Prepared, shared: &Shared, sample: Sample) -> anyhow::Result<bool> {
    let start = Instant::now();
    let mut calls: Vec<Call> = Vec::new();
    let mut errors: Vec<Value> = Vec::new();
    let mut usage = Usage::default();
    let solved = match (&p.solver, &p.model) {
        (Some(def), Some(model)) => {
            let mut cx = SolveContext {
                sample: &sample.row,
                target: model,
                registry: &shared.registry,
                templates: &p.templates,
                origin: &p.origin,
                calls: &mut calls,
            };
            match solver::solve(def, &mut cx).await {
                Ok(solved) => Some(solved),
                Err(e) => {
                    errors.push(json!({"stage": "solver", "message": e.message, "detail": e.detail}));
                    None
                }
            }
        }
        _ => Some(Solved::default()),
    };
    let solver_ms = ms(start.elapsed());
    let mut scores = Map::new();
    if let Some(solved) = &solved {
        usage.num_prompt_tokens += solved.usage.num_prompt_tokens;
        usage.num_completion_tokens += solved.usage.num_completion_tokens;
        for (def, snippet) in &p.scorers {
            let mut cx = ScoreContext {
                sample: &sample.row,
                solved,
                registry: &shared.registry,
                templates: &p.templates,
                origin: &p.origin,
                python: Some(&shared.python),
                calls: &mut calls,
                usage: &mut usage,
            };
            match scorer::score(def, snippet.as_ref(), &mut cx).await {
                Ok(s) => {
                    scores.insert(def.name.clone(), serde_json::to_value(s)?);
                }
                Err(message) => errors.push(json!({"stage": "score", "scorer": def.name, "message": message})),
            }
        }
    }
    let retries: u64 = calls
        .iter()
        .map(|c| c.trace.attempts.len().saturating_sub(1) as u64)
        .sum();
    let ok = errors.is_empty();
    let record = json!({
        "spec": p.spec.key,
        "sample_id": sample.id,
        "sample_index": sample.index,
        "sample": sample.row,
        "model_input": solved.as_ref().map(|s| s.model_input.clone()),
        "solver_output": solved.as_ref().map(|s| json!({
            "output": s.output.as_ref().map(|o| o.value.clone()),
            "text": s.output.as_ref().and_then(|o| o.text.clone()),
            "messages": s.messages,
        })),
        "scores": scores,
        "errors": errors,
        "usage": usage,
        "direct_ios": calls,
        "attempts": calls.iter().map(|c| c.trace.attempts.len()).sum::<usize>(),
        "retries": retries,
        "cached": !calls.is_empty() && calls.iter().all(|c| c.trace.cached),
        "timings": {"solver_ms": solver_ms, "score_ms": ms(start.elapsed()) - solver_ms, "total_ms": ms(start.elapsed())},
    });
    shared.run_dir.append(&record)?;
    shared.progress.finish_sample(ok, retries);
    Ok(ok)
}

/// Computes metrics from `samples.jsonl`, writes the task result logs and `summary.json`.
/// `None` when Ctrl-C arrived meanwhile.
fn finish(
    prepared: &[Arc<Prepared>],
    started_specs: &HashSet<String>,
    shared: &Shared,
    config: &RunConfig,
    started: jiff::Timestamp,
    wall: Duration,
) -> anyhow::Result<Option<Value>> {
    let mut spec_summaries = Vec::new();
    let (mut total_samples, mut total_failed, mut total_metric_errors) = (0u64, 0u64, 0u64);
    let mut total_usage = Usage::default();
    for p in prepared {
        if shared.interrupted() {
            return Ok(None);
        }
        if !started_specs.contains(&p.spec.key) {
            // Stopped early (`--fail-fast`, `--max-errors`): nothing ran, nothing to report.
            spec_summaries.push(json!({
                "key": p.spec.key,
                "status": "not_started",
                "task": p.task.key,
                "model": p.spec.model_key,
                "dataset": p.dataset.spec.key,
                "samples": 0,
                "failed": 0,
                "metrics": [],
            }));
            continue;
        }
        let mut per_scorer: HashMap<String, Vec<Map<String, Value>>> = HashMap::new();
        let mut per_scorer_full: HashMap<String, Vec<Value>> = HashMap::new();
        let (mut samples, mut failed) = (0u64, 0u64);
        let mut usage = Usage::default();
        let mut by_stage: Map<String, Value> = Map::new();
        for record in shared.run_dir.records()? {
            let record = record?;
            if record["spec"] != p.spec.key {
                continue;
            }
            samples += 1;
            let errors = record["errors"].as_array().cloned().unwrap_or_default();
            if !errors.is_empty() {
                failed += 1;
            }
            for e in &errors {
                let stage = e["stage"].as_str().unwrap_or("unknown").to_owned();
                let n = by_stage.get(&stage).and_then(Value::as_u64).unwrap_or(0);
                by_stage.insert(stage, json!(n + 1));
            }
            usage.num_prompt_tokens += record["usage"]["num_prompt_tokens"].as_u64().unwrap_or(0);
            usage.num_completion_tokens += record["usage"]["num_completion_tokens"].as_u64().unwrap_or(0);
            if let Some(scores) = record["scores"].as_object() {
                for (name, s) in scores {
                    if let Some(values) = s["values"].as_object() {
                        per_scorer.entry(name.clone()).or_default().push(values.clone());
                        per_scorer_full.entry(name.clone()).or_default().push(s.clone());
                    }
                }
            }
        }
        let mut metrics = Vec::new();
        let mut metric_errors = Vec::new();
        for (def, _) in &p.scorers {
            if def.purpose == "qa" {
                continue;
            }
            let values = per_scorer.get(&def.name).cloned().unwrap_or_default();
            for (i, spec) in def.metrics.iter().enumerate() {
                let computed = match spec {
                    MetricSpec::Python { .. } => python_metric(
                        shared,
                        p,
                        &def.name,
                        i,
                        per_scorer_full.get(&def.name).cloned().unwrap_or_default(),
                    ),
                    other => crate::eval::metric::compute(other, &values).map_err(|e| e.to_string()),
                };
                match computed {
                    Ok(values) => metrics.push(json!({
                        "values": values,
                        "metric_key": spec.key(),
                        "metric_type": spec.display_type(),
                        "scorer_name": def.name,
                        "scorer_key": def.key,
                        "scorer_purpose": def.purpose,
                    })),
                    Err(message) => {
                        *by_stage.entry("metric").or_insert(json!(0)) =
                            json!(by_stage.get("metric").and_then(Value::as_u64).unwrap_or(0) + 1);
                        metric_errors.push(json!({"stage": "metric", "scorer": def.name, "metric_type": spec.display_type(), "message": message}));
                    }
                }
            }
        }
        let spec_summary = json!({
            "key": p.spec.key,
            "display_name": p.spec.display_name,
            "task": p.task.key,
            "model": p.spec.model_key,
            "dataset": p.dataset.spec.key,
            "samples": samples,
            "failed": failed,
            "errors_by_stage": by_stage,
            "metrics": metrics,
            "metric_errors": metric_errors,
            "usage": usage,
        });
        total_metric_errors += metric_errors.len() as u64;
        write_task_log(p, shared, &spec_summary, started)?;
        total_samples += samples;
        total_failed += failed;
        total_usage.num_prompt_tokens += usage.num_prompt_tokens;
        total_usage.num_completion_tokens += usage.num_completion_tokens;
        spec_summaries.push(spec_summary);
    }
    let summary = json!({
        "evaluation": config.evaluation.key,
        "run_dir": shared.run_dir.path(),
        "started_at": started.to_string(),
        "ended_at": jiff::Timestamp::now().to_string(),
        "wall_time_s": wall.as_secs_f64(),
        "specifications": spec_summaries,
        "totals": {"samples": total_samples, "failed": total_failed, "metric_errors": total_metric_errors, "usage": total_usage},
    });
    shared.run_dir.write_summary(&summary)?;
    Ok(Some(summary))
}

fn python_metric(
    shared: &Shared,
    p: &Prepared,
    scorer: &str,
    index: usize,
    scores: Vec<Value>,
) -> Result<Map<String, Value>, String> {
    let snippet = p
        .metric_snippets
        .get(&(scorer.to_owned(), index))
        .ok_or("python metric was not loaded")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let out = rt
        .block_on(
            shared
                .python
                .call(snippet, vec![Value::Array(scores)], Duration::from_secs(300)),
        )
        .map_err(|e| e.to_string())?;
    match out.value {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "`compute_metrics` must return a dict of numbers, got `{other}`"
        )),
    }
}

/// Marks where [`write_task_log`] streams the samples into the log.
const SAMPLES_SLOT: &str = "@@lfeval-samples@@";

/// The AI GO!-shaped task result log (aigo.md §8.9), written sample by sample so a large run
/// never has to sit in memory.
fn write_task_log(p: &Prepared, shared: &Shared, summary: &Value, started: jiff::Timestamp) -> anyhow::Result<()> {
    let dir = shared.run_dir.path().join("task_results").join(&p.spec.key);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let path = dir.join("task_result_log.json");
    let tmp = dir.join("task_result_log.json.tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot write `{}`", tmp.display()))?,
    );
    let failed = summary["failed"].as_u64().unwrap_or(0);
    let head = json!({
        "format_version": "v1",
        "app_version": format!("lfeval {}", env!("CARGO_PKG_VERSION")),
        "status": if failed == 0 && summary["metric_errors"].as_array().is_none_or(Vec::is_empty) { "succeeded" } else { "failed" },
        "specification": {
            "display_name": p.spec.display_name,
            "task": {"key": p.task.key, "display_name": p.task.display_name, "description": p.task.description},
            "task_config": p.task_config,
            "evaluated_model": p.spec.model_key,
            "dataset": p.dataset.spec.key,
            "run_config": {"num_samples": p.spec.num_samples, "subsampling": p.spec.subsampling},
        },
        "execution": {
            "started_at": started.to_string(),
            "ended_at": jiff::Timestamp::now().to_string(),
            "model_usage": {"num_samples": summary["samples"], "num_prompt_tokens": summary["usage"]["num_prompt_tokens"], "num_completion_tokens": summary["usage"]["num_completion_tokens"]},
        },
        "errors": summary["metric_errors"],
        "evidence": {
            "metrics": summary["metrics"],
            "failures": {"num_errors": failed, "num_total": summary["samples"]},
            "samples": SAMPLES_SLOT,
        },
    });
    // The document is written around its sample list, which is streamed in where the slot is.
    let text = crate::redact::redact(&serde_json::to_string_pretty(&head)?).into_owned();
    let slot = format!("\"{SAMPLES_SLOT}\"");
    let (before, after) = text
        .split_once(&slot)
        .context("task result log template lost its sample slot")?;
    write!(out, "{before}[")?;
    let mut first = true;
    for record in shared.run_dir.records()? {
        let record = record?;
        if record["spec"] != p.spec.key {
            continue;
        }
        let evidence = json!({
            "sample_id": record["sample_id"],
            "sample": record["sample"],
            "solver": {"output": record["solver_output"]},
            "scores": record["scores"],
            "errors": record["errors"],
            "direct_ios": record["direct_ios"].as_array().map(|calls| calls.iter().map(|c| json!({
                "model": c["model"],
                "purpose": c["purpose"],
                "request": {"body": c["request_body"]},
                "response": {"status_code": c["response"]["status_code"], "headers": c["response"]["headers"], "body": c["response"]["body"]},
            })).collect::<Vec<_>>()),
        });
        let text = crate::redact::redact(&serde_json::to_string(&evidence)?).into_owned();
        write!(out, "{}\n      {text}", if first { "" } else { "," })?;
        first = false;
    }
    writeln!(out, "\n    ]{after}")?;
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

fn print_summary(summary: &Value, json_output: bool, printer: &Printer) {
    if json_output {
        printer.outln(&serde_json::to_string_pretty(summary).unwrap_or_default());
        return;
    }
    let mut rows = vec![vec![
        "SPECIFICATION".to_owned(),
        "MODEL".to_owned(),
        "SAMPLES".to_owned(),
        "FAILED".to_owned(),
        "METRIC".to_owned(),
        "VALUE".to_owned(),
    ]];
    for spec in summary["specifications"].as_array().into_iter().flatten() {
        let base = vec![
            spec["key"].as_str().unwrap_or("").to_owned(),
            spec["model"].as_str().unwrap_or("-").to_owned(),
            spec["samples"].to_string(),
            spec["failed"].to_string(),
        ];
        if spec["status"] == "not_started" {
            rows.push(
                base.into_iter()
                    .chain(["(not started)".to_owned(), String::new()])
                    .collect(),
            );
            continue;
        }
        let mut any = false;
        for metric in spec["metrics"].as_array().into_iter().flatten() {
            for (name, value) in metric["values"].as_object().into_iter().flatten() {
                if value.is_object() || value.is_array() {
                    continue;
                }
                let shown = if value.is_i64() || value.is_u64() {
                    value.to_string()
                } else {
                    value.as_f64().map_or_else(|| value.to_string(), |v| format!("{v:.4}"))
                };
                let mut row = if any { vec![String::new(); 4] } else { base.clone() };
                row.push(format!("{}.{name}", metric["scorer_name"].as_str().unwrap_or("")));
                row.push(shown);
                rows.push(row);
                any = true;
            }
        }
        if !any {
            let mut row = base;
            row.extend(["(no metrics)".to_owned(), String::new()]);
            rows.push(row);
        }
    }
    printer.out(&crate::table::table(&rows));
    let totals = &summary["totals"];
    printer.outln(&format!(
        "\n{} sample(s), {} failed, {} prompt + {} completion tokens, {:.1}s wall time",
        totals["samples"],
        totals["failed"],
        totals["usage"]["num_prompt_tokens"],
        totals["usage"]["num_completion_tokens"],
        summary["wall_time_s"].as_f64().unwrap_or(0.0)
    ));
    for spec in summary["specifications"].as_array().into_iter().flatten() {
        if let Some(stages) = spec["errors_by_stage"].as_object().filter(|m| !m.is_empty()) {
            let parts: Vec<String> = stages.iter().map(|(k, v)| format!("{v} at {k}")).collect();
            printer.outln(&format!(
                "`{}` errors: {}",
                spec["key"].as_str().unwrap_or(""),
                parts.join(", ")
            ));
        }
    }
    printer.outln(&format!("results: {}", summary["run_dir"].as_str().unwrap_or("")));
}
