"""OpenAI Chat Completions from an ``async def`` snippet.

lfeval runs every async snippet on one event loop for the whole process, so a client created
at module level is shared by all calls and keeps its connections alive between them.
"""

import json

import httpx

CLIENT = httpx.AsyncClient(timeout=10.0)


async def run_inference(body: str, environment: dict) -> str:
    request = json.loads(body)
    request["model"] = environment["MODEL_KEY"]
    response = await CLIENT.post(
        environment["MODEL_ENDPOINT_URL"],
        headers={"Authorization": f"Bearer {environment['MODEL_ENDPOINT_API_KEY']}"},
        json=request,
    )
    response.raise_for_status()
    return response.text
