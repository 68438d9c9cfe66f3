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
//! Every byte written passes through [`crate::redact::redact`]: string values (and numbers,
//! whose digits could spell a numeric secret) are masked one by one, which keeps the JSON
//! valid, and the serialized text is masked once more as a final guarantee.
//!
//! One process at a time: `samples.jsonl` carries an advisory lock for as long as the
//! [`RunDir`] lives, so a second `--resume` of the same directory fails instead of interleaving.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::eval::record::SampleRecord;
use crate::redact::redact;

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

/// One session of a run, from its start until [`RunDir::end_session`].
pub struct SessionLog {
    started_at: Timestamp,
    clock: std::time::Instant,
}

impl SessionLog {
    pub fn start() -> SessionLog {
        SessionLog {
            started_at: Timestamp::now(),
            clock: std::time::Instant::now(),
        }
    }
}

/// Every session of a run, added up.
#[derive(Debug, Clone, PartialEq)]
pub struct Sessions {
    /// When the run first started.
    pub first_started_at: String,
    /// Wall time across every session that ended (an interrupted one counts; a killed one
    /// could not say).
    pub wall_time_s: f64,
    pub count: u32,
}

/// What [`RunDir::resume`] found in an existing run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeState {
    /// `(spec, sample_id)` of every complete record, as written (that is, redacted); prefer
    /// [`RunDir::is_recorded`], which masks the ids the same way before looking them up.
    pub completed: HashSet<(String, String)>,
    /// Number of complete records.
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
    /// `(spec, sample_id)` of every line in the file, as written (redacted).
    written: HashSet<(String, String)>,
    /// Set when a failed write could not be cut back, so the file's tail is unknown.
    broken: bool,
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
        let run_config = redact_value(run_config);
        Ok(RunDir {
            path: path.to_path_buf(),
            samples_path,
            info: info.clone(),
            lfeval_version,
            run_config,
            samples: Mutex::new(SamplesFile {
                file,
                len: 0,
                written: HashSet::new(),
                broken: false,
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
        let good_len = scan(&mut file, &samples_path, |line, RecordKey { spec, sample_id }| {
            if !state.completed.insert((spec.clone(), sample_id.clone())) {
                return Err(invalid(
                    &samples_path,
                    line,
                    format!("sample `{sample_id}` of `{spec}` appears twice"),
                ));
            }
            state.records += 1;
            Ok(())
        })?;
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
                written: state.completed.clone(),
                broken: false,
            }),
        };
        Ok((dir, state))
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

    /// Whether a record for this sample is already in `samples.jsonl`. The ids are masked
    /// first, exactly as [`RunDir::append`] masks them, so raw ids can be passed.
    pub fn is_recorded(&self, spec: &str, sample_id: &str) -> bool {
        let key = (redact(spec).into_owned(), redact(sample_id).into_owned());
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.written.contains(&key)
    }

    /// Appends one record. A sample already recorded in this run is refused with
    /// [`ResultsError::Duplicate`].
    pub fn append(&self, record: &SampleRecord) -> Result<(), ResultsError> {
        let key = (
            redact(&record.spec).into_owned(),
            redact(&record.sample_id).into_owned(),
        );
        let what = format!("sample `{}` of `{}`", key.1, key.0);
        let value = serde_json::to_value(record).map_err(|e| ResultsError::Serialize {
            what: what.clone(),
            message: e.to_string(),
        })?;
        let mut line = render(&value, false, &what)?;
        line.push('\n');

        // A poisoned lock only means another thread panicked between writes; the state
        // (length, ids) is updated only after a write fully succeeds, so it is still true.
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.broken {
            return Err(ResultsError::Broken {
                path: self.samples_path.clone(),
            });
        }
        if samples.written.contains(&key) {
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
        samples.written.insert(key);
        Ok(())
    }

    /// How many samples of `spec` are recorded.
    pub fn recorded_count(&self, spec: &str) -> usize {
        let spec = redact(spec);
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.written.iter().filter(|(s, _)| *s == spec).count()
    }

    /// Takes every failed record out of `samples.jsonl` (moving it to
    /// `samples.retried.jsonl`), so that those samples run again. Returns how many it took.
    pub fn drop_failed(&self) -> Result<usize, ResultsError> {
        #[derive(serde::Deserialize)]
        struct Outcome {
            spec: String,
            sample_id: String,
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
                dropped.push((outcome.spec, outcome.sample_id));
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
        for key in &dropped {
            samples.written.remove(key);
        }
        Ok(dropped.len())
    }

    /// Appends this session's line to `sessions.jsonl`.
    pub fn end_session(&self, session: SessionLog) -> Result<(), ResultsError> {
        let line = serde_json::json!({
            "started_at": session.started_at.to_string(),
            "ended_at": Timestamp::now().to_string(),
            "wall_time_s": session.clock.elapsed().as_secs_f64(),
        });
        let path = self.path.join(SESSIONS_FILE);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}").and_then(|()| f.sync_data()))
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
        #[derive(serde::Deserialize)]
        struct Position {
            spec: String,
            sample_id: String,
            sample_index: u64,
        }
        let path = self.samples_path.clone();
        let mut file = File::open(&path).map_err(|e| ResultsError::io("open", &path, e))?;
        let mut lines = Vec::new();
        let mut offset = 0u64;
        let mut line = 0u64;
        scan_lines(&mut file, &path, |buf| {
            line += 1;
            let at: Position = parse_line(buf).map_err(|message| invalid(&path, line, message))?;
            if at.spec == spec {
                lines.push((at.sample_index, at.sample_id, offset, line));
            }
            offset += buf.len() as u64;
            Ok(())
        })?;
        lines.sort();
        let mut reader = BufReader::new(file);
        Ok(lines.into_iter().map(move |(_, _, offset, line)| {
            reader
                .seek(SeekFrom::Start(offset))
                .map_err(|e| ResultsError::io("read", &path, e))?;
            let mut buf = Vec::new();
            reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| ResultsError::io("read", &path, e))?;
            parse_line(&buf).map_err(|message| invalid(&path, line, message))
        }))
    }

    /// Writes `value` as pretty JSON to `relative` (inside the run directory), creating parent
    /// directories; the file is replaced atomically. Returns the full path.
    pub fn write_json(&self, relative: &str, value: &impl serde::Serialize) -> Result<PathBuf, ResultsError> {
        let value = serde_json::to_value(value).map_err(|e| ResultsError::Serialize {
            what: relative.to_owned(),
            message: e.to_string(),
        })?;
        let relative_path = Path::new(relative);
        let safe = !relative.is_empty() && relative_path.components().all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(ResultsError::InvalidRelativePath {
                relative: relative.to_owned(),
            });
        }
        let target = self.path.join(relative_path);
        write_atomic(&target, &value)?;
        Ok(target)
    }

    /// Writes `summary.json`.
    pub fn write_summary(&self, summary: &impl serde::Serialize) -> Result<PathBuf, ResultsError> {
        self.write_json(SUMMARY_FILE, summary)
    }

    /// Makes every appended line durable. Safe to call more than once.
    pub fn finish(&self) -> Result<(), ResultsError> {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples
            .file
            .flush()
            .and_then(|()| samples.file.sync_data())
            .map_err(|e| ResultsError::io("sync", &self.samples_path, e))
    }
}

