#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
//! Writing `report.html` and comparing two runs at scale: two synthetic finished runs of
//! `LFEVAL_BENCH_SAMPLES` samples (default 100,000; two task specifications, a 0/1 score and a
//! continuous one, about 3% errored, a judge call on half of them) are written as `lfeval run`
//! would leave them; then the report of the second, alone and against the first, and the
//! comparison `lfeval compare` computes, are timed, and `runs list` over 300 runs. Peak memory is the process's high-water mark.
//! The reports are kept (path printed) for the browser harness:
//! `tests/browser/run.sh target/bench-report/b/report.html`.
//!
//! Run with `cargo bench --bench report`.

use std::error::Error;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

fn rss_peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A small deterministic generator, so both runs differ the same way every time.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn call(model: &str, purpose: &str, prompt: &str, answer: &str, ms: f64) -> Value {
    let body = json!({"messages": [{"role": "user", "content": prompt}]}).to_string();
    let output = json!({"choices": [{"message": {"role": "assistant", "content": answer}}],
                        "usage": {"num_prompt_tokens": 12, "num_completion_tokens": 3}});
    json!({
        "model": model, "purpose": purpose, "request_body": body,
        "response": {"status_code": 200, "headers": [["content-type", "application/json"]], "body": output.to_string()},
        "rendered_output": output.to_string(), "output": output,
        "attempts": [{"error": null, "retryable": false, "elapsed_ms": ms}],
        "timings": {"permit_wait_ms": 0.4, "limiter_wait_ms": 1.2, "render_input_ms": 0.2, "inference_ms": ms,
                    "render_output_ms": 0.1, "backoff_ms": 0.0, "total_ms": ms + 1.9}
    })
}

