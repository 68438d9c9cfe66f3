//! The parts of a `samples.jsonl` record ([`crate::eval::record::SampleRecord`]) the report, the
//! statistics and the comparison read. Deserializing only these skips the request and response
//! bodies that make up most of a record, which halves the time to read a big run, and keeps
//! working when records gain fields.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::eval::record::SampleTimings;
use crate::model::io::Usage;
use crate::model::trace::Timings;

#[derive(Debug, Clone, Deserialize)]
pub struct RecordView {
    pub sample_id: String,
    #[serde(default)]
    pub model_input: Option<Value>,
    #[serde(default)]
    pub solver_output: Option<OutputView>,
    #[serde(default)]
    pub scores: IndexMap<String, ScoresView>,
    #[serde(default)]
    pub errors: Vec<ErrorView>,
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub calls: Vec<CallView>,
    #[serde(default)]
    pub timings: SampleTimings,
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutputView {
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ScoresView {
    #[serde(default)]
    pub values: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorView {
    /// An [`crate::error_class::ErrorClass`] name, kept as text so classes added later still read.
    pub class: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CallView {
    pub model: String,
    #[serde(default)]
    pub timings: Timings,
}
