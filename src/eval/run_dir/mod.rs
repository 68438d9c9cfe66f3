//! The run directory: everything one run leaves on disk, and picking a run up again.
//!
//! Layout (under `runs/<UTC time>-<evaluation key>/`, or the directory given with `--output`):
//! - `run_config.json`: the resolved, already-redacted run config plus where and when the run
//!   started, written once at the start so that `--resume` can rebuild the run from the
//!   directory alone;
//! - `samples.jsonl`: one JSON object per finished sample, appended as the run goes;
//! - `task_results/<spec key>/task_result_log.json` and `summary.json`: written at the end.
//!
//! Crash safety: each sample line reaches the file through a single `write_all` of the whole
//! line including its `\n`, so a process killed at any moment leaves at most one partial last
//! line, which [`RunDir::resume`] cuts away (that sample simply runs again). Whole files go to a
//! temporary sibling first and are renamed over the target, so readers never see half a file.
//! A `(spec, sample_id)` pair is written at most once per run, across resumes.
//!
//! Every byte written passes through [`crate::redact::redact`]: string values and keys are
//! masked one by one as they are serialised ([`crate::redact::Masked`]), which keeps the JSON
//! valid and happens before any escaping, and the serialized text is masked once more as a
//! final guarantee.
//!
//! One process at a time: `samples.jsonl` carries an advisory lock for as long as the
//! [`RunDir`] lives, so a second `--resume` of the same directory fails instead of interleaving.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::eval::record::{RecordIdentity, SampleRecord};
use crate::file_window::FileWindow;
use crate::redact::redact;

mod index;
mod lines;
mod session;
#[cfg(test)]
mod tests;
mod write;

use index::Index;
pub use index::Place;
use lines::{Records, invalid, parse_line, scan, scan_lines};
pub use session::{SessionLog, Sessions};
use write::{file_len, lock, path_value, render, render_file, write_atomic, write_text_atomic};
/// File holding the run config and the run's metadata.
pub const RUN_CONFIG_FILE: &str = "run_config.json";
/// Append-only file with one line per finished sample.
pub const SAMPLES_FILE: &str = "samples.jsonl";
/// Run-wide summary written at the end.
pub const SUMMARY_FILE: &str = "summary.json";
/// One line per session (the first start and every resume) with its wall time.
pub const SESSIONS_FILE: &str = "sessions.jsonl";
/// Records that `--retry-failed` took out of `samples.jsonl`, kept for the record.
pub const RETRIED_FILE: &str = "samples.retried.jsonl";

/// Version of the `run_config.json` layout; a resume refuses layouts it does not know.
const FORMAT_VERSION: u64 = 1;

/// Where and when a run started; stored in `run_config.json` next to the config itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// The project root the run was started from; absolute, so that `--resume` works from
    /// any working directory.
    pub project_dir: PathBuf,
    /// The run file (`run.yaml`), when the run came from one; absolute too.
    pub run_file: Option<PathBuf>,
    pub started_at: Timestamp,
}

/// What [`RunDir::resume`] found in an existing run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeState {
    /// Number of complete records (which ones: [`RunDir::is_recorded`]).
    pub records: usize,
    /// Bytes of a partial last line that were cut from `samples.jsonl` (0 if it ended cleanly).
    pub truncated_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error(
        "run directory `{}` already exists and is not empty; hint: use `--resume` to continue that run, or `--output` to choose another directory",
        path.display()
    )]
    NotEmpty { path: PathBuf },
    #[error(
        "`{}` is not a run directory (it has no `run_config.json`); hint: `--resume` takes a directory created by an earlier run",
        path.display()
    )]
    NotARun { path: PathBuf },
    #[error(
        "run directory `{}` is in use by another lfeval process; hint: wait for it to finish or stop it",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("cannot {action} `{}`: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("invalid `{}`: {message}", path.display())]
    InvalidRunConfig { path: PathBuf, message: String },
    #[error("invalid record at `{}:{line}`: {message}", path.display())]
    InvalidRecord { path: PathBuf, line: u64, message: String },
    #[error("sample `{sample_id}` of task specification `{spec}` is already recorded in this run")]
    Duplicate { spec: String, sample_id: String },
    #[error("`{relative}` is not a relative path inside the run directory")]
    InvalidRelativePath { relative: String },
    #[error("cannot serialize `{what}`: {message}")]
    Serialize { what: String, message: String },
    #[error(
        "`{what}` cannot be written: masking a secret in it breaks its JSON; hint: a registered secret matches JSON syntax or a literal such as `true`, check the secret values"
    )]
    Unredactable { what: String },
    #[error(
        "`{}` is in an unknown state after a failed write; hint: rerun with `--resume`",
        path.display()
    )]
    Broken { path: PathBuf },
    #[error("path `{}` is not valid UTF-8", path.display())]
    NonUtf8Path { path: PathBuf },
}

