"""A minimal Chrome DevTools Protocol client over --remote-debugging-pipe, standard library only.

Why a pipe and not playwright or a websocket: nothing to install beyond Debian's chromium, no
port to pick or leak, and no version coupling between a driver and the browser. The protocol
is JSON messages separated by NUL bytes: we write to the browser's fd 3 and read its fd 4.
"""

import base64
import fcntl
import json
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM = os.environ.get("LFEVAL_CHROMIUM", "/usr/bin/chromium")

# Without these a headless Chromium on a machine with blocked network waits for QUIC, component
# updates and sync to time out, and can hang for minutes.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-default-browser-check", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
]


class CDPError(RuntimeError):
    pass


class Browser:
    """One Chromium process with a fresh profile, killed (with its children) on close."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="lfeval-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Chromium expects its command pipe on fd 3 and its reply pipe on fd 4. Lift both ends
        # above 10 first, so placing one on 3 or 4 cannot overwrite the other.
        child_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        argv = [CHROMIUM, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
                "about:blank"]
        self.pid = os.posix_spawn(CHROMIUM, argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, child_r, 3),
            (os.POSIX_SPAWN_DUP2, child_w, 4),
        ], setsid=True)  # its own session and process group, so close() reaches every child
        for fd in (child_r, child_w):
            os.close(fd)
        self._next_id = 0
        self._pending = {}
        self._lock = threading.Lock()
        self.listeners = []  # callables(method, params, session_id)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        buf = b""
        while True:
            try:
                data = os.read(self._from_browser, 1 << 20)
            except OSError:
                data = b""
            if not data:
                for q in list(self._pending.values()):
                    q.put({"error": {"message": "browser exited"}})
                return
            buf += data
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                if "id" in msg:
                    q = self._pending.pop(msg["id"], None)
                    if q:
                        q.put(msg)
                else:
                    for listener in list(self.listeners):
                        listener(msg["method"], msg.get("params", {}), msg.get("sessionId"))

    def send(self, method, params=None, session=None, timeout=30.0):
        with self._lock:
            self._next_id += 1
            msg_id = self._next_id
            q = queue.Queue()
            self._pending[msg_id] = q
            msg = {"id": msg_id, "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        try:
            reply = q.get(timeout=timeout)
        except queue.Empty:
            raise CDPError(f"{method}: no answer in {timeout:.0f} s") from None
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def new_page(self, width=1280, height=900, background=False):
        # A helper tab opened in the foreground would hide the page under test, and hidden
        # pages get no animation frames.
        target = self.send("Target.createTarget",
                           {"url": "about:blank", "background": background})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        return Page(self, session, width, height, target)

    def memory(self):
        """Proportional set size (bytes) of the renderer processes and of the whole tree.

        PSS, not RSS: Chromium's processes share a lot of memory, and RSS counts it in each.
        """
        renderer, total = 0, 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if os.getpgid(int(pid)) != self.pid:
                    continue
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ProcessLookupError):
                continue
            pss = next((int(line.split()[1]) * 1024 for line in rollup.splitlines()
                        if line.startswith("Pss:")), 0)
            total += pss
            if b"--type=renderer" in cmdline:
                renderer += pss
        return renderer, total

    def close(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab. Clicks and typing go through real input events, not element.click()."""

    def __init__(self, browser, session, width, height, target):
        self.browser, self.session, self.target = browser, session, target
        self.events = []
        browser.listeners.append(self._on_event)
        for domain in ("Page", "Runtime", "Log", "Network", "Performance"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def _on_event(self, method, params, session):
        if session == self.session:
            self.events.append((method, params))

    def send(self, method, params=None, timeout=30.0):
        return self.browser.send(method, params, self.session, timeout)

    def navigate(self, url):
        self.send("Page.navigate", {"url": url})

    def eval(self, expression, await_promise=False, timeout=30.0):
        result = self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": await_promise},
            timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"evaluate failed: {text}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout=10.0, interval=0.03):
        """Poll a JS expression until it is truthy; returns its value, or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.eval(expression)
            except CDPError:
                value = None  # the document may be mid-navigation
            if value:
                return value
            if time.monotonic() > deadline:
                return None
            time.sleep(interval)

    def center_of(self, selector):
        """Scrolls the element into view and returns its centre in viewport coordinates."""
        return self.eval(f"""(() => {{
            const el = document.querySelector({json.dumps(selector)});
            if (!el) return null;
            el.scrollIntoView({{block: 'center', inline: 'nearest'}});
            const r = el.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2];
        }})()""")

    def click(self, selector):
        point = self.center_of(selector)
        if not point:
            raise CDPError(f"nothing to click at {selector}")
        x, y = point
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent",
                      {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def type_text(self, text):
        self.send("Input.insertText", {"text": text})

    def press(self, key, code=None, key_code=0):
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": code or key,
                                                 "windowsVirtualKeyCode": key_code})

    def screenshot(self, clip=None):
        params = {"format": "png"}
        if clip:
            params["clip"] = clip
        return base64.b64decode(self.send("Page.captureScreenshot", params)["data"])

    def metrics(self):
        return {m["name"]: m["value"] for m in self.send("Performance.getMetrics")["metrics"]}
