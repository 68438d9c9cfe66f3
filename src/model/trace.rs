//! What happened during one model call: the [`Trace`] of every step (request body, raw
//! response, rendered output, attempts, timings), the [`Call`] a sample record keeps of it, and
//! the [`Failure`] a chain ends with, attributed to its [`Step`] and [`ErrorClass`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::error_class::ErrorClass;
use crate::model::connection::{Evidence, RawResponse};
use crate::python::HttpExchange;

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
    /// Opening connections (summed over attempts and requests; 0 when connections were reused).
    #[serde(skip_serializing_if = "is_zero")]
    pub connect_ms: f64,
    /// From sending the request to its response head, in the last attempt (for snippets: the
    /// first `lfeval.http` request of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_byte_ms: Option<f64>,
    /// From sending the request to the first event of a streamed response, in the last attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<f64>,
    /// Snippets: time inside `lfeval.http` requests (summed), part of `python_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_ms: Option<f64>,
    /// Snippets: time in the Python function (summed over attempts that returned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python_ms: Option<f64>,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl Timings {
    /// Adds one attempt's figures.
    pub fn add(&mut self, evidence: &Evidence) {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        self.connect_ms += ms(evidence.connect);
        self.first_byte_ms = evidence.first_byte.map(ms);
        self.first_token_ms = evidence.first_token.map(ms);
        if let Some(network) = evidence.network {
            *self.network_ms.get_or_insert(0.0) += ms(network);
        }
        if let Some(python) = evidence.python {
            *self.python_ms.get_or_insert(0.0) += ms(python);
        }
    }
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
    /// Requests a snippet made through `lfeval.http`, in every attempt.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpExchange>,
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
