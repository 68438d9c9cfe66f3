//! What a run adds up to: a [`Fold`] folds one task specification's [`SampleRecord`]s into a
//! [`SpecSummary`] (counts, metrics with their `n`, failures grouped by cause), and
//! [`RunSummary`] is `summary.json`. Records may arrive in any order (they are written as samples
//! finish); metrics are computed in sample order, so two runs of the same evaluation give
//! bit-identical numbers. Only the score values are kept while folding, never whole records.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::diagnostic::closest;
use crate::error_class::ErrorClass;
use crate::eval::metric::{self, MetricError, MetricSpec, MetricValues, ScoreFields};
use crate::eval::record::{EVIDENCE_SCORER, SampleError, SampleRecord, Scores, Stage};
use crate::eval::score_table::{Entry, ScoreTable};
use crate::eval::scorer::ScorerDef;
use crate::eval::task::ScoreAggregator;
use crate::model::io::Usage;
use crate::model::pricing::Pricing;
use crate::model::trace::{TimingSummary, TimingTotals};

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub evaluation: String,
    pub run_dir: PathBuf,
    /// When the run first started (a resumed run keeps its first start).
    pub started_at: String,
    pub ended_at: String,
    /// Wall time across every session of the run (interruptions excluded).
    pub wall_time_s: f64,
    /// How many times the run was started (1 + resumes).
    #[serde(default = "one")]
    pub sessions: u32,
    pub specifications: Vec<SpecSummary>,
    pub totals: Totals,
    /// The models the run called, with what the report and costs need to know of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelSummary>,
    /// The datasets the run read, with their content hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DatasetSummary>,
}

/// A model the run called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub key: String,
    /// `custom_inference` (time in Python) or `custom_connection` (time on the network).
    pub connection_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

impl ModelSummary {
    /// Every model of a run's registry, by key.
    pub fn of_registry(registry: &crate::model::registry::Registry) -> Vec<ModelSummary> {
        let mut models: Vec<ModelSummary> = registry
            .runtimes()
            .map(|r| ModelSummary {
                key: r.model.key.clone(),
                connection_type: r.model.connection.type_name().to_owned(),
                pricing: r.model.pricing,
            })
            .collect();
        models.sort_by(|a, b| a.key.cmp(&b.key));
        models
    }
}

/// A dataset the run read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    pub key: String,
    /// The data file or folder, project-relative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// SHA-256 of the content (a folder: names and contents), from the run's fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub samples: u64,
    pub failed: u64,
    pub metric_errors: u64,
    pub usage: Usage,
    /// USD over every priced specification; absent when no model has a price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl Totals {
    pub fn add(&mut self, spec: &SpecSummary) {
        self.samples += spec.samples;
        self.failed += spec.failed;
        self.metric_errors += spec.metric_errors.len() as u64;
        self.usage += spec.usage;
        if let Some(cost) = spec.cost_usd {
            *self.cost_usd.get_or_insert(0.0) += cost;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecStatus {
    /// Every sample ran and every metric was computed.
    Succeeded,
    /// Some sample or metric failed.
    Failed,
    /// Never reached (the run stopped early).
    NotStarted,
}

/// The identity of a task specification, as summaries and logs show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecIdentity {
    pub key: String,
    pub display_name: String,
    pub task: String,
    pub model: Option<String>,
    pub dataset: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecSummary {
    #[serde(flatten)]
    pub identity: SpecIdentity,
    pub status: SpecStatus,
    pub samples: u64,
    pub failed: u64,
    pub errors_by_stage: BTreeMap<Stage, u64>,
    pub errors_by_class: BTreeMap<ErrorClass, u64>,
    /// Failures grouped by cause, most frequent first.
    pub failures: Vec<FailureGroup>,
    pub metrics: Vec<MetricResult>,
    pub metric_errors: Vec<MetricFailure>,
    pub usage: Usage,
    /// USD spent by the samples' calls to priced models; absent when none is priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Where the specification's model calls spent their time, as means per call.
    #[serde(default)]
    pub timings: TimingSummary,
}

impl SpecSummary {
    /// A specification the run never reached.
    pub fn not_started(identity: SpecIdentity) -> SpecSummary {
        SpecSummary {
            identity,
            status: SpecStatus::NotStarted,
            samples: 0,
            failed: 0,
            errors_by_stage: BTreeMap::new(),
            errors_by_class: BTreeMap::new(),
            failures: Vec::new(),
            metrics: Vec::new(),
            metric_errors: Vec::new(),
            usage: Usage::default(),
            cost_usd: None,
            timings: TimingSummary::default(),
        }
    }
}

/// One computed metric of one scorer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    pub scorer_name: String,
    pub scorer_key: Option<String>,
    pub scorer_purpose: String,
    pub metric_key: Option<String>,
    pub metric_type: String,
    /// The score field the metric folds, for metrics over one field (`mean`, `frequency`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub values: Map<String, Value>,
    /// Samples the metric was computed over.
    pub n: u64,
    /// Samples left out because they failed before this scorer scored them.
    pub excluded: u64,
}

/// A metric that could not be computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricFailure {
    pub scorer: String,
    pub metric_type: String,
    pub message: String,
}

