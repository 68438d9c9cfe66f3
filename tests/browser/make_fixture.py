#!/usr/bin/env python3
"""Build a report.html from the template in src/report/assets and synthetic run data.

The data follows /work/notes/issue11/report-data.md exactly, so the page can be developed and
tested before the Rust writer exists. `assemble()` is the reference for what Rust does: fill
three markers in the template, and encode detail chunks as JSON -> gzip -> base64.

    python3 tests/browser/make_fixture.py --samples 1000 --baseline --out target/browser/report.html

Everything is seeded, so the same arguments give the same file (bar the gzip timestamp, which
is pinned to 0 too).
"""

import argparse
import base64
import gzip
import json
import math
import random
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "src" / "report" / "assets"
CSS_MARK, JS_MARK, DATA_MARK = "/*@@CSS@@*/", "//@@JS@@", "<!--@@DATA@@-->"
CHUNK_SIZE = 256
PREVIEW_CHARS = 160

# The latency parts lfeval records per call, summed over a sample's calls. `python` and
# `network` are both `inference_ms`; which one depends on the model's connection type.
LATENCY_PARTS = [
    {"key": "permit_wait", "label": "Permit wait"},
    {"key": "limiter_wait", "label": "Limiter wait"},
    {"key": "render", "label": "Rendering"},
    {"key": "python", "label": "Python"},
    {"key": "network", "label": "Network"},
    {"key": "backoff", "label": "Backoff"},
]

# (key, display name, task, model, connection, dataset, price per 1M tokens (in, out) or None)
SPECS = [
    ("arith-nano", "Arithmetic · GPT-4.1 nano", "arith", "gpt-4-1-nano-custom-inference",
     "custom_inference", "arith-300", (0.10, 0.40)),
    ("arith-acme", "Arithmetic · ACME chat", "arith", "acme-chat", "custom_connection",
     "arith-300", None),
    ("qa-judge", "Open QA · judged", "qa", "gpt-4-1-nano-custom-inference", "custom_inference",
     "trivia-qa", (0.10, 0.40)),
    ("summ-bleu", "Summaries · BLEU", "summarize", "acme-chat", "custom_connection", "news-summ",
     (0.05, 0.20)),
]

# (class, stage, share of errors, message, location or None), in the vocabulary of
# src/error_class.rs and the `Stage` enum of src/eval/record.rs.
ERRORS = [
    ("timeout", "run_inference", 0.30, "model call timed out after 15 s", None),
    ("model_error", "run_inference", 0.20, "endpoint answered 429 Too Many Requests after 3 attempts",
     None),
    ("connection", "run_inference", 0.10, "connection refused (acme.internal:8080)", None),
    ("snippet_error", "run_inference", 0.12, "KeyError: 'choices'", "snippets/run_inference.py:31"),
    ("template_error", "transform_input", 0.08, "undefined value `message.content`",
     "adapters/acme-chat.yaml:14"),
    ("invalid_output", "transform_output", 0.08,
     "output is not a valid chat_completion output: missing `choices`", None),
    ("judge_error", "score", 0.12, "judge answer has no verdict line", None),
]

WORDS = (
    "river model signal garden theory copper lantern harbor vector meadow quiet summit orbit "
    "granite ledger beacon canyon thread marble pilot cedar violet ember tundra falcon prism "
    "velvet anchor glacier saffron quartz willow comet harvest mosaic pepper raven timber"
).split()
ODD_INPUTS = [
    "Is <script>alert('x')</script> escaped? Answer yes or no.",
    "Traduire « naïve café » et 数学 😀 en anglais.",
    "Line one\nLine two\ttabbed & \"quoted\"",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=1000, help="total samples over all specs")
    ap.add_argument("--baseline", action="store_true", help="add a baseline comparison")
    ap.add_argument("--index-encoding", choices=["json", "gzip-base64"], default="json")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=Path("target/browser/report.html"))
    args = ap.parse_args()

    run = synthesize(args.samples, args.seed, args.baseline)
    html = assemble(run, index_encoding=args.index_encoding)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(html, encoding="utf-8")
    print(f"{args.out}: {args.samples} samples, {len(html) / 1e6:.1f} MB", file=sys.stderr)
    return 0


