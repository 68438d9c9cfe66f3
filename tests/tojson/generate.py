"""Regenerate expected.jsonl: what Python Jinja2's `tojson` renders for each corpus value.

Usage (needs Jinja2 3.1.6, e.g. in a throwaway venv):
    python3 -m venv /tmp/j2 && /tmp/j2/bin/pip install jinja2==3.1.6
    /tmp/j2/bin/python tests/tojson/generate.py

The Rust test compares lfeval's `tojson` with these bytes and never runs Python.
"""

import json
import pathlib

import jinja2

HERE = pathlib.Path(__file__).resolve().parent
# Containers are rendered twice: flat and with indent=2.


def main() -> None:
    assert jinja2.__version__ == "3.1.6", jinja2.__version__
    env = jinja2.Environment(autoescape=False, extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])
    flat = env.from_string("{{ value | tojson }}")
    indented = env.from_string("{{ value | tojson(indent=2) }}")
    corpus = json.loads((HERE / "corpus.json").read_text(encoding="utf-8"))
    lines = []
    for value in corpus:
        lines.append({"value": value, "indent": None, "jinja2": flat.render(value=value)})
        if isinstance(value, (list, dict)):
            lines.append({"value": value, "indent": 2, "jinja2": indented.render(value=value)})
    out = HERE / "expected.jsonl"
    with out.open("w", encoding="ascii", newline="\n") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=True) + "\n")
    print(f"wrote {len(lines)} cases to {out}")


if __name__ == "__main__":
    main()
