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
//! sync call still running [`STOP_GRACE`] after its deadline is reported as timed out at once
//! and its thread is abandoned and replaced; a snippet with too many abandoned threads fails
//! its next calls fast. A call holding the GIL in C cannot be stopped in-process at all: that is
//! what `isolation: process` ([`worker`]) is for, where a timeout kills the worker process.

mod call;
mod convert;
mod error;
mod host;
mod http;
mod init;
mod pool;
mod snippet;
#[cfg(test)]
mod tests;
mod throttle;
pub mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use serde_json::Value;

pub use error::{CallError, CallErrorKind, Frame, LoadErrorKind, PythonError, SnippetLoadError, Stuck};

pub use host::{HostFn, HostFuture, HostGuard, host_object};
pub use http::{
    BoxFuture, ChunkFuture, HttpBackend, HttpBody, HttpError, HttpExchange, HttpHead, HttpRequest, Sent,
    set_default_backend,
};
pub use init::initialize;
pub use snippet::{Snippet, SnippetSpec};

/// How long an async call may keep running after its deadline before it is reported as timed
/// out (asyncio cancels it at its next `await`; only code that never awaits overruns this).
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// How long a sync call may keep running after being told to stop before it is reported as
/// timed out and its thread abandoned. Pure Python stops within milliseconds of the injected
/// exception, so whatever is still running after this is stuck in C and is reported promptly.
pub const STOP_GRACE: Duration = Duration::from_millis(250);

/// Where a snippet runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// In lfeval's own interpreter, on threads of its own (the fastest).
    #[default]
    #[serde(alias = "in-process")]
    InProcess,
    /// In worker processes (lfeval re-executed as `lfeval __worker`), one call at a time each:
    /// a timeout kills the worker, a crash costs one call, and each worker has its own GIL.
    Process,
}

/// How to set up the interpreter.
#[derive(Debug, Clone, Default)]
pub struct PythonOptions {
    /// A virtualenv directory (`--python-env`); when `None`, `$VIRTUAL_ENV` is used if set.
    pub python_env: Option<PathBuf>,
    /// The lfeval executable started as `lfeval __worker` for `isolation: process` snippets;
    /// `None` for the running executable.
    pub worker_exe: Option<PathBuf>,
}

/// How long [`PythonRuntime::flush`] waits for the GIL.
const FLUSH_WAIT: Duration = Duration::from_millis(500);

/// What a snippet function must return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CallOutput {
    pub value: Value,
    /// What this call printed (stdout, stderr and logging through `sys.stdout`/`sys.stderr`).
    pub captured: String,
    /// Time spent in the snippet function itself.
    pub python_time: Duration,
    /// The `lfeval.http` requests the call made.
    #[serde(default)]
    pub http: Vec<HttpExchange>,
}

/// The embedded interpreter, started by its first use: a run whose models are all HTTP
/// connections (or isolated in worker processes) never starts it. Cheap to clone.
#[derive(Clone)]
pub struct PythonRuntime {
    pub(super) lazy: Arc<Lazy>,
}

/// What starting the interpreter needs, and the interpreter once started.
pub(super) struct Lazy {
    pub(super) options: PythonOptions,
    /// The virtualenv whose packages snippets see.
    pub(super) venv: Option<PathBuf>,
    /// Its `site-packages`, checked against the linked Python's version.
    pub(super) site_packages: Option<String>,
    /// `PYTHONHOME` was set by [`initialize`], for this process only.
    pub(super) home_set: bool,
    pub(super) started: OnceLock<Result<Arc<RuntimeInner>, PythonError>>,
    pub(super) next_module: AtomicUsize,
}

/// The started interpreter.
pub(super) struct RuntimeInner {
    pub(super) support: Support,
    pub(super) startup: Duration,
    /// CPU time the threads of sync snippet calls spent inside them (nanoseconds), and the
    /// number of those calls: Python runs one thread at a time, so this is how close the
    /// snippets came to the interpreter's ceiling.
    pub(super) busy_ns: Arc<AtomicU64>,
    pub(super) busy_calls: AtomicU64,
}

/// How much CPU this process's sync snippet calls used so far (see [`PythonRuntime::busy`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Busy {
    pub cpu: Duration,
    pub calls: u64,
}

impl Busy {
    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: Busy) -> Busy {
        Busy {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            calls: self.calls.saturating_sub(earlier.calls),
        }
    }
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
    /// `Capture`, the class holding one call's output.
    pub(super) capture: Py<PyAny>,
}

impl std::fmt::Debug for PythonRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonRuntime")
            .field("started", &self.lazy.started.get().is_some())
            .finish_non_exhaustive()
    }
}

impl PythonRuntime {
    /// The interpreter, started now if this is its first use. Whichever thread starts it
    /// becomes Python's main thread; lfeval's first use is on its own main thread (loading the
    /// snippets, before the pipeline starts).
    pub(super) fn started(&self) -> Result<&Arc<RuntimeInner>, PythonError> {
        self.lazy
            .started
            .get_or_init(|| init::start(&self.lazy).map(Arc::new))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Starts the interpreter if nothing has yet.
    pub fn start(&self) -> Result<(), PythonError> {
        self.started().map(|_| ())
    }

    /// How long starting the interpreter took (starting it now if nothing has yet).
    pub fn startup_time(&self) -> Duration {
        self.started().map(|rt| rt.startup).unwrap_or_default()
    }

    /// The CPU time sync snippet calls spent in this process's interpreter so far (zero while it
    /// has not started; calls in `isolation: process` workers count in their own processes).
    pub fn busy(&self) -> Busy {
        match self.lazy.started.get() {
            Some(Ok(rt)) => Busy {
                cpu: Duration::from_nanos(rt.busy_ns.load(Ordering::Relaxed)),
                calls: rt.busy_calls.load(Ordering::Relaxed),
            },
            _ => Busy::default(),
        }
    }

    /// Describes the interpreter. Imports `httpx` on first use, so call it from a blocking context.
    pub fn info(&self) -> PythonInfo {
        let rt = match self.started() {
            Ok(rt) => rt,
            Err(e) => {
                return PythonInfo {
                    version: String::new(),
                    prefix: String::new(),
                    executable: String::new(),
                    sys_path: Vec::new(),
                    httpx: Err(e.to_string()),
                };
            }
        };
        Python::attach(|py| {
            let out = rt
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
    /// Gives up after [`FLUSH_WAIT`]: a snippet stuck in C while holding the GIL must not keep
    /// lfeval from exiting (after Ctrl-C, say).
    pub fn flush(&self) {
        // Nothing ran in an interpreter that never started.
        let Some(Ok(inner)) = self.lazy.started.get() else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = Arc::clone(inner);
        let started = std::thread::Builder::new()
            .name("lfeval-py-flush".to_owned())
            .spawn(move || {
                Python::attach(|py| {
                    let _ = inner.support.flush.bind(py).call0();
                });
                let _ = tx.send(());
            });
        if started.is_ok() {
            let _ = rx.recv_timeout(FLUSH_WAIT);
        }
    }
}
