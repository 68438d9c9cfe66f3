//! How a rendered request body reaches a model: an HTTP POST ([`http`], `custom_connection`)
//! or a Python `run_inference` call ([`snippet`], `custom_inference`). Both return a [`RawResponse`] for the
//! adapter's `process_output`, or an [`AttemptError`] that says whether a retry may help.

pub mod connect_clock;
pub mod http;
pub mod snippet;
pub mod snippet_http;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diagnostic::{format_bytes, format_duration};
use crate::error_class::ErrorClass;
use serde_json::Value;

/// What the endpoint answered, before `process_output`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RawResponse {
    pub status_code: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Output a snippet printed during the call.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub captured: String,
    /// Time in the endpoint itself (network round trip, or the Python function).
    #[serde(skip)]
    pub elapsed: Duration,
}

impl RawResponse {
    pub fn headers_map(&self) -> serde_json::Map<String, Value> {
        self.headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.clone())))
            .collect()
    }
}

/// Where one attempt's time went and, for snippets, the `lfeval.http` requests it made; kept
/// whether the attempt succeeded or not.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub http: Vec<crate::python::HttpExchange>,
    /// Opening connections (zero when every connection was reused).
    pub connect: Duration,
    /// To the response head of the (first) request.
    pub first_byte: Option<Duration>,
    /// To the first event of the (first) streamed response.
    pub first_token: Option<Duration>,
    /// In requests, summed (snippets: the part of the Python time spent waiting on the network).
    pub network: Option<Duration>,
    /// In the snippet function.
    pub python: Option<Duration>,
}

impl Evidence {
    /// The figures of a snippet call that made `http` requests.
    pub fn of_exchanges(http: Vec<crate::python::HttpExchange>, python: Option<Duration>) -> Evidence {
        let secs = |ms: f64| Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default();
        Evidence {
            connect: http.iter().map(|e| secs(e.connect_ms)).sum(),
            first_byte: http.iter().find_map(|e| e.first_byte_ms).map(secs),
            first_token: http.iter().find_map(|e| e.first_token_ms).map(secs),
            network: (!http.is_empty()).then(|| http.iter().map(|e| secs(e.network_ms)).sum()),
            python,
            http,
        }
    }
}

/// One failed attempt.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttemptError {
    #[error("timed out after {}", format_duration(*after))]
    Timeout {
        after: Duration,
        detail: String,
        captured: String,
        /// `file:line` where a snippet was when it was stopped.
        location: Option<String>,
    },
    #[error("connection failed: {0}")]
    Transport(String),
    /// 429 or 5xx: worth retrying; the response is kept for `process_output` if retries run out.
    #[error("the endpoint answered {}", response.status_code)]
    Status {
        response: RawResponse,
        retry_after: Option<Duration>,
    },
    /// The snippet raised; `retryable` when the exception looks like a network or 429/5xx error.
    #[error("{message}")]
    Snippet {
        message: String,
        detail: String,
        captured: String,
        retryable: bool,
        /// `file:line` of the innermost snippet frame.
        location: Option<String>,
    },
    /// The response (an HTTP body or a snippet's return value) is larger than the model's
    /// `max_response_bytes`; `size` is its length when known before reading it all.
    #[error("response too large ({})", match size {
        Some(size) => format!("{} > {}", format_bytes(*size), format_bytes(*limit)),
        None => format!("over {}", format_bytes(*limit)),
    })]
    TooLarge {
        size: Option<u64>,
        limit: u64,
        captured: String,
    },
    /// A snippet said it was rate limited (`raise lfeval.RateLimited(retry_after=…)`): retried
    /// like a 429, and the model pauses for `retry_after`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
        captured: String,
        location: Option<String>,
    },
    /// The worker process running the snippet (`isolation: process`) died during the call.
    #[error("{message}")]
    WorkerExited { message: String, captured: String },
    /// A problem no retry can fix (bad URL, invalid header, internal error).
    #[error("{0}")]
    Fatal(String),
}

impl AttemptError {
    pub fn retryable(&self) -> bool {
        match self {
            AttemptError::Timeout { .. } | AttemptError::Transport(_) | AttemptError::Status { .. } => true,
            AttemptError::Snippet { retryable, .. } => *retryable,
            AttemptError::RateLimited { .. } => true,
            AttemptError::TooLarge { .. } | AttemptError::WorkerExited { .. } | AttemptError::Fatal(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::Status { retry_after, .. } | AttemptError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// `file:line` in the snippet, when the failure has one.
    pub fn location(&self) -> Option<&str> {
        match self {
            AttemptError::Timeout { location, .. }
            | AttemptError::Snippet { location, .. }
            | AttemptError::RateLimited { location, .. } => location.as_deref(),
            _ => None,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            AttemptError::Timeout { .. } => ErrorClass::Timeout,
            AttemptError::Transport(_) => ErrorClass::Connection,
            AttemptError::Status { .. } => ErrorClass::ModelError,
            AttemptError::Snippet { .. } => ErrorClass::SnippetError,
            AttemptError::RateLimited { .. } => ErrorClass::ModelError,
            AttemptError::TooLarge { .. } => ErrorClass::TooLarge,
            AttemptError::WorkerExited { .. } => ErrorClass::WorkerExited,
            AttemptError::Fatal(_) => ErrorClass::Internal,
        }
    }

    pub fn captured(&self) -> &str {
        match self {
            AttemptError::Timeout { captured, .. }
            | AttemptError::Snippet { captured, .. }
            | AttemptError::TooLarge { captured, .. }
            | AttemptError::RateLimited { captured, .. }
            | AttemptError::WorkerExited { captured, .. } => captured,
            _ => "",
        }
    }

    /// Longer text for `--verbose` and result files (tracebacks).
    pub fn detail(&self) -> Option<&str> {
        match self {
            AttemptError::Timeout { detail, .. } | AttemptError::Snippet { detail, .. } if !detail.is_empty() => {
                Some(detail)
            }
            _ => None,
        }
    }
}
