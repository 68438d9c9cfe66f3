//! Scorers (aigo.md §8.6): per-sample scores from the solver's output. Deterministic scorers
//! use [`crate::eval::scorer::text`]; `python` runs `compute_scores` in the embedded interpreter; judge
//! scorers call another model through the shared [`Registry`], so they obey its limits.

pub mod text;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::diagnostic::Diagnostic;
use crate::eval::metric::MetricSpec;
use crate::eval::solver::Solved;
use crate::model::io::Usage;
use crate::model::registry::Registry;
use crate::model::trace::Call;
use crate::python::{PythonRuntime, ReturnKind, Snippet, SnippetSpec};
use crate::template::{TemplateEngine, TemplateOrigin};
use crate::yaml::{Node, SourceText, from_node};

const JUDGE_SYSTEM: &str = "You are a helpful assistant and will be used to judge the output of another model.";
const LABELER_SYSTEM: &str =
    "You are a helpful assistant and will be used to label the output of another model or a dataset sample.";

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

#[derive(Debug, Clone)]
pub struct Judge {
    pub model_key: String,
    pub system_prompt: String,
    pub user_prompt: String,
    pub structured: bool,
}

macro_rules! scorer_wire {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
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
scorer_wire!(ClassifierWire { model_key: String, system_prompt: Option<String>, user_prompt: String, correct_labels: Vec<String>, incorrect_labels: Vec<String>, use_structured_outputs: Option<bool> });
scorer_wire!(JudgeScorerWire { model_key: String, system_prompt: Option<String>, user_prompt: String, score_min: Option<f64>, score_max: Option<f64>, use_structured_outputs: Option<bool> });
scorer_wire!(LabelerWire { model_key: String, system_prompt: Option<String>, user_prompt: String, valid_labels: Option<Vec<String>>, use_structured_outputs: Option<bool> });
scorer_wire!(BleuWire { ground_truth: String, value: Option<String> });

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
    let judge =
        |model_key: String, system: Option<String>, user: String, structured: Option<bool>, default: &str| Judge {
            model_key,
            system_prompt: system.unwrap_or_else(|| default.to_owned()),
            user_prompt: user,
            structured: structured.unwrap_or(false),
        };
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
        "model_as_a_judge_classifier" => common!(from_node::<ClassifierWire>(node, path)?, |w: ClassifierWire| {
            ScorerKind::JudgeClassifier {
                judge: judge(
                    w.model_key,
                    w.system_prompt,
                    w.user_prompt,
                    w.use_structured_outputs,
                    JUDGE_SYSTEM,
                ),
                correct_labels: w.correct_labels,
                incorrect_labels: w.incorrect_labels,
            }
        }),
        "model_as_a_judge_scorer" => common!(from_node::<JudgeScorerWire>(node, path)?, |w: JudgeScorerWire| {
            ScorerKind::JudgeScorer {
                judge: judge(
                    w.model_key,
                    w.system_prompt,
                    w.user_prompt,
                    w.use_structured_outputs,
                    JUDGE_SYSTEM,
                ),
                score_min: w.score_min.unwrap_or(0.0),
                score_max: w.score_max.unwrap_or(1.0),
            }
        }),
        "labeler_via_model" => common!(from_node::<LabelerWire>(node, path)?, |w: LabelerWire| {
            ScorerKind::Labeler {
                judge: judge(
                    w.model_key,
                    w.system_prompt,
                    w.user_prompt,
                    w.use_structured_outputs,
                    LABELER_SYSTEM,
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
    let ScorerKind::Python { snippet } = &def.kind else {
        return Ok(None);
    };
    let spec = SnippetSpec {
        owner: format!("scorer `{}` of task `{task_key}`", def.name),
        file: snippet.file.clone(),
        source: snippet.text.clone(),
        display_source: None,
        line_offset: snippet.line_offset,
        function: "compute_scores".to_owned(),
        arities: vec![1, 2],
        returns: ReturnKind::Json,
        workers: 4,
    };
    python
        .load_snippet(spec)
        .map(Some)
        .map_err(|e| crate::model::connection::snippet::load_diagnostic(&e, Some(snippet)))
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
        ScorerKind::Python { .. } => Vec::new(),
    }
}

/// Scores of one scorer for one sample.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Scores {
    pub values: Map<String, Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

pub struct ScoreContext<'a> {
    pub sample: &'a Map<String, Value>,
    pub solved: &'a Solved,
    pub registry: &'a Registry,
    pub templates: &'a TemplateEngine,
    pub origin: &'a TemplateOrigin,
    pub python: Option<&'a PythonRuntime>,
    pub calls: &'a mut Vec<Call>,
    pub usage: &'a mut Usage,
}

impl ScoreContext<'_> {
    fn template_context(&self) -> Map<String, Value> {
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
        ctx.insert("model_output".into(), Value::String(text));
        ctx.insert("messages".into(), Value::Array(self.solved.messages.clone()));
        ctx.insert("input_prompt".into(), input_prompt);
        ctx.insert(
            "solver_output".into(),
            json!({"output": output, "messages": self.solved.messages}),
        );
        ctx
    }

    fn render(&self, template: &str) -> Result<String, String> {
        crate::template::render_cached(self.templates, template, self.origin, &self.template_context())
            .map_err(|e| format!("cannot render scorer template: {}", e.message))
    }

    fn output_text(&self, value: Option<&String>) -> Result<String, String> {
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

pub async fn score(def: &ScorerDef, snippet: Option<&Snippet>, cx: &mut ScoreContext<'_>) -> Result<Scores, String> {
    let mut scores = Scores::default();
    match &def.kind {
        ScorerKind::StringEquals { ground_truth, value } => {
            let truth = cx.render(ground_truth)?;
            let value = cx.output_text(value.as_ref())?;
            scores.values.insert(
                "is_correct".into(),
                json!(if text::string_equals(&value, &truth) { 1.0 } else { 0.0 }),
            );
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
                (None, None) => return Err("`string_equals_mcqa` needs `ground_truth_choice`".to_owned()),
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
                (None, None) => return Err("`string_equals_mcqa` needs `choices`".to_owned()),
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
        ScorerKind::Python { .. } => {
            let (Some(snippet), Some(python)) = (snippet, cx.python) else {
                return Err("internal error: python scorer not loaded".to_owned());
            };
            let solver_output = json!({
                "output": cx.solved.output.as_ref().map_or(Value::Null, |o| o.value.clone()),
                "messages": cx.solved.messages,
                "text": cx.solved.output.as_ref().and_then(|o| o.text.clone()),
            });
            let args = vec![Value::Object(cx.sample.clone()), solver_output];
            let out = python
                .call(snippet, args, std::time::Duration::from_secs(60))
                .await
                .map_err(|e| {
                    let mut message = e.to_string();
                    if !e.captured.is_empty() {
                        message.push_str(&format!("\ncaptured output:\n{}", e.captured.trim_end()));
                    }
                    message
                })?;
            if !out.captured.is_empty() {
                scores.metadata.insert("captured_output".into(), json!(out.captured));
            }
            match out.value {
                Value::Object(mut map) if map.contains_key("scores") => {
                    if let Some(Value::Object(values)) = map.remove("scores") {
                        scores.values = values;
                    }
                    if let Some(Value::Object(metadata)) = map.remove("metadata") {
                        scores.metadata.extend(metadata);
                    }
                }
                Value::Object(map) => scores.values = map,
                other => return Err(format!("`compute_scores` must return a dict, got `{other}`")),
            }
        }
        ScorerKind::JudgeClassifier {
            judge,
            correct_labels,
            incorrect_labels,
        } => {
            let answer = ask_judge(judge, cx, schema(&["prediction", "reasoning", "confidence"])).await?;
            let prediction = answer
                .get("prediction")
                .map(label_text)
                .ok_or("the judge's answer has no `prediction`")?;
            let is_correct = if correct_labels.contains(&prediction) {
                1.0
            } else if incorrect_labels.contains(&prediction) {
                0.0
            } else {
                return Err(format!(
                    "the judge predicted `{prediction}`, which is neither a correct nor an incorrect label"
                ));
            };
            scores.values.insert("is_correct".into(), json!(is_correct));
            scores.metadata.insert("prediction".into(), json!(prediction));
            copy_fields(&answer, &mut scores.metadata, &["reasoning", "confidence"]);
        }
        ScorerKind::JudgeScorer {
            judge,
            score_min,
            score_max,
        } => {
            let answer = ask_judge(judge, cx, schema(&["score", "reasoning", "confidence"])).await?;
            let raw = answer
                .get("score")
                .and_then(number)
                .ok_or("the judge's answer has no numeric `score`")?;
            if raw < *score_min || raw > *score_max {
                return Err(format!("the judge's score {raw} is outside [{score_min}, {score_max}]"));
            }
            scores
                .values
                .insert("score".into(), json!((raw - score_min) / (score_max - score_min)));
            scores.metadata.insert("raw_score".into(), json!(raw));
            copy_fields(&answer, &mut scores.metadata, &["reasoning", "confidence"]);
        }
        ScorerKind::Labeler { judge, valid_labels } => {
            let answer = ask_judge(judge, cx, schema(&["label", "reasoning", "confidence"])).await?;
            let label = answer
                .get("label")
                .or_else(|| answer.get("prediction"))
                .map(label_text)
                .ok_or("the labeler's answer has no `label`")?;
            if !valid_labels.is_empty() && !valid_labels.contains(&label) {
                return Err(format!(
                    "the labeler answered `{label}`, which is not one of the valid labels"
                ));
            }
            scores.values.insert("label".into(), json!(label));
            copy_fields(&answer, &mut scores.metadata, &["reasoning", "confidence"]);
        }
    }
    Ok(scores)
}

fn field_text(sample: &Map<String, Value>, field: &str) -> Result<String, String> {
    match sample.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(format!("the sample has no field `{field}`")),
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

fn label_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_owned(),
        other => crate::eval::metric::python_str(other),
    }
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn copy_fields(from: &Map<String, Value>, to: &mut Map<String, Value>, fields: &[&str]) {
    for f in fields {
        if let Some(v) = from.get(*f) {
            to.insert((*f).to_owned(), v.clone());
        }
    }
}

fn schema(fields: &[&str]) -> Value {
    let properties: Map<String, Value> = fields
        .iter()
        .map(|f| {
            (
                (*f).to_owned(),
                if *f == "confidence" || *f == "score" {
                    json!({"type": "number"})
                } else {
                    json!({"type": "string"})
                },
            )
        })
        .collect();
    json!({"type": "json_schema", "json_schema": {"name": "judgement", "strict": true, "schema": {"type": "object", "properties": properties, "required": fields, "additionalProperties": false}}})
}

async fn ask_judge(
    judge: &Judge,
    cx: &mut ScoreContext<'_>,
    response_format: Value,
) -> Result<Map<String, Value>, String> {
    let model = cx.registry.get(&judge.model_key).map_err(|d| d.message.clone())?;
    let system = cx.render(&judge.system_prompt)?;
    let user = cx.render(&judge.user_prompt)?;
    let mut input = json!({"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]});
    if judge.structured
        && let Some(map) = input.as_object_mut()
    {
        map.insert("response_format".into(), response_format);
    }
    let sample = Value::Object(cx.sample.clone());
    let (trace, result) = model.infer(&input, &Map::new(), Some(&sample)).await;
    cx.calls.push(Call {
        model: model.model.key.clone(),
        purpose: "judge",
        trace,
    });
    let output = result.map_err(|f| format!("judge `{}`: {}: {}", judge.model_key, f.stage.title(), f.message))?;
    if let Some(u) = output.usage {
        cx.usage.num_prompt_tokens += u.num_prompt_tokens;
        cx.usage.num_completion_tokens += u.num_completion_tokens;
    }
    let text = output.text.unwrap_or_default();
    parse_judgement(&text).ok_or_else(|| {
        format!(
            "judge `{}` did not answer with a JSON object: {}",
            judge.model_key,
            truncate(&text, 200)
        )
    })
}

/// The first JSON object in a judge's answer (tolerates code fences and prose around it).
pub fn parse_judgement(text: &str) -> Option<Map<String, Value>> {
    if let Ok(Value::Object(map)) = serde_json::from_str(text.trim()) {
        return Some(map);
    }
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    match serde_json::from_str(text.get(start..=end)?) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judgements_are_found_inside_prose_and_fences() {
        let answer =
            parse_judgement("Sure!\n```json\n{\"prediction\": \"CORRECT\", \"confidence\": 0.9}\n```").expect("json");
        assert_eq!(answer["prediction"], "CORRECT");
        assert!(parse_judgement("no json here").is_none());
    }

    #[test]
    fn choices_split_by_comma_or_character() {
        assert_eq!(split_choices("A, B ,C"), vec!["A", "B", "C"]);
        assert_eq!(split_choices("ABCD"), vec!["A", "B", "C", "D"]);
    }
}
