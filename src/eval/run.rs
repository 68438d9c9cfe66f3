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
use serde_json::Value;

use crate::eval::cost::{self, CostBudget};
use crate::eval::dataset::Sample;
use crate::eval::evaluation::Subsampling;
use crate::eval::evidence_spool::{EvidenceSpool, SealedSpool};
use crate::eval::fingerprint::{Change, FINGERPRINT_FILE, Fingerprint, RunFlags};
use crate::eval::prepare::{Prepared, Samples, prepare};
use crate::eval::process;
use crate::eval::python_busy::{self, BusyMeter};
use crate::eval::record::{RecordIdentity, SampleError, Scores};
use crate::eval::run_config::RunConfig;
use crate::eval::run_dir::{InOrder, Place, RunDir, SessionLog};
use crate::eval::sample_source;
use crate::eval::scorer::ScorerKind;
use crate::eval::shard::Shard;
use crate::eval::summary::{self, DatasetSummary, ModelSummary, RunSummary, SpecIdentity, SpecSummary, Totals};
use crate::eval::tally::Tally;
use crate::eval::task_log::{LogHead, TaskLog};
use crate::exit_status::ExitStatus;
use crate::model::cache::{CachePolicy, ResponseCache};
use crate::model::gate::Holding;
use crate::model::registry::Registry;
use crate::model::shared_limits::{LimitsConfig, ModelLimits, SharedLimits};
use crate::printer::Printer;
use crate::progress::{self, Progress};
use crate::python::PythonRuntime;

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
    /// Limits shared with other processes (`--limits`).
    pub limits: Option<LimitsConfig>,
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
    /// What held the run back that the user can change, one paragraph each (see
    /// [`python_busy`]).
    pub notes: Vec<String>,
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
    /// The part of the samples this process runs.
    shard: Option<Shard>,
    budget: Option<CostBudget>,
    /// What this session recorded, for the summary and the task logs.
    tally: Tally,
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
    let (prepared, registry) = prepare(&config.scope(), &python, cache.as_ref(), policy)?;
    let used_tasks: Vec<String> = prepared.iter().map(|p| p.task.key.clone()).collect();
    let used_datasets: Vec<String> = prepared
        .iter()
        .flat_map(|p| p.datasets().into_iter().map(|d| d.spec.key.clone()))
        .collect();
    let file = crate::yaml::display_path(&config.project.root, &config.file);
    for warning in
        crate::eval::run_config::unused_load_errors(&file, &config.datasets, &config.tasks, &used_tasks, &used_datasets)
    {
        printer.warn(&warning);
    }
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
    if let Some(limits) = &options.limits {
        share_limits(&runtime, limits, &registry)?;
    }
    let interrupt = crate::signals::listen(&runtime);
    let tally = Tally::new(
        prepared
            .iter()
            .map(|p| (p.spec.key.clone(), summary::Fold::new(&p.scorer_defs()))),
    );
    let shared = Arc::new(Shared {
        registry,
        python,
        run_dir,
        progress: Progress::new(options.progress, *printer),
        stop: AtomicBool::new(false),
        failed: AtomicUsize::new(0),
        failure_budget: options.failure_budget(),
        interrupt,
        shard: options.flags.shard,
        budget: options.max_cost.map(CostBudget::new),
        tally,
    });
    let session = SessionLog::start();
    let prepared: Vec<Arc<Prepared>> = prepared.into_iter().map(Arc::new).collect();
    // The dispatch loop stays on this thread: on a worker, tokio would run the task it spawned
    // last first, so samples would start out of dataset order.
    let mut started_specs = HashSet::new();
    let mut notes = Vec::new();
    runtime.block_on(async {
        for p in &prepared {
            started_specs.insert(p.spec.key.clone());
            let (busy, started) = (shared.python.busy(), Instant::now());
            let end = run_spec(Arc::clone(p), Arc::clone(&shared)).await?;
            let concurrency = p.model.as_ref().map_or(0, |m| m.gate.concurrency);
            let busy = shared.python.busy().since(busy);
            notes.extend(python_busy::note(&p.spec.key, concurrency, busy, started.elapsed()));
            match end {
                SpecEnd::Done => {}
                SpecEnd::Interrupted | SpecEnd::Stopped => break,
            }
        }
        anyhow::Ok(())
    })?;
    shared.run_dir.end_session(session)?;
    shared.run_dir.finish()?;
    if let Some(Err(e)) = cache.as_ref().map(|c| c.finish()) {
        printer.warn(&format!("some responses could not be cached: {e}"));
    }
    // The runtime (and its signal listener) stays alive while metrics are computed.
    let summary = if shared.interrupted() {
        None
    } else {
        finish(&prepared, &started_specs, &shared, &config, &runtime, &fingerprint)?
    };
    // An interrupted run writes no summary, which is what waits for the sync otherwise.
    shared.run_dir.synced()?;
    for r in shared.registry.runtimes() {
        let lost = r.gate.lost_leases();
        if lost > 0 {
            printer.warn(&format!(
                "{lost} call(s) of `{}` ran over the shared max_concurrent_requests: their leases expired while this process was stalled\nhint: a longer `--limits-lease` tolerates longer stalls",
                r.model.key
            ));
        }
    }
    runtime.shutdown_background();
    Ok(RunOutcome {
        summary,
        notes,
        stopped_early: shared.stop.load(Ordering::Relaxed),
        cost_limit: shared
            .budget
            .as_ref()
            .filter(|b| b.reached())
            .map(|b| (b.spent(), b.limit())),
    })
}

