"""Python half of lfeval's snippet runtime, loaded once as the module `_lfeval_support`.

It owns what is easier to express in Python: per-call output capture (bounded: head and tail
kept, the middle counted), compiling snippets into their own modules, checking signatures,
describing exceptions, the process-wide asyncio loop, the guards that keep a snippet from
ending or forking the process, and the importable `lfeval` module snippets talk to lfeval with.
The Rust side (src/python/mod.rs) decides on threads, timeouts and conversions.
"""

import collections
import contextvars
import io
import linecache
import os
import posix
import site
import sys
import threading
import time
import traceback
import types


class Record(dict):
    """A dict whose keys also read as attributes: `score.values`, `sample.answer` as well as
    `sample["answer"]`, like the platform's objects. A key wins over a dict method of the same
    name (`score.values` is the key); `dict.values(d)` still reaches the method."""

    __slots__ = ()

    def __getattribute__(self, name):
        if not name.startswith("__") and dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        return object.__getattribute__(self, name)


class SnippetTimeout(BaseException):
    """Injected into a snippet that ran out of time.

    Derives from BaseException so that `except Exception:` in a snippet cannot swallow it.
    """


class SnippetExit(BaseException):
    """Raised in place of `os._exit(status)`, which would end lfeval (and every other model's
    calls) without a word. A BaseException, so the snippet's `except Exception:` lets it pass."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


# --------------------------------------------------------------------------------------------
# The `lfeval` module snippets may import.


class RateLimited(Exception):
    """Raise it from `run_inference` when the endpoint said "too many requests": lfeval treats
    the attempt like an HTTP 429, pausing the model's calls for `retry_after` seconds (held to
    the model's `retry.max_retry_after`) and retrying it."""

    def __init__(self, message="rate limited", retry_after=None):
        super().__init__(message)
        if retry_after is not None:
            retry_after = float(retry_after)
            if not retry_after >= 0 or retry_after == float("inf"):
                raise ValueError(f"retry_after must be a number of seconds >= 0, got {retry_after!r}")
        self.retry_after = retry_after


class ForkRefused(RuntimeError):
    """What `os.fork()` raises inside lfeval."""


RateLimited.__module__ = ForkRefused.__module__ = "lfeval"

lfeval = types.ModuleType(
    "lfeval", "Provided by lfeval to snippets it runs: `raise lfeval.RateLimited(retry_after=30)`."
)
lfeval.RateLimited = RateLimited
lfeval.ForkRefused = ForkRefused
lfeval.__all__ = ["RateLimited", "ForkRefused", "http"]


# --------------------------------------------------------------------------------------------
# `lfeval.http`: requests on lfeval's own HTTP client (src/python/http.rs), recorded as the
# call's evidence, timed, paused by the model's `Retry-After`. The native half does the I/O
# with the GIL released; this half shapes arguments and results like httpx.

_native_http = None


class HttpError(Exception):
    """A request through `lfeval.http` failed."""


class HttpTimeout(HttpError):
    """The request's own `timeout=` passed (the snippet's call timeout ends it too)."""


class HttpConnectError(HttpError):
    """The connection could not be made or broke."""


class HttpTooLarge(HttpError):
    """The response is over the model's `max_response_bytes`."""


class HttpStatusError(HttpError):
    """`raise_for_status()` on a 4xx or 5xx answer; `response` is the answer."""

    def __init__(self, message, response=None, status_code=None, retry_after=None):
        super().__init__(message)
        self.response = response
        self.status_code = status_code
        self.retry_after = retry_after


class HttpTooManyRequests(HttpStatusError, RateLimited):
    """A 429: also an `lfeval.RateLimited`, so lfeval retries it and slows the model down."""


for _cls, _name in (
    (HttpError, "HTTPError"),
    (HttpTimeout, "TimeoutException"),
    (HttpConnectError, "ConnectError"),
    (HttpTooLarge, "ResponseTooLarge"),
    (HttpStatusError, "HTTPStatusError"),
    (HttpTooManyRequests, "TooManyRequests"),
):
    _cls.__module__ = "lfeval.http"
    _cls.__name__ = _cls.__qualname__ = _name


class ServerSentEvent:
    """One event of a `text/event-stream` response."""

    __slots__ = ("event", "data", "id", "retry")

    def __init__(self, event="message", data="", id=None, retry=None):
        self.event, self.data, self.id, self.retry = event, data, id, retry

    def json(self):
        import json as _json

        return _json.loads(self.data)

    def __repr__(self):
        return f"ServerSentEvent(event={self.event!r}, data={self.data!r})"


