//! What happened during one model call: the [`Trace`] of every step (request body, raw
//! response, rendered output, attempts, timings), the [`Call`] a sample record keeps of it, and
//! the [`Failure`] a chain ends with, attributed to its [`Stage`].

use serde::Serialize;
use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::model::connection::RawResponse;

/// The stages a failure is attributed to (the four steps of `model test`, minus the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    TransformInput,
    RunInference,
    TransformOutput,
}

impl Stage {
    pub fn title(self) -> &'static str {
        match self {
            Stage::TransformInput => "transform input",
            Stage::RunInference => "run inference",
            Stage::TransformOutput => "transform output",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub error: Option<String>,
    pub retryable: bool,
    pub elapsed_ms: f64,
}

/// What happened during one inference, step by step.
#[derive(Debug, Clone, Default, Serialize)]
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

#[derive(Debug, Clone)]
pub struct Failure {
    pub stage: Stage,
    pub message: String,
    /// Traceback or rendered output, for `--verbose` and result files.
    pub detail: Option<String>,
    pub diagnostic: Option<Diagnostic>,
    pub retryable: bool,
    /// What the snippet printed during the failed call (also part of `detail`).
    pub captured: String,
}

impl Failure {
    pub fn from_diagnostic(stage: Stage, d: Diagnostic) -> Failure {
        Failure {
            stage,
            message: d.message.clone(),
            detail: None,
            diagnostic: Some(d),
            retryable: false,
            captured: String::new(),
        }
    }
}

/// One model call made while solving or scoring a sample (AI GO!'s `direct_ios`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Call {
    pub model: String,
    pub purpose: &'static str,
    #[serde(flatten)]
    pub trace: Trace,
}