/// Connects to the shared limits and hands every model's limits to them, before any call.
fn share_limits(runtime: &tokio::runtime::Runtime, config: &LimitsConfig, registry: &Registry) -> anyhow::Result<()> {
    let limits = runtime.block_on(SharedLimits::connect(config))?;
    let _inside = runtime.enter();
    for r in registry.runtimes() {
        let model = &r.model;
        let declared = ModelLimits {
            max_concurrent: model.max_concurrent_requests,
            rate_limit: model.rate_limit,
            tokens_per_minute: model.tokens_per_minute,
        };
        r.gate.share(limits.model(&model.key, declared));
    }
    Ok(())
}

enum SpecEnd {
    Done,
    Interrupted,
    Stopped,
}

/// The samples a specification runs: how many `shard` owns (all of them without one), and the
/// random pick, if any.
struct Selection {
    samples: u64,
    chosen: Option<HashSet<usize>>,
}

/// The samples a specification runs, in dataset order: the first N, or N picked at random with a
/// fixed seed (only their indices are kept while choosing, so memory stays small).
fn selection(p: &Prepared, run_dir: &RunDir, shard: Option<Shard>) -> anyhow::Result<Selection> {
    let owns = |sample: &Sample| shard.is_none_or(|s| s.owns(&sample.id));
    let samples = sample_source::open(p, run_dir)?;
    let random = p.spec.num_samples.filter(|_| p.spec.subsampling == Subsampling::Random);
    let Some(n) = random else {
        // The first N, or all: counted as they pass. Every sample is read either way, for the
        // dataset's ids to be checked.
        let n = p.spec.num_samples.unwrap_or(usize::MAX);
        let mut owned = 0;
        for (i, sample) in samples.enumerate() {
            let sample = sample?;
            owned += u64::from(i < n && owns(&sample));
        }
        return Ok(Selection {
            samples: owned,
            chosen: None,
        });
    };
    let mut indices = Vec::new();
    for sample in samples {
        let sample = sample?;
        indices.push((sample.index, owns(&sample)));
    }
    let chosen = (n < indices.len()).then(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(SUBSAMPLING_SEED);
        indices
            .iter()
            .map(|(index, _)| *index)
            .choose_multiple(&mut rng, n)
            .into_iter()
            .collect::<HashSet<usize>>()
    });
    let owned = match &chosen {
        Some(chosen) => indices
            .iter()
            .filter(|(index, own)| *own && chosen.contains(index))
            .count(),
        None => indices.iter().filter(|(_, own)| *own).count(),
    };
    Ok(Selection {
        samples: owned as u64,
        chosen,
    })
}