/// Samples that failed for the same reason: same stage, class, scorer or model, and place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureGroup {
    pub stage: Stage,
    pub class: ErrorClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The message of the first sample (in sample order) that failed this way.
    pub message: String,
    pub count: u64,
    /// The first sample that failed this way.
    pub first_sample: String,
}

/// Computes a Python metric: `(scorer name, index of the metric, every scored sample's scores in
/// sample order)` → metric values.
pub type PythonMetric<'a> = dyn FnMut(&str, usize, Vec<Value>) -> Result<Map<String, Value>, String> + 'a;

/// A score as a number: booleans are 0/1, as lf's aggregators read pass/fail scores.
fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        other => other.as_f64(),
    }
}

/// One row per sample of every aggregated score of a scorer: `scores` are its trials' scores in
/// sample order, each with its sample's index.
fn aggregate<'a>(
    scores: impl Iterator<Item = (u64, Entry<'a>)>,
    aggregators: &[ScoreAggregator],
) -> Vec<Map<String, Value>> {
    let mut rows = Vec::new();
    let mut scores = scores.peekable();
    let mut group = Vec::new();
    while let Some((sample, first)) = scores.next() {
        group.clear();
        group.push(first);
        while let Some((_, entry)) = scores.next_if(|(next, _)| *next == sample) {
            group.push(entry);
        }
        let mut row = Map::new();
        for a in aggregators {
            let values: Vec<f64> = group
                .iter()
                .filter_map(|s| s.get_field(&a.score_name).and_then(|v| numeric(&v)))
                .collect();
            if let Some(v) = a.aggregate(&values)
                && let Some(n) = serde_json::Number::from_f64(v)
            {
                row.insert(a.output_name(), Value::Number(n));
            }
        }
        rows.push(row);
    }
    rows
}

/// A scorer's scores for one metric: a trial's, as the fold kept them, or a sample's trials
/// aggregated.
#[derive(Clone, Copy)]
enum Kept<'a> {
    Trial(Entry<'a>),
    Aggregated(&'a Map<String, Value>),
}

impl<'a> Kept<'a> {
    fn field_names(self) -> Vec<&'a str> {
        match self {
            Kept::Trial(entry) => entry.field_names().collect(),
            Kept::Aggregated(values) => values.keys().map(String::as_str).collect(),
        }
    }

    /// The scores as a Python metric receives them.
    fn to_json(self) -> Value {
        let scores = match self {
            Kept::Trial(entry) => entry.scores(),
            Kept::Aggregated(values) => Scores {
                values: values.clone(),
                metadata: Map::new(),
            },
        };
        serde_json::to_value(scores).unwrap_or(Value::Null)
    }
}

impl ScoreFields for Kept<'_> {
    fn get_field(&self, name: &str) -> Option<Cow<'_, Value>> {
        match self {
            Kept::Trial(entry) => entry.get_field(name),
            Kept::Aggregated(values) => values.get(name).map(Cow::Borrowed),
        }
    }
}

