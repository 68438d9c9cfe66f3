#!/usr/bin/env python3
"""Render model-adapter templates exactly as LatticeFlow's own code sets Jinja2 up.

    <venv>/bin/python tests/conformance/render_oracle.py --lf-root <cache>/lf-3.17.0 < cases.json

The Jinja environment is *imported* from the unzipped latticeflow-core wheel, never copied:
`latticeflow.core.utils.jinja.safe_render` (which builds `get_env(strict_undefined=True)`:
a plain `jinja2.Environment` with the `do` and `loopcontrols` extensions, `autoescape=False`,
`StrictUndefined`, `policies["json.dumps_function"] = custom_tojson` (so `tojson` dumps
pydantic models with `model_dump(mode="json")`, otherwise Jinja2's own `htmlsafe_json_dumps`
with `sort_keys=True`), and the filters `fromjson` (orjson.loads), `json_escape`
(core.utils.json.make_string_json_compatible), `zip`, `merge` (core.utils.collections.merge_dicts)
and `regex_replace` (core.utils.regex.regex_replace)). With `--lf-root <cache>/lf-3.6.2` the
docs-era environment is used instead (`latticeflow.go.utils.jinja.get_env`: same Environment,
only the extra `zip` filter; no fromjson/json_escape/merge/regex_replace, Jinja2's stock tojson).

Caveat: lf never renders adapters on the client. `lf test model` asks the server
(`transform_input_model` / `transform_output_model`), and the server code is not published. The
environment above is the one latticeflow-core (the "shared types for the ecosystem") uses for every
template it renders itself (scorers, filters); the variable names (`input`, `model_info`,
`kwargs` for process_input; `body`, `status_code`, `headers`, `model_info` for process_output) are
those the bundle's adapters use. Whether the server passes `input` as a dict or as a pydantic
`ChatCompletionInput` is not visible; `"input_as": "model"` renders with the pydantic object
(validated by `LF_MODEL_INPUT_TYPE_ADAPTER`) so both can be compared.

Input (JSON on stdin):

    {
      "adapter": "path/to/adapter.yaml",      # loaded with lf's load_yaml_recursively and
                                              # validated as SDKModelAdapter; relative to cwd
      "process_input": "...", "process_output": "...",   # or give the templates directly
      "input_as": "dict" | "model",           # default "dict"
      "cases": [
        {"name": "hello",
         "input": {"messages": [...]},        # present -> process_input is rendered
         "kwargs": {},                        # default {}
         "model_info": {"model_key": "gpt-4.1-nano"},     # default {}
         "body": "...", "status_code": 200, "headers": {}  # body present -> process_output
        }
      ]
    }

Output (JSON on stdout, sorted keys):

    {"environment": "latticeflow-core 3.17.0 ...", "cases": [
      {"name": "hello",
       "process_input":  {"rendered": str} | {"error": str},
       "process_output": {"rendered": str, "parsed_as": str|null, "parse_error": str|null,
                          "is_error": bool} | {"error": str}}]}

`rendered` is the exact string Jinja2 returned (no stripping). `parsed_as` is the first type of
lf's `LFModelOutput` union that `LF_MODEL_OUTPUT_TYPE_ADAPTER.validate_json(rendered)` yields
(`OpenResponsesModelOutput`, `RAGCompletionOutput`, `ChatCompletionModelOutput`,
`EmbeddingsModelOutput`, or a plain JSON type name for the `Any` custom-task fallback), i.e. how
lf's own types would read the adapter's output; `parse_error` is set when it is not JSON at all;
`is_error` when it is an object with an `"error"` key (the bundle's failure convention).
Exit status 0 even when cases fail to render (the errors are data); 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lf-root",
        type=Path,
        required=True,
        help="unzipped wheels, e.g. <cache>/lf-3.17.0 (fetch.sh)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(args.lf_root.resolve()))

    try:
        request = json.load(sys.stdin)
    except json.JSONDecodeError as error:
        print(f"render_oracle: stdin is not JSON: {error}", file=sys.stderr)
        return 2

    import logging

    logging.disable(logging.CRITICAL)  # lf's deprecation warnings are not output

    render, environment = load_renderer()
    input_type_adapter, output_type_adapter = load_type_adapters()

    try:
        templates = load_templates(request)
    except Exception as error:
        print(f"render_oracle: cannot load the adapter: {error}", file=sys.stderr)
        return 2

    input_as = request.get("input_as", "dict")
    if input_as == "model" and input_type_adapter is None:
        print("render_oracle: input_as=model needs latticeflow-core", file=sys.stderr)
        return 2

    results = []
    for index, case in enumerate(request.get("cases", [])):
        result: dict[str, Any] = {"name": case.get("name", str(index))}
        model_info = case.get("model_info", {})
        if "input" in case:
            model_input = case["input"]
            try:
                if input_as == "model":
                    model_input = input_type_adapter.validate_python(model_input)
                result["process_input"] = {
                    "rendered": render(
                        templates["process_input"],
                        input=model_input,
                        model_info=model_info,
                        kwargs=case.get("kwargs", {}),
                    )
                }
            except Exception as error:
                result["process_input"] = {"error": f"{type(error).__name__}: {error}"}
        if "body" in case:
            try:
                rendered = render(
                    templates["process_output"],
                    body=case["body"],
                    status_code=case.get("status_code", 200),
                    headers=case.get("headers", {}),
                    model_info=model_info,
                )
                output: dict[str, Any] = {"rendered": rendered}
                output.update(classify(rendered, output_type_adapter))
                result["process_output"] = output
            except Exception as error:
                result["process_output"] = {"error": f"{type(error).__name__}: {error}"}
        results.append(result)

    json.dump(
        {"environment": environment, "cases": results},
        sys.stdout,
        sort_keys=True,
        ensure_ascii=False,
        indent=1,
    )
    sys.stdout.write("\n")
    return 0


def load_renderer() -> tuple[Any, str]:
    """lf's own render function and a description of where it came from."""
    try:
        from latticeflow.core.utils.jinja import safe_render

        return safe_render, f"latticeflow.core.utils.jinja.safe_render ({version('latticeflow_core')})"
    except ImportError:
        pass
    # Docs era (go-sdk 3.6.x): no latticeflow-core, `get_env` lives in the go package and there
    # is no safe_render; render the way 3.6's own callers do.
    from latticeflow.go.utils.jinja import get_env

    def render_36(source: str, **context: Any) -> str:
        template = get_env(strict_undefined=True).from_string(source)
        return template.render(**context)

    return render_36, f"latticeflow.go.utils.jinja.get_env ({version('latticeflow_go_sdk')})"