/// The samples a specification runs (whatever shard runs them), in dataset order.
pub fn selected_samples(
    p: &Prepared,
    run_dir: &RunDir,
) -> anyhow::Result<impl Iterator<Item = anyhow::Result<Sample>> + use<>> {
    selected(p, run_dir, selection(p, run_dir, None)?.chosen)
}

/// The dataset's samples narrowed to the [`selection`]'s random pick, or to its first N (the
/// second pass over them: the selection made the first).
fn selected(
    p: &Prepared,
    run_dir: &RunDir,
    chosen: Option<HashSet<usize>>,
) -> anyhow::Result<impl Iterator<Item = anyhow::Result<Sample>> + use<>> {
    let limit = p.spec.num_samples.unwrap_or(usize::MAX);
    Ok(sample_source::open_again(p, run_dir)?
        .filter(move |s| match (s, &chosen) {
            (Ok(sample), Some(chosen)) => chosen.contains(&sample.index),
            _ => true,
        })
        .take(limit))
}

async fn run_spec(p: Arc<Prepared>, shared: Arc<Shared>) -> anyhow::Result<SpecEnd> {
    let shard = shared.shard;
    let Selection {
        samples: samples_total,
        chosen,
    } = selection(&p, &shared.run_dir, shard)?;
    // Given back here, on the thread that freed it: after the next `.await` this task may go
    // on on another worker, whose collection would not reach it (~2 MB at 100,000 samples).
    crate::memory::collect();
    let trials = p.num_trials();
    let total = samples_total * u64::from(trials);
    let done_before = shared.run_dir.recorded_count(&p.spec.key) as u64;
    shared.progress.start(&p.spec.key, total, done_before.min(total));
    // What this session will record, reserved now: grown by doubling instead, each structure
    // kept up to half its size in slack and, for a while, its old copy too.
    let expected = usize::try_from(total.saturating_sub(done_before)).unwrap_or(0);
    shared.tally.reserve(&p.spec.key, expected);
    let precomputed = Arc::new(all_sample_scores(&p, &shared, chosen.clone()).await?);
    let limit = p.model.as_ref().map_or(8, |m| m.gate.concurrency * 2).clamp(2, 512);
    let slots = Arc::new(tokio::sync::Semaphore::new(limit));
    let refill = u32::try_from(limit / 2).unwrap_or(1).max(1);
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut tasks = tokio::task::JoinSet::new();
    let mut samples = selected(&p, &shared.run_dir, chosen)?;
    // Each (sample, trial) is one unit of work; `pending` holds the trials of the current sample.
    let mut pending: std::collections::VecDeque<(Sample, Option<u32>)> = std::collections::VecDeque::new();
    if shared.interrupted() {
        return Ok(SpecEnd::Interrupted);
    }
    let mut interrupt = shared.interrupt.clone();
    // The passes over the dataset are done; this thread allocates little from here on.
    crate::memory::collect();
    let mut ticker = tokio::time::interval(REPORT_EVERY);
    let mut last_report = Instant::now();
    let mut python_meter = BusyMeter::new(shared.python.busy());
    let end = 'dispatch: loop {
        if shared.stop.load(Ordering::Relaxed) {
            break SpecEnd::Stopped;
        }
        if pending.is_empty() {
            let sample = match samples.next() {
                Some(s) => s?,
                None => break SpecEnd::Done,
            };
            if shard.is_some_and(|s| !s.owns(&sample.id)) {
                continue;
            }
            if trials > 1 {
                pending.extend((1..=trials).map(|t| (sample.clone(), Some(t))));
            } else {
                pending.push_back((sample, None));
            }
        }
        let Some((sample, trial)) = pending.pop_front() else {
            continue;
        };
        // A postprocessed sample is done once its first row is recorded.
        let first_part = p.postprocessor.as_ref().map(|_| 0);
        let place = Place::new(sample.index as u64, trial, first_part);
        if shared.run_dir.is_recorded(&p.spec.key, &sample.id, place) {
            continue;
        }
        // Slots are taken in batches: every free one at once or, when none is free, half the
        // pipeline's worth. Waiting for one slot at a time woke this thread once per finished
        // sample; half the pipeline still leaves the model's concurrency in flight meanwhile.
        let permit = loop {
            if let Some(permit) = held.as_mut().and_then(|h| h.split(1)) {
                break permit;
            }
            let free = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
            held = Some(match Arc::clone(&slots).try_acquire_many_owned(free) {
                Ok(batch) if free > 0 => batch,
                _ => tokio::select! {
                    batch = Arc::clone(&slots).acquire_many_owned(refill) => batch?,
                    Ok(()) = interrupt.changed() => break 'dispatch SpecEnd::Interrupted,
                },
            });
        };
        // A sample may have failed while this one waited for its slot.
        if shared.stop.load(Ordering::Relaxed) {
            break SpecEnd::Stopped;
        }
        if shared.budget.as_ref().is_some_and(|b| !b.try_start()) {
            shared.stop.store(true, Ordering::Relaxed);
            break SpecEnd::Stopped;
        }
        let (p2, shared2, pre) = (Arc::clone(&p), Arc::clone(&shared), Arc::clone(&precomputed));
        tasks.spawn(async move {
            // Boxed: the whole call chain's state is ~10 KB, which tokio would otherwise copy
            // each time it moves the task between its stages.
            let result = Box::pin(process(&p2, &shared2, sample, trial, &pre)).await;
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
            report_limit(&p, &shared, &mut python_meter);
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
            _ = ticker.tick() => report_limit(&p, &shared, &mut python_meter),
        }
    }
    shared.progress.end();
    Ok(end)
}

