//! Calling a snippet function: sync calls on the snippet's worker threads with an injected
//! timeout exception and a short grace period, async calls on the shared asyncio loop under
//! `asyncio.timeout`, each call's printed output captured on its own (and bounded); snippets
//! loaded with `isolation: process` go to their worker processes instead.

use std::ffi::c_long;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyString, PyTuple};
use serde_json::Value;
use tokio::sync::oneshot;

use super::error::{CallError, CallErrorKind, Frame, Stuck};

use super::convert;
use super::http::{CallHttp, HttpLog, take_log};
use super::pool::{AfterJob, Pool};
use super::snippet::{Exec, Snippet, SnippetInner};
use super::{CallOutput, PythonRuntime, ReturnKind, RuntimeInner, STOP_GRACE, TIMEOUT_GRACE};

/// Per-call bookkeeping shared between the caller and the worker thread running the call.
pub(super) struct JobCtl {
    state: AtomicU8,
    /// Python thread ident of the worker (0 until the call starts).
    ident: AtomicU64,
    /// Set only while the worker is inside the snippet call; injection happens only then.
    in_python: AtomicBool,
    /// A timeout was injected into this call (it may still be pending when the call returns).
    injected: AtomicBool,
    /// The call's `Capture`, for reading what a stuck call printed. Taken back by the worker
    /// while it holds the GIL: a `Py` dropped on a tokio thread would go through pyo3's
    /// deferred-release pool, a contended lock on every call.
    buf: Mutex<Option<Py<PyAny>>>,
    /// When a worker picked the call up.
    started: OnceLock<Instant>,
}

pub(super) const RUNNING: u8 = 0;
pub(super) const DONE: u8 = 1;
pub(super) const ABANDONED: u8 = 2;