# --- encoding: the part Rust must reproduce byte-for-byte in spirit -------------------------


def json_tag(tag_id: str, value) -> str:
    # `<` is the only character that can end a script element early (`</script`) or switch the
    # tokenizer into its escaped states (`<!--`); as \u003c it stays the same JSON string.
    # ASCII only: one non-Latin-1 character makes Blink hold the whole tag text as UTF-16 and
    # takes the UTF-8 decoder off its fast path; measured, that slows a 25 MB index by ~40%.
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")
    return f'<script type="application/json" id="{tag_id}">{text}</script>\n'


def gzip_tag(tag_id: str, value) -> str:
    raw = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    packed = base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")
    return (f'<script type="application/octet-stream" id="{tag_id}" '
            f'data-encoding="gzip-base64">{packed}</script>\n')


def assemble(run: dict, index_encoding: str = "json") -> str:
    template = (ASSETS / "report.html").read_text(encoding="utf-8")
    css = (ASSETS / "report.css").read_text(encoding="utf-8")
    js = (ASSETS / "report.js").read_text(encoding="utf-8")
    for mark in (CSS_MARK, JS_MARK, DATA_MARK):
        assert template.count(mark) == 1, f"template must hold {mark} exactly once"

    records = run["records"]
    chunks = [records[i:i + CHUNK_SIZE] for i in range(0, len(records), CHUNK_SIZE)]
    meta = dict(run["meta"], chunks={"size": CHUNK_SIZE, "count": len(chunks)})
    tags = [json_tag("lfeval-meta", meta)]
    tags.append(json_tag("lfeval-index", run["index"]) if index_encoding == "json"
                else gzip_tag("lfeval-index", run["index"]))
    if run.get("comparison"):
        tags.append(json_tag("lfeval-comparison", run["comparison"]))
    tags += [gzip_tag(f"lfeval-chunk-{k}", chunk) for k, chunk in enumerate(chunks)]

    # Data goes in last so nothing inside it can be mistaken for a marker.
    html = template.replace(CSS_MARK, css).replace(JS_MARK, js)
    return html.replace(DATA_MARK, "".join(tags))


# --- synthetic run ---------------------------------------------------------------------------


