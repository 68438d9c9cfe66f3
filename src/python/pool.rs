//! A fixed-size pool of dedicated OS threads for one snippet's synchronous calls.
//!
//! Each thread keeps one Python thread state for its whole life, so a call only has to take the
//! GIL, and the thread's identity (what a timeout injects into) stays stable. A job tells the
//! worker whether to keep serving; a job whose caller gave up on it exits its thread, and the
//! caller starts a replacement, so a snippet stuck in C code never shrinks the pool. Abandoned
//! threads are counted until they finally return; past [`Pool::stuck_limit`] of them the
//! snippet's calls fail fast instead of piling up more threads. A [`Throttle`] decides how many
//! of the threads run calls at once.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use pyo3::ffi;

use super::call::thread_cpu;
use super::throttle::Throttle;

/// What a worker does after running a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterJob {
    Continue,
    /// The job's caller abandoned it and a replacement worker already exists.
    Exit,
}

pub(super) type Job = Box<dyn FnOnce() -> AfterJob + Send + 'static>;

pub(super) struct Pool {
    tx: crossbeam_channel::Sender<Job>,
    shared: Arc<Shared>,
}

struct Shared {
    /// Every idle worker waits on the channel itself, so a job wakes exactly one thread (a
    /// receiver behind a mutex woke a second one, to queue for the lock, on every job).
    rx: crossbeam_channel::Receiver<Job>,
    label: String,
    spawned: AtomicUsize,
    live: AtomicUsize,
    /// Threads whose call was given up on and that have not returned yet.
    stuck: AtomicUsize,
    size: usize,
    throttle: Throttle,
}

impl Pool {
    /// Starts `size` (at least one) workers. The interpreter must already be initialised;
    /// `busy_ns` counts the CPU time of every sync snippet call in the process.
    pub(super) fn new(label: &str, size: usize, busy_ns: Arc<AtomicU64>) -> io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let pool = Self {
            tx,
            shared: Arc::new(Shared {
                rx,
                label: label.to_owned(),
                spawned: AtomicUsize::new(0),
                live: AtomicUsize::new(0),
                stuck: AtomicUsize::new(0),
                size: size.max(1),
                throttle: Throttle::new(size, busy_ns),
            }),
        };
        for _ in 0..size.max(1) {
            pool.spawn_worker()?;
        }
        Ok(pool)
    }

    pub(super) fn submit(&self, job: Job) -> Result<(), String> {
        if self.shared.live.load(Ordering::SeqCst) == 0 {
            return Err("no python worker thread is left for this snippet".to_owned());
        }
        self.tx
            .send(job)
            .map_err(|_| "the snippet's worker threads are gone".to_owned())
    }

    /// How many abandoned threads a snippet may have before its calls fail fast: as many as it
    /// has workers (a network outage can strand every call at once), and at least 8.
    fn stuck_limit(&self) -> usize {
        self.shared.size.max(8)
    }

    /// `Some(count)` when so many threads are stuck that no new call should start.
    pub(super) fn too_many_stuck(&self) -> Option<usize> {
        let stuck = self.shared.stuck.load(Ordering::SeqCst);
        (stuck >= self.stuck_limit()).then_some(stuck)
    }

    /// Records that a call's thread was given up on; it counts until its job returns, and its
    /// place goes to the replacement.
    pub(super) fn abandoned(&self) {
        self.shared.stuck.fetch_add(1, Ordering::SeqCst);
        self.shared.throttle.give_up();
    }

    /// Takes back [`Pool::abandoned`] for a call that finished after all.
    pub(super) fn not_abandoned(&self) {
        self.shared.stuck.fetch_sub(1, Ordering::SeqCst);
        self.shared.throttle.reenter();
    }

    /// Starts one more worker; called when a job (and with it its thread) was abandoned.
    pub(super) fn spawn_worker(&self) -> io::Result<()> {
        let n = self.shared.spawned.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&self.shared);
        self.shared.live.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("lfeval-py-{}-{n}", self.shared.label))
            .spawn(move || worker(&shared));
        if spawned.is_err() {
            self.shared.live.fetch_sub(1, Ordering::SeqCst);
        }
        spawned.map(drop)
    }
}

fn worker(shared: &Shared) {
    let _state = ThreadState::keep();
    // Only a worker's first call is timed: the throttle needs the pool's first call to finish,
    // which is always some worker's first, and thread CPU time costs a system call.
    let mut first = true;
    loop {
        shared.throttle.enter();
        let Ok(job) = shared.rx.recv() else { break };
        let measured = std::mem::take(&mut first).then(|| (Instant::now(), thread_cpu()));
        if job() == AfterJob::Exit {
            // The call that was given up on has returned at last: the thread is no longer stuck
            // (its place went to its replacement when it was given up).
            shared.stuck.fetch_sub(1, Ordering::SeqCst);
            break;
        }
        let first_call = measured.map(|(started, cpu)| (started.elapsed(), thread_cpu().saturating_sub(cpu)));
        shared.throttle.leave(first_call);
    }
    shared.live.fetch_sub(1, Ordering::SeqCst);
}

/// Owns the Python thread state of a worker thread for as long as the thread lives, so that
/// `Python::attach` inside jobs reuses it instead of creating and destroying one per call.
struct ThreadState {
    gil_state: ffi::PyGILState_STATE,
    tstate: *mut ffi::PyThreadState,
}

impl ThreadState {
    fn keep() -> Self {
        // SAFETY: pools are created only after `initialize` brought the interpreter up, and the
        // interpreter is never finalised; Ensure creates this thread's state and takes the GIL,
        // SaveThread releases the GIL again while keeping the state.
        unsafe {
            let gil_state = ffi::PyGILState_Ensure();
            let tstate = ffi::PyEval_SaveThread();
            Self { gil_state, tstate }
        }
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        // SAFETY: mirrors `keep` on the same thread: reattach the saved state, then let the
        // matching Release delete it.
        unsafe {
            ffi::PyEval_RestoreThread(self.tstate);
            ffi::PyGILState_Release(self.gil_state);
        }
    }
}
