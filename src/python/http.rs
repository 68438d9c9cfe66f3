//! `lfeval.http`: HTTP for snippets on lfeval's Rust client instead of Python's. The model
//! layer supplies an [`HttpBackend`] (its pooled reqwest client, its `max_response_bytes`, its
//! gate); this file is the Python face of it: the native `_lfeval_http` module that
//! `support.py`'s `lfeval.http` wraps, the `Response` and stream objects, and the per-call
//! [`HttpExchange`] log a call hands back as evidence.
//!
//! A sync request waits with the GIL released on the calling thread (the future is driven
//! right there, no hand-off); an async one runs on the HTTP runtime and resolves an asyncio
//! future. Either way a request never outlives its call: it is dropped at the call's deadline
//! (raising the snippet timeout) or when asyncio cancels the awaiting task.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use serde::{Deserialize, Serialize};

use crate::charset;
use crate::millis;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// What [`HttpBackend::send`] resolves to: the head, and the body still to read.
pub type Sent = Result<(HttpHead, Box<dyn HttpBody>), HttpError>;
pub type ChunkFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, HttpError>> + Send + 'a>>;

/// A request as a snippet made it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The snippet's own `timeout=` for this request (the call's deadline applies regardless).
    pub timeout: Option<Duration>,
}

/// The status line and headers, with when they came.
#[derive(Debug, Clone)]
pub struct HttpHead {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub content_length: Option<u64>,
    /// Spent opening a new connection for this request (zero on a reused one).
    pub connect: Duration,
    /// From sending the request to its response head.
    pub first_byte: Duration,
}

/// A response body, read chunk by chunk.
pub trait HttpBody: Send {
    fn chunk(&mut self) -> ChunkFuture<'_>;
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    #[error("timed out after {}", crate::diagnostic::format_duration(*.0))]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("{0}")]
    Other(String),
}

/// What a model gives its snippet's `lfeval.http`.
pub trait HttpBackend: Send + Sync + 'static {
    fn send(&self, request: HttpRequest) -> BoxFuture<Sent>;
    /// Bodies longer than this fail the request while they are read.
    fn max_response_bytes(&self) -> u64;
    /// Called with every finished exchange (a 429 or 5xx with `Retry-After` pauses the model).
    fn observe(&self, _exchange: &HttpExchange) {}
}

/// One request a snippet made and what came back: call evidence, as written to the run dir
/// (through the masking serializer; credential headers are masked here already).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpExchange {
    pub method: String,
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub streamed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `Retry-After` of a 429 or 5xx, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<f64>,
    pub connect_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_byte_ms: Option<f64>,
    /// Streams: when the first event (`data:` line, or first non-empty line) arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<f64>,
    /// From sending the request to the end of its body.
    pub network_ms: f64,
}

/// How much of each body the evidence keeps.
const EVIDENCE_BODY: usize = 64 * 1024;

/// Header names whose values never go into evidence.
fn is_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "auth",
        "key",
        "token",
        "secret",
        "password",
        "cookie",
        "signature",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

fn masked_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let shown = if is_credential(k) {
                "<masked>".to_owned()
            } else {
                v.clone()
            };
            (k.clone(), shown)
        })
        .collect()
}

/// A body's text for evidence, its head kept when it is long.
fn evidence_text(bytes: &[u8]) -> String {
    if bytes.len() <= EVIDENCE_BODY {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut cut = EVIDENCE_BODY;
    while cut > 0 && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    format!(
        "{}…\n[{} more bytes not kept]",
        String::from_utf8_lossy(&bytes[..cut]),
        bytes.len() - cut
    )
}

/// `Retry-After`, in either of its forms.
fn retry_after_of(headers: &[(String, String)]) -> Option<Duration> {
    let (_, value) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))?;
    crate::retry_after::parse(value)
}

/// The exchanges of one call, shared by the call and the requests it makes.
pub(super) type HttpLog = Arc<Mutex<Vec<HttpExchange>>>;

pub(super) fn take_log(log: &HttpLog) -> Vec<HttpExchange> {
    std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner))
}

/// The backend for snippets that have none of their own (scorers, threads a snippet started).
static DEFAULT_BACKEND: OnceLock<Arc<dyn HttpBackend>> = OnceLock::new();

/// Sets the backend `lfeval.http` uses outside model calls (the first one set stays).
pub fn set_default_backend(backend: Arc<dyn HttpBackend>) {
    let _ = DEFAULT_BACKEND.set(backend);
}

