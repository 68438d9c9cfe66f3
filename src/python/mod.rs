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

mod convert;
mod error;
mod pool;
#[cfg(test)]
mod tests;

use std::ffi::{CString, c_long};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyList, PyModule, PyString, PyTuple};
use serde_json::Value;
use tokio::sync::oneshot;

pub use error::{CallError, CallErrorKind, Frame, LoadErrorKind, PythonError, SnippetLoadError};

use pool::{AfterJob, Pool};

const SUPPORT_PY: &str = include_str!("support.py");

/// How long a call may keep running after its deadline (and after being told to stop) before
/// it is reported as timed out and, for sync snippets, its thread is abandoned.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

static STARTED: AtomicBool = AtomicBool::new(false);

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

/// A snippet to compile.
#[derive(Debug, Clone)]
pub struct SnippetSpec {
    /// Who the snippet belongs to, used verbatim in messages, e.g. ``model `gpt-x` ``.
    pub owner: String,
    /// Display path and code-object filename: the `.py` path for included files, the YAML path
    /// for inline source.
    pub file: String,
    /// The Python source, with any substitutions already applied.
    pub source: String,
    /// The text shown in tracebacks and error messages; pass the source *before* secret
    /// substitution so secrets never appear in error output. It must have the same lines as
    /// `source` (keep substitutions on one line). `None` shows `source`.
    pub display_source: Option<String>,
    /// Number of lines in `file` before the source's first line (0 for `.py` files), so that
    /// reported line numbers are lines of `file`.
    pub line_offset: usize,
    /// The function to call, e.g. `run_inference`.
    pub function: String,
    /// Accepted positional parameter counts, e.g. `[2, 3]`; the largest one the function can take
    /// is used, so a third parameter with a default receives the third argument.
    pub arities: Vec<usize>,
    pub returns: ReturnKind,
    /// Threads in this snippet's pool for sync calls (at least one). Unused for `async def`
    /// snippets: they all share the asyncio loop and the caller bounds their concurrency.
    pub workers: usize,
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
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    support: Support,
    loop_ident: u64,
    startup: Duration,
    next_module: AtomicUsize,
}

/// Handles to `_lfeval_support`'s functions.
struct Support {
    load: Py<PyAny>,
    call_sync: Py<PyAny>,
    describe: Py<PyAny>,
    thread_frames: Py<PyAny>,
    submit: Py<PyAny>,
    async_overdue: Py<PyAny>,
    flush: Py<PyAny>,
    info: Py<PyAny>,
    timeout_exc: Py<PyAny>,
}

/// A loaded snippet. Cheap to clone; its module stays alive for the whole process.
#[derive(Clone)]
pub struct Snippet {
    inner: Arc<SnippetInner>,
}

struct SnippetInner {
    owner: String,
    file: String,
    function: String,
    module_name: String,
    returns: ReturnKind,
    func: Py<PyAny>,
    is_async: bool,
    arity: usize,
    load_output: String,
    /// Present for sync snippets only.
    pool: Option<Pool>,
}

impl std::fmt::Debug for Snippet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snippet")
            .field("owner", &self.inner.owner)
            .field("file", &self.inner.file)
            .field("function", &self.inner.function)
            .field("module", &self.inner.module_name)
            .field("is_async", &self.inner.is_async)
            .field("arity", &self.inner.arity)
            .finish()
    }
}

impl std::fmt::Debug for PythonRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonRuntime")
            .field("startup", &self.inner.startup)
            .finish_non_exhaustive()
    }
}

impl Snippet {
    pub fn is_async(&self) -> bool {
        self.inner.is_async
    }

    /// How many arguments the function is called with.
    pub fn arity(&self) -> usize {
        self.inner.arity
    }

    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The `sys.modules` name the snippet was compiled into.
    pub fn module_name(&self) -> &str {
        &self.inner.module_name
    }

    /// What module-level code printed while loading.
    pub fn load_output(&self) -> &str {
        &self.inner.load_output
    }
}

