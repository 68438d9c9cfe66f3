//! The samples of one task specification, streamed in order from where its task says they come
//! from: one dataset; several datasets aligned by row (`dataset.keys`, each sample
//! `{config key: row}`); the records of an earlier specification of the same run (`source:
//! task_result`, each row `{sample, solver_output, scores, errors}`); or, for a system task, the
//! one "sample" its evidence call stands for.

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::eval::dataset::{self, Sample};
use crate::eval::prepare::{Prepared, Samples};
use crate::eval::run_config::DatasetEntry;
use crate::eval::run_dir::RunDir;
use crate::template::TemplateEngine;

pub type SampleStream = Box<dyn Iterator<Item = anyhow::Result<Sample>> + Send>;

/// The id of a system task's single record.
pub const EVIDENCE_ID: &str = "evidence";

/// Evaluates a dataset filter expression (`{{ sample.x }}` as lf writes it, or a bare
/// expression) with the row's fields bare and as `sample.x`.
pub fn eval_filter(expr: &str, row: &Map<String, Value>) -> Result<Value, String> {
    static ENGINE: std::sync::LazyLock<TemplateEngine> = std::sync::LazyLock::new(TemplateEngine::new);
    let mut ctx = row.clone();
    ctx.insert("sample".into(), Value::Object(row.clone()));
    match ENGINE.eval_native(expr, &ctx) {
        Ok(value) => Ok(value),
        // `dataset::open` expects undefined as `null`: a field missing from some rows is what
        // `exists` / `not_exists` test for.
        Err(e) if matches!(e.kind, crate::template::TemplateErrorKind::Undefined) => Ok(Value::Null),
        Err(e) => Err(e.message),
    }
}

fn open_dataset(entry: &DatasetEntry) -> anyhow::Result<dataset::SampleIter<'static>> {
    dataset::open(&entry.spec, &entry.base_dir, &eval_filter)
        .with_context(|| format!("cannot open dataset `{}` (defined in `{}`)", entry.spec.key, entry.file))
}

pub fn open(p: &Prepared, run_dir: &RunDir) -> anyhow::Result<SampleStream> {
    open_pass(p, run_dir, Pass::First)
}

/// The samples again, after [`open`] went through them all: their ids are not checked twice.
pub fn open_again(p: &Prepared, run_dir: &RunDir) -> anyhow::Result<SampleStream> {
    open_pass(p, run_dir, Pass::Again)
}

#[derive(Clone, Copy, PartialEq)]
enum Pass {
    First,
    Again,
}

fn open_pass(p: &Prepared, run_dir: &RunDir, pass: Pass) -> anyhow::Result<SampleStream> {
    let dataset = |entry| {
        open_dataset(entry).map(|samples| match pass {
            Pass::First => samples,
            Pass::Again => samples.ids_checked(),
        })
    };
    Ok(match &p.samples {
        Samples::Dataset(entry) => {
            let key = entry.spec.key.clone();
            Box::new(dataset(entry)?.map(move |s| s.with_context(|| format!("cannot read dataset `{key}`"))))
        }
        Samples::Aligned(list) => {
            let mut streams = Vec::new();
            for (name, entry) in list {
                streams.push((name.clone(), entry.spec.key.clone(), dataset(entry)?));
            }
            Box::new(Aligned { streams, position: 0 })
        }
        Samples::TaskResult(key) => {
            let records = run_dir
                .records_in_order(key)
                .with_context(|| format!("cannot read the results of `{key}`"))?;
            Box::new(records.enumerate().map(|(index, record)| {
                let record = record.context("cannot read an earlier specification's record")?;
                let scores: Map<String, Value> = record
                    .scores
                    .iter()
                    .map(|(name, s)| (name.clone(), json!({"values": s.values, "metadata": s.metadata})))
                    .collect();
                let row = json!({
                    "sample_id": record.sample_id,
                    "sample": record.sample,
                    "solver_output": record.solver_output,
                    "scores": scores,
                    "errors": record.errors,
                });
                Ok(Sample {
                    id: record.key(),
                    index,
                    row: row.as_object().cloned().unwrap_or_default(),
                })
            }))
        }
        Samples::Evidence(_) => Box::new(std::iter::once(Ok(Sample {
            id: EVIDENCE_ID.to_owned(),
            index: 0,
            row: Map::new(),
        }))),
    })
}

/// Row i of every dataset, as one sample.
struct Aligned {
    streams: Vec<(String, String, dataset::SampleIter<'static>)>,
    position: usize,
}

impl Iterator for Aligned {
    type Item = anyhow::Result<Sample>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut row = Map::new();
        let mut id = None;
        let mut ended = Vec::new();
        for (name, key, stream) in &mut self.streams {
            match stream.next() {
                Some(Ok(sample)) => {
                    id.get_or_insert(sample.id);
                    row.insert(name.clone(), Value::Object(sample.row));
                }
                Some(Err(e)) => {
                    return Some(Err(
                        anyhow::Error::from(e).context(format!("cannot read dataset `{key}`"))
                    ));
                }
                None => ended.push(key.clone()),
            }
        }
        if ended.len() == self.streams.len() {
            return None;
        }
        if !ended.is_empty() {
            self.streams.clear();
            return Some(Err(anyhow::anyhow!(
                "the datasets of `dataset.keys` are aligned by row but have different lengths: {} ended after {} row(s)",
                ended.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
                self.position
            )));
        }
        let index = self.position;
        self.position += 1;
        Some(Ok(Sample {
            id: id.unwrap_or_else(|| index.to_string()),
            index,
            row,
        }))
    }
}
