//! [`SampleRecord`]: everything one finished sample leaves behind, as one line of
//! `samples.jsonl`. The run writes it, resume and the summary read it back, and the task logs,
//! reports and comparisons are built from it, so its shape is the contract between them.
//!
//! Each body is stored once per line: the solver's output is the output of one of the
//! sample's calls, so on disk `solver_output` names that call (`output_call`) instead of
//! repeating it, leaves out the model's reply at the end of `messages` when it is the one that
//! output makes (`reply_from_output`), and leaves out `text` when it is that reply's content.
//! Reading a line back restores all three, so nothing is lost.

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use crate::error_class::ErrorClass;
use crate::eval::dataset::Row;
use crate::model::io::Usage;
use crate::model::trace::{Call, CallPurpose, Failure, Step};

#[derive(Debug, Clone, PartialEq)]
pub struct SampleRecord {
    /// The task specification the sample belongs to.
    pub spec: String,
    pub sample_id: String,
    /// Position in the dataset; records are summarised in this order, whatever order they
    /// finished in.
    pub sample_index: u64,
    /// Which trial of the sample this is (1-based), when the task runs trials.
    pub trial: Option<u32>,
    /// Which of the rows a solver's `postprocessor` split the sample into (0-based).
    pub part: Option<u32>,
    /// The row as the dataset gave it.
    pub sample: Row,
    /// The model input of the last solver call, or the whole conversation of a multi-turn one.
    pub model_input: Option<Value>,
    pub solver_output: Option<SolverOutput>,
    /// Scores by scorer name, in the task's scorer order.
    pub scores: IndexMap<String, Scores>,
    pub errors: Vec<SampleError>,
    pub usage: Usage,
    /// Every model call the sample made (solver, judges), with its evidence.
    pub calls: Vec<Call>,
    /// Attempts over every call, including retries.
    pub attempts: u32,
    pub retries: u32,
    /// Every call was answered from the response cache.
    pub cached: bool,
    pub timings: SampleTimings,
    /// The task's action rule that leaves this sample out of the metrics.
    pub excluded_by: Option<String>,
    /// USD the sample's calls to priced models cost; absent when none is priced.
    pub cost_usd: Option<f64>,
}

impl SampleRecord {
    /// A record with nothing but its identity, for samples to be filled in.
    pub fn new(spec: impl Into<String>, sample_id: impl Into<String>, sample_index: u64, sample: Row) -> SampleRecord {
        SampleRecord {
            spec: spec.into(),
            sample_id: sample_id.into(),
            sample_index,
            trial: None,
            part: None,
            sample,
            model_input: None,
            solver_output: None,
            scores: IndexMap::new(),
            errors: Vec::new(),
            usage: Usage::default(),
            calls: Vec::new(),
            attempts: 0,
            retries: 0,
            cached: false,
            timings: SampleTimings::default(),
            excluded_by: None,
            cost_usd: None,
        }
    }

    /// A sample failed when anything went wrong: solving, or any of its scorers.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    /// What identifies the record within its specification (see [`record_key`]).
    pub fn key(&self) -> String {
        record_key(&self.sample_id, self.trial, self.part)
    }
}

/// The scorer name a system task's evidence is recorded under.
pub const EVIDENCE_SCORER: &str = "compute_evidence";

/// A record's identity within its specification: the sample id, with the trial and the
/// postprocessed part when there are any (`7`, `7#t2`, `7#t2#p0`). The sample id itself stays
/// the dataset's.
pub fn record_key(sample_id: &str, trial: Option<u32>, part: Option<u32>) -> String {
    let mut key = sample_id.to_owned();
    if let Some(t) = trial {
        key.push_str(&format!("#t{t}"));
    }
    if let Some(p) = part {
        key.push_str(&format!("#p{p}"));
    }
    key
}

/// Where a record belongs: its specification and its place in the sample order. What sorting a
/// run's records needs, read without parsing the rest of the line.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RecordIdentity {
    pub spec: String,
    pub sample_id: String,
    #[serde(default)]
    pub sample_index: u64,
    #[serde(default)]
    pub trial: Option<u32>,
    #[serde(default)]
    pub part: Option<u32>,
}