class _SseParser:
    __slots__ = ("event", "data", "id", "retry")

    def __init__(self):
        self.event, self.data, self.id, self.retry = "", [], None, None

    def feed(self, line):
        """Takes one line; returns an event when the line ends one."""
        if not line:
            if not self.data and not self.event:
                return None
            event = ServerSentEvent(self.event or "message", "\n".join(self.data), self.id, self.retry)
            self.event, self.data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id":
            self.id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def end(self):
        return self.feed("") if self.data else None


def _http_context():
    buf = _capture.get()
    return buf.http if buf is not None else None


def _http_args(json, content, headers, params, url):
    pairs = []
    if headers:
        items = headers.items() if hasattr(headers, "items") else headers
        pairs = [(str(k), str(v)) for k, v in items]
    if json is not None:
        import json as _json

        body = _json.dumps(json).encode()
        if not any(k.lower() == "content-type" for k, _ in pairs):
            pairs.append(("content-type", "application/json"))
    elif content is not None:
        body = content.encode() if isinstance(content, str) else bytes(content)
    else:
        body = None
    if params:
        from urllib.parse import urlencode

        url = url + ("&" if "?" in url else "?") + urlencode(params, doseq=True)
    return url, pairs, body


def _http_request(method, url, json=None, content=None, headers=None, params=None, timeout=None):
    url, pairs, body = _http_args(json, content, headers, params, url)
    return _native_http.request(_http_context(), method, url, pairs, body, timeout)


def _deliver_to(loop_, fut):
    def deliver(ok, value):
        loop_.call_soon_threadsafe(_settle, fut, ok, value)

    return deliver


def _settle(fut, ok, value):
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


async def _await_native(start):
    import asyncio

    loop_ = asyncio.get_running_loop()
    fut = loop_.create_future()
    pending = start(_deliver_to(loop_, fut))
    try:
        return await fut
    except asyncio.CancelledError:
        pending.cancel()
        raise


async def _http_arequest(method, url, json=None, content=None, headers=None, params=None, timeout=None):
    url, pairs, body = _http_args(json, content, headers, params, url)
    ctx = _http_context()
    return await _await_native(lambda d: _native_http.start(ctx, method, url, pairs, body, timeout, d))


class _StreamHead:
    """The status and headers a streamed response has before its body is read."""

    def _take(self, native):
        self._native = native
        self.status_code = native.status_code
        self.reason_phrase = native.reason_phrase
        self.url = native.url

    @property
    def headers(self):
        return self._native.headers

    @property
    def is_success(self):
        return 200 <= self.status_code < 300

    def raise_for_status(self):
        self._native.raise_for_status()
        return self


class StreamResponse(_StreamHead):
    """A streamed response: iterate it for its events (`text/event-stream`) or lines."""

    def __init__(self, native):
        self._take(native)

    def iter_lines(self):
        next_line = self._native.next_line
        while (line := next_line()) is not None:
            yield line

    def iter_events(self):
        parser = _SseParser()
        for line in self.iter_lines():
            event = parser.feed(line)
            if event is not None:
                yield event
        event = parser.end()
        if event is not None:
            yield event

    def read(self):
        return "\n".join(self.iter_lines())

    def __iter__(self):
        return self.iter_events() if self._native.is_sse else self.iter_lines()

    def close(self):
        self._native.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncStreamResponse(_StreamHead):
    """`async with http.astream(...) as response: async for event in response: ...`"""

    def __init__(self, opener):
        self._opener = opener
        self._native = None

    async def _open(self):
        if self._native is None:
            self._take(await self._opener())
        return self

    def __await__(self):
        return self._open().__await__()

    async def __aenter__(self):
        return await self._open()

    async def __aexit__(self, *exc):
        await self.aclose()

    async def aiter_lines(self):
        await self._open()
        native = self._native
        while (line := await _await_native(native.start_next_line)) is not None:
            yield line

    async def aiter_events(self):
        parser = _SseParser()
        async for line in self.aiter_lines():
            event = parser.feed(line)
            if event is not None:
                yield event
        event = parser.end()
        if event is not None:
            yield event

    def __aiter__(self):
        return (self.aiter_events() if self._native.is_sse else self.aiter_lines()).__aiter__()

    async def aclose(self):
        if self._native is not None:
            self._native.close()


def _http_stream(method, url, json=None, content=None, headers=None, params=None, timeout=None):
    url, pairs, body = _http_args(json, content, headers, params, url)
    return StreamResponse(_native_http.open_stream(_http_context(), method, url, pairs, body, timeout))


def _http_astream(method, url, json=None, content=None, headers=None, params=None, timeout=None):
    url, pairs, body = _http_args(json, content, headers, params, url)
    ctx = _http_context()

    async def opener():
        return await _await_native(lambda d: _native_http.start_stream(ctx, method, url, pairs, body, timeout, d))

    return AsyncStreamResponse(opener)


