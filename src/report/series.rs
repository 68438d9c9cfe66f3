//! The per-sample values behind every metric: [`SampleTable`] holds, for each specification of a
//! run, one small row per sample (id, first error, latency, tokens, cost, output preview) and one
//! [`MetricSeries`] per metric value shown, with each sample's contribution to it. Intervals,
//! pass/fail, comparisons and flips are all computed from here.

use serde::Serialize;

use crate::eval::metric::python_str;
use crate::eval::summary::{MetricResult, RunSummary};
use crate::report::record_view::RecordView;
use crate::report::stats::{self, Statistic};
use crate::texts::Texts;

/// Whether bigger values of a metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

impl Better {
    /// Errors, losses, distances, latencies and costs are better small; anything else big. Names
    /// are read word by word (`abs_error_mean` is an error, `answer_length` is not a WER).
    pub fn guess(names: &[&str]) -> Better {
        const SMALL: [&str; 14] = [
            "error",
            "errors",
            "loss",
            "distance",
            "latency",
            "cost",
            "perplexity",
            "wer",
            "cer",
            "mae",
            "mse",
            "rmse",
            "ms",
            "seconds",
        ];
        let lower = names.iter().any(|name| {
            name.to_ascii_lowercase()
                .split(|c: char| !c.is_ascii_alphanumeric())
                .any(|word| SMALL.contains(&word))
        });
        if lower { Better::Lower } else { Better::Higher }
    }

    /// Whether going from `a` to `b` is worse.
    pub fn worse(self, a: f64, b: f64) -> bool {
        match self {
            Better::Higher => b < a,
            Better::Lower => b > a,
        }
    }
}

/// How a metric's per-sample values relate to its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// A share of samples: a `mean` over a 0/1 field, or one category of a `frequency`.
    Proportion,
    /// A statistic of the samples' values, bootstrapped.
    Statistic(Statistic),
    /// Not a function of one value per sample (classification, weighted average, python).
    Opaque,
}

/// One metric value of one specification, as the report shows it.
#[derive(Debug, Clone)]
pub struct MetricSeries {
    pub scorer: String,
    /// The metric's key, or its type.
    pub metric: String,
    pub metric_type: String,
    /// The value's name in the metric's `values` (a frequency: the category).
    pub name: String,
    /// `scorer.value` (a frequency: `scorer.value.category`), unique within a specification.
    pub full_name: String,
    /// The score field, for single-field metrics.
    pub field: Option<String>,
    /// For a frequency: the category counted.
    pub category: Option<String>,
    pub kind: SeriesKind,
    /// The value in `summary.json` (a frequency: the category's share).
    pub value: Option<f64>,
    pub n: u64,
    /// Samples of the specification that have no value because they failed first.
    pub failures: u64,
    pub better: Better,
    /// Each sample's value, by row.
    pub values: Vec<Option<f64>>,
}

impl MetricSeries {
    fn new(metric: &MetricResult, name: String, category: Option<String>, value: Option<f64>) -> MetricSeries {
        let kind = match (metric.metric_type.as_str(), &metric.field, &category) {
            ("frequency", Some(_), Some(_)) => SeriesKind::Proportion,
            // A mean over 0/1 values becomes a proportion once the values are seen.
            ("mean", Some(_), _) => SeriesKind::Statistic(Statistic::Mean),
            ("std_dev", Some(_), _) => SeriesKind::Statistic(Statistic::StdDev),
            ("max", Some(_), _) => SeriesKind::Statistic(Statistic::Max),
            ("min", Some(_), _) => SeriesKind::Statistic(Statistic::Min),
            _ => SeriesKind::Opaque,
        };
        let full_name = match &category {
            Some(c) => format!("{}.{name}.{c}", metric.scorer_name),
            None => format!("{}.{name}", metric.scorer_name),
        };
        let mut names = vec![name.as_str()];
        if let Some(f) = &metric.field {
            names.push(f);
        }
        MetricSeries {
            scorer: metric.scorer_name.clone(),
            metric: metric.metric_key.clone().unwrap_or_else(|| metric.metric_type.clone()),
            metric_type: metric.metric_type.clone(),
            better: if category.is_some() {
                Better::Higher
            } else {
                Better::guess(&names)
            },
            name: category.clone().unwrap_or(name),
            full_name,
            field: metric.field.clone(),
            category,
            kind,
            value,
            n: metric.n,
            failures: metric.excluded,
            values: Vec::new(),
        }
    }