impl ResultsError {
    fn io(action: &'static str, path: &Path, error: io::Error) -> ResultsError {
        ResultsError::Io {
            action,
            path: path.to_path_buf(),
            error,
        }
    }
}

/// A line of [`RunDir::lines_in_order`].
pub enum InOrder {
    Record(Box<SampleRecord>),
    /// A line the caller already knows: only its identity was read.
    Known(RecordIdentity),
}

/// An open run directory. Appends are thread-safe; share it behind an `Arc`.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    samples_path: PathBuf,
    info: RunInfo,
    lfeval_version: String,
    run_config: Value,
    samples: Mutex<SamplesFile>,
}

#[derive(Debug)]
struct SamplesFile {
    /// Opened for appending; also holds the directory's lock.
    file: File,
    /// Length of the file after the last complete line: a failed write is cut back to it.
    len: u64,
    /// Every line in the file, as written (redacted).
    index: Index,
    /// Set when a failed write could not be cut back, so the file's tail is unknown.
    broken: bool,
    /// The file being made durable on a thread of its own, from [`RunDir::finish`] until
    /// [`RunDir::synced`].
    syncing: Option<std::thread::JoinHandle<Result<(), ResultsError>>>,
}

impl RunDir {
    /// `<project_root>/runs/<UTC time>-<evaluation key>`. Characters of the key that are not
    /// safe in a single file name become `_`, so the key can never point outside `runs/`.
    pub fn default_path(project_root: &Path, evaluation_key: &str, now: Timestamp) -> PathBuf {
        let key: String = evaluation_key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let key = if key.is_empty() || key.chars().all(|c| c == '.') {
            "run".to_owned()
        } else {
            key
        };
        let stamp = now.strftime("%Y%m%dT%H%M%SZ");
        project_root.join("runs").join(format!("{stamp}-{key}"))
    }

    /// Creates a new run directory holding `run_config.json` and an empty `samples.jsonl`.
    /// Fails if `path` exists and is not an empty directory.
    pub fn create(path: &Path, info: &RunInfo, run_config: &Value) -> Result<RunDir, ResultsError> {
        let lfeval_version = env!("CARGO_PKG_VERSION").to_owned();
        let mut document = Map::new();
        document.insert("format_version".into(), FORMAT_VERSION.into());
        document.insert("lfeval_version".into(), lfeval_version.clone().into());
        document.insert("started_at".into(), info.started_at.to_string().into());
        document.insert("project_dir".into(), path_value(&info.project_dir)?);
        document.insert(
            "run_file".into(),
            match &info.run_file {
                Some(run_file) => path_value(run_file)?,
                None => Value::Null,
            },
        );
        document.insert("run_config".into(), run_config.clone());
        // Rendered before anything touches the disk, so a config that cannot be written
        // leaves no half-made run directory behind.
        let config_path = path.join(RUN_CONFIG_FILE);
        let config_text = render_file(&Value::Object(document), &config_path)?;

        if path.exists() {
            if !path.is_dir() {
                return Err(ResultsError::NotEmpty {
                    path: path.to_path_buf(),
                });
            }
            let mut entries = fs::read_dir(path).map_err(|e| ResultsError::io("read directory", path, e))?;
            if entries.next().is_some() {
                return Err(ResultsError::NotEmpty {
                    path: path.to_path_buf(),
                });
            }
        } else {
            fs::create_dir_all(path).map_err(|e| ResultsError::io("create directory", path, e))?;
        }

        // `create_new` plus the lock make a run directory belong to one process even when two
        // start on the same directory at once; the loser fails before touching the config.
        let samples_path = path.join(SAMPLES_FILE);
        let file = match OpenOptions::new().append(true).create_new(true).open(&samples_path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(ResultsError::NotEmpty {
                    path: path.to_path_buf(),
                });
            }
            Err(error) => return Err(ResultsError::io("create", &samples_path, error)),
        };
        lock(&file, path)?;