def _make_http_module():
    m = types.ModuleType(
        "lfeval.http",
        "HTTP on lfeval's own client: pooled per model, recorded as the call's evidence, "
        "with the GIL released while waiting. `http.post(url, json=...)`, `await http.apost(...)`, "
        "`with http.stream(\"POST\", url, json=...) as r: for event in r: ...`.",
    )

    def request(method, url, *, json=None, content=None, headers=None, params=None, timeout=None):
        return _http_request(method, url, json, content, headers, params, timeout)

    def get(url, *, headers=None, params=None, timeout=None):
        return _http_request("GET", url, None, None, headers, params, timeout)

    def post(url, *, json=None, content=None, headers=None, params=None, timeout=None):
        return _http_request("POST", url, json, content, headers, params, timeout)

    async def arequest(method, url, *, json=None, content=None, headers=None, params=None, timeout=None):
        return await _http_arequest(method, url, json, content, headers, params, timeout)

    async def aget(url, *, headers=None, params=None, timeout=None):
        return await _http_arequest("GET", url, None, None, headers, params, timeout)

    async def apost(url, *, json=None, content=None, headers=None, params=None, timeout=None):
        return await _http_arequest("POST", url, json, content, headers, params, timeout)

    def stream(method, url, *, json=None, content=None, headers=None, params=None, timeout=None):
        return _http_stream(method, url, json, content, headers, params, timeout)

    def astream(method, url, *, json=None, content=None, headers=None, params=None, timeout=None):
        return _http_astream(method, url, json, content, headers, params, timeout)

    for f in (request, get, post, arequest, aget, apost, stream, astream):
        f.__module__ = "lfeval.http"
        setattr(m, f.__name__, f)
    m.HTTPError = HttpError
    m.TimeoutException = HttpTimeout
    m.ConnectError = HttpConnectError
    m.ResponseTooLarge = HttpTooLarge
    m.HTTPStatusError = HttpStatusError
    m.TooManyRequests = HttpTooManyRequests
    m.ServerSentEvent = ServerSentEvent
    m.StreamResponse = StreamResponse
    m.AsyncStreamResponse = AsyncStreamResponse
    m.__all__ = [
        "request", "get", "post", "arequest", "aget", "apost", "stream", "astream", "HTTPError",
        "TimeoutException", "ConnectError", "ResponseTooLarge", "HTTPStatusError", "TooManyRequests",
        "ServerSentEvent",
    ]
    return m


http = _make_http_module()
lfeval.http = http


_FORK_MESSAGE = (
    "os.fork() is refused in lfeval snippets: the copy of lfeval it makes would keep lfeval's "
    "output open and never finish; hint: start programs with `subprocess`, and use "
    "`multiprocessing.get_context(\"spawn\")` for worker processes"
)


def _refuse_exit(status=0, *args, **kwargs):
    raise SnippetExit(status)


def _refuse_fork(*args, **kwargs):
    raise ForkRefused(_FORK_MESSAGE)


def _install_guards():
    for module in (os, posix):
        module._exit = _refuse_exit
        if hasattr(module, "fork"):
            module.fork = _refuse_fork
        if hasattr(module, "forkpty"):
            module.forkpty = _refuse_fork


# --------------------------------------------------------------------------------------------
# Output capture: sys.stdout/sys.stderr write into the buffer of the call that is running in the
# current context. Worker threads each have their own context and every asyncio Task runs in a
# copy, so concurrent calls never share a buffer.

_capture = contextvars.ContextVar("lfeval_capture", default=None)

# What one call keeps of its output: the first and the last characters, with the number in
# between that were dropped, so a snippet printing megabytes costs kilobytes.
CAPTURE_HEAD = 64 * 1024
CAPTURE_TAIL = 64 * 1024


class Capture:
    """Output of one call, bounded."""

    __slots__ = ("_head", "_head_len", "_tail", "_tail_len", "_dropped", "http")

    def __init__(self):
        self.http = None  # the call's `lfeval.http` context (set by lfeval)
        self._head = []
        self._head_len = 0
        self._tail = collections.deque()
        self._tail_len = 0
        self._dropped = 0

    def append(self, s):
        if self._head_len < CAPTURE_HEAD:
            room = CAPTURE_HEAD - self._head_len
            part = s[:room]
            self._head.append(part)
            self._head_len += len(part)
            s = s[room:]
            if not s:
                return
        self._tail.append(s)
        self._tail_len += len(s)
        while self._tail_len > CAPTURE_TAIL:
            first = self._tail[0]
            excess = self._tail_len - CAPTURE_TAIL
            if len(first) <= excess:
                self._tail.popleft()
                self._tail_len -= len(first)
                self._dropped += len(first)
            else:
                self._tail[0] = first[excess:]
                self._tail_len -= excess
                self._dropped += excess

    def text(self):
        head = "".join(self._head)
        tail = "".join(self._tail)
        if self._dropped:
            # `…` on both sides: the redactor masks what is left of a secret cut at a boundary.
            return f"{head}…\n[{self._dropped} characters of output omitted]\n…{tail}"
        return head + tail