    /// This series' value for one record.
    fn extract(&self, record: &RecordView) -> Option<f64> {
        if self.kind == SeriesKind::Opaque {
            return None;
        }
        let value = record.scores.get(&self.scorer)?.values.get(self.field.as_deref()?)?;
        match &self.category {
            Some(category) => Some(if python_str(value) == *category { 1.0 } else { 0.0 }),
            None => match value {
                serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
                other => other.as_f64(),
            },
        }
    }

    /// The values that are present.
    pub fn present(&self) -> Vec<f64> {
        self.values.iter().flatten().copied().collect()
    }

    /// Whether every present value is 0 or 1 (and there is one).
    fn binary(&self) -> bool {
        let mut any = false;
        for v in self.values.iter().flatten() {
            if *v != 0.0 && *v != 1.0 {
                return false;
            }
            any = true;
        }
        any
    }

    /// The 95% interval and how it was computed.
    pub fn interval(&self) -> Option<([f64; 2], &'static str)> {
        match self.kind {
            SeriesKind::Proportion => {
                let present = self.present();
                let successes = present.iter().filter(|v| **v == 1.0).count() as u64;
                stats::wilson(successes, present.len() as u64).map(|ci| (ci, "wilson"))
            }
            SeriesKind::Statistic(statistic) => {
                stats::bootstrap(&self.present(), statistic).map(|ci| (ci, "bootstrap"))
            }
            SeriesKind::Opaque => None,
        }
    }

    /// The statistic a paired comparison recomputes, if any.
    pub fn statistic(&self) -> Option<Statistic> {
        match self.kind {
            SeriesKind::Proportion => Some(Statistic::Mean),
            SeriesKind::Statistic(s) => Some(s),
            SeriesKind::Opaque => None,
        }
    }
}

/// What the comparison and the report keep of each sample, by column: a 100,000-sample run
/// keeps its texts in two buffers instead of two allocations per sample.
#[derive(Debug, Clone, Default)]
pub struct SampleRows {
    ids: Texts,
    /// The output text, shortened as the report's index shows it.
    outputs: Texts,
    /// The class of each sample's first error, as a position in `classes` plus one (0: none).
    errors: Vec<u32>,
    classes: Vec<String>,
    total_ms: Vec<f64>,
}

impl SampleRows {
    fn reserve(&mut self, rows: usize) {
        self.ids.reserve(rows);
        self.outputs.reserve(rows);
        self.errors.reserve_exact(rows);
        self.total_ms.reserve_exact(rows);
    }

    fn push(&mut self, record: &RecordView, output_preview: &str) {
        self.ids.push(&record.key());
        self.outputs.push(output_preview);
        let error = match record.errors.first() {
            None => 0,
            Some(e) => match self.classes.iter().position(|c| *c == e.class) {
                Some(k) => k + 1,
                None => {
                    self.classes.push(e.class.clone());
                    self.classes.len()
                }
            },
        };
        self.errors.push(u32::try_from(error).unwrap_or(u32::MAX));
        self.total_ms.push(record.timings.total_ms);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The record's key (its sample id, with its trial and part).
    pub fn id(&self, row: usize) -> &str {
        self.ids.get(row)
    }

    pub fn output(&self, row: usize) -> &str {
        self.outputs.get(row)
    }

    /// The class of the sample's first error.
    pub fn error(&self, row: usize) -> Option<&str> {
        let k = self.errors[row] as usize;
        (k > 0).then(|| self.classes[k - 1].as_str())
    }

    pub fn total_ms(&self) -> &[f64] {
        &self.total_ms
    }
}

/// One specification's rows and metric series.
#[derive(Debug, Clone)]
pub struct SpecTable {
    pub key: String,
    pub rows: SampleRows,
    pub series: Vec<MetricSeries>,
    /// The series that decides pass/fail: the first proportion from a `mean`.
    pub pass: Option<usize>,
}

impl SpecTable {
    /// Pass (`Some(true)`), fail (`Some(false)`), or neither (errored, or no pass rule).
    pub fn pass_of(&self, row: usize) -> Option<bool> {
        if self.rows.error(row).is_some() {
            return None;
        }
        let series = &self.series[self.pass?];
        series.values[row].map(|v| v == 1.0)
    }

