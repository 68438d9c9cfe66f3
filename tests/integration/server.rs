//! A std-only HTTP/1.1 server that integration tests start on `127.0.0.1:0`, plus canned handlers
//! imitating the endpoints lfeval talks to (OpenAI chat completions, a non-OpenAI wire format, a
//! session/poll protocol, scripted failures and an LLM judge). It owns the wire protocol
//! (keep-alive, Content-Length and chunked request bodies, `Expect: 100-continue`), the record of
//! every request it answered, and the concurrency bookkeeping tests assert on.

// Each test module uses a different subset of these helpers; unused ones must not fail the
// `-D warnings` build of the single integration binary.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Anything the server can call to answer a request; implemented for every suitable closure.
/// The canned handlers return `impl Handler`, which `TestServer::start` and `delayed` accept.
pub trait Handler: Fn(&Request) -> Response + Send + Sync + 'static {}
impl<F> Handler for F where F: Fn(&Request) -> Response + Send + Sync + 'static {}

type SharedHandler = Arc<dyn Fn(&Request) -> Response + Send + Sync + 'static>;

/// Longest request line / header block / chunk-size line accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest request body accepted; bigger bodies get a 400 and the connection is closed.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// How often a worker blocked on an idle connection re-checks the shutdown flag.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Bounds a write to a client that stopped reading, so a worker can never wedge forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `Drop` waits for threads before abandoning them (only a handler stuck outside the
/// server's control can exceed this).
const DROP_GRACE: Duration = Duration::from_secs(1);

/// One parsed HTTP request as seen by a handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Request-target path without the query string, not percent-decoded.
    pub path: String,
    /// Raw query string without the leading `?` (empty when absent).
    pub query: String,
    /// Header names as sent by the client; repeated headers stay separate entries.
    pub headers: Vec<(String, String)>,
    /// Body after Content-Length / chunked decoding.
    pub body: Vec<u8>,
}

impl Request {
    /// A request built in memory, for calling a handler directly without a socket.
    pub fn new(method: &str, path: &str) -> Self {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            ..Request::default()
        }
    }

    /// An in-memory `POST` with a JSON body.
    pub fn post_json(path: &str, body: &Value) -> Self {
        let mut req = Request::new("POST", path);
        req.headers
            .push(("Content-Type".to_owned(), "application/json".to_owned()));
        req.body = body.to_string().into_bytes();
        req
    }

    /// First header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, `None` when it is not valid JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as UTF-8, empty when it is not valid UTF-8.
    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("")
    }
}

/// A request the server received, with timing.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub request: Request,
    /// When the request had been fully read.
    pub started: Instant,
    /// When the response was handed to the socket. It is taken just before the write so that a
    /// client which waits for this response before sending another request always observes
    /// `finished <= next.started`. Equal to `started` while the request is still being handled.
    pub finished: Instant,
    /// Zero-based arrival index across all connections.
    pub seq: usize,
    /// Zero-based index of the TCP connection the request arrived on (equal values mean the
    /// client reused a keep-alive connection).
    pub connection: usize,
    /// Status of the response sent, `None` while the request is still being handled.
    pub status: Option<u16>,
}

/// What a handler answers. The server always frames it with Content-Length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Extra headers; `Content-Length`, `Transfer-Encoding` and `Connection` are managed by the
    /// server (`Connection: close` here makes the server close after responding).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sleep before responding; the request counts as in flight meanwhile.
    pub delay: Option<Duration>,
}