class _Router(io.TextIOBase):
    def __init__(self, fallback):
        self._fallback = fallback

    def writable(self):
        return True

    def readable(self):
        return False

    def write(self, s):
        buf = _capture.get()
        if buf is None:
            return self._fallback.write(s)
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        buf.append(s)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        if _capture.get() is None:
            self._fallback.flush()

    def isatty(self):
        return _capture.get() is None and self._fallback.isatty()

    def fileno(self):
        if _capture.get() is not None:
            raise io.UnsupportedOperation("fileno")
        return self._fallback.fileno()

    @property
    def encoding(self):
        return getattr(self._fallback, "encoding", "utf-8")

    @property
    def errors(self):
        return getattr(self._fallback, "errors", "strict")

    def __getattr__(self, name):
        return getattr(self._fallback, name)


def _real(stream):
    # A process started with fd 1 or 2 closed has sys.__stdout__/__stderr__ set to None.
    return stream if stream is not None else open(os.devnull, "w", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Process setup.

loop = None
loop_ident = 0


def setup(executable, site_dirs, unset_home, native_http, run_site):
    global _native_http
    _native_http = native_http
    if executable:
        sys.executable = executable
    if unset_home:
        # PYTHONHOME was only set so this process finds its stdlib; child Pythons (other
        # versions, virtualenvs) must not inherit it.
        os.environ.pop("PYTHONHOME", None)
    if run_site:
        site.main()  # the interpreter started without it (see init.rs): `sys.executable` is set now
    for d in site_dirs:
        if d not in sys.path:
            _add_site_dir(d)
    sys.stdout = _Router(_real(sys.__stdout__))
    sys.stderr = _Router(_real(sys.__stderr__))
    sys.modules["lfeval"] = lfeval
    sys.modules["lfeval.http"] = http
    _install_guards()



def _add_site_dir(path):
    before = list(sys.path)
    site.addsitedir(path)  # also runs the directory's .pth files, as a real venv would
    known = set(before)
    added = [p for p in sys.path if p not in known]
    # The virtualenv's packages must shadow the base interpreter's.
    first_site = next((i for i, p in enumerate(before) if p.rstrip("/").endswith("site-packages")), len(before))
    sys.path[:] = before[:first_site] + added + before[first_site:]


_loop_lock = threading.Lock()


def _ensure_loop():
    """The loop async snippets run on, started by the first one: importing asyncio and starting
    its thread is a third of the interpreter's start-up, which sync snippets never need."""
    global loop, loop_ident
    with _loop_lock:
        if loop is None:
            import asyncio

            new = asyncio.new_event_loop()
            started = threading.Event()
            thread = threading.Thread(target=_run_loop, args=(new, started), name="lfeval-asyncio", daemon=True)
            thread.start()
            started.wait()
            loop_ident = thread.ident
            loop = new
    return loop


def _run_loop(loop, started):
    import asyncio

    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    while not loop.is_closed():
        try:
            loop.run_forever()
        except BaseException as e:  # SystemExit/KeyboardInterrupt escaping a snippet's own task
            try:
                sys.__stderr__.write(f"lfeval: asyncio loop interrupted by {type(e).__name__}: {e}\n")
            except BaseException:
                pass


def flush():
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:
            pass


def info():
    try:
        import httpx

        httpx_info = (True, str(getattr(httpx, "__version__", "unknown")))
    except BaseException as e:
        httpx_info = (False, f"{type(e).__name__}: {e}")
    version = "%d.%d.%d" % sys.version_info[:3]
    return (version, sys.prefix, sys.executable or "", [str(p) for p in sys.path], httpx_info)


# --------------------------------------------------------------------------------------------
# Loading snippets.

# filename -> list of lines; several inline snippets of one YAML file share a filename, each
# placed at its own line offset, so tracebacks of every one of them show the right text.
_sources = {}


def _register_source(filename, line_offset, text):
    lines = _sources.setdefault(filename, [])
    new = text.splitlines(True)
    if new and not new[-1].endswith("\n"):
        new[-1] += "\n"
    end = line_offset + len(new)
    if len(lines) < end:
        lines.extend(["\n"] * (end - len(lines)))
    lines[line_offset:end] = new
    linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)


def _ensure_sources():
    # Something may have called linecache.clearcache(); inline sources exist nowhere else.
    for filename, lines in _sources.items():
        if filename not in linecache.cache:
            linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)


def _source_line(filename, lineno):
    return linecache.getline(filename, lineno).strip() if lineno else ""