def synthesize(total: int, seed: int, with_baseline: bool) -> dict:
    rng = random.Random(seed)
    per_spec = [total // len(SPECS) + (1 if k < total % len(SPECS) else 0)
                for k in range(len(SPECS))]
    error_classes = [e[0] for e in ERRORS]
    score_defs = [
        {"key": "exact_match.correct", "scorer": "exact_match", "field": "correct",
         "type": "number"},
        {"key": "num_close.abs_error", "scorer": "num_close", "field": "abs_error",
         "type": "number"},
        {"key": "judge.score", "scorer": "judge", "field": "score", "type": "number"},
        {"key": "judge.verdict", "scorer": "judge", "field": "verdict", "type": "category",
         "categories": ["correct", "partial", "incorrect"]},
        {"key": "bleu.bleu", "scorer": "bleu", "field": "bleu", "type": "number"},
    ]
    idx = {"n": 0, "spec": [], "id": [], "pass": [], "error": [],
           "error_classes": error_classes, "input": [], "output": [],
           "scores": [dict(d, values=[]) for d in score_defs],
           "latency": {"parts": LATENCY_PARTS, "values": [[] for _ in LATENCY_PARTS],
                       "total": []},
           "cost": []}
    score_col = {d["key"]: col for d, col in zip(score_defs, idx["scores"])}
    records, specs, baseline = [], [], []

    for spec_no, (spec, count) in enumerate(zip(SPECS, per_spec)):
        key, display, task, model, connection, dataset, price = spec
        spec_records = []
        for i in range(count):
            rec, base = make_sample(rng, spec, i)
            spec_records.append(rec)
            baseline.append(base)
        records += spec_records
        for rec in spec_records:
            add_index_row(idx, score_col, spec_no, rec, connection)
        specs.append(spec_summary(spec, spec_records, idx, spec_no))

    idx["n"] = len(records)
    total_cost = sum(s["cost_usd"] for s in specs if s["cost_usd"] is not None)
    meta = {
        "format": "lfeval-report",
        "version": 1,
        "title": "nightly-regression",
        "generated_at": "2026-12-01T11:02:41Z",
        "provenance": provenance("runs/2026-12-01T10-40-02Z-nightly-regression",
                                 "2026-12-01T10:40:02Z", "2026-12-01T11:02:40Z", 1358.2,
                                 "sha256:3f1a9c0d5e7b2a64c8e1f09d7b35a2c6e4f8091b2d3c5a7e9f1b3d5c7e9a1b3d"),
        "totals": {
            "samples": len(records),
            "errored": sum(s["errored"] for s in specs),
            "passed": sum(s["passed"] or 0 for s in specs),
            "cost_usd": round(total_cost, 6),
            "cost_complete": all(s["cost_usd"] is not None for s in specs),
            "usage": {"num_prompt_tokens": sum(s["usage"]["num_prompt_tokens"] for s in specs),
                      "num_completion_tokens": sum(s["usage"]["num_completion_tokens"]
                                                   for s in specs)},
        },
        "specs": specs,
        "preview_chars": PREVIEW_CHARS,
    }
    run = {"meta": meta, "index": idx, "records": records}
    if with_baseline:
        run["comparison"] = comparison(rng, idx, records, baseline, specs)
    return run


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_sample(rng: random.Random, spec: tuple, i: int):
    key, _, task, model, connection, dataset, price = spec
    sample_id = f"{task}-{i:06d}"
    if task == "summarize" and i == 1:
        sample_id = "news/2026-12-01 #1 über"  # ids come from datasets: any text, even "/" and "#"
    if task == "arith":
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        row = {"id": sample_id, "question": f"What is {a} + {b}?", "answer": str(a + b)}
        prompt = row["question"] + " Answer with the number only."
        if i < len(ODD_INPUTS):
            prompt = ODD_INPUTS[i]
        right = rng.random() < (0.86 if connection == "custom_inference" else 0.78)
        answer = str(a + b) if right else str(a + b + rng.choice([-10, -1, 1, 2, 100]))
    elif task == "qa":
        topic = words(rng, 3)
        row = {"id": sample_id, "question": f"Explain how the {topic} works, in two sentences.",
               "reference": words(rng, 18)}
        prompt = row["question"]
        answer = words(rng, rng.randint(12, 40)).capitalize() + "."
        right = None
    else:
        article = ". ".join(words(rng, rng.randint(10, 18)).capitalize() for _ in range(8)) + "."
        row = {"id": sample_id, "article": article, "summary": words(rng, 20)}
        prompt = "Summarize in one sentence:\n\n" + article
        answer = words(rng, rng.randint(14, 28)).capitalize() + "."
        right = None

    errors = []
    if rng.random() < 0.035:
        cls, stage, _, message, location = pick_error(rng, task)
        err = {"stage": stage, "class": cls, "message": message}
        if stage == "score":
            err["scorer"] = "judge"
        else:
            err["model"] = model
        if location:
            err["location"] = location
        if cls == "snippet_error":
            err["detail"] = ('Traceback (most recent call last):\n  File '
                             '"snippets/run_inference.py", line 31, in run_inference\n'
                             '    return data["choices"][0]["message"]["content"]\n'
                             "KeyError: 'choices'")
        errors.append(err)
    failed_call = bool(errors) and errors[0]["stage"] != "score"

    messages = [{"role": "system", "content": "You are a careful assistant. Be brief."},
                {"role": "user", "content": prompt}]
    model_input = {"messages": messages}
    text = None if failed_call else answer
    output = None if failed_call else {
        "value": {"choices": [{"message": {"role": "assistant", "content": answer}}]},
        "text": answer,
        "messages": messages + [{"role": "assistant", "content": answer}],
    }

    calls, usages = [], []

    def call(*args):
        c, usage = make_call(rng, model, *args)
        calls.append(c)
        usages.append(usage)

    call("solver", connection, messages, answer, errors, failed_call)
    scores = {}
    if not failed_call:
        if task == "arith":
            scores["exact_match"] = {"values": {"correct": 1 if right else 0}, "metadata": {}}
            diff = abs(int(answer) - int(row["answer"])) if answer.lstrip("-").isdigit() else 99
            scores["num_close"] = {"values": {"abs_error": float(diff)}, "metadata": {}}
        elif task == "qa" and not (errors and errors[0]["stage"] == "score"):
            verdict = rng.choices(["correct", "partial", "incorrect"], [0.62, 0.23, 0.15])[0]
            score = {"correct": rng.uniform(0.75, 1.0), "partial": rng.uniform(0.35, 0.75),
                     "incorrect": rng.uniform(0.0, 0.35)}[verdict]
            reasoning = (f"The answer {('covers' if verdict == 'correct' else 'misses')} the key "
                         f"point about the {words(rng, 2)}; it {words(rng, 6)}. "
                         f"Verdict: {verdict.upper()}.")
            scores["judge"] = {"values": {"verdict": verdict, "score": round(score, 4)},
                               "metadata": {"reasoning": reasoning, "judge_model": model}}
            call("judge", connection, [{"role": "user", "content": "Grade: " + answer}],
                 reasoning, [], False)
        elif task == "summarize":
            scores["bleu"] = {"values": {"bleu": round(rng.betavariate(2.2, 5), 4)},
                              "metadata": {}}
        if task == "qa" and errors:
            call("judge", connection, [{"role": "user", "content": "Grade: " + answer}],
                 "I think it is fine", [], False)

    prompt_tokens = sum(u[0] for u in usages)
    completion_tokens = sum(u[1] for u in usages)
    cost = None
    if price:
        cost = round((prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6, 8)
    solver_ms = round(sum(c["timings"]["total_ms"] for c in calls if c["purpose"] == "solver"), 1)
    score_ms = round(sum(c["timings"]["total_ms"] for c in calls if c["purpose"] == "judge")
                     + rng.uniform(0.05, 2.0), 1)
    rec = {
        "spec": key,
        "sample_id": sample_id,
        "sample_index": i,
        "sample": row,
        "model_input": model_input,
        "output": output,
        "scores": scores,
        "errors": errors,
        "calls": calls,
        "usage": {"num_prompt_tokens": prompt_tokens, "num_completion_tokens": completion_tokens},
        "cost_usd": cost,
        "attempts": sum(len(c["attempts"]) for c in calls),
        "retries": sum(len(c["attempts"]) - 1 for c in calls),
        "cached": all(c["cached"] for c in calls),
        "timings": {"solver_ms": solver_ms, "score_ms": score_ms,
                    "total_ms": round(solver_ms + score_ms + rng.uniform(0.1, 3), 1)},
    }
    if key == "arith-acme":
        # src/eval/record.rs writes this shape today; the page reads both (report-data.md §5).
        out = rec.pop("output")
        rec["solver_output"] = None if out is None else {
            "output": out["value"], "text": out["text"], "messages": out["messages"]}
    if connection == "custom_inference" and rng.random() < 0.2:
        rec["captured_output"] = f"[run_inference] POST /v1/chat/completions -> 200 in " \
                                 f"{rng.randint(80, 900)} ms\n"
    # What the baseline run said about the same sample: mostly the same, sometimes not.
    base = {"right": right, "answer": answer, "error": errors[0]["class"] if errors else None}
    if rng.random() < 0.05:
        base["right"] = (not right) if right is not None else None
        base["answer"] = answer if base["right"] == right else str(rng.randint(1, 2000))
    if rng.random() < 0.03:
        base["error"] = None if errors else pick_error(rng, task)[0]
    return rec, base


def pick_error(rng: random.Random, task: str):
    pool = [e for e in ERRORS if task == "qa" or e[0] != "judge_error"]
    return rng.choices(pool, [e[2] for e in pool])[0]


def make_call(rng, model, purpose, connection, messages, answer, errors, failed):
    permit = rng.expovariate(1 / 250) if rng.random() < 0.3 else rng.uniform(0, 2)
    limiter = rng.uniform(0, 900) if connection == "custom_connection" else rng.uniform(0, 40)
    render_in, render_out = rng.uniform(0.1, 2.5), rng.uniform(0.1, 1.5)
    inference = rng.lognormvariate(math.log(520 if purpose == "solver" else 380), 0.55)
    attempts = [{"error": None, "retryable": None, "elapsed_ms": round(inference, 1)}]
    backoff = 0.0
    if errors and purpose == "solver" and errors[0]["class"] in ("model_error", "timeout"):
        attempts = [{"error": errors[0]["message"], "retryable": True,
                     "elapsed_ms": round(inference if errors[0]["class"] != "timeout"
                                         else 15000.0, 1)} for _ in range(3)]
        backoff = rng.uniform(800, 6000)
    elif rng.random() < 0.04:
        attempts.insert(0, {"error": "endpoint answered 503", "retryable": True,
                            "elapsed_ms": round(rng.uniform(50, 400), 1)})
        backoff = rng.uniform(300, 2000)
    total = permit + limiter + render_in + render_out + sum(a["elapsed_ms"] for a in attempts) \
        + backoff
    prompt_tokens = sum(len(m["content"]) // 4 + 4 for m in messages)
    completion_tokens = 0 if failed else len(answer) // 4 + 1
    body = json.dumps({"model": model, "messages": messages, "temperature": 0})
    status = 500 if failed else 200
    response_body = json.dumps({"error": "internal"}) if failed else json.dumps(
        {"id": f"chatcmpl-{rng.getrandbits(40):x}", "object": "chat.completion",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                      "finish_reason": "stop"}],
         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}})
    return {
        "model": model,
        "purpose": purpose,
        "request_body": body,
        "response": {"status_code": status,
                     "headers": {"content-type": "application/json",
                                 "x-request-id": f"req_{rng.getrandbits(48):x}"},
                     "body": response_body},
        "rendered_output": None if failed else {
            "choices": [{"message": {"role": "assistant", "content": answer}}],
            "usage": {"num_prompt_tokens": prompt_tokens,
                      "num_completion_tokens": completion_tokens}},
        "attempts": attempts,
        "timings": {"permit_wait_ms": round(permit, 1), "limiter_wait_ms": round(limiter, 1),
                    "render_input_ms": round(render_in, 2), "inference_ms": round(
                        sum(a["elapsed_ms"] for a in attempts), 1),
                    "render_output_ms": round(render_out, 2), "backoff_ms": round(backoff, 1),
                    "total_ms": round(total, 1)},
        "cached": rng.random() < 0.1,
    }, (prompt_tokens, completion_tokens)


