//! Re-running a command when the files it read change (`model test --watch`). The files are
//! what the last run reported (model, snippet, adapter); when it failed before knowing them, any
//! YAML or Python file of the project's entity folders counts. Each run starts from the files
//! again, so an edited snippet is loaded afresh in the same process.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use notify::{EventKind, RecursiveMode, Watcher};

use crate::exit_status::ExitStatus;
use crate::printer::Printer;

/// Editors write a file in several steps (truncate, write, rename); one change is whatever
/// arrives within this long of the first event.
const SETTLE: Duration = Duration::from_millis(150);
/// How often the wait checks for Ctrl-C.
const POLL: Duration = Duration::from_millis(200);
/// Folders watched when the last run failed before it knew its files.
const ENTITY_DIRS: &[&str] = &["", "models", "adapters", "model_adapters", "snippets"];

pub fn run(
    project_dir: &Path,
    printer: &Printer,
    mut once: impl FnMut(&mut Vec<PathBuf>) -> anyhow::Result<ExitStatus>,
) -> anyhow::Result<ExitStatus> {
    let signals = crate::async_runtime::build()?;
    let stop = crate::signals::listen(&signals);
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })
    .context("cannot watch files for changes")?;
    let mut watched_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    loop {
        let mut read = Vec::new();
        if let Err(err) = once(&mut read) {
            crate::report(printer, &err);
        }
        let files: BTreeSet<PathBuf> = read.iter().filter_map(|p| p.canonicalize().ok()).collect();
        let dirs: BTreeSet<PathBuf> = if files.is_empty() {
            ENTITY_DIRS
                .iter()
                .filter_map(|d| project_dir.join(d).canonicalize().ok())
                .collect()
        } else {
            files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect()
        };
        for gone in watched_dirs.difference(&dirs) {
            let _ = watcher.unwatch(gone);
        }
        for dir in dirs.difference(&watched_dirs) {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .with_context(|| format!("cannot watch `{}`", dir.display()))?;
        }
        watched_dirs = dirs;
        printer.errln(&printer.dim(&format!(
            "watching {} for changes (Ctrl-C to stop)",
            if files.is_empty() {
                "the project's models, adapters and snippets".to_owned()
            } else {
                format!("{} file(s)", files.len())
            }
        )));
        let changed = loop {
            if *stop.borrow() {
                return Ok(ExitStatus::Interrupted);
            }
            match rx.recv_timeout(POLL) {
                Ok(Ok(event)) => {
                    if let Some(path) = relevant(&event, &files) {
                        break path;
                    }
                }
                Ok(Err(err)) => return Err(err).context("watching files for changes"),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(ExitStatus::Error),
            }
        };
        std::thread::sleep(SETTLE);
        while rx.try_recv().is_ok() {}
        let shown = changed.strip_prefix(project_dir.canonicalize()?).unwrap_or(&changed);
        printer.outln("");
        printer.outln(&printer.heading(&format!("changed: {} (testing again)", shown.display())));
    }
}

/// The changed path, if the event is a change to one of `files` (or, with none known, to any
/// YAML or Python file).
fn relevant(event: &notify::Event, files: &BTreeSet<PathBuf>) -> Option<PathBuf> {
    if !matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
    ) {
        return None;
    }
    event
        .paths
        .iter()
        .find(|path| {
            if files.is_empty() {
                path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "py")
            } else {
                files.contains(*path)
            }
        })
        .cloned()
}
