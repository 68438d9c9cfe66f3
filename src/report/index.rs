//! The report's `lfeval-index`: one entry per sample, stored by column (report-data.md §4), built
//! one record at a time in report order. Texts are shortened previews; the full records travel
//! in the detail chunks.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::redact::redact;
use crate::report::record_view::RecordView;
use crate::texts::Texts;

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

#[derive(Debug, Serialize)]
pub struct Latency {
    pub parts: &'static [LatencyPart],
    /// Milliseconds to a tenth, which `f32` holds exactly enough (to within 0.1 ms up to 27
    /// minutes) at half the size.
    pub values: Vec<Vec<f32>>,
    pub total: Vec<f32>,
}

#[derive(Debug, Serialize)]
pub struct ScoreColumn {
    pub key: String,
    pub scorer: String,
    pub field: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    pub values: ScoreValues,
}

/// A score column's cells: numbers, or positions in its categories; `null` where a sample has
/// no value.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ScoreValues {
    Numbers(Vec<Option<f64>>),
    Categories(Vec<Option<u32>>),
}

/// `lfeval-index`.
#[derive(Debug, Serialize)]
pub struct Index {
    pub n: usize,
    pub spec: Vec<u32>,
    pub id: Texts,
    pub pass: Vec<Option<u8>>,
    pub error: Vec<u32>,
    pub error_classes: Vec<String>,
    pub input: Texts,
    pub output: Texts,
    pub scores: Vec<ScoreColumn>,
    pub latency: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Vec<Option<f64>>>,
}

/// A score cell before the column's type is known.
enum Cell {
    Missing,
    Number(f64),
    /// The number of its text in its column's texts.
    Text(usize),
}

/// One score field's cells as they come, and the distinct texts among them.
struct CellColumn {
    scorer: String,
    field: String,
    cells: Vec<Cell>,
    texts: Distinct,
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
    fn into_texts(self) -> Vec<String> {
        let mut numbered: Vec<(String, usize)> = self.numbers.into_iter().collect();
        numbered.sort_unstable_by_key(|(_, k)| *k);
        numbered.into_iter().map(|(text, _)| text).collect()
    }
}

/// Builds the index row by row.
pub struct IndexBuilder {
    index: Index,
    /// Model key → whether its inference time is Python (`custom_inference`).
    python_models: HashMap<String, bool>,
    columns: Vec<CellColumn>,
    column_of: HashMap<(String, String), usize>,
    rows: usize,
}

impl IndexBuilder {
    /// A builder for an index of about `rows` samples.
    pub fn new(python_models: HashMap<String, bool>, rows: usize) -> IndexBuilder {
        IndexBuilder {
            index: Index {
                n: 0,
                spec: Vec::with_capacity(rows),
                id: Texts::with_capacity(rows),
                pass: Vec::new(),
                error: Vec::with_capacity(rows),
                error_classes: Vec::new(),
                input: Texts::with_capacity(rows),
                output: Texts::with_capacity(rows),
                scores: Vec::new(),
                latency: Latency {
                    parts: &PARTS,
                    values: vec![Vec::with_capacity(rows); PARTS.len()],
                    total: Vec::with_capacity(rows),
                },
                cost: None,
            },
            python_models,
            columns: Vec::new(),
            column_of: HashMap::new(),
            rows,
        }
    }

