//! Loading a snippet: compiling its source into a module of its own (with its real file name
//! and line numbers), running its module-level code and finding the function to call; or, for
//! `isolation: process`, doing the same in a first worker process.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use pyo3::prelude::*;

use super::error::{LoadErrorKind, SnippetLoadError};

use super::http::HttpBackend;
use super::pool::Pool;
use super::worker::ProcessPool;
use super::{Isolation, PythonRuntime, ReturnKind};

/// A snippet to compile.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    /// Threads in this snippet's pool for sync calls (at least one), or worker processes for
    /// [`Isolation::Process`]. Unused for in-process `async def` snippets: they all share the
    /// asyncio loop and the caller bounds their concurrency.
    pub workers: usize,
    pub isolation: Isolation,
    /// A `str` return value longer than this many bytes fails the call (`None`: no bound).
    pub max_return_bytes: Option<u64>,
}

/// A loaded snippet. Cheap to clone; its module stays alive for the whole process.
#[derive(Clone)]
pub struct Snippet {
    pub(super) inner: Arc<SnippetInner>,
}

pub(super) struct SnippetInner {
    pub(super) owner: String,
    pub(super) file: String,
    pub(super) function: String,
    pub(super) module_name: String,
    pub(super) returns: ReturnKind,
    pub(super) max_return_bytes: Option<u64>,
    pub(super) is_async: bool,
    pub(super) arity: usize,
    pub(super) load_output: String,
    pub(super) exec: Exec,
    /// What `lfeval.http` in this snippet's calls goes through (the model's client).
    pub(super) http: OnceLock<Arc<dyn HttpBackend>>,
}

/// Where a loaded snippet's calls run.
pub(super) enum Exec {
    /// In this interpreter; `pool` runs sync calls (`None` for `async def` snippets).
    InProcess { func: Py<PyAny>, pool: Option<Pool> },
    /// In worker processes.
    Process(ProcessPool),
}

impl SnippetInner {
    /// The function object, when the snippet lives in this process.
    pub(super) fn func(&self) -> Option<&Py<PyAny>> {
        match &self.exec {
            Exec::InProcess { func, .. } => Some(func),
            Exec::Process(_) => None,
        }
    }

    pub(super) fn http_backend(&self) -> Option<Arc<dyn HttpBackend>> {
        self.http.get().cloned()
    }
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

    /// Gives the snippet's `lfeval.http` its backend (once; later calls are ignored). For
    /// `isolation: process` the workers have their own; this one then only `observe`s.
    pub fn set_http_backend(&self, backend: Arc<dyn HttpBackend>) {
        let _ = self.inner.http.set(backend);
    }

    /// The backend given with [`Snippet::set_http_backend`].
    pub fn http_backend(&self) -> Option<Arc<dyn HttpBackend>> {
        self.inner.http_backend()
    }

    /// Whether the snippet runs in worker processes.
    pub fn isolation(&self) -> Isolation {
        match self.inner.exec {
            Exec::InProcess { .. } => Isolation::InProcess,
            Exec::Process(_) => Isolation::Process,
        }
    }
}

/// `(function, is_async, arity, load output)` of a snippet that loaded.
pub(super) type Loaded = (Py<PyAny>, bool, usize, String);

impl PythonRuntime {
    /// Compiles `spec.source` into a fresh module, runs its module-level code and looks up the
    /// function. Runs snippet code (imports), so call it from a blocking context.
    // The error is the public contract and loading is far from hot; boxing would only add noise.
    #[allow(clippy::result_large_err)]
    pub fn load_snippet(&self, spec: SnippetSpec) -> Result<Snippet, SnippetLoadError> {
        let n = self.lazy.next_module.fetch_add(1, Ordering::SeqCst);
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
        if spec.isolation == Isolation::Process {
            let (workers, loaded) = ProcessPool::start(&self.lazy.options, &spec)?;
            return Ok(Snippet {
                inner: Arc::new(SnippetInner {
                    owner: spec.owner,
                    file: spec.file,
                    function: spec.function,
                    module_name: loaded.module_name,
                    returns: spec.returns,
                    max_return_bytes: spec.max_return_bytes,
                    is_async: loaded.is_async,
                    arity: loaded.arity,
                    load_output: loaded.load_output,
                    exec: Exec::Process(workers),
                    http: OnceLock::new(),
                }),
            });
        }

        let rt = self
            .started()
            .map_err(|e| load_error(LoadErrorKind::Other, e.to_string()))?;
        let loaded = Python::attach(|py| -> PyResult<Result<Loaded, SnippetLoadError>> {
            let display = spec.display_source.as_deref().unwrap_or(&spec.source);
            let res = rt.support.load.bind(py).call1((
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
                Pool::new(&label, spec.workers, Arc::clone(&rt.busy_ns))
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
                max_return_bytes: spec.max_return_bytes,
                is_async,
                arity,
                load_output,
                exec: Exec::InProcess { func, pool },
                http: OnceLock::new(),
            }),
        })
    }
}

/// A module-name-safe slug of the owner text (``model `gpt-4o` `` → `model_gpt_4o`).
pub(super) fn slug(owner: &str) -> String {
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
