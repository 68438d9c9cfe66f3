//! Error types of the embedded Python runtime: start-up failures, snippets that cannot be loaded,
//! and calls that fail. They carry plain Rust data (no Python objects) so callers can render,
//! store and compare them without touching the interpreter.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diagnostic::{format_bytes, format_duration};

use super::ReturnKind;

/// The interpreter could not be brought up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PythonError {
    #[error("the python runtime is already initialised; `initialize` may run only once per process")]
    AlreadyInitialized,
    #[error("python virtualenv `{}`: {reason}", path.display())]
    Venv { path: PathBuf, reason: String },
    #[error("cannot start the embedded python: {message}")]
    Init { message: String },
    #[error(
        "cannot start the embedded python: `PYTHONHOME` is `{}`, which holds no python {version} standard library (no `{}`)\nhint: unset `PYTHONHOME`, or set it to the prefix of a python {version} installation",
        home.display(),
        stdlib.display()
    )]
    Home {
        home: PathBuf,
        stdlib: PathBuf,
        version: String,
    },
}

/// What went wrong while loading a snippet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadErrorKind {
    /// The source does not compile.
    Syntax,
    /// Module-level code raised `ImportError` (usually a missing package).
    Import,
    /// The requested function is not defined, or the name is bound to something not callable.
    MissingFunction,
    /// The function cannot be called with any of the accepted argument counts.
    BadSignature,
    /// Module-level code raised anything else, or the source could not be compiled at all.
    Other,
}

/// A snippet failed to load. `line`/`col` are 1-based positions in `file` (line offsets of inline
/// snippets already applied).
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[error("{owner}: {message} ({file}:{line}:{col}){hint}", hint = load_hint(*.kind))]
pub struct SnippetLoadError {
    pub owner: String,
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub kind: LoadErrorKind,
    pub message: String,
    /// The offending source line, stripped, when the file has one at `line`.
    pub source_line: Option<String>,
    /// Python's full rendering of the error (empty for signature problems).
    pub traceback: String,
    /// Output printed by module-level code before the failure.
    pub captured: String,
}

fn load_hint(kind: LoadErrorKind) -> &'static str {
    match kind {
        LoadErrorKind::Import => {
            "; hint: install the package into a virtualenv and pass it with `--python-env` \
             (or activate it so `VIRTUAL_ENV` is set)"
        }
        _ => "",
    }
}

/// One stack frame inside the snippet's own file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub file: String,
    pub line: usize,
    pub function: String,
    pub source_line: String,
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}, in {}", self.file, self.line, self.function)
    }
}

/// A snippet call failed. Displays as ``model `x`: run_inference timed out after 15s (x.py:12, in run_inference)``.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[error("{owner}: {function} {kind}")]
pub struct CallError {
    pub owner: String,
    /// The snippet function that was called, e.g. `run_inference`.
    pub function: String,
    /// Boxed to keep `Result<_, CallError>` small on the success path.
    pub kind: Box<CallErrorKind>,
    /// Output the call printed before it failed.
    pub captured: String,
    /// The `lfeval.http` requests the call made before it failed.
    #[serde(default)]
    pub http: Vec<crate::python::HttpExchange>,
}

/// Why a call that timed out could not be stopped the ordinary way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stuck {
    /// It ignored the injected stop (stuck in C code); its thread was given up.
    InC,
    /// It holds Python's GIL in C code (a catastrophic regex, a C extension's loop): every
    /// Python snippet of the process waits until it returns.
    HoldsGil,
    /// Its worker process (`isolation: process`) was killed.
    Killed,
}

