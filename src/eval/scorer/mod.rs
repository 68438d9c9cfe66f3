//! Scorers (aigo.md §8.6): the `scorers:` entries of a task and how each turns a solved sample
//! into [`Scores`]. Deterministic scorers use [`text`]; `python` runs `compute_scores` in the
//! embedded interpreter ([`python`]); judges and labelers ask another model ([`judge`]).

pub mod judge;
pub mod python;
pub mod text;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::diagnostic::Diagnostic;
use crate::error_class::ErrorClass;
use crate::eval::metric::MetricSpec;
use crate::eval::record::{SampleError, Scores, Stage};
use crate::eval::solver::Solved;
use crate::eval::solver_def::MessageFormat;
use crate::model::io::Usage;
use crate::model::registry::Registry;
use crate::model::trace::Call;
use crate::python::LfType;
use crate::python::{PythonRuntime, Snippet};
use crate::template::ContextObject;
use crate::template::{TemplateEngine, TemplateOrigin};
use crate::yaml::{Node, SourceText, from_node};

pub use judge::Judge;
use judge::Verdict;

#[derive(Debug, Clone)]
pub struct ScorerDef {
    /// The name scores are stored under: `key`, else the type (numbered when repeated).
    pub name: String,
    pub key: Option<String>,
    pub display_name: Option<String>,
    pub kind_name: String,
    /// `qa` scorers annotate but are left out of metrics.
    pub purpose: String,
    pub metrics: Vec<MetricSpec>,
    pub kind: ScorerKind,
}

#[derive(Debug, Clone)]
pub enum ScorerKind {
    StringEquals {
        ground_truth: String,
        value: Option<String>,
    },
    Mcqa {
        ground_truth_choice: Option<String>,
        choices: Option<String>,
        ground_truth_choice_field: Option<String>,
        choices_field: Option<String>,
    },
    Python {
        snippet: SourceText,
    },
    /// `compute_scores(samples)`: one call for every sample of a dataset task.
    PythonAllSamples {
        snippet: SourceText,
    },
    /// A scorer type lf defines that lfeval does not run yet (`rag_checker`, …).
    Unsupported,
    JudgeClassifier {
        judge: Judge,
        correct_labels: Vec<String>,
        incorrect_labels: Vec<String>,
    },
    JudgeScorer {
        judge: Judge,
        score_min: f64,
        score_max: f64,
    },
    Labeler {
        judge: Judge,
        valid_labels: Vec<String>,
    },
    Bleu {
        ground_truth: String,
        value: Option<String>,
    },
}

macro_rules! scorer_wire {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code, reason = "some scorer types are only checked, not run")]
        struct $name {
            #[serde(rename = "type")]
            _kind: String,
            key: Option<String>,
            purpose: Option<String>,
            display_name: Option<String>,
            metrics: Option<Vec<MetricSpec>>,
            $($field: $ty),*
        }
    };
}

scorer_wire!(StringEqualsWire { ground_truth: String, value: Option<String> });
scorer_wire!(McqaWire { ground_truth_choice: Option<String>, choices: Option<String>, ground_truth_choice_field: Option<String>, choices_field: Option<String> });
scorer_wire!(PythonWire {
    compute_scores_snippet: SourceText
});
scorer_wire!(RagCheckerWire { query_column: Option<Value>, target_column: Option<Value>, scores_to_compute: Option<Value>, judge_model_key: Option<Value>, target_claims_column: Option<Value>, response_claims_column: Option<Value>, claim_extraction_instructions: Option<Value>, mode: Option<Value>, target_labels_column: Option<Value>, response_labels_column: Option<Value>, claim_labeling_instructions: Option<Value> });
scorer_wire!(CoverageWire { function_calls: Value, mode: Option<Value> });
scorer_wire!(ClassifierWire { model_key: String, system_prompt: Option<String>, user_prompt: String, correct_labels: Vec<String>, incorrect_labels: Vec<String>, use_structured_outputs: Option<bool> });
scorer_wire!(JudgeScorerWire { model_key: String, system_prompt: Option<String>, user_prompt: String, score_min: Option<f64>, score_max: Option<f64>, use_structured_outputs: Option<bool> });
scorer_wire!(LabelerWire { model_key: String, system_prompt: Option<String>, user_prompt: String, valid_labels: Option<Vec<String>>, use_structured_outputs: Option<bool> });
scorer_wire!(BleuWire { ground_truth: String, value: Option<String> });

