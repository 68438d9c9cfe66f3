//! Tests for the run directory: crash safety, resume, duplicates, locking and secret masking.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;

fn info() -> RunInfo {
    RunInfo {
        project_dir: PathBuf::from("/projects/demo"),
        run_file: Some(PathBuf::from("/projects/demo/run.yaml")),
        started_at: "2024-01-02T03:04:05Z".parse().unwrap(),
    }
}

fn new_run(dir: &Path) -> RunDir {
    RunDir::create(dir, &info(), &json!({"evaluation": {"key": "demo"}})).unwrap()
}

fn row(value: Value) -> crate::eval::dataset::Row {
    value.as_object().cloned().unwrap()
}

fn record(spec: &str, id: &str) -> SampleRecord {
    SampleRecord::new(
        spec,
        id,
        id.parse().unwrap_or(0),
        row(json!({"output": format!("answer {id}"), "score": 1.5})),
    )
}

fn padded(spec: &str, id: &str, pad: &str) -> SampleRecord {
    SampleRecord::new(spec, id, id.parse().unwrap_or(0), row(json!({ "pad": pad })))
}

fn lines(dir: &Path) -> Vec<SampleRecord> {
    raw_lines(dir)
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

fn raw_lines(dir: &Path) -> Vec<Value> {
    let text = fs::read_to_string(dir.join(SAMPLES_FILE)).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "unterminated: {text:?}");
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn all_bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes_under(&path));
        } else {
            out.extend(fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn default_path_uses_utc_time_and_a_safe_key() {
    let now: Timestamp = "2024-01-02T03:04:05.678+02:00".parse().unwrap();
    assert_eq!(
        RunDir::default_path(Path::new("/p"), "my-eval", now),
        PathBuf::from("/p/runs/20240102T010405Z-my-eval")
    );
    assert_eq!(
        RunDir::default_path(Path::new("/p"), "../a/b c", now),
        PathBuf::from("/p/runs/20240102T010405Z-.._a_b_c")
    );
    assert_eq!(
        RunDir::default_path(Path::new("/p"), "", now),
        PathBuf::from("/p/runs/20240102T010405Z-run")
    );
}

#[test]
fn append_then_resume_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let run = new_run(&dir);
    for (spec, id) in [("a", "1"), ("a", "2"), ("b", "1")] {
        run.append(&record(spec, id)).unwrap();
    }
    run.finish().unwrap();
    drop(run);

    let (run, state) = resume_when_free(&dir);
    assert_eq!(state.records, 3);
    assert_eq!(state.truncated_bytes, 0);
    let expected: Vec<(String, String)> = [("a", "1"), ("a", "2"), ("b", "1")]
        .iter()
        .map(|(s, i)| (s.to_string(), i.to_string()))
        .collect();
    assert_eq!(run.recorded_samples().unwrap(), expected);
    assert_eq!(run.run_config(), &json!({"evaluation": {"key": "demo"}}));
    assert_eq!(run.info(), &info());
    assert_eq!(run.lfeval_version(), env!("CARGO_PKG_VERSION"));
    assert!(run.is_recorded("a", "2", Place::new(2, None, None)));
    assert!(!run.is_recorded("b", "2", Place::new(2, None, None)));

    let records: Vec<SampleRecord> = run.records().unwrap().map(Result::unwrap).collect();
    assert_eq!(records, vec![record("a", "1"), record("a", "2"), record("b", "1")]);

    // The resumed run keeps refusing what the first process wrote.
    assert!(matches!(
        run.append(&record("b", "1")),
        Err(ResultsError::Duplicate { .. })
    ));
    run.append(&record("b", "2")).unwrap();
    assert_eq!(lines(&dir).len(), 4);
}

#[test]
fn partial_last_line_is_cut_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let run = new_run(&dir);
    run.append(&record("a", "1")).unwrap();
    run.append(&record("a", "2")).unwrap();
    drop(run);
    let samples = dir.join(SAMPLES_FILE);
    let clean_len = fs::metadata(&samples).unwrap().len();
    // What a kill in the middle of `write_all` leaves behind.
    let partial = br#"{"spec":"a","sample_id":"3","output":"ans"#;
    OpenOptions::new()
        .append(true)
        .open(&samples)
        .unwrap()
        .write_all(partial)
        .unwrap();

    let (run, state) = resume_when_free(&dir);
    assert_eq!(state.records, 2);
    assert_eq!(state.truncated_bytes, partial.len() as u64);
    assert!(!run.is_recorded("a", "3", Place::new(3, None, None)));
    assert_eq!(fs::metadata(&samples).unwrap().len(), clean_len);

    run.append(&record("a", "3")).unwrap();
    run.append(&record("a", "4")).unwrap();
    run.finish().unwrap();
    let ids: Vec<String> = lines(&dir).into_iter().map(|r| r.sample_id).collect();
    assert_eq!(ids, vec!["1", "2", "3", "4"]);
}