/// The runtime `lfeval.http` requests run on: sync ones are driven on the snippet's own thread
/// (`block_on`), async ones are spawned here; either way connections live in its reactor.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lfeval-http")
            .enable_all()
            .build()
            // Thread creation failing at this point leaves nothing sensible to do.
            .unwrap_or_else(|_| std::process::abort())
    });
    &RUNTIME
}

/// The per-call context a snippet's requests use (attached to the call's output capture).
#[pyclass(frozen, module = "lfeval.http")]
pub(super) struct CallHttp {
    backend: Option<Arc<dyn HttpBackend>>,
    deadline: Option<Instant>,
    log: Option<HttpLog>,
}

impl CallHttp {
    pub(super) fn new(backend: Option<Arc<dyn HttpBackend>>, deadline: Option<Instant>, log: HttpLog) -> CallHttp {
        CallHttp {
            backend: backend.or_else(|| DEFAULT_BACKEND.get().cloned()),
            deadline,
            log: Some(log),
        }
    }
}

/// Where one request's record goes when it ends, however it ends (a dropped future records
/// itself as cancelled).
struct Recording {
    exchange: HttpExchange,
    started: Instant,
    backend: Arc<dyn HttpBackend>,
    log: Option<HttpLog>,
    body: Vec<u8>,
    done: bool,
}

impl Recording {
    fn new(request: &HttpRequest, backend: Arc<dyn HttpBackend>, log: Option<HttpLog>) -> Recording {
        Recording {
            exchange: HttpExchange {
                method: request.method.clone(),
                url: request.url.clone(),
                request_headers: masked_headers(&request.headers),
                request_body: (!request.body.is_empty()).then(|| evidence_text(&request.body)),
                ..HttpExchange::default()
            },
            started: Instant::now(),
            backend,
            log,
            body: Vec::new(),
            done: false,
        }
    }

    fn head(&mut self, head: &HttpHead) {
        self.exchange.status = Some(head.status);
        self.exchange.response_headers = head.headers.clone();
        self.exchange.connect_ms = millis::of(head.connect);
        self.exchange.first_byte_ms = Some(millis::of(head.first_byte));
        if head.status == 429 || (500..600).contains(&head.status) {
            self.exchange.retry_after_ms = retry_after_of(&head.headers).map(millis::of);
        }
    }

