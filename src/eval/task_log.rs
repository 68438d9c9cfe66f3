//! The AI GO!-shaped task result log (aigo.md §8.9), one per task specification:
//! `task_results/<spec>/task_result_log.json`. Its samples are written in sample order to a side
//! file, in the same pass over the records that computes the summary; the document is then
//! written around them. A large run never has to sit in memory. The samples this session
//! recorded are rendered as they are appended, into an
//! [`EvidenceSpool`](crate::eval::evidence_spool::EvidenceSpool), and copied from there: the end
//! of a run reads back only what earlier sessions wrote.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::eval::evaluation::TaskSpecification;
use crate::eval::record::{SampleError, SampleRecord, Scores, SolverOutput};
use crate::eval::run_dir::RunDir;
use crate::eval::summary::{SpecStatus, SpecSummary};
use crate::eval::task::TaskDef;
use crate::model::trace::CallPurpose;
use crate::redact::{Masked, redact};

/// Marks where [`TaskLog::finish`] puts the samples in the document.
const SAMPLES_SLOT: &str = "@@lfeval-samples@@";

/// What the log says about the specification besides its samples.
pub struct LogHead<'a> {
    pub spec: &'a TaskSpecification,
    pub task: &'a TaskDef,
    pub task_config: &'a Map<String, Value>,
    pub dataset: &'a str,
    pub started_at: &'a str,
}

/// The side file the samples stream into; removed when dropped, whether the log was finished or
/// its writing failed midway.
struct SideFile(PathBuf);

impl Drop for SideFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One specification's log while its records stream past.
pub struct TaskLog {
    dir: PathBuf,
    samples_path: SideFile,
    samples: BufWriter<File>,
    first: bool,
    line: Vec<u8>,
}

impl TaskLog {
    pub fn create(run_dir: &RunDir, spec: &str) -> anyhow::Result<TaskLog> {
        let dir = run_dir.path().join("task_results").join(spec);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
        let samples_path = dir.join("task_result_log.samples.tmp");
        let file = File::create(&samples_path).with_context(|| format!("cannot write `{}`", samples_path.display()))?;
        Ok(TaskLog {
            dir,
            samples_path: SideFile(samples_path),
            samples: BufWriter::new(file),
            first: true,
            line: Vec::new(),
        })
    }

    /// Adds the next record, in sample order.
    pub fn add(&mut self, record: &SampleRecord) -> anyhow::Result<()> {
        self.line.clear();
        render_evidence(record, &mut self.line)?;
        write_sample(&mut self.samples, &mut self.first, &self.line)
    }

    /// Adds the next sample's evidence, in sample order, as [`render_evidence`] wrote it.
    pub fn add_rendered(&mut self, evidence: &[u8]) -> anyhow::Result<()> {
        write_sample(&mut self.samples, &mut self.first, evidence)
    }

    /// Writes the document around the samples and puts it in place.
    pub fn finish(self, head: &LogHead<'_>, summary: &SpecSummary) -> anyhow::Result<()> {
        let TaskLog {
            dir,
            samples_path,
            samples,
            ..
        } = self;
        samples.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        let path = dir.join("task_result_log.json");
        let tmp = dir.join("task_result_log.json.tmp");
        let written = (|| -> anyhow::Result<()> {
            let text = redact(&serde_json::to_string_pretty(&Masked(&document(head, summary)))?).into_owned();
            let slot = format!("\"{SAMPLES_SLOT}\"");
            let (before, after) = text
                .split_once(&slot)
                .context("task result log template lost its sample slot")?;
            let mut out = BufWriter::new(File::create(&tmp)?);
            write!(out, "{before}[")?;
            std::io::copy(&mut File::open(&samples_path.0)?, &mut out)?;
            writeln!(out, "\n    ]{after}")?;
            out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        })();
        drop(samples_path);
        written.with_context(|| format!("cannot write `{}`", path.display()))
    }
}

/// Appends one record's evidence, as the log holds it (one line of JSON, masked), to `out`.
pub fn render_evidence(record: &SampleRecord, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let start = out.len();
    serde_json::to_writer(&mut *out, &Masked(&Evidence::of(record)))?;
    let text = std::str::from_utf8(&out[start..]).context("a sample's evidence is not UTF-8")?;
    if let Cow::Owned(masked) = redact(text) {
        out.truncate(start);
        out.extend_from_slice(masked.as_bytes());
    }
    Ok(())
}

/// One sample of the log's `samples` array, after the one before it.
fn write_sample(samples: &mut BufWriter<File>, first: &mut bool, evidence: &[u8]) -> anyhow::Result<()> {
    let separator: &[u8] = if *first { b"\n      " } else { b",\n      " };
    samples.write_all(separator)?;
    samples.write_all(evidence)?;
    *first = false;
    Ok(())
}