impl Response {
    /// A response with no body and no extra headers.
    pub fn empty(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
        }
    }

    pub fn json(status: u16, v: &Value) -> Self {
        Response {
            body: v.to_string().into_bytes(),
            ..Response::empty(status)
        }
        .with_header("Content-Type", "application/json")
    }

    pub fn text(status: u16, s: &str) -> Self {
        Response {
            body: s.as_bytes().to_vec(),
            ..Response::empty(status)
        }
        .with_header("Content-Type", "text/plain; charset=utf-8")
    }

    pub fn with_header(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn with_delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    /// First header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, `None` when it is not valid JSON.
    pub fn json_body(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

#[derive(Default)]
struct Shared {
    shutdown: AtomicBool,
    log: Mutex<Vec<RecordedRequest>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    next_connection: AtomicUsize,
    /// Clones of open client sockets so `Drop` can wake workers blocked in `read`.
    connections: Mutex<HashMap<usize, TcpStream>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
}

/// A panicking handler is turned into a 500, so poison only means "a test already failed";
/// the data behind these locks stays consistent either way.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running server; dropping it stops it.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` and serves every connection on its own thread with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server on 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address of test server listener");
        let shared = Arc::new(Shared::default());
        let handler: SharedHandler = Arc::new(handler);
        let acceptor = thread::Builder::new()
            .name(format!("test-server-{}", addr.port()))
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept_loop(listener, shared, handler)
            })
            .expect("spawn test server accept thread");
        TestServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `url()` joined with `path` (which should start with `/`).
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{}", self.url(), path)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order (including ones still being handled).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// The most recently arrived request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.log).last().cloned()
    }

    /// Number of requests received so far.
    pub fn count(&self) -> usize {
        lock(&self.shared.log).len()
    }

    /// Requests whose path equals `path`.
    pub fn count_path(&self, path: &str) -> usize {
        lock(&self.shared.log).iter().filter(|r| r.request.path == path).count()
    }

    /// Requests currently between "fully read" and "response handed to the socket".
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Highest `in_flight()` ever observed. A request counts from the moment it has been fully
    /// read until just before its response is written, so a client that never has more than N
    /// requests outstanding can never push this above N, even with scheduling jitter.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.next_connection.load(Ordering::SeqCst)
    }

    /// Number of accepted TCP connections still open on the server side. Connections are only
    /// closed by the client, by `Connection: close` / HTTP/1.0, on a protocol error or on drop.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.connections).len()
    }

    /// Polls until `count() >= n` or `timeout` passes; returns whether the count was reached.
    pub fn wait_for_count(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // The accept thread blocks in `accept`; a throwaway connection makes it look at the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for stream in lock(&self.shared.connections).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let deadline = Instant::now() + DROP_GRACE;
        // Acceptor first: once it is gone no new worker can be registered behind our back.
        if let Some(acceptor) = self.acceptor.take() {
            join_until(acceptor, deadline);
        }
        let workers = std::mem::take(&mut *lock(&self.shared.workers));
        for worker in workers {
            join_until(worker, deadline);
        }
    }
}

/// Joins `handle` if it finishes before `deadline`, otherwise leaves it detached so a stuck
/// handler can never hang the test that owns the server.
fn join_until(handle: JoinHandle<()>, deadline: Instant) {
    while !handle.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    if handle.is_finished() {
        let _ = handle.join();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, handler: SharedHandler) {
    for stream in listener.incoming() {
        if shared.is_shutdown() {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(_) => {
                // Transient (e.g. out of file descriptors); back off instead of spinning.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.connections).insert(id, clone);
        }
        let spawned = thread::Builder::new().name(format!("test-server-conn-{id}")).spawn({
            let shared = Arc::clone(&shared);
            let handler = Arc::clone(&handler);
            move || {
                serve_connection(stream, id, &shared, &*handler);
                lock(&shared.connections).remove(&id);
            }
        });
        match spawned {
            Ok(worker) => {
                let mut workers = lock(&shared.workers);
                workers.retain(|w| !w.is_finished());
                workers.push(worker);
            }
            Err(_) => {
                lock(&shared.connections).remove(&id);
            }
        }
    }
}

/// Why reading a request stopped.
enum ReadError {
    /// The peer went away, an I/O error happened, or the server is shutting down: just close.
    Closed,
    /// The bytes are not an acceptable HTTP/1.x request: answer 400 and close.
    Bad(String),
}

fn bad(msg: impl Into<String>) -> ReadError {
    ReadError::Bad(msg.into())
}

struct Conn<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    shared: &'a Shared,
}

impl Conn<'_> {
    /// Appends whatever the socket has; `Ok(false)` on EOF. Read timeouts only exist so the
    /// shutdown flag is noticed; they never end an idle keep-alive connection, because pooled
    /// clients (reqwest, httpx) would then race a reused socket against our close.
    fn fill(&mut self) -> Result<bool, ReadError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.shared.is_shutdown() {
                return Err(ReadError::Closed);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Err(ReadError::Closed),
            }
        }
    }

    /// One line without its `\n` / `\r\n`; `Ok(None)` on EOF before any byte.
    fn read_line(&mut self, limit: usize) -> Result<Option<Vec<u8>>, ReadError> {
        let mut scanned = 0;
        loop {
            if let Some(i) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=scanned + i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            scanned = self.buf.len();
            if scanned > limit {
                return Err(bad("request head line too long"));
            }
            if !self.fill()? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Closed)
                };
            }
        }
    }

    fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, ReadError> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Err(ReadError::Closed);
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line(MAX_HEAD_BYTES)?.ok_or(ReadError::Closed)?;
            let line = String::from_utf8_lossy(&line);
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| bad(format!("invalid chunk size `{size_text}`")))?;
            if size == 0 {
                // Trailers are read and dropped; nothing in these tests depends on them.
                let mut trailer_bytes = 0;
                loop {
                    let trailer = self.read_line(MAX_HEAD_BYTES)?.ok_or(ReadError::Closed)?;
                    if trailer.is_empty() {
                        return Ok(body);
                    }
                    trailer_bytes += trailer.len();
                    if trailer_bytes > MAX_HEAD_BYTES {
                        return Err(bad("chunked trailers too long"));
                    }
                }
            }
            if body.len().saturating_add(size) > MAX_BODY_BYTES {
                return Err(bad("request body too large"));
            }
            body.extend(self.read_exact(size)?);
            let end = self.read_line(MAX_HEAD_BYTES)?.ok_or(ReadError::Closed)?;
            if !end.is_empty() {
                return Err(bad("chunk data not followed by crlf"));
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }
}

