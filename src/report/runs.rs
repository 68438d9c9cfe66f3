//! The runs under a project's `runs/`, read from their `summary.json` (or, for a run that never
//! finished, `run_config.json`) alone — never `samples.jsonl` — so listing hundreds of runs stays
//! quick.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::eval::run_dir::{RUN_CONFIG_FILE, SUMMARY_FILE};
use crate::eval::summary::{RunSummary, SpecStatus};
use crate::report::finished_run::{RunReadError, read_json};

/// One run, as `runs list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunEntry {
    /// The directory's name.
    pub name: String,
    pub dir: PathBuf,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub evaluation: String,
    pub models: Vec<String>,
    /// `succeeded`, `failed` (a sample or metric failed) or `incomplete` (never summarised).
    pub status: &'static str,
    pub samples: Option<u64>,
    pub failed: Option<u64>,
    pub cost_usd: Option<f64>,
    /// The first metric value of each specification.
    pub metrics: Vec<EntryMetric>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryMetric {
    pub spec: String,
    pub name: String,
    pub value: f64,
}

/// What an unfinished run's `run_config.json` tells.
#[derive(Deserialize)]
struct Head {
    started_at: String,
    #[serde(default)]
    run_config: HeadConfig,
}

#[derive(Deserialize, Default)]
struct HeadConfig {
    #[serde(default)]
    evaluation: Option<HeadEvaluation>,
}

#[derive(Deserialize)]
struct HeadEvaluation {
    #[serde(default)]
    key: Option<String>,
}

impl RunEntry {
    /// The entry of a summarised run.
    pub fn of_summary(dir: &Path, summary: &RunSummary) -> RunEntry {
        let mut models: Vec<String> = summary
            .specifications
            .iter()
            .filter_map(|s| s.identity.model.clone())
            .collect();
        models.dedup();
        let failed = summary.specifications.iter().any(|s| s.status != SpecStatus::Succeeded);
        RunEntry {
            name: file_name(dir),
            dir: dir.to_path_buf(),
            started_at: summary.started_at.clone(),
            ended_at: Some(summary.ended_at.clone()),
            evaluation: summary.evaluation.clone(),
            models,
            status: if failed { "failed" } else { "succeeded" },
            samples: Some(summary.totals.samples),
            failed: Some(summary.totals.failed),
            cost_usd: summary.totals.cost_usd,
            metrics: summary
                .specifications
                .iter()
                .filter_map(|s| {
                    let m = s.metrics.first()?;
                    let (name, value) = m.values.iter().find_map(|(k, v)| v.as_f64().map(|x| (k, x)))?;
                    Some(EntryMetric {
                        spec: s.identity.key.clone(),
                        name: format!("{}.{name}", m.scorer_name),
                        value,
                    })
                })
                .collect(),
        }
    }

    /// Reads one run directory; `None` when it is not one.
    pub fn read(dir: &Path) -> Result<Option<RunEntry>, RunReadError> {
        let summary_path = dir.join(SUMMARY_FILE);
        if summary_path.exists() {
            let summary: RunSummary = read_json(&summary_path)?;
            return Ok(Some(RunEntry::of_summary(dir, &summary)));
        }
        let head_path = dir.join(RUN_CONFIG_FILE);
        if !head_path.exists() {
            return Ok(None);
        }
        let head: Head = read_json(&head_path)?;
        let evaluation = head
            .run_config
            .evaluation
            .and_then(|e| e.key)
            .unwrap_or_else(|| file_name(dir));
        Ok(Some(RunEntry {
            name: file_name(dir),
            dir: dir.to_path_buf(),
            started_at: head.started_at,
            ended_at: None,
            evaluation,
            models: Vec::new(),
            status: "incomplete",
            samples: None,
            failed: None,
            cost_usd: None,
            metrics: Vec::new(),
        }))
    }
}

fn file_name(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// `project/runs`, shown as `runs` for the current directory.
pub fn runs_dir(project: &Path) -> PathBuf {
    if project == Path::new(".") {
        PathBuf::from("runs")
    } else {
        project.join("runs")
    }
}

/// Every run under `project/runs/`, newest first. A directory whose files cannot be read is
/// listed in the second value with why, and the rest are still listed.
pub fn list(project: &Path) -> (Vec<RunEntry>, Vec<RunReadError>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let Ok(dirs) = std::fs::read_dir(runs_dir(project)) else {
        return (entries, problems);
    };
    for dir in dirs.flatten().map(|d| d.path()).filter(|p| p.is_dir()) {
        match RunEntry::read(&dir) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => {}
            Err(e) => problems.push(e),
        }
    }
    entries.sort_by(|a, b| (&b.started_at, &b.name).cmp(&(&a.started_at, &a.name)));
    (entries, problems)
}

/// Finds a run: a directory path, or the name (or a unique prefix of it) of one under `runs/`.
pub fn resolve(project: &Path, run: &str) -> Result<PathBuf, String> {
    let direct = PathBuf::from(run);
    if direct.join(RUN_CONFIG_FILE).exists() {
        return Ok(direct);
    }
    let runs = runs_dir(project);
    let exact = runs.join(run);
    if exact.join(RUN_CONFIG_FILE).exists() {
        return Ok(exact);
    }
    let mut matches: Vec<PathBuf> = std::fs::read_dir(&runs)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(run))
        .map(|e| e.path())
        .filter(|p| p.join(RUN_CONFIG_FILE).exists())
        .collect();
    matches.sort();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(format!(
            "no run `{run}` under `{}`; hint: `lfeval runs list` shows the runs",
            runs.display()
        )),
        _ => Err(format!(
            "`{run}` matches {} runs: {}; hint: give more of the name",
            matches.len(),
            matches
                .iter()
                .map(|p| format!("`{}`", file_name(p)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