/// Brings up the interpreter. Call it once, on the main thread, before tokio or any other thread
/// starts: it may set `PYTHONHOME`, and whichever thread initialises CPython becomes Python's main
/// thread.
pub fn initialize(opts: &PythonOptions) -> Result<PythonRuntime, PythonError> {
    if STARTED.swap(true, Ordering::SeqCst) {
        return Err(PythonError::AlreadyInitialized);
    }
    let started = Instant::now();
    let venv = opts.python_env.clone().or_else(|| {
        std::env::var_os("VIRTUAL_ENV")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(dir) = &venv
        && !dir.is_dir()
    {
        return Err(PythonError::Venv {
            path: dir.clone(),
            reason: "no such directory".to_owned(),
        });
    }

    // SAFETY: Py_IsInitialized may be called at any time.
    let already_up = unsafe { ffi::Py_IsInitialized() } != 0;
    let mut home_set = false;
    if !already_up
        && std::env::var_os("PYTHONHOME").is_none()
        && let Some(home) = build_time_home()
    {
        // Without this, CPython derives its prefix from whatever `python3` is first on PATH,
        // and under `env -i` falls back to `/`, loading a foreign stdlib or none at all.
        // SAFETY: documented precondition of `initialize`: no other thread runs yet, so nothing
        // reads the environment concurrently.
        unsafe { std::env::set_var("PYTHONHOME", &home) };
        home_set = true;
    }
    Python::initialize();

    let (support, loop_ident) = Python::attach(|py| setup(py, venv.as_deref(), home_set))?;
    Ok(PythonRuntime {
        inner: Arc::new(RuntimeInner {
            support,
            loop_ident,
            startup: started.elapsed(),
            next_module: AtomicUsize::new(1),
        }),
    })
}

/// `<prefix>` of the interpreter the binary was built against, if it still has a stdlib.
fn build_time_home() -> Option<PathBuf> {
    let lib = Path::new(option_env!("LFEVAL_PY_LIBDIR")?);
    let has_stdlib = std::fs::read_dir(lib).ok()?.flatten().any(|entry| {
        entry.file_name().to_string_lossy().starts_with("python3") && entry.path().join("os.py").is_file()
    });
    if has_stdlib {
        lib.parent().map(Path::to_path_buf)
    } else {
        None
    }
}

fn init_err(e: PyErr) -> PythonError {
    PythonError::Init { message: e.to_string() }
}

fn setup(py: Python<'_>, venv: Option<&Path>, home_set: bool) -> Result<(Support, u64), PythonError> {
    let sys = py.import("sys").map_err(init_err)?;
    let (major, minor): (u8, u8) = sys
        .getattr("version_info")
        .and_then(|v| Ok((v.get_item(0)?.extract()?, v.get_item(1)?.extract()?)))
        .map_err(init_err)?;

    let mut site_dirs = Vec::new();
    let mut executable = option_env!("LFEVAL_PY_EXE")
        .filter(|exe| Path::new(exe).is_file())
        .map(str::to_owned);
    if let Some(venv) = venv {
        site_dirs.push(venv_site_packages(venv, major, minor)?);
        // Child processes started with `sys.executable` should see the same packages.
        let venv_python = venv.join("bin").join("python");
        if venv_python.exists() {
            executable = Some(venv_python.display().to_string());
        }
    }

    let code = CString::new(SUPPORT_PY).map_err(|e| PythonError::Init {
        message: format!("support module: {e}"),
    })?;
    let module = PyModule::from_code(py, &code, c"<lfeval-support>", c"_lfeval_support").map_err(init_err)?;
    module
        .getattr("setup")
        .and_then(|f| f.call1((executable, site_dirs, home_set)))
        .map_err(init_err)?;
    let get = |name: &str| module.getattr(name).map(Bound::unbind).map_err(init_err);
    let support = Support {
        load: get("load")?,
        call_sync: get("call_sync")?,
        describe: get("describe")?,
        thread_frames: get("thread_frames")?,
        submit: get("submit")?,
        async_overdue: get("async_overdue")?,
        flush: get("flush")?,
        info: get("info")?,
        timeout_exc: get("SnippetTimeout")?,
    };
    let loop_ident: u64 = module
        .getattr("loop_ident")
        .and_then(|v| v.extract())
        .map_err(init_err)?;
    Ok((support, loop_ident))
}

fn venv_site_packages(venv: &Path, major: u8, minor: u8) -> Result<String, PythonError> {
    let want = format!("python{major}.{minor}");
    let site = venv.join("lib").join(&want).join("site-packages");
    if site.is_dir() {
        return Ok(site.display().to_string());
    }
    let found: Vec<String> = std::fs::read_dir(venv.join("lib"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("python"))
                .collect()
        })
        .unwrap_or_default();
    let exe = option_env!("LFEVAL_PY_EXE").unwrap_or("python3");
    let reason = match found.first() {
        Some(other) => format!(
            "it was created for `{other}` but lfeval embeds `{want}`; hint: recreate it with `{exe} -m venv {}`",
            venv.display()
        ),
        None => format!(
            "no `lib/{want}/site-packages` inside; hint: create it with `{exe} -m venv {}`",
            venv.display()
        ),
    };
    Err(PythonError::Venv {
        path: venv.to_path_buf(),
        reason,
    })
}

/// Per-call bookkeeping shared between the caller and the worker thread running the call.
struct JobCtl {
    state: AtomicU8,
    /// Python thread ident of the worker (0 until the call starts).
    ident: AtomicU64,
    /// Set only while the worker is inside the snippet call; injection happens only then.
    in_python: AtomicBool,
    /// A timeout was injected into this call (it may still be pending when the call returns).
    injected: AtomicBool,
    buf: OnceLock<Py<PyList>>,
    /// When a worker picked the call up.
    started: OnceLock<Instant>,
}

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

impl JobCtl {
    fn new() -> Self {
        Self {
            state: AtomicU8::new(RUNNING),
            ident: AtomicU64::new(0),
            in_python: AtomicBool::new(false),
            injected: AtomicBool::new(false),
            buf: OnceLock::new(),
            started: OnceLock::new(),
        }
    }

    /// Worker side: true when the caller still wants the result.
    fn finish(&self) -> bool {
        self.state
            .compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Caller side: true when the worker had not finished, i.e. its thread is now given up.
    fn abandon(&self) -> bool {
        self.state
            .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// The result of one call before it is turned into the public types.
struct Outcome {
    captured: String,
    result: Result<(Value, Duration), Failure>,
}

impl Outcome {
    /// A call that overran its timeout; `frames` show where it was when it was given up on.
    fn timed_out(frames: Vec<RawFrame>, captured: String) -> Outcome {
        Outcome {
            captured,
            result: Err(Failure::Raised {
                exc_type: "SnippetTimeout".to_owned(),
                message: String::new(),
                chain_frames: frames_from(frames),
                frames: Vec::new(),
                traceback: String::new(),
                timed_out: true,
            }),
        }
    }
}

enum Failure {
    Raised {
        exc_type: String,
        message: String,
        frames: Vec<Frame>,
        /// Snippet frames of the deepest exception in the `__cause__`/`__context__` chain.
        chain_frames: Vec<Frame>,
        traceback: String,
        /// The chain contains the injected `SnippetTimeout`, or asyncio's deadline expired.
        timed_out: bool,
    },
    BadReturn(convert::Unconvertible),
    Internal(String),
}

type RawFrame = (String, usize, String, String);

/// `(function, is_async, arity, load output)` of a snippet that loaded.
type Loaded = (Py<PyAny>, bool, usize, String);

fn frames_from(raw: Vec<RawFrame>) -> Vec<Frame> {
    raw.into_iter()
        .map(|(file, line, function, source_line)| Frame {
            file,
            line,
            function,
            source_line,
        })
        .collect()
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

    /// Compiles `spec.source` into a fresh module, runs its module-level code and looks up the
    /// function. Runs snippet code (imports), so call it from a blocking context.
    // The error is the public contract and loading is far from hot; boxing would only add noise.
    #[allow(clippy::result_large_err)]
    pub fn load_snippet(&self, spec: SnippetSpec) -> Result<Snippet, SnippetLoadError> {
        let n = self.inner.next_module.fetch_add(1, Ordering::SeqCst);
        let slug = slug(&spec.owner);
        let module_name = format!("lfeval_snippet_{slug}_{n}");
        let load_error = |kind, message: String| SnippetLoadError {
            owner: spec.owner.clone(),
            file: spec.file.clone(),
            line: spec.line_offset + 1,
            col: 1,
            kind,
            message,
            source_line: None,
            traceback: String::new(),
            captured: String::new(),
        };
        if spec.arities.is_empty() {
            return Err(load_error(
                LoadErrorKind::Other,
                "no accepted parameter counts were given for the snippet function".to_owned(),
            ));
        }

        let loaded = Python::attach(|py| -> PyResult<Result<Loaded, SnippetLoadError>> {
            let display = spec.display_source.as_deref().unwrap_or(&spec.source);
            let res = self.inner.support.load.bind(py).call1((
                &module_name,
                &spec.file,
                &spec.source,
                display,
                spec.line_offset,
                &spec.function,
                spec.arities.clone(),
            ))?;
            let tag: String = res.get_item(0)?.extract()?;
            if tag == "ok" {
                return Ok(Ok((
                    res.get_item(1)?.unbind(),
                    res.get_item(2)?.extract()?,
                    res.get_item(3)?.extract()?,
                    res.get_item(4)?.extract()?,
                )));
            }
            let kind = match res.get_item(1)?.extract::<String>()?.as_str() {
                "syntax" => LoadErrorKind::Syntax,
                "import" => LoadErrorKind::Import,
                "missing_function" => LoadErrorKind::MissingFunction,
                "bad_signature" => LoadErrorKind::BadSignature,
                _ => LoadErrorKind::Other,
            };
            let source_line: String = res.get_item(5)?.extract()?;
            Ok(Err(SnippetLoadError {
                owner: spec.owner.clone(),
                file: spec.file.clone(),
                kind,
                message: res.get_item(2)?.extract()?,
                line: res.get_item(3)?.extract()?,
                col: res.get_item(4)?.extract()?,
                source_line: (!source_line.is_empty()).then_some(source_line),
                traceback: res.get_item(6)?.extract()?,
                captured: res.get_item(7)?.extract()?,
            }))
        });
        let (func, is_async, arity, load_output) = match loaded {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(load_error(
                    LoadErrorKind::Other,
                    format!("lfeval's python runtime failed while loading: {e}"),
                ));
            }
        };
        let pool = if is_async {
            None
        } else {
            let label: String = slug.chars().take(16).collect();
            Some(
                Pool::new(&label, spec.workers)
                    .map_err(|e| load_error(LoadErrorKind::Other, format!("cannot start worker threads: {e}")))?,
            )
        };
        Ok(Snippet {
            inner: Arc::new(SnippetInner {
                owner: spec.owner,
                file: spec.file,
                function: spec.function,
                module_name,
                returns: spec.returns,
                func,
                is_async,
                arity,
                load_output,
                pool,
            }),
        })
    }

    /// Calls the snippet function with `args` (extra trailing ones beyond its arity are dropped)
    /// within `timeout`. Never runs Python on the calling (tokio) thread; needs a tokio runtime.
    ///
    /// For sync snippets the budget starts when one of the snippet's worker threads picks the call
    /// up, so bound in-flight calls to `workers` (as `max_concurrent_requests` does) to keep
    /// queueing out of it. A timed-out call returns within `timeout + TIMEOUT_GRACE` plus a few
    /// milliseconds. Dropping the returned future does not stop a call that already started.
    pub async fn call(&self, snippet: &Snippet, args: Vec<Value>, timeout: Duration) -> Result<CallOutput, CallError> {
        let outcome = if snippet.inner.is_async {
            self.call_async(snippet, args, timeout).await
        } else {
            self.call_sync(snippet, args, timeout).await
        };
        finish(&snippet.inner, outcome, timeout)
    }

    async fn call_sync(&self, snippet: &Snippet, args: Vec<Value>, timeout: Duration) -> Outcome {
        let Some(pool) = &snippet.inner.pool else {
            return internal("sync snippet without worker threads");
        };
        let ctl = Arc::new(JobCtl::new());
        let (done_tx, mut done_rx) = oneshot::channel::<Outcome>();
        let job = {
            let rt = Arc::clone(&self.inner);
            let snip = Arc::clone(&snippet.inner);
            let ctl = Arc::clone(&ctl);
            Box::new(move || {
                if done_tx.is_closed() {
                    return AfterJob::Continue; // the caller went away while the job was queued
                }
                let _ = ctl.started.set(Instant::now());
                let outcome = run_sync(&rt, &snip, &ctl, &args);
                if ctl.finish() {
                    let _ = done_tx.send(outcome);
                    AfterJob::Continue
                } else {
                    AfterJob::Exit
                }
            })
        };
        if let Err(e) = pool.submit(job) {
            return internal(&e);
        }
        // The budget starts when a worker picks the call up, not while the call waits in the
        // queue. Re-arming the timer only when it fires (instead of waiting for a "started"
        // signal) keeps the common path at one wake-up per call.
        let mut deadline = Instant::now() + timeout;
        loop {
            let at = tokio::time::Instant::from_std(deadline);
            if let Ok(done) = tokio::time::timeout_at(at, &mut done_rx).await {
                return done.unwrap_or_else(|_| internal("the worker thread dropped the call"));
            }
            let now = Instant::now();
            match ctl.started.get() {
                None => deadline = now + timeout,
                Some(&started) if started + timeout > now => deadline = started + timeout,
                Some(_) => break,
            }
        }

        // Deadline passed: ask the call to stop, then give it the grace period.
        let inject = {
            let rt = Arc::clone(&self.inner);
            let ctl = Arc::clone(&ctl);
            tokio::task::spawn_blocking(move || {
                Python::attach(|py| {
                    // Checked while attached: the worker flips `in_python` only while attached,
                    // so the call cannot leave the snippet between this check and the injection.
                    if ctl.in_python.load(Ordering::SeqCst) {
                        let ident = ctl.ident.load(Ordering::SeqCst);
                        let exc = rt.support.timeout_exc.bind(py);
                        ctl.injected.store(true, Ordering::SeqCst);
                        // SAFETY: attached; `exc` is a live exception class (CPython takes its own
                        // reference), `ident` is the worker's thread id.
                        unsafe { ffi::PyThreadState_SetAsyncExc(ident as c_long, exc.as_ptr()) };
                    }
                })
            })
        };
        if let Ok(done) = tokio::time::timeout(TIMEOUT_GRACE, &mut done_rx).await {
            drop(inject);
            return done.unwrap_or_else(|_| internal("the worker thread dropped the call"));
        }
        if !ctl.abandon() {
            // Finished right at the end of the grace period; the result is on its way.
            return done_rx
                .await
                .unwrap_or_else(|_| internal("the worker thread dropped the call"));
        }
        // Stuck in C code (or swallowing the injected exception): give the thread up.
        let replaced = pool.spawn_worker();
        let (frames, captured) = {
            let rt = Arc::clone(&self.inner);
            let ctl = Arc::clone(&ctl);
            let file = snippet.inner.file.clone();
            let probe = tokio::task::spawn_blocking(move || {
                Python::attach(|py| -> PyResult<(Vec<RawFrame>, String)> {
                    let ident = ctl.ident.load(Ordering::SeqCst);
                    let frames = rt.support.thread_frames.bind(py).call1((ident, file))?.extract()?;
                    let captured = match ctl.buf.get() {
                        Some(buf) => join_buf(buf.bind(py)),
                        None => String::new(),
                    };
                    Ok((frames, captured))
                })
            });
            match tokio::time::timeout(TIMEOUT_GRACE, probe).await {
                Ok(Ok(Ok(found))) => found,
                _ => (Vec::new(), String::new()),
            }
        };
        if let Err(e) = replaced {
            return Outcome {
                captured,
                result: Err(Failure::Internal(format!(
                    "call timed out and no replacement worker thread could be started: {e}"
                ))),
            };
        }
        Outcome::timed_out(frames, captured)
    }

    async fn call_async(&self, snippet: &Snippet, args: Vec<Value>, timeout: Duration) -> Outcome {
        let (tx, rx) = oneshot::channel::<Outcome>();
        let submitted = {
            let rt = Arc::clone(&self.inner);
            let snip = Arc::clone(&snippet.inner);
            tokio::task::spawn_blocking(move || {
                Python::attach(|py| -> PyResult<Py<PyAny>> {
                    let py_args = build_args(py, &args, snip.arity)?;
                    let deliver = make_deliver(py, Arc::clone(&rt), Arc::clone(&snip), tx)?;
                    let holder = rt.support.submit.bind(py).call1((
                        snip.func.bind(py),
                        py_args,
                        timeout.as_secs_f64(),
                        deliver,
                    ))?;
                    Ok(holder.unbind())
                })
            })
            .await
        };
        let holder = match submitted {
            Ok(Ok(holder)) => holder,
            Ok(Err(e)) => return internal(&format!("cannot schedule the coroutine: {e}")),
            Err(e) => return internal(&format!("cannot schedule the coroutine: {e}")),
        };
        // asyncio.timeout cancels inside the loop; this outer limit only fires when the loop
        // itself is blocked or the coroutine ignores cancellation.
        match tokio::time::timeout(timeout.saturating_add(TIMEOUT_GRACE), rx).await {
            Ok(Ok(outcome)) => return outcome,
            Ok(Err(_)) => return internal("the asyncio loop dropped the call"),
            Err(_) => {}
        }
        let rt = Arc::clone(&self.inner);
        let file = snippet.inner.file.clone();
        let probe = tokio::task::spawn_blocking(move || {
            Python::attach(|py| -> PyResult<(Vec<RawFrame>, String)> {
                let (running, frames, captured): (bool, Vec<RawFrame>, String) = rt
                    .support
                    .async_overdue
                    .bind(py)
                    .call1((holder.bind(py), file))?
                    .extract()?;
                if running {
                    // The loop thread is inside this call (blocking code in a coroutine): stop
                    // it there so the other async snippets get the loop back.
                    let exc = rt.support.timeout_exc.bind(py);
                    // SAFETY: attached; live exception class; `loop_ident` is the loop thread.
                    unsafe { ffi::PyThreadState_SetAsyncExc(rt.loop_ident as c_long, exc.as_ptr()) };
                }
                Ok((frames, captured))
            })
        });
        let (frames, captured) = match tokio::time::timeout(TIMEOUT_GRACE, probe).await {
            Ok(Ok(Ok(found))) => found,
            _ => (Vec::new(), String::new()),
        };
        Outcome::timed_out(frames, captured)
    }
}

fn internal(message: &str) -> Outcome {
    Outcome {
        captured: String::new(),
        result: Err(Failure::Internal(message.to_owned())),
    }
}

/// Runs one sync call on the current (pool) thread.
fn run_sync(rt: &RuntimeInner, snip: &SnippetInner, ctl: &JobCtl, args: &[Value]) -> Outcome {
    Python::attach(|py| {
        // SAFETY: plain query of the current thread's id.
        let ident = unsafe { ffi::PyThread_get_thread_ident() } as u64;
        ctl.ident.store(ident, Ordering::SeqCst);
        let buf = PyList::empty(py);
        let _ = ctl.buf.set(buf.clone().unbind());
        let py_args = match build_args(py, args, snip.arity) {
            Ok(a) => a,
            Err(e) => {
                return Outcome {
                    captured: String::new(),
                    result: Err(Failure::Internal(format!("cannot convert arguments: {e}"))),
                };
            }
        };
        let started = Instant::now();
        ctl.in_python.store(true, Ordering::SeqCst);
        let result = rt.support.call_sync.bind(py).call1((snip.func.bind(py), py_args, &buf));
        ctl.in_python.store(false, Ordering::SeqCst);
        if ctl.injected.load(Ordering::SeqCst) {
            // Drop a timeout injected too late to be delivered, so it cannot hit the thread's
            // next call. (Both flags change only while attached, so this cannot miss one.)
            // SAFETY: attached; a NULL exception clears the pending one of that thread.
            unsafe { ffi::PyThreadState_SetAsyncExc(ident as c_long, std::ptr::null_mut()) };
        }
        let python_time = started.elapsed();
        let captured = join_buf(&buf);
        let result = match result {
            Ok(value) => convert_return(&value, snip.returns).map(|v| (v, python_time)),
            Err(err) => Err(describe(rt, py, err.value(py).as_any(), &snip.file, false)),
        };
        Outcome { captured, result }
    })
}

fn build_args<'py>(py: Python<'py>, args: &[Value], arity: usize) -> PyResult<Bound<'py, PyTuple>> {
    let items = args
        .iter()
        .take(arity)
        .map(|a| convert::to_py(py, a))
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, items)
}

