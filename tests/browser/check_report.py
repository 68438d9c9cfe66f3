#!/usr/bin/env python3
"""Check a report.html in headless Chromium: content, filters, paging, sample view, comparison,
screenshots, and how long it takes.

    python3 tests/browser/check_report.py target/browser/report.html [--out-dir DIR] [--json F]

Expectations come from the report's own data tags, decoded here, so the same checks run on a
fixture from make_fixture.py or on a report written by lfeval. The file is copied alone into
an empty directory first: it must not need anything next to it. Exit status 1 if any check
fails.
"""

import argparse
import base64
import gzip
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from html import escape as html_escape  # noqa: E402

from cdp import CHROMIUM, FLAGS, Browser, CDPError  # noqa: E402

PAGE_SIZE = 50  # the page's default rows per page
WIDTH, HEIGHT = 1280, 900
TAG = re.compile(r'<script([^>]*\bid="lfeval-[^"]*"[^>]*)>(.*?)</script>', re.S)


# --- reading the report's data, as the page does --------------------------------------------


def read_tags(html: str) -> dict:
    tags = {}
    for attrs, body in TAG.findall(html):
        m = re.search(r'\bid="(lfeval-[\w-]+)"', attrs)
        if m:
            enc = re.search(r'\bdata-encoding="([\w-]+)"', attrs)
            tags[m.group(1)] = (enc.group(1) if enc else "json", body)
    return tags


def decode(tag) -> object:
    encoding, body = tag
    if encoding == "json":
        return json.loads(body)
    return json.loads(gzip.decompress(base64.b64decode(body)))


def sample_hash(spec: str, sample_id: str) -> str:
    # encodeURIComponent leaves these unescaped; quote() must agree or the hash differs.
    safe = "-_.!~*'()"
    return f"#sample={quote(spec, safe=safe)}/{quote(sample_id, safe=safe)}"


# --- the checks -------------------------------------------------------------------------------