    /// The nearest-rank quantile of the samples' total latency.
    pub fn latency(&self, q: f64) -> Option<f64> {
        let mut totals = self.rows.total_ms().to_vec();
        totals.sort_by(f64::total_cmp);
        stats::quantile(&totals, q)
    }
}

/// Every specification of a run, in summary order.
#[derive(Debug, Clone)]
pub struct SampleTable {
    pub specs: Vec<SpecTable>,
}

impl SampleTable {
    /// The series of every metric in the summary, with no rows yet.
    pub fn new(summary: &RunSummary) -> SampleTable {
        let specs = summary
            .specifications
            .iter()
            .map(|spec| {
                let mut series = Vec::new();
                for metric in &spec.metrics {
                    for (name, value) in &metric.values {
                        match value {
                            serde_json::Value::Object(counts) if metric.metric_type == "frequency" => {
                                let total: f64 = counts.values().filter_map(serde_json::Value::as_f64).sum();
                                for (category, count) in counts {
                                    let share = count.as_f64().filter(|_| total > 0.0).map(|c| c / total);
                                    series.push(MetricSeries::new(metric, name.clone(), Some(category.clone()), share));
                                }
                            }
                            serde_json::Value::Number(n) => {
                                series.push(MetricSeries::new(metric, name.clone(), None, n.as_f64()));
                            }
                            serde_json::Value::Bool(b) => {
                                series.push(MetricSeries::new(
                                    metric,
                                    name.clone(),
                                    None,
                                    Some(f64::from(u8::from(*b))),
                                ));
                            }
                            // Confusion matrices and other maps: in summary.json only.
                            _ => {}
                        }
                    }
                }
                SpecTable {
                    key: spec.identity.key.clone(),
                    rows: SampleRows::default(),
                    series,
                    pass: None,
                }
            })
            .collect();
        SampleTable { specs }
    }

    /// Makes room for this many records per specification (in summary order), which a large
    /// run would otherwise pay for in slack as its columns double.
    pub fn reserve(&mut self, per_spec: &[usize]) {
        for (table, &rows) in self.specs.iter_mut().zip(per_spec) {
            table.rows.reserve(rows);
            for series in &mut table.series {
                series.values.reserve_exact(rows);
            }
        }
    }

    /// Adds one record to its specification (`spec` is its position in the summary).
    pub fn add(&mut self, spec: usize, record: &RecordView, output_preview: &str) {
        let table = &mut self.specs[spec];
        for series in &mut table.series {
            let value = series.extract(record);
            series.values.push(value);
        }
        table.rows.push(record, output_preview);
    }

    /// Settles what needs every row: which means are proportions, and each pass rule.
    pub fn finish(&mut self) {
        for table in &mut self.specs {
            for series in &mut table.series {
                if series.kind == SeriesKind::Statistic(Statistic::Mean) && series.binary() {
                    series.kind = SeriesKind::Proportion;
                }
            }
            table.pass = table
                .series
                .iter()
                .position(|s| s.kind == SeriesKind::Proportion && s.metric_type == "mean");
        }
    }

    pub fn spec(&self, key: &str) -> Option<&SpecTable> {
        self.specs.iter().find(|s| s.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::Better;

    #[test]
    fn errors_and_losses_are_better_small() {
        assert_eq!(Better::guess(&["abs_error_mean", "abs_error"]), Better::Lower);
        assert_eq!(Better::guess(&["val-loss"]), Better::Lower);
        assert_eq!(Better::guess(&["answer_length_mean"]), Better::Higher);
        assert_eq!(Better::guess(&["is_correct_mean"]), Better::Higher);
    }
}