def type_name(obj_type):
    module = getattr(obj_type, "__module__", "") or ""
    name = getattr(obj_type, "__qualname__", None) or getattr(obj_type, "__name__", "?")
    if module in ("builtins", "__main__", "_lfeval_support") or module.startswith("lfeval_snippet_"):
        return name
    return f"{module}.{name}"


def _safe_str(exc):
    try:
        return str(exc)
    except BaseException:
        return "<unprintable>"


def _snippet_frames(stack, filename):
    return [(f.filename, f.lineno or 0, f.name, f.line or "") for f in stack if f.filename == filename]


def _col(frame_summary):
    colno = getattr(frame_summary, "colno", None)
    return colno + 1 if colno is not None else 1


def _alternatives(ns):
    ns = sorted(set(ns))
    return " or ".join(map(str, ns)) if len(ns) < 3 else ", ".join(map(str, ns[:-1])) + f" or {ns[-1]}"


def _load_error(kind, message, filename, line, col, tb, buf):
    return ("err", kind, message, line, col, _source_line(filename, line), tb, buf.text())


def load(module_name, filename, source, display_source, line_offset, function, arities):
    """Compile and execute a snippet in a fresh module; returns a tagged tuple, never raises."""
    buf = Capture()
    _register_source(filename, line_offset, display_source)
    try:
        code = compile("\n" * line_offset + source, filename, "exec", dont_inherit=True)
    except SyntaxError as e:
        line = e.lineno or line_offset + 1
        tb = "".join(traceback.format_exception_only(type(e), e))
        return _load_error("syntax", f"syntax error: {e.msg}", filename, line, e.offset or 1, tb, buf)
    except Exception as e:  # e.g. NUL bytes in the source, or nesting too deep for the compiler
        return _load_error("other", f"cannot compile: {e}", filename, line_offset + 1, 1, "", buf)

    module = types.ModuleType(module_name)
    module.__file__ = filename
    # Registered before execution, as `import` does, so dataclasses, pickling and typing lookups
    # through sys.modules[cls.__module__] work at module level already.
    sys.modules[module_name] = module

    def execute():
        _capture.set(buf)
        exec(code, module.__dict__)

    try:
        contextvars.copy_context().run(execute)
    except BaseException as e:
        sys.modules.pop(module_name, None)
        te = traceback.TracebackException.from_exception(e)
        own = [f for f in te.stack if f.filename == filename]
        line, col = (own[-1].lineno or line_offset + 1, _col(own[-1])) if own else (line_offset + 1, 1)
        tb = "".join(te.format())
        what = f"{type_name(type(e))}: {_safe_str(e)}"
        if isinstance(e, ImportError):
            return _load_error("import", f"import failed: `{what}`", filename, line, col, tb, buf)
        return _load_error("other", f"module raised `{what}`", filename, line, col, tb, buf)

    fn = module.__dict__.get(function)
    if fn is None:
        message = f"no function `{function}` defined"
        candidates = [k for k, v in module.__dict__.items() if callable(v) and not k.startswith("__")]
        import difflib

        close = difflib.get_close_matches(function, candidates, n=1)
        if close:
            message += f"; hint: did you mean `{close[0]}`?"
        return _load_error("missing_function", message, filename, line_offset + 1, 1, "", buf)
    if not callable(fn):
        message = f"`{function}` is a `{type_name(type(fn))}`, not a function"
        return _load_error("missing_function", message, filename, line_offset + 1, 1, "", buf)

    code_obj = getattr(fn, "__code__", None)
    def_line = code_obj.co_firstlineno if code_obj is not None and code_obj.co_filename == filename else line_offset + 1
    expected = _alternatives(arities)
    plain = _is_plain_function(fn)
    params = _plain_parameters(fn) if plain else _signature_parameters(fn)
    if params is None:
        arity = max(arities)
    else:
        positional, required, varargs, kw_required = params
        limit = float("inf") if varargs else positional
        if kw_required:
            message = (
                f"`{function}{_signature_text(fn)}` has required keyword-only parameter "
                f"`{kw_required[0]}`; expected {expected} positional parameters"
            )
            return _load_error("bad_signature", message, filename, def_line, 1, "", buf)
        fitting = [n for n in sorted(set(arities), reverse=True) if required <= n <= limit]
        if not fitting:
            takes = f"at least {required}" if varargs else (
                str(required) if required == positional else f"{required} to {positional}"
            )
            message = (
                f"`{function}{_signature_text(fn)}` takes {takes} positional "
                f"{'parameter' if takes == '1' else 'parameters'}; expected {expected}"
            )
            return _load_error("bad_signature", message, filename, def_line, 1, "", buf)
        arity = fitting[0]

    if plain:
        is_async = fn.__code__.co_flags & _CO_COROUTINE
    else:
        import inspect

        is_async = inspect.iscoroutinefunction(fn) or (
            not inspect.isfunction(fn) and inspect.iscoroutinefunction(getattr(fn, "__call__", None))
        )
    return ("ok", fn, bool(is_async), arity, buf.text())