def load_type_adapters() -> tuple[Any, Any]:
    try:
        from latticeflow.core.dtypes import LF_MODEL_INPUT_TYPE_ADAPTER
        from latticeflow.core.dtypes import LF_MODEL_OUTPUT_TYPE_ADAPTER

        return LF_MODEL_INPUT_TYPE_ADAPTER, LF_MODEL_OUTPUT_TYPE_ADAPTER
    except ImportError:
        return None, None


def version(dist_prefix: str) -> str:
    import latticeflow

    for root in latticeflow.__path__:
        for info in sorted(Path(root).parent.glob(f"{dist_prefix}-*.dist-info")):
            return info.name.removesuffix(".dist-info").replace("_", "-")
    return "unknown version"


def load_templates(request: dict[str, Any]) -> dict[str, str]:
    if "adapter" in request:
        from latticeflow.go.dtypes import SDKModelAdapter
        from latticeflow.go.utils.yaml_utils import load_yaml_recursively

        loaded, _ = load_yaml_recursively(Path(request["adapter"]))
        adapter = SDKModelAdapter.model_validate(loaded, ignore_extra=False)
        return {
            "process_input": adapter.process_input.source_code,
            "process_output": adapter.process_output.source_code,
        }
    return {
        "process_input": request.get("process_input", ""),
        "process_output": request.get("process_output", ""),
    }


def classify(rendered: str, output_type_adapter: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(rendered)
    except json.JSONDecodeError as error:
        return {"parsed_as": None, "parse_error": str(error), "is_error": False}
    # The bundle's convention for a failed call: a top-level object with an "error" key.
    is_error = isinstance(parsed, dict) and "error" in parsed
    if output_type_adapter is None:
        return {"parsed_as": None, "parse_error": None, "is_error": is_error}
    try:
        value = output_type_adapter.validate_json(rendered)
    except Exception as error:  # pydantic.ValidationError
        return {"parsed_as": None, "parse_error": str(error), "is_error": is_error}
    return {"parsed_as": type(value).__name__, "parse_error": None, "is_error": is_error}


if __name__ == "__main__":
    sys.exit(main())