def preview(text) -> str:
    text = "" if text is None else " ".join(str(text).split())
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 1] + "…"


def add_index_row(idx, score_col, spec_no, rec, connection):
    """One index row per record: what Rust derives from a samples.jsonl line."""
    idx["spec"].append(spec_no)
    idx["id"].append(rec["sample_id"])
    idx["error"].append(idx["error_classes"].index(rec["errors"][0]["class"]) + 1
                        if rec["errors"] else 0)
    user = [m["content"] for m in rec["model_input"]["messages"] if m["role"] == "user"]
    idx["input"].append(preview(user[-1] if user else ""))
    out = rec["output"] if "output" in rec else rec.get("solver_output")
    idx["output"].append(preview(out["text"] if out else ""))
    values = {f"{s}.{f}": v for s, sc in rec["scores"].items() for f, v in sc["values"].items()}
    for key, col in score_col.items():
        v = values.get(key)
        if col["type"] == "category":
            v = col["categories"].index(v) if v is not None else None
        col["values"].append(v)
    idx["pass"].append(pass_of(rec))
    parts = [0.0] * len(LATENCY_PARTS)
    for c in rec["calls"]:
        t = c["timings"]
        parts[0] += t["permit_wait_ms"]
        parts[1] += t["limiter_wait_ms"]
        parts[2] += t["render_input_ms"] + t["render_output_ms"]
        parts[3 if connection == "custom_inference" else 4] += t["inference_ms"]
        parts[5] += t["backoff_ms"]
    for col, v in zip(idx["latency"]["values"], parts):
        col.append(round(v, 1))
    idx["latency"]["total"].append(rec["timings"]["total_ms"])
    idx["cost"].append(rec["cost_usd"])