fn join_buf(buf: &Bound<'_, PyList>) -> String {
    buf.iter()
        .filter_map(|s| s.cast::<PyString>().ok().map(|s| s.to_string_lossy().into_owned()))
        .collect()
}

fn convert_return(value: &Bound<'_, PyAny>, returns: ReturnKind) -> Result<Value, Failure> {
    match returns {
        ReturnKind::Str => match value.cast::<PyString>() {
            Ok(s) => Ok(Value::String(s.to_string_lossy().into_owned())),
            Err(_) => Err(Failure::BadReturn(convert::Unconvertible {
                type_name: convert::type_name(value),
                path: None,
                reason: None,
            })),
        },
        ReturnKind::Json => convert::from_py(value).map_err(Failure::BadReturn),
    }
}

fn describe(rt: &RuntimeInner, py: Python<'_>, exc: &Bound<'_, PyAny>, file: &str, deadline_expired: bool) -> Failure {
    let described = rt
        .support
        .describe
        .bind(py)
        .call1((exc, file))
        .and_then(|d| d.extract::<(String, String, Vec<RawFrame>, Vec<RawFrame>, String, bool)>());
    match described {
        Ok((exc_type, message, frames, chain_frames, traceback, is_timeout)) => Failure::Raised {
            exc_type,
            message,
            frames: frames_from(frames),
            chain_frames: frames_from(chain_frames),
            traceback,
            timed_out: is_timeout || deadline_expired,
        },
        Err(e) => Failure::Internal(format!("cannot describe the snippet's exception: {e}")),
    }
}

