//! The AI GO!-shaped task result log (aigo.md §8.9), one per task specification:
//! `task_results/<spec>/task_result_log.json`. It is written sample by sample, in sample order,
//! so a large run never has to sit in memory.

use std::io::Write;

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::eval::evaluation::TaskSpecification;
use crate::eval::record::SampleRecord;
use crate::eval::run_dir::RunDir;
use crate::eval::summary::{SpecStatus, SpecSummary};
use crate::eval::task::TaskDef;

/// Marks where [`write`] streams the samples into the log.
const SAMPLES_SLOT: &str = "@@lfeval-samples@@";

/// What the log says about the specification besides its samples.
pub struct LogHead<'a> {
    pub spec: &'a TaskSpecification,
    pub task: &'a TaskDef,
    pub task_config: &'a Map<String, Value>,
    pub dataset: &'a str,
    pub started_at: &'a str,
}

pub fn write(run_dir: &RunDir, head: &LogHead<'_>, summary: &SpecSummary) -> anyhow::Result<()> {
    let dir = run_dir.path().join("task_results").join(&head.spec.key);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let path = dir.join("task_result_log.json");
    let tmp = dir.join("task_result_log.json.tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot write `{}`", tmp.display()))?,
    );
    let document = json!({
        "format_version": "v1",
        "app_version": format!("lfeval {}", env!("CARGO_PKG_VERSION")),
        "status": if summary.status == SpecStatus::Succeeded { "succeeded" } else { "failed" },
        "specification": {
            "display_name": head.spec.display_name,
            "task": {"key": head.task.key, "display_name": head.task.display_name, "description": head.task.description},
            "task_config": head.task_config,
            "evaluated_model": head.spec.model_key,
            "dataset": head.dataset,
            "run_config": {"num_samples": head.spec.num_samples, "subsampling": head.spec.subsampling},
        },
        "execution": {
            "started_at": head.started_at,
            "ended_at": jiff::Timestamp::now().to_string(),
            "model_usage": {
                "num_samples": summary.samples,
                "num_prompt_tokens": summary.usage.num_prompt_tokens,
                "num_completion_tokens": summary.usage.num_completion_tokens,
            },
        },
        "errors": summary.metric_errors,
        "evidence": {
            "metrics": summary.metrics,
            "failures": {"num_errors": summary.failed, "num_total": summary.samples},
            "samples": SAMPLES_SLOT,
        },
    });
    // The document is written around its sample list, which is streamed in where the slot is.
    let text = crate::redact::redact(&serde_json::to_string_pretty(&crate::redact::Masked(&document))?).into_owned();
    let slot = format!("\"{SAMPLES_SLOT}\"");
    let (before, after) = text
        .split_once(&slot)
        .context("task result log template lost its sample slot")?;
    write!(out, "{before}[")?;
    let mut first = true;
    for record in run_dir.records_in_order(&head.spec.key)? {
        let text =
            crate::redact::redact(&serde_json::to_string(&crate::redact::Masked(&evidence(&record?)))?).into_owned();
        write!(out, "{}\n      {text}", if first { "" } else { "," })?;
        first = false;
    }
    writeln!(out, "\n    ]{after}")?;
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

/// One sample's evidence in the log's shape.
fn evidence(record: &SampleRecord) -> Value {
    let direct_ios: Vec<Value> = record
        .calls
        .iter()
        .map(|c| {
            let response = c.trace.response.as_ref();
            json!({
                "model": c.model,
                "purpose": c.purpose,
                "request": {"body": c.trace.request_body},
                "response": {
                    "status_code": response.map(|r| r.status_code),
                    "headers": response.map(|r| &r.headers),
                    "body": response.map(|r| &r.body),
                },
            })
        })
        .collect();
    let mut evidence = json!({
        "sample_id": record.sample_id,
        "sample": record.sample,
        "solver": {"output": record.solver_output},
        "scores": record.scores,
        "errors": record.errors,
        "direct_ios": direct_ios,
    });
    // Which trial or postprocessed row this is, and whether an action rule left it out.
    for (name, value) in [
        ("trial", record.trial.map(Value::from)),
        ("part", record.part.map(Value::from)),
        ("excluded_by", record.excluded_by.clone().map(Value::from)),
    ] {
        if let (Some(value), Some(map)) = (value, evidence.as_object_mut()) {
            map.insert(name.to_owned(), value);
        }
    }
    evidence
}