/// The sample index of each of a fold's rows: four bytes each while they fit, as they do for
/// any dataset that fits on a disk.
enum SampleIndexes {
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
}

impl SampleIndexes {
    fn push(&mut self, index: u64) {
        match self {
            SampleIndexes::Narrow(narrow) => match u32::try_from(index) {
                Ok(index) => narrow.push(index),
                Err(_) => {
                    let mut wide = Vec::with_capacity(narrow.capacity().max(narrow.len() + 1));
                    wide.extend(narrow.iter().map(|&i| u64::from(i)));
                    wide.push(index);
                    *self = SampleIndexes::Wide(wide);
                }
            },
            SampleIndexes::Wide(wide) => wide.push(index),
        }
    }

    fn get(&self, row: usize) -> u64 {
        match self {
            SampleIndexes::Narrow(narrow) => u64::from(narrow[row]),
            SampleIndexes::Wide(wide) => wide[row],
        }
    }

    fn len(&self) -> usize {
        match self {
            SampleIndexes::Narrow(narrow) => narrow.len(),
            SampleIndexes::Wide(wide) => wide.len(),
        }
    }

    fn capacity(&self) -> usize {
        match self {
            SampleIndexes::Narrow(narrow) => narrow.capacity(),
            SampleIndexes::Wide(wide) => wide.capacity(),
        }
    }

    fn reserve_exact(&mut self, more: usize) {
        match self {
            SampleIndexes::Narrow(narrow) => narrow.reserve_exact(more),
            SampleIndexes::Wide(wide) => wide.reserve_exact(more),
        }
    }
}

/// A specification's summary as its records stream past (see
/// [`crate::eval::run::write_outputs`], which feeds the task log in the same pass). With
/// trials, each aggregator folds a sample's trial values of its score into one value per sample
/// (`pass^3`, …); a metric over an aggregated score is computed over samples, any other metric
/// over every trial. Records an action rule excludes count as samples but stay out of the
/// metrics; a system task's evidence is its metrics.
pub struct Fold {
    samples: u64,
    failed: u64,
    usage: Usage,
    cost_usd: Option<f64>,
    /// The sample index of each scored record, in the order they were added; put into sample
    /// order (with the trials) before metrics are computed. An index names its sample within
    /// a specification (a dataset's row, an earlier specification's record), so the ids are not
    /// kept: they would be ~10 bytes a record.
    rows: SampleIndexes,
    /// Each scored record's `(trial, part)`, `(0, 0)` for none: empty until a record has one,
    /// which most runs never do.
    trials: Vec<(u32, u32)>,
    /// Each scored record's scores, by row.
    scores: ScoreTable,
    /// `(sample index, sample id, error)`.
    errors: Vec<(u64, String, SampleError)>,
    /// Records an action rule left out of the metrics.
    excluded: u64,
    timings: TimingTotals,
    /// Only Python metrics read scores' metadata (a judge's reasoning): without one it is
    /// dropped as records go past.
    keep_metadata: bool,
}

impl Fold {
    /// A fold for a specification with these scorers.
    pub fn new(scorers: &[ScorerDef]) -> Fold {
        Fold {
            samples: 0,
            failed: 0,
            usage: Usage::default(),
            cost_usd: None,
            rows: SampleIndexes::Narrow(Vec::new()),
            trials: Vec::new(),
            scores: ScoreTable::default(),
            errors: Vec::new(),
            excluded: 0,
            timings: TimingTotals::default(),
            keep_metadata: scorers
                .iter()
                .any(|d| d.metrics.iter().any(|m| matches!(m, MetricSpec::Python { .. }))),
        }
    }

    /// Makes room for `records` more records.
    pub fn reserve(&mut self, records: usize) {
        self.rows.reserve_exact(records);
        self.scores.reserve(records);
    }

