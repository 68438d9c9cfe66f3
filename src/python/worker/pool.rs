//! The parent side of `isolation: process`: a pool of worker processes for one snippet, sized
//! by the model's `max_concurrent_requests`. Workers start on demand (the first one when the
//! snippet is loaded, so load errors surface before any request), serve one call at a time,
//! and are killed, with their process group, when a call overruns its deadline or ends
//! abnormally; a replacement is started right away.

use std::collections::HashSet;
use std::io::{self, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::frame;
use super::{Loaded, Reply, Request};
use crate::python::error::{CallError, CallErrorKind, LoadErrorKind, SnippetLoadError, Stuck};
use crate::python::snippet::SnippetInner;
use crate::python::{CallOutput, PythonOptions, STOP_GRACE, SnippetSpec, TIMEOUT_GRACE};

/// How long past a call's deadline (and the worker's own grace periods, in which it reports a
/// timeout with the snippet's frames) lfeval waits for an answer before killing the worker.
const KILL_AFTER: Duration = Duration::from_secs(1);
/// How long a dropped pool gives idle workers to exit on their own (flushing their output).
const EXIT_WAIT: Duration = Duration::from_millis(200);
/// Bound on one answer when the snippet has no `max_return_bytes`.
const MAX_REPLY: u64 = 4 * 1024 * 1024 * 1024;

/// Process groups of every live worker, killed by [`shutdown`] when lfeval exits so that no
/// worker stuck in C code outlives it.
static LIVE: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Kills every worker process still alive and reaps it. Call before lfeval exits: once lfeval
/// is gone, none of its workers is left, not even as a zombie waiting for init.
pub fn shutdown() {
    let live = LIVE.lock().unwrap_or_else(PoisonError::into_inner).take();
    let live: Vec<i32> = live.into_iter().flatten().collect();
    for &pid in &live {
        kill_group(pid);
    }
    for pid in live {
        // SAFETY: `waitpid` on a child this process started; a null status pointer is allowed.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}

/// A snippet's worker processes. Cheap to share; dropping it ends the idle workers.
pub struct ProcessPool {
    shared: Arc<Shared>,
}

struct Shared {
    exe: PathBuf,
    python_env: Option<PathBuf>,
    spec: SnippetSpec,
    idle: Mutex<Vec<Worker>>,
    permits: tokio::sync::Semaphore,
    size: usize,
    max_reply: u64,
}

struct Worker {
    child: Child,
    pid: i32,
    /// `None` once closed, which tells the worker to exit.
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
}

enum StartError {
    Load(SnippetLoadError),
    Other(String),
}

impl ProcessPool {
    /// Starts the first worker and loads the snippet in it; a snippet that does not load
    /// fails here with the worker's own load error.
    pub(in crate::python) fn start(
        options: &PythonOptions,
        spec: &SnippetSpec,
    ) -> Result<(ProcessPool, Loaded), SnippetLoadError> {
        let exe = match &options.worker_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe().map_err(|e| {
                load_error(
                    spec,
                    format!("cannot find the lfeval executable to start worker processes: {e}"),
                )
            })?,
        };
        let max_reply = spec
            .max_return_bytes
            // JSON escapes a character as up to 6 bytes; the rest of an answer is small.
            .map_or(MAX_REPLY, |b| b.saturating_mul(6).saturating_add(16 * 1024 * 1024));
        let size = spec.workers.max(1);
        let shared = Arc::new(Shared {
            exe,
            python_env: options.python_env.clone(),
            spec: spec.clone(),
            idle: Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(size),
            size,
            max_reply,
        });
        let (worker, loaded) = shared.start_worker().map_err(|e| match e {
            StartError::Load(e) => e,
            StartError::Other(message) => load_error(spec, message),
        })?;
        shared.put_idle(worker);
        Ok((ProcessPool { shared }, loaded))
    }

    pub(in crate::python) async fn call(
        &self,
        snip: &SnippetInner,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<CallOutput, CallError> {
        let fail = |kind| CallError {
            owner: snip.owner.clone(),
            function: snip.function.clone(),
            kind: Box::new(kind),
            captured: String::new(),
            http: Vec::new(),
        };
        let Ok(_permit) = self.shared.permits.acquire().await else {
            return Err(fail(CallErrorKind::Internal("the worker pool is closed".to_owned())));
        };
        let worker = match self.shared.take_idle() {
            Some(worker) => worker,
            None => {
                let shared = Arc::clone(&self.shared);
                match tokio::task::spawn_blocking(move || shared.start_worker()).await {
                    Ok(Ok((worker, _))) => worker,
                    Ok(Err(StartError::Load(e))) => {
                        return Err(fail(CallErrorKind::Internal(format!(
                            "a new worker process could not load the snippet: {}",
                            e.message
                        ))));
                    }
                    Ok(Err(StartError::Other(message))) => return Err(fail(CallErrorKind::Internal(message))),
                    Err(e) => return Err(fail(CallErrorKind::Internal(e.to_string()))),
                }
            }
        };
        let pid = worker.pid;
        let max_reply = self.shared.max_reply;
        let request = Request::Call { args, timeout };
        let mut job = tokio::task::spawn_blocking(move || {
            let mut worker = worker;
            let reply = worker.exchange(&request, max_reply);
            (worker, reply)
        });
        // The worker stops a pure-Python call itself and reports a stuck one after its grace
        // periods; past those it is wedged, and only killing it helps.
        let limit = timeout + STOP_GRACE * 2 + TIMEOUT_GRACE * 2 + KILL_AFTER;
        let answered = tokio::time::timeout(limit, &mut job).await;
        match answered {
            Ok(Ok((worker, Ok(Reply::Done(result))))) => match result {
                Ok(output) => {
                    self.shared.put_idle(worker);
                    Ok(output)
                }
                Err(mut error) => {
                    if let CallErrorKind::Timeout { stuck, .. } = &mut *error.kind {
                        // Whatever the call was stuck in, the worker goes with it.
                        if stuck.is_some() {
                            *stuck = Some(Stuck::Killed);
                        }
                        tokio::task::spawn_blocking(move || drop(worker));
                        self.replace();
                    } else {
                        self.shared.put_idle(worker);
                    }
                    Err(error)
                }
            },
            Ok(Ok((mut worker, Ok(other)))) => {
                let status = worker.reap();
                self.replace();
                Err(fail(CallErrorKind::Internal(format!(
                    "the worker process answered out of turn ({}; {status})",
                    reply_name(&other)
                ))))
            }
            Ok(Ok((mut worker, Err(e)))) => {
                let status = worker.reap();
                self.replace();
                if e.kind() == io::ErrorKind::InvalidData {
                    return Err(fail(CallErrorKind::Internal(format!(
                        "cannot read the worker's answer: {e}"
                    ))));
                }
                Err(fail(CallErrorKind::WorkerExited { status }))
            }
            Ok(Err(e)) => {
                self.replace();
                Err(fail(CallErrorKind::Internal(format!("the worker call failed: {e}"))))
            }
            Err(_) => {
                // Killed while the job still owns the (unreaped) child, so the pid is ours;
                // the job then reads end-of-file, and dropping the worker reaps it.
                kill_group(pid);
                drop(job);
                self.replace();
                Err(fail(CallErrorKind::Timeout {
                    after: timeout,
                    frames: Vec::new(),
                    stuck: Some(Stuck::Killed),
                }))
            }
        }
    }

    /// Starts a worker in the background to stand in for one that was killed.
    fn replace(&self) {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            if let Ok((worker, _)) = shared.start_worker() {
                shared.put_idle(worker);
            }
        });
    }
}

impl Shared {
    fn take_idle(&self) -> Option<Worker> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    fn put_idle(&self, worker: Worker) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.size {
            idle.push(worker);
        }
    }

    fn start_worker(&self) -> Result<(Worker, Loaded), StartError> {
        let mut command = Command::new(&self.exe);
        if let Some(env) = &self.python_env {
            command.arg("--python-env").arg(env);
        }
        command
            .arg("__worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(match crate::stdio::stray_output() {
                Some(fd) => Stdio::from(fd),
                None => Stdio::inherit(),
            })
            // Its own group: a kill reaches what the snippet started, and Ctrl-C in the
            // terminal goes to lfeval alone, which then stops its workers.
            .process_group(0);
        let mut child = command.spawn().map_err(|e| {
            StartError::Other(format!(
                "cannot start a worker process (`{} __worker`): {e}",
                self.exe.display()
            ))
        })?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(StartError::Other("the worker process has no pipes".to_owned()));
        };
        let pid = child.id() as i32;
        LIVE.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(HashSet::new)
            .insert(pid);
        let mut worker = Worker {
            child,
            pid,
            input: Some(input),
            output: BufReader::new(output),
        };
        match worker.exchange(&Request::Load(self.spec.clone()), self.max_reply) {
            Ok(Reply::Loaded(loaded)) => Ok((worker, loaded)),
            Ok(Reply::LoadFailed(e)) => Err(StartError::Load(e)),
            Ok(Reply::Fatal(message)) => Err(StartError::Other(format!("the worker process failed: {message}"))),
            Ok(other) => Err(StartError::Other(format!(
                "the worker process answered `{}` to loading the snippet",
                reply_name(&other)
            ))),
            Err(e) => {
                let status = worker.reap();
                Err(StartError::Other(format!(
                    "the worker process ended while loading the snippet ({status}): {e}"
                )))
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        for worker in &mut idle {
            worker.input = None;
        }
        let deadline = Instant::now() + EXIT_WAIT;
        while Instant::now() < deadline && idle.iter_mut().any(|w| matches!(w.child.try_wait(), Ok(None))) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Worker {
    fn exchange(&mut self, request: &Request, max_reply: u64) -> io::Result<Reply> {
        let input = self
            .input
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "the worker's channel is closed"))?;
        frame::write(input, request)?;
        frame::read(&mut self.output, max_reply)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the worker process closed its channel"))
    }

    /// Makes sure the process is gone and says how it ended.
    fn reap(&mut self) -> String {
        self.input = None;
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Ok(status),
            _ => {
                // It closed the channel but lives on, or it is dying: either way, end it.
                kill_group(self.pid);
                self.child.wait()
            }
        };
        forget(self.pid);
        match status {
            Ok(status) => describe_exit(status),
            Err(e) => format!("its exit status is unknown: {e}"),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            forget(self.pid);
            return;
        }
        kill_group(self.pid);
        let _ = self.child.wait();
        forget(self.pid);
    }
}