# Plain functions are read from their code objects, which says what `inspect.signature` would:
# importing `inspect` (with `ast`, `dis`, `tokenize`, ...) costs every process that runs a snippet
# about 10 ms of start-up, so it is imported only for other callables and for error messages.
_CO_VARARGS = 0x04
_CO_COROUTINE = 0x80


def _is_plain_function(fn):
    """A `def` whose signature is its code's: not decorated with `functools.wraps`, no
    `__signature__` of its own."""
    return type(fn) is types.FunctionType and not hasattr(fn, "__wrapped__") and not hasattr(fn, "__signature__")


def _plain_parameters(fn):
    """`(positional, required positional, takes *args, required keyword-only names)` of a plain
    function."""
    code = fn.__code__
    positional = code.co_argcount
    keyword_only = code.co_varnames[positional : positional + code.co_kwonlyargcount]
    defaults = fn.__kwdefaults__ or {}
    return (
        positional,
        positional - len(fn.__defaults__ or ()),
        bool(code.co_flags & _CO_VARARGS),
        [name for name in keyword_only if name not in defaults],
    )


def _signature_parameters(fn):
    """What `_plain_parameters` says, for any callable, or None when it has no signature."""
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return (
        len(positional),
        sum(1 for p in positional if p.default is p.empty),
        any(p.kind == p.VAR_POSITIONAL for p in params),
        [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty],
    )


def _signature_text(fn):
    import inspect

    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


# --------------------------------------------------------------------------------------------
# Calling snippets.


def call_sync(fn, args, buf):
    token = _capture.set(buf)
    try:
        out = fn(*args)
        if isinstance(out, types.CoroutineType):
            out.close()  # reported as a bad return value; avoids a "never awaited" warning
        return out
    finally:
        _capture.reset(token)


def describe(exc, filename):
    """(type, message, own snippet frames, deepest snippet frames of the chain, traceback,
    is_timeout, rate limited: None or retry_after (-1.0 when not given), os._exit status or None)."""
    _ensure_sources()
    te = traceback.TracebackException.from_exception(exc)
    own = _snippet_frames(te.stack, filename)
    deepest = own
    timed_out = False
    exited = None
    seen = set()
    cur, cur_exc = te, exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        frames = _snippet_frames(cur.stack, filename)
        if frames:
            deepest = frames
        # A snippet that catches the injected timeout and raises something else still timed out.
        timed_out = timed_out or isinstance(cur_exc, SnippetTimeout)
        if exited is None and isinstance(cur_exc, SnippetExit):
            exited = _safe_repr(cur_exc.status)
        if cur.__cause__ is not None:
            cur, cur_exc = cur.__cause__, getattr(cur_exc, "__cause__", None)
        elif not cur.__suppress_context__:
            cur, cur_exc = cur.__context__, getattr(cur_exc, "__context__", None)
        else:
            cur = None
    _drop_own_frames(te)
    text = "".join(te.format())
    rate_limited = None
    if isinstance(exc, RateLimited):
        rate_limited = -1.0 if exc.retry_after is None else float(exc.retry_after)
    return (type_name(type(exc)), _safe_str(exc), own, deepest, text, timed_out, rate_limited, exited)


def _safe_repr(value):
    try:
        return repr(value)
    except BaseException:
        return "<unprintable>"


def _drop_own_frames(te):
    """Start the user's traceback at the snippet: the frames of this module that called it
    are noise, and their line numbers change with every edit of this file."""
    own_file = _drop_own_frames.__code__.co_filename
    seen = set()
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        kept = [f for f in te.stack if f.filename != own_file]
        if len(kept) != len(te.stack):
            te.stack = traceback.StackSummary.from_list(kept)
        te = te.__cause__ if te.__cause__ is not None else te.__context__


def thread_frames(ident, filename):
    """Snippet frames a thread is executing right now (where a timed-out call is stuck)."""
    _ensure_sources()
    frame = sys._current_frames().get(ident)
    if frame is None:
        return []
    return _snippet_frames(traceback.extract_stack(frame), filename)


# Status codes passed to `deliver`.
OK, RAISED, TIMED_OUT = 0, 1, 2


def submit(fn, args, timeout, deliver, http_context):
    """Schedule an async snippet call on the loop; returns the call's holder [task, buffer]."""
    holder = [None, Capture()]
    holder[1].http = http_context
    loop_ = _ensure_loop()
    # Not `asyncio.run_coroutine_threadsafe`: its `concurrent.futures.Future` (a lock and a
    # condition per call, chained by callbacks) would carry a result that `deliver` hands over
    # already. The holder keeps the task alive once it runs.
    loop_.call_soon_threadsafe(_start_task, loop_, _run_async(fn, args, timeout, deliver, holder))
    return holder


