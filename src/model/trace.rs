//! What happened during one model call: the [`Trace`] of every step (request body, raw
//! response, rendered output, attempts, timings), the [`Call`] a sample record keeps of it, and
//! the [`Failure`] a chain ends with, attributed to its [`Step`] and [`ErrorClass`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::error_class::ErrorClass;
use crate::millis;
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
        millis::add(&mut self.connect_ms, evidence.connect);
        self.first_byte_ms = evidence.first_byte.map(millis::of);
        self.first_token_ms = evidence.first_token.map(millis::of);
        if let Some(network) = evidence.network {
            millis::add(self.network_ms.get_or_insert(0.0), network);
        }
        if let Some(python) = evidence.python {
            millis::add(self.python_ms.get_or_insert(0.0), python);
        }
    }
}

/// Where the calls of a run went, for the summary: the mean of each figure over the calls that
/// have it (`first_token_ms` only over streamed ones), folded one call at a time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimingSummary {
    pub calls: u64,
    pub mean: Timings,
}

/// Folds [`Timings`] into a [`TimingSummary`] in constant memory.
#[derive(Debug, Clone, Default)]
pub struct TimingTotals {
    calls: u64,
    sum: Timings,
    /// Calls with `first_byte_ms`, `first_token_ms`, `network_ms`, `python_ms`.
    counts: [u64; 4],
}

impl TimingTotals {
    pub fn add(&mut self, t: &Timings) {
        self.calls += 1;
        let s = &mut self.sum;
        s.permit_wait_ms += t.permit_wait_ms;
        s.limiter_wait_ms += t.limiter_wait_ms;
        s.render_input_ms += t.render_input_ms;
        s.inference_ms += t.inference_ms;
        s.render_output_ms += t.render_output_ms;
        s.backoff_ms += t.backoff_ms;
        s.total_ms += t.total_ms;
        s.connect_ms += t.connect_ms;
        let optional = [t.first_byte_ms, t.first_token_ms, t.network_ms, t.python_ms];
        let sums = [
            &mut s.first_byte_ms,
            &mut s.first_token_ms,
            &mut s.network_ms,
            &mut s.python_ms,
        ];
        for ((value, sum), count) in optional.into_iter().zip(sums).zip(&mut self.counts) {
            if let Some(value) = value {
                *sum.get_or_insert(0.0) += value;
                *count += 1;
            }
        }
    }

    pub fn summary(&self) -> TimingSummary {
        let n = self.calls.max(1) as f64;
        let s = &self.sum;
        let mean = |sum: Option<f64>, count: u64| sum.map(|sum| millis::round(sum / count.max(1) as f64));
        TimingSummary {
            calls: self.calls,
            mean: Timings {
                permit_wait_ms: millis::round(s.permit_wait_ms / n),
                limiter_wait_ms: millis::round(s.limiter_wait_ms / n),
                render_input_ms: millis::round(s.render_input_ms / n),
                inference_ms: millis::round(s.inference_ms / n),
                render_output_ms: millis::round(s.render_output_ms / n),
                backoff_ms: millis::round(s.backoff_ms / n),
                total_ms: millis::round(s.total_ms / n),
                connect_ms: millis::round(s.connect_ms / n),
                first_byte_ms: mean(s.first_byte_ms, self.counts[0]),
                first_token_ms: mean(s.first_token_ms, self.counts[1]),
                network_ms: mean(s.network_ms, self.counts[2]),
                python_ms: mean(s.python_ms, self.counts[3]),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_totals_average_each_figure_over_the_calls_that_have_it() {
        let mut totals = TimingTotals::default();
        totals.add(&Timings {
            total_ms: 10.0,
            connect_ms: 4.0,
            first_byte_ms: Some(6.0),
            first_token_ms: Some(8.0),
            ..Timings::default()
        });
        totals.add(&Timings {
            total_ms: 20.0,
            first_byte_ms: Some(2.0),
            ..Timings::default()
        });
        let summary = totals.summary();
        assert_eq!(summary.calls, 2);
        assert_eq!(summary.mean.total_ms, 15.0);
        assert_eq!(summary.mean.connect_ms, 2.0);
        assert_eq!(summary.mean.first_byte_ms, Some(4.0));
        assert_eq!(summary.mean.first_token_ms, Some(8.0), "only the streamed call counts");
        assert_eq!(summary.mean.python_ms, None);
        // A record written before these fields existed still reads.
        let old: Timings = serde_json::from_str(r#"{"permit_wait_ms": 1.0, "total_ms": 2.0}"#).unwrap();
        assert_eq!(old.first_byte_ms, None);
        assert_eq!(old.connect_ms, 0.0);
    }
}
