//! `python` scorers: `compute_scores(sample, solver_output)` in the embedded interpreter, loaded
//! once per task specification and called once per sample.

use std::time::Duration;

use serde_json::{Value, json};

use crate::error_class::ErrorClass;
use crate::eval::record::{SampleError, Scores, Stage};
use crate::python::{CallErrorKind, PythonRuntime, ReturnKind, Snippet, SnippetSpec};
use crate::yaml::SourceText;

use super::ScoreContext;

/// How long one `compute_scores` call may run.
const SCORE_TIMEOUT: Duration = Duration::from_secs(60);

/// Loads a scorer's `compute_scores` snippet.
pub fn load(
    name: &str,
    snippet: &SourceText,
    task_key: &str,
    python: &PythonRuntime,
) -> Result<Snippet, crate::diagnostic::Diagnostic> {
    let spec = SnippetSpec {
        owner: format!("scorer `{name}` of task `{task_key}`"),
        file: snippet.file.clone(),
        source: snippet.text.clone(),
        display_source: None,
        line_offset: snippet.line_offset,
        function: "compute_scores".to_owned(),
        arities: vec![1, 2],
        returns: ReturnKind::Json,
        workers: 4,
        isolation: crate::python::Isolation::InProcess,
        max_return_bytes: None,
    };
    python
        .load_snippet(spec)
        .map_err(|e| crate::model::connection::snippet::load_diagnostic(&e, Some(snippet)))
}

pub async fn score(snippet: &Snippet, cx: &mut ScoreContext<'_>) -> Result<Scores, SampleError> {
    let Some(python) = cx.python else {
        return Err(SampleError::new(
            Stage::Score,
            ErrorClass::Internal,
            "internal error: the python runtime is not started",
        ));
    };
    let args = vec![Value::Object(cx.sample.clone()), cx.solver_output_value()];
    let out = python.call(snippet, args, SCORE_TIMEOUT).await.map_err(|e| {
        let class = match &*e.kind {
            CallErrorKind::Timeout { .. } => ErrorClass::Timeout,
            _ => ErrorClass::SnippetError,
        };
        let location = e.kind.frames().last().map(|f| format!("{}:{}", f.file, f.line));
        let mut detail = match &*e.kind {
            CallErrorKind::Raised { traceback, .. } => traceback.clone(),
            _ => String::new(),
        };
        if !e.captured.is_empty() {
            detail.push_str(&format!("\ncaptured output:\n{}", e.captured.trim_end()));
        }
        // The owner (`scorer ... of task ...`) is already named by the error's scorer field.
        let message = match &*e.kind {
            CallErrorKind::Raised { exc_type, message, .. } if message.is_empty() => exc_type.clone(),
            CallErrorKind::Raised { exc_type, message, .. } => format!("{exc_type}: {message}"),
            other => format!("{} {other}", e.function),
        };
        let error = SampleError::new(Stage::Score, class, message).with_location(location);
        if detail.trim().is_empty() {
            error
        } else {
            error.with_detail(detail.trim().to_owned())
        }
    })?;
    scores_from(out.value, out.captured)
}

/// A `compute_scores` return value as scores: a flat dict, or `{"scores": …, "metadata": …}`.
pub fn scores_from(value: Value, captured: String) -> Result<Scores, SampleError> {
    let mut scores = Scores::default();
    if !captured.is_empty() {
        scores.metadata.insert("captured_output".into(), json!(captured));
    }
    match value {
        Value::Object(mut map) if map.contains_key("scores") => {
            if let Some(Value::Object(values)) = map.remove("scores") {
                scores.values = values;
            }
            if let Some(Value::Object(metadata)) = map.remove("metadata") {
                scores.metadata.extend(metadata);
            }
        }
        Value::Object(map) => scores.values = map,
        other => {
            return Err(SampleError::new(
                Stage::Score,
                ErrorClass::SnippetError,
                format!("`compute_scores` must return a dict, got `{other}`"),
            ));
        }
    }
    Ok(scores)
}