/// A request plus what the connection should do after answering it.
struct Incoming {
    request: Request,
    keep_alive: bool,
    /// HTTP/1.0 keep-alive must be confirmed explicitly in the response.
    confirm_keep_alive: bool,
}

fn read_request(conn: &mut Conn<'_>) -> Result<Option<Incoming>, ReadError> {
    // Stray CRLFs between requests are allowed (RFC 9112 §2.2).
    let line = loop {
        match conn.read_line(MAX_HEAD_BYTES)? {
            None => return Ok(None),
            Some(line) if line.is_empty() => continue,
            Some(line) => break line,
        }
    };
    let line = String::from_utf8(line).map_err(|_| bad("request line is not utf-8"))?;
    let parts: Vec<&str> = line.split_ascii_whitespace().collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(bad(format!("malformed request line `{line}`")));
    };
    let http10 = match *version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        other => return Err(bad(format!("unsupported http version `{other}`"))),
    };

    let mut headers = Vec::new();
    let mut head_bytes = line.len();
    loop {
        let raw = conn.read_line(MAX_HEAD_BYTES)?.ok_or(ReadError::Closed)?;
        if raw.is_empty() {
            break;
        }
        head_bytes += raw.len();
        if head_bytes > MAX_HEAD_BYTES {
            return Err(bad("request head too large"));
        }
        let raw = String::from_utf8_lossy(&raw);
        let Some((name, value)) = raw.split_once(':') else {
            return Err(bad(format!("malformed header line `{raw}`")));
        };
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }

    let mut request = Request {
        method: (*method).to_owned(),
        headers,
        ..Request::default()
    };
    let (path, query) = split_target(target);
    request.path = path;
    request.query = query;

    let wants_continue = !http10
        && request
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if let Some(te) = request.header("transfer-encoding") {
        let last = te.rsplit(',').next().unwrap_or("").trim();
        if !last.eq_ignore_ascii_case("chunked") {
            return Err(bad(format!("unsupported transfer-encoding `{te}`")));
        }
        if wants_continue {
            send_continue(conn)?;
        }
        request.body = conn.read_chunked()?;
    } else if let Some(cl) = request.header("content-length") {
        let len: usize = cl
            .trim()
            .parse()
            .map_err(|_| bad(format!("invalid content-length `{cl}`")))?;
        if len > MAX_BODY_BYTES {
            return Err(bad("request body too large"));
        }
        if len > 0 && wants_continue {
            send_continue(conn)?;
        }
        request.body = conn.read_exact(len)?;
    }

    let tokens: Vec<String> = request
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let says = |t: &str| tokens.iter().any(|x| x == t);
    let keep_alive = !says("close") && (!http10 || says("keep-alive"));
    Ok(Some(Incoming {
        request,
        keep_alive,
        confirm_keep_alive: http10 && keep_alive,
    }))
}

