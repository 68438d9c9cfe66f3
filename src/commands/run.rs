//! `lfeval run -f run.yaml` and `lfeval run --resume RUN_DIR`: load the run config, create (or
//! reopen) the run directory, hand over to the evaluation, and print what it adds up to: the
//! metrics table, failures grouped by cause, and where the records are.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::{GlobalArgs, LimitsArgs, RunArgs};
use crate::eval::fingerprint::{FINGERPRINT_FILE, Fingerprint, RunFlags};
use crate::eval::run::{self, RunOptions, RunOutcome};
use crate::eval::run_dir::{RunDir, RunInfo};
use crate::eval::shard::Shard;
use crate::eval::summary::{RunSummary, SpecStatus};
use crate::exit_status::ExitStatus;
use crate::model::shared_limits::{LimitsConfig, LimitsError};
use crate::printer::Printer;
use crate::progress;

/// How long a failure message may be in the grouped list (the record has it whole).
const MESSAGE_WIDTH: usize = 160;

pub fn run(global: &GlobalArgs, args: &RunArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let shard = match (args.shard, args.shards) {
        (Some(shard), _) => Some(shard),
        (None, Some(count)) => Some(Shard::from_scheduler(count, |name| std::env::var(name).ok())?),
        (None, None) => None,
    };
    let given = RunFlags {
        no_cache: args.no_cache,
        fail_fast: args.fail_fast,
        max_errors: args.max_errors,
        shard,
    };
    // A new run directory and whether it existed (empty) before this run.
    let mut created: Option<(PathBuf, bool)> = None;
    let (config, run_dir, flags, recorded) = match &args.resume {
        Some(dir) => {
            let (run_dir, state) = RunDir::resume(dir).with_context(|| format!("cannot resume `{}`", dir.display()))?;
            let info = run_dir.info().clone();
            let run_file = info
                .run_file
                .clone()
                .context("this run directory does not say which run config it came from")?;
            let config = crate::eval::run_config::load(&run_file, Some(&info.project_dir), global.env_file.as_deref())?;
            let recorded = Fingerprint::read(run_dir.path())?;
            // The run keeps the flags it started with; flags given now add to them.
            let flags = match &recorded {
                Some(r) => RunFlags {
                    no_cache: r.flags.no_cache || given.no_cache,
                    fail_fast: r.flags.fail_fast || given.fail_fast,
                    max_errors: given.max_errors.or(r.flags.max_errors),
                    // A different shard is a different run: the fingerprint check refuses it.
                    shard: given.shard.or(r.flags.shard),
                },
                None => given,
            };
            if state.truncated_bytes > 0 {
                printer.warn(&format!(
                    "dropped a partial last line ({} bytes) from `samples.jsonl`",
                    state.truncated_bytes
                ));
            }
            let retried = if args.retry_failed { run_dir.drop_failed()? } else { 0 };
            printer.errln(&format!(
                "resuming `{}`: {} sample(s) already done{}",
                run_dir.path().display(),
                state.records - retried,
                if retried > 0 {
                    format!(", {retried} failed one(s) to run again")
                } else {
                    String::new()
                }
            ));
            (config, run_dir, flags, recorded)
        }
        None => {
            let Some(file) = &args.file else {
                anyhow::bail!("`lfeval run` needs `-f RUN.yaml` or `--resume RUN_DIR`")
            };
            let config = crate::eval::run_config::load(file, global.project.as_deref(), global.env_file.as_deref())?;
            let now = jiff::Timestamp::now();
            let path = match &args.output {
                Some(p) => p.clone(),
                None => shard_path(
                    RunDir::default_path(&config.project.root, &config.evaluation.key, now),
                    shard,
                ),
            };
            let info = RunInfo {
                project_dir: config.project.root.clone(),
                run_file: Some(config.file.clone()),
                started_at: now,
            };
            let existed = path.exists();
            let run_dir = RunDir::create(&path, &info, &config.resolved)?;
            created = Some((path, existed));
            (config, run_dir, given, None)
        }
    };
    let python = super::start_python(global)?;
    let mode = if args.no_progress || args.json {
        progress::Mode::Off
    } else if std::io::stderr().is_terminal() {
        progress::Mode::Bar
    } else {
        progress::Mode::Lines
    };
    let options = RunOptions {
        flags,
        progress: mode,
        recorded,
        force_resume: args.force_resume,
        limits: limits_config(&args.limits),
        max_cost: args.max_cost,
    };
    if let Some(limit) = args.max_cost {
        anyhow::ensure!(
            limit.is_finite() && limit >= 0.0,
            "`--max-cost` must be a number of USD, 0 or more, found `{limit}`"
        );
    }
    let policies = config.policies.clone();
    let run_path = run_dir.path().to_path_buf();
    let outcome = run::run(config, run_dir, python.clone(), &options, printer);
    python.flush();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            if let Some((dir, existed)) = created {
                discard_unused(&dir, existed);
            }
            if matches!(e.downcast_ref(), Some(LimitsError::Unreachable { .. })) {
                printer.warn(&format!(
                    "stopped: every finished sample is saved in `{}`\nhint: once the shared limits server is back, resume with `lfeval run --resume {}`",
                    run_path.display(),
                    run_path.display()
                ));
            }
            return Err(e);
        }
    };
    report(&outcome, &run_path, args.json, printer);
    let mut status = outcome.status();
    if let Some(summary) = &outcome.summary
        && !super::gates::after_run(summary, &policies, &run_path, args, printer)?
    {
        status = ExitStatus::Failure;
    }
    Ok(status)
}

