//! A finished run read back from its directory, without taking it over: `summary.json`,
//! `run_config.json` (version, start, policies), `fingerprint.json` (hashed into the config
//! fingerprint), `sessions.jsonl` (the command lines) and `samples.jsonl`, whose records are
//! handed out in the report's order (specifications in summary order, then dataset position)
//! one line at a time, so memory holds only their positions.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::eval::fingerprint::FINGERPRINT_FILE;
use crate::eval::policy::Policy;
use crate::eval::record::RecordIdentity;
use crate::eval::run_dir::{RUN_CONFIG_FILE, SAMPLES_FILE, SESSIONS_FILE, SUMMARY_FILE};
use crate::eval::summary::RunSummary;
use crate::file_window::FileWindow;
use crate::report::record_view::RecordView;

#[derive(Debug, thiserror::Error)]
pub enum RunReadError {
    #[error(
        "`{}` is not a run directory (it has no `run_config.json`); hint: pass a directory under `runs/`",
        path.display()
    )]
    NotARun { path: PathBuf },
    #[error(
        "run `{}` has not finished (it has no `summary.json`); hint: finish it with `lfeval run --resume {}`",
        path.display(), path.display()
    )]
    Unfinished { path: PathBuf },
    #[error("cannot read `{}`: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("invalid `{}`: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> RunReadError + '_ {
    move |error| RunReadError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// What `run_config.json` holds besides the config itself.
#[derive(Debug, Clone, Deserialize)]
pub struct RunHead {
    pub lfeval_version: String,
    pub started_at: String,
    #[serde(default)]
    pub run_file: Option<String>,
    #[serde(default)]
    pub run_config: ConfigPolicies,
}

/// The `policies` of the stored run config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigPolicies {
    #[serde(default)]
    pub policies: Vec<Policy>,
}

#[derive(Deserialize)]
struct SessionLine {
    #[serde(default)]
    command_line: Option<Vec<String>>,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    pub dir: PathBuf,
    pub head: RunHead,
    pub summary: RunSummary,
    /// `sha256:` + the hash of `fingerprint.json`: one value naming every input of the run.
    pub config_fingerprint: Option<String>,
    /// The command line of each session that recorded one, first start first.
    pub command_lines: Vec<Vec<String>>,
}