    /// Keeps what the evidence holds of the body.
    fn keep(&mut self, chunk: &[u8]) {
        let room = (EVIDENCE_BODY + 1).saturating_sub(self.body.len());
        self.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    fn fail(&mut self, error: &str) {
        self.exchange.error = Some(error.to_owned());
    }

    fn end(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.exchange.network_ms = millis::of(self.started.elapsed());
        if !self.body.is_empty() {
            self.exchange.response_body = Some(evidence_text(&self.body));
        }
        self.backend.observe(&self.exchange);
        if let Some(log) = &self.log {
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(std::mem::take(&mut self.exchange));
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if !self.done && self.exchange.error.is_none() {
            self.exchange.error = Some("cancelled".to_owned());
        }
        self.end();
    }
}

/// Why a request produced no response for the snippet.
enum Failed {
    Http(HttpError),
    /// The call's own deadline passed.
    Deadline,
    TooLarge {
        size: Option<u64>,
        limit: u64,
    },
    Unavailable(&'static str),
}

impl Failed {
    fn text(&self) -> String {
        match self {
            Failed::Http(e) => e.to_string(),
            Failed::Deadline => "the snippet call timed out".to_owned(),
            Failed::TooLarge {
                size: Some(size),
                limit,
            } => format!(
                "response too large ({} > {})",
                crate::diagnostic::format_bytes(*size),
                crate::diagnostic::format_bytes(*limit)
            ),
            Failed::TooLarge { size: None, limit } => {
                format!("response too large (over {})", crate::diagnostic::format_bytes(*limit))
            }
            Failed::Unavailable(why) => (*why).to_owned(),
        }
    }

    /// The Python exception: `lfeval.http`'s own classes, or the snippet timeout at the deadline.
    fn to_py(&self, py: Python<'_>) -> PyErr {
        let class = match self {
            Failed::Deadline => "SnippetTimeout",
            Failed::Http(HttpError::Timeout(_)) => "HttpTimeout",
            Failed::Http(HttpError::Connect(_)) => "HttpConnectError",
            Failed::Http(HttpError::Other(_)) => "HttpError",
            Failed::TooLarge { .. } => "HttpTooLarge",
            Failed::Unavailable(_) => return PyRuntimeError::new_err(self.text()),
        };
        match support(py, class).and_then(|c| c.call1((self.text(),))) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    }
}

fn support<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("_lfeval_support")?.getattr(name)
}

/// Runs `future` until the call's deadline, if it has one.
async fn until<T>(deadline: Option<Instant>, future: impl Future<Output = T>) -> Result<T, Failed> {
    match deadline {
        Some(at) => tokio::time::timeout_at(tokio::time::Instant::from_std(at), future)
            .await
            .map_err(|_| Failed::Deadline),
        None => Ok(future.await),
    }
}

struct Context {
    backend: Arc<dyn HttpBackend>,
    deadline: Option<Instant>,
    log: Option<HttpLog>,
}

fn context(ctx: Option<&Bound<'_, CallHttp>>) -> Result<Context, Failed> {
    let (backend, deadline, log) = match ctx {
        Some(ctx) => {
            let ctx = ctx.get();
            (ctx.backend.clone(), ctx.deadline, ctx.log.clone())
        }
        None => (DEFAULT_BACKEND.get().cloned(), None, None),
    };
    let backend = backend.ok_or(Failed::Unavailable(
        "lfeval.http is not available here: it works in snippets lfeval runs",
    ))?;
    Ok(Context { backend, deadline, log })
}

/// One whole request: head and body, the body held to `max_response_bytes`.
async fn fetch(ctx: Context, request: HttpRequest) -> Result<Response, Failed> {
    let mut rec = Recording::new(&request, Arc::clone(&ctx.backend), ctx.log.clone());
    let url = request.url.clone();
    let limit = ctx.backend.max_response_bytes();
    let result = until(ctx.deadline, async {
        let (head, mut body) = ctx.backend.send(request).await.map_err(Failed::Http)?;
        rec.head(&head);
        if let Some(len) = head.content_length
            && len > limit
        {
            return Err(Failed::TooLarge { size: Some(len), limit });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = body.chunk().await.map_err(Failed::Http)? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(Failed::TooLarge { size: None, limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((head, bytes))
    })
    .await
    .and_then(|r| r);
    match result {
        Ok((head, bytes)) => {
            rec.keep(&bytes);
            let elapsed = rec.started.elapsed();
            rec.end();
            Ok(Response {
                status: head.status,
                reason: head.reason,
                headers: head.headers,
                body: bytes,
                url,
                elapsed,
            })
        }
        Err(e) => {
            rec.fail(&e.text());
            rec.end();
            Err(e)
        }
    }
}

fn build_request(
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<f64>,
) -> PyResult<HttpRequest> {
    let timeout = match timeout {
        Some(secs) => Some(Duration::try_from_secs_f64(secs).map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!("timeout must be a number of seconds > 0, got {secs}"))
        })?),
        None => None,
    };
    Ok(HttpRequest {
        method: method.to_ascii_uppercase(),
        url,
        headers,
        body: body.unwrap_or_default(),
        timeout,
    })
}

/// `lfeval.http.request(...)` for sync snippets: waits with the GIL released.
#[pyfunction]
#[pyo3(signature = (ctx, method, url, headers, body, timeout))]
fn request(
    py: Python<'_>,
    ctx: Option<Bound<'_, CallHttp>>,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<f64>,
) -> PyResult<Response> {
    let request = build_request(method, url, headers, body, timeout)?;
    let ctx = context(ctx.as_ref()).map_err(|e| e.to_py(py))?;
    py.detach(|| runtime().block_on(fetch(ctx, request)))
        .map_err(|e| e.to_py(py))
}

/// The async half: `start(...)` runs the request on the HTTP runtime and calls
/// `deliver(ok, value)` (from a thread of its own, holding the GIL) when it ends.
#[pyfunction]
#[pyo3(signature = (ctx, method, url, headers, body, timeout, deliver))]
#[allow(clippy::too_many_arguments)]
fn start(
    py: Python<'_>,
    ctx: Option<Bound<'_, CallHttp>>,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<f64>,
    deliver: Py<PyAny>,
) -> PyResult<Pending> {
    let request = build_request(method, url, headers, body, timeout)?;
    let ctx = context(ctx.as_ref()).map_err(|e| e.to_py(py))?;
    let task = runtime().spawn(async move {
        let result = fetch(ctx, request).await;
        deliver_result(deliver, move |py| match result {
            Ok(response) => Bound::new(py, response).map(Bound::into_any),
            Err(e) => Err(e.to_py(py)),
        })
        .await;
    });
    Ok(Pending {
        abort: task.abort_handle(),
    })
}

/// Hands a result to Python off the runtime's workers (taking the GIL may take a while).
async fn deliver_result<F>(deliver: Py<PyAny>, make: F)
where
    F: for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyAny>> + Send + 'static,
{
    let _ = tokio::task::spawn_blocking(move || {
        Python::attach(|py| {
            let (ok, value) = match make(py) {
                Ok(value) => (true, value),
                Err(e) => (false, e.into_value(py).into_bound(py).into_any()),
            };
            if let Err(e) = deliver.bind(py).call1((ok, value)) {
                e.write_unraisable(py, None);
            }
        });
    })
    .await;
}

/// A request an async snippet awaits; `cancel()` drops it (asyncio cancelled the await).
#[pyclass(frozen, module = "lfeval.http")]
struct Pending {
    abort: tokio::task::AbortHandle,
}

#[pymethods]
impl Pending {
    fn cancel(&self) {
        self.abort.abort();
    }
}

/// A response read whole.
#[pyclass(frozen, module = "lfeval.http", name = "Response")]
pub(super) struct Response {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    url: String,
    elapsed: Duration,
}

fn headers_dict<'py>(py: Python<'py>, headers: &[(String, String)]) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in headers {
        let key = k.to_ascii_lowercase();
        // Repeated headers read as one, comma-joined, as httpx shows them.
        let value = match dict.get_item(&key)? {
            Some(prev) => format!("{}, {v}", prev.extract::<String>()?),
            None => v.clone(),
        };
        dict.set_item(key, value)?;
    }
    Ok(dict)
}

