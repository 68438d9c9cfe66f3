//! Datasets: the `SDKDataset` YAML entry and streaming its rows from disk as samples with stable
//! ids. Local CSV/JSONL files and folders of text files are supported; rows are read one at a
//! time (a folder is listed up front, but each file is read only when its turn comes), filtered
//! with caller-evaluated Jinja expressions, and checked for duplicate ids on the way.
//!
//! Semantics:
//! - CSV values are all strings (the original reads CSV with a dict reader); a row shorter than
//!   the header gets `null` for the missing columns, a longer one is an error; a UTF-8 byte
//!   order mark is dropped; duplicate header names are an error.
//! - JSONL lines must each hold a JSON object; blank lines are skipped but still counted, so
//!   line numbers in errors are the file's physical lines.
//! - Sample ids: `id_column` when set, else a `sample_id` field, else the 0-based row index in
//!   the unfiltered file (ids stay the same whatever the filters). Ids must be non-empty strings
//!   or numbers, are checked for duplicates over every row (filtered out or not), and numbers
//!   become their JSON text.
//! - Filters are AND-combined. `equals`/`not_equals`/`in`/`not_in` use strict JSON equality,
//!   except that numbers compare by value (`1 == 1.0`); the string `"True"` does not equal
//!   `true`. Ordering ops need numbers or booleans (booleans as 0/1) on both sides and never
//!   parse strings. `exists` means not `null` (the evaluator maps undefined to `null`).
//!   `is_true`/`is_false` use Python truthiness, except that the strings `true`/`false` (any
//!   case) count as the booleans they spell, since CSV booleans arrive as strings.
//! - Local file extensions (`.csv`/`.jsonl`) and a folder's `extension` (with or without the
//!   dot) match case-insensitively.
//! - Folder sources skip PDFs and hidden entries (names starting with `.`), do not descend
//!   into symlinked directories, and sort files by their `/`-separated relative path. Front
//!   matter is a first line `---`, YAML, and a closing `---` line; it is parsed with strict
//!   booleans (only `true`/`false`; PyYAML would also read `yes`/`no`/`on`/`off`) and its keys
//!   are added to the row unless they collide with `sample_id`, `file_name` or `content`, which
//!   always win. Everything after the closing line is `content`, unchanged.
//! - After an error the iterator is finished: a dataset with a broken row is a broken dataset.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::diagnostic::describe_value;
use sha2::{Digest, Sha256};

/// One dataset row: column → value.
pub type Row = Map<String, Value>;

/// A `datasets:` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub key: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub long_description: Option<String>,
    pub source: Option<SourceSpec>,
    /// Deprecated docs-era spelling of `source: {type: local, file_path}`.
    pub file_path: Option<String>,
    /// Accepted so that generated datasets get a clear "not supported" error instead of an
    /// unknown-field error.
    pub generator_specification: Option<Value>,
    pub tags: Option<Vec<String>>,
    /// lfeval extension: the column holding each sample's id.
    pub id_column: Option<String>,
}

/// Where a dataset's rows come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    Local {
        file_path: String,
        filters: Option<Vec<FilterSpec>>,
    },
    Folder {
        directory_path: String,
        extension: Option<String>,
        filters: Option<Vec<FilterSpec>>,
    },
}

/// One row filter: a Jinja `expression` compared with `op`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    pub expression: String,
    pub op: FilterOp,
    pub value: Option<Value>,
    pub values: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Equals,
    NotEquals,
    GreaterThan,
    LessThan,
    GreaterOrEqual,
    LessOrEqual,
    In,
    NotIn,
    Exists,
    NotExists,
    IsTrue,
    IsFalse,
}

impl FilterOp {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterOp::Equals => "equals",
            FilterOp::NotEquals => "not_equals",
            FilterOp::GreaterThan => "greater_than",
            FilterOp::LessThan => "less_than",
            FilterOp::GreaterOrEqual => "greater_or_equal",
            FilterOp::LessOrEqual => "less_or_equal",
            FilterOp::In => "in",
            FilterOp::NotIn => "not_in",
            FilterOp::Exists => "exists",
            FilterOp::NotExists => "not_exists",
            FilterOp::IsTrue => "is_true",
            FilterOp::IsFalse => "is_false",
        }
    }
}

impl fmt::Display for FilterOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sample that passed the filters.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub id: String,
    /// 0-based position of the row in the unfiltered source (file row or folder file).
    pub index: usize,
    pub row: Row,
}

