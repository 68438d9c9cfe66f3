"""A model behind a session API: create a session, submit the message, poll the job until done.

Standard library only (urllib), so it runs without a virtualenv. The protocol:

* ``POST {SESSION_API_URL}/sessions`` -> ``{"session_id": ...}``
* ``POST {SESSION_API_URL}/sessions/{id}/messages`` with ``{"text": ...}`` -> ``{"job_id": ...}``
* ``GET {SESSION_API_URL}/jobs/{id}`` -> ``{"state": "running"}`` until
  ``{"state": "done", "answer": ...}``

The snippet receives the canonical chat input (identity adapter) and returns canonical chat
output. The session id travels on the assistant message, so a conversation that carries an
earlier answer continues in the same session instead of opening a new one.
"""

import json
import time
import urllib.error
import urllib.request


def request(method: str, url: str, payload: dict | None, timeout: float) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return json.loads(response.read().decode())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:300]
        # Keeps urllib's "HTTP Error <code>" wording: lfeval retries 429 and 5xx by it.
        raise RuntimeError(f"HTTP Error {e.code} from {method} {url}: {detail}") from None


def text_of(content) -> str:
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def run_inference(body: str, environment: dict) -> str:
    base = str(environment["SESSION_API_URL"]).rstrip("/")
    timeout = float(environment.get("REQUEST_TIMEOUT", 10))
    interval = float(environment.get("POLL_INTERVAL", 0.2))
    messages = json.loads(body)["messages"]

    session_id = next(
        (m["session_id"] for m in reversed(messages) if m["role"] == "assistant" and m.get("session_id")),
        None,
    )
    if session_id is None:
        session_id = request("POST", f"{base}/sessions", {}, timeout)["session_id"]

    last_user = next(m for m in reversed(messages) if m["role"] == "user")
    job_id = request("POST", f"{base}/sessions/{session_id}/messages", {"text": text_of(last_user["content"])}, timeout)["job_id"]

    # No deadline here: the model's `timeout` bounds the whole call.
    while True:
        job = request("GET", f"{base}/jobs/{job_id}", None, timeout)
        if job.get("state") == "done":
            break
        if job.get("state") != "running":
            raise RuntimeError(f"job `{job_id}` ended in state `{job.get('state')}`: {job}")
        time.sleep(interval)

    answer = job["answer"]
    message = {"role": "assistant", "content": answer, "session_id": session_id}
    return json.dumps({"choices": [{"message": message}]})
