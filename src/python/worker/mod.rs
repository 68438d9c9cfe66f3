//! `isolation: process`: a model's snippet runs in worker processes, each one lfeval itself
//! re-executed as the hidden `lfeval __worker` command. A worker brings the interpreter up
//! exactly as lfeval does (same virtualenv handling, same support module), loads the snippet
//! the same way and calls it through the same [`PythonRuntime::call`], so captured output,
//! tracebacks and timeouts read the same as in-process; only the answers cross a pipe, as
//! [`frame`]s of the [`Request`]/[`Reply`] protocol.
//!
//! What the process boundary adds: a call that overruns its timeout is ended by SIGKILL to the
//! worker's process group (whatever it is stuck in, GIL or not) and a fresh worker replaces
//! it; a crash (`os._exit` through some back door, a segfault in a C extension) costs that one
//! call; and each worker has its own GIL, so CPU-bound snippets use every core. The parent
//! side is [`ProcessPool`], the worker side [`serve`].

mod frame;
mod pool;
mod serve;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use pool::{ProcessPool, shutdown};
pub use serve::{HttpFactory, serve};

use super::{CallError, CallOutput, SnippetLoadError, SnippetSpec};

#[cfg(doc)]
use super::PythonRuntime;

/// What lfeval asks of a worker.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// The first request: load this snippet (in-process, one worker thread).
    Load(SnippetSpec),
    /// Call the loaded snippet.
    Call { args: Vec<Value>, timeout: Duration },
}

/// What a worker answers.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Loaded(Loaded),
    LoadFailed(SnippetLoadError),
    Done(Result<CallOutput, CallError>),
    /// The worker cannot go on (its interpreter did not start, a request made no sense).
    Fatal(String),
}

/// Facts about a snippet a worker loaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Loaded {
    pub module_name: String,
    pub is_async: bool,
    pub arity: usize,
    pub load_output: String,
}