fn content_type(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str())
}

/// `raise_for_status()`: httpx's message (lfeval's retry rules read it), `TooManyRequests`
/// (an `lfeval.RateLimited`) for a 429.
fn raise_for_status(
    py: Python<'_>,
    this: Bound<'_, PyAny>,
    status: u16,
    reason: &str,
    url: &str,
    headers: &[(String, String)],
) -> PyResult<()> {
    if status < 400 {
        return Ok(());
    }
    let kind = if status < 500 { "Client" } else { "Server" };
    let message = format!("{kind} error '{status} {reason}' for url '{url}'");
    let retry_after = retry_after_of(headers).map(|d| d.as_secs_f64());
    let class = if status == 429 {
        "HttpTooManyRequests"
    } else {
        "HttpStatusError"
    };
    let exc = support(py, class)?.call1((message, this, status, retry_after))?;
    Err(PyErr::from_value(exc))
}

#[pymethods]
impl Response {
    #[getter]
    fn status_code(&self) -> u16 {
        self.status
    }

    #[getter]
    fn reason_phrase(&self) -> &str {
        &self.reason
    }

    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    #[getter]
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Seconds from sending the request to the end of its body.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.elapsed.as_secs_f64()
    }

    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        headers_dict(py, &self.headers)
    }

    #[getter]
    fn content<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.body)
    }

    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        match std::str::from_utf8(&self.body) {
            Ok(text) if charset::is_utf8(content_type(&self.headers)) => PyString::new(py, text),
            _ => PyString::new(py, &charset::decode(self.body.clone(), content_type(&self.headers))),
        }
    }

    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?.getattr("loads")?.call1((self.text(py),))
    }

    fn raise_for_status<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        let this = slf.get();
        raise_for_status(
            py,
            slf.clone().into_any(),
            this.status,
            &this.reason,
            &this.url,
            &this.headers,
        )?;
        Ok(slf)
    }

    fn __repr__(&self) -> String {
        format!("<Response [{} {}]>", self.status, self.reason)
    }
}

/// An open streamed response: head read, body read line by line as the snippet asks.
struct StreamState {
    body: Box<dyn HttpBody>,
    rec: Recording,
    pending: Vec<u8>,
    read: u64,
    limit: u64,
    deadline: Option<Instant>,
    sse: bool,
    ended: bool,
}

