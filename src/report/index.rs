//! The report's `lfeval-index`: one entry per sample, stored by column, built
//! one record at a time in report order. Texts are shortened previews; the full records travel
//! in the detail chunks.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::redact::redact;
use crate::report::record_view::RecordView;

/// Previews are cut to this many characters.
pub const PREVIEW_CHARS: usize = 160;

/// A whitespace-collapsed preview of `text`, at most [`PREVIEW_CHARS`] characters, masked.
pub fn preview(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let collapsed = redact(&collapsed).into_owned();
    if collapsed.chars().count() <= PREVIEW_CHARS {
        return collapsed;
    }
    let mut cut: String = collapsed.chars().take(PREVIEW_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// The input a person recognises a sample by: the last user message, or the whole model input.
pub fn input_text(record: &RecordView) -> String {
    let Some(input) = &record.model_input else {
        return String::new();
    };
    let last_user = input
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| {
            messages
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content"));
    match last_user {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => input.to_string(),
    }
}

pub fn output_text(record: &RecordView) -> String {
    record.output_text().unwrap_or_default().to_owned()
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyPart {
    pub key: &'static str,
    pub label: &'static str,
}

/// The parts latency is split into; `python` and `network` are both a call's `inference_ms`,
/// told apart by the model's connection type.
pub const PARTS: [LatencyPart; 6] = [
    LatencyPart {
        key: "permit_wait",
        label: "Permit wait",
    },
    LatencyPart {
        key: "limiter_wait",
        label: "Limiter wait",
    },
    LatencyPart {
        key: "render",
        label: "Rendering",
    },
    LatencyPart {
        key: "python",
        label: "Python",
    },
    LatencyPart {
        key: "network",
        label: "Network",
    },
    LatencyPart {
        key: "backoff",
        label: "Backoff",
    },
];

/// A JSON array written to an unnamed file as its elements come: a column of a large run costs
/// a buffer, not a value per sample.
struct Spilled {
    out: BufWriter<File>,
    len: usize,
}

impl Spilled {
    fn new(dir: &Path) -> io::Result<Spilled> {
        Ok(Spilled {
            out: BufWriter::new(tempfile::tempfile_in(dir)?),
            len: 0,
        })
    }

    fn push(&mut self, value: &(impl Serialize + ?Sized)) -> io::Result<()> {
        if self.len > 0 {
            self.out.write_all(b",")?;
        }
        self.len += 1;
        serde_json::to_writer(&mut self.out, value).map_err(io::Error::from)
    }

    /// The array, `[` to `]`.
    fn write_to(self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(b"[")?;
        io::copy(&mut reopen(self.out)?, out)?;
        out.write_all(b"]")
    }
}

/// The file behind `out`, flushed and read from its start.
fn reopen(out: BufWriter<File>) -> io::Result<BufReader<File>> {
    let mut file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.rewind()?;
    Ok(BufReader::new(file))
}

/// A score cell before the column's type is known.
#[derive(Clone, Copy)]
enum Cell {
    Missing,
    Number(f64),
    /// The number of its text in its column's texts.
    Text(usize),
}

impl Cell {
    const SIZE: usize = 9;

    fn encode(self) -> [u8; Cell::SIZE] {
        let (tag, bits) = match self {
            Cell::Missing => (0, 0),
            Cell::Number(x) => (1, x.to_bits()),
            Cell::Text(k) => (2, k as u64),
        };
        let mut bytes = [tag; Cell::SIZE];
        bytes[1..].copy_from_slice(&bits.to_le_bytes());
        bytes
    }

    fn decode(bytes: [u8; Cell::SIZE]) -> Cell {
        let mut bits = [0; 8];
        bits.copy_from_slice(&bytes[1..]);
        let bits = u64::from_le_bytes(bits);
        match bytes[0] {
            1 => Cell::Number(f64::from_bits(bits)),
            2 => Cell::Text(usize::try_from(bits).unwrap_or(usize::MAX)),
            _ => Cell::Missing,
        }
    }
}

/// One score field's cells as they come (in an unnamed file, nine bytes each), and the
/// distinct texts among them.
struct CellColumn {
    scorer: String,
    field: String,
    cells: BufWriter<File>,
    len: usize,
    texts: Distinct,
}

impl CellColumn {
    fn push(&mut self, cell: Cell) -> io::Result<()> {
        self.len += 1;
        self.cells.write_all(&cell.encode())
    }

    /// Every cell, in row order, `n` in all (missing ones at the end for rows it never saw).
    fn for_each(cells: &mut BufReader<File>, n: usize, mut each: impl FnMut(Cell) -> io::Result<()>) -> io::Result<()> {
        cells.rewind()?;
        let mut bytes = [0; Cell::SIZE];
        for _ in 0..n {
            let cell = match cells.read_exact(&mut bytes) {
                Ok(()) => Cell::decode(bytes),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Cell::Missing,
                Err(e) => return Err(e),
            };
            each(cell)?;
        }
        Ok(())
    }

    /// `{"key":…,"scorer":…,"field":…,"type":…,["categories":…,]"values":[…]}` for `n` rows:
    /// numbers, or (once the column holds a text) positions in its categories, in the order
    /// samples show them, numbers among them as text.
    fn write_json(self, n: usize, out: &mut impl Write) -> io::Result<()> {
        #[derive(Serialize)]
        struct Head<'a> {
            key: String,
            scorer: &'a str,
            field: &'a str,
            #[serde(rename = "type")]
            kind: &'static str,
        }
        let numbers = self.texts.is_empty();
        let head = Head {
            key: format!("{}.{}", self.scorer, self.field),
            scorer: &self.scorer,
            field: &self.field,
            kind: if numbers { "number" } else { "category" },
        };
        let head = serde_json::to_vec(&head)?;
        out.write_all(&head[..head.len() - 1])?;
        let mut cells = reopen(self.cells)?;
        let mut first = true;
        let mut comma = |out: &mut dyn Write| -> io::Result<()> {
            if !std::mem::take(&mut first) {
                out.write_all(b",")?;
            }
            Ok(())
        };
        if numbers {
            out.write_all(br#","values":["#)?;
            CellColumn::for_each(&mut cells, n, |cell| {
                comma(out)?;
                match cell {
                    Cell::Number(x) => serde_json::to_writer(&mut *out, &x).map_err(io::Error::from),
                    _ => out.write_all(b"null"),
                }
            })?;
            return out.write_all(b"]}");
        }
        let texts = self.texts.into_texts();
        let mut categories = Distinct::default();
        let category_of = |categories: &mut Distinct, cell: Cell| match cell {
            Cell::Missing => None,
            Cell::Number(x) => Some(categories.number(crate::eval::metric::python_str(&Value::from(x)).into())),
            Cell::Text(k) => Some(categories.number(texts[k].as_str().into())),
        };
        // Numbered in a first pass, since the categories come before the values.
        CellColumn::for_each(&mut cells, n, |cell| {
            category_of(&mut categories, cell);
            Ok(())
        })?;
        out.write_all(br#","categories":"#)?;
        serde_json::to_writer(&mut *out, &categories.texts())?;
        out.write_all(br#","values":["#)?;
        CellColumn::for_each(&mut cells, n, |cell| {
            comma(out)?;
            // A column cannot hold four billion distinct texts in memory.
            let k = category_of(&mut categories, cell).and_then(|k| u32::try_from(k).ok());
            serde_json::to_writer(&mut *out, &k).map_err(io::Error::from)
        })?;
        out.write_all(b"]}")
    }
}

/// Distinct texts, numbered in the order they first come: a free-text field may have as many as
/// there are samples, so they are found by hash, not by a search of the list.
#[derive(Default)]
struct Distinct {
    numbers: HashMap<String, usize>,
}

impl Distinct {
    fn number(&mut self, text: Cow<'_, str>) -> usize {
        if let Some(&k) = self.numbers.get(text.as_ref()) {
            return k;
        }
        let k = self.numbers.len();
        self.numbers.insert(text.into_owned(), k);
        k
    }

    fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }

    /// The texts in the order they were numbered.
    fn texts(&self) -> Vec<&str> {
        let mut numbered: Vec<(&str, usize)> = self.numbers.iter().map(|(t, k)| (t.as_str(), *k)).collect();
        numbered.sort_unstable_by_key(|(_, k)| *k);
        numbered.into_iter().map(|(text, _)| text).collect()
    }

    fn into_texts(self) -> Vec<String> {
        let mut numbered: Vec<(String, usize)> = self.numbers.into_iter().collect();
        numbered.sort_unstable_by_key(|(_, k)| *k);
        numbered.into_iter().map(|(text, _)| text).collect()
    }
}

/// `lfeval-index`, built one sample at a time with its columns in unnamed files, written out
/// by [`Index::write_json`].
pub struct Index {
    dir: PathBuf,
    pub n: usize,
    spec: Spilled,
    id: Spilled,
    /// Filled in once the sample table knows each sample's outcome.
    pub pass: Vec<Option<u8>>,
    error: Spilled,
    error_classes: Vec<String>,
    input: Spilled,
    output: Spilled,
    /// Milliseconds to a tenth, which `f32` holds exactly enough (to within 0.1 ms up to 27
    /// minutes) at half the size; one column per part of [`PARTS`].
    latency: Vec<Spilled>,
    total: Spilled,
    cost: Option<Spilled>,
    scores: Vec<CellColumn>,
    /// Model key → whether its inference time is Python (`custom_inference`).
    python_models: HashMap<String, bool>,
    column_of: HashMap<(String, String), usize>,
}

impl Index {
    /// An empty index whose columns go to unnamed files in `dir`.
    pub fn new(dir: &Path, python_models: HashMap<String, bool>) -> io::Result<Index> {
        Ok(Index {
            dir: dir.to_path_buf(),
            n: 0,
            spec: Spilled::new(dir)?,
            id: Spilled::new(dir)?,
            pass: Vec::new(),
            error: Spilled::new(dir)?,
            error_classes: Vec::new(),
            input: Spilled::new(dir)?,
            output: Spilled::new(dir)?,
            latency: PARTS.iter().map(|_| Spilled::new(dir)).collect::<io::Result<_>>()?,
            total: Spilled::new(dir)?,
            cost: None,
            scores: Vec::new(),
            python_models,
            column_of: HashMap::new(),
        })
    }

    pub fn add(&mut self, spec: usize, record: &RecordView, input: &str, output: &str) -> io::Result<()> {
        let row = self.n;
        self.n += 1;
        self.spec.push(&u32::try_from(spec).unwrap_or(u32::MAX))?;
        self.id.push(redact(&record.key()).as_ref())?;
        let error = match record.errors.first() {
            None => 0,
            Some(e) => {
                let class = e.class.as_str();
                match self.error_classes.iter().position(|c| c == class) {
                    Some(k) => k + 1,
                    None => {
                        self.error_classes.push(class.to_owned());
                        self.error_classes.len()
                    }
                }
            }
        };
        self.error.push(&u32::try_from(error).unwrap_or(u32::MAX))?;
        self.input.push(input)?;
        self.output.push(output)?;
        let mut parts = [0.0f64; PARTS.len()];
        for call in &record.calls {
            let t = &call.timings;
            parts[0] += t.permit_wait_ms;
            parts[1] += t.limiter_wait_ms;
            parts[2] += t.render_input_ms + t.render_output_ms;
            let python = self.python_models.get(&call.model).copied().unwrap_or(false);
            parts[if python { 3 } else { 4 }] += t.inference_ms;
            parts[5] += t.backoff_ms;
        }
        for (column, v) in self.latency.iter_mut().zip(parts) {
            column.push(&round1(v))?;
        }
        self.total.push(&round1(record.timings.total_ms))?;
        // Most runs have no prices: the column exists from the first sample with a cost on.
        if self.cost.is_none() && record.cost_usd.is_some() {
            let mut costs = Spilled::new(&self.dir)?;
            for _ in 0..row {
                costs.push(&None::<f64>)?;
            }
            self.cost = Some(costs);
        }
        if let Some(costs) = &mut self.cost {
            costs.push(&record.cost_usd)?;
        }
        for (scorer, scores) in &record.scores {
            for (field, value) in &scores.values {
                let key = (scorer.clone(), field.clone());
                let column = match self.column_of.get(&key) {
                    Some(&c) => c,
                    None => {
                        self.scores.push(CellColumn {
                            scorer: scorer.clone(),
                            field: field.clone(),
                            cells: BufWriter::new(tempfile::tempfile_in(&self.dir)?),
                            len: 0,
                            texts: Distinct::default(),
                        });
                        self.column_of.insert(key, self.scores.len() - 1);
                        self.scores.len() - 1
                    }
                };
                let column = &mut self.scores[column];
                while column.len < row {
                    column.push(Cell::Missing)?;
                }
                let cell = match value {
                    Value::Number(n) => n.as_f64().map_or(Cell::Missing, Cell::Number),
                    Value::Bool(b) => Cell::Number(f64::from(u8::from(*b))),
                    Value::String(s) => Cell::Text(column.texts.number(redact(s))),
                    _ => Cell::Missing,
                };
                column.push(cell)?;
            }
        }
        Ok(())
    }

    /// The whole index as one JSON object, its columns streamed from their files.
    pub fn write_json(self, out: &mut impl Write) -> io::Result<()> {
        let n = self.n;
        write!(out, r#"{{"n":{n},"spec":"#)?;
        self.spec.write_to(out)?;
        out.write_all(br#","id":"#)?;
        self.id.write_to(out)?;
        out.write_all(br#","pass":"#)?;
        serde_json::to_writer(&mut *out, &self.pass)?;
        out.write_all(br#","error":"#)?;
        self.error.write_to(out)?;
        out.write_all(br#","error_classes":"#)?;
        serde_json::to_writer(&mut *out, &self.error_classes)?;
        out.write_all(br#","input":"#)?;
        self.input.write_to(out)?;
        out.write_all(br#","output":"#)?;
        self.output.write_to(out)?;
        out.write_all(br#","scores":["#)?;
        for (i, column) in self.scores.into_iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            column.write_json(n, out)?;
        }
        out.write_all(br#"],"latency":{"parts":"#)?;
        serde_json::to_writer(&mut *out, &PARTS)?;
        out.write_all(br#","values":["#)?;
        for (i, column) in self.latency.into_iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            column.write_to(out)?;
        }
        out.write_all(br#"],"total":"#)?;
        self.total.write_to(out)?;
        out.write_all(b"}")?;
        if let Some(cost) = self.cost {
            out.write_all(br#","cost":"#)?;
            cost.write_to(out)?;
        }
        out.write_all(b"}")
    }
}

fn round1(ms: f64) -> f32 {
    ((ms * 10.0).round() / 10.0) as f32
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_scores_become_categories_in_the_order_samples_show_them() {
        let labels = [json!("B"), json!("A"), json!(1), Value::Null, json!("B")];
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::new(dir.path(), HashMap::new()).unwrap();
        for (i, label) in labels.iter().enumerate() {
            let scores = if label.is_null() {
                json!({})
            } else {
                json!({"judge": {"values": {"label": label}}})
            };
            let record: RecordView =
                serde_json::from_value(json!({"sample_id": i.to_string(), "scores": scores})).unwrap();
            index.add(0, &record, "", "").unwrap();
        }
        index.pass = vec![None; labels.len()];
        let mut json = Vec::new();
        index.write_json(&mut json).unwrap();
        let json: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["n"], 5);
        assert_eq!(json["id"], json!(["0", "1", "2", "3", "4"]));
        assert_eq!(json["latency"]["values"].as_array().unwrap().len(), PARTS.len());
        let column = &json["scores"][0];
        assert_eq!(column["key"], "judge.label");
        assert_eq!(column["type"], "category");
        assert_eq!(column["categories"], json!(["B", "A", "1.0"]));
        assert_eq!(column["values"], json!([0, 1, 2, null, 0]));
    }

    #[test]
    fn previews_collapse_whitespace_and_stop_at_the_limit() {
        assert_eq!(preview("a\n\n  b\tc"), "a b c");
        let long = "x".repeat(PREVIEW_CHARS + 10);
        let cut = preview(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS);
        assert!(cut.ends_with('…'));
    }
}