    pub fn add(&mut self, record: SampleRecord) {
        self.samples += 1;
        if record.failed() {
            self.failed += 1;
        }
        self.usage += record.usage;
        if let Some(cost) = record.cost_usd {
            *self.cost_usd.get_or_insert(0.0) += cost;
        }
        for call in &record.calls {
            self.timings.add(&call.trace.timings);
        }
        for error in record.errors {
            self.errors.push((record.sample_index, record.sample_id.clone(), error));
        }
        if record.excluded_by.is_some() {
            self.excluded += 1;
            return;
        }
        let trial = (record.trial.unwrap_or(0), record.part.unwrap_or(0));
        if trial != (0, 0) && self.trials.is_empty() {
            self.trials.reserve_exact(self.rows.capacity());
            self.trials.resize(self.rows.len(), (0, 0));
        }
        if !self.trials.is_empty() {
            self.trials.push(trial);
        }
        self.rows.push(record.sample_index);
        self.scores.push(record.scores, self.keep_metadata);
    }

    /// The scored rows in sample order: by index, trial and part.
    fn rows_in_order(&self) -> Vec<u32> {
        // A `u32` each: this list and an entry per row are held while the metrics are computed.
        let mut order: Vec<u32> = (0..self.rows.len() as u32).collect();
        let trial = |row: usize| self.trials.get(row).copied().unwrap_or_default();
        order.sort_by_key(|&row| (self.rows.get(row as usize), trial(row as usize)));
        order
    }

    pub fn finish(
        mut self,
        identity: SpecIdentity,
        scorers: &[ScorerDef],
        aggregators: &[ScoreAggregator],
        python_metric: &mut PythonMetric<'_>,
    ) -> SpecSummary {
        let order = self.rows_in_order();
        if aggregators.is_empty() {
            // Only trials are grouped by sample: without them, the rows' identities are done
            // with, and their memory goes to the entries the metrics need next.
            self.rows = SampleIndexes::Narrow(Vec::new());
            self.trials = Vec::new();
        }
        self.errors.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut errors_by_stage = BTreeMap::new();
        let mut errors_by_class = BTreeMap::new();
        for (_, _, e) in &self.errors {
            *errors_by_stage.entry(e.stage).or_insert(0) += 1;
            *errors_by_class.entry(e.class).or_insert(0) += 1;
        }
        let failures = group_failures(&self.errors);
        let mut metrics = Vec::new();
        let mut metric_errors = Vec::new();
        if scorers.is_empty() {
            // A system task: its evidence values are its metrics.
            for &row in &order {
                if let Some(evidence) = self.scores.get(EVIDENCE_SCORER, row as usize) {
                    metrics.push(MetricResult {
                        scorer_name: EVIDENCE_SCORER.to_owned(),
                        scorer_key: None,
                        scorer_purpose: "score".to_owned(),
                        metric_key: None,
                        metric_type: "system_task".to_owned(),
                        field: None,
                        values: evidence.values(),
                        n: 1,
                        excluded: 0,
                    });
                }
            }
        }
        for def in scorers.iter().filter(|d| d.purpose != "qa") {
            // The scorer's scores in sample order: `(row, entry)`.
            let in_order = || {
                order
                    .iter()
                    .filter_map(|&row| Some((row as usize, self.scores.get(&def.name, row as usize)?)))
            };
            let aggregated = if aggregators.is_empty() {
                Vec::new()
            } else {
                let keyed = in_order().map(|(row, entry)| (self.rows.get(row), entry));
                aggregate(keyed, aggregators)
            };
            let aggregated_names: BTreeSet<String> = aggregators.iter().map(ScoreAggregator::output_name).collect();
            for (i, spec) in def.metrics.iter().enumerate() {
                let over_samples = spec.field().is_some_and(|f| aggregated_names.contains(f));
                let (computed, count) = if over_samples {
                    evaluate(
                        spec,
                        &def.name,
                        i,
                        aggregated.iter().map(Kept::Aggregated),
                        python_metric,
                    )
                } else {
                    let by_trial = in_order().map(|(_, entry)| Kept::Trial(entry));
                    evaluate(spec, &def.name, i, by_trial, python_metric)
                };
                match computed {
                    Ok(values) => metrics.push(MetricResult {
                        scorer_name: def.name.clone(),
                        scorer_key: def.key.clone(),
                        scorer_purpose: def.purpose.clone(),
                        metric_key: spec.key().map(str::to_owned),
                        metric_type: spec.display_type().to_owned(),
                        field: spec.field().map(str::to_owned),
                        values,
                        n: count as u64,
                        excluded: if over_samples {
                            0
                        } else {
                            self.samples.saturating_sub(count as u64)
                        },
                    }),
                    Err(message) => metric_errors.push(MetricFailure {
                        scorer: def.name.clone(),
                        metric_type: spec.display_type().to_owned(),
                        message,
                    }),
                }
            }
        }
        let status = if self.failed == 0 && metric_errors.is_empty() {
            SpecStatus::Succeeded
        } else {
            SpecStatus::Failed
        };
        SpecSummary {
            identity,
            status,
            samples: self.samples,
            failed: self.failed,
            errors_by_stage,
            errors_by_class,
            failures,
            metrics,
            metric_errors,
            usage: self.usage,
            cost_usd: self.cost_usd,
            timings: self.timings.summary(),
        }
    }
}