/// A file, and for line-based files the 1-based line, that an error points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: Arc<Path>,
    pub line: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset `{key}` has no source; hint: add `source: {{type: local, file_path: data.jsonl}}`")]
    NoSource { key: String },
    #[error("dataset `{key}` sets both `source` and the deprecated top-level `file_path`")]
    BothSources { key: String },
    #[error(
        "dataset `{key}` uses `generator_specification`, which lfeval does not run; hint: write the rows to a `.jsonl` file and use `source: {{type: local, file_path: ...}}`"
    )]
    GeneratorUnsupported { key: String },
    #[error(
        "dataset file `{}` must end in `.csv` or `.jsonl`; hint: JSON Lines files use the `.jsonl` extension",
        path.display()
    )]
    UnsupportedExtension { path: PathBuf },
    #[error("dataset `{key}`, `filters[{index}]` (`{expression}`): {problem}")]
    InvalidFilter {
        key: String,
        index: usize,
        expression: String,
        problem: String,
    },
    #[error("cannot open `{}`: {error}", path.display())]
    Open { path: PathBuf, error: std::io::Error },
    #[error("cannot read `{location}`: {message}")]
    Read { location: Location, message: String },
    #[error("invalid JSON at `{location}`: {message}")]
    InvalidJson { location: Location, message: String },
    #[error("`{location}` is not a JSON object (found {found})")]
    NotAnObject { location: Location, found: String },
    #[error("`{location}` has {found} fields but the header has {expected}")]
    CsvExtraFields {
        location: Location,
        expected: usize,
        found: usize,
    },
    #[error("duplicate column `{column}` in the header of `{}`", path.display())]
    DuplicateColumn { path: PathBuf, column: String },
    #[error(
        "`{}` is not valid UTF-8 text; hint: set the folder source's `extension` to pick text files",
        path.display()
    )]
    NotUtf8 { path: PathBuf },
    #[error("invalid front matter in `{}`: {message}", path.display())]
    FrontMatter { path: PathBuf, message: String },
    #[error("`{location}` has no `{column}` column for the sample id")]
    MissingId { location: Location, column: String },
    #[error("sample id column `{column}` at `{location}` must be a non-empty string or a number (found {found})")]
    InvalidId {
        location: Location,
        column: String,
        found: String,
    },
    #[error("duplicate sample id `{id}` at `{second}` (first at `{first}`)")]
    DuplicateId {
        id: String,
        first: Location,
        second: Location,
    },
    #[error("filter `{expression}` failed at `{location}`: {message}")]
    FilterEval {
        location: Location,
        expression: String,
        message: String,
    },
    #[error(
        "filter `{expression}` with `{op}` needs a number or boolean, got {found} at `{location}`; hint: CSV values are strings, convert them in the expression (`| int`, `| float`)"
    )]
    FilterNotNumeric {
        location: Location,
        expression: String,
        op: FilterOp,
        found: String,
    },
}

impl DatasetSpec {
    /// The source to read, with the legacy top-level `file_path` mapped to a local source.
    pub fn effective_source(&self) -> Result<SourceSpec, DatasetError> {
        match (&self.source, &self.file_path) {
            (Some(_), Some(_)) => Err(DatasetError::BothSources { key: self.key.clone() }),
            (Some(source), None) => Ok(source.clone()),
            (None, Some(file_path)) => Ok(SourceSpec::Local {
                file_path: file_path.clone(),
                filters: None,
            }),
            (None, None) if self.generator_specification.is_some() => {
                Err(DatasetError::GeneratorUnsupported { key: self.key.clone() })
            }
            (None, None) => Err(DatasetError::NoSource { key: self.key.clone() }),
        }
    }
}

/// Evaluates a filter expression against a row; undefined results must come back as `null`.
pub type FilterEvaluator<'f> = &'f dyn Fn(&str, &Row) -> Result<Value, String>;

/// Opens a dataset for streaming. `base_dir` is the directory of the YAML file that defined
/// it; relative paths resolve there. Filters are validated here, before any row is read.
pub fn open<'f>(
    spec: &DatasetSpec,
    base_dir: &Path,
    eval_filter: FilterEvaluator<'f>,
) -> Result<SampleIter<'f>, DatasetError> {
    let source = spec.effective_source()?;
    let (SourceSpec::Local { filters, .. } | SourceSpec::Folder { filters, .. }) = &source;
    let filters = filters
        .iter()
        .flatten()
        .enumerate()
        .map(|(index, filter)| compile_filter(&spec.key, index, filter))
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Box<dyn Iterator<Item = RowResult>> = match source {
        SourceSpec::Local { file_path, .. } => {
            let path = base_dir.join(&file_path);
            let lower = file_path.to_ascii_lowercase();
            if lower.ends_with(".csv") {
                Box::new(CsvRows::open(path)?)
            } else if lower.ends_with(".jsonl") {
                Box::new(JsonlRows::open(path)?)
            } else {
                return Err(DatasetError::UnsupportedExtension { path });
            }
        }
        SourceSpec::Folder {
            directory_path,
            extension,
            ..
        } => Box::new(FolderRows::open(base_dir.join(directory_path), extension.as_deref())?),
    };
    Ok(SampleIter {
        rows,
        filters,
        id_column: spec.id_column.clone(),
        eval_filter,
        seen: HashMap::new(),
        done: false,
    })
}

/// Samples of one dataset, in file order, filtered.
pub struct SampleIter<'f> {
    rows: Box<dyn Iterator<Item = RowResult>>,
    filters: Vec<CompiledFilter>,
    id_column: Option<String>,
    eval_filter: FilterEvaluator<'f>,
    seen: HashMap<String, Location>,
    done: bool,
}

