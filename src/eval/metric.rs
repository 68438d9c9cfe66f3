//! Metric aggregation: the `metrics:` entries under a scorer and the arithmetic that folds one
//! scorer's per-sample score maps into named metric values. Python metrics are only described
//! here; the embedded Python runtime computes them.
//!
//! Semantics shared by every metric:
//! - the input is the score maps of the successfully scored samples of one scorer, in sample
//!   order; an empty input is an error (the caller decides whether that is fatal);
//! - numeric fields accept JSON numbers and booleans (`true` = 1, `false` = 0); strings, even
//!   numeric-looking ones, are rejected so a scorer emitting `"1"` is noticed;
//! - label-valued fields (frequency, weighted average, classification) are compared as the text
//!   Python's `str()` would produce: strings as-is, `true`/`false` as `True`/`False`, `null` as
//!   `None`, integers in decimal and floats in Python's shortest repr (`1.0`, `1e-05`);
//! - every computed number is an `f64`; counts (confusion matrices, frequencies) are integers.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use serde_json::{Map, Number, Value};

use crate::diagnostic::describe_value;

/// Metric name → value (a number, or an object for frequencies and confusion matrices).
pub type MetricValues = Map<String, Value>;

/// One metric under a scorer's `metrics:` list.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MetricSpec {
    /// Arithmetic mean; default name `{field}_mean`.
    Mean {
        key: Option<String>,
        field: String,
        name: Option<String>,
    },
    /// Largest value; default name `{field}_max`.
    Max {
        key: Option<String>,
        field: String,
        name: Option<String>,
    },
    /// Smallest value; default name `{field}_min`.
    Min {
        key: Option<String>,
        field: String,
        name: Option<String>,
    },
    /// Population standard deviation (divides by `n`, like `numpy.std`); default name
    /// `{field}_std_dev`.
    StdDev {
        key: Option<String>,
        field: String,
        name: Option<String>,
    },
    /// Count of each distinct value: `{name: {value: count}}` with keys sorted as text; default
    /// name `{field}_frequency` (`name` is an lfeval extension).
    Frequency {
        key: Option<String>,
        field: String,
        name: Option<String>,
    },
    /// `sum(weights[label]) / count`; default name `{field}_weighted_average`.
    WeightedAverage {
        key: Option<String>,
        field: String,
        /// Label → weight; labels written as YAML numbers or booleans are keyed by their
        /// Python `str()` (`1`, `True`), matching how sample values are compared.
        #[serde(deserialize_with = "label_weights")]
        weights: BTreeMap<String, f64>,
        name: Option<String>,
    },
    /// Binary classification of `field_pred` against `field_gt`.
    #[serde(rename = "binary-classification")]
    BinaryClassification {
        key: Option<String>,
        field_gt: String,
        field_pred: String,
        #[serde(deserialize_with = "label_text")]
        positive_answer: String,
        #[serde(deserialize_with = "label_text")]
        negative_answer: String,
    },
    /// Multiclass classification of `field_pred` against `field_gt`.
    #[serde(rename = "multiclass-classification")]
    MulticlassClassification {
        key: Option<String>,
        field_gt: String,
        field_pred: String,
    },
    /// `TP / (TP + FP)` over counts summed across samples; default name `precision`.
    Precision {
        key: Option<String>,
        num_true_positives_field: String,
        num_false_positives_field: String,
        name: Option<String>,
    },
    /// `TP / (TP + FN)` over counts summed across samples; default name `recall`.
    Recall {
        key: Option<String>,
        num_true_positives_field: String,
        num_false_negatives_field: String,
        name: Option<String>,
    },
    /// Harmonic mean of the summed precision and recall; default name `f1_score`.
    F1Score {
        key: Option<String>,
        num_true_positives_field: String,
        num_false_positives_field: String,
        num_false_negatives_field: String,
        name: Option<String>,
    },
    /// `compute_metrics(scores)` in Python; see the Python runtime.
    Python {
        key: Option<String>,
        compute_metrics_snippet: String,
    },
}

/// Reads a label where the original expects a string. YAML makes `positive_answer: 1` a
/// number and `yes` a boolean; the original compares `str()` of both sides, so the label is
/// kept as that text.
fn label_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        value @ (Value::Bool(_) | Value::Number(_) | Value::String(_)) => Ok(python_str(&value)),
        other => Err(D::Error::custom(format!(
            "expected a label (string, number or boolean), found {}",
            describe_value(&other)
        ))),
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Label(String);

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        label_text(deserializer).map(Label)
    }
}