/// A metric error in the user's terms: a field no sample has is named with the fields that do
/// exist (a typo in `field:` is the usual cause).
/// One metric over a scorer's scores, with how many there were. The scores are walked where they
/// are, never listed: a list would be a word or two a sample.
fn evaluate<'a>(
    spec: &MetricSpec,
    scorer: &str,
    index: usize,
    scores: impl Iterator<Item = Kept<'a>> + Clone,
    python_metric: &mut PythonMetric<'_>,
) -> (Result<MetricValues, String>, usize) {
    let count = scores.clone().count();
    let computed = match spec {
        MetricSpec::Python { .. } => python_metric(scorer, index, scores.map(Kept::to_json).collect()),
        other => metric::compute(other, scores.clone()).map_err(|e| explain(&e, scores)),
    };
    (computed, count)
}

fn explain<'a>(error: &MetricError, values: impl Iterator<Item = Kept<'a>> + Clone) -> String {
    let MetricError::MissingField { field, .. } = error else {
        return error.to_string();
    };
    if values.clone().any(|v| v.get_field(field).is_some()) {
        return error.to_string();
    }
    let known: BTreeSet<&str> = values.flat_map(|v| v.field_names()).collect();
    let mut message = format!("field `{field}` is in no sample's scores");
    match closest(field, known.iter().copied()) {
        Some(near) => message.push_str(&format!("; hint: did you mean `{near}`?")),
        None if !known.is_empty() => {
            let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            message.push_str(&format!("; hint: the scorer produces {}", list.join(", ")));
        }
        None => {}
    }
    message
}

