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

mod csv_rows;
mod filter;
mod folder_rows;
mod jsonl_rows;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::diagnostic::describe_value;
use crate::texts::TextSet;

use csv_rows::CsvRows;
use filter::{CompiledFilter, compile_filter};
use folder_rows::FolderRows;
use jsonl_rows::JsonlRows;

/// One dataset row: column → value.
pub type Row = Map<String, Value>;

/// A `datasets:` entry.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
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
    Url {
        url: String,
        filters: Option<Vec<FilterSpec>>,
    },
    Huggingface {
        path: String,
        split: String,
        load_dataset_kwargs: Option<Value>,
        filters: Option<Vec<FilterSpec>>,
    },
    Langsmith {
        project: Option<String>,
        dataset: Option<String>,
        api_key: Option<String>,
        api_url: Option<String>,
        from_time: Option<String>,
        to_time: Option<String>,
        tags: Option<Vec<String>>,
        filter: Option<String>,
        limit: Option<u64>,
        filters: Option<Vec<FilterSpec>>,
    },
    Phoenix {
        project: String,
        from_time: Option<String>,
        to_time: Option<String>,
        trace_id: Option<Value>,
        session_id: Option<Value>,
        tags: Option<Vec<String>>,
        metadata: Option<Value>,
        limit: Option<u64>,
        api_key: Option<String>,
        base_url: Option<String>,
        filters: Option<Vec<FilterSpec>>,
    },
    ClaudeCode {
        path: Option<String>,
        session_id: Option<String>,
        from_time: Option<String>,
        to_time: Option<String>,
        limit: Option<u64>,
        filters: Option<Vec<FilterSpec>>,
    },
    InspectAi {
        path: String,
        limit: Option<u64>,
        filters: Option<Vec<FilterSpec>>,
    },
}

impl SourceSpec {
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceSpec::Local { .. } => "local",
            SourceSpec::Folder { .. } => "folder",
            SourceSpec::Url { .. } => "url",
            SourceSpec::Huggingface { .. } => "huggingface",
            SourceSpec::Langsmith { .. } => "langsmith",
            SourceSpec::Phoenix { .. } => "phoenix",
            SourceSpec::ClaudeCode { .. } => "claude_code",
            SourceSpec::InspectAi { .. } => "inspect_ai",
        }
    }

    /// Whether lfeval can read this source itself (local files and folders).
    pub fn is_local(&self) -> bool {
        matches!(self, SourceSpec::Local { .. } | SourceSpec::Folder { .. })
    }
}

/// One row filter: a Jinja `expression` compared with `op`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    pub expression: String,
    pub op: FilterOp,
    pub value: Option<Value>,
    pub values: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
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
        "dataset `{key}` is made by a dataset generator (`generator_specification`): dataset generators need the hosted AI GO! platform; lfeval does not run them; hint: generate the rows once, save them as `.jsonl` and use `source: {{type: local, file_path: ...}}`"
    )]
    GeneratorUnsupported { key: String },
    #[error(
        "dataset `{key}`: its source is `{kind}`, which lfeval cannot read yet; hint: export the rows to a `.jsonl` file (for example with `lf` or the source's own tools) and use `source: {{type: local, file_path: ...}}`"
    )]
    SourceUnsupported { key: String, kind: &'static str },
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

/// Whether `value` passes one filter (action rules use the dataset filters' operators).
pub fn filter_matches(key: &str, index: usize, spec: &FilterSpec, value: &Value) -> Result<bool, DatasetError> {
    let location = Location {
        path: Arc::from(Path::new(key)),
        line: None,
    };
    compile_filter(key, index, spec)?.passes(value, &location)
}

/// Evaluates a filter expression against a row; undefined results must come back as `null`.
pub type FilterEvaluator<'f> = &'f (dyn Fn(&str, &Row) -> Result<Value, String> + Sync);

/// Opens a dataset for streaming. `base_dir` is the directory of the YAML file that defined
/// it; relative paths resolve there. Filters are validated here, before any row is read.
pub fn open<'f>(
    spec: &DatasetSpec,
    base_dir: &Path,
    eval_filter: FilterEvaluator<'f>,
) -> Result<SampleIter<'f>, DatasetError> {
    let source = spec.effective_source()?;
    let filters = match &source {
        SourceSpec::Local { filters, .. } | SourceSpec::Folder { filters, .. } => filters,
        other => {
            return Err(DatasetError::SourceUnsupported {
                key: spec.key.clone(),
                kind: other.type_name(),
            });
        }
    };
    let filters = filters
        .iter()
        .flatten()
        .enumerate()
        .map(|(index, filter)| compile_filter(&spec.key, index, filter))
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Box<dyn Iterator<Item = RowResult> + Send> = match source {
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
        other => {
            return Err(DatasetError::SourceUnsupported {
                key: spec.key.clone(),
                kind: other.type_name(),
            });
        }
    };
    Ok(SampleIter {
        rows,
        filters,
        id_column: spec.id_column.clone(),
        eval_filter,
        seen: Some(SeenIds::default()),
        done: false,
    })
}

/// Samples of one dataset, in file order, filtered.
pub struct SampleIter<'f> {
    rows: Box<dyn Iterator<Item = RowResult> + Send>,
    filters: Vec<CompiledFilter>,
    id_column: Option<String>,
    eval_filter: FilterEvaluator<'f>,
    /// Every id so far and where it was; `None` once an earlier pass checked them.
    seen: Option<SeenIds>,
    done: bool,
}

/// The ids of a pass over a dataset, and where each was: ~25 bytes an id, where a map of
/// `String` to [`Location`] took over 100 at the start of every large run.
#[derive(Default)]
struct SeenIds {
    ids: TextSet,
    /// Each id's line, by its position in `ids` (`u64::MAX`: none).
    lines: Vec<u64>,
    /// `(position of the first id, file)` for each run of ids from one file.
    paths: Vec<(usize, Arc<Path>)>,
}

impl SeenIds {
    /// Adds `id`, seen at `location`; where it was first seen if it was already there.
    fn add(&mut self, id: &str, location: &Location) -> Result<(), Location> {
        let (row, added) = self.ids.insert(id);
        if !added {
            return Err(self.location(row));
        }
        self.lines.push(location.line.unwrap_or(u64::MAX));
        if self
            .paths
            .last()
            .is_none_or(|(_, path)| !Arc::ptr_eq(path, &location.path) && *path != location.path)
        {
            self.paths.push((row, Arc::clone(&location.path)));
        }
        Ok(())
    }

    fn location(&self, row: usize) -> Location {
        let run = self.paths.partition_point(|(first, _)| *first <= row);
        Location {
            path: Arc::clone(&self.paths[run - 1].1),
            line: Some(self.lines[row]).filter(|&line| line != u64::MAX),
        }
    }
}

impl SampleIter<'_> {
    /// For another pass over a dataset whose ids an earlier pass found unique: keeps no map of
    /// every id held through the run.
    pub fn ids_checked(mut self) -> Self {
        self.seen = None;
        self
    }
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
        if let Some(seen) = &mut self.seen
            && let Err(first) = seen.add(&id, &raw.location)
        {
            return Err(DatasetError::DuplicateId {
                first,
                id,
                second: raw.location,
            });
        }
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

pub(super) struct RawRow {
    pub(super) location: Location,
    pub(super) index: usize,
    pub(super) row: Row,
}

pub(super) type RowResult = Result<RawRow, DatasetError>;

pub(super) fn open_file(path: &Path) -> Result<File, DatasetError> {
    File::open(path).map_err(|error| DatasetError::Open {
        path: path.to_owned(),
        error,
    })
}