/// Streaming reader behind [`RunDir::records`].
struct Records {
    reader: BufReader<File>,
    path: PathBuf,
    line: u64,
    done: bool,
}

impl Iterator for Records {
    type Item = Result<SampleRecord, ResultsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Err(error) => {
                self.done = true;
                Some(Err(ResultsError::io("read", &self.path, error)))
            }
            Ok(_) if buf.last() != Some(&b'\n') => {
                self.done = true;
                None
            }
            Ok(_) => {
                self.line += 1;
                let parsed =
                    parse_line::<SampleRecord>(&buf).map_err(|message| invalid(&self.path, self.line, message));
                if parsed.is_err() {
                    self.done = true;
                }
                Some(parsed)
            }
        }
    }
}

/// Hands every complete line of `file` (from its start, `\n` included) to `each`, and returns
/// the length of the complete part (the offset where a partial last line starts).
fn scan_lines(
    file: &mut File,
    path: &Path,
    mut each: impl FnMut(&[u8]) -> Result<(), ResultsError>,
) -> Result<u64, ResultsError> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| ResultsError::io("read", path, e))?;
    let mut reader = BufReader::new(Read::by_ref(file));
    let mut good_len = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| ResultsError::io("read", path, e))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            // End of file, or a line the writer never finished: nothing after it is kept.
            return Ok(good_len);
        }
        each(&buf)?;
        good_len += n as u64;
    }
}