/// The JSON Schema of one `scorers:` entry, one alternative per `type`.
pub fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use schemars::JsonSchema;
    crate::yaml::schema::tagged(vec![
        ("string_equals", StringEqualsWire::json_schema(generator)),
        ("string_equals_mcqa", McqaWire::json_schema(generator)),
        ("python", PythonWire::json_schema(generator)),
        ("python_all_samples", PythonWire::json_schema(generator)),
        ("rag_checker", RagCheckerWire::json_schema(generator)),
        ("function_call_coverage", CoverageWire::json_schema(generator)),
        ("model_as_a_judge_classifier", ClassifierWire::json_schema(generator)),
        ("model_as_a_judge_scorer", JudgeScorerWire::json_schema(generator)),
        ("labeler_via_model", LabelerWire::json_schema(generator)),
        ("bleu", BleuWire::json_schema(generator)),
    ])
}

pub fn from_yaml(node: &Node, path: &str) -> Result<ScorerDef, Diagnostic> {
    let kind_name = node.get("type").and_then(Node::as_str).ok_or_else(|| {
        Diagnostic::new("a scorer needs a `type`")
            .at(&node.span)
            .with_path(path.to_owned())
    })?;
    let display_name: Option<String>;
    macro_rules! common {
        ($w:expr, $kind:expr) => {{
            let w = $w;
            let common = (
                w.key.clone(),
                w.purpose.clone(),
                w.metrics.clone(),
                w.display_name.clone(),
            );
            display_name = common.3;
            (common.0, common.1, common.2, $kind(w))
        }};
    }
    let (key, purpose, metrics, kind) = match kind_name {
        "string_equals" => common!(from_node::<StringEqualsWire>(node, path)?, |w: StringEqualsWire| {
            ScorerKind::StringEquals {
                ground_truth: w.ground_truth,
                value: w.value,
            }
        }),
        "string_equals_mcqa" => common!(from_node::<McqaWire>(node, path)?, |w: McqaWire| ScorerKind::Mcqa {
            ground_truth_choice: w.ground_truth_choice,
            choices: w.choices,
            ground_truth_choice_field: w.ground_truth_choice_field,
            choices_field: w.choices_field
        }),
        "python" => common!(from_node::<PythonWire>(node, path)?, |w: PythonWire| {
            ScorerKind::Python {
                snippet: w.compute_scores_snippet,
            }
        }),
        "python_all_samples" => common!(from_node::<PythonWire>(node, path)?, |w: PythonWire| {
            ScorerKind::PythonAllSamples {
                snippet: w.compute_scores_snippet,
            }
        }),
        "rag_checker" => common!(from_node::<RagCheckerWire>(node, path)?, |_: RagCheckerWire| {
            ScorerKind::Unsupported
        }),
        "function_call_coverage" => common!(from_node::<CoverageWire>(node, path)?, |_: CoverageWire| {
            ScorerKind::Unsupported
        }),
        "model_as_a_judge_classifier" => common!(from_node::<ClassifierWire>(node, path)?, |w: ClassifierWire| {
            ScorerKind::JudgeClassifier {
                judge: Judge::new(
                    w.model_key,
                    w.system_prompt,
                    w.user_prompt,
                    w.use_structured_outputs,
                    Verdict::Prediction,
                ),
                correct_labels: w.correct_labels,
                incorrect_labels: w.incorrect_labels,
            }
        }),
        "model_as_a_judge_scorer" => common!(from_node::<JudgeScorerWire>(node, path)?, |w: JudgeScorerWire| {
            ScorerKind::JudgeScorer {
                judge: Judge::new(
                    w.model_key,
                    w.system_prompt,
                    w.user_prompt,
                    w.use_structured_outputs,
                    Verdict::Score,
                ),
                score_min: w.score_min.unwrap_or(0.0),
                score_max: w.score_max.unwrap_or(1.0),
            }
        }),
        "labeler_via_model" => common!(from_node::<LabelerWire>(node, path)?, |w: LabelerWire| {
            ScorerKind::Labeler {
                judge: Judge::new(
                    w.model_key,
                    w.system_prompt,
                    w.user_prompt,
                    w.use_structured_outputs,
                    Verdict::Label,
                ),
                valid_labels: w.valid_labels.unwrap_or_default(),
            }
        }),
        "bleu" => common!(from_node::<BleuWire>(node, path)?, |w: BleuWire| ScorerKind::Bleu {
            ground_truth: w.ground_truth,
            value: w.value
        }),
        other => {
            let supported = [
                "string_equals",
                "string_equals_mcqa",
                "python",
                "python_all_samples",
                "model_as_a_judge_classifier",
                "model_as_a_judge_scorer",
                "labeler_via_model",
                "bleu",
            ];
            let hint = supported
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Diagnostic::new(format!("unsupported scorer type `{other}`"))
                .at(node.get("type").map_or(&node.span, |n| &n.span))
                .with_path(crate::yaml::join(path, "type"))
                .with_hint(format!("supported: {hint}")));
        }
    };
    if let ScorerKind::JudgeScorer {
        score_min, score_max, ..
    } = &kind
        && score_max <= score_min
    {
        return Err(Diagnostic::new(format!(
            "`score_max` ({score_max}) must be greater than `score_min` ({score_min})"
        ))
        .at(&node.span)
        .with_path(path.to_owned()));
    }
    let purpose = purpose.unwrap_or_else(|| "score".to_owned());
    if !matches!(purpose.as_str(), "score" | "qa") {
        return Err(Diagnostic::new(format!("unknown scorer purpose `{purpose}`"))
            .at(&node.span)
            .with_hint("expected `score` or `qa`"));
    }
    Ok(ScorerDef {
        name: key.clone().unwrap_or_else(|| kind_name.to_owned()),
        key,
        display_name,
        kind_name: kind_name.to_owned(),
        purpose,
        metrics: metrics.unwrap_or_default(),
        kind,
    })
}