fn send_continue(conn: &mut Conn<'_>) -> Result<(), ReadError> {
    conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        .map_err(|_| ReadError::Closed)
}

/// Splits an origin-form (or absolute-form, as proxies send) target into path and query.
fn split_target(target: &str) -> (String, String) {
    let origin = match target.find("://") {
        Some(i) => match target[i + 3..].find('/') {
            Some(j) => &target[i + 3 + j..],
            None => "/",
        },
        None => target,
    };
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    let path = if path.is_empty() { "/" } else { path };
    (path.to_owned(), query.to_owned())
}

/// Decrements the in-flight gauge even if the worker unwinds.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve_connection(
    stream: TcpStream,
    connection: usize,
    shared: &Shared,
    handler: &(dyn Fn(&Request) -> Response + Send + Sync),
) {
    // Accepted sockets may inherit non-blocking mode on some platforms.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(POLL_INTERVAL));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        shared,
    };
    loop {
        let incoming = match read_request(&mut conn) {
            Ok(Some(incoming)) => incoming,
            Ok(None) | Err(ReadError::Closed) => break,
            Err(ReadError::Bad(msg)) => {
                let resp = Response::text(400, &format!("bad request: {msg}\n"));
                let _ = conn.write_all(&encode_response(&resp, true, false, false));
                break;
            }
        };
        let Incoming {
            request,
            keep_alive,
            confirm_keep_alive,
        } = incoming;

        let started = Instant::now();
        let seq = {
            let mut log = lock(&shared.log);
            let seq = log.len();
            log.push(RecordedRequest {
                request: request.clone(),
                started,
                finished: started,
                seq,
                connection,
                status: None,
            });
            seq
        };
        let guard = InFlight::enter(shared);
        let response = catch_unwind(AssertUnwindSafe(|| handler(&request))).unwrap_or_else(|payload| {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Response::text(500, &format!("test server handler panicked: {msg}\n"))
        });
        if let Some(delay) = response.delay
            && !sleep_unless_shutdown(shared, delay)
        {
            break;
        }
        let close = !keep_alive
            || shared.is_shutdown()
            || response
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let bytes = encode_response(
            &response,
            close,
            confirm_keep_alive && !close,
            request.method.eq_ignore_ascii_case("HEAD"),
        );
        {
            let mut log = lock(&shared.log);
            if let Some(entry) = log.get_mut(seq) {
                entry.finished = Instant::now();
                entry.status = Some(response.status);
            }
        }
        // Leave the in-flight window before the client can possibly see the response.
        drop(guard);
        if conn.write_all(&bytes).is_err() || close {
            break;
        }
    }
    let _ = conn.stream.shutdown(Shutdown::Both);
}

/// Sleeps for `d` in short slices; `false` if the server started shutting down meanwhile.
fn sleep_unless_shutdown(shared: &Shared, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if shared.is_shutdown() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(10)));
    }
}