fn label_weights<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let weights = BTreeMap::<Label, f64>::deserialize(deserializer)?;
    Ok(weights.into_iter().map(|(label, w)| (label.0, w)).collect())
}

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("no scored samples")]
    NoSamples,
    #[error("sample {index} has no field `{field}`")]
    MissingField { field: String, index: usize },
    #[error("field `{field}` of sample {index} is not numeric (found {found})")]
    NotNumeric { field: String, index: usize, found: String },
    #[error("label `{label}` in field `{field}` of sample {index} has no weight; known labels: {known}")]
    UnknownLabel {
        field: String,
        index: usize,
        label: String,
        known: String,
    },
    #[error("`positive_answer` and `negative_answer` are both `{answer}`")]
    SameAnswers { answer: String },
    #[error("metric `{name}` is not a finite number; hint: the inputs overflow `f64`")]
    NotFinite { name: String },
    #[error("metric of type `python` is computed by the python runtime")]
    PythonRuntime,
}

impl MetricSpec {
    /// The `type:` spelling of this metric, as stored in `MetricData.metric_type`.
    pub fn display_type(&self) -> &'static str {
        match self {
            MetricSpec::Mean { .. } => "mean",
            MetricSpec::Max { .. } => "max",
            MetricSpec::Min { .. } => "min",
            MetricSpec::StdDev { .. } => "std_dev",
            MetricSpec::Frequency { .. } => "frequency",
            MetricSpec::WeightedAverage { .. } => "weighted_average",
            MetricSpec::BinaryClassification { .. } => "binary-classification",
            MetricSpec::MulticlassClassification { .. } => "multiclass-classification",
            MetricSpec::Precision { .. } => "precision",
            MetricSpec::Recall { .. } => "recall",
            MetricSpec::F1Score { .. } => "f1_score",
            MetricSpec::Python { .. } => "python",
        }
    }

    /// The score field a single-field metric folds (`mean`, `max`, `min`, `std_dev`,
    /// `frequency`, `weighted_average`).
    pub fn field(&self) -> Option<&str> {
        match self {
            MetricSpec::Mean { field, .. }
            | MetricSpec::Max { field, .. }
            | MetricSpec::Min { field, .. }
            | MetricSpec::StdDev { field, .. }
            | MetricSpec::Frequency { field, .. }
            | MetricSpec::WeightedAverage { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The optional `key:` (unique within a scorer; used by policies).
    pub fn key(&self) -> Option<&str> {
        match self {
            MetricSpec::Mean { key, .. }
            | MetricSpec::Max { key, .. }
            | MetricSpec::Min { key, .. }
            | MetricSpec::StdDev { key, .. }
            | MetricSpec::Frequency { key, .. }
            | MetricSpec::WeightedAverage { key, .. }
            | MetricSpec::BinaryClassification { key, .. }
            | MetricSpec::MulticlassClassification { key, .. }
            | MetricSpec::Precision { key, .. }
            | MetricSpec::Recall { key, .. }
            | MetricSpec::F1Score { key, .. }
            | MetricSpec::Python { key, .. } => key.as_deref(),
        }
    }
}

/// Computes one metric over the score maps of one scorer's successfully scored samples.
///
/// Output shapes:
/// - `mean`/`max`/`min`/`std_dev`/`weighted_average`/`precision`/`recall`/`f1_score`:
///   `{name: number}`;
/// - `frequency`: `{name: {value: count}}`, keys sorted as text;
/// - `binary-classification`: `accuracy`, `precision`, `recall`, `f1_score`,
///   `confusion_matrix: {tp, fp, tn, fn}` and `num_excluded` (rows whose ground truth or
///   prediction is neither answer; they take no part in any ratio);
/// - `multiclass-classification`: `accuracy`, `precision_<label>`, `recall_<label>`,
///   `f1_score_<label>` per label (labels = union of ground truths and predictions),
///   `macro_precision`, `macro_recall`, `macro_f1_score` (unweighted means over those labels)
///   and `confusion_matrix: {gt_label: {pred_label: count}}`.
///
/// Ratios with a zero denominator are 0.0 (scikit-learn's `zero_division=0`).
///
/// `samples` is walked more than once (a count, a mean before a deviation) instead of being
/// collected: a large run's summary holds no list of values.
pub fn compute<I>(spec: &MetricSpec, samples: I) -> Result<MetricValues, MetricError>
where
    I: IntoIterator,
    I::Item: ScoreFields,
    I::IntoIter: Clone,
{
    let samples = samples.into_iter();
    if let MetricSpec::Python { .. } = spec {
        return Err(MetricError::PythonRuntime);
    }
    let count = samples.clone().count();
    if count == 0 {
        return Err(MetricError::NoSamples);
    }
    match spec {
        MetricSpec::Mean { field, name, .. } => {
            let mean = sum(samples, field)? / count as f64;
            single(name_or(name, field, "mean"), mean)
        }
        MetricSpec::Max { field, name, .. } => {
            let max = numbers(samples, field).try_fold(f64::NEG_INFINITY, |max, v| v.map(|v| max.max(v)))?;
            single(name_or(name, field, "max"), max)
        }
        MetricSpec::Min { field, name, .. } => {
            let min = numbers(samples, field).try_fold(f64::INFINITY, |min, v| v.map(|v| min.min(v)))?;
            single(name_or(name, field, "min"), min)
        }
        MetricSpec::StdDev { field, name, .. } => {
            let mean = sum(samples.clone(), field)? / count as f64;
            let squares: f64 = numbers(samples, field)
                .map(|v| v.map(|v| (v - mean).powi(2)))
                .sum::<Result<f64, _>>()?;
            single(name_or(name, field, "std_dev"), (squares / count as f64).sqrt())
        }
        MetricSpec::Frequency { field, name, .. } => {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for (index, sample) in samples.enumerate() {
                *counts.entry(label(&sample, field, index)?).or_default() += 1;
            }
            let counts: Map<String, Value> = counts
                .into_iter()
                .map(|(label, count)| (label, Value::from(count)))
                .collect();
            let mut out = Map::new();
            out.insert(name_or(name, field, "frequency"), Value::Object(counts));
            Ok(out)
        }
        MetricSpec::WeightedAverage {
            field, weights, name, ..
        } => {
            let mut total = 0.0;
            for (index, sample) in samples.enumerate() {
                let label = label(&sample, field, index)?;
                let Some(weight) = weights.get(&label) else {
                    return Err(MetricError::UnknownLabel {
                        field: field.clone(),
                        index,
                        label,
                        known: backticked(weights.keys()),
                    });
                };
                total += weight;
            }
            single(name_or(name, field, "weighted_average"), total / count as f64)
        }
        MetricSpec::BinaryClassification {
            field_gt,
            field_pred,
            positive_answer,
            negative_answer,
            ..
        } => binary(samples, field_gt, field_pred, positive_answer, negative_answer),
        MetricSpec::MulticlassClassification {
            field_gt, field_pred, ..
        } => multiclass(samples, count, field_gt, field_pred),
        MetricSpec::Precision {
            num_true_positives_field,
            num_false_positives_field,
            name,
            ..
        } => {
            let tp = sum(samples.clone(), num_true_positives_field)?;
            let fp = sum(samples, num_false_positives_field)?;
            single(name.clone().unwrap_or_else(|| "precision".into()), ratio(tp, tp + fp))
        }
        MetricSpec::Recall {
            num_true_positives_field,
            num_false_negatives_field,
            name,
            ..
        } => {
            let tp = sum(samples.clone(), num_true_positives_field)?;
            let fn_ = sum(samples, num_false_negatives_field)?;
            single(name.clone().unwrap_or_else(|| "recall".into()), ratio(tp, tp + fn_))
        }
        MetricSpec::F1Score {
            num_true_positives_field,
            num_false_positives_field,
            num_false_negatives_field,
            name,
            ..
        } => {
            let tp = sum(samples.clone(), num_true_positives_field)?;
            let fp = sum(samples.clone(), num_false_positives_field)?;
            let fn_ = sum(samples, num_false_negatives_field)?;
            single(
                name.clone().unwrap_or_else(|| "f1_score".into()),
                f1(ratio(tp, tp + fp), ratio(tp, tp + fn_)),
            )
        }
        MetricSpec::Python { .. } => Err(MetricError::PythonRuntime),
    }
}

fn binary(
    samples: impl Iterator<Item = impl ScoreFields>,
    field_gt: &str,
    field_pred: &str,
    positive: &str,
    negative: &str,
) -> Result<MetricValues, MetricError> {
    if positive == negative {
        return Err(MetricError::SameAnswers {
            answer: positive.to_owned(),
        });
    }
    let (mut tp, mut fp, mut tn, mut fn_, mut excluded) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for (index, sample) in samples.enumerate() {
        let gt = label(&sample, field_gt, index)?;
        let pred = label(&sample, field_pred, index)?;
        let side = |text: &str| {
            if text == positive {
                Some(true)
            } else if text == negative {
                Some(false)
            } else {
                None
            }
        };
        match (side(&gt), side(&pred)) {
            (Some(true), Some(true)) => tp += 1,
            (Some(false), Some(true)) => fp += 1,
            (Some(false), Some(false)) => tn += 1,
            (Some(true), Some(false)) => fn_ += 1,
            _ => excluded += 1,
        }
    }
    let (tpf, fpf, tnf, fnf) = (tp as f64, fp as f64, tn as f64, fn_ as f64);
    let precision = ratio(tpf, tpf + fpf);
    let recall = ratio(tpf, tpf + fnf);
    let mut out = Map::new();
    out.insert(
        "accuracy".into(),
        number("accuracy", ratio(tpf + tnf, tpf + fpf + tnf + fnf))?,
    );
    out.insert("precision".into(), number("precision", precision)?);
    out.insert("recall".into(), number("recall", recall)?);
    out.insert("f1_score".into(), number("f1_score", f1(precision, recall))?);
    let mut matrix = Map::new();
    matrix.insert("tp".into(), tp.into());
    matrix.insert("fp".into(), fp.into());
    matrix.insert("tn".into(), tn.into());
    matrix.insert("fn".into(), fn_.into());
    out.insert("confusion_matrix".into(), Value::Object(matrix));
    out.insert("num_excluded".into(), excluded.into());
    Ok(out)
}

fn multiclass(
    samples: impl Iterator<Item = impl ScoreFields>,
    count: usize,
    field_gt: &str,
    field_pred: &str,
) -> Result<MetricValues, MetricError> {
    // gt label -> pred label -> count; BTreeMaps keep every output ordered by label text.
    let mut matrix: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut labels: BTreeMap<String, ()> = BTreeMap::new();
    let mut correct = 0u64;
    for (index, sample) in samples.enumerate() {
        let gt = label(&sample, field_gt, index)?;
        let pred = label(&sample, field_pred, index)?;
        if gt == pred {
            correct += 1;
        }
        labels.insert(gt.clone(), ());
        labels.insert(pred.clone(), ());
        *matrix.entry(gt).or_default().entry(pred).or_default() += 1;
    }
    let cell =
        |gt: &str, pred: &str| -> f64 { matrix.get(gt).and_then(|row| row.get(pred)).copied().unwrap_or(0) as f64 };

    let mut out = Map::new();
    out.insert("accuracy".into(), number("accuracy", correct as f64 / count as f64)?);
    let (mut sum_p, mut sum_r, mut sum_f) = (0.0, 0.0, 0.0);
    for label in labels.keys() {
        let tp = cell(label, label);
        let predicted: f64 = labels.keys().map(|gt| cell(gt, label)).sum();
        let actual: f64 = labels.keys().map(|pred| cell(label, pred)).sum();
        let (p, r) = (ratio(tp, predicted), ratio(tp, actual));
        let f = f1(p, r);
        out.insert(format!("precision_{label}"), number("precision", p)?);
        out.insert(format!("recall_{label}"), number("recall", r)?);
        out.insert(format!("f1_score_{label}"), number("f1_score", f)?);
        sum_p += p;
        sum_r += r;
        sum_f += f;
    }
    let n = labels.len() as f64;
    out.insert("macro_precision".into(), number("macro_precision", sum_p / n)?);
    out.insert("macro_recall".into(), number("macro_recall", sum_r / n)?);
    out.insert("macro_f1_score".into(), number("macro_f1_score", sum_f / n)?);
    let matrix_json: Map<String, Value> = labels
        .keys()
        .map(|gt| {
            let row: Map<String, Value> = labels
                .keys()
                .map(|pred| (pred.clone(), Value::from(cell(gt, pred) as u64)))
                .collect();
            (gt.clone(), Value::Object(row))
        })
        .collect();
    out.insert("confusion_matrix".into(), Value::Object(matrix_json));
    Ok(out)
}

fn name_or(name: &Option<String>, field: &str, suffix: &str) -> String {
    name.clone().unwrap_or_else(|| format!("{field}_{suffix}"))
}

fn single(name: String, value: f64) -> Result<MetricValues, MetricError> {
    let value = number(&name, value)?;
    let mut out = Map::new();
    out.insert(name, value);
    Ok(out)
}

fn number(name: &str, value: f64) -> Result<Value, MetricError> {
    Number::from_f64(value)
        .map(Value::Number)
        .ok_or_else(|| MetricError::NotFinite { name: name.into() })
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

fn f1(precision: f64, recall: f64) -> f64 {
    ratio(2.0 * precision * recall, precision + recall)
}

/// One sample's score values, however the caller holds them: a record's map, or the compact
/// rows a summary keeps of a large run.
pub trait ScoreFields {
    /// A field's value: borrowed, or made on the spot from a compact form (a number).
    fn get_field(&self, name: &str) -> Option<Cow<'_, Value>>;
}

impl ScoreFields for Map<String, Value> {
    fn get_field(&self, name: &str) -> Option<Cow<'_, Value>> {
        self.get(name).map(Cow::Borrowed)
    }
}

impl<T: ScoreFields + ?Sized> ScoreFields for &T {
    fn get_field(&self, name: &str) -> Option<Cow<'_, Value>> {
        (**self).get_field(name)
    }
}

fn sum(samples: impl Iterator<Item = impl ScoreFields>, field: &str) -> Result<f64, MetricError> {
    numbers(samples, field).sum()
}

fn field<'a>(sample: &'a impl ScoreFields, field: &str, index: usize) -> Result<Cow<'a, Value>, MetricError> {
    sample.get_field(field).ok_or_else(|| MetricError::MissingField {
        field: field.into(),
        index,
    })
}

