"""OpenAI Chat Completions through `lfeval.http`, lfeval's own HTTP client.

The same call as `run_inference.py`, without httpx: the request runs on lfeval's pooled Rust
client with the GIL released, is recorded in the results next to the model call (credential
headers masked) with its connect, first-byte and network times, and a 429 or 5xx with
`Retry-After` pauses the whole model. `STREAM: true` in the environment streams the answer
(server-sent events) and records the time to its first token as well.
"""

import json

from lfeval import http


def run_inference(body: str, environment: dict) -> str:
    request = json.loads(body)
    request["model"] = environment["MODEL_KEY"]
    headers = {"Authorization": f"Bearer {environment['MODEL_ENDPOINT_API_KEY']}"}
    if not environment.get("STREAM"):
        response = http.post(environment["MODEL_ENDPOINT_URL"], json=request, headers=headers, timeout=30)
        response.raise_for_status()
        return response.text

    request["stream"] = True
    parts = []
    with http.stream("POST", environment["MODEL_ENDPOINT_URL"], json=request, headers=headers) as response:
        response.raise_for_status()
        for event in response:
            if event.data == "[DONE]":
                break
            for choice in event.json().get("choices", []):
                parts.append(choice.get("delta", {}).get("content") or "")
    message = {"role": "assistant", "content": "".join(parts)}
    return json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