impl RecordIdentity {
    /// The record's key within its specification (see [`record_key`]).
    pub fn key(&self) -> String {
        record_key(&self.sample_id, self.trial, self.part)
    }

    /// The identity of one `samples.jsonl` line. A record writes these fields first, so they are
    /// read from the start of the line and the rest (bodies, traces: nearly all of it) is not
    /// looked at; a line in another order is parsed whole. Either way the line is parsed whole
    /// again when its record is read, which is where a damaged line is reported.
    pub fn of_line(line: &[u8]) -> Result<RecordIdentity, serde_json::Error> {
        match leading_identity(line) {
            Some(identity) => Ok(identity),
            None => serde_json::from_slice(line),
        }
    }
}

/// [`RecordIdentity`] from the line's leading keys, if they hold `spec`, `sample_id` and
/// `sample_index`.
fn leading_identity(line: &[u8]) -> Option<RecordIdentity> {
    use serde::de::{Error, MapAccess, Visitor};

    struct Leading<'a>(&'a mut Option<RecordIdentity>);

    impl<'de> Visitor<'de> for Leading<'_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a record")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut identity = RecordIdentity::default();
            let (mut spec, mut id, mut index) = (false, false, false);
            // Keys of these records never need unescaping, so a borrowed key that fails only
            // sends the line to the full parse.
            while let Some(key) = map.next_key::<&'de str>()? {
                match key {
                    "spec" => (identity.spec, spec) = (map.next_value()?, true),
                    "sample_id" => (identity.sample_id, id) = (map.next_value()?, true),
                    "sample_index" => (identity.sample_index, index) = (map.next_value()?, true),
                    "trial" => identity.trial = map.next_value()?,
                    "part" => identity.part = map.next_value()?,
                    _ => break,
                }
            }
            if spec && id && index {
                *self.0 = Some(identity);
            }
            // Stops the parser here: the rest of the line is not needed.
            Err(A::Error::custom("identity read"))
        }
    }

    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(line);
    let _ = serde::Deserializer::deserialize_map(&mut de, Leading(&mut found));
    found
}

/// What the solver produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SolverOutput {
    /// The target model's canonical output (e.g. `choices[0].message`).
    pub output: Option<Value>,
    /// The output's text, as scorers compare it.
    pub text: Option<String>,
    /// The conversation, ending with the model's answer.
    pub messages: Vec<Value>,
    /// The conversation as an Open Responses trace (what lf 3.17's scorers read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::open_responses::Trace>,
}

/// The assistant message a model output adds to a conversation, keeping extra fields (state for
/// stateful adapters): the first choice's message, or an Open Responses output's last assistant
/// message with its text, else the output's text.
pub fn reply_message(output: &Value, text: Option<&str>) -> Value {
    if let Some(last) = last_assistant_item(output) {
        let mut message = serde_json::Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), json!(text.unwrap_or_default()));
        for (k, v) in item_state(last) {
            message.insert(k.clone(), v.clone());
        }
        return Value::Object(message);
    }
    if let Some(message) = first_message(output) {
        let mut message = message.clone();
        message.insert("role".into(), json!("assistant"));
        return Value::Object(message);
    }
    json!({"role": "assistant", "content": text.unwrap_or_default()})
}

/// An Open Responses output's last assistant message.
fn last_assistant_item(output: &Value) -> Option<&Value> {
    output.get("items").and_then(Value::as_array)?.iter().rev().find(|i| {
        i.get("type").and_then(Value::as_str).unwrap_or("message") == "message"
            && i.get("role").and_then(Value::as_str) == Some("assistant")
    })
}

/// The fields of an Open Responses message a reply keeps (adapter state).
fn item_state(item: &Value) -> impl Iterator<Item = (&String, &Value)> {
    item.as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !matches!(k.as_str(), "type" | "id" | "status" | "role" | "content"))
}