/// The log with a slot where its samples go.
fn document(head: &LogHead<'_>, summary: &SpecSummary) -> Value {
    json!({
        "format_version": "v1",
        "app_version": format!("lfeval {}", env!("CARGO_PKG_VERSION")),
        "status": if summary.status == SpecStatus::Succeeded { "succeeded" } else { "failed" },
        "specification": {
            "display_name": head.spec.display_name,
            "task": {"key": head.task.key, "display_name": head.task.display_name, "description": head.task.description},
            "task_config": head.task_config,
            "evaluated_model": head.spec.model_key,
            "dataset": head.dataset,
            "run_config": {"num_samples": head.spec.num_samples, "subsampling": head.spec.subsampling},
        },
        "execution": {
            "started_at": head.started_at,
            "ended_at": jiff::Timestamp::now().to_string(),
            "model_usage": {
                "num_samples": summary.samples,
                "num_prompt_tokens": summary.usage.num_prompt_tokens,
                "num_completion_tokens": summary.usage.num_completion_tokens,
            },
        },
        "errors": summary.metric_errors,
        "evidence": {
            "metrics": summary.metrics,
            "failures": {"num_errors": summary.failed, "num_total": summary.samples},
            "samples": SAMPLES_SLOT,
        },
    })
}

/// One sample's evidence in the log's shape, borrowed from its record.
#[derive(Serialize)]
struct Evidence<'a> {
    sample_id: &'a str,
    sample: &'a Map<String, Value>,
    solver: SolverEvidence<'a>,
    scores: &'a indexmap::IndexMap<String, Scores>,
    errors: &'a [SampleError],
    direct_ios: Vec<DirectIo<'a>>,
    /// Which trial or postprocessed row this is, and whether an action rule left it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    trial: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    excluded_by: Option<&'a str>,
}

#[derive(Serialize)]
struct SolverEvidence<'a> {
    output: &'a Option<SolverOutput>,
}

#[derive(Serialize)]
struct DirectIo<'a> {
    model: &'a str,
    purpose: CallPurpose,
    request: RequestEvidence<'a>,
    response: ResponseEvidence<'a>,
}

#[derive(Serialize)]
struct RequestEvidence<'a> {
    body: &'a Option<String>,
}

#[derive(Serialize)]
struct ResponseEvidence<'a> {
    status_code: Option<u16>,
    headers: Option<&'a [(String, String)]>,
    body: Option<&'a str>,
}

impl<'a> Evidence<'a> {
    fn of(record: &'a SampleRecord) -> Evidence<'a> {
        Evidence {
            sample_id: &record.sample_id,
            sample: &record.sample,
            solver: SolverEvidence {
                output: &record.solver_output,
            },
            scores: &record.scores,
            errors: &record.errors,
            direct_ios: record
                .calls
                .iter()
                .map(|c| {
                    let response = c.trace.response.as_ref();
                    DirectIo {
                        model: &c.model,
                        purpose: c.purpose,
                        request: RequestEvidence {
                            body: &c.trace.request_body,
                        },
                        response: ResponseEvidence {
                            status_code: response.map(|r| r.status_code),
                            headers: response.map(|r| r.headers.as_slice()),
                            body: response.map(|r| r.body.as_str()),
                        },
                    }
                })
                .collect(),
            trial: record.trial,
            part: record.part,
            excluded_by: record.excluded_by.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::run_dir::RunInfo;

    /// An empty run directory, in a temporary directory that lives as long as the first half.
    fn run_dir() -> (tempfile::TempDir, RunDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let info = RunInfo {
            project_dir: dir.path().to_path_buf(),
            run_file: None,
            started_at: jiff::Timestamp::UNIX_EPOCH,
        };
        let run = RunDir::create(&dir.path().join("run"), &info, &json!({"evaluation": {"key": "demo"}})).expect("run");
        (dir, run)
    }

    #[test]
    fn a_log_that_is_never_finished_leaves_no_side_file() {
        let (_dir, run) = run_dir();
        let side = run.path().join("task_results/spec/task_result_log.samples.tmp");
        let mut log = TaskLog::create(&run, "spec").expect("log");
        log.add(&SampleRecord::new("spec", "1", 0, Map::new())).expect("add");
        assert!(side.is_file(), "the samples stream into the side file");
        // The summary pass failed before `finish`: the log is dropped.
        drop(log);
        assert!(!side.exists());
        assert!(!run.path().join("task_results/spec/task_result_log.json").exists());
    }
}