fn encode_response(resp: &Response, close: bool, confirm_keep_alive: bool, head_only: bool) -> Vec<u8> {
    // RFC 9110 §8.6: these statuses carry neither a body nor Content-Length.
    let bodyless = resp.status < 200 || resp.status == 204 || resp.status == 304;
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        if ["content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
        {
            continue;
        }
        // CR/LF in a header would break the framing of every later response on the connection.
        let clean = |s: &str| s.replace(['\r', '\n'], " ");
        head.push_str(&format!("{}: {}\r\n", clean(k), clean(v)));
    }
    if !bodyless {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    if close {
        head.push_str("Connection: close\r\n");
    } else if confirm_keep_alive {
        head.push_str("Connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !bodyless && !head_only {
        out.extend_from_slice(&resp.body);
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

// ---------------------------------------------------------------------------------------------
// Canned handlers
// ---------------------------------------------------------------------------------------------

/// Whitespace-separated word count, the token measure every canned handler reports.
pub fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// Text of an OpenAI message `content`: a string, or the `text` of each content part joined by
/// spaces; anything else counts as empty.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn openai_error(status: u16, message: &str) -> Response {
    Response::json(status, &json!({"error": {"message": message}}))
}

/// A chat-completions request reduced to what the canned handlers need.
struct ChatRequest {
    /// Echoed back verbatim (`null` when absent).
    model: Value,
    /// `(role, text)` per message.
    messages: Vec<(String, String)>,
}

impl ChatRequest {
    fn prompt_words(&self) -> usize {
        self.messages.iter().map(|(_, t)| words(t)).sum()
    }

    fn last_user_text(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|(role, _)| role == "user")
            .map_or("", |(_, t)| t.as_str())
    }
}

/// Routing and validation shared by `openai_chat` and `judge`: 404 unless the path ends in
/// `/chat/completions`, 405 unless POST, 401 on a key mismatch, 400 unless the body is a JSON
/// object with a non-empty `messages` array whose entries have a string `role`, and 400 for
/// `"stream": true` (streaming is not implemented here, so a silent non-stream answer would hide
/// a client bug).
fn parse_chat(req: &Request, expected_key: Option<&str>) -> Result<ChatRequest, Response> {
    if !req.path.ends_with("/chat/completions") {
        return Err(openai_error(404, "not found"));
    }
    if req.method != "POST" {
        return Err(openai_error(405, "method not allowed"));
    }
    if let Some(key) = expected_key
        && req.header("authorization") != Some(format!("Bearer {key}").as_str())
    {
        return Err(openai_error(401, "invalid api key"));
    }
    let body = req
        .json()
        .ok_or_else(|| openai_error(400, "request body is not valid json"))?;
    let obj = body
        .as_object()
        .ok_or_else(|| openai_error(400, "request body must be a json object"))?;
    if obj.get("stream") == Some(&Value::Bool(true)) {
        return Err(openai_error(400, "streaming is not supported by the test server"));
    }
    let raw = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| openai_error(400, "`messages` must be an array"))?;
    if raw.is_empty() {
        return Err(openai_error(400, "`messages` must not be empty"));
    }
    let mut messages = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| openai_error(400, &format!("`messages[{i}].role` must be a string")))?;
        messages.push((role.to_owned(), content_text(m.get("content"))));
    }
    Ok(ChatRequest {
        model: obj.get("model").cloned().unwrap_or(Value::Null),
        messages,
    })
}

/// An OpenAI `chat.completion` object; completion tokens are the words of whichever of
/// `content` / `refusal` carries the text.
fn chat_completion(chat: &ChatRequest, content: Option<&str>, refusal: Option<&str>) -> Response {
    let p = chat.prompt_words();
    let c = words(content.or(refusal).unwrap_or(""));
    Response::json(
        200,
        &json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": chat.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        }),
    )
}

/// Refusal text `openai_chat` returns for prompts containing `[[refuse]]`.
pub const REFUSAL: &str = "I can't help with that";

/// OpenAI Chat Completions on any path ending in `/chat/completions`, without authentication.
///
/// Reply: `"echo: " + <text of the last user message>`. If that message contains `[[refuse]]`
/// the reply has `content: null` and `refusal: REFUSAL`. Usage: prompt tokens = words across all
/// message contents, completion tokens = words in the reply. `model` is echoed verbatim.
/// Errors are `{"error": {"message": ...}}`: see `parse_chat` for the statuses.
pub fn openai_chat() -> impl Handler {
    openai_chat_impl(None)
}

/// `openai_chat()` that answers 401 `{"error": {"message": "invalid api key"}}` unless the
/// request carries exactly `Authorization: Bearer <key>`.
pub fn openai_chat_with_key(key: &str) -> impl Handler {
    openai_chat_impl(Some(key.to_owned()))
}

fn openai_chat_impl(expected_key: Option<String>) -> impl Handler {
    move |req: &Request| -> Response {
        let chat = match parse_chat(req, expected_key.as_deref()) {
            Ok(chat) => chat,
            Err(resp) => return resp,
        };
        let last = chat.last_user_text();
        if last.contains("[[refuse]]") {
            chat_completion(&chat, None, Some(REFUSAL))
        } else {
            let reply = format!("echo: {last}");
            chat_completion(&chat, Some(&reply), None)
        }
    }
}