impl JobCtl {
    fn new() -> Self {
        Self {
            state: AtomicU8::new(RUNNING),
            ident: AtomicU64::new(0),
            in_python: AtomicBool::new(false),
            injected: AtomicBool::new(false),
            buf: Mutex::new(None),
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
pub(super) struct Outcome {
    captured: String,
    result: Result<(Value, Duration), Failure>,
}

impl Outcome {
    /// A call that overran its timeout and was given up on; `frames` show where it was.
    fn timed_out(frames: Vec<RawFrame>, captured: String, stuck: Option<Stuck>) -> Outcome {
        Outcome {
            captured,
            result: Err(Failure::GivenUp {
                frames: frames_from(frames),
                stuck,
            }),
        }
    }
}

pub(super) enum Failure {
    Raised {
        exc_type: String,
        message: String,
        frames: Vec<Frame>,
        /// Snippet frames of the deepest exception in the `__cause__`/`__context__` chain.
        chain_frames: Vec<Frame>,
        traceback: String,
        /// The chain contains the injected `SnippetTimeout`, or asyncio's deadline expired.
        timed_out: bool,
        /// The snippet raised `lfeval.RateLimited`: `Some(retry_after)` (`None` inside when it
        /// gave no time).
        rate_limited: Option<Option<Duration>>,
        /// The chain holds the `os._exit` guard's exception: the status it was called with.
        exited: Option<String>,
    },
    /// The call overran its deadline and its grace period.
    GivenUp {
        frames: Vec<Frame>,
        stuck: Option<Stuck>,
    },
    BadReturn(convert::Unconvertible),
    /// A `str` return value over the snippet's `max_return_bytes`.
    TooLarge {
        size: u64,
        limit: u64,
    },
    /// Not started: this many earlier calls are stuck in C code on abandoned threads.
    TooManyStuck(usize),
    Internal(String),
}

pub(super) type RawFrame = (String, usize, String, String);

pub(super) fn frames_from(raw: Vec<RawFrame>) -> Vec<Frame> {
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
    /// Calls the snippet function with `args` (extra trailing ones beyond its arity are dropped)
    /// within `timeout`. Never runs Python on the calling (tokio) thread; needs a tokio runtime.
    ///
    /// For sync snippets the budget starts when one of the snippet's worker threads (or worker
    /// processes) picks the call up, so bound in-flight calls to `workers` (as
    /// `max_concurrent_requests` does) to keep queueing out of it. A sync call that timed out
    /// returns within `timeout + 2 × STOP_GRACE`, an async one within `timeout +
    /// TIMEOUT_GRACE`, plus a few milliseconds. Dropping the returned future does not stop a
    /// call that already started.
    pub async fn call(&self, snippet: &Snippet, args: Vec<Value>, timeout: Duration) -> Result<CallOutput, CallError> {
        let log = HttpLog::default();
        let outcome = match &snippet.inner.exec {
            Exec::Process(workers) => return workers.call(&snippet.inner, args, timeout).await,
            Exec::InProcess { pool: Some(pool), .. } => self.call_sync(snippet, pool, args, timeout, &log).await,
            Exec::InProcess { pool: None, .. } => self.call_async(snippet, args, timeout, &log).await,
        };
        let mut result = finish(&snippet.inner, outcome, timeout);
        let http = take_log(&log);
        match &mut result {
            Ok(output) => output.http = http,
            Err(error) => error.http = http,
        }
        result
    }

    async fn call_sync(
        &self,
        snippet: &Snippet,
        pool: &Pool,
        args: Vec<Value>,
        timeout: Duration,
        log: &HttpLog,
    ) -> Outcome {
        if let Some(stuck) = pool.too_many_stuck() {
            return Outcome {
                captured: String::new(),
                result: Err(Failure::TooManyStuck(stuck)),
            };
        }
        let rt = match self.started() {
            Ok(rt) => Arc::clone(rt),
            Err(e) => return internal(&e.to_string()),
        };
        let ctl = Arc::new(JobCtl::new());
        let (done_tx, mut done_rx) = oneshot::channel::<Outcome>();
        let job = {
            let rt = Arc::clone(&rt);
            let snip = Arc::clone(&snippet.inner);
            let ctl = Arc::clone(&ctl);
            let log = Arc::clone(log);
            Box::new(move || {
                if done_tx.is_closed() {
                    return AfterJob::Continue; // the caller went away while the job was queued
                }
                let started = Instant::now();
                let _ = ctl.started.set(started);
                let http = CallHttp::new(snip.http_backend(), Some(started + timeout), log);
                let outcome = run_sync(&rt, &snip, &ctl, &args, http);
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

        // Deadline passed: ask the call to stop, then give it a short grace period. Pure Python
        // stops within milliseconds; what is still running after it is stuck in C code and
        // cannot be stopped from here, so it is reported at once and its thread given up.
        let inject = {
            let rt = Arc::clone(&rt);
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
        if let Ok(done) = tokio::time::timeout(STOP_GRACE, &mut done_rx).await {
            drop(inject);
            return done.unwrap_or_else(|_| internal("the worker thread dropped the call"));
        }
        // Counted before the thread is given up, so the thread cannot uncount itself first.
        pool.abandoned();
        if !ctl.abandon() {
            pool.not_abandoned();
            // Finished right at the end of the grace period; the result is on its way.
            return done_rx
                .await
                .unwrap_or_else(|_| internal("the worker thread dropped the call"));
        }
        // Stuck in C code (or swallowing the injected exception): give the thread up.
        let replaced = pool.spawn_worker();
        let probed = {
            let rt = Arc::clone(&rt);
            let ctl = Arc::clone(&ctl);
            let file = snippet.inner.file.clone();
            let probe = tokio::task::spawn_blocking(move || {
                Python::attach(|py| -> PyResult<(Vec<RawFrame>, String)> {
                    let ident = ctl.ident.load(Ordering::SeqCst);
                    let frames = rt.support.thread_frames.bind(py).call1((ident, file))?.extract()?;
                    let captured = match &*ctl.buf.lock().unwrap_or_else(PoisonError::into_inner) {
                        Some(buf) => capture_text(buf.bind(py)),
                        None => String::new(),
                    };
                    Ok((frames, captured))
                })
            });
            tokio::time::timeout(STOP_GRACE, probe).await
        };
        let (frames, captured, stuck) = match probed {
            Ok(Ok(Ok((frames, captured)))) => (frames, captured, Some(Stuck::InC)),
            // The probe could not even take the GIL: the stuck call holds it.
            Err(_) => (Vec::new(), String::new(), Some(Stuck::HoldsGil)),
            _ => (Vec::new(), String::new(), Some(Stuck::InC)),
        };
        if let Err(e) = replaced {
            return Outcome {
                captured,
                result: Err(Failure::Internal(format!(
                    "call timed out and no replacement worker thread could be started: {e}"
                ))),
            };
        }
        Outcome::timed_out(frames, captured, stuck)
    }

    async fn call_async(&self, snippet: &Snippet, args: Vec<Value>, timeout: Duration, log: &HttpLog) -> Outcome {
        let rt = match self.started() {
            Ok(rt) => Arc::clone(rt),
            Err(e) => return internal(&e.to_string()),
        };
        let (tx, rx) = oneshot::channel::<Outcome>();
        let submitted = {
            let rt = Arc::clone(&rt);
            let snip = Arc::clone(&snippet.inner);
            let log = Arc::clone(log);
            tokio::task::spawn_blocking(move || {
                Python::attach(|py| -> PyResult<Py<PyAny>> {
                    let deadline = Instant::now() + timeout + TIMEOUT_GRACE;
                    let http = Bound::new(py, CallHttp::new(snip.http_backend(), Some(deadline), log))?;
                    let py_args = build_args(py, &args, snip.arity)?;
                    let deliver = make_deliver(py, Arc::clone(&rt), Arc::clone(&snip), tx)?;
                    let Some(func) = snip.func() else {
                        return Err(pyo3::exceptions::PyRuntimeError::new_err("not loaded in this process"));
                    };
                    let holder = rt.support.submit.bind(py).call1((
                        func.bind(py),
                        py_args,
                        timeout.as_secs_f64(),
                        deliver,
                        http,
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
        let file = snippet.inner.file.clone();
        let probe = tokio::task::spawn_blocking(move || {
            Python::attach(|py| -> PyResult<(Vec<RawFrame>, String)> {
                let (loop_thread, frames, captured): (u64, Vec<RawFrame>, String) = rt
                    .support
                    .async_overdue
                    .bind(py)
                    .call1((holder.bind(py), file))?
                    .extract()?;
                if loop_thread != 0 {
                    // The loop thread is inside this call (blocking code in a coroutine): stop
                    // it there so the other async snippets get the loop back.
                    let exc = rt.support.timeout_exc.bind(py);
                    // SAFETY: attached; live exception class; `loop_thread` is the loop thread.
                    unsafe { ffi::PyThreadState_SetAsyncExc(loop_thread as c_long, exc.as_ptr()) };
                }
                Ok((frames, captured))
            })
        });
        let (frames, captured, stuck) = match tokio::time::timeout(TIMEOUT_GRACE, probe).await {
            Ok(Ok(Ok((frames, captured)))) => (frames, captured, None),
            Err(_) => (Vec::new(), String::new(), Some(Stuck::HoldsGil)),
            _ => (Vec::new(), String::new(), None),
        };
        Outcome::timed_out(frames, captured, stuck)
    }
}

pub(super) fn internal(message: &str) -> Outcome {
    Outcome {
        captured: String::new(),
        result: Err(Failure::Internal(message.to_owned())),
    }
}

/// Runs one sync call on the current (pool) thread.
pub(super) fn run_sync(
    rt: &RuntimeInner,
    snip: &SnippetInner,
    ctl: &JobCtl,
    args: &[Value],
    http: CallHttp,
) -> Outcome {
    Python::attach(|py| {
        // SAFETY: plain query of the current thread's id.
        let ident = unsafe { ffi::PyThread_get_thread_ident() } as u64;
        ctl.ident.store(ident, Ordering::SeqCst);
        let buf = match rt.support.capture.bind(py).call0() {
            Ok(buf) => buf,
            Err(e) => {
                return Outcome {
                    captured: String::new(),
                    result: Err(Failure::Internal(format!("cannot set up output capture: {e}"))),
                };
            }
        };
        if let Err(e) = Bound::new(py, http).and_then(|http| buf.setattr("http", http)) {
            return internal(&format!("cannot set up lfeval.http: {e}"));
        }
        *ctl.buf.lock().unwrap_or_else(PoisonError::into_inner) = Some(buf.clone().unbind());
        let py_args = match build_args(py, args, snip.arity) {
            Ok(a) => a,
            Err(e) => {
                return Outcome {
                    captured: String::new(),
                    result: Err(Failure::Internal(format!("cannot convert arguments: {e}"))),
                };
            }
        };
        let Some(func) = snip.func() else {
            return internal("the snippet is not loaded in this process");
        };
        let started = Instant::now();
        let cpu_before = thread_cpu();
        ctl.in_python.store(true, Ordering::SeqCst);
        let result = rt.support.call_sync.bind(py).call1((func.bind(py), py_args, &buf));
        ctl.in_python.store(false, Ordering::SeqCst);
        let cpu = thread_cpu().saturating_sub(cpu_before);
        rt.busy_ns
            .fetch_add(u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        rt.busy_calls.fetch_add(1, Ordering::Relaxed);
        if ctl.injected.load(Ordering::SeqCst) {
            // Drop a timeout injected too late to be delivered, so it cannot hit the thread's
            // next call. (Both flags change only while attached, so this cannot miss one.)
            // SAFETY: attached; a NULL exception clears the pending one of that thread.
            unsafe { ffi::PyThreadState_SetAsyncExc(ident as c_long, std::ptr::null_mut()) };
        }
        let python_time = started.elapsed();
        drop(ctl.buf.lock().unwrap_or_else(PoisonError::into_inner).take());
        let captured = capture_text(&buf);
        let result = match result {
            Ok(value) => convert_return(&value, snip.returns, snip.max_return_bytes).map(|v| (v, python_time)),
            Err(err) => Err(describe(rt, py, err.value(py).as_any(), &snip.file, false)),
        };
        Outcome { captured, result }
    })
}

/// CPU time of the calling thread so far.
pub(super) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; this clock exists on every Linux and macOS.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

pub(super) fn build_args<'py>(py: Python<'py>, args: &[Value], arity: usize) -> PyResult<Bound<'py, PyTuple>> {
    let items = args
        .iter()
        .take(arity)
        .map(|a| convert::to_py(py, a))
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, items)
}

/// The text of a `_lfeval_support.Capture`.
pub(super) fn capture_text(buf: &Bound<'_, PyAny>) -> String {
    buf.call_method0("text")
        .and_then(|t| t.extract::<String>())
        .unwrap_or_default()
}

pub(super) fn convert_return(
    value: &Bound<'_, PyAny>,
    returns: ReturnKind,
    max_bytes: Option<u64>,
) -> Result<Value, Failure> {
    match returns {
        ReturnKind::Str => match value.cast::<PyString>() {
            Ok(s) => {
                if let Some(limit) = max_bytes {
                    // Checked before the text is copied out of Python: a string is at least as
                    // many bytes as characters, and at most four times as many.
                    let chars = s.len().unwrap_or(0) as u64;
                    if chars > limit {
                        return Err(Failure::TooLarge { size: chars, limit });
                    }
                    if chars.saturating_mul(4) > limit {
                        let bytes = s.to_str().map_or(chars, |t| t.len() as u64);
                        if bytes > limit {
                            return Err(Failure::TooLarge { size: bytes, limit });
                        }
                    }
                }
                Ok(Value::String(s.to_string_lossy().into_owned()))
            }
            Err(_) => Err(Failure::BadReturn(convert::Unconvertible {
                type_name: convert::type_name(value),
                path: None,
                reason: None,
            })),
        },
        ReturnKind::Json => convert::from_py(value).map_err(Failure::BadReturn),
    }
}

/// What `_lfeval_support.describe` returns.
type Described = (
    String,
    String,
    Vec<RawFrame>,
    Vec<RawFrame>,
    String,
    bool,
    Option<f64>,
    Option<String>,
);

pub(super) fn describe(
    rt: &RuntimeInner,
    py: Python<'_>,
    exc: &Bound<'_, PyAny>,
    file: &str,
    deadline_expired: bool,
) -> Failure {
    let described = rt
        .support
        .describe
        .bind(py)
        .call1((exc, file))
        .and_then(|d| d.extract::<Described>());
    match described {
        Ok((exc_type, message, frames, chain_frames, traceback, is_timeout, rate_limited, exited)) => Failure::Raised {
            exc_type,
            message,
            frames: frames_from(frames),
            chain_frames: frames_from(chain_frames),
            traceback,
            timed_out: is_timeout || deadline_expired,
            rate_limited: rate_limited
                .map(|secs| (secs >= 0.0).then(|| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))),
            exited,
        },
        Err(e) => Failure::Internal(format!("cannot describe the snippet's exception: {e}")),
    }
}

/// The Python callable the loop thread invokes with `(status, value, captured, seconds)` when an
/// async call ends.
pub(super) fn make_deliver<'py>(
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
                convert_return(&value, snip.returns, snip.max_return_bytes).map(|v| (v, elapsed))
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

pub(super) fn finish(snip: &SnippetInner, outcome: Outcome, timeout: Duration) -> Result<CallOutput, CallError> {
    let kind = match outcome.result {
        Ok((value, python_time)) => {
            return Ok(CallOutput {
                value,
                captured: outcome.captured,
                python_time,
                http: Vec::new(),
            });
        }
        Err(Failure::Raised {
            timed_out: true,
            chain_frames,
            ..
        }) => CallErrorKind::Timeout {
            after: timeout,
            frames: chain_frames,
            stuck: None,
        },
        Err(Failure::GivenUp { frames, stuck }) => CallErrorKind::Timeout {
            after: timeout,
            frames,
            stuck,
        },
        Err(Failure::Raised {
            exited: Some(status),
            chain_frames,
            ..
        }) => CallErrorKind::Exit {
            status,
            frames: chain_frames,
        },
        Err(Failure::Raised {
            rate_limited: Some(retry_after),
            message,
            frames,
            ..
        }) => CallErrorKind::RateLimited {
            message,
            retry_after,
            frames,
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
        Err(Failure::TooLarge { size, limit }) => CallErrorKind::TooLarge { size, limit },
        Err(Failure::TooManyStuck(stuck)) => CallErrorKind::TooManyStuck { stuck },
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
        http: Vec::new(),
    })
}
