//! `lfeval run -f run.yaml` and `lfeval run --resume RUN_DIR`: load the run config, create (or
//! reopen) the run directory, and hand over to the runner.

use std::collections::HashSet;
use std::io::IsTerminal;

use anyhow::Context;

use crate::cli::{GlobalArgs, RunArgs};
use crate::exit_status::ExitStatus;
use crate::printer::Printer;
use crate::progress;
use crate::results::{RunDir, RunInfo};
use crate::runner::{self, RunOptions};

pub fn run(global: &GlobalArgs, args: &RunArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let (config, run_dir, completed) = match &args.resume {
        Some(dir) => {
            let (run_dir, state) = RunDir::resume(dir).with_context(|| format!("cannot resume `{}`", dir.display()))?;
            let info = run_dir.info().clone();
            let run_file = info
                .run_file
                .clone()
                .context("this run directory does not say which run config it came from")?;
            let config = crate::run_config::load(&run_file, Some(&info.project_dir), global.env_file.as_deref())?;
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
            let config = crate::run_config::load(file, global.project.as_deref(), global.env_file.as_deref())?;
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
            let run_dir = RunDir::create(&path, &info, &config.resolved)?;
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
    let status = runner::run(config, run_dir, completed, python.clone(), &options, printer);
    python.flush();
    status
}
