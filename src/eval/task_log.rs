//! The AI GO!-shaped task result log (aigo.md §8.9), one per task specification:
//! `task_results/<spec>/task_result_log.json`. Its samples are written in sample order to a side
//! file, in the same pass over the records that computes the summary; the document is then
//! written around them. A large run never has to sit in memory. The samples this session
//! recorded are rendered as they are appended, into an [`EvidenceSpool`] in the order they
//! finished, and copied from there: the end of a run reads back only what earlier sessions wrote.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::eval::evaluation::TaskSpecification;
use crate::eval::record::{RecordIdentity, SampleError, SampleRecord, Scores, SolverOutput};
use crate::eval::run_dir::RunDir;
use crate::eval::summary::{SpecStatus, SpecSummary};
use crate::eval::task::TaskDef;
use crate::model::trace::CallPurpose;
use crate::redact::{Masked, redact};
use crate::texts::Texts;

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

/// Where a record's evidence sits in sample order: `(sample index, sample id as written, trial,
/// part)`, the order [`RunDir::lines_in_order`] reads a specification's lines in.
type SampleOrder = (u64, Box<str>, Option<u32>, Option<u32>);

fn order_of(identity: &RecordIdentity) -> (u64, &str, Option<u32>, Option<u32>) {
    (
        identity.sample_index,
        &identity.sample_id,
        identity.trial,
        identity.part,
    )
}

/// One specification's evidence rendered as its records were appended, in the order they
/// finished; [`EvidenceSpool::seal`] makes it readable in sample order.
pub struct EvidenceSpool {
    path: SideFile,
    writer: BufWriter<File>,
    len: u64,
    /// Where each record's evidence is in the file.
    entries: Vec<SpoolEntry>,
    /// Each entry's sample id, as written.
    ids: Texts,
}

/// One record's place in sample order and its evidence's in the spool file; the sample id is
/// the entry's position in the spool's `ids`.
struct SpoolEntry {
    sample_index: u64,
    offset: u64,
    len: u32,
    id: u32,
    trial: Option<u32>,
    part: Option<u32>,
}

impl SpoolEntry {
    fn order<'a>(&self, ids: &'a Texts) -> (u64, &'a str, Option<u32>, Option<u32>) {
        (self.sample_index, ids.get(self.id as usize), self.trial, self.part)
    }
}

/// A record's evidence for an [`EvidenceSpool`], rendered before the spool is locked.
pub struct RenderedEvidence {
    order: SampleOrder,
    evidence: Vec<u8>,
}

impl RenderedEvidence {
    pub fn of(record: &SampleRecord) -> anyhow::Result<RenderedEvidence> {
        let mut evidence = Vec::new();
        render_evidence(record, &mut evidence)?;
        // The key as the line has it: the sample id masked, as `samples.jsonl` writes it.
        let id = redact(&record.sample_id).into_owned().into_boxed_str();
        Ok(RenderedEvidence {
            order: (record.sample_index, id, record.trial, record.part),
            evidence,
        })
    }
}

impl EvidenceSpool {
    /// A spool for about `records` records.
    pub fn create(run_dir: &RunDir, spec: &str, records: usize) -> anyhow::Result<EvidenceSpool> {
        let dir = run_dir.path().join("task_results").join(spec);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
        let path = dir.join("task_result_log.spool.tmp");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        Ok(EvidenceSpool {
            path: SideFile(path),
            writer: BufWriter::with_capacity(64 * 1024, file),
            len: 0,
            entries: Vec::with_capacity(records),
            ids: Texts::with_capacity(records),
        })
    }

    /// Adds the evidence of a record that was just appended to `samples.jsonl`.
    pub fn add(&mut self, rendered: RenderedEvidence) -> anyhow::Result<()> {
        let RenderedEvidence { order, evidence } = rendered;
        self.writer
            .write_all(&evidence)
            .with_context(|| format!("cannot write `{}`", self.path.0.display()))?;
        let len = u32::try_from(evidence.len()).context("a sample's evidence is over 4 GiB")?;
        let (sample_index, id, trial, part) = order;
        let row = u32::try_from(self.ids.len()).context("a specification's spool is over 4 billion records")?;
        self.ids.push(&id);
        self.entries.push(SpoolEntry {
            sample_index,
            offset: self.len,
            len,
            id: row,
            trial,
            part,
        });
        self.len += u64::from(len);
        Ok(())
    }

    /// Flushes the file and sorts its entries into sample order.
    pub fn seal(self) -> anyhow::Result<(SpoolIndex, SpoolReader)> {
        let EvidenceSpool {
            path,
            writer,
            mut entries,
            ids,
            ..
        } = self;
        let file = writer
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .with_context(|| format!("cannot write `{}`", path.0.display()))?;
        entries.sort_unstable_by(|a, b| a.order(&ids).cmp(&b.order(&ids)));
        let reader = SpoolReader {
            reader: BufReader::with_capacity(64 * 1024, file),
            at: None,
            buf: Vec::new(),
            path,
        };
        Ok((SpoolIndex { entries, ids }, reader))
    }
}