/// The Python callable the loop thread invokes with `(status, value, captured, seconds)` when an
/// async call ends.
fn make_deliver<'py>(
    py: Python<'py>,
    rt: Arc<RuntimeInner>,
    snip: Arc<SnippetInner>,
    tx: oneshot::Sender<Outcome>,
) -> PyResult<Bound<'py, PyCFunction>> {
    let tx = Mutex::new(Some(tx));
    PyCFunction::new_closure(
        py,
        Some(c"deliver"),
        None,
        move |args: &Bound<'_, PyTuple>, _kwargs| -> PyResult<()> {
            let py = args.py();
            let status: u8 = args.get_item(0)?.extract()?;
            let value = args.get_item(1)?;
            let captured: String = args.get_item(2)?.extract()?;
            let seconds: f64 = args.get_item(3)?.extract()?;
            let result = if status == 0 {
                let elapsed = Duration::try_from_secs_f64(seconds).unwrap_or_default();
                convert_return(&value, snip.returns).map(|v| (v, elapsed))
            } else {
                Err(describe(&rt, py, &value, &snip.file, status == 2))
            };
            let sender = tx.lock().ok().and_then(|mut slot| slot.take());
            if let Some(sender) = sender {
                let _ = sender.send(Outcome { captured, result });
            }
            Ok(())
        },
    )
}

