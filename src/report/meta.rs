//! The report's `lfeval-meta` (report-data.md §3): the headline, provenance, totals and, per
//! task specification, its counts, cost, latency and every metric with n, failures and a 95%
//! interval.

use serde::Serialize;

use crate::eval::summary::{SpecStatus, SpecSummary};
use crate::model::io::Usage;
use crate::redact::redact;
use crate::report::finished_run::FinishedRun;
use crate::report::index::PREVIEW_CHARS;
use crate::report::series::{Better, SampleTable, SpecTable};

#[derive(Debug, Serialize)]
pub struct Meta {
    pub format: &'static str,
    pub version: u32,
    pub title: String,
    pub generated_at: String,
    pub provenance: Provenance,
    pub totals: MetaTotals,
    pub specs: Vec<SpecMeta>,
    pub preview_chars: usize,
    pub chunks: Chunks,
}

#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub lfeval_version: String,
    pub evaluation: String,
    pub run_dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_line: Option<Vec<String>>,
    /// The command lines of resumes, when there were any (shown as text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_with: Option<String>,
    pub started_at: String,
    pub ended_at: String,
    pub wall_time_s: f64,
    pub sessions: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_file: Option<String>,
    pub datasets: Vec<DatasetMeta>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetMeta {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MetaTotals {
    pub samples: u64,
    pub errored: u64,
    pub passed: u64,
    pub cost_usd: Option<f64>,
    pub cost_complete: bool,
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub struct SpecMeta {
    pub key: String,
    pub display_name: String,
    pub task: String,
    pub model: Option<String>,
    pub dataset: String,
    pub status: &'static str,
    pub samples: u64,
    pub errored: u64,
    pub passed: Option<u64>,
    pub failed: Option<u64>,
    pub cost_usd: Option<f64>,
    pub usage: Usage,
    pub latency_ms: LatencyMeta,
    pub metrics: Vec<MetricMeta>,
    pub metric_errors: Vec<MetricErrorMeta>,
}

#[derive(Debug, Serialize)]
pub struct LatencyMeta {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricMeta {
    pub scorer: String,
    pub metric: String,
    pub name: String,
    pub value: Option<f64>,
    pub n: u64,
    pub failures: u64,
    pub ci: Option<[f64; 2]>,
    pub ci_method: Option<&'static str>,
    pub better: Better,
}

#[derive(Debug, Serialize)]
pub struct MetricErrorMeta {
    pub scorer: String,
    pub metric: String,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct Chunks {
    pub size: usize,
    pub count: usize,
}

pub fn provenance(run: &FinishedRun) -> Provenance {
    let s = &run.summary;
    let resumes: Vec<String> = run.command_lines.iter().skip(1).map(|argv| argv.join(" ")).collect();
    Provenance {
        lfeval_version: run.head.lfeval_version.clone(),
        evaluation: s.evaluation.clone(),
        run_dir: run.dir.display().to_string(),
        config_fingerprint: run.config_fingerprint.clone(),
        command_line: run.command_lines.first().cloned(),
        resumed_with: (!resumes.is_empty()).then(|| resumes.join("; ")),
        started_at: s.started_at.clone(),
        ended_at: s.ended_at.clone(),
        wall_time_s: s.wall_time_s,
        sessions: s.sessions,
        run_file: run.head.run_file.clone(),
        datasets: s
            .datasets
            .iter()
            .map(|d| DatasetMeta {
                key: d.key.clone(),
                path: d.path.clone(),
                sha256: d.sha256.clone(),
            })
            .collect(),
    }
}

/// Each metric of a specification with its interval.
pub fn metrics(table: &SpecTable) -> Vec<MetricMeta> {
    table
        .series
        .iter()
        .map(|series| {
            let interval = series.interval();
            MetricMeta {
                scorer: series.scorer.clone(),
                metric: series.metric.clone(),
                name: series.name.clone(),
                value: series.value,
                n: series.n,
                failures: series.failures,
                ci: interval.map(|(ci, _)| ci),
                ci_method: interval.map(|(_, m)| m),
                better: series.better,
            }
        })
        .collect()
}

fn spec_meta(spec: &SpecSummary, table: &SpecTable) -> SpecMeta {
    let judged: Vec<bool> = (0..table.rows.len()).filter_map(|r| table.pass_of(r)).collect();
    let (passed, failed) = if table.pass.is_some() {
        let passed = judged.iter().filter(|p| **p).count() as u64;
        (Some(passed), Some(judged.len() as u64 - passed))
    } else {
        (None, None)
    };
    SpecMeta {
        key: spec.identity.key.clone(),
        display_name: spec.identity.display_name.clone(),
        task: spec.identity.task.clone(),
        model: spec.identity.model.clone(),
        dataset: spec.identity.dataset.clone(),
        status: match spec.status {
            SpecStatus::Succeeded => "completed",
            SpecStatus::Failed => "failed",
            SpecStatus::NotStarted => "not_started",
        },
        samples: spec.samples,
        errored: spec.failed,
        passed,
        failed,
        cost_usd: spec.cost_usd,
        usage: spec.usage,
        latency_ms: LatencyMeta {
            p50: table.latency(0.5),
            p95: table.latency(0.95),
        },
        metrics: metrics(table),
        metric_errors: spec
            .metric_errors
            .iter()
            .map(|e| MetricErrorMeta {
                scorer: e.scorer.clone(),
                metric: e.metric_type.clone(),
                message: redact(&e.message).into_owned(),
            })
            .collect(),
    }
}

pub fn build(run: &FinishedRun, table: &SampleTable, chunk_size: usize, samples: usize) -> Meta {
    let s = &run.summary;
    let specs: Vec<SpecMeta> = s
        .specifications
        .iter()
        .zip(&table.specs)
        .map(|(spec, t)| spec_meta(spec, t))
        .collect();
    let ran: Vec<&SpecSummary> = s.specifications.iter().filter(|x| x.samples > 0).collect();
    Meta {
        format: "lfeval-report",
        version: 1,
        title: s.evaluation.clone(),
        generated_at: jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        provenance: provenance(run),
        totals: MetaTotals {
            samples: s.totals.samples,
            errored: s.totals.failed,
            passed: specs.iter().filter_map(|x| x.passed).sum(),
            cost_usd: s.totals.cost_usd,
            cost_complete: s.totals.cost_usd.is_none() || ran.iter().all(|x| x.cost_usd.is_some()),
            usage: s.totals.usage,
        },
        specs,
        preview_chars: PREVIEW_CHARS,
        chunks: Chunks {
            size: chunk_size,
            count: samples.div_ceil(chunk_size),
        },
    }
}