/// Gives scorers of the same type distinct names (`python`, `python_2`, …).
pub fn check_unique_names(scorers: &[ScorerDef]) -> Result<(), Diagnostic> {
    let mut seen = std::collections::HashSet::new();
    for s in scorers {
        if s.key.is_some() && !seen.insert(s.name.clone()) {
            return Err(Diagnostic::new(format!("two scorers have the key `{}`", s.name)));
        }
        seen.insert(s.name.clone());
    }
    Ok(())
}

pub fn dedupe_names(scorers: &mut [ScorerDef]) {
    let mut taken: std::collections::HashSet<String> = scorers.iter().filter_map(|s| s.key.clone()).collect();
    for s in scorers.iter_mut().filter(|s| s.key.is_none()) {
        let mut name = s.name.clone();
        let mut n = 1;
        while !taken.insert(name.clone()) {
            n += 1;
            name = format!("{}_{n}", s.name);
        }
        s.name = name;
    }
}

/// Loads a python scorer's `compute_scores` (once per task specification).
pub fn load_python(def: &ScorerDef, task_key: &str, python: &PythonRuntime) -> Result<Option<Snippet>, Diagnostic> {
    match &def.kind {
        ScorerKind::Python { snippet } | ScorerKind::PythonAllSamples { snippet } => {
            python::load(&def.name, snippet, task_key, python).map(Some)
        }
        _ => Ok(None),
    }
}

/// Every template string a scorer renders (compiled once per task specification).
pub fn templates(def: &ScorerDef) -> Vec<&str> {
    match &def.kind {
        ScorerKind::StringEquals { ground_truth, value } | ScorerKind::Bleu { ground_truth, value } => {
            std::iter::once(ground_truth.as_str()).chain(value.as_deref()).collect()
        }
        ScorerKind::Mcqa {
            ground_truth_choice,
            choices,
            ..
        } => ground_truth_choice
            .as_deref()
            .into_iter()
            .chain(choices.as_deref())
            .collect(),
        ScorerKind::JudgeClassifier { judge, .. }
        | ScorerKind::JudgeScorer { judge, .. }
        | ScorerKind::Labeler { judge, .. } => {
            vec![judge.system_prompt.as_str(), judge.user_prompt.as_str()]
        }
        ScorerKind::Python { .. } | ScorerKind::PythonAllSamples { .. } | ScorerKind::Unsupported => Vec::new(),
    }
}