def pass_of(rec):
    """The fixture's pass rule; Rust uses the spec's primary binary score the same way."""
    if rec["errors"]:
        return None
    s = rec["scores"]
    if "exact_match" in s:
        return s["exact_match"]["values"]["correct"]
    if "judge" in s:
        return 1 if s["judge"]["values"]["verdict"] == "correct" else 0
    return None


# --- statistics the Rust side computes; the page only shows them ------------------------------

Z95 = 1.959963984540054


def wilson(k: int, n: int):
    if n == 0:
        return None
    p = k / n
    d = 1 + Z95 ** 2 / n
    c = (p + Z95 ** 2 / (2 * n)) / d
    h = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / d
    return [round(c - h, 6), round(c + h, 6)]


def mean_ci(xs):
    n = len(xs)
    if n < 2:
        return None
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return [round(m - Z95 * sd / math.sqrt(n), 6), round(m + Z95 * sd / math.sqrt(n), 6)]


def mcnemar(b: int, c: int) -> float:
    """Two-sided McNemar p: exact binomial for few discordant pairs, else chi-square + cc."""
    n = b + c
    if n == 0:
        return 1.0
    if n < 25:
        k = min(b, c)
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
        return min(1.0, 2 * tail)
    x = (abs(b - c) - 1) ** 2 / n
    return math.erfc(math.sqrt(x / 2))


