"""An offline model: echoes the last user message in the canonical chat output format."""

import json


def run_inference(body: str, environment: dict) -> str:
    request = json.loads(body)
    messages = request["messages"]
    last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    reply = environment.get("PREFIX", "") + last_user
    prompt_tokens = sum(len(str(m["content"]).split()) for m in messages)
    return json.dumps(
        {
            "choices": [{"message": {"role": "assistant", "content": reply}}],
            "usage": {"num_prompt_tokens": prompt_tokens, "num_completion_tokens": len(reply.split())},
        }
    )
