//! Scorers that ask another model: `model_as_a_judge_classifier`, `model_as_a_judge_scorer` and
//! `labeler_via_model`. The judge is called through the shared registry, so it obeys its own
//! model's limits. Its answer must be a JSON object of a stated shape; an answer that cannot be
//! read gets one reminder, and then fails as a `judge_error` carrying the judge's raw text.

use serde_json::{Map, Value, json};

use crate::error_class::ErrorClass;
use crate::eval::record::{SampleError, Scores, Stage};
use crate::model::trace::{Call, CallPurpose};

use super::ScoreContext;

const JUDGE_SYSTEM: &str = "You are a helpful assistant and will be used to judge the output of another model.";
const LABELER_SYSTEM: &str =
    "You are a helpful assistant and will be used to label the output of another model or a dataset sample.";

/// A scorer's judge model and its prompts.
#[derive(Debug, Clone)]
pub struct Judge {
    pub model_key: String,
    pub system_prompt: String,
    pub user_prompt: String,
    pub structured: bool,
}

/// What a judge is asked for; decides the JSON shape it must answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `prediction`: one of the scorer's labels (classifier).
    Prediction,
    /// `score`: a number within the scorer's range.
    Score,
    /// `label`: one of the valid labels (labeler).
    Label,
}

impl Verdict {
    fn field(self) -> &'static str {
        match self {
            Verdict::Prediction => "prediction",
            Verdict::Score => "score",
            Verdict::Label => "label",
        }
    }

    /// The answer's shape, as stated to the judge.
    fn shape(self) -> String {
        let value = if self == Verdict::Score {
            "<number>"
        } else {
            "\"<label>\""
        };
        format!(
            "{{\"{}\": {value}, \"reasoning\": \"<one or two sentences>\", \"confidence\": <number between 0 and 1>}}",
            self.field()
        )
    }

    /// The OpenAI `response_format` for structured outputs.
    fn response_format(self) -> Value {
        let fields = [self.field(), "reasoning", "confidence"];
        let properties: Map<String, Value> = fields
            .iter()
            .map(|f| {
                let kind = if matches!(*f, "confidence" | "score") {
                    "number"
                } else {
                    "string"
                };
                ((*f).to_owned(), json!({ "type": kind }))
            })
            .collect();
        json!({"type": "json_schema", "json_schema": {"name": "judgement", "strict": true, "schema": {
            "type": "object", "properties": properties, "required": fields, "additionalProperties": false}}})
    }
}

impl Judge {
    /// A judge with lfeval's default system prompt when the scorer gives none; the default
    /// states the JSON shape the answer must have.
    pub fn new(
        model_key: String,
        system: Option<String>,
        user: String,
        structured: Option<bool>,
        verdict: Verdict,
    ) -> Judge {
        let default = if verdict == Verdict::Label {
            LABELER_SYSTEM
        } else {
            JUDGE_SYSTEM
        };
        Judge {
            model_key,
            system_prompt: system.unwrap_or_else(|| {
                format!(
                    "{default} Answer with only a JSON object of this form: {}",
                    verdict.shape()
                )
            }),
            user_prompt: user,
            structured: structured.unwrap_or(false),
        }
    }
}

/// How many characters of a judge's raw answer an error message quotes (the whole answer is in
/// the error's detail).
const QUOTED_ANSWER: usize = 200;

fn judge_error(judge: &Judge, message: String) -> SampleError {
    SampleError {
        model: Some(judge.model_key.clone()),
        ..SampleError::new(Stage::Score, ErrorClass::JudgeError, message)
    }
}

/// Renders the prompts, calls the judge and reads its JSON answer. An answer without a JSON
/// object, or without the verdict's field, is asked for once more with a reminder of the shape.
async fn ask(
    judge: &Judge,
    verdict: Verdict,
    labels: &[String],
    cx: &mut ScoreContext<'_>,
) -> Result<Map<String, Value>, SampleError> {
    let model = cx
        .registry
        .get(&judge.model_key)
        .map_err(|d| SampleError::new(Stage::Score, ErrorClass::Internal, d.message))?;
    let system = cx.render(&judge.system_prompt)?;
    let user = cx.render(&judge.user_prompt)?;
    let mut messages = vec![
        json!({"role": "system", "content": system}),
        json!({"role": "user", "content": user}),
    ];
    let mut answers = Vec::new();
    for attempt in 0..2 {
        let mut input = json!({ "messages": messages });
        if judge.structured
            && let Some(map) = input.as_object_mut()
        {
            map.insert("response_format".into(), verdict.response_format());
        }
        let sample = Value::Object(cx.sample.clone());
        let (trace, result) = model
            .infer_salted(&input, &Map::new(), Some(&sample), cx.cache_salt)
            .await;
        cx.calls.push(Call {
            model: model.model.key.clone(),
            purpose: CallPurpose::Judge,
            trace,
        });
        let output = result.map_err(|f| SampleError::from_failure(&judge.model_key, f))?;
        if let Some(u) = output.usage {
            *cx.usage += u;
        }
        let text = output.text.unwrap_or_default();
        if let Some(answer) = parse_judgement(&text).filter(|a| a.contains_key(verdict.field())) {
            return Ok(answer);
        }
        if let Some(answer) = bare_answer(&text, verdict, labels) {
            return Ok(answer);
        }
        if attempt == 0 {
            messages.push(json!({"role": "assistant", "content": text}));
            messages.push(json!({"role": "user", "content": format!(
                "Your answer could not be read. Answer again with only a JSON object of this form, and nothing else: {}",
                verdict.shape()
            )}));
        }
        answers.push(text);
    }
    let last = answers.last().cloned().unwrap_or_default();
    Err(judge_error(
        judge,
        format!(
            "judge `{}` did not answer with a JSON object holding `{}`: {}",
            judge.model_key,
            verdict.field(),
            truncate(&last, QUOTED_ANSWER)
        ),
    )
    .with_detail(answers.join("\n--- after the reminder ---\n")))
}

