//! The report's `lfeval-index`: one entry per sample, stored by column (report-data.md §4), built
//! one record at a time in report order. Texts are shortened previews; the full records travel
//! in the detail chunks.

use std::collections::HashMap;

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

#[derive(Debug, Serialize)]
pub struct Latency {
    pub parts: &'static [LatencyPart],
    pub values: Vec<Vec<f64>>,
    pub total: Vec<f64>,
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
    pub values: Vec<Value>,
}

/// `lfeval-index`.
#[derive(Debug, Serialize)]
pub struct Index {
    pub n: usize,
    pub spec: Vec<usize>,
    pub id: Vec<String>,
    pub pass: Vec<Option<u8>>,
    pub error: Vec<usize>,
    pub error_classes: Vec<String>,
    pub input: Vec<String>,
    pub output: Vec<String>,
    pub scores: Vec<ScoreColumn>,
    pub latency: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Vec<Option<f64>>>,
}

/// A score cell before the column's type is known.
enum Cell {
    Missing,
    Number(f64),
    Text(String),
}

/// Builds the index row by row.
pub struct IndexBuilder {
    index: Index,
    /// Model key → whether its inference time is Python (`custom_inference`).
    python_models: HashMap<String, bool>,
    columns: Vec<(String, String, Vec<Cell>)>,
    column_of: HashMap<(String, String), usize>,
    any_cost: bool,
}

impl IndexBuilder {
    pub fn new(python_models: HashMap<String, bool>) -> IndexBuilder {
        IndexBuilder {
            index: Index {
                n: 0,
                spec: Vec::new(),
                id: Vec::new(),
                pass: Vec::new(),
                error: Vec::new(),
                error_classes: Vec::new(),
                input: Vec::new(),
                output: Vec::new(),
                scores: Vec::new(),
                latency: Latency {
                    parts: &PARTS,
                    values: vec![Vec::new(); PARTS.len()],
                    total: Vec::new(),
                },
                cost: Some(Vec::new()),
            },
            python_models,
            columns: Vec::new(),
            column_of: HashMap::new(),
            any_cost: false,
        }
    }

    pub fn add(&mut self, spec: usize, record: &RecordView, pass: Option<bool>, input: String, output: String) {
        let row = self.index.n;
        let ix = &mut self.index;
        ix.n += 1;
        ix.spec.push(spec);
        ix.id.push(redact(&record.key()).into_owned());
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
        ix.error.push(error);
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
        if let Some(costs) = &mut ix.cost {
            costs.push(record.cost_usd);
        }
        self.any_cost |= record.cost_usd.is_some();
        for (scorer, scores) in &record.scores {
            for (field, value) in &scores.values {
                let key = (scorer.clone(), field.clone());
                let column = match self.column_of.get(&key) {
                    Some(&c) => c,
                    None => {
                        self.columns.push((scorer.clone(), field.clone(), Vec::new()));
                        self.column_of.insert(key, self.columns.len() - 1);
                        self.columns.len() - 1
                    }
                };
                let cells = &mut self.columns[column].2;
                while cells.len() < row {
                    cells.push(Cell::Missing);
                }
                cells.push(match value {
                    Value::Number(n) => n.as_f64().map_or(Cell::Missing, Cell::Number),
                    Value::Bool(b) => Cell::Number(f64::from(u8::from(*b))),
                    Value::String(s) => Cell::Text(redact(s).into_owned()),
                    _ => Cell::Missing,
                });
            }
        }
    }

    pub fn finish(mut self) -> Index {
        let n = self.index.n;
        for (scorer, field, mut cells) in self.columns {
            while cells.len() < n {
                cells.push(Cell::Missing);
            }
            let texts = cells.iter().any(|c| matches!(c, Cell::Text(_)));
            let key = format!("{scorer}.{field}");
            if texts {
                let mut categories: Vec<String> = Vec::new();
                let values = cells
                    .into_iter()
                    .map(|c| {
                        let text = match c {
                            Cell::Missing => return Value::Null,
                            Cell::Number(x) => crate::eval::metric::python_str(&Value::from(x)),
                            Cell::Text(t) => t,
                        };
                        let k = match categories.iter().position(|c| *c == text) {
                            Some(k) => k,
                            None => {
                                categories.push(text);
                                categories.len() - 1
                            }
                        };
                        Value::from(k)
                    })
                    .collect();
                self.index.scores.push(ScoreColumn {
                    key,
                    scorer,
                    field,
                    kind: "category",
                    categories: Some(categories),
                    values,
                });
            } else {
                let values = cells
                    .into_iter()
                    .map(|c| match c {
                        Cell::Number(x) => Value::from(x),
                        _ => Value::Null,
                    })
                    .collect();
                self.index.scores.push(ScoreColumn {
                    key,
                    scorer,
                    field,
                    kind: "number",
                    categories: None,
                    values,
                });
            }
        }
        if !self.any_cost {
            self.index.cost = None;
        }
        self.index
    }
}

fn round1(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_collapse_whitespace_and_stop_at_the_limit() {
        assert_eq!(preview("a\n\n  b\tc"), "a b c");
        let long = "x".repeat(PREVIEW_CHARS + 10);
        let cut = preview(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS);
        assert!(cut.ends_with('…'));
    }
}
