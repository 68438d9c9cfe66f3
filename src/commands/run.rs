//! `lfeval run -f run.yaml` and `lfeval run --resume RUN_DIR`: load the run config, create (or
//! reopen) the run directory, and hand over to the runner.

use std::collections::HashSet;
use std::io::IsTerminal;

use anyhow::Context;

use crate::cli::{GlobalArgs, RunArgs};
use crate::eval::run::{self, RunOptions};
use crate::eval::run_dir::{RunDir, RunInfo};
use crate::exit_status::ExitStatus;
use crate::printer::Printer;
use crate::progress;

pub fn run(global: &GlobalArgs, args: &RunArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    // A new run directory and whether it existed (empty) before this run.
    let mut created: Option<(std::path::PathBuf, bool)> = None;
    let (config, run_dir, completed) = match &args.resume {
        Some(dir) => {
            let (run_dir, state) = RunDir::resume(dir).with_context(|| format!("cannot resume `{}`", dir.display()))?;
            let info = run_dir.info().clone();
            let run_file = info
                .run_file
                .clone()
                .context("this run directory does not say which run config it came from")?;
            let config = crate::eval::run_config::load(&run_file, Some(&info.project_dir), global.env_file.as_deref())?;
            if crate::redact::redact(&config.resolved.to_string())
                != crate::redact::redact(&run_dir.run_config().to_string())
            {
                printer.warn(&format!(
                    "`{}` changed since this run started; the remaining samples use the new version\nhint: start a new run (without `--resume`) to evaluate the change on every sample",
                    run_file.display()
                ));
            }
            if state.truncated_bytes > 0 {
                printer.warn(&format!(
                    "dropped a partial last line ({} bytes) from `samples.jsonl`",
                    state.truncated_bytes
                ));
            }
            printer.errln(&format!(
                "resuming `{}`: {} sample(s) already done",
                run_dir.path().display(),
                state.records
            ));
            (config, run_dir, state.completed)
        }
        None => {
            let Some(file) = &args.file else {
                anyhow::bail!("`lfeval run` needs `-f RUN.yaml` or `--resume RUN_DIR`")
            };
            let config = crate::eval::run_config::load(file, global.project.as_deref(), global.env_file.as_deref())?;
            let now = jiff::Timestamp::now();
            let path = match &args.output {
                Some(p) => p.clone(),
                None => RunDir::default_path(&config.project.root, &config.evaluation.key, now),
            };
            let info = RunInfo {
                project_dir: config.project.root.clone(),
                run_file: Some(config.file.clone()),
                started_at: now,
            };
            let existed = path.exists();
            let run_dir = RunDir::create(&path, &info, &config.resolved)?;
            created = Some((path, existed));
            (config, run_dir, HashSet::new())
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
        fail_fast: args.fail_fast,
        max_errors: args.max_errors,
        no_cache: args.no_cache,
        progress: mode,
        json: args.json,
    };
    let status = run::run(config, run_dir, completed, python.clone(), &options, printer);
    python.flush();
    if status.is_err()
        && let Some((dir, existed)) = created
    {
        discard_unused(&dir, existed);
    }
    status
}

/// Removes a new run directory that failed before recording any sample (typically a
/// configuration error found while preparing the run): it holds nothing to resume, and leaving
/// it would make the same `--output` refuse the corrected run.
fn discard_unused(dir: &std::path::Path, existed: bool) {
    let samples = dir.join(crate::eval::run_dir::SAMPLES_FILE);
    if std::fs::metadata(&samples).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(&samples);
        let _ = std::fs::remove_file(dir.join(crate::eval::run_dir::RUN_CONFIG_FILE));
        if !existed {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