pub async fn classify(
    judge: &Judge,
    correct_labels: &[String],
    incorrect_labels: &[String],
    cx: &mut ScoreContext<'_>,
) -> Result<Scores, SampleError> {
    let labels: Vec<String> = correct_labels.iter().chain(incorrect_labels).cloned().collect();
    let answer = ask(judge, Verdict::Prediction, &labels, cx).await?;
    let prediction = answer.get("prediction").map(label_text).unwrap_or_default();
    let is_correct = if correct_labels.contains(&prediction) {
        1.0
    } else if incorrect_labels.contains(&prediction) {
        0.0
    } else {
        return Err(judge_error(
            judge,
            format!("the judge predicted `{prediction}`, which is neither a correct nor an incorrect label"),
        ));
    };
    let mut scores = Scores::default();
    scores.values.insert("is_correct".into(), json!(is_correct));
    scores.metadata.insert("prediction".into(), json!(prediction));
    copy_fields(&answer, &mut scores.metadata, &["reasoning", "confidence"]);
    Ok(scores)
}

pub async fn rate(judge: &Judge, min: f64, max: f64, cx: &mut ScoreContext<'_>) -> Result<Scores, SampleError> {
    let answer = ask(judge, Verdict::Score, &[], cx).await?;
    let raw = answer
        .get("score")
        .and_then(number)
        .ok_or_else(|| judge_error(judge, "the judge's `score` is not a number".to_owned()))?;
    if raw < min || raw > max {
        return Err(judge_error(
            judge,
            format!("the judge's score {raw} is outside [{min}, {max}]"),
        ));
    }
    let mut scores = Scores::default();
    scores.values.insert("score".into(), json!((raw - min) / (max - min)));
    scores.metadata.insert("raw_score".into(), json!(raw));
    copy_fields(&answer, &mut scores.metadata, &["reasoning", "confidence"]);
    Ok(scores)
}

pub async fn label(judge: &Judge, valid_labels: &[String], cx: &mut ScoreContext<'_>) -> Result<Scores, SampleError> {
    let answer = ask(judge, Verdict::Label, valid_labels, cx).await?;
    let label = answer.get("label").map(label_text).unwrap_or_default();
    if !valid_labels.is_empty() && !valid_labels.contains(&label) {
        return Err(judge_error(
            judge,
            format!("the labeler answered `{label}`, which is not one of the valid labels"),
        ));
    }
    let mut scores = Scores::default();
    scores.values.insert("label".into(), json!(label));
    copy_fields(&answer, &mut scores.metadata, &["reasoning", "confidence"]);
    Ok(scores)
}

/// An answer that is nothing but the verdict, as prompts that say "respond only with 'correct'
/// or 'incorrect'" get: one of the labels (any case, quotes and a final period ignored), or for a
/// score a bare number.
fn bare_answer(text: &str, verdict: Verdict, labels: &[String]) -> Option<Map<String, Value>> {
    let word = text
        .trim()
        .trim_end_matches('.')
        .trim_matches(|c| c == '"' || c == '\'' || c == '`')
        .trim();
    let value = match verdict {
        Verdict::Score => json!(word.parse::<f64>().ok()?),
        Verdict::Prediction | Verdict::Label => json!(labels.iter().find(|l| l.eq_ignore_ascii_case(word))?),
    };
    let mut answer = Map::new();
    answer.insert(verdict.field().to_owned(), value);
    Some(answer)
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

fn truncate(text: &str, max: usize) -> String {
    // Masked before it is cut, so no part of a secret survives the cut.
    let text = crate::redact::redact(text);
    if text.chars().count() <= max {
        text.into_owned()
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
    fn bare_labels_and_numbers_are_answers_too() {
        let labels = vec!["correct".to_owned(), "incorrect".to_owned()];
        assert_eq!(
            bare_answer("  Correct.\n", Verdict::Prediction, &labels).unwrap()["prediction"],
            "correct"
        );
        assert!(bare_answer("probably correct", Verdict::Prediction, &labels).is_none());
        assert_eq!(bare_answer("0.5", Verdict::Score, &[]).unwrap()["score"], 0.5);
    }

    #[test]
    fn the_default_prompt_states_the_expected_shape() {
        let judge = Judge::new("j".into(), None, "{{ x }}".into(), None, Verdict::Score);
        assert!(
            judge.system_prompt.contains(r#"{"score": <number>, "reasoning""#),
            "{}",
            judge.system_prompt
        );
        let own = Judge::new("j".into(), Some("Mine.".into()), "u".into(), None, Verdict::Label);
        assert_eq!(own.system_prompt, "Mine.");
    }
}