/// Each sample's value of a numeric field, in order.
fn numbers(
    samples: impl Iterator<Item = impl ScoreFields>,
    name: &str,
) -> impl Iterator<Item = Result<f64, MetricError>> {
    samples
        .enumerate()
        .map(move |(index, sample)| match &*field(&sample, name, index)? {
            Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
            Value::Number(n) => n.as_f64().ok_or_else(|| MetricError::NotNumeric {
                field: name.into(),
                index,
                found: format!("`{n}`"),
            }),
            other => Err(MetricError::NotNumeric {
                field: name.into(),
                index,
                found: describe_value(other),
            }),
        })
}

fn label(sample: &impl ScoreFields, name: &str, index: usize) -> Result<String, MetricError> {
    Ok(python_str(&*field(sample, name, index)?))
}

fn backticked<'a>(labels: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<String> = labels.map(|l| format!("`{l}`")).collect();
    if list.is_empty() {
        "(none)".into()
    } else {
        list.join(", ")
    }
}

/// The text Python's `str()` gives for a JSON-decoded value, so labels written for the original
/// (`True`, `1.0`) match here too. Containers fall back to compact JSON.
pub fn python_str(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => n.as_f64().map(python_float).unwrap_or_else(|| n.to_string()),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Python's `repr(float)`: shortest round-trip digits, positional for exponents in `-4..16`,
/// otherwise `d.ddde+XX`.
fn python_float(value: f64) -> String {
    if !value.is_finite() {
        return if value.is_nan() {
            "nan".into()
        } else if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    // `{:e}` yields the shortest round-trip digits, e.g. `-1.25e-7`.
    let sci = format!("{value:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // position of the decimal point within `digits`
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_owned()
        } else {
            format!("{first}.{rest}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(values: Value) -> Vec<Map<String, Value>> {
        values
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_object().unwrap().clone())
            .collect()
    }

    fn spec(yaml_like: Value) -> MetricSpec {
        serde_json::from_value(yaml_like).unwrap()
    }

    fn num(values: &MetricValues, name: &str) -> f64 {
        values[name].as_f64().unwrap()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn mean_and_std_dev_of_bools_and_numbers() {
        let samples = rows(json!([{"x": 1}, {"x": false}, {"x": true}, {"x": 1.0}]));
        let m = compute(&spec(json!({"type": "mean", "field": "x"})), &samples).unwrap();
        // (1 + 0 + 1 + 1) / 4 = 0.75
        close(num(&m, "x_mean"), 0.75);
        let s = compute(&spec(json!({"type": "std_dev", "field": "x"})), &samples).unwrap();
        // deviations from 0.75: .25, -.75, .25, .25 → squares .0625*3 + .5625 = .75; /4 = .1875
        // sqrt(.1875) = 0.4330127018922193
        close(num(&s, "x_std_dev"), 0.1875f64.sqrt());
    }

    #[test]
    fn max_min_and_custom_name() {
        let samples = rows(json!([{"x": 3}, {"x": -2.5}, {"x": 7}]));
        let max = compute(&spec(json!({"type": "max", "field": "x", "name": "best"})), &samples).unwrap();
        // max(3, -2.5, 7) = 7
        assert_eq!(max, json!({"best": 7.0}).as_object().unwrap().clone());
        let min = compute(&spec(json!({"type": "min", "field": "x"})), &samples).unwrap();
        // min(3, -2.5, 7) = -2.5
        close(num(&min, "x_min"), -2.5);
    }

    #[test]
    fn std_dev_of_single_sample_is_zero() {
        let samples = rows(json!([{"x": 42}]));
        let s = compute(&spec(json!({"type": "std_dev", "field": "x"})), &samples).unwrap();
        // population std dev of one value: sqrt(0 / 1) = 0
        close(num(&s, "x_std_dev"), 0.0);
    }

    #[test]
    fn missing_and_non_numeric_fields_name_field_and_index() {
        let mean = spec(json!({"type": "mean", "field": "score"}));
        let err = compute(&mean, rows(json!([{"score": 1}, {"other": 1}]))).unwrap_err();
        assert_eq!(err.to_string(), "sample 1 has no field `score`");
        let err = compute(&mean, rows(json!([{"score": "1"}]))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `score` of sample 0 is not numeric (found string `\"1\"`)"
        );
        let err = compute(&mean, rows(json!([{"score": null}]))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `score` of sample 0 is not numeric (found `null`)"
        );
    }

    #[test]
    fn empty_input_and_python_metrics_are_errors() {
        let mean = spec(json!({"type": "mean", "field": "x"}));
        assert_eq!(
            compute(&mean, &[] as &[Map<String, Value>]),
            Err(MetricError::NoSamples)
        );
        assert_eq!(MetricError::NoSamples.to_string(), "no scored samples");
        let py = spec(json!({"type": "python", "compute_metrics_snippet": "def f(): pass"}));
        let err = compute(&py, rows(json!([{"x": 1}]))).unwrap_err();
        assert!(err.to_string().contains("computed by the python runtime"));
        assert_eq!(
            compute(&py, &[] as &[Map<String, Value>]),
            Err(MetricError::PythonRuntime)
        );
    }

    #[test]
    fn frequency_counts_python_style_labels() {
        let samples = rows(json!([
            {"l": "A"}, {"l": "B"}, {"l": "A"}, {"l": true}, {"l": 1.0}, {"l": 1}, {"l": null}
        ]));
        let f = compute(&spec(json!({"type": "frequency", "field": "l"})), &samples).unwrap();
        // A twice, B once, True once, 1.0 and 1 are different Python strings, None once;
        // keys sorted as text: "1" < "1.0" < "A" < "B" < "None" < "True"
        assert_eq!(
            Value::Object(f.clone()),
            json!({"l_frequency": {"1": 1, "1.0": 1, "A": 2, "B": 1, "None": 1, "True": 1}})
        );
        let keys: Vec<&String> = f["l_frequency"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["1", "1.0", "A", "B", "None", "True"]);
    }

    #[test]
    fn weighted_average_and_unknown_label() {
        let metric = spec(json!({
            "type": "weighted_average", "field": "grade",
            "weights": {"good": 1.0, "ok": 0.5, "bad": 0}
        }));
        let samples = rows(json!([{"grade": "good"}, {"grade": "ok"}, {"grade": "bad"}, {"grade": "good"}]));
        let w = compute(&metric, &samples).unwrap();
        // (1.0 + 0.5 + 0 + 1.0) / 4 = 0.625
        close(num(&w, "grade_weighted_average"), 0.625);

        let err = compute(&metric, rows(json!([{"grade": "good"}, {"grade": "meh"}]))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "label `meh` in field `grade` of sample 1 has no weight; known labels: `bad`, `good`, `ok`"
        );
    }

    #[test]
    fn weighted_average_matches_bool_labels_python_style() {
        let metric = spec(json!({
            "type": "weighted_average", "field": "ok", "weights": {"True": 2, "False": -1}
        }));
        let w = compute(&metric, rows(json!([{"ok": true}, {"ok": false}, {"ok": true}]))).unwrap();
        // (2 - 1 + 2) / 3 = 1.0
        close(num(&w, "ok_weighted_average"), 1.0);
    }

    #[test]
    fn binary_classification_counts_and_exclusions() {
        let metric = spec(json!({
            "type": "binary-classification", "field_gt": "gt", "field_pred": "pred",
            "positive_answer": "yes", "negative_answer": "no"
        }));
        let samples = rows(json!([
            {"gt": "yes", "pred": "yes"},   // tp
            {"gt": "yes", "pred": "yes"},   // tp
            {"gt": "yes", "pred": "no"},    // fn
            {"gt": "no",  "pred": "yes"},   // fp
            {"gt": "no",  "pred": "no"},    // tn
            {"gt": "no",  "pred": "no"},    // tn
            {"gt": "no",  "pred": "no"},    // tn
            {"gt": "yes", "pred": "maybe"}, // excluded: pred is neither answer
            {"gt": "Yes", "pred": "yes"}    // excluded: comparison is case-sensitive
        ]));
        let m = compute(&metric, &samples).unwrap();
        // tp=2 fp=1 tn=3 fn=1; accuracy = (2+3)/7 = 5/7
        close(num(&m, "accuracy"), 5.0 / 7.0);
        // precision = 2/(2+1) = 2/3
        close(num(&m, "precision"), 2.0 / 3.0);
        // recall = 2/(2+1) = 2/3
        close(num(&m, "recall"), 2.0 / 3.0);
        // f1 = 2*(2/3)*(2/3)/(4/3) = 2/3
        close(num(&m, "f1_score"), 2.0 / 3.0);
        assert_eq!(m["confusion_matrix"], json!({"tp": 2, "fp": 1, "tn": 3, "fn": 1}));
        assert_eq!(m["num_excluded"], json!(2));
    }

    #[test]
    fn binary_classification_stringifies_bools_and_handles_zero_denominators() {
        let metric = spec(json!({
            "type": "binary-classification", "field_gt": "gt", "field_pred": "pred",
            "positive_answer": "True", "negative_answer": "False"
        }));
        // every prediction is negative: tp=0 fp=0 tn=1 fn=1
        let m = compute(
            &metric,
            rows(json!([
                {"gt": true, "pred": false}, {"gt": false, "pred": false}
            ])),
        )
        .unwrap();
        // accuracy = 1/2; precision = 0/0 → 0; recall = 0/1 = 0; f1 = 0/0 → 0
        close(num(&m, "accuracy"), 0.5);
        close(num(&m, "precision"), 0.0);
        close(num(&m, "recall"), 0.0);
        close(num(&m, "f1_score"), 0.0);
        assert_eq!(m["confusion_matrix"], json!({"tp": 0, "fp": 0, "tn": 1, "fn": 1}));

        let same = spec(json!({
            "type": "binary-classification", "field_gt": "gt", "field_pred": "pred",
            "positive_answer": "x", "negative_answer": "x"
        }));
        assert!(matches!(
            compute(&same, rows(json!([{"gt": "x", "pred": "x"}]))),
            Err(MetricError::SameAnswers { .. })
        ));
    }

    #[test]
    fn multiclass_per_class_and_macro() {
        let metric = spec(json!({
            "type": "multiclass-classification", "field_gt": "gt", "field_pred": "pred"
        }));
        let samples = rows(json!([
            {"gt": "a", "pred": "a"},
            {"gt": "a", "pred": "b"},
            {"gt": "b", "pred": "b"},
            {"gt": "c", "pred": "b"},
            {"gt": "c", "pred": "c"}
        ]));
        let m = compute(&metric, &samples).unwrap();
        // correct: rows 0, 2, 4 → accuracy 3/5
        close(num(&m, "accuracy"), 0.6);
        // a: tp=1, predicted a=1, actual a=2 → P=1, R=0.5, F1=2*.5/1.5=2/3
        close(num(&m, "precision_a"), 1.0);
        close(num(&m, "recall_a"), 0.5);
        close(num(&m, "f1_score_a"), 2.0 / 3.0);
        // b: tp=1, predicted b=3, actual b=1 → P=1/3, R=1, F1=2*(1/3)/(4/3)=0.5
        close(num(&m, "precision_b"), 1.0 / 3.0);
        close(num(&m, "recall_b"), 1.0);
        close(num(&m, "f1_score_b"), 0.5);
        // c: tp=1, predicted c=1, actual c=2 → P=1, R=0.5, F1=2/3
        close(num(&m, "precision_c"), 1.0);
        close(num(&m, "recall_c"), 0.5);
        // macro P = (1 + 1/3 + 1)/3 = 7/9; macro R = (.5 + 1 + .5)/3 = 2/3;
        // macro F1 = (2/3 + 1/2 + 2/3)/3 = 11/18
        close(num(&m, "macro_precision"), 7.0 / 9.0);
        close(num(&m, "macro_recall"), 2.0 / 3.0);
        close(num(&m, "macro_f1_score"), 11.0 / 18.0);
        assert_eq!(
            m["confusion_matrix"],
            json!({"a": {"a": 1, "b": 1, "c": 0}, "b": {"a": 0, "b": 1, "c": 0}, "c": {"a": 0, "b": 1, "c": 1}})
        );
    }

    #[test]
    fn multiclass_label_only_predicted_gets_zero_recall() {
        let metric = spec(json!({
            "type": "multiclass-classification", "field_gt": "gt", "field_pred": "pred"
        }));
        let m = compute(&metric, rows(json!([{"gt": "a", "pred": "z"}]))).unwrap();
        // z: tp=0, predicted 1, actual 0 → P=0/1=0, R=0/0→0; a: P=0/0→0, R=0/1=0
        close(num(&m, "precision_z"), 0.0);
        close(num(&m, "recall_z"), 0.0);
        close(num(&m, "accuracy"), 0.0);
        close(num(&m, "macro_f1_score"), 0.0);
    }

    #[test]
    fn precision_recall_f1_from_summed_counts() {
        let samples = rows(json!([
            {"tp": 3, "fp": 1, "fn": 0},
            {"tp": 1, "fp": 1, "fn": 4}
        ]));
        let p = compute(
            &spec(json!({
                "type": "precision", "num_true_positives_field": "tp", "num_false_positives_field": "fp"
            })),
            &samples,
        )
        .unwrap();
        // TP=4, FP=2 → 4/6
        close(num(&p, "precision"), 4.0 / 6.0);
        let r = compute(
            &spec(json!({
                "type": "recall", "num_true_positives_field": "tp", "num_false_negatives_field": "fn",
                "name": "r"
            })),
            &samples,
        )
        .unwrap();
        // TP=4, FN=4 → 0.5
        close(num(&r, "r"), 0.5);
        let f = compute(
            &spec(json!({
                "type": "f1_score", "num_true_positives_field": "tp",
                "num_false_positives_field": "fp", "num_false_negatives_field": "fn"
            })),
            &samples,
        )
        .unwrap();
        // 2 * (2/3) * (1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
        close(num(&f, "f1_score"), 4.0 / 7.0);
    }

    #[test]
    fn non_finite_result_is_an_error() {
        let samples = rows(json!([{"x": 1.7e308}, {"x": 1.7e308}]));
        let err = compute(&spec(json!({"type": "mean", "field": "x"})), &samples).unwrap_err();
        // 1.7e308 + 1.7e308 overflows to infinity before the division
        assert_eq!(err, MetricError::NotFinite { name: "x_mean".into() });
    }

    #[test]
    fn spec_parsing_is_strict_and_reports_types_and_keys() {
        let s = spec(json!({"type": "std_dev", "field": "x", "key": "k1"}));
        assert_eq!(s.display_type(), "std_dev");
        assert_eq!(s.key(), Some("k1"));
        let s = spec(json!({
            "type": "binary-classification", "field_gt": "a", "field_pred": "b",
            "positive_answer": "1", "negative_answer": "0"
        }));
        assert_eq!(s.display_type(), "binary-classification");
        assert_eq!(s.key(), None);
        let err =
            serde_json::from_value::<MetricSpec>(json!({"type": "mean", "field": "x", "feild": "y"})).unwrap_err();
        assert!(err.to_string().contains("unknown field `feild`"), "{err}");
        let err = serde_json::from_value::<MetricSpec>(json!({"type": "median", "field": "x"})).unwrap_err();
        assert!(err.to_string().contains("unknown variant `median`"), "{err}");
        let err = serde_json::from_value::<MetricSpec>(json!({"type": "binary_classification"})).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }

    #[test]
    fn spec_parses_from_yaml() {
        let yaml = "- type: weighted_average\n  field: label\n  weights: {A: 1, B: 0.5}\n- type: multiclass-classification\n  field_gt: gt\n  field_pred: pred\n";
        let specs: Vec<MetricSpec> = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(specs.len(), 2);
        match &specs[0] {
            MetricSpec::WeightedAverage { weights, .. } => {
                assert_eq!(weights.get("B"), Some(&0.5));
                assert_eq!(weights.get("A"), Some(&1.0));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn yaml_scalar_labels_become_python_strings() {
        // Inside the internally tagged enum YAML scalars keep their types, so `1` is a number
        // and `true` a boolean; both are read as the text Python's `str()` gives.
        let yaml = "- type: binary-classification\n  field_gt: gt\n  field_pred: pred\n  positive_answer: 1\n  negative_answer: false\n- type: weighted_average\n  field: rating\n  weights: {1: 0, 2: 0.5, 3: 1, true: 9}\n";
        let specs: Vec<MetricSpec> = serde_saphyr::from_str(yaml).unwrap();
        let MetricSpec::BinaryClassification {
            positive_answer,
            negative_answer,
            ..
        } = &specs[0]
        else {
            panic!("unexpected {:?}", specs[0]);
        };
        assert_eq!((positive_answer.as_str(), negative_answer.as_str()), ("1", "False"));
        let m = compute(
            &specs[0],
            rows(json!([
                {"gt": 1, "pred": 1}, {"gt": false, "pred": 1}, {"gt": "1", "pred": "False"}
            ])),
        )
        .unwrap();
        // tp (1,1), fp (False,1), fn ("1","False") — numbers, bools and strings meet as text
        assert_eq!(m["confusion_matrix"], json!({"tp": 1, "fp": 1, "tn": 0, "fn": 1}));
        let w = compute(&specs[1], rows(json!([{"rating": 1}, {"rating": 3}, {"rating": "2"}]))).unwrap();
        // (0 + 1 + 0.5) / 3 = 0.5
        close(num(&w, "rating_weighted_average"), 0.5);
        let err = serde_saphyr::from_str::<Vec<MetricSpec>>(
            "- type: binary-classification\n  field_gt: a\n  field_pred: b\n  positive_answer: [1]\n  negative_answer: 0\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("expected a label"), "{err}");
    }

    #[test]
    fn python_float_repr() {
        // Python: str(1.0), str(0.1), str(1e16), str(1e-05), str(123456.789), str(-2.5e-7), str(1e15)
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.1), "0.1");
        assert_eq!(python_float(1e16), "1e+16");
        assert_eq!(python_float(1e-5), "1e-05");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(123456.789), "123456.789");
        assert_eq!(python_float(-2.5e-7), "-2.5e-07");
        assert_eq!(python_float(1e15), "1000000000000000.0");
        assert_eq!(python_float(1.5e300), "1.5e+300");
    }
}