/// Whether `message` is [`reply_message`]`(output, text)`, checked without building it: every
/// record asks, to leave the reply out of its line.
fn is_reply(message: &Value, output: &Value, text: Option<&str>) -> bool {
    let Some(message) = message.as_object() else {
        return false;
    };
    if message.get("role").and_then(Value::as_str) != Some("assistant") {
        return false;
    }
    let content_is_text = || message.get("content").and_then(Value::as_str) == Some(text.unwrap_or_default());
    if let Some(last) = last_assistant_item(output) {
        let mut fields = 2;
        for (k, v) in item_state(last) {
            if message.get(k) != Some(v) {
                return false;
            }
            fields += 1;
        }
        return message.len() == fields && content_is_text();
    }
    if let Some(reply) = first_message(output) {
        let fields = reply.len() + usize::from(!reply.contains_key("role"));
        return message.len() == fields && reply.iter().all(|(k, v)| k == "role" || message.get(k) == Some(v));
    }
    message.len() == 2 && content_is_text()
}

/// The content of an output's first choice, when it is text.
pub fn output_content(output: &Value) -> Option<&str> {
    first_message(output)?.get("content").and_then(Value::as_str)
}

/// An output's first choice (`choices[0]`). Not `Value::pointer`, which allocates for each
/// step of its path, on a path every record takes.
pub fn first_choice(output: &Value) -> Option<&Value> {
    output.get("choices")?.get(0)
}

fn first_message(output: &Value) -> Option<&serde_json::Map<String, Value>> {
    first_choice(output)?.get("message")?.as_object()
}

/// A record as one line of `samples.jsonl`, borrowing from the record.
#[derive(Serialize)]
struct RecordLine<'a> {
    spec: &'a str,
    sample_id: &'a str,
    sample_index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    trial: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<u32>,
    sample: &'a Row,
    model_input: &'a Option<Value>,
    solver_output: Option<SolverOutputLine<'a>>,
    scores: &'a IndexMap<String, Scores>,
    errors: &'a [SampleError],
    usage: &'a Usage,
    calls: &'a [Call],
    attempts: u32,
    retries: u32,
    cached: bool,
    timings: &'a SampleTimings,
    #[serde(skip_serializing_if = "Option::is_none")]
    excluded_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<f64>,
}

#[derive(Serialize)]
struct SolverOutputLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    output_call: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a Value>,
    /// Left out when it is the reply's content; `null` when there is no text.
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Option<&'a str>>,
    messages: &'a [Value],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reply_from_output: bool,
    /// Left out when it is the trace `messages` make (`trace_from_messages`).
    #[serde(skip_serializing_if = "Option::is_none")]
    trace: Option<&'a crate::open_responses::Trace>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    trace_from_messages: bool,
}