fn report_limit(p: &Prepared, shared: &Shared, python: &mut BusyMeter) {
    let Some(model) = &p.model else { return };
    let gate = &model.gate;
    let python = python.status(shared.python.busy());
    let text = match gate.holding() {
        Some(Holding::Paused) => {
            let left = gate.paused_remaining().unwrap_or_default();
            format!(
                "paused by Retry-After of `{}` for {}",
                model.model.key,
                crate::diagnostic::format_duration(Duration::from_secs(left.as_secs().max(1)))
            )
        }
        Some(h) => format!("held by {} of `{}`", h.describe(gate), model.model.key),
        None => python.unwrap_or_default(),
    };
    shared.progress.set_limit(text);
}

/// Solves and scores one sample (one trial of it) and appends its records.
async fn process(
    p: &Prepared,
    shared: &Shared,
    sample: Sample,
    trial: Option<u32>,
    precomputed: &std::collections::HashMap<usize, Result<Scores, SampleError>>,
) -> anyhow::Result<()> {
    let env = process::Env {
        registry: &shared.registry,
        python: &shared.python,
    };
    let pre = precomputed.get(&sample.index);
    let mut records = process::sample(p, &env, sample, trial, pre).await;
    for record in &mut records {
        record.cost_usd = cost::sample_cost(&record.calls, &shared.registry);
    }
    if let Some(budget) = &shared.budget {
        budget.finish(records.iter().filter_map(|r| r.cost_usd).reduce(|a, b| a + b));
    }
    let failed = records.iter().any(|r| r.failed());
    // The shared limits server is gone: this sample failed for it, not for itself, so it stays
    // unrecorded (it runs again on `--resume`) and the run stops.
    if failed && let Some(e) = shared.registry.runtimes().find_map(|r| r.gate.broken()) {
        return Err(e.clone().into());
    }
    if failed && !spend_failure(shared) {
        // Past the failure budget: the sample stays unrecorded and runs again on `--resume`.
        return Ok(());
    }
    let retries: u32 = records.iter().map(|r| r.retries).sum();
    for record in records {
        shared.run_dir.append(&record)?;
        shared.tally.add(&shared.run_dir, record)?;
    }
    shared.progress.finish_sample(!failed, u64::from(retries));
    Ok(())
}

