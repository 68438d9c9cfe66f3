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
    pub trial: Option<u32>,
    #[serde(default)]
    pub part: Option<u32>,
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

/// A solver output as a line stores it: its text inline, or (absent) the content of its output,
/// which is inline or the output of call `output_call` (see [`crate::eval::record`]).
#[derive(Debug, Clone, Deserialize)]
pub struct OutputView {
    #[serde(default, deserialize_with = "crate::eval::record::present")]
    text: Option<Option<String>>,
    #[serde(default)]
    output_call: Option<usize>,
    #[serde(default)]
    output: Option<Value>,
}

impl RecordView {
    /// The record's identity within its specification: `7`, `7#t2`, `7#t2#p0`.
    pub fn key(&self) -> String {
        crate::eval::record::record_key(&self.sample_id, self.trial, self.part)
    }

    /// The solver's output text, as scorers compared it.
    pub fn output_text(&self) -> Option<&str> {
        let so = self.solver_output.as_ref()?;
        if let Some(text) = &so.text {
            return text.as_deref();
        }
        let output = match (&so.output, so.output_call) {
            (Some(output), _) => output,
            (None, Some(i)) => self.calls.get(i)?.output.as_ref()?,
            (None, None) => return None,
        };
        crate::eval::record::output_content(output)
    }
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
    /// The call's canonical output (not its raw response body), for the solver output a line
    /// stores by reference.
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub timings: Timings,
}