        if let Err(error) = write_text_atomic(&config_path, &config_text) {
            // Without its config the directory could be neither resumed nor created again;
            // the samples file is still empty and ours, so take it back.
            drop(file);
            let _ = fs::remove_file(&samples_path);
            return Err(error);
        }
        let mut run_config = run_config.clone();
        crate::redact::redact_value_in_place(&mut run_config);
        Ok(RunDir {
            path: path.to_path_buf(),
            samples_path,
            info: info.clone(),
            lfeval_version,
            run_config,
            samples: Mutex::new(SamplesFile {
                file,
                len: 0,
                index: Index::default(),
                broken: false,
                syncing: None,
            }),
        })
    }

    /// Opens an existing run to continue it: reads `run_config.json`, reads `samples.jsonl`,
    /// and cuts away a partial last line left by a killed process.
    pub fn resume(path: &Path) -> Result<(RunDir, ResumeState), ResultsError> {
        let config_path = path.join(RUN_CONFIG_FILE);
        let text = match fs::read_to_string(&config_path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(ResultsError::NotARun {
                    path: path.to_path_buf(),
                });
            }
            Err(error) => return Err(ResultsError::io("read", &config_path, error)),
        };
        let (info, lfeval_version, run_config) = parse_run_config(&config_path, &text)?;

        let samples_path = path.join(SAMPLES_FILE);
        // One handle for everything: it takes the lock before anything is read (so no live
        // writer races the scan), cuts the partial tail, and then appends; with `O_APPEND`
        // every write lands at the end whatever the read position.
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&samples_path)
            .map_err(|e| ResultsError::io("open", &samples_path, e))?;
        lock(&file, path)?;

        let mut state = ResumeState::default();
        let (index, good_len) = index_lines(&mut file, &samples_path)?;
        state.records = index.total();
        let total = file_len(&file, &samples_path)?;
        if total > good_len {
            file.set_len(good_len)
                .map_err(|e| ResultsError::io("truncate", &samples_path, e))?;
            file.sync_data()
                .map_err(|e| ResultsError::io("sync", &samples_path, e))?;
            state.truncated_bytes = total - good_len;
        }
        let dir = RunDir {
            path: path.to_path_buf(),
            samples_path,
            info,
            lfeval_version,
            run_config,
            samples: Mutex::new(SamplesFile {
                file,
                len: good_len,
                index,
                broken: false,
                syncing: None,
            }),
        };
        Ok((dir, state))
    }

    /// Opens an existing run only to read it (what `merge` does with shards): nothing is
    /// locked, cut or written, and appending to it fails. A partial last line is ignored.
    pub fn open_read_only(path: &Path) -> Result<RunDir, ResultsError> {
        let config_path = path.join(RUN_CONFIG_FILE);
        let text = match fs::read_to_string(&config_path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(ResultsError::NotARun {
                    path: path.to_path_buf(),
                });
            }
            Err(error) => return Err(ResultsError::io("read", &config_path, error)),
        };
        let (info, lfeval_version, run_config) = parse_run_config(&config_path, &text)?;
        let samples_path = path.join(SAMPLES_FILE);
        let mut file = File::open(&samples_path).map_err(|e| ResultsError::io("open", &samples_path, e))?;
        let (index, len) = index_lines(&mut file, &samples_path)?;
        Ok(RunDir {
            path: path.to_path_buf(),
            samples_path,
            info,
            lfeval_version,
            run_config,
            samples: Mutex::new(SamplesFile {
                file,
                len,
                index,
                broken: false,
                syncing: None,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run config as given to [`RunDir::create`] (redacted).
    pub fn run_config(&self) -> &Value {
        &self.run_config
    }

    pub fn info(&self) -> &RunInfo {
        &self.info
    }

    /// The lfeval version that started the run.
    pub fn lfeval_version(&self) -> &str {
        &self.lfeval_version
    }

    pub fn samples_path(&self) -> &Path {
        &self.samples_path
    }

    /// Whether the record of this sample's trial and part is already in `samples.jsonl`. The
    /// ids are masked first, exactly as [`RunDir::append`] masks them, so raw ids can be passed.
    pub fn is_recorded(&self, spec: &str, sample_id: &str, place: Place) -> bool {
        let key = crate::eval::record::record_key(sample_id, place.trial(), place.part());
        let (spec, key) = (redact(spec), redact(&key));
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.index.contains(&spec, &key, place)
    }

    /// Appends one record. A sample already recorded in this run is refused with
    /// [`ResultsError::Duplicate`].
    pub fn append(&self, record: &SampleRecord) -> Result<(), ResultsError> {
        let key = (redact(&record.spec).into_owned(), redact(&record.key()).into_owned());
        let place = Place::new(record.sample_index, record.trial, record.part);
        let what = format!("sample `{}` of `{}`", key.1, key.0);
        // Straight from the record: no intermediate JSON tree holding a second copy of it.
        let mut line = render(record, false, &what)?;
        line.push('\n');

        // A poisoned lock only means another thread panicked between writes; the state
        // (length, ids) is updated only after a write fully succeeds, so it is still true.
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.broken {
            return Err(ResultsError::Broken {
                path: self.samples_path.clone(),
            });
        }
        if samples.index.contains(&key.0, &key.1, place) {
            return Err(ResultsError::Duplicate {
                spec: key.0,
                sample_id: key.1,
            });
        }
        let written = samples
            .file
            .write_all(line.as_bytes())
            .and_then(|()| samples.file.flush());
        if let Err(error) = written {
            // Cut a partial line back off so that the next line starts on a line of its own.
            let len = samples.len;
            if samples.file.set_len(len).is_err() {
                samples.broken = true;
            }
            return Err(ResultsError::io("append to", &self.samples_path, error));
        }
        samples.len += line.len() as u64;
        samples.index.insert_by_place(&key.0, &key.1, place);
        Ok(())
    }

    /// `(spec, sample_id)` of every sample with a record (masked as written), sorted; the
    /// trials and parts of a sample count once. Read from the file: the index does not keep
    /// the ids of the lines it wrote.
    pub fn recorded_samples(&self) -> Result<Vec<(String, String)>, ResultsError> {
        let mut file = File::open(&self.samples_path).map_err(|e| ResultsError::io("open", &self.samples_path, e))?;
        let mut samples = std::collections::BTreeSet::new();
        scan(&mut file, &self.samples_path, |_, record: RecordIdentity| {
            samples.insert((record.spec, record.sample_id));
            Ok(())
        })?;
        Ok(samples.into_iter().collect())
    }

    /// Whether any record (any trial or part) of this sample is in `samples.jsonl`; the id is
    /// masked first.
    pub fn has_sample(&self, spec: &str, sample_id: &str, sample_index: u64) -> bool {
        let (spec, sample_id) = (redact(spec), redact(sample_id));
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.index.has_sample(&spec, &sample_id, sample_index)
    }

    /// How many samples of `spec` are recorded.
    pub fn recorded_count(&self, spec: &str) -> usize {
        let spec = redact(spec);
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.index.count(&spec)
    }

    /// Takes every failed record out of `samples.jsonl` (moving it to
    /// `samples.retried.jsonl`), so that those samples run again. Returns how many it took.
    pub fn drop_failed(&self) -> Result<usize, ResultsError> {
        #[derive(serde::Deserialize)]
        struct Outcome {
            spec: String,
            sample_id: String,
            #[serde(default)]
            trial: Option<u32>,
            #[serde(default)]
            part: Option<u32>,
            #[serde(default)]
            sample_index: u64,
            #[serde(default)]
            errors: Vec<serde::de::IgnoredAny>,
        }
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.samples_path.clone();
        let (mut kept, mut retried, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
        let mut line = 0u64;
        scan_lines(&mut samples.file, &path, |buf| {
            line += 1;
            let outcome: Outcome = parse_line(buf).map_err(|message| invalid(&path, line, message))?;
            if outcome.errors.is_empty() {
                kept.extend_from_slice(buf);
            } else {
                retried.extend_from_slice(buf);
                let key = crate::eval::record::record_key(&outcome.sample_id, outcome.trial, outcome.part);
                let place = Place::new(outcome.sample_index, outcome.trial, outcome.part);
                dropped.push((outcome.spec, key, outcome.sample_id, place));
            }
            Ok(())
        })?;
        if dropped.is_empty() {
            return Ok(0);
        }
        let retried_path = self.path.join(RETRIED_FILE);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&retried_path)
            .and_then(|mut f| f.write_all(&retried).and_then(|()| f.sync_data()))
            .map_err(|e| ResultsError::io("append to", &retried_path, e))?;
        // Rewritten in place under the lock we hold: truncate, then write the kept lines.
        let file = &mut samples.file;
        file.set_len(0)
            .and_then(|()| file.write_all(&kept))
            .and_then(|()| file.sync_data())
            .map_err(|e| ResultsError::io("rewrite", &path, e))?;
        samples.len = kept.len() as u64;
        for (spec, key, sample_id, place) in &dropped {
            samples.index.remove(spec, key, sample_id, *place);
        }
        Ok(dropped.len())
    }

    /// Appends this session's line to `sessions.jsonl`; [`RunDir::finish`] makes it durable.
    pub fn end_session(&self, session: SessionLog) -> Result<(), ResultsError> {
        let line = serde_json::json!({
            "started_at": session.started_at.to_string(),
            "ended_at": Timestamp::now().to_string(),
            "wall_time_s": session.clock.elapsed().as_secs_f64(),
            "command_line": session.command_line.iter().map(|a| redact(a).into_owned()).collect::<Vec<_>>(),
        });
        let path = self.path.join(SESSIONS_FILE);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            // One write: the line goes in whole (a `Display` of the value writes token by token).
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
            .map_err(|e| ResultsError::io("append to", &path, e))
    }

    /// The run's sessions so far.
    pub fn sessions(&self) -> Result<Sessions, ResultsError> {
        #[derive(serde::Deserialize)]
        struct Line {
            wall_time_s: f64,
        }
        let path = self.path.join(SESSIONS_FILE);
        let mut sessions = Sessions {
            first_started_at: self.info.started_at.to_string(),
            wall_time_s: 0.0,
            count: 0,
        };
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(sessions),
            Err(e) => return Err(ResultsError::io("read", &path, e)),
        };
        for (i, line) in text.lines().enumerate() {
            let parsed: Line = serde_json::from_str(line).map_err(|e| invalid(&path, i as u64 + 1, e.to_string()))?;
            sessions.wall_time_s += parsed.wall_time_s;
            sessions.count += 1;
        }
        Ok(sessions)
    }

    /// Streams every complete record of `samples.jsonl` in file order. A line still being
    /// written (no `\n` yet) is not a record and is skipped.
    pub fn records(&self) -> Result<impl Iterator<Item = Result<SampleRecord, ResultsError>> + use<>, ResultsError> {
        let file = File::open(&self.samples_path).map_err(|e| ResultsError::io("open", &self.samples_path, e))?;
        Ok(Records {
            reader: BufReader::new(file),
            path: self.samples_path.clone(),
            line: 0,
            done: false,
        })
    }

    /// One specification's complete records in sample order (dataset position, then id),
    /// whatever order they were written in. Only the position of each line is held while
    /// sorting; records are read one at a time.
    pub fn records_in_order(
        &self,
        spec: &str,
    ) -> Result<impl Iterator<Item = Result<SampleRecord, ResultsError>> + use<>, ResultsError> {
        let lines = self.lines_in_order(spec, |_| false)?;
        // No line is known, so every line is a record.
        Ok(lines.filter_map(|line| match line {
            Ok(InOrder::Record(record)) => Some(Ok(*record)),
            Ok(InOrder::Known(_)) => None,
            Err(e) => Some(Err(e)),
        }))
    }

    /// Like [`RunDir::records_in_order`], but a line whose identity `known` accepts is not
    /// read: its identity stands in for it (the caller has what it needs of that record).
    pub fn lines_in_order<F: Fn(&RecordIdentity) -> bool>(
        &self,
        spec: &str,
        known: F,
    ) -> Result<impl Iterator<Item = Result<InOrder, ResultsError>> + use<F>, ResultsError> {
        let path = self.samples_path.clone();
        let mut file = File::open(&path).map_err(|e| ResultsError::io("open", &path, e))?;
        let mut lines = Vec::new();
        let mut offset = 0u64;
        let mut line = 0u64;
        scan_lines(&mut file, &path, |buf| {
            line += 1;
            let at = RecordIdentity::of_line(buf).map_err(|e| invalid(&path, line, e.to_string()))?;
            if at.spec == spec {
                let key = (at.sample_index, at.sample_id, at.trial, at.part);
                lines.push((key, offset, buf.len(), line));
            }
            offset += buf.len() as u64;
            Ok(())
        })?;
        lines.sort();
        let mut window = FileWindow::new(file);
        let spec = spec.to_owned();
        Ok(lines
            .into_iter()
            .map(move |((sample_index, sample_id, trial, part), offset, len, line)| {
                let identity = RecordIdentity {
                    spec: spec.clone(),
                    sample_id,
                    sample_index,
                    trial,
                    part,
                };
                if known(&identity) {
                    return Ok(InOrder::Known(identity));
                }
                let buf = window
                    .read(offset, len)
                    .map_err(|e| ResultsError::io("read", &path, e))?;
                parse_line(buf)
                    .map(InOrder::Record)
                    .map_err(|message| invalid(&path, line, message))
            }))
    }

    /// Writes `value` as pretty JSON to `relative` (inside the run directory), creating parent
    /// directories; the file is replaced atomically. Returns the full path.
    pub fn write_json(&self, relative: &str, value: &impl serde::Serialize) -> Result<PathBuf, ResultsError> {
        let relative_path = Path::new(relative);
        let safe = !relative.is_empty() && relative_path.components().all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(ResultsError::InvalidRelativePath {
                relative: relative.to_owned(),
            });
        }
        let target = self.path.join(relative_path);
        write_atomic(&target, value)?;
        Ok(target)
    }

    /// Writes `summary.json`, once every appended line is durable: a summary says the run is
    /// complete.
    pub fn write_summary(&self, summary: &impl serde::Serialize) -> Result<PathBuf, ResultsError> {
        self.synced()?;
        self.write_json(SUMMARY_FILE, summary)
    }

    /// Starts making every appended line (of `samples.jsonl` and `sessions.jsonl`) durable, in
    /// the background: syncing them takes tens of milliseconds, in which the summary and the
    /// task logs are computed. [`RunDir::synced`] (and [`RunDir::write_summary`]) waits for it.
    /// Safe to call more than once.
    pub fn finish(&self) -> Result<(), ResultsError> {
        self.synced()?;
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let io = |e| ResultsError::io("sync", &self.samples_path, e);
        samples.file.flush().map_err(io)?;
        let file = samples.file.try_clone().map_err(io)?;
        let (samples_path, sessions_path) = (self.samples_path.clone(), self.path.join(SESSIONS_FILE));
        samples.syncing = Some(std::thread::spawn(move || {
            file.sync_data()
                .map_err(|e| ResultsError::io("sync", &samples_path, e))?;
            match File::open(&sessions_path).and_then(|f| f.sync_data()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ResultsError::io("sync", &sessions_path, e)),
                _ => Ok(()),
            }
        }));
        Ok(())
    }

    /// Waits until what [`RunDir::finish`] started is on disk.
    pub fn synced(&self) -> Result<(), ResultsError> {
        let syncing = self
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .syncing
            .take();
        let Some(syncing) = syncing else {
            return Ok(());
        };
        syncing.join().unwrap_or_else(|_| {
            let panicked = io::Error::other("the thread syncing it panicked");
            Err(ResultsError::io("sync", &self.samples_path, panicked))
        })
    }
}

