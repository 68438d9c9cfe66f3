//! [`SampleRecord`]: everything one finished sample leaves behind, as one line of
//! `samples.jsonl`. The run writes it, resume and the summary read it back, and the task logs,
//! reports and comparisons are built from it, so its shape is the contract between them.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error_class::ErrorClass;
use crate::eval::dataset::Row;
use crate::model::io::Usage;
use crate::model::trace::{Call, Failure, Step};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// The task specification the sample belongs to.
    pub spec: String,
    pub sample_id: String,
    /// Position in the dataset; records are summarised in this order, whatever order they
    /// finished in.
    pub sample_index: u64,
    /// The row as the dataset gave it.
    pub sample: Row,
    /// The model input of the last solver call, or the whole conversation of a multi-turn one.
    pub model_input: Option<Value>,
    pub solver_output: Option<SolverOutput>,
    /// Scores by scorer name, in the task's scorer order.
    pub scores: IndexMap<String, Scores>,
    pub errors: Vec<SampleError>,
    pub usage: Usage,
    /// Every model call the sample made (solver, judges), with its evidence.
    pub calls: Vec<Call>,
    /// Attempts over every call, including retries.
    pub attempts: u32,
    pub retries: u32,
    /// Every call was answered from the response cache.
    pub cached: bool,
    pub timings: SampleTimings,
    /// USD the sample's calls to priced models cost; absent when none is priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl SampleRecord {
    /// A record with nothing but its identity, for samples to be filled in.
    pub fn new(spec: impl Into<String>, sample_id: impl Into<String>, sample_index: u64, sample: Row) -> SampleRecord {
        SampleRecord {
            spec: spec.into(),
            sample_id: sample_id.into(),
            sample_index,
            sample,
            model_input: None,
            solver_output: None,
            scores: IndexMap::new(),
            errors: Vec::new(),
            usage: Usage::default(),
            calls: Vec::new(),
            attempts: 0,
            retries: 0,
            cached: false,
            timings: SampleTimings::default(),
            cost_usd: None,
        }
    }

    /// A sample failed when anything went wrong: solving, or any of its scorers.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// What the solver produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SolverOutput {
    /// The target model's canonical output (e.g. `choices[0].message`).
    pub output: Option<Value>,
    /// The output's text, as scorers compare it.
    pub text: Option<String>,
    /// The conversation, ending with the model's answer.
    pub messages: Vec<Value>,
}

/// One scorer's scores for one sample: the values metrics fold, and metadata (a judge's
/// reasoning, captured output) that they ignore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub values: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// Where in the pipeline a sample failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Building the model input (a solver template) or running the solver's logic.
    Solver,
    /// The model chain's `process_input`.
    TransformInput,
    /// The endpoint or snippet call.
    RunInference,
    /// The model chain's `process_output` and output shape.
    TransformOutput,
    /// A scorer, including the judge calls it makes.
    Score,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Solver => "solver",
            Stage::TransformInput => "transform_input",
            Stage::RunInference => "run_inference",
            Stage::TransformOutput => "transform_output",
            Stage::Score => "score",
        }
    }
}

impl From<Step> for Stage {
    fn from(step: Step) -> Stage {
        match step {
            Step::TransformInput => Stage::TransformInput,
            Step::RunInference => Stage::RunInference,
            Step::TransformOutput => Stage::TransformOutput,
        }
    }
}

/// One thing that went wrong with a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleError {
    pub stage: Stage,
    pub class: ErrorClass,
    /// The scorer that failed (stage `score`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer: Option<String>,
    /// The model whose call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub message: String,
    /// `file:line` of the snippet or template line at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// A traceback, a rendered output or a judge's raw answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl SampleError {
    pub fn new(stage: Stage, class: ErrorClass, message: impl Into<String>) -> SampleError {
        SampleError {
            stage,
            class,
            scorer: None,
            model: None,
            message: message.into(),
            location: None,
            detail: None,
        }
    }

    /// A model chain failure of `model`, attributed to the step it failed at.
    pub fn from_failure(model: &str, failure: Failure) -> SampleError {
        SampleError {
            model: Some(model.to_owned()),
            location: failure.location,
            detail: failure.detail.or_else(|| failure.diagnostic.map(|d| d.to_string())),
            ..SampleError::new(failure.step.into(), failure.class, failure.message)
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> SampleError {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_location(mut self, location: Option<String>) -> SampleError {
        self.location = location;
        self
    }
}

/// Where a sample's time went, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SampleTimings {
    pub solver_ms: f64,
    pub score_ms: f64,
    pub total_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::trace::{CallPurpose, Trace};
    use serde_json::json;

    #[test]
    fn a_record_survives_a_round_trip_through_its_json_line() {
        let mut record = SampleRecord::new("spec-1", "7", 7, json!({"q": "2+2"}).as_object().cloned().unwrap());
        record.model_input = Some(json!({"messages": [{"role": "user", "content": "2+2"}]}));
        record.solver_output = Some(SolverOutput {
            output: Some(json!({"choices": [{"message": {"role": "assistant", "content": "4"}}]})),
            text: Some("4".into()),
            messages: vec![json!({"role": "assistant", "content": "4"})],
        });
        record.scores.insert(
            "exact".into(),
            Scores {
                values: json!({"is_correct": 1.0}).as_object().cloned().unwrap(),
                metadata: Map::new(),
            },
        );
        record.errors.push(SampleError {
            scorer: Some("judge".into()),
            location: Some("score.py:3".into()),
            ..SampleError::new(Stage::Score, ErrorClass::JudgeError, "no JSON")
        });
        record.calls.push(Call {
            model: "m".into(),
            purpose: CallPurpose::Judge,
            trace: Trace {
                request_body: Some("{}".into()),
                cached: true,
                ..Trace::default()
            },
        });
        record.attempts = 1;
        record.usage.num_prompt_tokens = 3;
        let line = serde_json::to_string(&record).unwrap();
        let back: SampleRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, record);
        // The stage and class are plain strings on disk, for `jq` and other tools.
        let raw: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(raw["errors"][0]["stage"], "score");
        assert_eq!(raw["errors"][0]["class"], "judge_error");
        assert_eq!(raw["calls"][0]["purpose"], "judge");
    }

    #[test]
    fn chain_steps_map_onto_pipeline_stages() {
        assert_eq!(Stage::from(Step::RunInference), Stage::RunInference);
        assert_eq!(Stage::from(Step::TransformOutput).as_str(), "transform_output");
    }
}