/// `python_all_samples` scores of a dataset task, by sample index: one `compute_scores(samples)`
/// call over every selected sample, before any sample is recorded.
async fn all_sample_scores(
    p: &Prepared,
    shared: &Shared,
    chosen: Option<HashSet<usize>>,
) -> anyhow::Result<std::collections::HashMap<usize, Result<Scores, SampleError>>> {
    let mut by_index = std::collections::HashMap::new();
    let snippets: Vec<_> = p
        .scorers
        .iter()
        .filter(|(d, _)| matches!(d.kind, ScorerKind::PythonAllSamples { .. }))
        .filter_map(|(d, s)| s.as_ref().map(|s| (d.name.clone(), s.clone())))
        .collect();
    if snippets.is_empty() {
        return Ok(by_index);
    }
    let mut indices = Vec::new();
    let mut rows = Vec::new();
    // The whole selection, whichever shard runs which sample: the scores must be those a
    // single run would compute.
    for sample in selected(p, &shared.run_dir, chosen)? {
        let sample = sample?;
        indices.push(sample.index);
        rows.push(sample.row);
    }
    let keyed: Option<Vec<String>> = match &p.samples {
        Samples::Aligned(list) => Some(list.iter().map(|(k, _)| k.clone()).collect()),
        _ => None,
    };
    // One snippet per scorer; a task rarely has more than one, so the scores are merged.
    for (_, snippet) in snippets {
        let scores = process::all_sample_scores(&snippet, &shared.python, &rows, keyed.as_deref()).await;
        for (index, score) in indices.iter().zip(scores) {
            by_index.insert(*index, score);
        }
    }
    Ok(by_index)
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
    let outputs = Outputs {
        run_dir: &shared.run_dir,
        python: &shared.python,
        evaluation: &config.evaluation.key,
        sessions: shared.run_dir.sessions()?,
        models: ModelSummary::of_registry(&shared.registry),
        datasets: fingerprint.datasets(config, prepared.iter().map(|p| &**p)),
        tally: Some(&shared.tally),
    };
    write_outputs(prepared, started_specs, &outputs, runtime, &|| shared.interrupted())
}

/// What [`write_outputs`] writes into and from.
pub struct Outputs<'a> {
    pub run_dir: &'a RunDir,
    pub python: &'a PythonRuntime,
    pub evaluation: &'a str,
    pub sessions: crate::eval::run_dir::Sessions,
    /// The models the run called, for `summary.json` (pricing feeds reports and `--max-cost`).
    pub models: Vec<ModelSummary>,
    pub datasets: Vec<DatasetSummary>,
    /// What the session recorded, when the records were appended by this process.
    pub tally: Option<&'a Tally>,
}

