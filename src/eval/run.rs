//! Running an evaluation. Samples stream from disk through a bounded pipeline (a semaphore caps
//! how many are in flight, so memory stays flat), each passing its models' gates. Every finished
//! sample becomes a [`SampleRecord`] appended to `samples.jsonl` at once, so a crash or Ctrl-C
//! loses nothing and `--resume` skips what is done. At the end the records are read back and
//! summarised, and the task logs and `summary.json` are written.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::SeedableRng;
use rand::seq::IteratorRandom;
use serde_json::{Map, Value};

use crate::eval::cost::{self, CostBudget};
use crate::eval::dataset::{self, Sample};
use crate::eval::evaluation::Subsampling;
use crate::eval::fingerprint::{Change, FINGERPRINT_FILE, Fingerprint, RunFlags};
use crate::eval::prepare::{Prepared, prepare};
use crate::eval::record::{SampleError, SampleRecord, SampleTimings, SolverOutput};
use crate::eval::run_config::RunConfig;
use crate::eval::run_dir::{RunDir, SessionLog};
use crate::eval::scorer::{self, ScoreContext};
use crate::eval::solver::{self, SolveContext, Solved};
use crate::eval::summary::{self, ModelSummary, RunSummary, SpecIdentity, SpecSummary, Totals};
use crate::eval::task_log::{self, LogHead};
use crate::exit_status::ExitStatus;
use crate::model::cache::{CachePolicy, ResponseCache};
use crate::model::io::Usage;
use crate::model::registry::Registry;
use crate::printer::Printer;
use crate::progress::{self, Progress};
use crate::python::PythonRuntime;
use crate::template::TemplateEngine;

/// How often the progress display is told which limit holds the run back.
const REPORT_EVERY: Duration = Duration::from_millis(500);

/// Seed for `subsampling: random`, so the same run picks the same samples.
const SUBSAMPLING_SEED: u64 = 42;

/// How long one `compute_metrics` call may run.
const METRIC_TIMEOUT: Duration = Duration::from_secs(300);

pub struct RunOptions {
    pub flags: RunFlags,
    pub progress: progress::Mode,
    /// For a resumed run: the fingerprint its directory recorded, if it has one.
    pub recorded: Option<Fingerprint>,
    /// Resume even when the fingerprint changed.
    pub force_resume: bool,
    /// `--max-cost`: USD this session may spend on priced models.
    pub max_cost: Option<f64>,
}

impl RunOptions {
    /// How many failed samples are recorded before the run stops starting new ones.
    fn failure_budget(&self) -> Option<usize> {
        if self.flags.fail_fast {
            Some(1)
        } else {
            self.flags.max_errors
        }
    }
}

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "cannot resume `{}`: the run's configuration changed since it started\n{}\nhint: restore the files, start a new run without `--resume`, or pass `--force-resume` to mix both versions in one run",
        dir.display(),
        changes.iter().map(|c| format!("  - {c}")).collect::<Vec<_>>().join("\n")
    )]
    ResumeRefused {
        dir: std::path::PathBuf,
        changes: Vec<Change>,
    },
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// `None` when the run was interrupted before it could be summarised.
    pub summary: Option<RunSummary>,
    /// The run stopped starting samples after `--fail-fast` / `--max-errors`.
    pub stopped_early: bool,
    /// `(spent, limit)` in USD when `--max-cost` held samples back.
    pub cost_limit: Option<(f64, f64)>,
}

impl RunOutcome {
    pub fn status(&self) -> ExitStatus {
        match &self.summary {
            None => ExitStatus::Interrupted,
            Some(s) if s.totals.failed > 0 || s.totals.metric_errors > 0 || self.stopped_early => ExitStatus::Failure,
            Some(_) => ExitStatus::Success,
        }
    }
}

struct Shared {
    registry: Registry,
    python: PythonRuntime,
    run_dir: RunDir,
    progress: Arc<Progress>,
    /// Set once the failure budget is spent: no new sample starts.
    stop: AtomicBool,
    /// Failed samples recorded in this session.
    failed: AtomicUsize,
    failure_budget: Option<usize>,
    /// Becomes `true` on Ctrl-C or SIGTERM (see [`crate::signals`]).
    interrupt: tokio::sync::watch::Receiver<bool>,
    budget: Option<CostBudget>,
}

impl Shared {
    fn interrupted(&self) -> bool {
        *self.interrupt.borrow()
    }
}