fn finish(snip: &SnippetInner, outcome: Outcome, timeout: Duration) -> Result<CallOutput, CallError> {
    let kind = match outcome.result {
        Ok((value, python_time)) => {
            return Ok(CallOutput {
                value,
                captured: outcome.captured,
                python_time,
            });
        }
        Err(Failure::Raised {
            timed_out: true,
            chain_frames,
            ..
        }) => CallErrorKind::Timeout {
            after: timeout,
            frames: chain_frames,
        },
        Err(Failure::Raised {
            exc_type,
            message,
            frames,
            traceback,
            ..
        }) => CallErrorKind::Raised {
            exc_type,
            message,
            frames,
            traceback,
        },
        Err(Failure::BadReturn(u)) => CallErrorKind::BadReturn {
            type_name: u.type_name,
            expected: snip.returns,
            path: u.path,
            reason: u.reason,
        },
        Err(Failure::Internal(message)) => CallErrorKind::Internal(message),
    };
    Err(CallError {
        owner: snip.owner.clone(),
        function: snip.function.clone(),
        kind: Box::new(kind),
        captured: outcome.captured,
    })
}

/// A module-name-safe slug of the owner text (``model `gpt-4o` `` → `model_gpt_4o`).
fn slug(owner: &str) -> String {
    let mut out = String::new();
    for c in owner.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
        if out.len() >= 40 {
            break;
        }
    }
    let trimmed = out.trim_end_matches('_');
    if trimmed.is_empty() {
        "snippet".to_owned()
    } else {
        trimmed.to_owned()
    }
}