/// `--limits` / `LFEVAL_LIMITS`, when given (an empty value means none).
fn limits_config(args: &LimitsArgs) -> Option<LimitsConfig> {
    let url = args.url.as_deref().filter(|u| !u.trim().is_empty())?;
    let from_flag = std::env::args().any(|a| a == "--limits" || a.starts_with("--limits="));
    Some(LimitsConfig {
        url: url.trim().to_owned(),
        origin: if from_flag { "`--limits`" } else { "`LFEVAL_LIMITS`" },
        namespace: args.namespace.clone(),
        lease: args.lease,
    })
}

/// The default run directory of one shard: the run's, marked with the shard.
fn shard_path(path: PathBuf, shard: Option<Shard>) -> PathBuf {
    match shard {
        Some(shard) => {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(format!("-shard-{}-of-{}", shard.index, shard.count));
            path.with_file_name(name)
        }
        None => path,
    }
}

/// Removes a new run directory that failed before recording any sample (typically a
/// configuration error found while preparing the run): it holds nothing to resume, and leaving
/// it would make the same `--output` refuse the corrected run.
fn discard_unused(dir: &Path, existed: bool) {
    use crate::eval::run_dir::{RUN_CONFIG_FILE, SAMPLES_FILE};
    let samples = dir.join(SAMPLES_FILE);
    if std::fs::metadata(&samples).is_ok_and(|m| m.len() == 0) {
        for file in [SAMPLES_FILE, RUN_CONFIG_FILE, FINGERPRINT_FILE] {
            let _ = std::fs::remove_file(dir.join(file));
        }
        if !existed {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn report(outcome: &RunOutcome, run_dir: &Path, json: bool, printer: &Printer) {
    let Some(summary) = &outcome.summary else {
        printer.warn(&format!(
            "interrupted: every finished sample is saved in `{}`\nhint: resume with `lfeval run --resume {}`",
            run_dir.display(),
            run_dir.display()
        ));
        return;
    };
    if json {
        printer.outln(&crate::redact::to_json_pretty(summary));
    } else {
        printer.out(&summary_table(summary));
        let failures = failure_list(summary);
        if !failures.is_empty() {
            printer.errln(&failures);
        }
        printer.outln(&format!("results: {}", summary.run_dir.display()));
    }
    for note in &outcome.notes {
        printer.note(note);
    }
    if let Some((spent, limit)) = outcome.cost_limit {
        printer.warn(&format!(
            "stopped starting samples: `--max-cost {limit}` would be passed (${spent:.6} spent)\nhint: resume with `lfeval run --resume {}` and a higher `--max-cost` to finish the rest",
            run_dir.display()
        ));
    } else if outcome.stopped_early {
        printer.warn(&format!(
            "stopped early after failed samples\nhint: resume with `lfeval run --resume {}` to finish the rest",
            run_dir.display()
        ));
    }
}

/// The metrics of every specification, then the totals.
pub fn summary_table(summary: &RunSummary) -> String {
    let priced = summary.specifications.iter().any(|s| s.cost_usd.is_some());
    let mut header: Vec<String> = ["SPECIFICATION", "MODEL", "SAMPLES", "FAILED"]
        .map(str::to_owned)
        .to_vec();
    if priced {
        header.push("COST".to_owned());
    }
    header.extend(["METRIC", "VALUE", "N"].map(str::to_owned));
    let mut rows = vec![header];
    for spec in &summary.specifications {
        let mut base = vec![
            spec.identity.key.clone(),
            spec.identity.model.clone().unwrap_or_else(|| "-".to_owned()),
            spec.samples.to_string(),
            spec.failed.to_string(),
        ];
        if priced {
            base.push(spec.cost_usd.map_or_else(|| "-".to_owned(), usd));
        }
        if spec.status == SpecStatus::NotStarted {
            rows.push(base.into_iter().chain(["(not started)".to_owned()]).collect());
            continue;
        }
        let mut any = false;
        for metric in &spec.metrics {
            for (name, value) in &metric.values {
                let shown = match value {
                    serde_json::Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(0.0)),
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    // Frequencies and confusion matrices are in summary.json.
                    _ => continue,
                };
                let mut row = if any {
                    vec![String::new(); base.len()]
                } else {
                    base.clone()
                };
                row.push(format!("{}.{name}", metric.scorer_name));
                row.push(shown);
                row.push(if metric.excluded > 0 {
                    format!("{} ({} excluded)", metric.n, metric.excluded)
                } else {
                    metric.n.to_string()
                });
                rows.push(row);
                any = true;
            }
        }
        if !any {
            rows.push(base.into_iter().chain(["(no metrics)".to_owned()]).collect());
        }
    }
    let totals = &summary.totals;
    let mut out = crate::table::table(&rows);
    let cost = totals
        .cost_usd
        .map(|c| format!(", {} cost", usd(c)))
        .unwrap_or_default();
    out.push_str(&format!(
        "\n{} sample(s), {} failed, {} prompt + {} completion tokens{cost}, {:.1}s wall time\n",
        totals.samples,
        totals.failed,
        totals.usage.num_prompt_tokens,
        totals.usage.num_completion_tokens,
        summary.wall_time_s
    ));
    out
}

/// USD, with enough digits for the fractions of a cent per-token prices add up to.
pub fn usd(value: f64) -> String {
    if value >= 1.0 {
        format!("${value:.2}")
    } else {
        format!("${value:.6}")
    }
}

/// Failures grouped by cause, most frequent first, and metric errors: what to fix first.
pub fn failure_list(summary: &RunSummary) -> String {
    let mut lines = Vec::new();
    for spec in &summary.specifications {
        if spec.failures.is_empty() && spec.metric_errors.is_empty() {
            continue;
        }
        lines.push(format!("failures in `{}`:", spec.identity.key));
        let width = spec
            .failures
            .iter()
            .map(|g| g.count.to_string().len())
            .max()
            .unwrap_or(1);
        for group in &spec.failures {
            let owner = match (&group.scorer, &group.model) {
                (Some(scorer), _) => format!(" `{scorer}`"),
                (None, Some(model)) => format!(" `{model}`"),
                (None, None) => String::new(),
            };
            let location = group.location.as_ref().map(|l| format!(" ({l})")).unwrap_or_default();
            lines.push(format!(
                "  {:>width$} × {}{owner}: {}{location}",
                group.count,
                group.stage.as_str(),
                shorten(&group.message, MESSAGE_WIDTH)
            ));
        }
        for error in &spec.metric_errors {
            lines.push(format!(
                "  metric `{}` of scorer `{}`: {}",
                error.metric_type, error.scorer, error.message
            ));
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    lines.push(format!(
        "full records: {} (samples with `errors`)",
        summary.run_dir.join(crate::eval::run_dir::SAMPLES_FILE).display()
    ));
    lines.join("\n")
}

/// The first line of `text`, cut at `width` characters.
fn shorten(text: &str, width: usize) -> String {
    // Masked before it is cut, so no part of a secret survives the cut.
    let text = crate::redact::redact(text);
    let line = text.lines().next().unwrap_or("");
    let cut = line.chars().count() > width || text.contains('\n');
    let mut out: String = line.chars().take(width).collect();
    if cut {
        out.push_str(" …");
    }
    out
}