/// Groups errors by stage, class, scorer, model and location (or, without a location, the
/// message), keeping the first message of each group; most frequent first.
fn group_failures(errors: &[(u64, String, SampleError)]) -> Vec<FailureGroup> {
    type Key<'a> = (
        Stage,
        ErrorClass,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let mut groups: Vec<FailureGroup> = Vec::new();
    let mut index: BTreeMap<Key<'_>, usize> = BTreeMap::new();
    for (_, id, e) in errors {
        let message_key = e.location.is_none().then_some(e.message.as_str());
        let key = (
            e.stage,
            e.class,
            e.scorer.as_deref(),
            e.model.as_deref(),
            e.location.as_deref(),
            message_key,
        );
        match index.get(&key) {
            Some(&i) => groups[i].count += 1,
            None => {
                index.insert(key, groups.len());
                groups.push(FailureGroup {
                    stage: e.stage,
                    class: e.class,
                    scorer: e.scorer.clone(),
                    model: e.model.clone(),
                    location: e.location.clone(),
                    message: e.message.clone(),
                    count: 1,
                    first_sample: id.clone(),
                });
            }
        }
    }
    // Stable: equally frequent groups keep the order of their first sample.
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_kept_score_is_two_words() {
        // One per scored record while the metrics are computed.
        assert_eq!(size_of::<Kept<'_>>(), 16);
    }

    fn scorer(yaml_metrics: Value) -> ScorerDef {
        ScorerDef {
            name: "exact".into(),
            key: None,
            display_name: None,
            kind_name: "string_equals".into(),
            purpose: "score".into(),
            metrics: serde_json::from_value(yaml_metrics).unwrap(),
            kind: crate::eval::scorer::ScorerKind::StringEquals {
                ground_truth: "x".into(),
                value: None,
            },
        }
    }

    fn identity() -> SpecIdentity {
        SpecIdentity {
            key: "s".into(),
            display_name: "s".into(),
            task: "t".into(),
            model: Some("m".into()),
            dataset: "d".into(),
        }
    }

    fn record(index: u64, value: Option<f64>) -> SampleRecord {
        let mut r = SampleRecord::new("s", index.to_string(), index, Map::new());
        match value {
            Some(v) => {
                r.scores.insert(
                    "exact".into(),
                    Scores {
                        values: json!({ "is_correct": v }).as_object().cloned().unwrap(),
                        metadata: Map::new(),
                    },
                );
            }
            None => r.errors.push(SampleError {
                location: Some("snippets/score.py:3".into()),
                scorer: Some("exact".into()),
                ..SampleError::new(
                    Stage::Score,
                    ErrorClass::SnippetError,
                    format!("ValueError: sample {index}"),
                )
            }),
        }
        r.usage.num_prompt_tokens = 10;
        r
    }

    /// The fold over `records` of the specification `identity` names (others are skipped).
    fn summarize(
        identity: SpecIdentity,
        scorers: &[ScorerDef],
        records: impl IntoIterator<Item = SampleRecord>,
        python_metric: &mut PythonMetric<'_>,
    ) -> SpecSummary {
        let mut fold = Fold::new(scorers);
        for record in records.into_iter().filter(|r| r.spec == identity.key) {
            fold.add(record);
        }
        fold.finish(identity, scorers, &[], python_metric)
    }

    fn no_python(_: &str, _: usize, _: Vec<Value>) -> Result<Map<String, Value>, String> {
        Err("no python here".into())
    }

    #[test]
    fn metrics_count_n_and_excluded_and_failures_group_by_place() {
        let scorers = [scorer(json!([{"type": "mean", "field": "is_correct"}]))];
        let records = vec![
            record(2, Some(1.0)),
            record(0, None),
            record(1, Some(0.0)),
            record(3, None),
        ];
        let summary = summarize(identity(), &scorers, records, &mut no_python);
        assert_eq!((summary.samples, summary.failed), (4, 2));
        assert_eq!(summary.status, SpecStatus::Failed);
        assert_eq!(summary.usage.num_prompt_tokens, 40);
        let metric = &summary.metrics[0];
        assert_eq!(metric.values["is_correct_mean"], json!(0.5));
        assert_eq!((metric.n, metric.excluded), (2, 2));
        assert_eq!(summary.errors_by_stage[&Stage::Score], 2);
        // Two messages, one place: one group, reported with the first sample's message.
        assert_eq!(summary.failures.len(), 1);
        let group = &summary.failures[0];
        assert_eq!((group.count, group.first_sample.as_str()), (2, "0"));
        assert_eq!(group.message, "ValueError: sample 0");
    }

    #[test]
    fn metrics_do_not_depend_on_completion_order() {
        // Sums of these values depend on the order they are added in.
        let values = [0.1, 0.7, 1e16, -1e16, 0.3, 0.2, 0.6];
        let scorers = [scorer(
            json!([{"type": "mean", "field": "is_correct"}, {"type": "std_dev", "field": "is_correct"}]),
        )];
        let in_order: Vec<SampleRecord> = values
            .iter()
            .enumerate()
            .map(|(i, v)| record(i as u64, Some(*v)))
            .collect();
        let mut reversed = in_order.clone();
        reversed.reverse();
        let mut shuffled = in_order.clone();
        shuffled.swap(0, 4);
        shuffled.swap(2, 6);
        let a = summarize(identity(), &scorers, in_order, &mut no_python);
        for other in [reversed, shuffled] {
            let b = summarize(identity(), &scorers, other, &mut no_python);
            assert_eq!(
                serde_json::to_string(&a.metrics).unwrap(),
                serde_json::to_string(&b.metrics).unwrap()
            );
        }
    }

    #[test]
    fn a_metric_over_a_field_no_scorer_produced_suggests_the_near_one() {
        let scorers = [scorer(json!([{"type": "mean", "field": "is_corect"}]))];
        let summary = summarize(identity(), &scorers, vec![record(0, Some(1.0))], &mut no_python);
        assert!(summary.metrics.is_empty());
        let message = &summary.metric_errors[0].message;
        assert!(
            message.contains("field `is_corect` is in no sample's scores"),
            "{message}"
        );
        assert!(message.contains("did you mean `is_correct`?"), "{message}");
    }

    #[test]
    fn python_metrics_get_every_scored_sample_in_order() {
        let scorers = [scorer(
            json!([{"type": "python", "compute_metrics_snippet": "def compute_metrics(s): ..."}]),
        )];
        let mut seen = Vec::new();
        let mut metric = |name: &str, index: usize, scores: Vec<Value>| {
            seen.push((name.to_owned(), index, scores));
            Ok(json!({"custom": 1}).as_object().cloned().unwrap())
        };
        let summary = summarize(
            identity(),
            &scorers,
            vec![record(1, Some(0.0)), record(0, Some(1.0))],
            &mut metric,
        );
        assert_eq!(summary.metrics[0].values["custom"], json!(1));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].2[0]["values"]["is_correct"], json!(1.0));
        assert_eq!(seen[0].2[1]["values"]["is_correct"], json!(0.0));
    }

    #[test]
    fn sample_indexes_past_four_bytes_keep_their_order() {
        let scorers = [scorer(
            json!([{"type": "python", "compute_metrics_snippet": "def compute_metrics(s): ..."}]),
        )];
        let mut seen = Vec::new();
        let mut metric = |_: &str, _: usize, scores: Vec<Value>| {
            seen = scores;
            Ok(Map::new())
        };
        let big = u64::from(u32::MAX);
        let records = vec![
            record(big + 2, Some(0.0)),
            record(7, Some(1.0)),
            record(big + 1, Some(0.5)),
        ];
        summarize(identity(), &scorers, records, &mut metric);
        let values: Vec<&Value> = seen.iter().map(|s| &s["values"]["is_correct"]).collect();
        assert_eq!(values, [&json!(1.0), &json!(0.5), &json!(0.0)]);
    }

    #[test]
    fn trials_are_aggregated_per_sample_whatever_order_they_finish_in() {
        let scorers = [scorer(json!([
            {"type": "mean", "field": "is_correct_min"},
            {"type": "mean", "field": "is_correct"}
        ]))];
        let min = ScoreAggregator {
            score_name: "is_correct".into(),
            aggregator: serde_json::from_value(json!({"function": "min"})).unwrap(),
        };
        // Sample 0 passes all three trials, sample 1 two of three; trials finish shuffled.
        let values = [
            (1, 2, 0.0),
            (0, 1, 1.0),
            (1, 1, 1.0),
            (0, 3, 1.0),
            (1, 3, 1.0),
            (0, 2, 1.0),
        ];
        let mut fold = Fold::new(&scorers);
        for (index, trial, value) in values {
            let mut r = record(index, Some(value));
            r.trial = Some(trial);
            fold.add(r);
        }
        let summary = fold.finish(identity(), &scorers, &[min], &mut no_python);
        let over_samples = &summary.metrics[0];
        assert_eq!(over_samples.values["is_correct_min_mean"], json!(0.5));
        assert_eq!(over_samples.n, 2, "one aggregated value per sample");
        let over_trials = &summary.metrics[1];
        assert_eq!((over_trials.n, over_trials.excluded), (6, 0));
        assert_eq!(over_trials.values["is_correct_mean"], json!(5.0 / 6.0));
    }

    #[test]
    fn records_of_other_specifications_are_skipped() {
        let scorers = [scorer(json!([]))];
        let mut other = record(0, Some(1.0));
        other.spec = "other".into();
        let summary = summarize(identity(), &scorers, vec![other, record(1, Some(1.0))], &mut no_python);
        assert_eq!(summary.samples, 1);
        assert_eq!(summary.status, SpecStatus::Succeeded);
    }
}
