//! Results people look at and compare: `report.html` written by every run (self-contained, its
//! data decoded here and checked against `samples.jsonl`, secrets masked inside the compressed
//! chunks), `lfeval compare` checked against flips and exact McNemar p-values computed here from
//! the two runs' records, `runs list` / `runs show`, policies with JUnit and Markdown, model
//! pricing and `--max-cost`.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use serde_json::{Value, json};

use super::runs::{completion, echo_yaml, jsonl, read_json, request_turns, samples};
use super::server::{Request, Response, TestServer};
use super::test::Test;

/// Answers `echo: <question>` (what [`SCORER`] expects), except `wrong` for the sample
/// numbers in `wrong` and a 500 for those in `broken`.
fn grader(wrong: BTreeSet<usize>, broken: BTreeSet<usize>) -> impl Fn(&Request) -> Response + Send + Sync + 'static {
    move |req: &Request| {
        let question = request_turns(req).last().map(|(_, t)| t.clone()).unwrap_or_default();
        let n: usize = question.trim_start_matches("question ").parse().unwrap_or(usize::MAX);
        if broken.contains(&n) {
            return Response::json(500, &json!({"error": {"message": "boom"}}));
        }
        let text = if wrong.contains(&n) {
            "wrong".to_owned()
        } else {
            format!("echo: {question}")
        };
        completion(req, &text)
    }
}

const SCORER: &str = r#"
- type: string_equals
  key: exact
  ground_truth: "echo: {{ sample.question }}"
  metrics:
    - {type: mean, field: is_correct}
"#;

const ROWS: usize = 40;

fn rows() -> Vec<Value> {
    (0..ROWS)
        .map(|i| json!({"id": format!("s{i:02}"), "question": format!("question {i}")}))
        .collect()
}

/// One retry-free, priced model speaking to `server`.
fn run_yaml(server: &TestServer, extra: &str) -> String {
    let model = "retry: {max_attempts: 1}\npricing: {input_per_million: 1.5, output_per_million: 4}";
    let mut yaml = echo_yaml(server, model, "cache_policy: no-cache", SCORER);
    yaml.push_str(extra);
    yaml
}

fn set(range: impl IntoIterator<Item = usize>) -> BTreeSet<usize> {
    range.into_iter().collect()
}

/// Exact two-sided McNemar p-value, summed as plain binomial probabilities (no logs).
fn mcnemar_here(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let mut row = vec![1.0f64];
    for _ in 0..n {
        let mut next = vec![1.0; row.len() + 1];
        for k in 1..row.len() {
            next[k] = row[k - 1] + row[k];
        }
        row = next;
    }
    let tail: f64 = row[..=(b.min(c) as usize)].iter().sum::<f64>() / 2f64.powi(n as i32);
    (2.0 * tail).min(1.0)
}

/// `(sample_id → passed)` of a run's non-errored samples.
fn outcomes(run: &Path) -> std::collections::BTreeMap<String, bool> {
    samples(run)
        .into_iter()
        .filter(|r| r["errors"].as_array().is_some_and(Vec::is_empty))
        .map(|r| {
            let id = r["sample_id"].as_str().unwrap().to_owned();
            (id, r["scores"]["exact"]["values"]["is_correct"] == json!(1.0))
        })
        .collect()
}

/// The data tags of a report, decoded: `(id, JSON)`.
fn report_tags(html: &str) -> Vec<(String, Value)> {
    use base64::Engine;
    let tag = regex::Regex::new(
        r#"(?s)<script type="([^"]+)" id="(lfeval-[\w-]+)"( data-encoding="gzip-base64")?>(.*?)</script>"#,
    )
    .unwrap();
    tag.captures_iter(html)
        .map(|c| {
            let body = &c[4];
            let value = if c.get(3).is_some() {
                let packed = base64::engine::general_purpose::STANDARD.decode(body).expect("base64");
                let mut text = String::new();
                flate2::read::GzDecoder::new(&packed[..])
                    .read_to_string(&mut text)
                    .expect("gzip");
                serde_json::from_str(&text).expect("chunk JSON")
            } else {
                assert!(body.is_ascii() && !body.contains('<'), "{} is ASCII-only JSON", &c[2]);
                serde_json::from_str(body).expect("tag JSON")
            };
            (c[2].to_owned(), value)
        })
        .collect()
}

