//! How many of a sync snippet's threads run calls at once: a first wave of 16, then as many as
//! Python has room for, which for a snippet waiting on its endpoint is `max_concurrent_requests`.

use super::isolation::snippet_run;

/// A snippet that waits 50 ms with the GIL released and logs, in order, each call's start
/// (with how many were running then) and end.
const WAITING: &str = r#"import json, os, threading, time

_lock = threading.Lock()
_running = 0
_log = open(os.path.join(os.getcwd(), "events.log"), "a", buffering=1)

def run_inference(body, environment, sample):
    global _running
    with _lock:
        _running += 1
        _log.write(f"start {_running}\n")
    time.sleep(0.05)
    with _lock:
        _running -= 1
        _log.write("end\n")
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok " + sample["word"]}}]})
"#;

#[test]
fn a_snippet_waiting_on_its_endpoint_runs_a_first_wave_of_16_then_every_thread() {
    let words: Vec<String> = (0..160).map(|i| format!("w{i}")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let test = snippet_run("max_concurrent_requests: 32", 30, WAITING, &words);
    let out = test.success();
    assert!(out.stdout.contains("160 sample(s), 0 failed"), "{}", out.stdout);
    let log = std::fs::read_to_string(test.path().join("events.log")).expect("events.log");
    let events: Vec<&str> = log.lines().collect();
    assert_eq!(events.iter().filter(|e| e.starts_with("start")).count(), 160, "{log}");
    let before_first_answer = events.iter().take_while(|e| **e != "end").count();
    assert_eq!(
        before_first_answer, 16,
        "the first wave, before any call finished:\n{log}"
    );
    let most: usize = events
        .iter()
        .filter_map(|e| e.strip_prefix("start ")?.parse().ok())
        .max()
        .unwrap_or(0);
    assert_eq!(
        most, 32,
        "the first answer shows Python has room for all of them:\n{log}"
    );
}