    pub fn add(&mut self, spec: usize, record: &RecordView, pass: Option<bool>, input: &str, output: &str) {
        let row = self.index.n;
        let ix = &mut self.index;
        ix.n += 1;
        ix.spec.push(u32::try_from(spec).unwrap_or(u32::MAX));
        ix.id.push(&redact(&record.key()));
        ix.pass.push(pass.map(u8::from));
        let error = match record.errors.first() {
            None => 0,
            Some(e) => {
                let class = e.class.as_str();
                match ix.error_classes.iter().position(|c| c == class) {
                    Some(k) => k + 1,
                    None => {
                        ix.error_classes.push(class.to_owned());
                        ix.error_classes.len()
                    }
                }
            }
        };
        ix.error.push(u32::try_from(error).unwrap_or(u32::MAX));
        ix.input.push(input);
        ix.output.push(output);
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
        for (column, v) in ix.latency.values.iter_mut().zip(parts) {
            column.push(round1(v));
        }
        ix.latency.total.push(round1(record.timings.total_ms));
        // Most runs have no prices: the column exists from the first sample with a cost on.
        if ix.cost.is_none() && record.cost_usd.is_some() {
            let mut costs = Vec::with_capacity(self.rows.max(row + 1));
            costs.resize(row, None);
            ix.cost = Some(costs);
        }
        if let Some(costs) = &mut ix.cost {
            costs.push(record.cost_usd);
        }
        for (scorer, scores) in &record.scores {
            for (field, value) in &scores.values {
                let key = (scorer.clone(), field.clone());
                let column = match self.column_of.get(&key) {
                    Some(&c) => c,
                    None => {
                        self.columns.push(CellColumn {
                            scorer: scorer.clone(),
                            field: field.clone(),
                            cells: Vec::new(),
                            texts: Distinct::default(),
                        });
                        self.column_of.insert(key, self.columns.len() - 1);
                        self.columns.len() - 1
                    }
                };
                let column = &mut self.columns[column];
                column.cells.resize_with(row, || Cell::Missing);
                let cell = match value {
                    Value::Number(n) => n.as_f64().map_or(Cell::Missing, Cell::Number),
                    Value::Bool(b) => Cell::Number(f64::from(u8::from(*b))),
                    Value::String(s) => Cell::Text(column.texts.number(redact(s))),
                    _ => Cell::Missing,
                };
                column.cells.push(cell);
            }
        }
    }

    pub fn finish(mut self) -> Index {
        let n = self.index.n;
        for CellColumn {
            scorer,
            field,
            mut cells,
            texts,
        } in self.columns
        {
            cells.resize_with(n, || Cell::Missing);
            let key = format!("{scorer}.{field}");
            if texts.is_empty() {
                let values = cells
                    .into_iter()
                    .map(|c| match c {
                        Cell::Number(x) => Some(x),
                        _ => None,
                    })
                    .collect();
                self.index.scores.push(ScoreColumn {
                    key,
                    scorer,
                    field,
                    kind: "number",
                    categories: None,
                    values: ScoreValues::Numbers(values),
                });
                continue;
            }
            // Categories in the order samples show them first, numbers among them as text.
            let texts = texts.into_texts();
            let mut categories = Distinct::default();
            let values = cells
                .into_iter()
                .map(|c| {
                    let k = match c {
                        Cell::Missing => return None,
                        Cell::Number(x) => categories.number(crate::eval::metric::python_str(&Value::from(x)).into()),
                        Cell::Text(k) => categories.number(texts[k].as_str().into()),
                    };
                    // A column cannot hold four billion distinct texts in memory.
                    u32::try_from(k).ok()
                })
                .collect();
            let categories = categories.into_texts();
            self.index.scores.push(ScoreColumn {
                key,
                scorer,
                field,
                kind: "category",
                categories: Some(categories),
                values: ScoreValues::Categories(values),
            });
        }
        self.index
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
        let mut builder = IndexBuilder::new(HashMap::new(), labels.len());
        for (i, label) in labels.iter().enumerate() {
            let scores = if label.is_null() {
                json!({})
            } else {
                json!({"judge": {"values": {"label": label}}})
            };
            let record: RecordView =
                serde_json::from_value(json!({"sample_id": i.to_string(), "scores": scores})).unwrap();
            builder.add(0, &record, None, "", "");
        }
        let index = builder.finish();
        let column = serde_json::to_value(&index.scores[0]).unwrap();
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