def _start_task(loop_, coro):
    loop_.create_task(coro)


async def _run_async(fn, args, timeout, deliver, holder):
    import asyncio

    holder[0] = asyncio.current_task()
    buf = holder[1]
    _capture.set(buf)  # this Task runs in its own context copy
    started = time.perf_counter()
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            out = await fn(*args)
        status, value = OK, out
    except BaseException as e:
        status, value = (TIMED_OUT if deadline.expired() else RAISED), e
    elapsed = time.perf_counter() - started
    deliver(status, value, buf.text(), elapsed)


def _coroutine_frames(coro, filename):
    out = []
    seen = 0
    while coro is not None and seen < 1000:
        seen += 1
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None and frame.f_code.co_filename == filename:
            lineno = frame.f_lineno
            out.append((filename, lineno, frame.f_code.co_name, _source_line(filename, lineno)))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return out


def async_overdue(holder, filename):
    """Inspect an async call that outlived its deadline and grace period.

    Returns (the loop thread's ident if it is running this call's task, else 0; frames;
    captured). When the loop thread is inside the task (a blocking or CPU-bound coroutine that
    never awaits), the caller injects SnippetTimeout into that thread so the loop gets free again.
    """
    import asyncio

    _ensure_sources()
    task, buf = holder
    if task is None:
        return (0, [], buf.text())
    if asyncio.current_task(loop) is task:
        return (loop_ident, thread_frames(loop_ident, filename), buf.text())
    return (0, _coroutine_frames(task.get_coro(), filename), buf.text())


# --------------------------------------------------------------------------------------------
# latticeflow.core objects. Snippets written for lf 3.17 receive `SolverTrace`, `Trace`, ...
# objects and call their methods (`solver_output.trace.get_last_assistant_text()`). When the
# user's environment has `latticeflow-core`, lfeval hands over the real objects, validated from
# its own JSON. Without it, snippets get attribute-readable dicts with the same properties and
# methods, written here from lf's documented semantics (the package itself is not shipped).

_LF_MISSING = object()
_lf_dtypes = None


def _dtypes():
    global _lf_dtypes
    if _lf_dtypes is None:
        try:
            import latticeflow.core.dtypes as dtypes
        except Exception:
            dtypes = _LF_MISSING
        _lf_dtypes = dtypes
    return None if _lf_dtypes is _LF_MISSING else _lf_dtypes


def lf_object(kind, value, fallback):
    """The `latticeflow.core.dtypes.<kind>` for `value`, or lfeval's look-alike of it."""
    dtypes = _dtypes()
    if dtypes is not None:
        cls = getattr(dtypes, kind, None)
        if cls is not None:
            try:
                # Plain dicts: a `Record` answers `.items` with its "items" key.
                return cls.model_validate(_plain(value))
            except Exception as e:  # a shape lf's types reject: the look-alike still works
                sys.__stderr__.write(f"lfeval: cannot build latticeflow.core {kind} ({type(e).__name__}); passing a dict\n")
    return _shim(kind, value, fallback)


def _is_message(item, role=None):
    return item.get("type", "message") == "message" and (role is None or item.get("role") == role)


def _text_content(content):
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if isinstance(part, dict):
            if "text" in part:
                parts.append(part["text"])
            elif "refusal" in part:
                parts.append(part["refusal"])
    return "\n".join(parts)


def _pairs(items):
    outputs = {i.get("call_id"): i for i in items if i.get("type") == "function_call_output"}
    return [(c, outputs.get(c.get("call_id"))) for c in items if c.get("type") == "function_call"]


class TraceTurn(Record):
    """A user message and what followed it (lf's `Turn`)."""

    __slots__ = ()

    @property
    def assistant_messages(self):
        return [i for i in self["assistant_items"] if _is_message(i, "assistant")]

    @property
    def function_calls(self):
        return [i for i in self["assistant_items"] if i.get("type") == "function_call"]

    @property
    def function_outputs(self):
        return [i for i in self["assistant_items"] if i.get("type") == "function_call_output"]

    @property
    def function_call_pairs(self):
        return _pairs(self["assistant_items"])