impl<'a> SolverOutputLine<'a> {
    fn of(so: &'a SolverOutput, calls: &[Call]) -> SolverOutputLine<'a> {
        let output_call = so.output.as_ref().and_then(|output| {
            calls
                .iter()
                .rposition(|c| c.purpose == CallPurpose::Solver && c.trace.output.as_ref() == Some(output))
        });
        let reply_from_output = so
            .output
            .as_ref()
            .zip(so.messages.last())
            .is_some_and(|(output, last)| is_reply(last, output, so.text.as_deref()));
        let messages = if reply_from_output {
            &so.messages[..so.messages.len() - 1]
        } else {
            &so.messages[..]
        };
        let trace_from_messages = so.trace.as_ref().is_some_and(|trace| trace.is_from_chat(&so.messages));
        let text_is_reply = so
            .output
            .as_ref()
            .and_then(output_content)
            .is_some_and(|content| Some(content) == so.text.as_deref());
        SolverOutputLine {
            output_call,
            output: if output_call.is_some() {
                None
            } else {
                so.output.as_ref()
            },
            text: if text_is_reply { None } else { Some(so.text.as_deref()) },
            messages,
            reply_from_output,
            trace: if trace_from_messages { None } else { so.trace.as_ref() },
            trace_from_messages,
        }
    }
}

#[derive(Deserialize)]
struct RecordWire {
    spec: String,
    sample_id: String,
    sample_index: u64,
    #[serde(default)]
    trial: Option<u32>,
    #[serde(default)]
    part: Option<u32>,
    sample: Row,
    model_input: Option<Value>,
    solver_output: Option<SolverOutputWire>,
    scores: IndexMap<String, Scores>,
    errors: Vec<SampleError>,
    usage: Usage,
    calls: Vec<Call>,
    attempts: u32,
    retries: u32,
    cached: bool,
    timings: SampleTimings,
    #[serde(default)]
    excluded_by: Option<String>,
    #[serde(default)]
    cost_usd: Option<f64>,
}

#[derive(Deserialize)]
struct SolverOutputWire {
    #[serde(default)]
    output_call: Option<usize>,
    #[serde(default)]
    output: Option<Value>,
    /// Absent: the reply's content; `null`: no text.
    #[serde(default, deserialize_with = "present")]
    text: Option<Option<String>>,
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    reply_from_output: bool,
    #[serde(default)]
    trace: Option<crate::open_responses::Trace>,
    #[serde(default)]
    trace_from_messages: bool,
}

/// A field that may be `null`: `Some(None)` then, `None` when it is absent.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl Serialize for SampleRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RecordLine {
            spec: &self.spec,
            sample_id: &self.sample_id,
            sample_index: self.sample_index,
            trial: self.trial,
            part: self.part,
            sample: &self.sample,
            model_input: &self.model_input,
            solver_output: self
                .solver_output
                .as_ref()
                .map(|so| SolverOutputLine::of(so, &self.calls)),
            scores: &self.scores,
            errors: &self.errors,
            usage: &self.usage,
            calls: &self.calls,
            attempts: self.attempts,
            retries: self.retries,
            cached: self.cached,
            timings: &self.timings,
            excluded_by: self.excluded_by.as_deref(),
            cost_usd: self.cost_usd,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SampleRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = RecordWire::deserialize(deserializer)?;
        let solver_output = match wire.solver_output {
            None => None,
            Some(so) => {
                let output = match (so.output, so.output_call) {
                    (Some(output), _) => Some(output),
                    (None, Some(i)) => {
                        Some(wire.calls.get(i).and_then(|c| c.trace.output.clone()).ok_or_else(|| {
                            serde::de::Error::custom(format!("`output_call` {i} names no call with an output"))
                        })?)
                    }
                    (None, None) => None,
                };
                let mut messages = so.messages;
                let text = match so.text {
                    Some(text) => text,
                    None => output.as_ref().and_then(output_content).map(str::to_owned),
                };
                let reply = output.as_ref().map(|o| reply_message(o, text.as_deref()));
                if so.reply_from_output
                    && let Some(reply) = reply
                {
                    messages.push(reply);
                }
                let trace = if so.trace_from_messages {
                    Some(crate::open_responses::Trace::from_chat(&messages))
                } else {
                    so.trace
                };
                Some(SolverOutput {
                    output,
                    text,
                    messages,
                    trace,
                })
            }
        };
        Ok(SampleRecord {
            spec: wire.spec,
            sample_id: wire.sample_id,
            sample_index: wire.sample_index,
            trial: wire.trial,
            part: wire.part,
            sample: wire.sample,
            model_input: wire.model_input,
            solver_output,
            scores: wire.scores,
            errors: wire.errors,
            usage: wire.usage,
            calls: wire.calls,
            attempts: wire.attempts,
            retries: wire.retries,
            cached: wire.cached,
            timings: wire.timings,
            excluded_by: wire.excluded_by,
            cost_usd: wire.cost_usd,
        })
    }
}

/// One scorer's scores for one sample: the values metrics fold, and metadata (a judge's
/// reasoning, captured output) that they ignore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub values: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// Where in the pipeline a sample failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Building the model input (a solver template) or running the solver's logic.
    Solver,
    /// The model chain's `process_input`.
    TransformInput,
    /// The endpoint or snippet call.
    RunInference,
    /// The model chain's `process_output` and output shape.
    TransformOutput,
    /// A scorer, including the judge calls it makes.
    Score,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Solver => "solver",
            Stage::TransformInput => "transform_input",
            Stage::RunInference => "run_inference",
            Stage::TransformOutput => "transform_output",
            Stage::Score => "score",
        }
    }
}

