//! Rows of a CSV file: every value a string, short rows padded with `null`, the header checked
//! for duplicates, a byte order mark dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::{DatasetError, Location, RawRow, Row, RowResult, open_file};

pub(super) struct CsvRows {
    path: Arc<Path>,
    headers: Vec<String>,
    records: csv::StringRecordsIntoIter<File>,
    index: usize,
}

impl CsvRows {
    pub(super) fn open(path: PathBuf) -> Result<Self, DatasetError> {
        let file = open_file(&path)?;
        let path: Arc<Path> = path.into();
        // csv::Reader buffers internally; rows are parsed one record at a time.
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
        let headers = reader
            .headers()
            .map_err(|err| csv_error(&path, &err))?
            .iter()
            .enumerate()
            .map(|(i, h)| {
                if i == 0 {
                    h.trim_start_matches('\u{feff}').to_owned()
                } else {
                    h.to_owned()
                }
            })
            .collect::<Vec<_>>();
        for (i, header) in headers.iter().enumerate() {
            if headers[..i].contains(header) {
                return Err(DatasetError::DuplicateColumn {
                    path: path.to_path_buf(),
                    column: header.clone(),
                });
            }
        }
        Ok(CsvRows {
            path,
            headers,
            records: reader.into_records(),
            index: 0,
        })
    }
}

pub(super) fn csv_error(path: &Arc<Path>, err: &csv::Error) -> DatasetError {
    let location = Location {
        path: path.clone(),
        line: err.position().map(|p| p.line()),
    };
    let message = match err.kind() {
        csv::ErrorKind::Utf8 { .. } => "invalid UTF-8".to_owned(),
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => err.to_string(),
    };
    DatasetError::Read { location, message }
}

impl Iterator for CsvRows {
    type Item = RowResult;

    fn next(&mut self) -> Option<RowResult> {
        let record = match self.records.next()? {
            Ok(record) => record,
            Err(err) => return Some(Err(csv_error(&self.path, &err))),
        };
        let location = Location {
            path: self.path.clone(),
            line: record.position().map(|p| p.line()),
        };
        if record.len() > self.headers.len() {
            return Some(Err(DatasetError::CsvExtraFields {
                location,
                expected: self.headers.len(),
                found: record.len(),
            }));
        }
        let row: Row = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, header)| {
                let value = record.get(i).map_or(Value::Null, |v| Value::String(v.to_owned()));
                (header.clone(), value)
            })
            .collect();
        let index = self.index;
        self.index += 1;
        Some(Ok(RawRow { location, index, row }))
    }
}