#[test]
fn complete_json_without_newline_counts_as_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    drop(new_run(&dir));
    let tail = serde_json::to_string(&record("a", "1")).unwrap();
    fs::write(dir.join(SAMPLES_FILE), &tail).unwrap();
    let (run, state) = resume_when_free(&dir);
    assert_eq!(state.records, 0);
    assert_eq!(state.truncated_bytes, tail.len() as u64);
    run.append(&record("a", "1")).unwrap();
    assert_eq!(lines(&dir), vec![record("a", "1")]);
}

#[test]
fn corrupt_complete_line_is_an_error_not_a_silent_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    drop(new_run(&dir));
    let good = serde_json::to_string(&record("a", "1")).unwrap();
    fs::write(dir.join(SAMPLES_FILE), format!("{good}\nnot json\n{good}\n")).unwrap();
    match RunDir::resume(&dir) {
        Err(ResultsError::InvalidRecord { line, .. }) => assert_eq!(line, 2),
        other => panic!("expected an invalid record, got {other:?}"),
    }
    fs::write(dir.join(SAMPLES_FILE), format!("{good}\n{good}\n")).unwrap();
    match RunDir::resume(&dir) {
        Err(ResultsError::InvalidRecord { line, message, .. }) => {
            assert_eq!(line, 2);
            assert!(message.contains("twice"), "{message}");
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
}

#[test]
fn duplicates_and_keyless_records_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let run = new_run(&dir);
    run.append(&record("a", "1")).unwrap();
    match run.append(&padded("a", "1", "other")) {
        Err(ResultsError::Duplicate { spec, sample_id }) => {
            assert_eq!((spec.as_str(), sample_id.as_str()), ("a", "1"));
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
    // Same id under another spec is a different sample.
    run.append(&record("b", "1")).unwrap();
    assert_eq!(lines(&dir), vec![record("a", "1"), record("b", "1")]);
}

#[test]
fn concurrent_appends_write_whole_lines_once() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 200;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let run = Arc::new(new_run(&dir));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let run = Arc::clone(&run);
            std::thread::spawn(move || {
                let padding = "x".repeat(1000 * (t + 1));
                let mut shared_won = 0;
                for i in 0..PER_THREAD {
                    let place = (t * PER_THREAD + i) as u64;
                    run.append(&padded("s", &place.to_string(), &padding)).unwrap();
                    // Every thread races for the same sample; only one may win.
                    let shared = SampleRecord::new("s", "shared", (THREADS * PER_THREAD) as u64, row(json!({})));
                    if run.append(&shared).is_ok() {
                        shared_won += 1;
                    }
                }
                shared_won
            })
        })
        .collect();
    let won: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(won, 1);
    run.finish().unwrap();

    let records = lines(&dir);
    assert_eq!(records.len(), THREADS * PER_THREAD + 1);
    let ids: HashSet<String> = records.iter().map(|r| r.sample_id.clone()).collect();
    assert_eq!(ids.len(), records.len());
    assert_eq!(run.records().unwrap().count(), records.len());
}

#[test]
fn records_skip_a_line_still_being_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let run = new_run(&dir);
    run.append(&record("a", "1")).unwrap();
    OpenOptions::new()
        .append(true)
        .open(dir.join(SAMPLES_FILE))
        .unwrap()
        .write_all(br#"{"spec":"a","sam"#)
        .unwrap();
    let records: Vec<SampleRecord> = run.records().unwrap().map(Result::unwrap).collect();
    assert_eq!(records, vec![record("a", "1")]);
}

