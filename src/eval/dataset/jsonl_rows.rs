//! Rows of a JSONL file: one JSON object per line, blank lines skipped but counted.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::diagnostic::describe_value;

use super::{DatasetError, Location, RawRow, RowResult, open_file};

pub(super) struct JsonlRows {
    path: Arc<Path>,
    lines: std::io::Lines<BufReader<File>>,
    line: u64,
    index: usize,
}

impl JsonlRows {
    pub(super) fn open(path: PathBuf) -> Result<Self, DatasetError> {
        let file = open_file(&path)?;
        Ok(JsonlRows {
            path: path.into(),
            lines: BufReader::new(file).lines(),
            line: 0,
            index: 0,
        })
    }
}

impl Iterator for JsonlRows {
    type Item = RowResult;

    fn next(&mut self) -> Option<RowResult> {
        loop {
            let text = self.lines.next()?;
            self.line += 1;
            let location = Location {
                path: self.path.clone(),
                line: Some(self.line),
            };
            let text = match text {
                Ok(text) => text,
                Err(err) => {
                    let message = if err.kind() == std::io::ErrorKind::InvalidData {
                        "invalid UTF-8".to_owned()
                    } else {
                        err.to_string()
                    };
                    return Some(Err(DatasetError::Read { location, message }));
                }
            };
            let text = if self.line == 1 {
                text.trim_start_matches('\u{feff}')
            } else {
                text.as_str()
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some(match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(row)) => {
                    let index = self.index;
                    self.index += 1;
                    Ok(RawRow { location, index, row })
                }
                Ok(other) => Err(DatasetError::NotAnObject {
                    location,
                    found: describe_value(&other),
                }),
                Err(err) => Err(DatasetError::InvalidJson {
                    location,
                    message: json_message(&err),
                }),
            });
        }
    }
}

/// serde_json's message with its "line 1" (always 1 for a single line) replaced by the column.
pub(super) fn json_message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("{message} (column {})", err.column()),
        None => text,
    }
}
