//! What happened during one model call: the [`Trace`] of every step (request body, raw
//! response, rendered output, attempts, timings), the [`Call`] a sample record keeps of it, and
//! the [`Failure`] a chain ends with, attributed to its [`Step`] and [`ErrorClass`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::error_class::ErrorClass;
use crate::model::connection::RawResponse;

/// The steps of the chain a failure is attributed to (the four steps of `model test`, minus
/// the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    TransformInput,
    RunInference,
    TransformOutput,
}

impl Step {
    pub fn title(self) -> &'static str {
        match self {
            Step::TransformInput => "transform input",
            Step::RunInference => "run inference",
            Step::TransformOutput => "transform output",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// Waiting for a concurrency permit (summed over attempts).
    pub permit_wait_ms: f64,
    /// Waiting for the rate limiter or a `Retry-After` pause.
    pub limiter_wait_ms: f64,
    pub render_input_ms: f64,
    /// Time in the endpoint: the HTTP round trip, or the Python function.
    pub inference_ms: f64,
    pub render_output_ms: f64,
    /// Sleeping between attempts.
    pub backoff_ms: f64,
    pub total_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub error: Option<String>,
    pub retryable: bool,
    pub elapsed_ms: f64,
}

/// What happened during one inference, step by step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Trace {
    pub request_body: Option<String>,
    pub response: Option<RawResponse>,
    pub rendered_output: Option<String>,
    pub output: Option<Value>,
    pub attempts: Vec<Attempt>,
    pub timings: Timings,
    /// The response came from the cache; no call was made.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// How a model call chain ended when it did not produce an output.
#[derive(Debug, Clone)]
pub struct Failure {
    pub step: Step,
    pub class: ErrorClass,
    pub message: String,
    /// Traceback or rendered output, for `--verbose` and result files.
    pub detail: Option<String>,
    /// `file:line` of the snippet or template line that failed, when known.
    pub location: Option<String>,
    pub diagnostic: Option<Diagnostic>,
    pub retryable: bool,
    /// What the snippet printed during the failed call (also part of `detail`).
    pub captured: String,
}

impl Failure {
    pub fn new(step: Step, class: ErrorClass, message: impl Into<String>) -> Failure {
        Failure {
            step,
            class,
            message: message.into(),
            detail: None,
            location: None,
            diagnostic: None,
            retryable: false,
            captured: String::new(),
        }
    }

    /// A template failure: the diagnostic carries the file, line and excerpt.
    pub fn from_diagnostic(step: Step, d: Diagnostic) -> Failure {
        Failure {
            location: d.location.as_ref().map(|l| format!("{}:{}", l.file, l.line)),
            diagnostic: Some(d.clone()),
            ..Failure::new(step, ErrorClass::TemplateError, d.message)
        }
    }
}

/// Why a sample called a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallPurpose {
    /// The evaluated model, called by the solver.
    Solver,
    /// Another model producing a message inside a multi-turn solver.
    GenerateMessage,
    /// A judge or labeler model, called by a scorer.
    Judge,
}

/// One model call made while solving or scoring a sample (AI GO!'s `direct_ios`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub model: String,
    pub purpose: CallPurpose,
    #[serde(flatten)]
    pub trace: Trace,
}
