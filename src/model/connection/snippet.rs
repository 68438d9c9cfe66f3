//! `custom_inference`: call the model's Python `run_inference(body, environment[, sample])` in
//! the embedded interpreter. The snippet is compiled once per model, on load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::snippet_http::SnippetHttp;
use super::{AttemptError, Evidence, RawResponse};
use crate::diagnostic::{Diagnostic, Location};
use crate::model::gate::Gate;
use crate::model::{CustomInference, Model};
use crate::python::{
    CallError, CallErrorKind, Isolation, PythonRuntime, ReturnKind, Snippet, SnippetLoadError, SnippetSpec,
};
use crate::secrets::Secrets;
use crate::yaml::SourceText;

pub struct SnippetEndpoint {
    runtime: PythonRuntime,
    snippet: Snippet,
    environment: Value,
    timeout: Duration,
}

impl SnippetEndpoint {
    pub fn new(
        model: &Model,
        config: &CustomInference,
        runtime: &PythonRuntime,
        secrets: &Secrets,
        gate: &Arc<Gate>,
    ) -> Result<SnippetEndpoint, Diagnostic> {
        let mut environment = Map::new();
        for (name, value) in &config.environment {
            // Every `$VAR` and secret in `environment` is masked, whatever its key is called:
            // the snippet may put any of them into a request or print it.
            let resolved = value.resolve(secrets, true).map_err(|d| Diagnostic {
                message: format!("model `{}`: {}", model.key, d.message),
                ..d
            })?;
            environment.insert(name.clone(), resolved);
        }
        let snippet = load(model, config, model.concurrency(), runtime)?;
        let http = SnippetHttp::for_model(model.max_response_bytes, Arc::clone(gate), model.retry.clone());
        snippet.set_http_backend(Arc::new(http));
        Ok(SnippetEndpoint {
            runtime: runtime.clone(),
            snippet,
            environment: Value::Object(environment),
            timeout: config.timeout,
        })
    }

    pub fn snippet(&self) -> &Snippet {
        &self.snippet
    }

    pub async fn call(&self, body: String, sample: Option<&Value>) -> (Result<RawResponse, AttemptError>, Evidence) {
        let start = Instant::now();
        let args = vec![
            Value::String(body),
            self.environment.clone(),
            sample.cloned().unwrap_or(Value::Null),
        ];
        let (result, http, python) = match self.runtime.call(&self.snippet, args, self.timeout).await {
            Ok(mut output) => {
                let http = std::mem::take(&mut output.http);
                let response = RawResponse {
                    status_code: 200,
                    headers: Vec::new(),
                    body: match output.value {
                        Value::String(text) => text,
                        _ => String::new(),
                    },
                    captured: output.captured,
                    elapsed: start.elapsed(),
                };
                (Ok(response), http, Some(output.python_time))
            }
            Err(mut err) => {
                let http = std::mem::take(&mut err.http);
                (Err(classify(err)), http, None)
            }
        };
        // In worker processes the requests could not reach this process's gate as they ended.
        if self.snippet.isolation() == Isolation::Process
            && let Some(backend) = self.snippet.http_backend()
        {
            http.iter().for_each(|exchange| backend.observe(exchange));
        }
        (result, Evidence::of_exchanges(http, python))
    }
}

/// Compiles a model's snippet (in its first worker process for `isolation: process`),
/// turning load errors into located diagnostics.
pub fn load(
    model: &Model,
    config: &CustomInference,
    workers: usize,
    runtime: &PythonRuntime,
) -> Result<Snippet, Diagnostic> {
    let spec = SnippetSpec {
        owner: format!("model `{}`", model.key),
        file: config.snippet.file.clone(),
        source: config.snippet.text.clone(),
        display_source: None,
        line_offset: config.snippet.line_offset,
        function: "run_inference".to_owned(),
        arities: vec![2, 3],
        returns: ReturnKind::Str,
        workers: workers.max(1),
        isolation: model.isolation,
        max_return_bytes: Some(model.max_response_bytes),
    };
    runtime
        .load_snippet(spec)
        .map_err(|e| load_diagnostic(&e, Some(&config.snippet)))
}

