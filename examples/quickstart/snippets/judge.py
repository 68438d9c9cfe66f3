"""An offline judge: compares the expected and given answers written in its prompt."""

import json
import re

FIELD = re.compile(r"^(expected|answer):\s*(.*)$", re.MULTILINE)


def run_inference(body: str, environment: dict) -> str:
    prompt = json.loads(body)["messages"][-1]["content"]
    fields = dict(FIELD.findall(prompt))
    correct = fields.get("expected", "").strip() == fields.get("answer", "").strip()
    verdict = {
        "prediction": "CORRECT" if correct else "INCORRECT",
        "reasoning": "the answers match" if correct else "the answers differ",
        "confidence": 1.0,
    }
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": json.dumps(verdict)}}]})