/// Reads the identity of every complete record, handing it to `each` with its line number.
fn scan(
    file: &mut File,
    path: &Path,
    mut each: impl FnMut(u64, RecordKey) -> Result<(), ResultsError>,
) -> Result<u64, ResultsError> {
    let mut line = 0u64;
    scan_lines(file, path, |buf| {
        line += 1;
        let key = parse_line(buf).map_err(|message| invalid(path, line, message))?;
        each(line, key)
    })
}

fn parse_line<T: serde::de::DeserializeOwned>(buf: &[u8]) -> Result<T, String> {
    serde_json::from_slice(buf).map_err(|e| e.to_string())
}

/// What resume needs of a record: which sample it is (the rest of the line is skipped).
#[derive(serde::Deserialize)]
struct RecordKey {
    spec: String,
    sample_id: String,
}

fn invalid(path: &Path, line: u64, message: impl Into<String>) -> ResultsError {
    ResultsError::InvalidRecord {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
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

fn path_value(path: &Path) -> Result<Value, ResultsError> {
    path.to_str().map(Value::from).ok_or_else(|| ResultsError::NonUtf8Path {
        path: path.to_path_buf(),
    })
}

/// Masks secrets in every string and object key, and in numbers whose text contains one
/// (those become strings: the mask is not a number).
fn redact_value(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(redact(s).into_owned()),
        Value::Number(n) => {
            let text = n.to_string();
            match redact(&text) {
                std::borrow::Cow::Borrowed(_) => value.clone(),
                std::borrow::Cow::Owned(masked) => Value::String(masked),
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(redact_value).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (redact(k).into_owned(), redact_value(v)))
                .collect(),
        ),
        Value::Null | Value::Bool(_) => value.clone(),
    }
}

/// Serializes with every secret masked. The text pass catches what the value pass cannot
/// (a secret spanning JSON syntax); if masking that breaks the JSON, nothing is written.
fn render(value: &Value, pretty: bool, what: &str) -> Result<String, ResultsError> {
    let masked = redact_value(value);
    let serialized = if pretty {
        serde_json::to_string_pretty(&masked)
    } else {
        serde_json::to_string(&masked)
    }
    .map_err(|e| ResultsError::Serialize {
        what: what.to_owned(),
        message: e.to_string(),
    })?;
    match redact(&serialized) {
        std::borrow::Cow::Borrowed(_) => Ok(serialized),
        std::borrow::Cow::Owned(text) => {
            if serde_json::from_str::<Value>(&text).is_ok() {
                Ok(text)
            } else {
                Err(ResultsError::Unredactable { what: what.to_owned() })
            }
        }
    }
}

/// Pretty JSON text of a whole file, masked, with a final newline.
fn render_file(value: &Value, target: &Path) -> Result<String, ResultsError> {
    let mut text = render(value, true, &target.display().to_string())?;
    text.push('\n');
    Ok(text)
}

/// Writes `value` as pretty JSON to `target` through [`write_text_atomic`].
fn write_atomic(target: &Path, value: &Value) -> Result<(), ResultsError> {
    write_text_atomic(target, &render_file(value, target)?)
}

/// Writes `text` to a temporary sibling of `target`, syncs it and renames it over `target`:
/// readers (and a crash) see the old file or the new one, never a mix.
fn write_text_atomic(target: &Path, text: &str) -> Result<(), ResultsError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(ResultsError::InvalidRelativePath {
            relative: target.display().to_string(),
        });
    };
    fs::create_dir_all(parent).map_err(|e| ResultsError::io("create directory", parent, e))?;
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.{unique}.tmp", std::process::id()));
    let temp = parent.join(temp_name);
    let result = (|| {
        let mut file = File::create(&temp).map_err(|e| ResultsError::io("create", &temp, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| ResultsError::io("write", &temp, e))?;
        fs::rename(&temp, target).map_err(|e| ResultsError::io("replace", target, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    // Makes the rename itself durable; not every platform can open a directory for this.
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn lock(file: &File, dir: &Path) -> Result<(), ResultsError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(fs::TryLockError::WouldBlock) => Err(ResultsError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(error)) => Err(ResultsError::io("lock", &dir.join(SAMPLES_FILE), error)),
    }
}

fn file_len(file: &File, path: &Path) -> Result<u64, ResultsError> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| ResultsError::io("read metadata of", path, e))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            project_dir: PathBuf::from("/projects/demo"),
            run_file: Some(PathBuf::from("/projects/demo/run.yaml")),
            started_at: "2024-01-02T03:04:05Z".parse().unwrap(),
        }
    }

    fn new_run(dir: &Path) -> RunDir {
        RunDir::create(dir, &info(), &json!({"evaluation": {"key": "demo"}})).unwrap()
    }

    fn row(value: Value) -> crate::eval::dataset::Row {
        value.as_object().cloned().unwrap()
    }

    fn record(spec: &str, id: &str) -> SampleRecord {
        SampleRecord::new(
            spec,
            id,
            id.parse().unwrap_or(0),
            row(json!({"output": format!("answer {id}"), "score": 1.5})),
        )
    }

    fn padded(spec: &str, id: &str, pad: &str) -> SampleRecord {
        SampleRecord::new(spec, id, 0, row(json!({ "pad": pad })))
    }

    fn lines(dir: &Path) -> Vec<SampleRecord> {
        raw_lines(dir)
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect()
    }

    fn raw_lines(dir: &Path) -> Vec<Value> {
        let text = fs::read_to_string(dir.join(SAMPLES_FILE)).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "unterminated: {text:?}");
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    fn all_bytes_under(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(all_bytes_under(&path));
            } else {
                out.extend(fs::read(&path).unwrap());
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[test]
    fn default_path_uses_utc_time_and_a_safe_key() {
        let now: Timestamp = "2024-01-02T03:04:05.678+02:00".parse().unwrap();
        assert_eq!(
            RunDir::default_path(Path::new("/p"), "my-eval", now),
            PathBuf::from("/p/runs/20240102T010405Z-my-eval")
        );
        assert_eq!(
            RunDir::default_path(Path::new("/p"), "../a/b c", now),
            PathBuf::from("/p/runs/20240102T010405Z-.._a_b_c")
        );
        assert_eq!(
            RunDir::default_path(Path::new("/p"), "", now),
            PathBuf::from("/p/runs/20240102T010405Z-run")
        );
    }

    #[test]
    fn append_then_resume_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let run = new_run(&dir);
        for (spec, id) in [("a", "1"), ("a", "2"), ("b", "1")] {
            run.append(&record(spec, id)).unwrap();
        }
        run.finish().unwrap();
        drop(run);

        let (run, state) = resume_when_free(&dir);
        assert_eq!(state.records, 3);
        assert_eq!(state.truncated_bytes, 0);
        let expected: HashSet<(String, String)> = [("a", "1"), ("a", "2"), ("b", "1")]
            .iter()
            .map(|(s, i)| (s.to_string(), i.to_string()))
            .collect();
        assert_eq!(state.completed, expected);
        assert_eq!(run.run_config(), &json!({"evaluation": {"key": "demo"}}));
        assert_eq!(run.info(), &info());
        assert_eq!(run.lfeval_version(), env!("CARGO_PKG_VERSION"));
        assert!(run.is_recorded("a", "2"));
        assert!(!run.is_recorded("b", "2"));

        let records: Vec<SampleRecord> = run.records().unwrap().map(Result::unwrap).collect();
        assert_eq!(records, vec![record("a", "1"), record("a", "2"), record("b", "1")]);

        // The resumed run keeps refusing what the first process wrote.
        assert!(matches!(
            run.append(&record("b", "1")),
            Err(ResultsError::Duplicate { .. })
        ));
        run.append(&record("b", "2")).unwrap();
        assert_eq!(lines(&dir).len(), 4);
    }

    #[test]
    fn partial_last_line_is_cut_on_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let run = new_run(&dir);
        run.append(&record("a", "1")).unwrap();
        run.append(&record("a", "2")).unwrap();
        drop(run);
        let samples = dir.join(SAMPLES_FILE);
        let clean_len = fs::metadata(&samples).unwrap().len();
        // What a kill in the middle of `write_all` leaves behind.
        let partial = br#"{"spec":"a","sample_id":"3","output":"ans"#;
        OpenOptions::new()
            .append(true)
            .open(&samples)
            .unwrap()
            .write_all(partial)
            .unwrap();

        let (run, state) = resume_when_free(&dir);
        assert_eq!(state.records, 2);
        assert_eq!(state.truncated_bytes, partial.len() as u64);
        assert!(!state.completed.contains(&("a".to_owned(), "3".to_owned())));
        assert_eq!(fs::metadata(&samples).unwrap().len(), clean_len);

        run.append(&record("a", "3")).unwrap();
        run.append(&record("a", "4")).unwrap();
        run.finish().unwrap();
        let ids: Vec<String> = lines(&dir).into_iter().map(|r| r.sample_id).collect();
        assert_eq!(ids, vec!["1", "2", "3", "4"]);
    }

    #[test]
    fn complete_json_without_newline_counts_as_partial() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        drop(new_run(&dir));
        let tail = serde_json::to_string(&record("a", "1")).unwrap();
        fs::write(dir.join(SAMPLES_FILE), &tail).unwrap();
        let (run, state) = resume_when_free(&dir);
        assert_eq!(state.records, 0);
        assert_eq!(state.truncated_bytes, tail.len() as u64);
        run.append(&record("a", "1")).unwrap();
        assert_eq!(lines(&dir), vec![record("a", "1")]);
    }

    #[test]
    fn corrupt_complete_line_is_an_error_not_a_silent_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        drop(new_run(&dir));
        let good = serde_json::to_string(&record("a", "1")).unwrap();
        fs::write(dir.join(SAMPLES_FILE), format!("{good}\nnot json\n{good}\n")).unwrap();
        match RunDir::resume(&dir) {
            Err(ResultsError::InvalidRecord { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected an invalid record, got {other:?}"),
        }
        fs::write(dir.join(SAMPLES_FILE), format!("{good}\n{good}\n")).unwrap();
        match RunDir::resume(&dir) {
            Err(ResultsError::InvalidRecord { line, message, .. }) => {
                assert_eq!(line, 2);
                assert!(message.contains("twice"), "{message}");
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }

    #[test]
    fn duplicates_and_keyless_records_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let run = new_run(&dir);
        run.append(&record("a", "1")).unwrap();
        match run.append(&padded("a", "1", "other")) {
            Err(ResultsError::Duplicate { spec, sample_id }) => {
                assert_eq!((spec.as_str(), sample_id.as_str()), ("a", "1"));
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
        // Same id under another spec is a different sample.
        run.append(&record("b", "1")).unwrap();
        assert_eq!(lines(&dir), vec![record("a", "1"), record("b", "1")]);
    }

    #[test]
    fn concurrent_appends_write_whole_lines_once() {
        const THREADS: usize = 8;
        const PER_THREAD: usize = 200;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let run = Arc::new(new_run(&dir));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let run = Arc::clone(&run);
                std::thread::spawn(move || {
                    let padding = "x".repeat(1000 * (t + 1));
                    let mut shared_won = 0;
                    for i in 0..PER_THREAD {
                        let id = format!("{t}-{i}");
                        run.append(&padded("s", &id, &padding)).unwrap();
                        // Every thread races for the same sample; only one may win.
                        if run.append(&padded("s", "shared", "")).is_ok() {
                            shared_won += 1;
                        }
                    }
                    shared_won
                })
            })
            .collect();
        let won: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(won, 1);
        run.finish().unwrap();

        let records = lines(&dir);
        assert_eq!(records.len(), THREADS * PER_THREAD + 1);
        let ids: HashSet<String> = records.iter().map(|r| r.sample_id.clone()).collect();
        assert_eq!(ids.len(), records.len());
        assert_eq!(run.records().unwrap().count(), records.len());
    }

    #[test]
    fn records_skip_a_line_still_being_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let run = new_run(&dir);
        run.append(&record("a", "1")).unwrap();
        OpenOptions::new()
            .append(true)
            .open(dir.join(SAMPLES_FILE))
            .unwrap()
            .write_all(br#"{"spec":"a","sam"#)
            .unwrap();
        let records: Vec<SampleRecord> = run.records().unwrap().map(Result::unwrap).collect();
        assert_eq!(records, vec![record("a", "1")]);
    }

    #[test]
    fn create_refuses_a_used_directory_and_resume_needs_a_run() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty");
        fs::create_dir(&empty).unwrap();
        drop(new_run(&empty));
        let err = RunDir::create(&empty, &info(), &json!({})).unwrap_err();
        assert!(matches!(err, ResultsError::NotEmpty { .. }));
        assert!(err.to_string().contains("`--resume`"), "{err}");

        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        assert!(matches!(
            RunDir::create(&file, &info(), &json!({})),
            Err(ResultsError::NotEmpty { .. })
        ));

        let other = tmp.path().join("other");
        fs::create_dir(&other).unwrap();
        assert!(matches!(RunDir::resume(&other), Err(ResultsError::NotARun { .. })));
    }

    /// Resumes, waiting out a lock that outlives its [`RunDir`] for a moment: a process that
    /// another test forks shares the lock until its `exec` closes the inherited descriptor.
    fn resume_when_free(dir: &Path) -> (RunDir, ResumeState) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match RunDir::resume(dir) {
                Err(ResultsError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other.unwrap(),
            }
        }
    }

    #[test]
    fn a_live_run_cannot_be_opened_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let run = new_run(&dir);
        assert!(matches!(RunDir::resume(&dir), Err(ResultsError::Locked { .. })));
        drop(run);
        let (resumed, _) = resume_when_free(&dir);
        assert!(matches!(RunDir::resume(&dir), Err(ResultsError::Locked { .. })));
        drop(resumed);
    }

    #[test]
    fn write_json_replaces_atomically_inside_the_run() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let run = new_run(&dir);
        let log = "task_results/spec-1/task_result_log.json";
        let target = run.write_json(log, &json!({"format_version": "v1", "n": 1})).unwrap();
        assert_eq!(target, dir.join("task_results/spec-1/task_result_log.json"));
        run.write_json(log, &json!({"format_version": "v1", "n": 2})).unwrap();
        let text = fs::read_to_string(&target).unwrap();
        assert!(text.contains("\n  \"n\": 2"), "not pretty: {text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"format_version": "v1", "n": 2})
        );
        let leftovers: Vec<_> = fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("task_result_log.json")]);

        let summary = run.write_summary(&json!({"ok": true})).unwrap();
        assert_eq!(summary, dir.join("summary.json"));
        for bad in ["", "../escape.json", "/abs.json", "a/../../b.json"] {
            assert!(
                matches!(
                    run.write_json(bad, &json!({})),
                    Err(ResultsError::InvalidRelativePath { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn a_registered_secret_never_reaches_the_run_directory() {
        crate::redact::register("sk-canary-XYZ123", "<<secrets.CANARY>>");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let config = json!({"models": {"m": {"api_key": "sk-canary-XYZ123"}}});
        let run = RunDir::create(&dir, &info(), &config).unwrap();
        assert_eq!(
            run.run_config(),
            &json!({"models": {"m": {"api_key": "<<secrets.CANARY>>"}}})
        );
        run.append(&SampleRecord::new(
            "a",
            "1",
            1,
            row(json!({
                "request": "Authorization: Bearer sk-canary-XYZ123",
                "escaped": "{\"key\":\"sk-canary-XYZ123\"}",
                "sk-canary-XYZ123": ["nested sk-canary-XYZ123"],
            })),
        ))
        .unwrap();
        run.write_summary(&json!({"echo": "sk-canary-XYZ123"})).unwrap();
        run.finish().unwrap();

        let bytes = all_bytes_under(&dir);
        assert!(!contains(&bytes, "sk-canary-XYZ123"));
        assert!(contains(&bytes, "<<secrets.CANARY>>"));
        let written = &raw_lines(&dir)[0];
        assert_eq!(
            written["sample"]["<<secrets.CANARY>>"],
            json!(["nested <<secrets.CANARY>>"])
        );

        // A secret in an id is masked in the key too, and lookups by the raw id still work.
        run.append(&padded("a", "sk-canary-XYZ123", "")).unwrap();
        assert!(run.is_recorded("a", "sk-canary-XYZ123"));
        assert!(matches!(
            run.append(&padded("a", "sk-canary-XYZ123", "")),
            Err(ResultsError::Duplicate { .. })
        ));
    }

    #[test]
    fn a_secret_spanning_json_syntax_blocks_the_write() {
        crate::redact::register("qzk\":\"vvq", "<<secrets.ODD>>");
        // Files are pretty-printed, which puts a space after the colon.
        crate::redact::register("qzp\": \"vvp", "<<secrets.ODD_PRETTY>>");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let run = new_run(&dir);
        assert!(matches!(
            run.append(&SampleRecord::new("a", "1", 1, row(json!({"qzk": "vvq"})))),
            Err(ResultsError::Unredactable { .. })
        ));
        assert!(lines(&dir).is_empty());
        run.append(&record("a", "1")).unwrap();
        assert_eq!(lines(&dir), vec![record("a", "1")]);

        // A config that cannot be written leaves nothing behind to block a retry.
        let other = tmp.path().join("other");
        assert!(matches!(
            RunDir::create(&other, &info(), &json!({"qzp": "vvp"})),
            Err(ResultsError::Unredactable { .. })
        ));
        assert!(!other.exists());
        drop(new_run(&other));
    }

    /// Not a test on its own: the process [`a_killed_writer_leaves_a_resumable_run`] starts
    /// and kills. It appends until it is killed.
    #[test]
    #[ignore = "run by a_killed_writer_leaves_a_resumable_run"]
    fn writer_child() {
        let Some(dir) = std::env::var_os("LFEVAL_TEST_WRITER_DIR") else {
            return;
        };
        let (run, _) = resume_when_free(Path::new(&dir));
        let padding = "p".repeat(4 * 1024 * 1024);
        for i in 0.. {
            run.append(&padded("s", &i.to_string(), &padding)).unwrap();
        }
    }

    #[test]
    fn a_killed_writer_leaves_a_resumable_run() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        drop(new_run(&dir));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "eval::run_dir::tests::writer_child", "--ignored"])
            .env("LFEVAL_TEST_WRITER_DIR", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let samples = dir.join(SAMPLES_FILE);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while fs::metadata(&samples).map(|m| m.len()).unwrap_or(0) < 24 * 1024 * 1024 {
            assert!(std::time::Instant::now() < deadline, "the writer never wrote");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let (run, state) = resume_when_free(&dir);
        assert!(state.records >= 5, "{} records", state.records);
        let next = state.records.to_string();
        assert!(!run.is_recorded("s", &next));
        run.append(&padded("s", &next, "")).unwrap();
        let records = lines(&dir);
        assert_eq!(records.len(), state.records + 1);
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.sample_id, i.to_string());
        }
    }
}