pub struct ScoreContext<'a> {
    pub sample: &'a Map<String, Value>,
    pub solved: &'a Solved,
    pub format: MessageFormat,
    pub registry: &'a Registry,
    pub templates: &'a TemplateEngine,
    pub origin: &'a TemplateOrigin,
    pub python: Option<&'a PythonRuntime>,
    pub calls: &'a mut Vec<Call>,
    pub usage: &'a mut Usage,
    /// Set for trials and repeated runs (see [`crate::model::runtime::ModelRuntime::infer_salted`]).
    pub cache_salt: Option<&'a str>,
}

impl ScoreContext<'_> {
    /// What judge and scorer templates see: lf 3.17's `sample`, `trace` and `model_outputs`, and
    /// the docs era's `model_output` (its text, readable as the output object), `model_input`,
    /// `messages`, `input_prompt` and `solver_output`.
    fn template_context(&self) -> (Map<String, Value>, Vec<(&'static str, ContextObject)>) {
        let text = self
            .solved
            .output
            .as_ref()
            .and_then(|o| o.text.clone())
            .unwrap_or_default();
        let output = self.solved.output.as_ref().map_or(Value::Null, |o| o.value.clone());
        let input_prompt = self
            .solved
            .messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .and_then(|m| m.get("content"))
            .cloned()
            .unwrap_or(Value::Null);
        let mut ctx = Map::new();
        ctx.insert("sample".into(), Value::Object(self.sample.clone()));
        ctx.insert("messages".into(), Value::Array(self.solved.messages.clone()));
        ctx.insert("input_prompt".into(), input_prompt);
        ctx.insert("model_outputs".into(), Value::Array(self.solved.raw_outputs.clone()));
        ctx.insert(
            "solver_output".into(),
            json!({"output": output, "messages": self.solved.messages, "trace": self.solved.trace.to_json(), "raw_outputs": self.solved.raw_outputs}),
        );
        let objects = vec![
            (
                "trace",
                ContextObject::Trace(std::sync::Arc::new(self.solved.trace.clone())),
            ),
            ("model_output", ContextObject::Text { text, fields: output }),
            (
                "model_input",
                ContextObject::Text {
                    text: self.solved.model_input.to_string(),
                    fields: self.solved.model_input.clone(),
                },
            ),
        ];
        (ctx, objects)
    }

    /// What a python scorer receives as `solver_output`: lf's `SolverTrace` (3.17) or
    /// `SingleSolverOutput` (`message_format: latticeflow`), as real `latticeflow.core` objects
    /// when that package is installed.
    pub fn solver_output_value(&self) -> Value {
        let output = self.solved.output.as_ref().map_or(Value::Null, |o| o.value.clone());
        let text = self.solved.output.as_ref().and_then(|o| o.text.clone());
        match self.format {
            MessageFormat::OpenResponses => crate::python::lf_object(
                LfType::SolverTrace,
                json!({
                    "trace": self.solved.trace.to_json(),
                    "raw_outputs": self.solved.raw_outputs,
                    "direct_ios": self.direct_ios(),
                }),
                json!({"output": output, "messages": self.solved.messages, "text": text}),
            ),
            MessageFormat::Latticeflow => crate::python::lf_object(
                LfType::SingleSolverOutput,
                json!({"messages": self.solved.messages, "output": output, "direct_ios": self.direct_ios()}),
                json!({"text": text}),
            ),
        }
    }

    /// The raw requests and responses of the calls made so far (lf's `direct_ios`).
    fn direct_ios(&self) -> Vec<Value> {
        self.calls
            .iter()
            .filter(|c| c.purpose == crate::model::trace::CallPurpose::Solver)
            .filter_map(|c| {
                let response = c.trace.response.as_ref()?;
                let headers: Map<String, Value> = response.headers_map();
                Some(json!({
                    "direct_input": {"body": c.trace.request_body.clone().unwrap_or_default()},
                    "direct_output": {"body": response.body, "status_code": response.status_code, "headers": headers},
                }))
            })
            .collect()
    }

    fn render(&self, template: &str) -> Result<String, SampleError> {
        if let Some(text) = crate::template::literal(template) {
            return Ok(text.to_owned());
        }
        let (ctx, objects) = self.template_context();
        crate::template::render_cached_with(self.templates, template, self.origin, &ctx, &objects).map_err(|e| {
            SampleError::new(
                Stage::Score,
                ErrorClass::TemplateError,
                format!("cannot render scorer template: {}", e.message),
            )
            .with_location(e.location())
        })
    }

    fn output_text(&self, value: Option<&String>) -> Result<String, SampleError> {
        match value {
            Some(template) => self.render(template),
            None => Ok(self
                .solved
                .output
                .as_ref()
                .and_then(|o| o.text.clone())
                .unwrap_or_default()),
        }
    }
}

