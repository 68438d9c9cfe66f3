//! The embedded CPython runtime that runs user snippets (`run_inference`, scorers, ...).
//!
//! This module is the only place that touches PyO3. It brings the interpreter up once, compiles
//! each snippet into its own module, and calls snippet functions with per-call time budgets and
//! output capture. Synchronous snippets run on a dedicated thread pool per snippet; `async def`
//! snippets run on one process-wide asyncio loop thread. Nothing Python-typed leaves this module.
//!
//! Timeouts: an async call is cancelled by `asyncio.timeout` inside the loop. A sync call gets a
//! `SnippetTimeout` (a `BaseException`) injected into its thread, which stops pure-Python code
//! at once but only reaches code blocked in C (sleep, socket reads) when that call returns. A
//! call that is still running [`TIMEOUT_GRACE`] after its deadline is reported as timed out
//! anyway and its thread is abandoned and replaced.

mod call;
mod convert;
mod error;
mod host;
mod init;
mod pool;
mod snippet;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use pyo3::prelude::*;
use serde_json::Value;

pub use error::{CallError, CallErrorKind, Frame, LoadErrorKind, PythonError, SnippetLoadError};

pub use host::{HostFn, HostFuture, HostGuard, host_object};
pub use init::initialize;
pub use snippet::{Snippet, SnippetSpec};

/// How long a call may keep running after its deadline (and after being told to stop) before
/// it is reported as timed out and, for sync snippets, its thread is abandoned.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// How to set up the interpreter.
#[derive(Debug, Clone, Default)]
pub struct PythonOptions {
    /// A virtualenv directory (`--python-env`); when `None`, `$VIRTUAL_ENV` is used if set.
    pub python_env: Option<PathBuf>,
}

/// What a snippet function must return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnKind {
    /// A `str` (e.g. `run_inference`).
    Str,
    /// Anything JSON-convertible: dict, list, tuple, str, int, float, bool, None.
    Json,
}

/// Facts about the running interpreter, for `--version`-style diagnostics.
#[derive(Debug, Clone)]
pub struct PythonInfo {
    pub version: String,
    pub prefix: String,
    pub executable: String,
    pub sys_path: Vec<String>,
    /// `httpx.__version__`, or the import error.
    pub httpx: Result<String, String>,
}

/// Types of `latticeflow.core.dtypes` a snippet can be handed (see [`lf_object`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LfType {
    SolverTrace,
    SingleSolverOutput,
    Trace,
    ModelResponse,
}

impl LfType {
    fn name(self) -> &'static str {
        match self {
            LfType::SolverTrace => "SolverTrace",
            LfType::SingleSolverOutput => "SingleSolverOutput",
            LfType::Trace => "Trace",
            LfType::ModelResponse => "ModelResponse",
        }
    }
}

/// The marker key of a value that becomes a `latticeflow.core` object in Python.
const LF_OBJECT: &str = "__lfeval_lf_object__";

/// A snippet argument that Python receives as `latticeflow.core.dtypes.<kind>` validated from
/// `value` when `latticeflow-core` is installed, or else as an attribute-readable dict of
/// `value` with lf's methods and, where `value` lacks them, the keys of `fallback`.
pub fn lf_object(kind: LfType, value: Value, fallback: Value) -> Value {
    serde_json::json!({ LF_OBJECT: kind.name(), "value": value, "fallback": fallback })
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct CallOutput {
    pub value: Value,
    /// What this call printed (stdout, stderr and logging through `sys.stdout`/`sys.stderr`).
    pub captured: String,
    /// Time spent in the snippet function itself.
    pub python_time: Duration,
}

/// The running interpreter. Cheap to clone.
#[derive(Clone)]
pub struct PythonRuntime {
    pub(super) inner: Arc<RuntimeInner>,
}

pub(super) struct RuntimeInner {
    pub(super) support: Support,
    pub(super) loop_ident: u64,
    pub(super) startup: Duration,
    pub(super) next_module: AtomicUsize,
}

/// Handles to `_lfeval_support`'s functions.
pub(super) struct Support {
    pub(super) load: Py<PyAny>,
    pub(super) call_sync: Py<PyAny>,
    pub(super) describe: Py<PyAny>,
    pub(super) thread_frames: Py<PyAny>,
    pub(super) submit: Py<PyAny>,
    pub(super) async_overdue: Py<PyAny>,
    pub(super) flush: Py<PyAny>,
    pub(super) info: Py<PyAny>,
    pub(super) timeout_exc: Py<PyAny>,
}

impl std::fmt::Debug for PythonRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonRuntime")
            .field("startup", &self.inner.startup)
            .finish_non_exhaustive()
    }
}

impl PythonRuntime {
    /// How long [`initialize`] took.
    pub fn startup_time(&self) -> Duration {
        self.inner.startup
    }

    /// Describes the interpreter. Imports `httpx` on first use, so call it from a blocking context.
    pub fn info(&self) -> PythonInfo {
        Python::attach(|py| {
            let out = self
                .inner
                .support
                .info
                .bind(py)
                .call0()
                .and_then(|t| t.extract::<(String, String, String, Vec<String>, (bool, String))>());
            match out {
                Ok((version, prefix, executable, sys_path, (ok, httpx))) => PythonInfo {
                    version,
                    prefix,
                    executable,
                    sys_path,
                    httpx: if ok { Ok(httpx) } else { Err(httpx) },
                },
                Err(e) => PythonInfo {
                    version: String::new(),
                    prefix: String::new(),
                    executable: String::new(),
                    sys_path: Vec::new(),
                    httpx: Err(e.to_string()),
                },
            }
        })
    }

    /// Flushes Python's real stdout/stderr. Call before the process exits: the interpreter is
    /// never finalised, so buffered output written outside snippet calls would otherwise be lost.
    pub fn flush(&self) {
        Python::attach(|py| {
            let _ = self.inner.support.flush.bind(py).call0();
        });
    }
}