#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum CallErrorKind {
    /// The snippet raised. `frames` holds only the snippet's own frames, outermost first.
    #[error("raised `{}`{}", exception_text(.exc_type, .message), innermost(.frames))]
    Raised {
        exc_type: String,
        message: String,
        frames: Vec<Frame>,
        traceback: String,
    },
    /// The call exceeded its time budget. `frames` shows where it was when it was stopped, if known.
    #[error("timed out after {}{}{}", format_duration(*.after), innermost(.frames), stuck_text(*.stuck))]
    Timeout {
        after: Duration,
        frames: Vec<Frame>,
        stuck: Option<Stuck>,
    },
    /// The snippet called `os._exit` (its status shown as Python's `repr`), which would have
    /// ended lfeval; the guard turned it into a failed call.
    #[error(
        "called `os._exit({status})`{}; a snippet cannot end lfeval, so this call failed instead",
        innermost(.frames)
    )]
    Exit { status: String, frames: Vec<Frame> },
    /// The snippet raised `lfeval.RateLimited`; retried like an HTTP 429.
    #[error(
        "was rate limited (`lfeval.RateLimited`{}{}){}",
        if .message.is_empty() || .message == "rate limited" { String::new() } else { format!(": {}", .message) },
        .retry_after.map(|d| format!(", retry after {}", format_duration(d))).unwrap_or_default(),
        innermost(.frames)
    )]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
        frames: Vec<Frame>,
    },
    /// The returned text is longer than the model's `max_response_bytes`.
    #[error("returned a response too large ({} > {})", format_bytes(*.size), format_bytes(*.limit))]
    TooLarge { size: u64, limit: u64 },
    /// The worker process running the call (`isolation: process`) ended during it.
    #[error("ended its worker process during the call ({status}); the worker is replaced")]
    WorkerExited { status: String },
    /// Not started: earlier calls are stuck in C code on threads that cannot be stopped.
    #[error(
        "was not started: {stuck} earlier calls of this snippet are stuck in C code after timing out, and their threads cannot be stopped in-process; hint: set `isolation: process` on the model so stuck calls are killed"
    )]
    TooManyStuck { stuck: usize },
    /// The return value has the wrong type. `path` locates a nested offender (`$.items[2]`);
    /// `reason` explains values of an accepted type that still cannot be represented.
    #[error("{}", bad_return_text(*.expected, .type_name, .path.as_deref(), .reason.as_deref()))]
    BadReturn {
        type_name: String,
        expected: ReturnKind,
        path: Option<String>,
        reason: Option<String>,
    },
    #[error("failed inside lfeval's python runtime: {0}")]
    Internal(String),
}

impl CallErrorKind {
    /// Snippet frames attached to this error (empty for kinds without a location).
    pub fn frames(&self) -> &[Frame] {
        match self {
            Self::Raised { frames, .. }
            | Self::Timeout { frames, .. }
            | Self::Exit { frames, .. }
            | Self::RateLimited { frames, .. } => frames,
            Self::BadReturn { .. }
            | Self::Internal(_)
            | Self::TooLarge { .. }
            | Self::WorkerExited { .. }
            | Self::TooManyStuck { .. } => &[],
        }
    }
}

fn stuck_text(stuck: Option<Stuck>) -> &'static str {
    match stuck {
        None | Some(Stuck::InC) => "",
        Some(Stuck::HoldsGil) => {
            "; it holds Python's GIL in C code, which stalls every Python snippet until it returns; hint: set `isolation: process` on the model so such calls are killed"
        }
        Some(Stuck::Killed) => "; its worker process was killed",
    }
}

fn exception_text(exc_type: &str, message: &str) -> String {
    if message.is_empty() {
        exc_type.to_owned()
    } else {
        format!("{exc_type}: {message}")
    }
}

fn innermost(frames: &[Frame]) -> String {
    frames.last().map(|f| format!(" ({f})")).unwrap_or_default()
}

fn bad_return_text(expected: ReturnKind, type_name: &str, path: Option<&str>, reason: Option<&str>) -> String {
    let mut text = match expected {
        ReturnKind::Str => format!("must return `str`, got `{type_name}`"),
        ReturnKind::Json => match path {
            Some(path) => {
                format!("returned a value that is not JSON-convertible: `{type_name}` at `{path}`")
            }
            None => format!("returned a value that is not JSON-convertible: `{type_name}`"),
        },
    };
    if let Some(reason) = reason {
        text.push_str(&format!(" ({reason})"));
    }
    if type_name == "coroutine" {
        text.push_str("; hint: declare the function with `async def` so lfeval awaits it");
    } else if expected == ReturnKind::Json && reason.is_none() {
        text.push_str("; hint: return dict, list, str, int, float, bool or None");
    }
    text
}