def spec_summary(spec, recs, idx, spec_no):
    key, display, task, model, connection, dataset, price = spec
    errored = sum(1 for r in recs if r["errors"])
    passes = [pass_of(r) for r in recs]
    metrics = []

    def add(scorer, metric, name, xs, kind, better="higher"):
        n = len(xs)
        if kind == "proportion":
            value = sum(xs) / n if n else None
            ci = wilson(int(sum(xs)), n)
            method = "wilson"
        else:
            value = sum(xs) / n if n else None
            ci = mean_ci(xs)
            method = "normal"
        metrics.append({"scorer": scorer, "metric": metric, "name": name,
                        "value": None if value is None else round(value, 6), "n": n,
                        "failures": len(recs) - n, "ci": ci, "ci_method": method,
                        "better": better})

    def vals(scorer, field):
        return [r["scores"][scorer]["values"][field] for r in recs if scorer in r["scores"]]

    if task == "arith":
        add("exact_match", "mean", "mean", vals("exact_match", "correct"), "proportion")
        add("num_close", "mean", "mean", vals("num_close", "abs_error"), "mean", "lower")
    elif task == "qa":
        verdicts = vals("judge", "verdict")
        for cat in ("correct", "partial", "incorrect"):
            add("judge", "frequency", cat, [1 if v == cat else 0 for v in verdicts], "proportion")
        add("judge", "mean", "mean", vals("judge", "score"), "mean")
    else:
        add("bleu", "mean", "mean", vals("bleu", "bleu"), "mean")
    judged = [p for p in passes if p is not None]
    costs = [r["cost_usd"] for r in recs]
    totals = sorted(r["timings"]["total_ms"] for r in recs)
    return {
        "key": key, "display_name": display, "task": task, "model": model, "dataset": dataset,
        "status": "completed",
        "samples": len(recs), "errored": errored,
        "passed": sum(judged) if judged else None,
        "failed": len(judged) - sum(judged) if judged else None,
        "cost_usd": round(sum(costs), 6) if price else None,
        "usage": {"num_prompt_tokens": sum(r["usage"]["num_prompt_tokens"] for r in recs),
                  "num_completion_tokens": sum(r["usage"]["num_completion_tokens"]
                                               for r in recs)},
        "latency_ms": {"p50": pct(totals, 50), "p95": pct(totals, 95)},
        "metrics": metrics,
        "metric_errors": [],
    }