/// Runs the evaluation to its end, to an interruption or to an early stop.
pub fn run(
    config: RunConfig,
    run_dir: RunDir,
    python: PythonRuntime,
    options: &RunOptions,
    printer: &Printer,
) -> anyhow::Result<RunOutcome> {
    let policy = if options.flags.no_cache {
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
    let fingerprint = Fingerprint::compute(&config, &prepared, &registry, options.flags.clone())?;
    if let Some(recorded) = &options.recorded {
        let changes = recorded.changes(&fingerprint);
        if !changes.is_empty() && !options.force_resume {
            return Err(RunError::ResumeRefused {
                dir: run_dir.path().to_path_buf(),
                changes,
            }
            .into());
        }
    }
    run_dir.write_json(FINGERPRINT_FILE, &fingerprint)?;
    let runtime = crate::async_runtime::build()?;
    let interrupt = crate::signals::listen(&runtime);
    let shared = Arc::new(Shared {
        registry,
        python,
        run_dir,
        progress: Progress::new(options.progress, *printer),
        stop: AtomicBool::new(false),
        failed: AtomicUsize::new(0),
        failure_budget: options.failure_budget(),
        interrupt,
        budget: options.max_cost.map(CostBudget::new),
    });
    let session = SessionLog::start();
    let prepared: Vec<Arc<Prepared>> = prepared.into_iter().map(Arc::new).collect();
    let mut started_specs = HashSet::new();
    runtime.block_on(async {
        for p in &prepared {
            started_specs.insert(p.spec.key.clone());
            match run_spec(Arc::clone(p), Arc::clone(&shared)).await? {
                SpecEnd::Done => {}
                SpecEnd::Interrupted | SpecEnd::Stopped => break,
            }
        }
        anyhow::Ok(())
    })?;
    shared.run_dir.finish()?;
    shared.run_dir.end_session(session)?;
    // The runtime (and its signal listener) stays alive while metrics are computed.
    let summary = if shared.interrupted() {
        None
    } else {
        finish(&prepared, &started_specs, &shared, &config, &runtime, &fingerprint)?
    };
    runtime.shutdown_background();
    Ok(RunOutcome {
        summary,
        stopped_early: shared.stop.load(Ordering::Relaxed),
        cost_limit: shared
            .budget
            .as_ref()
            .filter(|b| b.reached())
            .map(|b| (b.spent(), b.limit())),
    })
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

async fn run_spec(p: Arc<Prepared>, shared: Arc<Shared>) -> anyhow::Result<SpecEnd> {
    let (total, chosen) = selection(&p)?;
    let done_before = shared.run_dir.recorded_count(&p.spec.key) as u64;
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
        if shared.budget.as_ref().is_some_and(|b| !b.try_start()) {
            shared.stop.store(true, Ordering::Relaxed);
            break SpecEnd::Stopped;
        }
        let (p2, shared2) = (Arc::clone(&p), Arc::clone(&shared));
        tasks.spawn(async move {
            let result = process(&p2, &shared2, sample).await;
            if let Err(e) = &result {
                shared2.progress.set_limit(format!("cannot write results: {e}"));
                shared2.stop.store(true, Ordering::Relaxed);
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

/// Solves and scores one sample and appends its record.
async fn process(p: &Prepared, shared: &Shared, sample: Sample) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut record = SampleRecord::new(&p.spec.key, sample.id, sample.index as u64, sample.row);
    let mut usage = Usage::default();
    let solved = match (&p.solver, &p.model) {
        (Some(def), Some(model)) => {
            let mut cx = SolveContext {
                sample: &record.sample,
                target: model,
                registry: &shared.registry,
                templates: &p.templates,
                origin: &p.origin,
                calls: &mut record.calls,
            };
            match solver::solve(def, &mut cx).await {
                Ok(solved) => Some(solved),
                Err(e) => {
                    record.errors.push(e);
                    None
                }
            }
        }
        _ => Some(Solved::default()),
    };
    let solver_ms = ms(start.elapsed());
    if let Some(solved) = &solved {
        usage += solved.usage;
        for (def, snippet) in &p.scorers {
            let mut cx = ScoreContext {
                sample: &record.sample,
                solved,
                registry: &shared.registry,
                templates: &p.templates,
                origin: &p.origin,
                python: Some(&shared.python),
                calls: &mut record.calls,
                usage: &mut usage,
            };
            match scorer::score(def, snippet.as_ref(), &mut cx).await {
                Ok(scores) => {
                    record.scores.insert(def.name.clone(), scores);
                }
                Err(e) => record.errors.push(SampleError {
                    scorer: Some(def.name.clone()),
                    ..e
                }),
            }
        }
        record.model_input = Some(solved.model_input.clone());
        record.solver_output = Some(SolverOutput {
            output: solved.output.as_ref().map(|o| o.value.clone()),
            text: solved.output.as_ref().and_then(|o| o.text.clone()),
            messages: solved.messages.clone(),
        });
    }
    record.usage = usage;
    record.attempts = record.calls.iter().map(|c| c.trace.attempts.len() as u32).sum();
    record.retries = record
        .calls
        .iter()
        .map(|c| c.trace.attempts.len().saturating_sub(1) as u32)
        .sum();
    record.cached = !record.calls.is_empty() && record.calls.iter().all(|c| c.trace.cached);
    record.cost_usd = cost::sample_cost(&record.calls, &shared.registry);
    if let Some(budget) = &shared.budget {
        budget.finish(record.cost_usd);
    }
    let total_ms = ms(start.elapsed());
    record.timings = SampleTimings {
        solver_ms,
        score_ms: total_ms - solver_ms,
        total_ms,
    };
    let failed = record.failed();
    if failed && !spend_failure(shared) {
        // Past the failure budget: the sample stays unrecorded and runs again on `--resume`.
        return Ok(());
    }
    shared.run_dir.append(&record)?;
    shared.progress.finish_sample(!failed, u64::from(record.retries));
    Ok(())
}

/// Counts a failed sample against `--fail-fast` / `--max-errors`. `false` when the budget was
/// already spent by samples that finished first; the failure that spends the last of it stops
/// the run.
fn spend_failure(shared: &Shared) -> bool {
    let Some(budget) = shared.failure_budget else {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        return true;
    };
    let taken = shared
        .failed
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < budget).then_some(n + 1));
    match taken {
        Ok(n) => {
            if n + 1 >= budget {
                shared.stop.store(true, Ordering::Relaxed);
            }
            true
        }
        Err(_) => false,
    }
}

/// Summarises every specification from `samples.jsonl`, writes the task result logs and
/// `summary.json`. `None` when an interruption arrived meanwhile.
fn finish(
    prepared: &[Arc<Prepared>],
    started_specs: &HashSet<String>,
    shared: &Shared,
    config: &RunConfig,
    runtime: &tokio::runtime::Runtime,
    fingerprint: &Fingerprint,
) -> anyhow::Result<Option<RunSummary>> {
    let mut specifications = Vec::new();
    let mut totals = Totals::default();
    let sessions = shared.run_dir.sessions()?;
    for p in prepared {
        if shared.interrupted() {
            return Ok(None);
        }
        let identity = SpecIdentity {
            key: p.spec.key.clone(),
            display_name: p.spec.display_name.clone(),
            task: p.task.key.clone(),
            model: p.spec.model_key.clone(),
            dataset: p.dataset.spec.key.clone(),
        };
        if !started_specs.contains(&p.spec.key) && shared.run_dir.recorded_count(&p.spec.key) == 0 {
            // Stopped early (`--fail-fast`, `--max-errors`): nothing ran, nothing to report.
            specifications.push(SpecSummary::not_started(identity));
            continue;
        }
        let mut python_metric = |scorer: &str, index: usize, scores: Vec<Value>| {
            let snippet = p
                .metric_snippets
                .get(&(scorer.to_owned(), index))
                .ok_or("python metric was not loaded")?;
            let out = runtime
                .block_on(shared.python.call(snippet, vec![Value::Array(scores)], METRIC_TIMEOUT))
                .map_err(|e| e.to_string())?;
            match out.value {
                Value::Object(map) => Ok(map),
                other => Err(format!(
                    "`compute_metrics` must return a dict of numbers, got `{other}`"
                )),
            }
        };
        let mut unreadable = None;
        let records = shared
            .run_dir
            .records()?
            .map_while(|r| r.map_err(|e| unreadable = Some(e)).ok());
        let summary = summary::summarize(identity, &p.scorer_defs(), records, &mut python_metric);
        if let Some(e) = unreadable {
            return Err(e).context("cannot read the run's records");
        }
        let head = LogHead {
            spec: &p.spec,
            task: &p.task,
            task_config: &p.task_config,
            dataset: &p.dataset.spec.key,
            started_at: &sessions.first_started_at,
        };
        task_log::write(&shared.run_dir, &head, &summary)?;
        totals.add(&summary);
        specifications.push(summary);
    }
    let summary = RunSummary {
        evaluation: config.evaluation.key.clone(),
        run_dir: shared.run_dir.path().to_path_buf(),
        started_at: sessions.first_started_at.clone(),
        ended_at: jiff::Timestamp::now().to_string(),
        wall_time_s: sessions.wall_time_s,
        sessions: sessions.count,
        specifications,
        totals,
        models: ModelSummary::of_registry(&shared.registry),
        datasets: fingerprint.datasets(config, prepared.iter().map(|p| &**p)),
    };
    shared.run_dir.write_summary(&summary)?;
    Ok(Some(summary))
}