impl Iterator for SampleIter<'_> {
    type Item = Result<Sample, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let result = match self.rows.next()? {
                Ok(raw) => self.admit(raw),
                Err(err) => Err(err),
            };
            match result {
                Ok(Some(sample)) => return Some(Ok(sample)),
                Ok(None) => continue,
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            }
        }
        None
    }
}

impl SampleIter<'_> {
    /// Assigns the id, checks it is new, and applies the filters (`None` = filtered out).
    fn admit(&mut self, raw: RawRow) -> Result<Option<Sample>, DatasetError> {
        let id = sample_id(&raw, self.id_column.as_deref())?;
        if let Some(first) = self.seen.get(&id) {
            return Err(DatasetError::DuplicateId {
                first: first.clone(),
                id,
                second: raw.location,
            });
        }
        self.seen.insert(id.clone(), raw.location.clone());
        for filter in &self.filters {
            let value =
                (self.eval_filter)(&filter.expression, &raw.row).map_err(|message| DatasetError::FilterEval {
                    location: raw.location.clone(),
                    expression: filter.expression.clone(),
                    message,
                })?;
            if !filter.passes(&value, &raw.location)? {
                return Ok(None);
            }
        }
        Ok(Some(Sample {
            id,
            index: raw.index,
            row: raw.row,
        }))
    }
}