impl StreamState {
    /// The next line without its end of line, or `None` at the end of the body.
    async fn next_line(&mut self) -> Result<Option<String>, Failed> {
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=at).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                self.first_token(&text);
                return Ok(Some(text));
            }
            if self.ended {
                if self.pending.is_empty() {
                    self.rec.end();
                    return Ok(None);
                }
                let text = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
                self.first_token(&text);
                return Ok(Some(text));
            }
            let chunk = until(self.deadline, self.body.chunk())
                .await
                .and_then(|r| r.map_err(Failed::Http));
            match chunk {
                Ok(Some(chunk)) => {
                    self.read += chunk.len() as u64;
                    if self.read > self.limit {
                        let e = Failed::TooLarge {
                            size: None,
                            limit: self.limit,
                        };
                        self.rec.fail(&e.text());
                        self.rec.end();
                        return Err(e);
                    }
                    self.rec.keep(&chunk);
                    self.pending.extend_from_slice(&chunk);
                }
                Ok(None) => self.ended = true,
                Err(e) => {
                    self.rec.fail(&e.text());
                    self.rec.end();
                    return Err(e);
                }
            }
        }
    }

    fn first_token(&mut self, line: &str) {
        if self.rec.exchange.first_token_ms.is_some() {
            return;
        }
        let token = if self.sse {
            line.starts_with("data:")
        } else {
            !line.trim().is_empty()
        };
        if token {
            self.rec.exchange.first_token_ms = Some(millis::of(self.rec.started.elapsed()));
        }
    }
}

async fn open(ctx: Context, request: HttpRequest) -> Result<(HttpHead, StreamState), Failed> {
    let mut rec = Recording::new(&request, Arc::clone(&ctx.backend), ctx.log.clone());
    rec.exchange.streamed = true;
    let limit = ctx.backend.max_response_bytes();
    match until(ctx.deadline, ctx.backend.send(request))
        .await
        .and_then(|r| r.map_err(Failed::Http))
    {
        Ok((head, body)) => {
            rec.head(&head);
            if let Some(len) = head.content_length
                && len > limit
            {
                let e = Failed::TooLarge { size: Some(len), limit };
                rec.fail(&e.text());
                rec.end();
                return Err(e);
            }
            let sse = content_type(&head.headers).is_some_and(|t| t.contains("text/event-stream"));
            Ok((
                head,
                StreamState {
                    body,
                    rec,
                    pending: Vec::new(),
                    read: 0,
                    limit,
                    deadline: ctx.deadline,
                    sse,
                    ended: false,
                },
            ))
        }
        Err(e) => {
            rec.fail(&e.text());
            rec.end();
            Err(e)
        }
    }
}

/// A streamed response (`lfeval.http.stream`); `support.py` turns its lines into events.
#[pyclass(frozen, module = "lfeval.http")]
struct Stream {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    url: String,
    sse: bool,
    state: Arc<tokio::sync::Mutex<Option<StreamState>>>,
}

impl Stream {
    fn new(url: String, head: HttpHead, state: StreamState) -> Stream {
        Stream {
            status: head.status,
            reason: head.reason,
            headers: head.headers,
            url,
            sse: state.sse,
            state: Arc::new(tokio::sync::Mutex::new(Some(state))),
        }
    }
}

async fn next_line(state: Arc<tokio::sync::Mutex<Option<StreamState>>>) -> Result<Option<String>, Failed> {
    let mut guard = state.lock().await;
    let Some(stream) = guard.as_mut() else {
        return Ok(None);
    };
    let line = stream.next_line().await;
    if !matches!(line, Ok(Some(_))) {
        *guard = None;
    }
    line
}

#[pymethods]
impl Stream {
    #[getter]
    fn status_code(&self) -> u16 {
        self.status
    }

    #[getter]
    fn reason_phrase(&self) -> &str {
        &self.reason
    }

    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    #[getter]
    fn is_sse(&self) -> bool {
        self.sse
    }

    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        headers_dict(py, &self.headers)
    }

    /// The next line (sync), `None` at the end.
    fn next_line(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let state = Arc::clone(&self.state);
        py.detach(|| runtime().block_on(next_line(state)))
            .map_err(|e| e.to_py(py))
    }

    /// The next line (async): `deliver(ok, line or None or exception)`.
    fn start_next_line(&self, deliver: Py<PyAny>) -> Pending {
        let state = Arc::clone(&self.state);
        let task = runtime().spawn(async move {
            let line = next_line(state).await;
            deliver_result(deliver, move |py| match line {
                Ok(Some(line)) => Ok(PyString::new(py, &line).into_any()),
                Ok(None) => Ok(py.None().into_bound(py)),
                Err(e) => Err(e.to_py(py)),
            })
            .await;
        });
        Pending {
            abort: task.abort_handle(),
        }
    }

    /// Ends the stream early (its evidence keeps what was read).
    fn close(&self, py: Python<'_>) {
        let state = Arc::clone(&self.state);
        py.detach(|| {
            // A line read in progress holds the lock; it ends on its own and the stream with it.
            if let Ok(mut guard) = state.try_lock() {
                *guard = None;
            }
        });
    }

    fn raise_for_status<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        let this = slf.get();
        raise_for_status(
            py,
            slf.clone().into_any(),
            this.status,
            &this.reason,
            &this.url,
            &this.headers,
        )?;
        Ok(slf)
    }
}