const EXPECTED_MARKER: &str = "expected:";
const ANSWER_MARKER: &str = "answer:";

/// The judge's verdict on one prompt: `(correct, reasoning)`.
///
/// Rule: lowercase the text; take the first occurrence of `expected:` and of `answer:`; each value
/// runs from its marker to the end of that line or to the next occurrence of either marker,
/// whichever comes first, and is trimmed. CORRECT iff both markers are present and the values are
/// equal and non-empty. So `"expected: Paris\nanswer:  paris "` and
/// `"expected: 4 answer: 4"` are CORRECT; `"expected: 4\nanswer: 5"` and a prompt without both
/// markers are INCORRECT. Note `"expected answer: X"` contains the `answer:` marker.
pub fn judge_verdict(text: &str) -> (bool, String) {
    let lower = text.to_lowercase();
    let value = |marker: &str| -> Option<String> {
        let start = lower.find(marker)? + marker.len();
        let rest = &lower[start..];
        let end = [rest.find('\n'), rest.find(EXPECTED_MARKER), rest.find(ANSWER_MARKER)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rest.len());
        Some(rest[..end].trim().to_owned())
    };
    match (value(EXPECTED_MARKER), value(ANSWER_MARKER)) {
        (Some(expected), Some(answer)) if !expected.is_empty() && expected == answer => {
            (true, format!("answer `{answer}` matches expected `{expected}`"))
        }
        (Some(expected), Some(answer)) => (false, format!("answer `{answer}` does not match expected `{expected}`")),
        _ => (false, "prompt lacks an `expected:` or `answer:` marker".to_owned()),
    }
}

/// An LLM judge speaking OpenAI Chat Completions (same routing and errors as `openai_chat`,
/// no authentication). The reply content is a JSON string
/// `{"prediction": "CORRECT"|"INCORRECT", "reasoning": "...", "confidence": 0.9}` decided by
/// `judge_verdict` on the last user message.
pub fn judge() -> impl Handler {
    |req: &Request| -> Response {
        let chat = match parse_chat(req, None) {
            Ok(chat) => chat,
            Err(resp) => return resp,
        };
        let (correct, reasoning) = judge_verdict(chat.last_user_text());
        let verdict = json!({
            "prediction": if correct { "CORRECT" } else { "INCORRECT" },
            "reasoning": reasoning,
            "confidence": 0.9
        });
        chat_completion(&chat, Some(&verdict.to_string()), None)
    }
}

fn wire_error(status: u16, reason: &str) -> Response {
    Response::json(status, &json!({"status": "error", "reason": reason}))
}

/// A deliberately non-OpenAI wire format on `POST /generate`.
///
/// Request: `{"prompt": {"system": str|null (may be absent), "turns": [{"speaker":
/// "human"|"bot", "text": str}, ...]}, "params": {...}}` (`params` is a required object).
/// Response 200: `{"result": {"completion": {"text": "echo: <last human text>"}, "tokens":
/// {"in": P, "out": C}}, "status": "ok"}` with P = words of the system prompt and all turns,
/// C = words of the reply. Anything malformed, including no human turn, is 422
/// `{"status": "error", "reason": ...}`; other paths 404 and other methods 405 in the same shape.
pub fn custom_wire() -> impl Handler {
    |req: &Request| -> Response {
        if req.path != "/generate" {
            return wire_error(404, "not found");
        }
        if req.method != "POST" {
            return wire_error(405, "method not allowed");
        }
        custom_wire_answer(req).unwrap_or_else(|reason| wire_error(422, &reason))
    }
}

