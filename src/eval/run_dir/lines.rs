//! Reading `samples.jsonl` line by line: complete lines only (a partial last line is a write
//! that a killed process never finished), parsed into records or just their identity.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::eval::record::{RecordIdentity, SampleRecord};

use super::ResultsError;

/// Streaming reader behind [`RunDir::records`].
pub(super) struct Records {
    pub(super) reader: BufReader<File>,
    pub(super) path: PathBuf,
    pub(super) line: u64,
    pub(super) done: bool,
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
pub(super) fn scan_lines(
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
pub(super) fn scan(
    file: &mut File,
    path: &Path,
    mut each: impl FnMut(u64, RecordIdentity) -> Result<(), ResultsError>,
) -> Result<u64, ResultsError> {
    let mut line = 0u64;
    scan_lines(file, path, |buf| {
        line += 1;
        let key = parse_line(buf).map_err(|message| invalid(path, line, message))?;
        each(line, key)
    })
}

pub(super) fn parse_line<T: serde::de::DeserializeOwned>(buf: &[u8]) -> Result<T, String> {
    serde_json::from_slice(buf).map_err(|e| e.to_string())
}

pub(super) fn invalid(path: &Path, line: u64, message: impl Into<String>) -> ResultsError {
    ResultsError::InvalidRecord {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}