fn forget(pid: i32) {
    if let Some(live) = LIVE.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
        live.remove(&pid);
    }
}

/// SIGKILL to the worker's process group (it is the group's leader).
fn kill_group(pid: i32) {
    if pid > 0 {
        // SAFETY: plain syscall; the group exists at least as long as its unreaped leader.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                libc::SIGSEGV => "SIGSEGV",
                libc::SIGABRT => "SIGABRT",
                libc::SIGBUS => "SIGBUS",
                libc::SIGFPE => "SIGFPE",
                libc::SIGILL => "SIGILL",
                libc::SIGKILL => "SIGKILL",
                libc::SIGTERM => "SIGTERM",
                _ => return format!("killed by signal {signal}"),
            };
            format!("killed by {name}")
        }
        None => status.to_string(),
    }
}

fn reply_name(reply: &Reply) -> &'static str {
    match reply {
        Reply::Loaded(_) => "loaded",
        Reply::LoadFailed(_) => "load failed",
        Reply::Done(_) => "done",
        Reply::Fatal(_) => "fatal",
    }
}

fn load_error(spec: &SnippetSpec, message: String) -> SnippetLoadError {
    SnippetLoadError {
        owner: spec.owner.clone(),
        file: spec.file.clone(),
        line: spec.line_offset + 1,
        col: 1,
        kind: LoadErrorKind::Other,
        message,
        source_line: None,
        traceback: String::new(),
        captured: String::new(),
    }
}