/// Scores one sample; an error names its stage and class, and the caller adds the scorer.
pub async fn score(
    def: &ScorerDef,
    snippet: Option<&Snippet>,
    cx: &mut ScoreContext<'_>,
) -> Result<Scores, SampleError> {
    let mut scores = Scores::default();
    match &def.kind {
        ScorerKind::StringEquals { ground_truth, value } => {
            let truth = cx.render(ground_truth)?;
            let value = cx.output_text(value.as_ref())?;
            let correct = text::string_equals(&value, &truth);
            scores
                .values
                .insert("is_correct".into(), json!(if correct { 1.0 } else { 0.0 }));
        }
        ScorerKind::Bleu { ground_truth, value } => {
            let truth = cx.render(ground_truth)?;
            let value = cx.output_text(value.as_ref())?;
            scores.values.insert("bleu".into(), json!(text::bleu(&value, &truth)));
        }
        ScorerKind::Mcqa {
            ground_truth_choice,
            choices,
            ground_truth_choice_field,
            choices_field,
        } => {
            let truth = match (ground_truth_choice, ground_truth_choice_field) {
                (Some(t), _) => cx.render(t)?,
                (None, Some(field)) => field_text(cx.sample, field)?,
                (None, None) => return Err(scorer_error("`string_equals_mcqa` needs `ground_truth_choice`")),
            };
            let choices = match (choices, choices_field) {
                (Some(t), _) => split_choices(&cx.render(t)?),
                (None, Some(field)) => match cx.sample.get(field) {
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect(),
                    _ => split_choices(&field_text(cx.sample, field)?),
                },
                (None, None) => return Err(scorer_error("`string_equals_mcqa` needs `choices`")),
            };
            let completion = cx.output_text(None)?;
            let result = text::string_equals_mcqa(&completion, truth.trim(), &choices);
            scores
                .values
                .insert("is_correct".into(), json!(if result.is_correct { 1.0 } else { 0.0 }));
            scores.metadata.insert(
                "completion_validity".into(),
                json!(if result.valid { "VALID" } else { "INVALID" }),
            );
        }
        ScorerKind::PythonAllSamples { .. } => {
            return Err(SampleError::new(
                Stage::Score,
                ErrorClass::Internal,
                "internal error: `python_all_samples` scores are computed for all samples at once",
            ));
        }
        ScorerKind::Unsupported => {
            return Err(scorer_error(format!(
                "scorer type `{}` is not supported by lfeval yet",
                def.kind_name
            )));
        }
        ScorerKind::Python { .. } => {
            let Some(snippet) = snippet else {
                return Err(SampleError::new(
                    Stage::Score,
                    ErrorClass::Internal,
                    "internal error: python scorer not loaded",
                ));
            };
            scores = python::score(snippet, cx).await?;
        }
        ScorerKind::JudgeClassifier {
            judge,
            correct_labels,
            incorrect_labels,
        } => scores = judge::classify(judge, correct_labels, incorrect_labels, cx).await?,
        ScorerKind::JudgeScorer {
            judge,
            score_min,
            score_max,
        } => scores = judge::rate(judge, *score_min, *score_max, cx).await?,
        ScorerKind::Labeler { judge, valid_labels } => scores = judge::label(judge, valid_labels, cx).await?,
    }
    Ok(scores)
}

fn scorer_error(message: impl Into<String>) -> SampleError {
    SampleError::new(Stage::Score, ErrorClass::ScorerError, message)
}

fn field_text(sample: &Map<String, Value>, field: &str) -> Result<String, SampleError> {
    match sample.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(scorer_error(format!("the sample has no field `{field}`"))),
    }
}

fn split_choices(text: &str) -> Vec<String> {
    let text = text.trim();
    if text.contains(',') {
        text.split(',')
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect()
    } else {
        text.chars().filter(|c| !c.is_whitespace()).map(String::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_split_by_comma_or_character() {
        assert_eq!(split_choices("A, B ,C"), vec!["A", "B", "C"]);
        assert_eq!(split_choices("ABCD"), vec!["A", "B", "C", "D"]);
    }
}