/// A snippet load error as a diagnostic in the coordinates of the file the user edits (for
/// inline snippets that is the YAML file, whose lines are indented by the block).
pub fn load_diagnostic(e: &SnippetLoadError, source: Option<&SourceText>) -> Diagnostic {
    let (col, source_line) = match source {
        Some(text) if text.file == e.file && e.line > 0 => {
            let line = std::fs::read_to_string(&text.path)
                .ok()
                .and_then(|t| t.lines().nth(e.line - 1).map(str::to_owned));
            (e.col.max(1) + text.col_offset, line.or_else(|| e.source_line.clone()))
        }
        _ => (e.col.max(1), e.source_line.clone()),
    };
    let mut diag = Diagnostic::new(format!("{}: {}", e.owner, e.message)).at_location(Location {
        file: e.file.clone(),
        line: e.line,
        col,
        width: 1,
        source_line,
    });
    if matches!(e.kind, crate::python::LoadErrorKind::Import) {
        diag = diag.with_hint(if e.message.contains("'latticeflow") {
            "snippets written for lf use `latticeflow.core`: `pip install latticeflow-core` into the virtualenv lfeval uses (`VIRTUAL_ENV` or `--python-env DIR`)"
        } else {
            "install the package into a virtualenv and activate it (or pass `--python-env DIR`); `lfeval doctor` shows what Python sees"
        });
    }
    if !e.captured.is_empty() {
        diag = diag.with_note(format!("the snippet printed:\n{}", e.captured.trim_end()));
    }
    diag
}

/// Exception types that mean "the network or the endpoint had a bad moment".
const TRANSIENT: &[&str] = &[
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "PoolTimeout",
    "TimeoutException",
    "RemoteProtocolError",
    "ReadError",
    "WriteError",
    "NetworkError",
    "ConnectionError",
    "ConnectionResetError",
    "ConnectionRefusedError",
    "ConnectionAbortedError",
    "TimeoutError",
    "URLError",
    "IncompleteRead",
];

fn classify(err: CallError) -> AttemptError {
    let captured = err.captured.clone();
    let message = err.to_string();
    let location = err.kind.frames().last().map(|f| format!("{}:{}", f.file, f.line));
    match &*err.kind {
        CallErrorKind::TooLarge { size, limit } => AttemptError::TooLarge {
            size: Some(*size),
            limit: *limit,
            captured,
        },
        CallErrorKind::RateLimited { retry_after, .. } => AttemptError::RateLimited {
            message,
            retry_after: *retry_after,
            captured,
            location,
        },
        CallErrorKind::WorkerExited { .. } => AttemptError::WorkerExited { message, captured },
        CallErrorKind::Exit { .. } | CallErrorKind::TooManyStuck { .. } => AttemptError::Snippet {
            message,
            detail: String::new(),
            captured,
            retryable: false,
            location,
        },
        CallErrorKind::Timeout { after, .. } => AttemptError::Timeout {
            after: *after,
            detail: message,
            captured,
            location,
        },
        CallErrorKind::Raised {
            exc_type,
            message: text,
            traceback,
            ..
        } => {
            let short = exc_type.rsplit('.').next().unwrap_or(exc_type);
            let status_error = text.contains("'429 ")
                || text.contains("Server error '5")
                || text.contains("HTTP Error 429")
                || text.contains("HTTP Error 5");
            AttemptError::Snippet {
                retryable: TRANSIENT.contains(&short) || status_error,
                message,
                detail: traceback.clone(),
                captured,
                location,
            }
        }
        CallErrorKind::BadReturn { .. } | CallErrorKind::Internal(_) => AttemptError::Snippet {
            message,
            detail: String::new(),
            captured,
            retryable: false,
            location,
        },
    }
}