#[test]
fn create_refuses_a_used_directory_and_resume_needs_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    drop(new_run(&empty));
    let err = RunDir::create(&empty, &info(), &json!({})).unwrap_err();
    assert!(matches!(err, ResultsError::NotEmpty { .. }));
    assert!(err.to_string().contains("`--resume`"), "{err}");

    let file = tmp.path().join("file");
    fs::write(&file, "x").unwrap();
    assert!(matches!(
        RunDir::create(&file, &info(), &json!({})),
        Err(ResultsError::NotEmpty { .. })
    ));

    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    assert!(matches!(RunDir::resume(&other), Err(ResultsError::NotARun { .. })));
}

/// Resumes, waiting out a lock that outlives its [`RunDir`] for a moment: a process that
/// another test forks shares the lock until its `exec` closes the inherited descriptor.
fn resume_when_free(dir: &Path) -> (RunDir, ResumeState) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match RunDir::resume(dir) {
            Err(ResultsError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
}

#[test]
fn a_live_run_cannot_be_opened_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let run = new_run(&dir);
    assert!(matches!(RunDir::resume(&dir), Err(ResultsError::Locked { .. })));
    drop(run);
    let (resumed, _) = resume_when_free(&dir);
    assert!(matches!(RunDir::resume(&dir), Err(ResultsError::Locked { .. })));
    drop(resumed);
}

#[test]
fn write_json_replaces_atomically_inside_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let run = new_run(&dir);
    let log = "task_results/spec-1/task_result_log.json";
    let target = run.write_json(log, &json!({"format_version": "v1", "n": 1})).unwrap();
    assert_eq!(target, dir.join("task_results/spec-1/task_result_log.json"));
    run.write_json(log, &json!({"format_version": "v1", "n": 2})).unwrap();
    let text = fs::read_to_string(&target).unwrap();
    assert!(text.contains("\n  \"n\": 2"), "not pretty: {text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"format_version": "v1", "n": 2})
    );
    let leftovers: Vec<_> = fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("task_result_log.json")]);

    let summary = run.write_summary(&json!({"ok": true})).unwrap();
    assert_eq!(summary, dir.join("summary.json"));
    for bad in ["", "../escape.json", "/abs.json", "a/../../b.json"] {
        assert!(
            matches!(
                run.write_json(bad, &json!({})),
                Err(ResultsError::InvalidRelativePath { .. })
            ),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn a_registered_secret_never_reaches_the_run_directory() {
    crate::redact::register("sk-canary-XYZ123", "<<secrets.CANARY>>");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let config = json!({"models": {"m": {"api_key": "sk-canary-XYZ123"}}});
    let run = RunDir::create(&dir, &info(), &config).unwrap();
    assert_eq!(
        run.run_config(),
        &json!({"models": {"m": {"api_key": "<<secrets.CANARY>>"}}})
    );
    run.append(&SampleRecord::new(
        "a",
        "1",
        1,
        row(json!({
            "request": "Authorization: Bearer sk-canary-XYZ123",
            "escaped": "{\"key\":\"sk-canary-XYZ123\"}",
            "sk-canary-XYZ123": ["nested sk-canary-XYZ123"],
        })),
    ))
    .unwrap();
    run.write_summary(&json!({"echo": "sk-canary-XYZ123"})).unwrap();
    run.finish().unwrap();

    let bytes = all_bytes_under(&dir);
    assert!(!contains(&bytes, "sk-canary-XYZ123"));
    assert!(contains(&bytes, "<<secrets.CANARY>>"));
    let written = &raw_lines(&dir)[0];
    assert_eq!(
        written["sample"]["<<secrets.CANARY>>"],
        json!(["nested <<secrets.CANARY>>"])
    );

    // A secret in an id is masked in the key too, and lookups by the raw id still work.
    run.append(&padded("a", "sk-canary-XYZ123", "")).unwrap();
    assert!(run.is_recorded("a", "sk-canary-XYZ123", Place::new(0, None, None)));
    assert!(matches!(
        run.append(&padded("a", "sk-canary-XYZ123", "")),
        Err(ResultsError::Duplicate { .. })
    ));
}

#[test]
fn a_secret_spanning_json_syntax_blocks_the_write() {
    crate::redact::register("qzk\":\"vvq", "<<secrets.ODD>>");
    // Files are pretty-printed, which puts a space after the colon.
    crate::redact::register("qzp\": \"vvp", "<<secrets.ODD_PRETTY>>");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let run = new_run(&dir);
    assert!(matches!(
        run.append(&SampleRecord::new("a", "1", 1, row(json!({"qzk": "vvq"})))),
        Err(ResultsError::Unredactable { .. })
    ));
    assert!(lines(&dir).is_empty());
    run.append(&record("a", "1")).unwrap();
    assert_eq!(lines(&dir), vec![record("a", "1")]);

    // A config that cannot be written leaves nothing behind to block a retry.
    let other = tmp.path().join("other");
    assert!(matches!(
        RunDir::create(&other, &info(), &json!({"qzp": "vvp"})),
        Err(ResultsError::Unredactable { .. })
    ));
    assert!(!other.exists());
    drop(new_run(&other));
}

/// Not a test on its own: the process [`a_killed_writer_leaves_a_resumable_run`] starts
/// and kills. It appends until it is killed.
#[test]
#[ignore = "run by a_killed_writer_leaves_a_resumable_run"]
fn writer_child() {
    let Some(dir) = std::env::var_os("LFEVAL_TEST_WRITER_DIR") else {
        return;
    };
    let (run, _) = resume_when_free(Path::new(&dir));
    let padding = "p".repeat(4 * 1024 * 1024);
    for i in 0.. {
        run.append(&padded("s", &i.to_string(), &padding)).unwrap();
    }
}

#[test]
fn a_killed_writer_leaves_a_resumable_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    drop(new_run(&dir));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "eval::run_dir::tests::writer_child", "--ignored"])
        .env("LFEVAL_TEST_WRITER_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let samples = dir.join(SAMPLES_FILE);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fs::metadata(&samples).map(|m| m.len()).unwrap_or(0) < 24 * 1024 * 1024 {
        assert!(std::time::Instant::now() < deadline, "the writer never wrote");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let (run, state) = resume_when_free(&dir);
    assert!(state.records >= 5, "{} records", state.records);
    let next = state.records.to_string();
    assert!(!run.is_recorded("s", &next, Place::new(state.records as u64, None, None)));
    run.append(&padded("s", &next, "")).unwrap();
    let records = lines(&dir);
    assert_eq!(records.len(), state.records + 1);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.sample_id, i.to_string());
    }
}