fn custom_wire_answer(req: &Request) -> Result<Response, String> {
    let body = req.json().ok_or("body is not valid json")?;
    let prompt = body
        .get("prompt")
        .and_then(Value::as_object)
        .ok_or("`prompt` must be an object")?;
    let system = match prompt.get("system") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("`prompt.system` must be a string or null".to_owned()),
    };
    let turns = prompt
        .get("turns")
        .and_then(Value::as_array)
        .ok_or("`prompt.turns` must be an array")?;
    if !body.get("params").is_some_and(Value::is_object) {
        return Err("`params` must be an object".to_owned());
    }
    let mut prompt_words = words(system);
    let mut last_human = None;
    for (i, turn) in turns.iter().enumerate() {
        let speaker = turn.get("speaker").and_then(Value::as_str);
        let text = turn
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("`prompt.turns[{i}].text` must be a string"))?;
        match speaker {
            Some("human") => last_human = Some(text),
            Some("bot") => {}
            _ => {
                return Err(format!("`prompt.turns[{i}].speaker` must be `human` or `bot`"));
            }
        }
        prompt_words += words(text);
    }
    let last = last_human.ok_or("no `human` turn to answer")?;
    let reply = format!("echo: {last}");
    Ok(Response::json(
        200,
        &json!({
            "result": {
                "completion": {"text": reply},
                "tokens": {"in": prompt_words, "out": words(&reply)}
            },
            "status": "ok"
        }),
    ))
}

/// `session_poll_with(2)`.
pub fn session_poll() -> impl Handler {
    session_poll_with(2)
}

/// A stateful create / submit / poll protocol:
///
/// * `POST /sessions` (any body) → 201 `{"session_id": "s-<n>"}`, n counting from 1;
/// * `POST /sessions/{id}/messages` with `{"text": str}` → 202 `{"job_id": "j-<n>"}`; unknown
///   session → 404, body without a string `text` → 400;
/// * `GET /jobs/{id}` → 200 `{"state": "running"}` for the first `pending_polls` polls, then
///   200 `{"state": "done", "answer": "echo: <text>"}` on every later poll; unknown job → 404.
///
/// Errors are `{"error": "..."}`; any other route is 404.
pub fn session_poll_with(pending_polls: usize) -> impl Handler {
    struct Job {
        text: String,
        polls: usize,
    }
    #[derive(Default)]
    struct State {
        sessions: HashMap<String, Vec<String>>,
        jobs: HashMap<String, Job>,
        next_session: usize,
        next_job: usize,
    }
    let state = Mutex::new(State::default());
    move |req: &Request| -> Response {
        let err = |status: u16, msg: String| Response::json(status, &json!({"error": msg}));
        let mut st = lock(&state);
        let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("POST", ["sessions"]) => {
                st.next_session += 1;
                let id = format!("s-{}", st.next_session);
                st.sessions.insert(id.clone(), Vec::new());
                Response::json(201, &json!({"session_id": id}))
            }
            ("POST", ["sessions", session, "messages"]) => {
                if !st.sessions.contains_key(*session) {
                    return err(404, format!("unknown session `{session}`"));
                }
                let Some(text) = req
                    .json()
                    .and_then(|v| v.get("text").and_then(Value::as_str).map(str::to_owned))
                else {
                    return err(400, "`text` must be a string".to_owned());
                };
                st.next_job += 1;
                let job_id = format!("j-{}", st.next_job);
                if let Some(jobs) = st.sessions.get_mut(*session) {
                    jobs.push(job_id.clone());
                }
                st.jobs.insert(job_id.clone(), Job { text, polls: 0 });
                Response::json(202, &json!({"job_id": job_id}))
            }
            ("GET", ["jobs", job_id]) => match st.jobs.get_mut(*job_id) {
                None => err(404, format!("unknown job `{job_id}`")),
                Some(job) if job.polls < pending_polls => {
                    job.polls += 1;
                    Response::json(200, &json!({"state": "running"}))
                }
                Some(job) => Response::json(200, &json!({"state": "done", "answer": format!("echo: {}", job.text)})),
            },
            _ => err(404, "not found".to_owned()),
        }
    }
}

/// Answers with `responses` in order, one per request (whichever request reaches the handler
/// next), then `fallback` forever. Typical use: `[429 + Retry-After, 503]` then a 200.
pub fn scripted(responses: Vec<Response>, fallback: Response) -> impl Handler {
    let queue = Mutex::new(VecDeque::from(responses));
    move |_req: &Request| -> Response { lock(&queue).pop_front().unwrap_or_else(|| fallback.clone()) }
}

/// Adds `d` to the delay of every response `inner` produces.
pub fn delayed(inner: impl Fn(&Request) -> Response + Send + Sync + 'static, d: Duration) -> impl Handler {
    move |req: &Request| -> Response {
        let mut resp = inner(req);
        resp.delay = Some(resp.delay.unwrap_or_default() + d);
        resp
    }
}