/// Which records a sealed spool holds, and where.
#[derive(Default)]
pub struct SpoolIndex {
    entries: Vec<SpoolEntry>,
    ids: Texts,
}

impl SpoolIndex {
    fn find(&self, identity: &RecordIdentity) -> Option<(u64, u32)> {
        let wanted = order_of(identity);
        self.entries
            .binary_search_by(|entry| entry.order(&self.ids).cmp(&wanted))
            .ok()
            .map(|i| (self.entries[i].offset, self.entries[i].len))
    }

    /// How many records the spool holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the spool holds this record's evidence.
    pub fn contains(&self, identity: &RecordIdentity) -> bool {
        self.find(identity).is_some()
    }
}

/// Reads a sealed spool's evidence; removes the file when dropped.
pub struct SpoolReader {
    reader: BufReader<File>,
    /// Where the reader is: samples mostly finish in sample order, so most reads continue where
    /// the last one ended.
    at: Option<u64>,
    buf: Vec<u8>,
    path: SideFile,
}

impl SpoolReader {
    /// Copies a record's evidence into `log`.
    pub fn copy_to(&mut self, index: &SpoolIndex, identity: &RecordIdentity, log: &mut TaskLog) -> anyhow::Result<()> {
        let (offset, len) = index
            .find(identity)
            .with_context(|| format!("internal error: no evidence spooled for `{}`", identity.key()))?;
        self.copy(offset, len, log)
    }

    /// Copies every record's evidence into `log`, in sample order: the whole log, when this
    /// session wrote every record of its specification.
    pub fn copy_all(&mut self, index: &SpoolIndex, log: &mut TaskLog) -> anyhow::Result<()> {
        for entry in &index.entries {
            self.copy(entry.offset, entry.len, log)?;
        }
        Ok(())
    }

    fn copy(&mut self, offset: u64, len: u32, log: &mut TaskLog) -> anyhow::Result<()> {
        let read = (|| -> std::io::Result<()> {
            match self.at {
                Some(at) if at == offset => {}
                Some(at) => self.reader.seek_relative(offset as i64 - at as i64)?,
                None => {
                    self.reader.seek(SeekFrom::Start(offset))?;
                }
            }
            self.buf.resize(len as usize, 0);
            self.reader.read_exact(&mut self.buf)?;
            self.at = Some(offset + u64::from(len));
            Ok(())
        })();
        read.with_context(|| format!("cannot read `{}`", self.path.0.display()))?;
        log.add_rendered(&self.buf)
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
    fn spooled_evidence_is_read_back_in_sample_order_and_its_file_removed() {
        let (_dir, run) = run_dir();
        let record = |id: &str, index: u64, trial: Option<u32>| {
            let mut r = SampleRecord::new("spec", id, index, Map::new());
            r.sample.insert("question".into(), json!(format!("{id} {trial:?}")));
            r.trial = trial;
            r
        };
        // Finished out of order, trials included; the longest evidence first, so that a read
        // of the wrong length would show.
        let finished = [
            record("b", 1, Some(2)),
            record("c-with-a-longer-id", 2, None),
            record("a", 0, None),
            record("b", 1, Some(1)),
        ];
        let mut spool = EvidenceSpool::create(&run, "spec", 0).expect("spool");
        for r in &finished {
            spool.add(RenderedEvidence::of(r).expect("render")).expect("add");
        }
        let spool_path = run.path().join("task_results/spec/task_result_log.spool.tmp");
        assert!(spool_path.is_file());
        let (index, mut reader) = spool.seal().expect("seal");
        let mut log = TaskLog::create(&run, "spec").expect("log");
        let identity = |id: &str, index: u64, trial: Option<u32>| RecordIdentity {
            spec: "spec".into(),
            sample_id: id.into(),
            sample_index: index,
            trial,
            part: None,
        };
        let in_order = [
            identity("a", 0, None),
            identity("b", 1, Some(1)),
            identity("b", 1, Some(2)),
            identity("c-with-a-longer-id", 2, None),
        ];
        assert!(!index.contains(&identity("a", 0, Some(1))));
        for id in &in_order {
            assert!(index.contains(id));
            reader.copy_to(&index, id, &mut log).expect("copy");
        }
        drop(reader);
        assert!(!spool_path.exists(), "the spool is removed once read");
        log.samples.flush().expect("flush");
        let text = std::fs::read_to_string(&log.samples_path.0).expect("side file");
        let samples: Vec<Value> = serde_json::from_str(&format!("[{text}]")).expect("evidence is JSON");
        let read: Vec<(&str, Option<u64>)> = samples
            .iter()
            .map(|s| (s["sample_id"].as_str().expect("id"), s["trial"].as_u64()))
            .collect();
        assert_eq!(
            read,
            [
                ("a", None),
                ("b", Some(1)),
                ("b", Some(2)),
                ("c-with-a-longer-id", None)
            ]
        );
        assert_eq!(samples[1]["sample"]["question"], "b Some(1)");
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
