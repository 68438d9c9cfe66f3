//! The note a run ends with when its sync snippets kept Python busy all along (Python runs one
//! thread at a time, so more concurrency cannot help them), and its absence when they waited.

use std::time::Instant;

use super::isolation::snippet_run;

const WORDS: [&str; 40] = [
    "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8",
    "b9", "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7",
    "d8", "d9",
];

/// A snippet that spends `work` in Python per call: burning CPU, or asleep with the GIL released.
fn snippet(work: &str) -> String {
    format!(
        r#"import json, time

def run_inference(body, environment, sample):
    {work}
    return json.dumps({{"choices": [{{"message": {{"role": "assistant", "content": "ok " + sample["word"]}}}}]}})
"#
    )
}

#[test]
fn snippets_that_keep_python_busy_end_the_run_with_a_note_saying_so_and_what_to_do() {
    // 30 ms of CPU a call (thread time, so a loaded machine cannot shorten it), four at a time.
    let busy = snippet("end = time.thread_time() + 0.03\n    while time.thread_time() < end:\n        pass");
    let test = snippet_run("max_concurrent_requests: 4", 30, &busy, &WORDS)
        .filter(r"busy \d+%", "busy [N]%")
        .filter(r"\d+\.\d+ (ms|s)\b", "[TIME] $1");
    let out = test.success();
    assert!(out.stdout.contains("40 sample(s), 0 failed"), "{}", out.stdout);
    let note = out
        .stderr
        .lines()
        .find(|l| l.starts_with("note: snippets kept Python busy "))
        .unwrap_or_else(|| panic!("no note:\n{}", out.stderr));
    let share: f64 = note["note: snippets kept Python busy ".len()..]
        .split('%')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{note}"));
    assert!((80.0..=100.0).contains(&share), "{note}");
    assert!(note.contains("of `s`'s "), "{note}");
    // Each call burned at least its 30 ms, and the figure is per call, not per run.
    let per_call: f64 = note
        .split(" s (")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{note}"));
    assert!((30.0..60.0).contains(&per_call), "{note}");
    let from_note = &out.stderr[out.stderr.find("note: ").unwrap_or(0)..];
    insta::assert_snapshot!(test.filtered(from_note.trim_end()));
    assert!(
        out.stderr
            .contains("hint: a snippet waiting on HTTP can wait outside Python with `from lfeval import http`"),
        "{}",
        out.stderr
    );
}

#[test]
fn snippets_that_wait_with_python_free_get_no_note() {
    // As long a run, but asleep: the GIL is free and concurrency is what sets the pace.
    let waiting = snippet("time.sleep(0.1)");
    let test = snippet_run("max_concurrent_requests: 4", 30, &waiting, &WORDS);
    let started = Instant::now();
    let out = test.success();
    assert!(
        started.elapsed().as_secs_f64() >= 1.0,
        "the run must be long enough for a note"
    );
    assert!(out.stdout.contains("40 sample(s), 0 failed"), "{}", out.stdout);
    assert!(!out.stderr.contains("note:"), "{}", out.stderr);
}