#[test]
fn records_read_are_known_by_key_and_records_written_by_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let at = |spec: &str, id: &str, index: u64| SampleRecord::new(spec, id, index, row(json!({})));
    let run = new_run(&dir);
    run.append(&at("a", "x", 3)).unwrap();
    assert!(run.is_recorded("a", "x", Place::new(3, None, None)));
    assert!(
        !run.is_recorded("a", "x", Place::new(4, None, None)),
        "written: known by place"
    );
    assert!(matches!(
        run.append(&at("a", "y", 3)),
        Err(ResultsError::Duplicate { .. })
    ));
    drop(run);

    // Resumed after rows moved: `x` now sits at 7 and `y` at 3.
    let (run, _) = resume_when_free(&dir);
    assert!(
        run.is_recorded("a", "x", Place::new(7, None, None)),
        "read: known by key"
    );
    assert!(!run.is_recorded("a", "y", Place::new(3, None, None)));
    run.append(&at("a", "y", 3)).unwrap();
    assert!(matches!(
        run.append(&at("a", "x", 7)),
        Err(ResultsError::Duplicate { .. })
    ));
    assert!(run.has_sample("a", "x", 7) && run.has_sample("a", "y", 3) && !run.has_sample("a", "z", 5));
    assert_eq!(run.recorded_count("a"), 2);
    let samples = run.recorded_samples().unwrap();
    assert_eq!(
        samples,
        [("a".to_owned(), "x".to_owned()), ("a".to_owned(), "y".to_owned())]
    );
}
