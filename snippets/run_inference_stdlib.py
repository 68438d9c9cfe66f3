"""OpenAI Chat Completions with the standard library only (urllib): no virtualenv needed."""

import json
import urllib.error
import urllib.request


def run_inference(body: str, environment: dict) -> str:
    request = json.loads(body)
    request["model"] = environment["MODEL_KEY"]
    req = urllib.request.Request(
        environment["MODEL_ENDPOINT_URL"],
        data=json.dumps(request).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {environment['MODEL_ENDPOINT_API_KEY']}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10.0) as response:
            return response.read().decode()
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:300]
        # Keeps urllib's "HTTP Error <code>" wording: lfeval retries 429 and 5xx by it.
        raise RuntimeError(f"HTTP Error {e.code}: {detail}") from None