fn write_run(dir: &Path, samples: usize, accuracy: f64, seed: u64) -> Result<(), Box<dyn Error>> {
    std::fs::create_dir_all(dir)?;
    let mut rng = Lcg(seed);
    let mut out = BufWriter::new(std::fs::File::create(dir.join("samples.jsonl"))?);
    let specs = ["arith", "qa"];
    let mut sums = [(0u64, 0.0f64, 0.0f64, 0u64); 2];
    for i in 0..samples {
        let s = i % 2;
        let spec = specs[s];
        let index = i / 2;
        let question = format!(
            "What is {} + {}? Answer with the number only, and explain nothing at all.",
            index % 997,
            index % 991
        );
        let errored = rng.next() < 0.03;
        let correct = rng.next() < accuracy;
        let score = (rng.next() * 100.0).round() / 100.0;
        let answer = if correct {
            "right answer".to_owned()
        } else {
            format!("wrong {}", index % 13)
        };
        let ms = 200.0 + rng.next() * 800.0;
        let mut calls = vec![call("target", "solver", &question, &answer, ms)];
        if s == 1 {
            calls.push(call(
                "judge",
                "judge",
                &format!("Grade: {answer}"),
                "{\"prediction\": \"CORRECT\"}",
                ms / 3.0,
            ));
        }
        let (scores, errors) = if errored {
            (
                json!({}),
                json!([{"stage": "run_inference", "class": "timeout", "model": "target", "message": "model call timed out after 15 s"}]),
            )
        } else {
            sums[s].0 += 1;
            sums[s].1 += if correct { 1.0 } else { 0.0 };
            sums[s].2 += score;
            (
                json!({"exact": {"values": {"is_correct": if correct { 1.0 } else { 0.0 }}},
                    "quality": {"values": {"score": score}, "metadata": {"reasoning": "the answer is checked against the reference"}}}),
                json!([]),
            )
        };
        sums[s].3 += 1;
        let record = json!({
            "spec": spec, "sample_id": format!("{spec}-{index:06}"), "sample_index": index,
            "sample": {"id": format!("{spec}-{index:06}"), "question": question, "answer": "right answer"},
            "model_input": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]},
            "solver_output": if errored { Value::Null } else { json!({"output": {"choices": [{"message": {"role": "assistant", "content": answer}}]}, "text": answer, "messages": []}) },
            "scores": scores, "errors": errors,
            "usage": {"num_prompt_tokens": 12 * calls.len(), "num_completion_tokens": 3 * calls.len()},
            "calls": calls, "attempts": 1, "retries": 0, "cached": false,
            "timings": {"solver_ms": ms + 2.0, "score_ms": 0.5, "total_ms": ms + 2.5},
            "cost_usd": 0.000_002_4
        });
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let spec_summary = |s: usize| {
        let (n, correct, score, total) = sums[s];
        json!({
            "key": specs[s], "display_name": specs[s], "task": specs[s], "model": "target", "dataset": specs[s],
            "status": "failed", "samples": total, "failed": total - n,
            "errors_by_stage": {}, "errors_by_class": {}, "failures": [], "metric_errors": [],
            "usage": {"num_prompt_tokens": 0, "num_completion_tokens": 0}, "cost_usd": 0.0000024 * total as f64,
            "metrics": [
                {"scorer_name": "exact", "scorer_key": "exact", "scorer_purpose": "score", "metric_key": null, "metric_type": "mean",
                 "field": "is_correct", "values": {"is_correct_mean": correct / n as f64}, "n": n, "excluded": total - n},
                {"scorer_name": "quality", "scorer_key": "quality", "scorer_purpose": "score", "metric_key": null, "metric_type": "mean",
                 "field": "score", "values": {"score_mean": score / n as f64}, "n": n, "excluded": total - n}
            ]
        })
    };
    let summary = json!({
        "evaluation": "bench", "run_dir": dir, "started_at": "2026-12-01T10:00:00Z", "ended_at": "2026-12-01T11:00:00Z",
        "wall_time_s": 3600.0, "sessions": 1, "specifications": [spec_summary(0), spec_summary(1)],
        "totals": {"samples": samples, "failed": 0, "metric_errors": 0, "usage": {"num_prompt_tokens": 0, "num_completion_tokens": 0}},
        "models": [{"key": "target", "connection_type": "custom_connection"}, {"key": "judge", "connection_type": "custom_inference"}]
    });
    std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    let head = json!({"format_version": 1, "lfeval_version": "bench", "started_at": "2026-12-01T10:00:00Z",
                      "project_dir": "/", "run_file": null, "run_config": {}});
    std::fs::write(dir.join("run_config.json"), head.to_string())?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let samples: usize = std::env::var("LFEVAL_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-report");
    let _ = std::fs::remove_dir_all(&root);
    let (a, b) = (root.join("a"), root.join("b"));
    write_run(&a, samples, 0.80, 1)?;
    write_run(&b, samples, 0.78, 2)?;
    let jsonl_mb = std::fs::metadata(b.join("samples.jsonl"))?.len() as f64 / 1e6;
    println!(
        "{samples} samples per run, samples.jsonl {jsonl_mb:.1} MB; generated, peak RSS {:.0} MB",
        rss_peak_mb()
    );

    let t = Instant::now();
    let written = lfeval::report::write(&b, None, 0.05)?;
    let alone = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&written.path)?.len() as f64 / 1e6;
    println!(
        "report.html            {alone:6.2} s  {size:5.1} MB  peak RSS {:.0} MB",
        rss_peak_mb()
    );
    drop(written);

    let t = Instant::now();
    let written = lfeval::report::write(&b, Some(&a), 0.05)?;
    let with_baseline = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&written.path)?.len() as f64 / 1e6;
    println!(
        "report.html --baseline {with_baseline:6.2} s  {size:5.1} MB  peak RSS {:.0} MB",
        rss_peak_mb()
    );
    drop(written);

    let t = Instant::now();
    let (la, lb) = (lfeval::report::load(&a)?, lfeval::report::load(&b)?);
    let c = lfeval::report::comparison::compare(&la.run, &la.table, &lb.run, &lb.table, 0.05, Vec::new());
    let json = serde_json::to_string(&c)?;
    println!(
        "compare (load both)    {:6.2} s  {:5.1} MB JSON  peak RSS {:.0} MB",
        t.elapsed().as_secs_f64(),
        json.len() as f64 / 1e6,
        rss_peak_mb()
    );
    // `runs list` over 300 finished runs (each summary as the runs above left it).
    let project = root.join("project");
    for i in 0..300 {
        let dir = project.join("runs").join(format!("run-{i:03}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(b.join("summary.json"), dir.join("summary.json"))?;
        std::fs::copy(b.join("run_config.json"), dir.join("run_config.json"))?;
    }
    let t = Instant::now();
    let (entries, _) = lfeval::report::runs::list(&project);
    println!(
        "runs list, {} runs      {:6.3} s",
        entries.len(),
        t.elapsed().as_secs_f64()
    );
    println!("reports: {}", b.join("report.html").display());
    Ok(())
}