/// The index of a `samples.jsonl` read from its start, and the length of its complete part; a
/// record key that appears twice is an error naming its line.
fn index_lines(file: &mut File, path: &Path) -> Result<(Index, u64), ResultsError> {
    let mut index = Index::default();
    let good_len = scan(file, path, |line, record: RecordIdentity| {
        let key = record.key();
        if !index.insert_by_key(&record.spec, &key, &record.sample_id) {
            return Err(invalid(
                path,
                line,
                format!("sample `{key}` of `{}` appears twice", record.spec),
            ));
        }
        Ok(())
    })?;
    Ok((index, good_len))
}

fn parse_run_config(path: &Path, text: &str) -> Result<(RunInfo, String, Value), ResultsError> {
    let bad = |message: String| ResultsError::InvalidRunConfig {
        path: path.to_path_buf(),
        message,
    };
    let document: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let Value::Object(mut document) = document else {
        return Err(bad("not a JSON object".to_owned()));
    };
    match document.get("format_version").and_then(Value::as_u64) {
        Some(FORMAT_VERSION) => {}
        Some(other) => {
            return Err(bad(format!(
                "unknown `format_version` {other}; hint: it was written by a newer lfeval"
            )));
        }
        None => return Err(bad("missing `format_version`".to_owned())),
    }
    let string = |document: &Map<String, Value>, field: &str| {
        document
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("missing string field `{field}`")))
    };
    let lfeval_version = string(&document, "lfeval_version")?;
    let started_at: Timestamp = string(&document, "started_at")?
        .parse()
        .map_err(|e| bad(format!("`started_at`: {e}")))?;
    let project_dir = PathBuf::from(string(&document, "project_dir")?);
    let run_file = match document.get("run_file") {
        None | Some(Value::Null) => None,
        Some(Value::String(run_file)) => Some(PathBuf::from(run_file)),
        Some(_) => return Err(bad("`run_file` is not a string".to_owned())),
    };
    let run_config = document
        .remove("run_config")
        .ok_or_else(|| bad("missing field `run_config`".to_owned()))?;
    let info = RunInfo {
        project_dir,
        run_file,
        started_at,
    };
    Ok((info, lfeval_version, run_config))
}
