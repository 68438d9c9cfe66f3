"""The model `@KEY@`: lfeval calls `run_inference(body, environment)` once per request.

`body` is the request the adapter rendered (OpenAI Chat Completions JSON to start with) and
`environment` the model file's `environment:`. Return the response body as text; the adapter's
`process_output` turns it into lfeval's canonical output.

With no `MODEL_ENDPOINT_URL` the snippet answers offline, echoing the last user message, so the
whole chain can be tried with no endpoint, no key and no network.

Try it by hand: `python snippets/@SNIPPET@.py "Hello!"` (or `lfeval model test @KEY@`).
"""

import json
import urllib.error
import urllib.request


class Client:
    """A minimal HTTP client with the part of `httpx.Client`'s interface used below, built on
    the standard library, for running this file by hand (outside lfeval there is no
    `lfeval.http`). `client = httpx.Client()` after `import httpx` works too."""

    def post(self, url, *, content, headers, timeout):
        request = urllib.request.Request(url, data=content.encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Response(response.status, response.read().decode())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.read().decode(errors="replace"))


class Response:
    def __init__(self, status_code, text):
        self.status_code = status_code
        self.text = text

    def raise_for_status(self):
        if self.status_code >= 400:
            # lfeval retries 429 and 5xx by this wording.
            raise RuntimeError(f"HTTP Error {self.status_code}: {self.text[:300]}")


# Module-level state lives as long as the run: one client (and its connections) for every call.
try:
    # Inside lfeval: its own HTTP client, with pooled connections, every request kept as evidence
    # in the run's records, a `Retry-After` slowing the model, and the call's timeout ending it.
    from lfeval import http as client
except ImportError:
    client = Client()


def run_inference(body: str, environment: dict) -> str:
    url = environment.get("MODEL_ENDPOINT_URL")
    if not url:
        return offline_reply(body)
    request = json.loads(body)
    if environment.get("MODEL_NAME"):
        request["model"] = environment["MODEL_NAME"]
    headers = {"Content-Type": "application/json"}
    if environment.get("MODEL_ENDPOINT_API_KEY"):
        headers["Authorization"] = f"Bearer {environment['MODEL_ENDPOINT_API_KEY']}"
    response = client.post(url, content=json.dumps(request), headers=headers, timeout=25.0)
    response.raise_for_status()
    return response.text


def offline_reply(body: str) -> str:
    """What an OpenAI-compatible endpoint would answer, echoing the last user message."""
    messages = json.loads(body)["messages"]
    reply = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return json.dumps(
        {
            "choices": [{"message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": sum(len(str(m["content"]).split()) for m in messages),
                      "completion_tokens": len(reply.split())},
        }
    )


if __name__ == "__main__":
    import os
    import sys

    prompt = " ".join(sys.argv[1:]) or "Hello!"
    environment = {
        "MODEL_ENDPOINT_URL": os.environ.get("@VAR@_URL", "@URL@"),
        "MODEL_ENDPOINT_API_KEY": os.environ.get("@VAR@_API_KEY", ""),
        "MODEL_NAME": os.environ.get("@VAR@_MODEL", ""),
    }
    print(run_inference(json.dumps({"messages": [{"role": "user", "content": prompt}]}), environment))
