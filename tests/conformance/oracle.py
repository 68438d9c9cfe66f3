#!/usr/bin/env python3
"""lf's own verdict on every YAML file of LatticeFlow's integration bundle.

    <venv>/bin/python tests/conformance/oracle.py BUNDLE_ROOT [--lf-root DIR] [FILE...]

BUNDLE_ROOT is `<cache>/lf-3.17.0/latticeflow/go/skills_data/integrations` as laid out by
fetch.sh. lf's code is imported from the unzipped wheels: `--lf-root` (default: the directory
four levels above BUNDLE_ROOT, i.e. `<cache>/lf-3.17.0`) is put first on sys.path. Run it with
the venv fetch.sh made (`<cache>/venv/bin/python`).

Prints one JSON object per line, sorted by file, with sorted keys:

    {"file": relpath, "kind": str, "valid": bool, "error": str|null,
     "via": str, "validator": str, "warnings": [str], "parent": str|null}

`kind` is one of run_config, model, model_adapter, dataset, dataset_generator, task,
evaluation, ai_app, assessment_plan, risk_scorers, risk_scoring_methodology, framework,
or fragment (a file that lf only ever reads through a `$ref` inside another entity; it is
validated as part of that entity, named in `parent`, and `kind` of the fragment's own type is in
`via`). `via` says how the kind was decided (see KIND DETECTION below), `validator` which lf
function gave the verdict, `warnings` what lf logged while loading (deprecations, unset
variables), and `error` is lf's own exception chain (`summarize_exception_chain`, the text `lf`
prints), with the absolute bundle path replaced by `<bundle>`.

HOW LF VALIDATES (read from latticeflow-go-sdk 3.17.0)
  * Every command loads a file with `yaml_utils.load_yaml_recursively(path)`: PyYAML SafeLoader
    subclass (`YAMLLoader`) with `!include` (file text, `.strip()`ed, path relative to the
    directory of the YAML file holding the tag, no confinement), `$VAR`/`${VAR}` expansion
    through `os.path.expandvars` only for plain string values that start with `$` and hold no
    whitespace (never keys, never a top-level scalar; an unset variable stays literal and logs
    a warning), duplicate keys rejected; then `resolution.load_recursively` replaces every
    mapping holding `$ref` by the referenced file (relative to the file holding the `$ref`; with
    sibling keys the two are merged, referenced keys win); then `((TODO))` anywhere is an error.
  * The data then goes to the entity's pydantic model with `model_validate(..., ignore_extra=
    False)`, i.e. unknown keys are errors (`LFBaseModel` has `extra="forbid"`).
  * Which model is chosen by the *command*, not by the file: `lf add model|model-adapter|dataset|
    dataset-generator|task|eval|app|assessment-plan|risk-scorer|risk-scoring-methodology|
    framework -f FILE --validate`, `lf run -f FILE --validate` (a run config), `lf run
    assessment-plan -f FILE`. The only content-based decision lf makes is
    `run_config_processing.is_run_config(data)`: `lf add <entity> -f FILE` treats FILE as a run
    config when the loaded data has any of `datasets`, `dataset_generators`, `models`,
    `model_adapters`, `evaluation`, or has `tasks` but none of `key`, `display_name`,
    `definition`. Inside a run config an entity's kind is the list it sits in (`models[i]` ->
    SDKModel | SDKProviderAndModelKey, ...). The only folder-based decision is
    `lf restore entities --from DIR` (sdk/utils/dump_and_restore.py): `DIR/<folder>/*.yaml` (not
    recursive) for folders model_adapters, models, dataset_generators, datasets, tasks,
    evaluations, frameworks, risk_scoring_methodologies, plus files ai_app.yaml,
    risk_scorers.yaml, policies.yaml.
  (`lf add <entity> --validate` first builds an API client, so it needs LF_URL/LF_API_KEY and a
  reachable server even to validate; this oracle calls the same `get_sdk_<entity>_from_file`
  functions directly, which is the whole of what `--validate` does after that.)

KIND DETECTION (this oracle, in order; `via` names the rule)
  1. `is_run_config`: lf's own heuristic on the loaded data (exactly `add._is_file_run_config`).
  2. `ref:<file>:<path>`: the file is the target of a `$ref` at <path> inside a run config of the
     bundle (e.g. `models[0]`, `evaluation`) -> that list's entity kind. A `$ref` at a deeper
     path (inside an entity, e.g. `definition.scorers[0]`) makes the file a fragment.
  3. `readme:<cmd>`: a README of the bundle tells the user to run `lf <cmd> -f <file>`.
  4. `restore-layout`: lf's dump/restore layout (folder or file name as listed above).
  5. `bundle-layout`: the bundle's own naming: `app.yaml`, `apps/*.yaml`, `ai_apps/*.yaml` -> ai_app;
     `model.yaml` -> model; `assessment-plan.yaml` -> assessment_plan;
     `risk_scoring_methodology.yaml` -> risk_scoring_methodology.
  Files matching none are reported with kind `unknown` and valid false.

ENVIRONMENT
  Every `$VAR`/`${VAR}` named in a YAML string of the bundle is set to `dummy-<var>` (lowercase,
  `_` -> `-`) before loading, replacing whatever the caller had, so the output does not depend
  on the caller's environment. lf's `.env` loading (`load_dotenv(cwd/.env)` in the CLI callback)
  is not used: the bundle ships no `.env` (only `config.env` / `.env.example` templates).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any
from typing import Callable

RUN_CONFIG_LIST_KINDS = {
    "model_adapters": "model_adapter",
    "models": "model",
    "dataset_generators": "dataset_generator",
    "datasets": "dataset",
    "tasks": "task",
}
RESTORE_DIRS = {  # sdk/utils/dump_and_restore.py *_DIR_NAME
    "model_adapters": "model_adapter",
    "models": "model",
    "dataset_generators": "dataset_generator",
    "datasets": "dataset",
    "tasks": "task",
    "evaluations": "evaluation",
    "frameworks": "framework",
    "risk_scoring_methodologies": "risk_scoring_methodology",
}
RESTORE_FILES = {
    "ai_app.yaml": "ai_app",
    "risk_scorers.yaml": "risk_scorers",
    "policies.yaml": "run_config",  # `lf set policies -f` reads a run config
}
README_COMMANDS = {  # `lf <cmd> -f FILE` -> kind
    "add app": "ai_app",
    "add model-adapter": "model_adapter",
    "add model": "model",
    "add dataset-generator": "dataset_generator",
    "add dataset": "dataset",
    "add task": "task",
    "add eval": "evaluation",
    "add assessment-plan": "assessment_plan",
    "run assessment-plan": "assessment_plan",
    "add risk-scorer": "risk_scorers",
    "add risk-scoring-methodology": "risk_scoring_methodology",
    "add framework": "framework",
}
BUNDLE_FILES = {
    "app.yaml": "ai_app",
    "model.yaml": "model",
    "assessment-plan.yaml": "assessment_plan",
    "risk_scoring_methodology.yaml": "risk_scoring_methodology",
}
VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")
README_CMD_RE = re.compile(
    r"\blf ((?:add|run) [a-z-]+)(?: -[-a-zA-Z]+)* (?:-f|--file) ([^\s`'\"]+)"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the integrations folder of the bundle")
    parser.add_argument("--lf-root", type=Path, help="unzipped wheels (default: bundle/../../../..)")
    parser.add_argument(
        "--kinds",
        type=Path,
        help="take kind/via/parent from this earlier oracle output instead of detecting them "
        "(to judge the same files with another lf version, e.g. 3.6.2, whose loader differs)",
    )
    parser.add_argument("files", nargs="*", help="only these files (relative to the bundle)")
    return parser.parse_args()


def yaml_files(bundle: Path) -> list[Path]:
    return sorted(
        p for p in bundle.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml")
    )


def set_dummy_env(files: list[Path]) -> dict[str, str]:
    names: set[str] = set()
    for path in files:
        for line in path.read_text().splitlines():
            for braced, bare in VAR_RE.findall(line):
                names.add(braced or bare)
    names.discard("ref")  # `$ref` is a key, never expanded
    names.discard("provider")  # `$provider` is a key
    env = {name: "dummy-" + name.lower().replace("_", "-") for name in sorted(names)}
    os.environ.update(env)
    return env


class WarningCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def main() -> int:
    args = parse_args()
    bundle = args.bundle.resolve()
    lf_root = (args.lf_root or bundle.parents[3]).resolve()
    sys.path.insert(0, str(lf_root))

    files = yaml_files(bundle)
    set_dummy_env(files)

    import importlib

    from latticeflow.go.cli.utils import run_config_processing
    from latticeflow.go.utils.exceptions import summarize_exception_chain
    from latticeflow.go.utils.yaml_utils import load_yaml
    from latticeflow.go.utils.yaml_utils import load_yaml_recursively

    # kind -> (module under latticeflow.go, function names to try, SDK class). 3.17.0 names the
    # loaders `get_sdk_<entity>_from_file`, 3.6.2 mostly `_get_sdk_<entity>_from_file`. Where
    # neither exists (3.6.2 has no evaluation file loader) the SDK class is used the same way the
    # loaders use it: `load_yaml_recursively` + `model_validate(..., ignore_extra=False)`. Kinds
    # this lf version has no class for (3.6.2: assessment plans, risk scorers, frameworks) get
    # no validator.
    validator_table = {
        "run_config": ("cli.utils.run_config_processing", ["get_sdk_run_config_from_file"], "SDKRunConfig"),
        "model": ("cli.models", ["get_sdk_model_from_file", "_get_sdk_model_from_file"], "SDKModel"),
        "model_adapter": (
            "cli.model_adapters",
            ["get_sdk_model_adapter_from_file", "_get_sdk_model_adapter_from_file"],
            "SDKModelAdapter",
        ),
        "dataset": ("cli.datasets", ["get_sdk_dataset_from_file"], "SDKDataset"),
        "dataset_generator": (
            "cli.dataset_generators",
            ["get_sdk_dataset_generator_from_file", "_get_sdk_dataset_generator_from_file"],
            "SDKDatasetGenerator",
        ),
        "task": ("cli.tasks", ["get_sdk_task_from_file", "_get_sdk_task_from_file"], "SDKTask"),
        "evaluation": ("cli.evaluations", ["get_sdk_evaluation_from_file"], "SDKEvaluation"),
        "ai_app": ("cli.ai_apps", ["get_sdk_ai_app_from_file", "_get_sdk_ai_app_from_file"], "SDKAIApp"),
        "assessment_plan": (
            "cli.assessment_plans",
            ["get_sdk_assessment_plan_from_file"],
            "SDKAssessmentPlan",
        ),
        "risk_scorers": ("cli.risk_scorers", ["_validate_risk_scorers"], None),
        "risk_scoring_methodology": (
            "cli.risk_scoring_methodologies",
            ["get_sdk_risk_scoring_methodology_from_file"],
            "SDKRiskScoringMethodology",
        ),
        "framework": ("cli.frameworks", ["get_sdk_framework_from_file"], "SDKFramework"),
    }
    import latticeflow.go.dtypes as sdk_dtypes

    def class_validator(cls: Any) -> Callable[[Path], Any]:
        def validate_with_class(path: Path) -> Any:
            loaded, _ = load_yaml_recursively(path)
            return cls.model_validate(loaded, ignore_extra=False)

        return validate_with_class

    validators: dict[str, tuple[str, Callable[[Path], Any]]] = {}
    for kind, (module_name, function_names, class_name) in validator_table.items():
        try:
            module = importlib.import_module(f"latticeflow.go.{module_name}")
        except ImportError:
            module = None
        for function_name in function_names:
            if module is not None and hasattr(module, function_name):
                validators[kind] = (f"{module_name}.{function_name}", getattr(module, function_name))
                break
        else:
            if class_name is not None and hasattr(sdk_dtypes, class_name):
                validators[kind] = (
                    f"{class_name}.model_validate",
                    class_validator(getattr(sdk_dtypes, class_name)),
                )

    # Importing lf's CLI modules may configure logging; route warnings to us instead.
    root_logger = logging.getLogger()
    for handler in list(root_logger.handlers):
        root_logger.removeHandler(handler)
    capture = WarningCapture()
    root_logger.addHandler(capture)
    root_logger.setLevel(logging.WARNING)
    logging.disable(logging.NOTSET)

    def raw(path: Path) -> Any:
        """The file as lf's loader reads it, without `$ref` resolution or env expansion."""
        with open(path) as f:
            return load_yaml(f, expand_env_vars=False)

    def is_run_config(path: Path) -> bool:
        # Exactly `cli.add._is_file_run_config`, minus its `path.is_file()` check.
        try:
            data, _ = load_yaml_recursively(path)
        except Exception:
            return False
        return run_config_processing.is_run_config(data)

    run_configs = {p for p in files if is_run_config(p)}

    # Rule 2: `$ref` sites, walked from every run config through the entity files they name.
    ref_sites: dict[Path, list[tuple[str, Path, str]]] = {}  # target -> [(kind, file, path)]

    def walk(node: Any, here: Path, loc: str, top_kind: str | None, seen: set[Path]) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                target = (here.parent / node["$ref"]).resolve()
                kind = top_kind if top_kind is not None else "fragment"
                ref_sites.setdefault(target, []).append((kind, here, loc))
                if target.is_file() and target not in seen:
                    try:
                        inner = raw(target)
                    except Exception:
                        inner = None
                    walk(inner, target, "", None, seen | {target})
            for key, value in node.items():
                if key == "$ref":
                    continue
                child = f"{loc}.{key}" if loc else str(key)
                walk(value, here, child, None, seen)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, here, f"{loc}[{i}]", None, seen)

    for rc in sorted(run_configs):
        try:
            doc = raw(rc)
        except Exception:
            continue
        if not isinstance(doc, dict):
            continue
        for key, value in doc.items():
            if key in RUN_CONFIG_LIST_KINDS and isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, dict) and isinstance(item.get("$ref"), str):
                        walk({"$ref": item["$ref"]}, rc, f"{key}[{i}]", RUN_CONFIG_LIST_KINDS[key], {rc})
                    walk({k: v for k, v in item.items() if k != "$ref"} if isinstance(item, dict) else item,
                         rc, f"{key}[{i}]", None, {rc})
            elif key == "evaluation" and isinstance(value, dict):
                if isinstance(value.get("$ref"), str):
                    walk({"$ref": value["$ref"]}, rc, "evaluation", "evaluation", {rc})
                walk({k: v for k, v in value.items() if k != "$ref"}, rc, "evaluation", None, {rc})
            else:
                walk(value, rc, str(key), None, {rc})

    # Rule 3: README commands.
    readme_kinds: dict[Path, str] = {}
    for readme in sorted(bundle.rglob("*.md")):
        for cmd, target in README_CMD_RE.findall(readme.read_text()):
            if cmd in README_COMMANDS:
                readme_kinds.setdefault((readme.parent / target).resolve(), f"{cmd}")

    def rel(path: Path) -> str:
        return path.relative_to(bundle).as_posix()

    def detect(path: Path) -> tuple[str, str, Path | None]:
        """(kind, via, parent file for fragments)."""
        if path in run_configs:
            return "run_config", "is_run_config", None
        sites = sorted(ref_sites.get(path.resolve(), []), key=lambda s: (rel(s[1]), s[2]))
        entity_sites = [s for s in sites if s[0] != "fragment"]
        if entity_sites:
            kind, site_file, loc = entity_sites[0]
            return kind, f"ref:{rel(site_file)}:{loc}", None
        if sites:
            _, site_file, loc = sites[0]
            return "fragment", f"ref:{rel(site_file)}:{loc}", site_file
        if path.resolve() in readme_kinds:
            cmd = readme_kinds[path.resolve()]
            return README_COMMANDS[cmd], f"readme:lf {cmd}", None
        if path.name in RESTORE_FILES:
            return RESTORE_FILES[path.name], "restore-layout", None
        if path.parent.name in RESTORE_DIRS:
            return RESTORE_DIRS[path.parent.name], "restore-layout", None
        if path.parent.name in ("apps", "ai_apps"):
            return "ai_app", "bundle-layout", None
        if path.name in BUNDLE_FILES:
            return BUNDLE_FILES[path.name], "bundle-layout", None
        return "unknown", "none", None

    bundle_prefix = str(bundle)

    def clean(text: str) -> str:
        return text.replace(bundle_prefix, "<bundle>")

    def validate(kind: str, path: Path) -> tuple[bool, str | None, str]:
        if kind not in validators:
            return False, f"no lf validator for kind {kind!r} in this lf version", "none"
        name, fn = validators[kind]
        cwd = os.getcwd()
        os.chdir(path.parent)  # as a user running lf next to the file would
        try:
            fn(path)
            return True, None, name
        except Exception as error:  # lf's CLI prints exactly this chain
            return False, clean(summarize_exception_chain(error)), name
        finally:
            os.chdir(cwd)

    selected = files
    if args.files:
        wanted = {(bundle / f).resolve() for f in args.files}
        selected = [p for p in files if p.resolve() in wanted]

    given: dict[str, dict[str, Any]] = {}
    if args.kinds is not None:
        for line in args.kinds.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                given[entry["file"]] = entry

    results: dict[Path, dict[str, Any]] = {}
    parents: dict[Path, Path] = {}
    for path in files:
        if rel(path) in given:
            entry = given[rel(path)]
            kind, via = entry["kind"], entry["via"]
            parent = (bundle / entry["parent"]) if entry.get("parent") else None
        else:
            kind, via, parent = detect(path)
        if kind == "fragment" and parent is not None:
            parents[path] = parent
        results[path] = {"file": rel(path), "kind": kind, "via": via}

    def parent_entity(path: Path) -> Path:
        seen = {path}
        while path in parents and parents[path] not in seen:
            path = parents[path]
            seen.add(path)
        return path

    out = io.StringIO()
    for path in selected:
        record = results[path]
        capture.records.clear()
        if record["kind"] == "fragment":
            owner = parent_entity(path)
            owner_kind = results[owner]["kind"] if owner in results else "unknown"
            valid, error, name = validate(owner_kind, owner)
            record["parent"] = rel(owner)
            record["validator"] = f"{name} (on parent)"
        else:
            valid, error, name = validate(record["kind"], path)
            record["parent"] = None
            record["validator"] = name
        record["valid"] = valid
        record["error"] = error
        # Keep order, drop repeats: lf logs the same deprecation once per occurrence.
        record["warnings"] = list(dict.fromkeys(clean(w) for w in capture.records))
        out.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
    sys.stdout.write(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
