#!/usr/bin/env bash
# Fetches LatticeFlow's own wheels for the conformance suite and prepares a venv for lf's
# validators. Nothing from the wheels is ever copied into this repository.
#
#   tests/conformance/fetch.sh [CACHE_DIR]
#
# CACHE_DIR: the first argument, else $LFEVAL_CONFORMANCE_DIR, else <repo>/target/conformance.
# Idempotent: when everything is in place it only checks stamps and exits (well under a second).
# Safe to run concurrently (flock on CACHE_DIR/.lock). Prints CACHE_DIR as its last stdout line.
#
# Layout of CACHE_DIR afterwards:
#   wheels/                         the three wheels, checked against the sha256 below
#   lf-3.17.0/latticeflow/{go,core} latticeflow-go-sdk 3.17.0 + latticeflow-core 3.17.0, unzipped
#   lf-3.17.0/latticeflow/go/skills_data/integrations   the integration bundle (the corpus)
#   lf-3.6.2/latticeflow/go         latticeflow-go-sdk 3.6.2 (docs era; has no bundle, no core)
#   venv/                           python3 venv with requirements.txt (pydantic, PyYAML, Jinja2,
#                                   httpx, typer, ...); the wheels are NOT installed into it: the
#                                   oracles put lf-<version>/ first on sys.path (both wheels'
#                                   `latticeflow/` and `latticeflow/go/` are namespace packages
#                                   without __init__.py, so two versions must never share a path).
#   snippet-venv/                   for lfeval itself (VIRTUAL_ENV=...): httpx + the
#                                   latticeflow-core 3.17.0 wheel installed with its deps
#                                   (pydantic, orjson), because 40+ bundle snippets (scorers,
#                                   solvers, run_inference, synthesizers) `import latticeflow.core.dtypes`.
#
# Environment: PYTHON (default python3, must be >= 3.11, as go-sdk 3.17.0 requires).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${1:-${LFEVAL_CONFORMANCE_DIR:-$repo/target/conformance}}"
python="${PYTHON:-python3}"

# name|version|sha256 of the wheel as published on PyPI.
wheels=(
    "latticeflow-go-sdk|3.17.0|ca1fc61e73d2b58c5f4a7c49429b15c6c87c9e8a0e6b65657a3f87ac84ad537b"
    "latticeflow-core|3.17.0|79f46354c4b0ff530639d55c1ce50054fbde448e372164033a2b613cb9880071"
    "latticeflow-go-sdk|3.6.2|71dbb93f8140ab910f9ece8b140e6e1065cd9331e9431fe0987bee2646408ecf"
)

mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
req_hash="$(sha256sum "$here/requirements.txt" | cut -c1-16)"

log() { echo "conformance/fetch: $*" >&2; }

all_ready() {
    [ -f "$cache/lf-3.17.0/.ok" ] && [ -f "$cache/lf-3.6.2/.ok" ] \
        && [ -f "$cache/venv/.ok-$req_hash" ] && [ -x "$cache/venv/bin/python" ] \
        && [ -f "$cache/snippet-venv/.ok-$req_hash" ] && [ -x "$cache/snippet-venv/bin/python" ]
}

wheel_file() { # name version -> file name
    echo "${1//-/_}-$2-py3-none-any.whl"
}

fetch_wheel() { # name version sha256
    local file="$cache/wheels/$(wheel_file "$1" "$2")"
    if [ -f "$file" ] && echo "$3  $file" | sha256sum --check --status; then
        return
    fi
    log "downloading $1==$2"
    rm -f "$file"
    "$python" -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "$cache/wheels" "$1==$2" >&2
    if ! echo "$3  $file" | sha256sum --check --status; then
        log "sha256 mismatch for $file (expected $3)"
        exit 1
    fi
}

extract() { # target-dir wheel-file...
    local target="$1"; shift
    [ -f "$target/.ok" ] && return
    log "unzipping into $target"
    local tmp="$target.tmp.$$"
    rm -rf "$tmp" "$target"
    mkdir -p "$tmp"
    local whl
    for whl in "$@"; do
        "$python" -m zipfile -e "$whl" "$tmp"
    done
    touch "$tmp/.ok"
    mv "$tmp" "$target"
}

make_venv() {
    [ -f "$cache/venv/.ok-$req_hash" ] && [ -x "$cache/venv/bin/python" ] && return
    log "creating venv in $cache/venv"
    rm -rf "$cache/venv"
    "$python" -m venv "$cache/venv"
    "$cache/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --only-binary=:all: -r "$here/requirements.txt" >&2
    touch "$cache/venv/.ok-$req_hash"
}

make_snippet_venv() {
    [ -f "$cache/snippet-venv/.ok-$req_hash" ] && [ -x "$cache/snippet-venv/bin/python" ] && return
    log "creating snippet venv in $cache/snippet-venv"
    rm -rf "$cache/snippet-venv"
    "$python" -m venv "$cache/snippet-venv"
    # Same pins as the oracle venv for what both need; the core wheel from the checked cache.
    "$cache/snippet-venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --only-binary=:all: -c "$here/requirements.txt" httpx pydantic orjson PyYAML >&2
    "$cache/snippet-venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-deps "$cache/wheels/$(wheel_file latticeflow-core 3.17.0)" >&2
    "$cache/snippet-venv/bin/python" -c 'import httpx, latticeflow.core.dtypes' >&2
    touch "$cache/snippet-venv/.ok-$req_hash"
}

main() {
    if all_ready; then
        echo "$cache"
        return
    fi
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        log "$python is older than 3.11; set PYTHON"
        exit 1
    }
    exec 9>"$cache/.lock"
    if command -v flock >/dev/null; then flock 9; fi
    if all_ready; then # someone else finished while we waited
        echo "$cache"
        return
    fi
    mkdir -p "$cache/wheels"
    local entry name version sha
    for entry in "${wheels[@]}"; do
        IFS='|' read -r name version sha <<<"$entry"
        fetch_wheel "$name" "$version" "$sha"
    done
    extract "$cache/lf-3.17.0" \
        "$cache/wheels/$(wheel_file latticeflow-go-sdk 3.17.0)" \
        "$cache/wheels/$(wheel_file latticeflow-core 3.17.0)"
    extract "$cache/lf-3.6.2" "$cache/wheels/$(wheel_file latticeflow-go-sdk 3.6.2)"
    make_venv
    make_snippet_venv
    # A smoke check that the validators import with this venv.
    PYTHONPATH="$cache/lf-3.17.0" "$cache/venv/bin/python" -c \
        'import latticeflow.go.dtypes, latticeflow.go.cli.utils.run_config_processing, latticeflow.core.utils.jinja' >&2
    echo "$cache"
}

main
