//! The classes failures are grouped by: in the end-of-run error summary, in `summary.json`,
//! and in the report's filters. A class says what kind of thing went wrong, independent of
//! where (the stage) and of the exact message.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// A call ran out of its time budget.
    Timeout,
    /// The endpoint could not be reached (DNS, refused, reset, TLS).
    Connection,
    /// The adapter turned the endpoint's answer into an error (`{"error": ...}`), including
    /// 429s and 5xx responses that outlived their retries.
    ModelError,
    /// A Python snippet raised, returned the wrong type, or failed inside the runtime.
    SnippetError,
    /// A Jinja template (adapter, solver or scorer prompt) failed to render.
    TemplateError,
    /// A model input that does not have the shape its task needs.
    InvalidInput,
    /// An adapter produced an output that does not have the task's shape.
    InvalidOutput,
    /// A judge or labeler answer that could not be read, even after a reminder.
    JudgeError,
    /// A solver could not finish (a loop that never met its `terminate_if`).
    SolverError,
    /// A scorer could not score the sample (a missing field, an unknown label, ...).
    ScorerError,
    /// A response larger than the model's `max_response_bytes`.
    TooLarge,
    /// A snippet worker process exited or crashed during the call.
    WorkerExited,
    /// Anything else: a bug in lfeval or a configuration problem found late.
    Internal,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connection => "connection",
            ErrorClass::ModelError => "model_error",
            ErrorClass::SnippetError => "snippet_error",
            ErrorClass::TemplateError => "template_error",
            ErrorClass::InvalidInput => "invalid_input",
            ErrorClass::InvalidOutput => "invalid_output",
            ErrorClass::JudgeError => "judge_error",
            ErrorClass::SolverError => "solver_error",
            ErrorClass::ScorerError => "scorer_error",
            ErrorClass::TooLarge => "too_large",
            ErrorClass::WorkerExited => "worker_exited",
            ErrorClass::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