/// Summarises every specification from the run directory's `samples.jsonl`, writes the task
/// result logs and `summary.json`: the end of a run, and all of `merge`. `None` when
/// `interrupted` says so meanwhile.
pub fn write_outputs(
    prepared: &[Arc<Prepared>],
    started_specs: &HashSet<String>,
    outputs: &Outputs<'_>,
    runtime: &tokio::runtime::Runtime,
    interrupted: &dyn Fn() -> bool,
) -> anyhow::Result<Option<RunSummary>> {
    // What the samples freed is not coming back: the rest is the main thread's.
    crate::memory::release_freed();
    let mut specifications = Vec::new();
    let mut totals = Totals::default();
    let sessions = &outputs.sessions;
    let run_dir = outputs.run_dir;
    for p in prepared {
        if interrupted() {
            return Ok(None);
        }
        let identity = SpecIdentity {
            key: p.spec.key.clone(),
            display_name: p.spec.display_name.clone(),
            task: p.task.key.clone(),
            model: p.spec.model_key.clone(),
            dataset: p.dataset_label(),
        };
        if !started_specs.contains(&p.spec.key) && run_dir.recorded_count(&p.spec.key) == 0 {
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
                .block_on(outputs.python.call(snippet, vec![Value::Array(scores)], METRIC_TIMEOUT))
                .map_err(|e| e.to_string())?;
            match out.value {
                Value::Object(map) => Ok(map),
                other => Err(format!(
                    "`compute_metrics` must return a dict of numbers, got `{other}`"
                )),
            }
        };
        let dataset_label = p.dataset_label();
        let head = LogHead {
            spec: &p.spec,
            task: &p.task,
            task_config: &p.task_config,
            dataset: &dataset_label,
            started_at: &sessions.first_started_at,
        };
        // One pass over the records in sample order feeds both the summary and the task log;
        // the records this session tallied are not read again.
        let scorers = p.scorer_defs();
        let tallied = outputs.tally.and_then(|t| t.take(&p.spec.key));
        let (mut fold, spool) = match tallied {
            Some(t) => (t.fold, t.spool.map(EvidenceSpool::seal).transpose()?),
            None => (summary::Fold::new(&scorers), None),
        };
        let spooled = spool.as_ref().map_or(0, SealedSpool::len);
        let mut log = TaskLog::create(run_dir, &p.spec.key)?;
        if spooled == run_dir.recorded_count(&p.spec.key) {
            // Every line of the specification is this session's (a run that was not resumed):
            // the spool holds them all, in sample order, and `samples.jsonl` is not read.
            if let Some(spool) = &spool {
                spool.copy_all(|evidence| log.add_rendered(evidence))?;
            }
        } else {
            let mut known = 0;
            let is_known = |identity: &RecordIdentity| spool.as_ref().is_some_and(|s| s.contains(identity));
            for line in run_dir.lines_in_order(&p.spec.key, is_known)? {
                match line.context("cannot read the run's records")? {
                    InOrder::Record(record) => {
                        log.add(&record)?;
                        fold.add(*record);
                    }
                    InOrder::Known(identity) => {
                        let spool = spool
                            .as_ref()
                            .context("internal error: a record known without a spool")?;
                        spool.copy_next(&identity, |evidence| log.add_rendered(evidence))?;
                        known += 1;
                    }
                }
            }
            // A tallied record whose line was not recognised would have been folded twice.
            anyhow::ensure!(
                known == spooled,
                "internal error: {} of the {} records this session wrote for `{}` were not found in `samples.jsonl`",
                spooled - known,
                spooled,
                p.spec.key
            );
        }
        let aggregators = p.trials.as_ref().map_or(&[][..], |t| t.aggregators.as_slice());
        let summary = fold.finish(identity, &scorers, aggregators, &mut python_metric);
        log.finish(&head, &summary)?;
        totals.add(&summary);
        specifications.push(summary);
    }
    let summary = RunSummary {
        evaluation: outputs.evaluation.to_owned(),
        run_dir: run_dir.path().to_path_buf(),
        started_at: sessions.first_started_at.clone(),
        ended_at: jiff::Timestamp::now().to_string(),
        wall_time_s: sessions.wall_time_s,
        sessions: sessions.count,
        specifications,
        totals,
        models: outputs.models.clone(),
        datasets: outputs.datasets.clone(),
    };
    run_dir.write_summary(&summary)?;
    Ok(Some(summary))
}