fn tag<'a>(tags: &'a [(String, Value)], id: &str) -> &'a Value {
    &tags
        .iter()
        .find(|(k, _)| k == id)
        .unwrap_or_else(|| panic!("no tag `{id}`"))
        .1
}

#[test]
fn compare_matches_flips_and_mcnemar_p_values_computed_from_the_records() {
    let a_server = TestServer::start(grader(set([1, 2, 3, 5, 8]), set([])));
    let b_server = TestServer::start(grader(set([2]).union(&set(10..=20)).copied().collect(), set([39])));
    let t = Test::new()
        .write("rows.jsonl", &jsonl(&rows()))
        .write("run.yaml", &run_yaml(&a_server, ""))
        .args(["run", "-f", "run.yaml", "-o", "a", "--no-progress"]);
    t.success();
    let t = t
        .write("run.yaml", &run_yaml(&b_server, ""))
        .args(["run", "-f", "run.yaml", "-o", "b", "--no-progress"]);
    t.failure();
    let (a_dir, b_dir) = (t.path().join("a"), t.path().join("b"));

    // What the comparison must find, from the two runs' records.
    let (a, b) = (outcomes(&a_dir), outcomes(&b_dir));
    let paired: Vec<&String> = b.keys().filter(|id| a.contains_key(*id)).collect();
    let pass_to_fail: Vec<String> = paired
        .iter()
        .filter(|id| a[**id] && !b[**id])
        .map(|s| (*s).clone())
        .collect();
    let fail_to_pass: Vec<String> = paired
        .iter()
        .filter(|id| !a[**id] && b[**id])
        .map(|s| (*s).clone())
        .collect();
    assert_eq!((pass_to_fail.len(), fail_to_pass.len()), (11, 4));
    let expected_p = mcnemar_here(11, 4);
    assert!((expected_p - 0.118_469_238_281_25).abs() < 1e-12, "{expected_p}");

    let t = t.args(["compare", "a", "b", "--json"]);
    let out = t.success();
    let c: Value = serde_json::from_str(&out.stdout).expect("compare --json is JSON");
    let spec = &c["specifications"][0];
    assert_eq!(spec["key"], "echo");
    let m = &spec["metrics"][0];
    assert_eq!(m["name"], "exact.is_correct_mean");
    let a_value =
        read_json(&a_dir.join("summary.json"))["specifications"][0]["metrics"][0]["values"]["is_correct_mean"]
            .as_f64()
            .unwrap();
    let b_value =
        read_json(&b_dir.join("summary.json"))["specifications"][0]["metrics"][0]["values"]["is_correct_mean"]
            .as_f64()
            .unwrap();
    assert_eq!(m["a"].as_f64(), Some(a_value));
    assert_eq!(m["b"].as_f64(), Some(b_value));
    assert!((m["delta"].as_f64().unwrap() - (b_value - a_value)).abs() < 1e-12);
    assert_eq!(m["flips"]["pass_to_fail"], json!(pass_to_fail));
    assert_eq!(m["flips"]["fail_to_pass"], json!(fail_to_pass));
    assert!((m["mcnemar_p"].as_f64().unwrap() - expected_p).abs() < 1e-12, "{m}");
    let ci = m["delta_ci"].as_array().expect("a paired interval");
    assert!(ci[0].as_f64().unwrap() <= ci[1].as_f64().unwrap());
    assert_eq!(spec["errors_appeared"], json!([{"id": "s39", "class": "model_error"}]));
    assert_eq!(spec["errors_vanished"], json!([]));
    // Cost: each run's summary against its records' usage at the declared prices.
    for (dir, side) in [(&a_dir, "a"), (&b_dir, "b")] {
        let expected: f64 = samples(dir)
            .iter()
            .map(|r| {
                let u = &r["usage"];
                (u["num_prompt_tokens"].as_f64().unwrap() * 1.5 + u["num_completion_tokens"].as_f64().unwrap() * 4.0)
                    / 1e6
            })
            .sum();
        let summary = read_json(&dir.join("summary.json"));
        for got in [
            &summary["totals"]["cost_usd"],
            &summary["specifications"][0]["cost_usd"],
            &spec["cost_usd"][side],
        ] {
            assert!(
                (got.as_f64().unwrap() - expected).abs() < 1e-12,
                "{side}: {got} vs {expected}"
            );
        }
    }

    // p = 0.118: a regression, but not a significant one at 0.05.
    let t = t.args(["compare", "a", "b", "--fail-on-regression"]);
    t.success();
    let t = t.args([
        "compare",
        "a",
        "b",
        "--fail-on-regression",
        "--alpha",
        "0.2",
        "--junit",
        "cmp.xml",
    ]);
    let out = t.failure();
    assert!(
        out.stderr.contains("1 metric(s) got worse with p < 0.2"),
        "{}",
        out.stderr
    );
    let junit = std::fs::read_to_string(t.path().join("cmp.xml")).unwrap();
    assert!(
        junit.contains(r#"<testcase name="echo""#) && junit.contains("<failure"),
        "{junit}"
    );
    assert!(
        junit.contains("`exact.is_correct_mean` got worse (p = 0.1185)"),
        "{junit}"
    );

    let t = t
        .args(["compare", "a", "b", "--markdown", "cmp.md"])
        .filter(r"\$0\.0\d+", "[USD]")
        .filter(r"\d+ → \d+ ms", "[MS] → [MS] ms");
    insta::assert_snapshot!("compare_terminal", t.snapshot());
    let markdown = std::fs::read_to_string(t.path().join("cmp.md")).unwrap();
    insta::assert_snapshot!("compare_markdown", t.filtered(&markdown));

    // The report of B against A shows the same flips, pass → fail first.
    let t = t.args(["report", "b", "--baseline", "a"]);
    t.success();
    let html = std::fs::read_to_string(b_dir.join("report.html")).unwrap();
    let tags = report_tags(&html);
    let flips = tag(&tags, "lfeval-comparison")["flips"].as_array().unwrap().clone();
    let directions: Vec<&str> = flips.iter().map(|f| f["direction"].as_str().unwrap()).collect();
    assert_eq!(directions.iter().filter(|d| **d == "pass_to_fail").count(), 11);
    assert!(
        directions
            .windows(2)
            .all(|w| !(w[0] == "fail_to_pass" && w[1] == "pass_to_fail"))
    );
    let flipped: BTreeSet<String> = flips.iter().map(|f| f["id"].as_str().unwrap().to_owned()).collect();
    let expected: BTreeSet<String> = pass_to_fail.iter().chain(&fail_to_pass).cloned().collect();
    assert_eq!(flipped, expected);
}

#[test]
fn every_run_writes_a_self_contained_report_of_its_records_with_secrets_masked() {
    const SECRET: &str = "sk-report-canary-8c1d2e";
    let server = TestServer::start(|req: &Request| {
        let question = request_turns(req).last().map(|(_, t)| t.clone()).unwrap_or_default();
        // Echoes the credential, so it reaches the records unless lfeval masks it.
        completion(
            req,
            &format!("echo: {question} <b>{}</b>", req.header("authorization").unwrap_or("")),
        )
    });
    let yaml = echo_yaml(&server, "", "cache_policy: no-cache", SCORER).replace(
        "        key: \"latticeflow$openai_chat_completion\"\n",
        "        key: \"latticeflow$openai_chat_completion\"\n      api_key: \"<< secrets.CANARY >>\"\n",
    );
    let t = Test::new()
        .write("rows.jsonl", &jsonl(&rows()[..5]))
        .write("run.yaml", &yaml)
        .write(".test-home/secrets.json", &json!({"CANARY": SECRET}).to_string())
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let out = t.success();
    let dir = t.path().join("out");
    assert!(out.stdout.contains("report: out/report.html"), "{}", out.stdout);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    // Nothing outside the file: no linked scripts or styles, no `url()` or imports but `data:`.
    let outside =
        regex::Regex::new(r#"(?i)<script[^>]*\ssrc=|<link[^>]*\shref=|url\(\s*['"]?(https?:|//|file:)|@import"#)
            .unwrap();
    assert!(
        !outside.is_match(&html),
        "the report refers outside itself: {:?}",
        outside.find(&html)
    );
    let tags = report_tags(&html);
    let ids: Vec<&str> = tags.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(ids, ["lfeval-meta", "lfeval-index", "lfeval-chunk-0"]);
    let meta = tag(&tags, "lfeval-meta");
    assert_eq!(meta["format"], "lfeval-report");
    assert_eq!(meta["chunks"], json!({"size": 256, "count": 1}));
    let spec = &meta["specs"][0];
    assert_eq!(
        (&spec["key"], &spec["samples"], &spec["errored"]),
        (&json!("echo"), &json!(5), &json!(0))
    );
    let metric = &spec["metrics"][0];
    assert_eq!(
        (&metric["scorer"], &metric["name"], &metric["n"]),
        (&json!("exact"), &json!("is_correct_mean"), &json!(5))
    );
    // The server's echo never matches the ground truth: 0 of 5, Wilson [0, 0.4345].
    assert_eq!(metric["value"], json!(0.0));
    assert_eq!(metric["ci_method"], "wilson");
    assert!((metric["ci"][1].as_f64().unwrap() - 0.434_482).abs() < 1e-5, "{metric}");
    assert!(
        meta["provenance"]["config_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(
        meta["provenance"]["command_line"],
        json!(["lfeval", "run", "-f", "run.yaml", "-o", "out", "--no-progress"])
    );
    let index = tag(&tags, "lfeval-index");
    assert_eq!(index["n"], 5);
    assert_eq!(index["id"], json!(["s00", "s01", "s02", "s03", "s04"]));
    assert_eq!(index["input"][3], "question 3");
    assert_eq!(index["pass"], json!([0, 0, 0, 0, 0]));
    // The chunk holds the records exactly as samples.jsonl has them.
    let records = samples(&dir);
    // (Both read back through lfeval's record type, which spells out what a line stores by
    // reference.)
    let chunk: Vec<Value> = tag(&tags, "lfeval-chunk-0")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| super::test::record_of_line(&r.to_string()))
        .collect();
    let by_id = |list: &[Value]| -> Vec<Value> {
        let mut l = list.to_vec();
        l.sort_by_key(|r| r["sample_index"].as_u64());
        l
    };
    assert_eq!(by_id(&chunk), by_id(&records));
    let text = serde_json::to_string(&chunk).unwrap();
    assert!(
        text.contains("<<secrets.CANARY>>"),
        "the echoed key reached the report, masked"
    );
    for (_, value) in &tags {
        assert!(!value.to_string().contains(SECRET));
    }
    assert!(!html.contains(SECRET));
}

#[test]
fn policies_gate_a_run_and_write_junit_and_markdown() {
    let server = TestServer::start(grader(set([1, 2]), set([])));
    let policies = r#"policies:
  - key: quality
    display_name: "Quality gates"
    rules:
      - key: accuracy
        display_name: "Accuracy at least 90%"
        definition: {type: threshold, metric: is_correct_mean, operator: ">=", threshold: 0.9}
        scope: all_latest
      - key: strict-accuracy
        display_name: "Accuracy above 95%"
        definition: {type: threshold, metric: exact.is_correct_mean, operator: ">", threshold: 0.95}
        scope: {task_specification_keys: [echo]}
      - key: judged
        display_name: "A judge ran"
        definition: {type: exists, metric: judge.is_correct_mean}
        scope: all_latest
"#;
    let t = Test::new()
        .write("rows.jsonl", &jsonl(&rows()[..20]))
        .write("run.yaml", &run_yaml(&server, policies))
        .args([
            "run",
            "-f",
            "run.yaml",
            "-o",
            "out",
            "--no-progress",
            "--junit",
            "ci/junit.xml",
            "--markdown",
            "ci/summary.md",
        ]);
    let out = t.failure();
    assert!(out.stdout.contains("policies: 1 of 3 rule(s) passed"), "{}", out.stdout);
    assert!(
        out.stdout.contains("failed `quality/strict-accuracy`"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("failed `quality/judged`"), "{}", out.stdout);

    // JUnit, read as XML: one case per specification and per rule, failures where rules failed.
    let xml = std::fs::read_to_string(t.path().join("ci/junit.xml")).unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut cases, mut failures, mut current) = (Vec::new(), Vec::new(), String::new());
    let mut suites = 0;
    loop {
        match reader.read_event().expect("well-formed XML") {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                let attr = |name: &str| {
                    e.try_get_attribute(name).unwrap().map(|a| {
                        a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .unwrap()
                            .into_owned()
                    })
                };
                match e.name().as_ref() {
                    b"testsuite" => {
                        suites += 1;
                        assert_eq!(attr("tests").as_deref(), Some("4"));
                        assert_eq!(attr("failures").as_deref(), Some("2"));
                    }
                    b"testcase" => {
                        current = attr("name").unwrap();
                        cases.push((attr("classname").unwrap(), current.clone()));
                    }
                    b"failure" => failures.push((current.clone(), attr("message").unwrap())),
                    _ => {}
                }
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(suites, 1);
    let names: Vec<&str> = cases.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names,
        ["echo", "quality/accuracy", "quality/strict-accuracy", "quality/judged"]
    );
    assert!(cases[0].0.ends_with(".specification") && cases[1].0.ends_with(".policy"));
    let failed: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(failed, ["quality/strict-accuracy", "quality/judged"]);
    assert!(failures[0].1.contains("exact.is_correct_mean > 0.95"), "{failures:?}");

    let markdown = std::fs::read_to_string(t.path().join("ci/summary.md")).unwrap();
    insta::assert_snapshot!("run_markdown", t.filtered(&markdown));

    // `compare` checks the current run's policies too.
    let t = t.args(["compare", "out", "out", "--json"]);
    let out = t.failure();
    let c: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(c["policies"].as_array().unwrap().len(), 3);
    assert!(
        out.stderr.contains("policy rule `quality/judged` failed"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_pricing_and_policies_are_configuration_errors() {
    let server = TestServer::start(grader(set([]), set([])));
    let yaml = echo_yaml(
        &server,
        "pricing: {input_per_million: -1, output_per_million: 2}",
        "",
        SCORER,
    );
    let t = Test::new()
        .write("rows.jsonl", &jsonl(&rows()[..2]))
        .write("run.yaml", &yaml)
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    let out = t.config_error();
    assert!(out.stderr.contains("invalid `pricing`"), "{}", out.stderr);
    assert!(out.stderr.contains("run.yaml:"), "{}", out.stderr);
    let bad = "policies:\n  - key: p\n    display_name: P\n    rules:\n      - key: r\n        display_name: R\n        definition: {type: threshold, metric: m, operator: \"=>\", threshold: 1}\n        scope: all_latest\n";
    let t = t.write("run.yaml", &format!("{}{bad}", echo_yaml(&server, "", "", SCORER)));
    let out = t.config_error();
    assert!(out.stderr.contains("run.yaml:"), "{}", out.stderr);
    assert!(out.stderr.contains("=>"), "{}", out.stderr);
}

#[test]
fn max_cost_stops_starting_samples_once_the_budget_would_be_passed() {
    let server = TestServer::start(grader(set([]), set([])));
    // About a cent per sample: a handful fit under 5 cents.
    let model = "max_concurrent_requests: 1\npricing: {input_per_million: 5000, output_per_million: 5000}";
    let t = Test::new()
        .write("rows.jsonl", &jsonl(&rows()))
        .write("run.yaml", &echo_yaml(&server, model, "cache_policy: no-cache", SCORER))
        .args([
            "run",
            "-f",
            "run.yaml",
            "-o",
            "out",
            "--no-progress",
            "--max-cost",
            "0.05",
        ]);
    let out = t.failure();
    assert!(
        out.stderr.contains("stopped starting samples: `--max-cost 0.05`"),
        "{}",
        out.stderr
    );
    let records = samples(&t.path().join("out"));
    let costs: Vec<f64> = records
        .iter()
        .map(|r| r["cost_usd"].as_f64().expect("a priced sample has a cost"))
        .collect();
    let spent: f64 = costs.iter().sum();
    let most = costs.iter().copied().fold(0.0, f64::max);
    assert!(
        records.len() > 1 && records.len() < ROWS,
        "{} samples ran",
        records.len()
    );
    // Samples stop before the estimate passes the limit; at most one in flight overshoots.
    assert!(spent <= 0.05 + most, "spent {spent}");
    let summary = read_json(&t.path().join("out/summary.json"));
    assert!((summary["totals"]["cost_usd"].as_f64().unwrap() - spent).abs() < 1e-12);
}

#[test]
fn runs_list_and_show_read_the_run_directories() {
    let server = TestServer::start(grader(set([3]), set([])));
    let t = Test::new()
        .write("rows.jsonl", &jsonl(&rows()[..10]))
        .write("run.yaml", &run_yaml(&server, ""))
        .args(["run", "-f", "run.yaml", "-o", "runs/first", "--no-progress"]);
    t.success();
    let t = t.args(["run", "-f", "run.yaml", "-o", "runs/second", "--no-progress"]);
    t.success();
    // A run that never finished: its config, no summary.
    std::fs::create_dir_all(t.path().join("runs/third")).unwrap();
    std::fs::copy(
        t.path().join("runs/first/run_config.json"),
        t.path().join("runs/third/run_config.json"),
    )
    .unwrap();
    let t = t
        .args(["runs", "list"])
        .filter(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", "[STARTED]")
        .filter(r"\$0\.\d{6}", "[USD]");
    let listed = t.snapshot();
    insta::assert_snapshot!("runs_list", listed);
    let t = t.args(["runs", "list", "--json"]);
    let out = t.success();
    let list: Value = serde_json::from_str(&out.stdout).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    // Newest first; the unfinished run started when `first` did, whose config it has.
    assert_eq!(names, ["second", "third", "first"]);
    assert_eq!(list[0]["status"], "succeeded");
    assert_eq!(
        list[0]["metrics"][0],
        json!({"spec": "echo", "name": "exact.is_correct_mean", "value": 0.9})
    );
    assert_eq!(list[1]["status"], "incomplete");

    let t = t.args(["runs", "show", "sec"]);
    let out = t.success();
    assert!(out.stdout.contains("evaluation:  echo"), "{}", out.stdout);
    assert!(out.stdout.contains("exact.is_correct_mean  0.9000"), "{}", out.stdout);
    assert!(out.stdout.contains("report: runs/second/report.html"), "{}", out.stdout);
    let t = t.args(["runs", "show", "nothing-like-it"]);
    let out = t.config_error();
    assert!(out.stderr.contains("no run `nothing-like-it`"), "{}", out.stderr);
}

#[test]
fn report_regenerates_and_opens_with_browser() {
    let server = TestServer::start(grader(set([]), set([])));
    let t = Test::new()
        .write("rows.jsonl", &jsonl(&rows()[..3]))
        .write("run.yaml", &run_yaml(&server, ""))
        .write("browser.sh", "#!/bin/sh\necho \"$1\" > opened.txt\n")
        .args(["run", "-f", "run.yaml", "-o", "out", "--no-progress"]);
    t.success();
    let browser = t.path().join("browser.sh");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::remove_file(t.path().join("out/report.html")).unwrap();
    let t = t
        .env("BROWSER", browser.to_str().unwrap())
        .args(["report", "out", "--open"]);
    let out = t.success();
    assert!(out.stdout.starts_with("report: "), "{}", out.stdout);
    assert!(t.path().join("out/report.html").exists());
    let opened = std::fs::read_to_string(t.path().join("opened.txt")).unwrap();
    assert_eq!(opened.trim(), "out/report.html");
    let t = t.args(["report", "nowhere"]);
    let out = t.config_error();
    assert!(out.stderr.contains("is not a run directory"), "{}", out.stderr);
}