def pct(sorted_xs, q):
    if not sorted_xs:
        return None
    return sorted_xs[min(len(sorted_xs) - 1, int(len(sorted_xs) * q / 100))]


def provenance(run_dir, started, ended, wall, fingerprint):
    return {
        "lfeval_version": "0.4.0",
        "evaluation": "nightly-regression",
        "run_dir": run_dir,
        "config_fingerprint": fingerprint,
        "command_line": ["lfeval", "run", "-f", "evaluations/nightly regression.yaml",
                         "--max-errors", "500"],
        "started_at": started,
        "ended_at": ended,
        "wall_time_s": wall,
        "git_sha": "70bfd2b5c1e0",
        "datasets": [
            {"key": "arith-300", "path": "datasets/arith.jsonl", "rows": 300,
             "sha256": "9b1c0f3e2d4a5b6c7d8e9f00112233445566778899aabbccddeeff0011223344"},
            {"key": "trivia-qa", "path": "datasets/trivia.csv", "rows": 12000,
             "sha256": "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"},
            {"key": "news-summ", "path": "datasets/news/", "rows": 5000,
             "sha256": "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"},
        ],
    }


def comparison(rng, idx, records, baseline, specs):
    """The baseline run B is compared against: paired by (spec, sample_id)."""
    metrics, flips, error_changes, deltas = [], [], [], []
    errors_by = {}
    spec_keys = [s["key"] for s in specs]
    for row, (rec, base) in enumerate(zip(records, baseline)):
        cur_pass = pass_of(rec)
        base_pass = None if base["error"] else (
            None if base["right"] is None else int(base["right"]))
        if rec["spec"].startswith("qa"):  # judged: the baseline keeps the same verdict mostly
            base_pass = cur_pass if rng.random() > 0.06 or cur_pass is None else 1 - cur_pass
        base["pass"] = base_pass
        if cur_pass is not None and base_pass is not None and cur_pass != base_pass:
            flips.append({
                "spec": rec["spec"], "id": rec["sample_id"], "row": row,
                "direction": "pass_to_fail" if base_pass == 1 else "fail_to_pass",
                "baseline": {"output": preview(base["answer"]), "error": base["error"],
                             "scores": {"exact_match.correct": base_pass}
                             if "exact_match" in rec["scores"] else {}},
            })
        cur_err = rec["errors"][0]["class"] if rec["errors"] else None
        for side, cls in (("a", base["error"]), ("b", cur_err)):
            if cls:
                counts = errors_by.setdefault((rec["spec"], cls), {"a": 0, "b": 0})
                counts[side] += 1
        if cur_err and not base["error"]:
            error_changes.append({"spec": rec["spec"], "id": rec["sample_id"], "row": row,
                                  "change": "appeared", "class": cur_err})
        elif base["error"] and not cur_err:
            error_changes.append({"spec": rec["spec"], "id": rec["sample_id"], "row": row,
                                  "change": "vanished", "class": base["error"]})
    flips.sort(key=lambda f: (f["direction"] != "pass_to_fail", spec_keys.index(f["spec"])))

    for spec in specs:
        pairs = [(b["pass"], pass_of(r)) for r, b in zip(records, baseline)
                 if r["spec"] == spec["key"] and b["pass"] is not None
                 and pass_of(r) is not None]
        for m in spec["metrics"]:
            entry = {"spec": spec["key"], "scorer": m["scorer"], "metric": m["metric"],
                     "name": m["name"], "b": m["value"], "better": m["better"]}
            is_pass_metric = m["scorer"] in ("exact_match",) or (
                m["scorer"] == "judge" and m["name"] == "correct")
            if is_pass_metric and pairs:
                bf = sum(1 for a, b in pairs if a == 1 and b == 0)
                fp = sum(1 for a, b in pairs if a == 0 and b == 1)
                a_rate = sum(a for a, _ in pairs) / len(pairs)
                b_rate = sum(b for _, b in pairs) / len(pairs)
                diffs = [b - a for a, b in pairs]
                ci = mean_ci(diffs)
                entry.update(a=round(a_rate, 6), b=round(b_rate, 6),
                             delta=round(b_rate - a_rate, 6), delta_ci=ci,
                             p_value=round(mcnemar(bf, fp), 6), test="mcnemar",
                             n_paired=len(pairs), pass_to_fail=bf, fail_to_pass=fp)
            else:
                shift = rng.uniform(-0.03, 0.03) * (m["value"] or 1)
                a = None if m["value"] is None else round(m["value"] - shift, 6)
                half = (m["ci"][1] - m["ci"][0]) / 2 if m["ci"] else None
                entry.update(a=a, delta=None if a is None else round(m["value"] - a, 6),
                             delta_ci=None if half is None else
                             [round(shift - half, 6), round(shift + half, 6)],
                             p_value=round(rng.uniform(0.01, 0.9), 4), test="paired_t",
                             n_paired=m["n"], pass_to_fail=None, fail_to_pass=None)
            metrics.append(entry)
        cost_b = spec["cost_usd"]
        deltas.append({
            "spec": spec["key"],
            "latency_p50_ms": {"a": round(spec["latency_ms"]["p50"] * 1.08, 1),
                               "b": spec["latency_ms"]["p50"]},
            "latency_p95_ms": {"a": round(spec["latency_ms"]["p95"] * 0.93, 1),
                               "b": spec["latency_ms"]["p95"]},
            "prompt_tokens": {"a": int(spec["usage"]["num_prompt_tokens"] * 0.97),
                              "b": spec["usage"]["num_prompt_tokens"]},
            "completion_tokens": {"a": int(spec["usage"]["num_completion_tokens"] * 1.12),
                                  "b": spec["usage"]["num_completion_tokens"]},
            "cost_usd": {"a": None if cost_b is None else round(cost_b * 1.05, 6),
                         "b": cost_b},
        })
    return {
        "baseline": {
            "label": "nightly 2026-11-30",
            "provenance": provenance("runs/2026-11-30T10-40-01Z-nightly-regression",
                                     "2026-11-30T10:40:01Z", "2026-11-30T11:05:12Z", 1511.0,
                                     "sha256:77aa0b1c2d3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e"),
        },
        "metrics": metrics,
        "flips": flips,
        "errors": [{"spec": s, "class": c, "a": v["a"], "b": v["b"]}
                   for (s, c), v in sorted(errors_by.items())],
        "error_changes": error_changes,
        "deltas": deltas,
        "totals": {
            "cost_usd": {"a": round(sum(d["cost_usd"]["a"] or 0 for d in deltas), 6),
                         "b": round(sum(d["cost_usd"]["b"] or 0 for d in deltas), 6)},
            "prompt_tokens": {k: sum(d["prompt_tokens"][k] for d in deltas) for k in "ab"},
            "completion_tokens": {k: sum(d["completion_tokens"][k] for d in deltas)
                                  for k in "ab"},
            "wall_time_s": {"a": 1511.0, "b": 1358.2},
        },
        "unpaired": {"only_in_baseline": 0, "only_in_current": 0},
    }


if __name__ == "__main__":
    sys.exit(main())