/// `lfeval.http.stream(...)` (sync): returns once the head is in.
#[pyfunction]
#[pyo3(signature = (ctx, method, url, headers, body, timeout))]
fn open_stream(
    py: Python<'_>,
    ctx: Option<Bound<'_, CallHttp>>,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<f64>,
) -> PyResult<Stream> {
    let request = build_request(method, url, headers, body, timeout)?;
    let url = request.url.clone();
    let ctx = context(ctx.as_ref()).map_err(|e| e.to_py(py))?;
    let (head, state) = py
        .detach(|| runtime().block_on(open(ctx, request)))
        .map_err(|e| e.to_py(py))?;
    Ok(Stream::new(url, head, state))
}

/// The async `lfeval.http.astream(...)`: delivers the `Stream` once the head is in.
#[pyfunction]
#[pyo3(signature = (ctx, method, url, headers, body, timeout, deliver))]
#[allow(clippy::too_many_arguments)]
fn start_stream(
    py: Python<'_>,
    ctx: Option<Bound<'_, CallHttp>>,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<f64>,
    deliver: Py<PyAny>,
) -> PyResult<Pending> {
    let request = build_request(method, url, headers, body, timeout)?;
    let url = request.url.clone();
    let ctx = context(ctx.as_ref()).map_err(|e| e.to_py(py))?;
    let task = runtime().spawn(async move {
        let opened = open(ctx, request).await;
        deliver_result(deliver, move |py| match opened {
            Ok((head, state)) => Bound::new(py, Stream::new(url, head, state)).map(Bound::into_any),
            Err(e) => Err(e.to_py(py)),
        })
        .await;
    });
    Ok(Pending {
        abort: task.abort_handle(),
    })
}

/// The native module `support.py` builds `lfeval.http` on.
pub(super) fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let m = PyModule::new(py, "_lfeval_http")?;
    m.add_function(wrap_pyfunction!(request, &m)?)?;
    m.add_function(wrap_pyfunction!(start, &m)?)?;
    m.add_function(wrap_pyfunction!(open_stream, &m)?)?;
    m.add_function(wrap_pyfunction!(start_stream, &m)?)?;
    m.add_class::<Response>()?;
    m.add_class::<Stream>()?;
    m.add_class::<Pending>()?;
    m.add_class::<CallHttp>()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_masked_and_long_bodies_cut() {
        let shown = masked_headers(&[
            ("Authorization".into(), "Bearer sk-1".into()),
            ("X-Api-Key".into(), "k".into()),
            ("content-type".into(), "application/json".into()),
        ]);
        assert_eq!(shown[0].1, "<masked>");
        assert_eq!(shown[1].1, "<masked>");
        assert_eq!(shown[2].1, "application/json");
        let long = "é".repeat(EVIDENCE_BODY);
        let text = evidence_text(long.as_bytes());
        assert!(text.ends_with("more bytes not kept]"), "{}", &text[text.len() - 40..]);
        assert!(!text.contains('\u{FFFD}'), "cut on a character boundary");
    }

    #[test]
    fn retry_after_is_read_in_either_form() {
        assert_eq!(
            retry_after_of(&[("Retry-After".into(), "2.5".into())]),
            Some(Duration::from_millis(2500))
        );
        let later =
            (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120)).strftime("%a, %d %b %Y %H:%M:%S GMT");
        let asked = retry_after_of(&[("retry-after".into(), later.to_string())]).expect("an HTTP date");
        assert!(
            asked > Duration::from_secs(100) && asked <= Duration::from_secs(120),
            "{asked:?}"
        );
        assert_eq!(retry_after_of(&[("retry-after".into(), "soon".into())]), None);
    }
}
