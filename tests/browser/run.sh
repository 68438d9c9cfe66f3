#!/usr/bin/env bash
# Browser tests for report.html: build fixtures from src/report/assets and check them in
# headless Chromium (tests/browser/check_report.py). Needs python3 and Debian's chromium only.
#
#   tests/browser/run.sh                the test: a fixture with a baseline, one without (gzip index)
#   tests/browser/run.sh REPORT.html    check one report, e.g. one lfeval wrote
#   tests/browser/run.sh --perf         timing and memory for 1k and 100k samples (slow: ~3 min)
#   tests/browser/run.sh --lfeval BIN   reports lfeval (BIN) writes from two real quickstart runs,
#                                       the second compared against the first
set -euo pipefail
cd "$(dirname "$0")/../.."

chromium="${LFEVAL_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing chromium with apt-get (once)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "error: $chromium not found; install it: sudo apt-get install -y chromium" >&2
        exit 2
    fi
fi

out=target/browser
mkdir -p "$out"
fixture() { python3 tests/browser/make_fixture.py "$@"; }
check() { python3 tests/browser/check_report.py "$@"; }

case "${1:-}" in
"")
    status=0
    fixture --samples 2000 --baseline --out "$out/report.html"
    check "$out/report.html" --out-dir "$out/shots" || status=1
    echo
    fixture --samples 300 --index-encoding gzip-base64 --seed 3 --out "$out/report-plain.html"
    check "$out/report-plain.html" --out-dir "$out/shots-plain" || status=1
    exit $status
    ;;
--perf)
    # Cold loads: every check run starts a fresh browser, as opening a report usually does.
    for n in 1000 100000; do
        fixture --samples "$n" --baseline --out "$out/perf-$n.html"
        for i in 1 2 3; do
            check "$out/perf-$n.html" --out-dir "$out/perf-shots" --json "$out/perf-$n-$i.json" | tail -2
        done
    done
    python3 - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
keys = ["file_mb", "first_contentful_paint_ms", "summary_ms", "table_ms", "ready_ms",
        "load_event_ms", "navigate_to_ready_wall_ms", "js_heap_mb", "dom_nodes",
        "renderer_pss_mb", "browser_tree_pss_mb", "search_ms", "open_sample_ms",
        "harness_seconds"]
runs = {n: [json.loads((out / f"perf-{n}-{i}.json").read_text()) for i in (1, 2, 3)]
        for n in (1000, 100000)}
print(f"\n{'figure (median of 3, min–max)':34}" + "".join(f"{n:>22,}" for n in runs))
for k in keys:
    cells = []
    for rs in runs.values():
        v = [r[k] for r in rs if r.get(k) is not None]
        cells.append(f"{statistics.median(v):g} ({min(v):g}–{max(v):g})" if v else "?")
    print(f"{k:34}" + "".join(f"{c:>22}" for c in cells))
PY
    ;;
--lfeval)
    # Real runs: the offline quickstart twice, the second with a sloppier calculator, so the
    # comparison has flips.
    lfeval="$(realpath "${2:?usage: run.sh --lfeval path/to/lfeval}")"
    runs="$PWD/$out/quickstart"
    rm -rf "$runs"
    (cd examples/quickstart &&
        "$lfeval" run -f run.yaml -o "$runs/a" --no-progress >/dev/null &&
        SLOPPY_ABOVE=500 "$lfeval" run -f run.yaml -o "$runs/b" --no-progress >/dev/null &&
        "$lfeval" report "$runs/b" --baseline "$runs/a" >/dev/null)
    status=0
    check "$runs/a/report.html" --out-dir "$out/shots-lfeval" || status=1
    echo
    check "$runs/b/report.html" --out-dir "$out/shots-lfeval-baseline" || status=1
    exit $status
    ;;
*)
    check "$@"
    ;;
esac