fn sample_id(raw: &RawRow, id_column: Option<&str>) -> Result<String, DatasetError> {
    let (column, value) = match id_column {
        Some(column) => match raw.row.get(column) {
            Some(value) => (column, value),
            None => {
                return Err(DatasetError::MissingId {
                    location: raw.location.clone(),
                    column: column.to_owned(),
                });
            }
        },
        None => match raw.row.get("sample_id") {
            Some(value) => ("sample_id", value),
            None => return Ok(raw.index.to_string()),
        },
    };
    match value {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(DatasetError::InvalidId {
            location: raw.location.clone(),
            column: column.to_owned(),
            found: describe_value(other),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Filters

struct CompiledFilter {
    expression: String,
    op: FilterOp,
    check: Check,
}

enum Check {
    Equals(Value),
    NotEquals(Value),
    Order(f64),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Exists,
    NotExists,
    IsTrue,
    IsFalse,
}

fn compile_filter(key: &str, index: usize, filter: &FilterSpec) -> Result<CompiledFilter, DatasetError> {
    let invalid = |problem: String| DatasetError::InvalidFilter {
        key: key.to_owned(),
        index,
        expression: filter.expression.clone(),
        problem,
    };
    if filter.expression.trim().is_empty() {
        return Err(invalid("`expression` is empty".into()));
    }
    let op = filter.op;
    let value = || -> Result<Value, DatasetError> {
        if filter.values.is_some() {
            return Err(invalid(format!("`{op}` takes `value`, not `values`")));
        }
        filter
            .value
            .clone()
            .ok_or_else(|| invalid(format!("`{op}` needs a `value`")))
    };
    let values = || -> Result<Vec<Value>, DatasetError> {
        if filter.value.is_some() {
            return Err(invalid(format!("`{op}` takes `values`, not `value`")));
        }
        filter
            .values
            .clone()
            .ok_or_else(|| invalid(format!("`{op}` needs a `values` list")))
    };
    let unary = || -> Result<(), DatasetError> {
        if filter.value.is_some() || filter.values.is_some() {
            return Err(invalid(format!("`{op}` takes neither `value` nor `values`")));
        }
        Ok(())
    };
    let check = match op {
        FilterOp::Equals => Check::Equals(value()?),
        FilterOp::NotEquals => Check::NotEquals(value()?),
        FilterOp::GreaterThan | FilterOp::LessThan | FilterOp::GreaterOrEqual | FilterOp::LessOrEqual => {
            let value = value()?;
            let bound = ordinal(&value).ok_or_else(|| {
                invalid(format!(
                    "`{op}` needs a number or boolean `value`, got {}",
                    describe_value(&value)
                ))
            })?;
            Check::Order(bound)
        }
        FilterOp::In => Check::In(values()?),
        FilterOp::NotIn => Check::NotIn(values()?),
        FilterOp::Exists => unary().map(|()| Check::Exists)?,
        FilterOp::NotExists => unary().map(|()| Check::NotExists)?,
        FilterOp::IsTrue => unary().map(|()| Check::IsTrue)?,
        FilterOp::IsFalse => unary().map(|()| Check::IsFalse)?,
    };
    Ok(CompiledFilter {
        expression: filter.expression.clone(),
        op,
        check,
    })
}

impl CompiledFilter {
    fn passes(&self, actual: &Value, location: &Location) -> Result<bool, DatasetError> {
        Ok(match &self.check {
            Check::Equals(expected) => json_eq(actual, expected),
            Check::NotEquals(expected) => !json_eq(actual, expected),
            Check::Order(bound) => {
                let Some(actual) = ordinal(actual) else {
                    return Err(DatasetError::FilterNotNumeric {
                        location: location.clone(),
                        expression: self.expression.clone(),
                        op: self.op,
                        found: describe_value(actual),
                    });
                };
                match self.op {
                    FilterOp::GreaterThan => actual > *bound,
                    FilterOp::LessThan => actual < *bound,
                    FilterOp::GreaterOrEqual => actual >= *bound,
                    // `Order` is only built for the four ordering ops.
                    _ => actual <= *bound,
                }
            }
            Check::In(values) => values.iter().any(|v| json_eq(actual, v)),
            Check::NotIn(values) => !values.iter().any(|v| json_eq(actual, v)),
            Check::Exists => !actual.is_null(),
            Check::NotExists => actual.is_null(),
            Check::IsTrue => truthy(actual),
            Check::IsFalse => !truthy(actual),
        })
    }
}

/// JSON equality where numbers compare by value, like Python's `1 == 1.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn ordinal(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) if s.eq_ignore_ascii_case("true") => true,
        Value::String(s) if s.eq_ignore_ascii_case("false") => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

// ---------------------------------------------------------------------------------------------
// Row sources

struct RawRow {
    location: Location,
    index: usize,
    row: Row,
}

type RowResult = Result<RawRow, DatasetError>;

fn open_file(path: &Path) -> Result<File, DatasetError> {
    File::open(path).map_err(|error| DatasetError::Open {
        path: path.to_owned(),
        error,
    })
}

struct CsvRows {
    path: Arc<Path>,
    headers: Vec<String>,
    records: csv::StringRecordsIntoIter<File>,
    index: usize,
}

impl CsvRows {
    fn open(path: PathBuf) -> Result<Self, DatasetError> {
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

fn csv_error(path: &Arc<Path>, err: &csv::Error) -> DatasetError {
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

struct JsonlRows {
    path: Arc<Path>,
    lines: std::io::Lines<BufReader<File>>,
    line: u64,
    index: usize,
}

impl JsonlRows {
    fn open(path: PathBuf) -> Result<Self, DatasetError> {
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
fn json_message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("{message} (column {})", err.column()),
        None => text,
    }
}

struct FolderRows {
    files: std::vec::IntoIter<(String, PathBuf)>,
    index: usize,
}

impl FolderRows {
    fn open(root: PathBuf, extension: Option<&str>) -> Result<Self, DatasetError> {
        let mut files = Vec::new();
        list_files(&root, "", &mut files)?;
        let wanted = extension.map(|e| format!(".{}", e.trim_start_matches('.').to_ascii_lowercase()));
        files.retain(|(rel, _)| {
            let lower = rel.to_ascii_lowercase();
            !lower.ends_with(".pdf") && wanted.as_ref().is_none_or(|ext| lower.ends_with(ext))
        });
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(FolderRows {
            files: files.into_iter(),
            index: 0,
        })
    }
}

fn list_files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), DatasetError> {
    let open_error = |error| DatasetError::Open {
        path: dir.to_owned(),
        error,
    };
    for entry in std::fs::read_dir(dir).map_err(open_error)? {
        let entry = entry.map_err(open_error)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(DatasetError::Read {
                location: Location {
                    path: path.into(),
                    line: None,
                },
                message: "file name is not valid UTF-8".into(),
            });
        };
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}{name}");
        let file_type = entry.file_type().map_err(open_error)?;
        if file_type.is_dir() {
            list_files(&path, &format!("{rel}/"), out)?;
        } else if file_type.is_file() || (file_type.is_symlink() && std::fs::metadata(&path).is_ok_and(|m| m.is_file()))
        {
            out.push((rel, path));
        }
    }
    Ok(())
}

impl Iterator for FolderRows {
    type Item = RowResult;

    fn next(&mut self) -> Option<RowResult> {
        let (rel, path) = self.files.next()?;
        let index = self.index;
        self.index += 1;
        Some(folder_row(rel, path, index))
    }
}

fn folder_row(rel: String, path: PathBuf, index: usize) -> RowResult {
    let bytes = std::fs::read(&path).map_err(|error| DatasetError::Open {
        path: path.clone(),
        error,
    })?;
    let sample_id = hex::encode(Sha256::digest(&bytes));
    let text = String::from_utf8(bytes).map_err(|_| DatasetError::NotUtf8 { path: path.clone() })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let (front, content) = match split_front_matter(text) {
        Some((yaml, content)) => (parse_front_matter(yaml, &path)?, content),
        None => (Map::new(), text),
    };
    let mut row = Row::new();
    row.insert("sample_id".into(), Value::String(sample_id));
    row.insert("file_name".into(), Value::String(rel));
    row.insert("content".into(), Value::String(content.to_owned()));
    for (key, value) in front {
        if !row.contains_key(&key) {
            row.insert(key, value);
        }
    }
    Ok(RawRow {
        location: Location {
            path: path.into(),
            line: None,
        },
        index,
        row,
    })
}

/// Splits `---\n<yaml>---\n<content>`; `None` when the text has no complete front matter.
fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let first_end = text.find('\n')?;
    if text[..first_end].trim_end() != "---" {
        return None;
    }
    let body = &text[first_end + 1..];
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&body[..offset], &body[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

fn parse_front_matter(yaml: &str, path: &Path) -> Result<Map<String, Value>, DatasetError> {
    if yaml.trim().is_empty() {
        return Ok(Map::new());
    }
    // The leading newline makes YAML error lines match the file's lines (front matter starts
    // on line 2). Strict booleans: the YAML 1.1 set here also includes `y`/`n`, which would
    // turn `tags: [x, y]` into `["x", true]`.
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options::<Map<String, Value>>(&format!("\n{yaml}"), options).map_err(|err| {
        DatasetError::FrontMatter {
            path: path.to_owned(),
            message: err.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    /// Stand-in for the Jinja evaluator: the expression is a column name, `sample.` optional.
    fn lookup(expression: &str, row: &Row) -> Result<Value, String> {
        if expression == "boom" {
            return Err("template error".into());
        }
        let name = expression.strip_prefix("sample.").unwrap_or(expression);
        Ok(row.get(name).cloned().unwrap_or(Value::Null))
    }

    fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::File::create(&path).unwrap().write_all(contents).unwrap();
        path
    }

    fn spec(yaml: &str) -> DatasetSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn collect(spec: &DatasetSpec, dir: &Path) -> Result<Vec<Sample>, DatasetError> {
        open(spec, dir, &lookup)?.collect()
    }

    fn ids(samples: &[Sample]) -> Vec<&str> {
        samples.iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn csv_rows_are_strings_with_index_ids() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "d.csv",
            "\u{feff}q,n,flag\nhi,1,True\n\"a, b\",2.5,False\n".as_bytes(),
        );
        let samples = collect(&spec("key: d\nsource: {type: local, file_path: d.csv}"), dir.path()).unwrap();
        assert_eq!(ids(&samples), ["0", "1"]);
        assert_eq!(
            Value::Object(samples[0].row.clone()),
            json!({"q": "hi", "n": "1", "flag": "True"})
        );
        assert_eq!(samples[1].row["q"], json!("a, b"));
        assert_eq!(samples[1].row["n"], json!("2.5"));
        assert_eq!(samples[1].index, 1);
    }

    #[test]
    fn csv_short_rows_get_null_and_long_rows_fail_with_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.csv", b"a,b\n1\n1,2,3\n");
        let mut it = open(&spec("key: d\nfile_path: d.csv"), dir.path(), &lookup).unwrap();
        let first = it.next().unwrap().unwrap();
        assert_eq!(Value::Object(first.row), json!({"a": "1", "b": null}));
        let err = it.next().unwrap().unwrap_err();
        assert!(
            err.to_string().ends_with("d.csv:3` has 3 fields but the header has 2"),
            "{err}"
        );
        assert!(it.next().is_none(), "iteration stops after an error");
    }

    #[test]
    fn csv_duplicate_header_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.csv", b"a,a\n1,2\n");
        let err = open(&spec("key: d\nfile_path: d.csv"), dir.path(), &lookup)
            .err()
            .unwrap();
        assert!(matches!(err, DatasetError::DuplicateColumn { ref column, .. } if column == "a"));
    }

    #[test]
    fn csv_invalid_utf8_names_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.csv", b"a\nok\n\xff\xfe\n");
        let results: Vec<_> = open(&spec("key: d\nfile_path: d.csv"), dir.path(), &lookup)
            .unwrap()
            .collect();
        assert_eq!(results.len(), 2);
        let err = results[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("d.csv:3`: invalid UTF-8"), "{err}");
    }

    #[test]
    fn jsonl_keeps_types_skips_blank_lines_and_uses_sample_id() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "d.jsonl",
            b"{\"sample_id\": \"q1\", \"n\": 1, \"ok\": true}\n\n   \n{\"sample_id\": 7, \"n\": 2.5}\r\n",
        );
        let samples = collect(&spec("key: d\nsource: {type: local, file_path: d.jsonl}"), dir.path()).unwrap();
        assert_eq!(ids(&samples), ["q1", "7"]);
        assert_eq!(samples[0].row["ok"], json!(true));
        assert_eq!(samples[1].row["n"], json!(2.5));
        assert_eq!(samples[1].index, 1);
    }

    #[test]
    fn jsonl_malformed_line_reports_physical_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.jsonl", b"{\"a\": 1}\n\n{\"a\": }\n{\"a\": 3}\n");
        let results: Vec<_> = open(&spec("key: d\nfile_path: d.jsonl"), dir.path(), &lookup)
            .unwrap()
            .collect();
        assert_eq!(results.len(), 2);
        let err = results[1].as_ref().unwrap_err();
        let DatasetError::InvalidJson { location, message } = err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(location.line, Some(3));
        assert!(location.path.ends_with("d.jsonl"));
        assert_eq!(message, "expected value (column 7)");
        assert!(err.to_string().starts_with("invalid JSON at `"), "{err}");
    }

    #[test]
    fn jsonl_non_object_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.jsonl", b"[1, 2]\n");
        let err = collect(&spec("key: d\nfile_path: d.jsonl"), dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("d.jsonl:1` is not a JSON object (found array `[1,2]`)"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_ids_name_both_lines() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "d.jsonl",
            b"{\"sample_id\": \"a\"}\n{\"sample_id\": \"b\"}\n{\"sample_id\": \"a\"}\n",
        );
        let err = collect(&spec("key: d\nfile_path: d.jsonl"), dir.path()).unwrap_err();
        let DatasetError::DuplicateId { id, first, second } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(id, "a");
        assert_eq!((first.line, second.line), (Some(1), Some(3)));
        // an explicit sample_id may also collide with another row's index id
        write(dir.path(), "e.jsonl", b"{\"x\": 1}\n{\"sample_id\": \"0\"}\n");
        let err = collect(&spec("key: e\nfile_path: e.jsonl"), dir.path()).unwrap_err();
        assert!(err.to_string().starts_with("duplicate sample id `0` at"), "{err}");
    }

    #[test]
    fn id_column_is_used_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.csv", b"qid,text,sample_id\nx1,a,s\nx2,b,s\n");
        let samples = collect(&spec("key: d\nfile_path: d.csv\nid_column: qid"), dir.path()).unwrap();
        assert_eq!(ids(&samples), ["x1", "x2"]);
        let err = collect(&spec("key: d\nfile_path: d.csv\nid_column: nope"), dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("d.csv:2` has no `nope` column for the sample id"),
            "{err}"
        );
        write(dir.path(), "e.jsonl", b"{\"id\": 1}\n{\"id\": null}\n");
        let err = collect(&spec("key: e\nfile_path: e.jsonl\nid_column: id"), dir.path()).unwrap_err();
        assert!(
            matches!(err, DatasetError::InvalidId { ref location, .. } if location.line == Some(2)),
            "{err}"
        );
    }

    #[test]
    fn index_ids_are_stable_across_filters() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.jsonl", b"{\"k\": 1}\n{\"k\": 2}\n{\"k\": 3}\n");
        let yaml = "key: d\nsource:\n  type: local\n  file_path: d.jsonl\n  filters:\n    - {expression: k, op: not_equals, value: 2}\n";
        let samples = collect(&spec(yaml), dir.path()).unwrap();
        assert_eq!(ids(&samples), ["0", "2"]);
        assert_eq!(samples[1].index, 2);
    }

    fn filtered(rows: &[Value], filters: &str) -> Result<Vec<String>, DatasetError> {
        let dir = tempfile::tempdir().unwrap();
        let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
        write(dir.path(), "d.jsonl", body.as_bytes());
        let yaml = format!("key: d\nsource:\n  type: local\n  file_path: d.jsonl\n  filters: {filters}\n");
        let samples = collect(&spec(&yaml), dir.path())?;
        Ok(samples.into_iter().map(|s| s.id).collect())
    }

    #[test]
    fn filter_ops() {
        let rows = [
            json!({"num": 1, "s": "a", "b": true, "t": "TRUE"}),
            json!({"num": 2.0, "s": "b", "b": false, "t": "false"}),
            json!({"num": 3, "s": "c", "t": ""}),
        ];
        let case = |filters: &str| filtered(&rows, filters).unwrap();
        assert_eq!(case("[{expression: num, op: equals, value: 2}]"), ["1"]); // 2.0 == 2
        assert_eq!(case("[{expression: s, op: equals, value: 'a'}]"), ["0"]);
        assert_eq!(case("[{expression: num, op: not_equals, value: 1}]"), ["1", "2"]);
        assert_eq!(case("[{expression: num, op: greater_than, value: 1}]"), ["1", "2"]);
        assert_eq!(case("[{expression: num, op: less_than, value: 2}]"), ["0"]);
        assert_eq!(case("[{expression: num, op: greater_or_equal, value: 2}]"), ["1", "2"]);
        assert_eq!(case("[{expression: num, op: less_or_equal, value: 2}]"), ["0", "1"]);
        assert_eq!(case("[{expression: s, op: in, values: [a, c]}]"), ["0", "2"]);
        assert_eq!(case("[{expression: s, op: not_in, values: [a, c]}]"), ["1"]);
        assert_eq!(case("[{expression: b, op: exists}]"), ["0", "1"]);
        assert_eq!(case("[{expression: sample.b, op: not_exists}]"), ["2"]);
        assert_eq!(case("[{expression: b, op: is_true}]"), ["0"]);
        assert_eq!(case("[{expression: b, op: is_false}]"), ["1", "2"]); // missing → null → falsy
        assert_eq!(case("[{expression: t, op: is_true}]"), ["0"]); // "TRUE" true; "false", "" false
        assert_eq!(case("[{expression: t, op: is_false}]"), ["1", "2"]);
        // booleans order as 0/1; a missing value (null) cannot be ordered
        let bools = [json!({"b": true}), json!({"b": false})];
        assert_eq!(
            filtered(&bools, "[{expression: b, op: greater_than, value: 0}]").unwrap(),
            ["0"]
        );
        let err = filtered(&rows, "[{expression: b, op: greater_than, value: 0}]").unwrap_err();
        assert!(matches!(err, DatasetError::FilterNotNumeric { ref found, .. } if found == "`null`"));
        // AND-combined
        assert_eq!(
            case("[{expression: num, op: greater_than, value: 1}, {expression: s, op: not_equals, value: c}]"),
            ["1"]
        );
    }

    #[test]
    fn equality_is_strict_between_strings_and_bools() {
        let rows = [json!({"f": "True"}), json!({"f": true})];
        assert_eq!(
            filtered(&rows, "[{expression: f, op: equals, value: true}]").unwrap(),
            ["1"]
        );
        assert_eq!(
            filtered(&rows, "[{expression: f, op: equals, value: 'True'}]").unwrap(),
            ["0"]
        );
    }

    #[test]
    fn ordering_on_strings_fails_with_expression_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.csv", b"num\n5\n");
        let yaml = "key: d\nsource:\n  type: local\n  file_path: d.csv\n  filters: [{expression: num, op: greater_than, value: 3}]\n";
        let err = collect(&spec(yaml), dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("filter `num` with `greater_than` needs a number or boolean, got string `\"5\"` at `"),
            "{text}"
        );
        assert!(text.contains("d.csv:2`"), "{text}");
        assert!(text.contains("hint: CSV values are strings"), "{text}");
    }

    #[test]
    fn evaluator_errors_are_reported_with_location() {
        let err = filtered(&[json!({"a": 1})], "[{expression: boom, op: exists}]").unwrap_err();
        assert!(err.to_string().starts_with("filter `boom` failed at `"), "{err}");
        assert!(err.to_string().ends_with("d.jsonl:1`: template error"), "{err}");
    }

    #[test]
    fn filter_shapes_are_validated_at_open() {
        let bad = [
            ("[{expression: num, op: equals}]", "`equals` needs a `value`"),
            (
                "[{expression: num, op: in, value: 1}]",
                "`in` takes `values`, not `value`",
            ),
            ("[{expression: num, op: in}]", "`in` needs a `values` list"),
            (
                "[{expression: num, op: exists, value: 1}]",
                "`exists` takes neither `value` nor `values`",
            ),
            (
                "[{expression: num, op: less_than, value: abc}]",
                "`less_than` needs a number or boolean `value`, got string `\"abc\"`",
            ),
            ("[{expression: '', op: exists}]", "`expression` is empty"),
        ];
        for (filters, expected) in bad {
            let err = filtered(&[json!({"num": 1})], filters).unwrap_err();
            assert!(err.to_string().starts_with("dataset `d`, `filters[0]`"), "{err}");
            assert!(err.to_string().ends_with(expected), "{err}");
        }
    }

    #[test]
    fn source_selection_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = collect(&spec("key: d"), dir.path()).unwrap_err();
        assert!(matches!(err, DatasetError::NoSource { .. }));
        let err = collect(
            &spec("key: d\nfile_path: a.csv\nsource: {type: local, file_path: a.csv}"),
            dir.path(),
        )
        .unwrap_err();
        assert!(matches!(err, DatasetError::BothSources { .. }));
        let err = collect(&spec("key: d\nsource: {type: local, file_path: a.json}"), dir.path()).unwrap_err();
        assert!(matches!(err, DatasetError::UnsupportedExtension { .. }), "{err}");
        let err = collect(&spec("key: d\nfile_path: missing.csv"), dir.path()).unwrap_err();
        assert!(err.to_string().starts_with("cannot open `"), "{err}");
        // filters are checked before the file is touched
        let yaml = "key: d\nsource: {type: local, file_path: missing.csv, filters: [{expression: x, op: in}]}";
        let err = collect(&spec(yaml), dir.path()).unwrap_err();
        assert!(matches!(err, DatasetError::InvalidFilter { .. }), "{err}");
        let err = collect(
            &spec("key: d\ngenerator_specification: {dataset_generator_key: g, dataset_generator_config: {}, num_samples: 1}"),
            dir.path(),
        )
        .unwrap_err();
        assert!(matches!(err, DatasetError::GeneratorUnsupported { .. }));
        let err = serde_saphyr::from_str::<DatasetSpec>("key: d\nfile_pth: a.csv").unwrap_err();
        assert!(err.to_string().contains("file_pth"), "{err}");
        let err = serde_saphyr::from_str::<DatasetSpec>("key: d\nsource: {type: url, url: x}").unwrap_err();
        assert!(err.to_string().contains("url"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_base_dir() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "data/d.jsonl", b"{\"a\": 1}\n");
        let samples = collect(&spec("key: d\nfile_path: data/d.jsonl"), dir.path()).unwrap();
        assert_eq!(samples.len(), 1);
        // absolute paths ignore base_dir
        let abs = dir.path().join("data/d.jsonl");
        let yaml = format!("key: d\nfile_path: '{}'", abs.display());
        let samples = collect(&spec(&yaml), Path::new("/nonexistent")).unwrap();
        assert_eq!(samples.len(), 1);
    }

    #[test]
    fn folder_source_rows_front_matter_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("docs");
        write(
            &root,
            "b.md",
            b"---\ntitle: Bee\ntags: [x, y]\ndraft: no\nok: true\nfile_name: spoof\n---\nBody of b\n",
        );
        write(&root, "a.txt", b"plain a");
        write(&root, "sub/c.md", b"---\nnot closed\nstill content");
        write(&root, "z.pdf", b"%PDF-1.4 binary");
        write(&root, ".hidden.md", b"secret");
        let yaml = "key: f\nsource: {type: folder, directory_path: docs}";
        let samples = collect(&spec(yaml), dir.path()).unwrap();
        let names: Vec<&str> = samples.iter().map(|s| s.row["file_name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a.txt", "b.md", "sub/c.md"]);
        // sha256("plain a")
        let expected_id = hex::encode(Sha256::digest(b"plain a"));
        assert_eq!(samples[0].id, expected_id);
        assert_eq!(samples[0].row["sample_id"], json!(expected_id));
        assert_eq!(samples[0].row["content"], json!("plain a"));
        let b = &samples[1].row;
        assert_eq!(
            Value::Object(b.clone()),
            json!({
                "sample_id": hex::encode(Sha256::digest(b"---\ntitle: Bee\ntags: [x, y]\ndraft: no\nok: true\nfile_name: spoof\n---\nBody of b\n")),
                "file_name": "b.md",
                "content": "Body of b\n",
                "title": "Bee",
                "tags": ["x", "y"],
                "draft": "no",
                "ok": true
            })
        );
        // unterminated front matter is content
        assert_eq!(samples[2].row["content"], json!("---\nnot closed\nstill content"));
        assert_eq!(samples[2].index, 2);
    }

    #[test]
    fn folder_extension_filter_and_row_filters() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.md", b"---\nlang: en\n---\nhello");
        write(dir.path(), "b.MD", b"---\nlang: de\n---\nhallo");
        write(dir.path(), "c.txt", b"text");
        let yaml = "key: f\nsource:\n  type: folder\n  directory_path: .\n  extension: .md\n  filters: [{expression: lang, op: equals, value: de}]\n";
        let samples = collect(&spec(yaml), dir.path()).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].row["file_name"], json!("b.MD"));
        assert_eq!(samples[0].row["content"], json!("hallo"));
        assert_eq!(samples[0].index, 1);
    }

    #[test]
    fn folder_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "bin.dat", b"\xff\x00\xfe");
        let err = collect(&spec("key: f\nsource: {type: folder, directory_path: .}"), dir.path()).unwrap_err();
        assert!(
            matches!(err, DatasetError::NotUtf8 { ref path } if path.ends_with("bin.dat")),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "x.md", b"---\ntitle: [unclosed\n---\nbody");
        let err = collect(&spec("key: f\nsource: {type: folder, directory_path: .}"), dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("invalid front matter in `"), "{text}");
        assert!(text.contains("x.md"), "{text}");

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "one.txt", b"same");
        write(dir.path(), "two.txt", b"same");
        let err = collect(&spec("key: f\nsource: {type: folder, directory_path: .}"), dir.path()).unwrap_err();
        let DatasetError::DuplicateId { first, second, .. } = &err else {
            panic!("unexpected {err:?}");
        };
        assert!(first.path.ends_with("one.txt") && second.path.ends_with("two.txt"));

        let err = collect(
            &spec("key: f\nsource: {type: folder, directory_path: nope}"),
            dir.path(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("cannot open `"), "{err}");
    }

    #[test]
    fn front_matter_splitting() {
        assert_eq!(split_front_matter("---\na: 1\n---\nbody"), Some(("a: 1\n", "body")));
        assert_eq!(
            split_front_matter("---\r\na: 1\r\n---\r\nbody"),
            Some(("a: 1\r\n", "body"))
        );
        assert_eq!(split_front_matter("---\n---\n"), Some(("", "")));
        assert_eq!(split_front_matter("--- \na: 1\n---"), Some(("a: 1\n", "")));
        assert_eq!(split_front_matter("text\n---\na: 1\n---\n"), None);
        assert_eq!(split_front_matter("---"), None);
    }

    #[test]
    fn rows_stream_lazily() {
        // the second line is broken; the first sample is still delivered before the error
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.jsonl", b"{\"a\": 1}\nnot json\n");
        let mut it = open(&spec("key: d\nfile_path: d.jsonl"), dir.path(), &lookup).unwrap();
        assert_eq!(it.next().unwrap().unwrap().row["a"], json!(1));
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }
}