class Run:
    def __init__(self):
        self.results = []  # (ok, name, detail)
        self.figures = {}

    def check(self, name, ok, detail=""):
        self.results.append((bool(ok), name, detail))
        return ok

    def step(self, name, fn):
        """Runs one group of checks; an exception fails it and the run goes on."""
        start = time.monotonic()
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - report and continue with the next group
            self.check(name, False, f"{type(err).__name__}: {err}")
        self.figures.setdefault("step_seconds", {})[name] = round(time.monotonic() - start, 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="where screenshots go (default: next to the report)")
    ap.add_argument("--json", type=Path, help="write timing and memory figures here")
    ap.add_argument("--dump-dom", choices=["auto", "always", "never"], default="auto",
                    help="also check `chromium --dump-dom` output (auto: files up to 20 MB; "
                         "Chromium needs ~17 s just to print a 60 MB page)")
    args = ap.parse_args()

    started = time.monotonic()
    html = args.report.read_text(encoding="utf-8")
    tags = read_tags(html)
    meta, idx = decode(tags["lfeval-meta"]), decode(tags["lfeval-index"])
    cmp = decode(tags["lfeval-comparison"]) if "lfeval-comparison" in tags else None
    out_dir = args.out_dir or args.report.parent
    out_dir.mkdir(parents=True, exist_ok=True)

    # Alone in an empty directory: anything the page tried to load from beside it would fail.
    lonely = Path(tempfile.mkdtemp(prefix="lfeval-report-"))
    copy = lonely / "report.html"
    shutil.copyfile(args.report, copy)
    url = copy.as_uri()

    run = Run()
    run.figures.update(samples=idx["n"], file_mb=round(len(html.encode()) / 1e6, 1))
    browser = Browser()
    try:
        page = browser.new_page(WIDTH, HEIGHT)
        ctx = dict(page=page, browser=browser, meta=meta, idx=idx, cmp=cmp, tags=tags, url=url,
                   out_dir=out_dir, run=run)
        run.step("loads", lambda: check_load(**ctx))
        run.step("content", lambda: check_content(**ctx))
        has_samples = idx["n"] > 0  # an empty run still gets a report, with nothing to click
        if has_samples:
            run.step("search", lambda: check_search(**ctx))
            run.step("filters", lambda: check_filters(**ctx))
            run.step("paging and sorting", lambda: check_paging(**ctx))
            run.step("sample view", lambda: check_sample_view(**ctx))
        if cmp:
            run.step("comparison", lambda: check_comparison(**ctx))
        else:
            run.check("no comparison section without baseline data",
                      page.eval("document.querySelector('#comparison').hidden"))
        run.step("screenshots", lambda: check_screenshots(**ctx))
        if has_samples:
            run.step("deep link", lambda: check_deep_link(**ctx))
        run.step("quiet", lambda: check_quiet(**ctx))
        big = len(html) > 20_000_000
        if args.dump_dom == "always" or (args.dump_dom == "auto" and not big):
            run.step("dump-dom", lambda: check_dump_dom(**ctx))
    finally:
        browser.close()
        shutil.rmtree(lonely, ignore_errors=True)
    run.figures["harness_seconds"] = round(time.monotonic() - started, 2)

    failed = [r for r in run.results if not r[0]]
    for ok, name, detail in run.results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""))
    f = run.figures
    print(f"\n{f['samples']:,} samples, {f['file_mb']} MB; ready in {f.get('ready_ms', '?')} ms "
          f"(table {f.get('table_ms', '?')} ms), JS heap {f.get('js_heap_mb', '?')} MB, "
          f"renderer PSS {f.get('renderer_pss_mb', '?')} MB; harness {f['harness_seconds']} s")
    print(f"{len(run.results) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        args.json.write_text(json.dumps(run.figures, indent=2) + "\n")
    return 1 if failed else 0


def check_load(page, browser, url, tags, run, **_):
    t0 = time.monotonic()
    page.navigate(url)
    state = page.wait_for("document.documentElement.dataset.state", timeout=20)
    wall = (time.monotonic() - t0) * 1000
    run.check("page reaches ready state", state == "ready", f"state={state!r}")
    timing = page.eval("""(() => {
        const mark = (n) => performance.getEntriesByName(n)[0]?.startTime;
        const nav = performance.getEntriesByType('navigation')[0];
        const fcp = performance.getEntriesByName('first-contentful-paint')[0]?.startTime;
        return {summary: mark('lfeval:summary'), table: mark('lfeval:table'),
                ready: mark('lfeval:ready'), dcl: nav.domContentLoadedEventEnd,
                load: nav.loadEventEnd, fcp};
    })()""")
    m = page.metrics()
    renderer, total = browser.memory()
    r = lambda v: None if v is None else round(v)  # noqa: E731
    run.figures.update(
        navigate_to_ready_wall_ms=round(wall), summary_ms=r(timing.get("summary")),
        table_ms=r(timing.get("table")), ready_ms=r(timing.get("ready")),
        dom_content_loaded_ms=r(timing.get("dcl")), load_event_ms=r(timing.get("load")),
        first_contentful_paint_ms=r(timing.get("fcp")),
        js_heap_mb=round(m["JSHeapUsedSize"] / 1e6, 1), dom_nodes=int(m["Nodes"]),
        renderer_pss_mb=round(renderer / 1e6), browser_tree_pss_mb=round(total / 1e6))
    run.check("first render (table) under 2 s", (timing.get("table") or 1e9) < 2000,
              f"{r(timing.get('table'))} ms after navigation start")
    # Rendering before the load event is what lets `chromium --dump-dom` see the content. A
    # gzip-encoded index is allowed by the contract but decodes asynchronously, after load.
    if tags["lfeval-index"][0] == "json":
        table, load = timing.get("table"), timing.get("load")
        run.check("table drawn before the load event", table is not None and load
                  and table <= load, f"table {r(table)} ms, load {r(load)} ms")


def check_content(page, meta, idx, run, **_):
    text = page.eval("document.querySelector('main').textContent")
    missing = [s[k] for s in meta["specs"] for k in ("key", "display_name")
               if s.get(k) and s[k] not in text]
    run.check("spec names in the DOM", not missing, f"missing {missing[:3]}" if missing else
              f"{len(meta['specs'])} specs")
    shown = page.eval("""[...document.querySelectorAll('#results-body tbody')].map(tb => ({
        spec: tb.id.slice(5),
        rows: [...tb.querySelectorAll('tr:not(.group-head)')].map(tr =>
            [tr.cells[0]?.textContent, tr.cells[1]?.textContent, tr.cells[2]?.textContent])}))""")
    by_spec = {s["spec"]: s["rows"] for s in shown}
    problems, count = [], 0
    for spec in meta["specs"]:
        rows = {r[0]: r for r in by_spec.get(spec["key"], [])}
        for m in spec.get("metrics", []):
            label = " · ".join(x for x in (m["scorer"], m["metric"],
                                            m["name"] if m.get("name") != m["metric"] else None) if x)
            row = rows.get(label)
            count += 1
            if not row:
                problems.append(f"{spec['key']}: no row {label!r}")
                continue
            value = float(row[1].replace(",", "")) if row[1] not in ("—", None) else None
            if (value is None) != (m["value"] is None) or (
                    value is not None and abs(value - m["value"]) > 1e-3 * max(1, abs(m["value"]))):
                problems.append(f"{spec['key']} {label}: shows {row[1]}, data {m['value']}")
            if m.get("ci") and "[" not in (row[2] or ""):
                problems.append(f"{spec['key']} {label}: no CI shown")
    run.check("metric names, values and CIs in the DOM", not problems,
              "; ".join(problems[:3]) if problems else f"{count} metrics")

    rows = page.eval("""[...document.querySelectorAll('#samples-table tbody tr[data-row]')].map(tr => ({
        row: +tr.dataset.row, id: tr.querySelector('td.id').textContent,
        input: tr.querySelector('td.text').textContent}))""")
    expect = min(PAGE_SIZE, idx["n"])
    bad = [r for r in rows if idx["id"][r["row"]] != r["id"] or idx["input"][r["row"]] != r["input"]]
    run.check("first page of rows with input text", len(rows) == expect and not bad
              and [r["row"] for r in rows] == list(range(expect)),
              f"{len(rows)} rows, first input {rows[0]['input'][:40]!r}" if rows else "no rows")
    run.check("only one page of rows in the DOM",
              page.eval("document.querySelectorAll('#samples-table tbody tr').length") <= PAGE_SIZE)
    if idx["n"]:
        run.check("charts drawn as inline SVG", page.eval(
            "document.querySelectorAll('#charts-body svg.chart rect').length") > 0)


def set_control(page, selector, value, event="change"):
    page.eval(f"""(() => {{ const el = document.querySelector({json.dumps(selector)});
        el.value = {json.dumps(str(value))};
        el.dispatchEvent(new Event({json.dumps(event)}, {{bubbles: true}})); }})()""")


def wait_matches(page, expected, timeout=8):
    got = page.wait_for(f"document.querySelector('#samples-table').dataset.matches === "
                        f"'{expected}' && document.querySelector('#samples-table').dataset.matches",
                        timeout=timeout)
    return got is not None, page.eval("document.querySelector('#samples-table').dataset.matches")


def visible_rows(page):
    return page.eval("""[...document.querySelectorAll('#samples-table tbody tr[data-row]')]
        .map(tr => ({row: +tr.dataset.row, status: tr.querySelector('td.status')?.textContent ?? ''}))""")


def reset_filters(page, idx):
    page.click("#f-clear")
    return wait_matches(page, idx["n"])[0]


def check_search(page, idx, run, **_):
    n = idx["n"]
    hay = [f"{i}\n{a}\n{b}".lower() for i, a, b in zip(idx["id"], idx["input"], idx["output"])]
    target = idx["id"][min(n - 1, 137)]
    page.eval("document.activeElement?.blur()")
    page.press("/", "Slash", 191)
    run.check("'/' focuses the search box", page.wait_for(
        "document.activeElement?.id === 'f-search'", timeout=2))
    t0 = time.monotonic()
    page.type_text(target)
    expected = [i for i, s in enumerate(hay) if target.lower() in s]
    ok, got = wait_matches(page, len(expected))
    run.figures["search_ms"] = round((time.monotonic() - t0) * 1000)
    rows = visible_rows(page)
    run.check("search by ID narrows the rows", ok and rows and rows[0]["row"] == expected[0],
              f"{target!r}: {got} matches, expected {len(expected)}")

    # Markup in a prompt must stay text: a report is opened by people who did not write the data.
    risky = next((w for w in ("<script", "alert") if any(w in s for s in hay)), None)
    if risky:
        page.eval("document.querySelector('#f-search').select()")
        page.type_text(risky)
        expected = [i for i, s in enumerate(hay) if risky in s]
        ok, got = wait_matches(page, len(expected))
        scripts = page.eval("document.querySelectorAll('main script, dialog script').length")
        run.check("search over input text; markup stays text", ok and scripts == 0,
                  f"{risky!r}: {got} matches, expected {len(expected)}; {scripts} script elements")
    run.check("clear restores all rows", reset_filters(page, idx))


def check_filters(page, idx, run, **_):
    n, err, pas = idx["n"], idx["error"], idx["pass"]
    failed = sum(1 for i in range(n) if pas[i] == 0 and err[i] == 0)
    set_control(page, "#f-status", "fail")
    ok, got = wait_matches(page, failed)
    statuses = {r["status"] for r in visible_rows(page)}
    run.check("'Failed' filter shows only failed samples", ok and statuses <= {"fail"},
              f"{got} rows, expected {failed}; statuses {sorted(statuses)}")

    errored = sum(1 for e in err if e)
    set_control(page, "#f-status", "error")
    ok, got = wait_matches(page, errored)
    statuses = {r["status"].split()[0][:5] for r in visible_rows(page)}
    run.check("'Errored' filter shows only errored samples", ok and statuses <= {"error"},
              f"{got} rows, expected {errored}")

    classes = sorted(range(1, len(idx["error_classes"]) + 1), key=lambda k: -err.count(k))
    if classes and err.count(classes[0]):
        k = classes[0]
        set_control(page, "#f-error", k)
        ok, got = wait_matches(page, err.count(k))
        name = idx["error_classes"][k - 1]
        wrong = [r for r in visible_rows(page) if name not in r["status"]]
        run.check("error-class filter", ok and not wrong,
                  f"{name}: {got} rows, expected {err.count(k)}")
    reset_filters(page, idx)

    # The same filter from the chart: a real click on the class in "Errors by class".
    if len(classes) > 1 and err.count(classes[1]):
        k = classes[1]
        name = idx["error_classes"][k - 1]
        page.click(f"#charts-body button[title={json.dumps('Filter by ' + name)}]")
        ok, got = wait_matches(page, err.count(k))
        run.check("clicking an error class in the chart filters", ok and page.eval(
            "document.querySelector('#f-error').value") == str(k),
                  f"{name}: {got} rows, expected {err.count(k)}")
        reset_filters(page, idx)

    for j, col in enumerate(idx["scores"]):
        values = [v for v in col["values"] if v is not None]
        if col["type"] == "number" and len(set(values)) > 12:
            ordered = sorted(values)
            lo, hi = round(ordered[len(ordered) // 4], 3), round(ordered[3 * len(ordered) // 4], 3)
            set_control(page, "#f-score", j)
            page.eval(f"document.querySelector('#f-min').value = '{lo}'; "
                      f"document.querySelector('#f-max').value = '{hi}';"
                      "document.querySelector('#f-max').dispatchEvent(new Event('input'))")
            expected = sum(1 for v in col["values"] if v is not None and lo <= v <= hi)
            ok, got = wait_matches(page, expected)
            run.check("score range filter", ok, f"{col['key']} in [{lo}, {hi}]: {got} rows, "
                                                 f"expected {expected}")
            reset_filters(page, idx)
            break
    for j, col in enumerate(idx["scores"]):
        if col["type"] == "category":
            set_control(page, "#f-score", j)
            set_control(page, "#f-value", 0)
            expected = col["values"].count(0)
            ok, got = wait_matches(page, expected)
            run.check("score value filter", ok, f"{col['key']} = {col['categories'][0]}: "
                                                 f"{got} rows, expected {expected}")
            reset_filters(page, idx)
            break


def first_row(page):
    rows = visible_rows(page)
    return rows[0]["row"] if rows else None


def check_paging(page, idx, run, **_):
    n = idx["n"]
    if n <= PAGE_SIZE:
        run.check("paging", True, "one page only")
        return
    page.click("#pager [data-page=next]")
    got = page.wait_for("document.querySelector('#samples-table').dataset.page === '1'")
    status = page.eval("document.querySelector('#page-status').textContent")
    run.check("Next moves to page 2", got and first_row(page) == PAGE_SIZE,
              f"{status!r}, first row {first_row(page)}")
    last = (n - 1) // PAGE_SIZE
    page.click("#pager [data-page=last]")
    page.wait_for(f"document.querySelector('#samples-table').dataset.page === '{last}'")
    run.check("Last moves to the last page", first_row(page) == last * PAGE_SIZE,
              f"first row {first_row(page)}, expected {last * PAGE_SIZE}")
    page.click("#pager [data-page=first]")
    page.wait_for("document.querySelector('#samples-table').dataset.page === '0'")

    total = idx["latency"]["total"]
    order = sorted(range(n), key=lambda i: (total[i] is None, total[i] or 0, i))
    page.click('#samples-table button[data-sort="latency"]')
    page.wait_for("document.querySelector('th[aria-sort=ascending]') !== null")
    asc = first_row(page)
    page.click('#samples-table button[data-sort="latency"]')
    page.wait_for("document.querySelector('th[aria-sort=descending]') !== null")
    desc = first_row(page)
    page.click('#samples-table button[data-sort="latency"]')
    page.wait_for("!document.querySelector('th[aria-sort]')")
    worst = max((i for i in range(n) if total[i] is not None), key=lambda i: (total[i], -i))
    run.check("sorting by latency", asc == order[0] and desc == worst and first_row(page) == 0,
              f"fastest row {asc} (expected {order[0]}), slowest {desc} (expected {worst})")


def record_of(tags, meta, row):
    size = meta["chunks"]["size"]
    return decode(tags[f"lfeval-chunk-{row // size}"])[row % size]


def expected_texts(rec):
    """Strings the sample view must show for this record."""
    texts = [rec["sample_id"]]
    for m in (rec.get("model_input") or {}).get("messages", []):
        if isinstance(m.get("content"), str) and m["content"].strip():
            texts.append(m["content"][:200])
    for v in (rec.get("sample") or {}).values():
        if isinstance(v, str) and v:
            texts.append(v[:120])
    out = rec["output"] if "output" in rec else rec.get("solver_output")  # both record shapes
    if out and isinstance(out.get("text"), str):
        texts.append(out["text"][:200])
    texts += list((rec.get("scores") or {}).keys())
    for s in (rec.get("scores") or {}).values():
        reasoning = (s.get("metadata") or {}).get("reasoning")
        if reasoning:
            texts.append(reasoning[:120])
    for e in rec.get("errors") or []:
        texts += [e["message"], e.get("class", ""), e.get("stage", "")]
        if isinstance(e.get("location"), str):
            texts.append(e["location"])
    for c in rec.get("calls") or []:
        texts.append(c["model"])
    if rec.get("captured_output"):
        texts.append(rec["captured_output"].strip()[:100])
    return [t for t in texts if t]


def wait_sample(page, spec, sample_id, timeout=8):
    return page.wait_for(f"document.documentElement.dataset.sample === {json.dumps(spec + '/' + sample_id)}",
                         timeout=timeout)


def dialog_text(page):
    return page.eval("document.querySelector('#sample-view').textContent")


def check_sample_view(page, meta, idx, tags, run, **_):
    spec_of = lambda row: meta["specs"][idx["spec"][row]]["key"]  # noqa: E731
    t0 = time.monotonic()
    page.click("#samples-table tbody tr[data-row] td.id a")
    opened = wait_sample(page, spec_of(0), idx["id"][0])
    run.figures["open_sample_ms"] = round((time.monotonic() - t0) * 1000)
    rec = record_of(tags, meta, 0)
    text = dialog_text(page) or ""
    missing = [t for t in expected_texts(rec) if t not in text]
    run.check("clicking a row opens its sample view", opened and not missing,
              f"missing {missing[:2]}" if missing else f"{idx['id'][0]}, {len(text):,} characters")
    run.check("sample view shows request, response and timings", all(
        w in text for w in ("Rendered request", "Raw response", "Timings", "Dataset row", "Model input")))
    run.check("URL hash names the sample", page.eval("location.hash") ==
              sample_hash(spec_of(0), idx["id"][0]), page.eval("location.hash"))
    if idx["n"] > 1:
        page.press("j", "KeyJ", 74)
        run.check("'j' steps to the next sample", wait_sample(page, spec_of(1), idx["id"][1]))
    page.press("Escape", "Escape", 27)
    closed = page.wait_for("!document.querySelector('#sample-view').open && location.hash === ''")
    run.check("Escape closes the view and clears the hash", closed)


def check_deep_link(page, meta, idx, tags, url, run, **_):
    # An errored sample with a file:line location exercises the richest part of the view.
    rows = [i for i in range(idx["n"]) if idx["error"][i]] or [idx["n"] - 1]
    row = next((i for i in rows if any(e.get("location") for e in record_of(tags, meta, i)["errors"])),
               rows[0])
    # An id that needs escaping in a URL fragment: "/", "#", spaces, non-ASCII.
    odd = next((i for i, v in enumerate(idx["id"]) if not re.fullmatch(r"[\w.-]+", v)), None)
    # A record in SampleRecord's own shape (`solver_output`), looked for in each spec's first
    # row only: decoding every chunk of a 100k report would take seconds.
    firsts = sorted({idx["spec"].index(k) for k in set(idx["spec"])})
    shaped = next((r for r in firsts if (record_of(tags, meta, r).get("solver_output"))), None)
    for what, target in (("on load", row), ("with an id that needs escaping", odd),
                         ("written as solver_output", shaped)):
        if target is None:
            continue
        spec = meta["specs"][idx["spec"][target]]["key"]
        page.navigate("about:blank")
        page.wait_for("document.readyState === 'complete' && location.href === 'about:blank'")
        page.navigate(url + sample_hash(spec, idx["id"][target]))
        opened = wait_sample(page, spec, idx["id"][target], timeout=20)
        rec = record_of(tags, meta, target)
        text = dialog_text(page) or ""
        missing = [t for t in expected_texts(rec) if t not in text]
        errors = ", ".join(e["class"] for e in rec["errors"]) or "no errors"
        run.check(f"#sample=<spec>/<id> opens that sample {what}", opened and not missing,
                  f"missing {missing[:2]}" if missing else f"{spec}/{idx['id'][target]}: {errors}")


def check_dump_dom(meta, idx, tags, url, run, **_):
    """What a plain `chromium --dump-dom` prints, with no waiting for scripts to settle."""
    if tags["lfeval-index"][0] != "json":
        return
    profile = tempfile.mkdtemp(prefix="lfeval-dump-")
    try:
        out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                             capture_output=True, timeout=60, check=False).stdout.decode("utf-8", "replace")
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    dom = TAG.sub("", out)  # the data tags hold everything; look only at what was drawn
    want = [s["display_name"] for s in meta["specs"] if s.get("display_name")]
    want += [f"{m['scorer']} · {m['metric']}" for s in meta["specs"] for m in s.get("metrics", [])]
    want += [html_escape(idx["input"][i], quote=False) for i in range(min(PAGE_SIZE, idx["n"]))]
    missing = [w for w in want if w not in dom]
    run.check("`chromium --dump-dom` shows specs, metrics and the first rows", not missing,
              f"missing {missing[:2]}" if missing else f"{len(want)} strings found")


def check_comparison(page, cmp, run, **_):
    visible = page.eval("!document.querySelector('#comparison').hidden")
    flips = cmp.get("flips") or []
    p2f = [f for f in flips if f["direction"] == "pass_to_fail"]
    shown = page.eval("""[...document.querySelectorAll('#flips tbody tr')].map(tr => ({
        id: tr.cells[1].textContent, change: tr.cells[2].textContent}))""") or []
    order_ok = all(s["change"] == "pass → fail" for s in shown[:len(p2f)]) and all(
        s["change"] == "fail → pass" for s in shown[len(p2f):])
    heading = page.eval("document.querySelector('#flips-h')?.textContent") or ""
    run.check("comparison lists flips, pass→fail first", visible and (not flips or (
        shown and order_ok and f"{len(p2f):,} pass → fail" in heading)),
              f"{heading!r}; {len(shown)} rows drawn")
    metrics = page.eval("document.querySelectorAll('#comparison-body table tbody tr:not(.group-head)').length")
    run.check("comparison metrics table", metrics >= len(cmp.get("metrics") or []),
              f"{len(cmp.get('metrics') or [])} metric rows")
    if flips:
        first = next(f for f in flips if f.get("row") is not None)
        page.click("#flips tbody tr td a")
        ok = wait_sample(page, first["spec"], first["id"])
        text = dialog_text(page) or ""
        run.check("a flip links to its sample view", ok and "Baseline" in text, first["id"])
        page.press("Escape", "Escape", 27)
        page.wait_for("!document.querySelector('#sample-view').open")


# --- screenshots ------------------------------------------------------------------------------

# Points to probe in a screenshot: the colour the CSS says, read back from pixels.
PROBES_JS = """(() => {
  const out = {};
  const rgb = (s) => (s.match(/[\\d.]+/g) || []).slice(0, 3).map(Number);
  const put = (name, el, x, y, colour) => {
    if (el && y >= 0 && y < innerHeight && x >= 0 && x < innerWidth) out[name] = [x, y, rgb(colour)];
  };
  const body = getComputedStyle(document.body).backgroundColor;
  const main = document.querySelector('main').getBoundingClientRect();
  put('page background', document.body, 6, Math.min(innerHeight - 6, Math.max(main.top + 40, 140)), body);
  const bar = document.querySelector('.topbar'), br = bar.getBoundingClientRect();
  put('top bar', bar, br.right - 6, br.bottom - 4, getComputedStyle(bar).backgroundColor);
  for (const kind of ['pass', 'fail', 'error']) {
    const b = [...document.querySelectorAll('#samples-table .badge.' + kind)]
      .find((el) => { const r = el.getBoundingClientRect(); return r.top > br.bottom && r.bottom < innerHeight; });
    if (b) { const r = b.getBoundingClientRect(); put(kind + ' badge', b, Math.round(r.left + 4), Math.round(r.top + r.height / 2), getComputedStyle(b).backgroundColor); }
  }
  const rect = [...document.querySelectorAll('#charts-body rect.bar:not(.off)')]
    .find((el) => { const r = el.getBoundingClientRect(); return r.height > 6 && r.width > 4 && r.top > br.bottom && r.bottom < innerHeight; });
  if (rect) { const r = rect.getBoundingClientRect(); put('chart bar', rect, Math.round(r.left + r.width / 2), Math.round(r.top + r.height / 2), getComputedStyle(rect).fill); }
  return out;
})()"""

# Decoding a PNG in pure Python is slow; the browser decodes it in milliseconds. This runs in a
# separate about:blank tab, so the report page stays untouched.
DECODE_JS = """(async (b64, points) => {
  // createImageBitmap, not <img>.decode(): the latter waits for rendering, which a
  // background tab never does.
  const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
  const img = await createImageBitmap(new Blob([bytes], {type: 'image/png'}));
  const c = new OffscreenCanvas(img.width, img.height);
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const px = g.getImageData(0, 0, c.width, c.height).data;
  const counts = new Map();
  for (let i = 0; i < px.length; i += 16) {  // every 4th pixel, quantised to 4 bits a channel
    const k = (px[i] >> 4) << 8 | (px[i + 1] >> 4) << 4 | (px[i + 2] >> 4);
    counts.set(k, (counts.get(k) || 0) + 1);
  }
  const top = Math.max(...counts.values());
  const at = {};
  for (const [name, [x, y]] of Object.entries(points)) {
    const i = (Math.round(y) * c.width + Math.round(x)) * 4;
    at[name] = [px[i], px[i + 1], px[i + 2]];
  }
  return {width: img.width, height: img.height, colours: counts.size, dominant: top / (px.length / 16), at};
})"""


def luminance(rgb):
    return (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255


def check_screenshots(page, browser, out_dir, run, **_):
    decoder = browser.new_page(64, 64, background=True)
    page.send("Target.activateTarget", {"targetId": page.target})
    try:
        for scheme in ("light", "dark"):
            page.send("Emulation.setEmulatedMedia",
                      {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
            for view, scroll in (("top", "window.scrollTo(0, 0)"),
                                 ("charts", "document.querySelector('#charts').scrollIntoView()"),
                                 ("table", "document.querySelector('#samples').scrollIntoView()")):
                page.eval(scroll)
                # Two frames so layout after the scroll is painted; capped in case none come.
                page.eval("new Promise(r => { requestAnimationFrame(() => requestAnimationFrame(r));"
                          " setTimeout(r, 500); })", await_promise=True)
                probes = page.eval(PROBES_JS)
                png = page.screenshot()
                path = out_dir / f"screenshot-{scheme}-{view}.png"
                path.write_bytes(png)
                info = decoder.eval(f"({DECODE_JS})({json.dumps(base64.b64encode(png).decode())}, "
                                    f"{json.dumps({k: v[:2] for k, v in probes.items()})})",
                                    await_promise=True)
                name = f"{scheme}/{view} screenshot"
                run.check(f"{name}: size and not blank",
                          (info["width"], info["height"]) == (WIDTH, HEIGHT)
                          and info["colours"] > 20 and info["dominant"] < 0.97,
                          f"{info['width']}x{info['height']}, {info['colours']} colours, "
                          f"{info['dominant']:.0%} one colour, saved {path.name}")
                wrong = []
                for probe, (x, y, css) in probes.items():
                    got = info["at"][probe]
                    if max(abs(a - b) for a, b in zip(got, css)) > 12:
                        wrong.append(f"{probe} at ({x},{y}) is {got}, CSS says {css}")
                bg = probes.get("page background", [0, 0, None])[2]
                if bg and (luminance(bg) > 0.9) != (scheme == "light"):
                    wrong.append(f"page background {bg} does not look {scheme}")
                bar = probes.get("chart bar", [0, 0, None])[2]
                if bar and not bar[2] > max(bar[0], bar[1]):
                    wrong.append(f"chart bar {bar} is not the blue accent")
                run.check(f"{name}: key regions have their colours", probes and not wrong,
                          "; ".join(wrong[:2]) if wrong else ", ".join(sorted(probes)))
        page.send("Emulation.setEmulatedMedia", {"features": []})
        page.eval("window.scrollTo(0, 0)")
    finally:
        decoder.send("Page.close")


def check_quiet(page, url, run, **_):
    problems = []
    for method, p in page.events:
        if method == "Runtime.exceptionThrown":
            problems.append(p["exceptionDetails"].get("exception", {}).get("description")
                            or p["exceptionDetails"].get("text"))
        elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert", "warning"):
            problems.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            problems.append(p["entry"]["text"])
    run.check("no console errors or warnings", not problems, "; ".join(problems[:3]))
    base = url.split("#")[0]
    requests = {p["request"]["url"] for m, p in page.events if m == "Network.requestWillBeSent"}
    foreign = sorted(u for u in requests if u.split("#")[0] != base and not u.startswith(
        ("data:", "blob:", "about:")))
    run.check("no network requests", not foreign, ", ".join(foreign[:3]) or
              f"only the file itself ({len(requests)} request(s) in all)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CDPError as err:
        print(f"FAIL  browser: {err}")
        sys.exit(1)