class TraceShim(Record):
    """An Open Responses trace with lf's `Trace` queries."""

    __slots__ = ()

    @classmethod
    def from_items(cls, items, **kwargs):
        return cls(FORMAT="open_responses", items=list(items), events=None, **kwargs)

    def spans(self):
        return []

    @property
    def preamble(self):
        out = []
        for item in self["items"]:
            if _is_message(item, "user"):
                break
            out.append(item)
        return out

    @property
    def conversation_items(self):
        return self["items"][len(self.preamble):]

    @property
    def system_messages(self):
        return [i for i in self.preamble if _is_message(i, "system")]

    @property
    def turns(self):
        turns = []
        for item in self.conversation_items:
            if _is_message(item, "user"):
                turns.append(TraceTurn(user_message=item, assistant_items=[]))
            elif turns:
                turns[-1]["assistant_items"].append(item)
        return turns

    @property
    def function_calls(self):
        return [i for i in self.conversation_items if i.get("type") == "function_call"]

    @property
    def function_outputs(self):
        return [i for i in self.conversation_items if i.get("type") == "function_call_output"]

    @property
    def assistant_messages(self):
        return [i for i in self.conversation_items if _is_message(i, "assistant")]

    @property
    def user_messages(self):
        return [i for i in self.conversation_items if _is_message(i, "user")]

    def get_function_calls_by_name(self, name):
        return [c for c in self.function_calls if c.get("name") == name]

    def get_function_output_for_call(self, call_id):
        return next((o for o in self.function_outputs if o.get("call_id") == call_id), None)

    def get_function_call_pairs(self):
        return _pairs(self.conversation_items)

    @staticmethod
    def _get_text_content(content):
        return _text_content(content)

    def get_last_assistant_text(self):
        messages = self.assistant_messages
        return _text_content(messages[-1]["content"]) if messages else None

    def get_last_user_text(self):
        messages = self.user_messages
        return _text_content(messages[-1]["content"]) if messages else None

    def get_first_system_prompt(self):
        messages = self.system_messages
        return _text_content(messages[0]["content"]) if messages else None

    @staticmethod
    def get_function_call_arguments(call):
        import json

        return json.loads(call["arguments"])

    @staticmethod
    def get_function_output_text(output):
        return _text_content(output["output"])

    def model_dump(self, **_kwargs):
        return _plain(self)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in dict.items(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _shim(kind, value, fallback):
    record = Record(value)
    if kind == "Trace":
        return TraceShim(value)
    if kind == "SolverTrace":
        record = SolverTraceShim(dict(value, trace=TraceShim(value["trace"])))
    if kind == "ModelResponse":
        record = ModelResponseShim(value)
    for k, v in dict.items(fallback or {}):
        if not dict.__contains__(record, k):
            dict.__setitem__(record, k, v)
    return record


class SolverTraceShim(Record):
    """lf's `SolverTrace` look-alike: a trace being built by a Python solver."""

    __slots__ = ()

    @property
    def items(self):
        return self["trace"]["items"]

    @property
    def output(self):
        outputs = self["raw_outputs"]
        return outputs[-1] if outputs else dict.get(self, "output")

    @property
    def messages(self):
        return [
            Record(role=i.get("role"), content=_text_content(i.get("content")))
            for i in self.items
            if _is_message(i)
        ]

    def append(self, item):
        self.items.append(item)

    def extend(self, items):
        self.items.extend(items)

    def _message(self, role, text):
        self.items.append(
            Record(type="message", id="", status="completed", role=role, content=[Record(type="input_text", text=text)])
        )

    def append_user_message(self, text):
        self._message("user", text)

    def append_system_message(self, text):
        self._message("system", text)

    def append_custom_task_input_message(self, content):
        self.items.append(Record(type="custom_task_input_message", content=content))

    def add_model_response(self, response):
        self.extend(response["items"])
        self["raw_outputs"].append(response["raw_output"])

    def model_dump(self, **_kwargs):
        return _plain(self)


class ModelResponseShim(Record):
    """lf's `ModelResponse` look-alike."""

    __slots__ = ()

    @property
    def text(self):
        text = TraceShim.from_items(self["items"]).get_last_assistant_text()
        if text is None:
            raise ValueError("No assistant message found in `ModelResponse.items`")
        return text


def _settle(fut, ok, value):
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(RuntimeError(value))


def _item_json(item):
    dump = getattr(item, "model_dump", None)
    # lf's models leave unset fields (such as `type`) out unless asked.
    return dump(mode="json", exclude_unset=False) if callable(dump) else _plain(item)


class HostModel:
    """The `model` a Python solver gets: `await model.predict(items)` runs lfeval's model chain
    (adapter, limits, retries, cache) and returns a `ModelResponse`."""

    def __init__(self, call):
        self._call = call

    async def predict(self, items, sample=None, **_kwargs):
        import asyncio

        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def done(ok, value):
            loop.call_soon_threadsafe(_settle, fut, ok, value)

        request = {"items": [_item_json(i) for i in items]}
        if sample is not None:
            request["sample"] = _plain(sample)
        self._call(request, done)
        value = await fut
        return lf_object("ModelResponse", value, None)