impl FinishedRun {
    pub fn open(dir: &Path) -> Result<FinishedRun, RunReadError> {
        let head_path = dir.join(RUN_CONFIG_FILE);
        if !head_path.exists() {
            return Err(RunReadError::NotARun {
                path: dir.to_path_buf(),
            });
        }
        let head: RunHead = read_json(&head_path)?;
        let summary_path = dir.join(SUMMARY_FILE);
        if !summary_path.exists() {
            return Err(RunReadError::Unfinished {
                path: dir.to_path_buf(),
            });
        }
        let summary: RunSummary = read_json(&summary_path)?;
        let fingerprint_path = dir.join(FINGERPRINT_FILE);
        let config_fingerprint = match std::fs::read(&fingerprint_path) {
            Ok(bytes) => Some(format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&fingerprint_path)(e)),
        };
        let sessions_path = dir.join(SESSIONS_FILE);
        let mut command_lines = Vec::new();
        match std::fs::read_to_string(&sessions_path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    // A session line lfeval could not finish writing is no reason to refuse.
                    if let Ok(SessionLine {
                        command_line: Some(argv),
                    }) = serde_json::from_str(line)
                    {
                        command_lines.push(argv);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&sessions_path)(e)),
        }
        Ok(FinishedRun {
            dir: dir.to_path_buf(),
            head,
            summary,
            config_fingerprint,
            command_lines,
        })
    }

    /// The records of every specification in the summary, in report order.
    pub fn records(&self) -> Result<OrderedRecords, RunReadError> {
        OrderedRecords::open(&self.dir.join(SAMPLES_FILE), &self.summary)
    }
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RunReadError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    serde_json::from_str(&text).map_err(|e| RunReadError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Where each record sits in `samples.jsonl`, in report order.
pub struct OrderedRecords {
    path: PathBuf,
    file: FileWindow,
    /// Each line's offset and length, in two arrays (12 bytes a record, not 16 with padding).
    offsets: Arc<[u64]>,
    lengths: Arc<[u32]>,
    /// How many records belong to each specification of the summary, in its order.
    pub per_spec: Vec<usize>,
}

/// A line while the records are put in order: 24 bytes, with no copy of its sample id.
#[derive(Clone, Copy)]
struct Placed {
    rank: u32,
    length: u32,
    sample_index: u64,
    offset: u64,
}

impl OrderedRecords {
    fn open(path: &Path, summary: &RunSummary) -> Result<OrderedRecords, RunReadError> {
        let invalid = |message: String| RunReadError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(io_error(path))?;
        let mut reader = BufReader::new(file);
        let specs: Vec<&str> = summary.specifications.iter().map(|s| s.identity.key.as_str()).collect();
        let mut found: Vec<Placed> = Vec::new();
        let mut offset = 0u64;
        let mut buf = Vec::new();
        let mut line = 0u64;
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io_error(path))?;
            if n == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            line += 1;
            let at = RecordIdentity::of_line(&buf).map_err(|e| invalid(format!("line {line}: {e}")))?;
            // Records of a specification the summary does not list (a changed config resumed
            // with `--force-resume`) have no place in the report.
            if let Some(rank) = specs.iter().position(|s| *s == at.spec) {
                found.push(Placed {
                    rank: u32::try_from(rank).unwrap_or(u32::MAX),
                    length: u32::try_from(n).map_err(|_| invalid(format!("line {line} is longer than 4 GiB")))?,
                    sample_index: at.sample_index,
                    offset,
                });
            }
            offset += n as u64;
        }
        // Stable, so records of one sample (its trials and parts) keep their file order.
        found.sort_by_key(|p| (p.rank, p.sample_index));
        // Records that share a position (a dataset with duplicate positions after a merge) are
        // ordered by sample id, read back for just those lines.
        let mut start = 0;
        while start < found.len() {
            let key = (found[start].rank, found[start].sample_index);
            let end = start + found[start..].partition_point(|p| (p.rank, p.sample_index) == key);
            if end - start > 1 {
                let file = reader.get_ref();
                let mut ids = Vec::with_capacity(end - start);
                for placed in &found[start..end] {
                    buf.resize(placed.length as usize, 0);
                    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, placed.offset).map_err(io_error(path))?;
                    let at =
                        RecordIdentity::of_line(&buf).map_err(|e| invalid(format!("byte {}: {e}", placed.offset)))?;
                    ids.push(at.sample_id);
                }
                let mut order: Vec<usize> = (0..ids.len()).collect();
                order.sort_by(|&a, &b| ids[a].cmp(&ids[b]));
                let group = found[start..end].to_vec();
                for (slot, &k) in found[start..end].iter_mut().zip(&order) {
                    *slot = group[k];
                }
            }
            start = end;
        }
        let mut per_spec = vec![0; specs.len()];
        for p in &found {
            per_spec[p.rank as usize] += 1;
        }
        let offsets = found.iter().map(|p| p.offset).collect();
        let lengths = found.iter().map(|p| p.length).collect();
        Ok(OrderedRecords {
            path: path.to_path_buf(),
            file: FileWindow::new(reader.into_inner()),
            offsets,
            lengths,
            per_spec,
        })
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// A second reader over the same records, for another thread.
    pub fn reader(&self) -> Result<OrderedRecords, RunReadError> {
        let file = File::open(&self.path).map_err(io_error(&self.path))?;
        Ok(OrderedRecords {
            path: self.path.clone(),
            file: FileWindow::new(file),
            offsets: Arc::clone(&self.offsets),
            lengths: Arc::clone(&self.lengths),
            per_spec: self.per_spec.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The raw line of record `i` (in report order), without its `\n`.
    pub fn line(&mut self, i: usize, buf: &mut Vec<u8>) -> Result<(), RunReadError> {
        let (offset, len) = (self.offsets[i], self.lengths[i] as usize);
        buf.clear();
        buf.extend_from_slice(self.file.read(offset, len).map_err(io_error(&self.path))?);
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        Ok(())
    }

    /// Record `i`, parsed.
    pub fn record(&mut self, i: usize, buf: &mut Vec<u8>) -> Result<RecordView, RunReadError> {
        self.line(i, buf)?;
        serde_json::from_slice(buf).map_err(|e| RunReadError::Invalid {
            path: self.path.clone(),
            message: format!("record at byte {}: {e}", self.offsets[i]),
        })
    }
}