impl From<Step> for Stage {
    fn from(step: Step) -> Stage {
        match step {
            Step::TransformInput => Stage::TransformInput,
            Step::RunInference => Stage::RunInference,
            Step::TransformOutput => Stage::TransformOutput,
        }
    }
}

/// One thing that went wrong with a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleError {
    pub stage: Stage,
    pub class: ErrorClass,
    /// The scorer that failed (stage `score`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorer: Option<String>,
    /// The model whose call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub message: String,
    /// `file:line` of the snippet or template line at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// A traceback, a rendered output or a judge's raw answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl SampleError {
    pub fn new(stage: Stage, class: ErrorClass, message: impl Into<String>) -> SampleError {
        SampleError {
            stage,
            class,
            scorer: None,
            model: None,
            message: message.into(),
            location: None,
            detail: None,
        }
    }

    /// A model chain failure of `model`, attributed to the step it failed at.
    pub fn from_failure(model: &str, failure: Failure) -> SampleError {
        SampleError {
            model: Some(model.to_owned()),
            location: failure.location,
            detail: failure.detail.or_else(|| failure.diagnostic.map(|d| d.to_string())),
            ..SampleError::new(failure.step.into(), failure.class, failure.message)
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> SampleError {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_location(mut self, location: Option<String>) -> SampleError {
        self.location = location;
        self
    }
}

/// Where a sample's time went, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SampleTimings {
    pub solver_ms: f64,
    pub score_ms: f64,
    pub total_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::trace::{CallPurpose, Trace};
    use serde_json::json;

    #[test]
    fn a_record_survives_a_round_trip_through_its_json_line() {
        let mut record = SampleRecord::new("spec-1", "7", 7, json!({"q": "2+2"}).as_object().cloned().unwrap());
        record.model_input = Some(json!({"messages": [{"role": "user", "content": "2+2"}]}));
        record.solver_output = Some(SolverOutput {
            output: Some(json!({"choices": [{"message": {"role": "assistant", "content": "4"}}]})),
            text: Some("4".into()),
            messages: vec![json!({"role": "assistant", "content": "4"})],
            trace: None,
        });
        record.scores.insert(
            "exact".into(),
            Scores {
                values: json!({"is_correct": 1.0}).as_object().cloned().unwrap(),
                metadata: Map::new(),
            },
        );
        record.errors.push(SampleError {
            scorer: Some("judge".into()),
            location: Some("score.py:3".into()),
            ..SampleError::new(Stage::Score, ErrorClass::JudgeError, "no JSON")
        });
        record.calls.push(Call {
            model: "m".into(),
            purpose: CallPurpose::Judge,
            trace: Trace {
                request_body: Some("{}".into()),
                cached: true,
                ..Trace::default()
            },
        });
        record.attempts = 1;
        record.usage.num_prompt_tokens = 3;
        let line = serde_json::to_string(&record).unwrap();
        let back: SampleRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, record);
        // The stage and class are plain strings on disk, for `jq` and other tools.
        let raw: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(raw["errors"][0]["stage"], "score");
        assert_eq!(raw["errors"][0]["class"], "judge_error");
        assert_eq!(raw["calls"][0]["purpose"], "judge");
    }

    #[test]
    fn the_solver_output_is_stored_once_and_read_back_whole() {
        let content = "x".repeat(1000);
        let output = json!({"choices": [{"message": {"role": "assistant", "content": content}}]});
        let mut record = SampleRecord::new("s", "1", 1, Map::new());
        record.calls.push(Call {
            model: "m".into(),
            purpose: CallPurpose::Solver,
            trace: Trace {
                output: Some(output.clone()),
                ..Trace::default()
            },
        });
        let question = json!({"role": "user", "content": "q"});
        record.solver_output = Some(SolverOutput {
            output: Some(output.clone()),
            text: Some(content.clone()),
            messages: vec![question.clone(), reply_message(&output, Some(&content))],
            trace: Some(crate::open_responses::Trace::from_chat(&[
                question.clone(),
                reply_message(&output, Some(&content)),
            ])),
        });
        let line = serde_json::to_string(&record).unwrap();
        assert_eq!(line.matches(&content).count(), 1, "{line}");
        let raw: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(raw["solver_output"]["output_call"], 0);
        assert_eq!(raw["solver_output"]["reply_from_output"], true);
        assert_eq!(raw["solver_output"]["messages"], json!([question]));
        assert_eq!(raw["solver_output"]["trace_from_messages"], true);
        let back: SampleRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, record);

        // No text, and an output without choices: both survive as they were.
        for (output, text) in [
            (json!({"choices": [{"message": {"content": "c"}}]}), None),
            (json!({"output": []}), Some("t".to_owned())),
        ] {
            record.calls[0].trace.output = Some(output.clone());
            record.solver_output = Some(SolverOutput {
                messages: vec![reply_message(&output, text.as_deref())],
                output: Some(output),
                text,
                trace: None,
            });
            let back: SampleRecord = serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
            assert_eq!(back, record);
        }
    }

    #[test]
    fn the_reply_check_agrees_with_building_the_reply() {
        let outputs = [
            json!({"choices": [{"message": {"role": "assistant", "content": "4"}}]}),
            json!({"choices": [{"message": {"content": "4", "state": {"turn": 2}}}]}),
            json!({"items": [
                {"type": "message", "role": "user", "content": []},
                {"type": "message", "id": "m1", "status": "completed", "role": "assistant", "content": [], "conversation_id": "c"},
            ]}),
            json!({"items": [{"role": "assistant", "content": []}]}),
            json!({"output": "4"}),
        ];
        for output in &outputs {
            for text in [Some("4"), None] {
                let reply = reply_message(output, text);
                let mut candidates = vec![reply.clone(), json!({"role": "assistant", "content": "4"}), json!("4")];
                for (key, value) in [("role", json!("user")), ("content", json!("5")), ("extra", json!(1))] {
                    let mut changed = reply.clone();
                    changed[key] = value;
                    candidates.push(changed);
                }
                for key in ["role", "content", "state", "conversation_id"] {
                    let mut fewer = reply.clone();
                    fewer.as_object_mut().unwrap().shift_remove(key);
                    candidates.push(fewer);
                }
                for candidate in &candidates {
                    assert_eq!(
                        is_reply(candidate, output, text),
                        *candidate == reply,
                        "{candidate} as the reply of {output} with {text:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn chain_steps_map_onto_pipeline_stages() {
        assert_eq!(Stage::from(Step::RunInference), Stage::RunInference);
        assert_eq!(Stage::from(Step::TransformOutput).as_str(), "transform_output");
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(500))]

        /// Read from the line's start or parsed whole, the identity is the one written.
        #[test]
        fn a_line_gives_the_identity_it_was_written_with(
            spec in "[a-z\\-\"\\\\é]{1,8}",
            id in "[ -~é\u{7f}\n\t]{0,12}",
            index in 0u64..u64::MAX,
            trial in proptest::option::of(1u32..50),
            part in proptest::option::of(0u32..5),
        ) {
            let mut record = SampleRecord::new(&spec, &id, index, json!({"q": id}).as_object().cloned().unwrap());
            record.trial = trial;
            record.part = part;
            let line = serde_json::to_vec(&record).unwrap();
            let want = RecordIdentity { spec, sample_id: id, sample_index: index, trial, part };
            proptest::prop_assert!(leading_identity(&line).is_some(), "records lead with their identity");
            proptest::prop_assert_eq!(RecordIdentity::of_line(&line).unwrap(), want.clone());
            // Fields in another order: the whole line is parsed instead.
            let mut value: Map<String, Value> = serde_json::from_slice(&line).unwrap();
            let spec_value = value.shift_remove("spec").unwrap();
            value.insert("spec".into(), spec_value);
            let reordered = serde_json::to_vec(&value).unwrap();
            proptest::prop_assert!(leading_identity(&reordered).is_none());
            proptest::prop_assert_eq!(RecordIdentity::of_line(&reordered).unwrap(), want);
        }
    }

    #[test]
    fn a_line_without_an_identity_is_an_error() {
        assert!(RecordIdentity::of_line(br#"{"sample":{"q":1},"spec":"a"}"#).is_err());
        assert!(RecordIdentity::of_line(b"{\"spec\":\"a\",\"sample_id\":").is_err());
    }
}
