//! Solvers (aigo.md §8.5): turn a dataset sample into model calls. `single_turn_solver` builds
//! one model input (chat messages, or a `generic` JSON template); `multi_turn_solver` runs a
//! conversation from `chat_message`, `generate`, `generate_message`, `loop` and `load_trace`
//! builders, ending early when a `terminate_if` text appears; `pass_through_solver` scores a
//! recorded trace without calling a model. Whatever the solver, the conversation is also kept as
//! an Open Responses [`Trace`], which scorers and judges see as `trace`.

use serde_json::{Map, Value, json};

use crate::error_class::ErrorClass;
use crate::eval::record::{SampleError, Stage, first_choice, reply_message};
use crate::eval::solver_def::{InputBuilder, MessageBuilder, SolverDef, SolverKind, TerminateIf};
use crate::model::io::{ModelOutput, Usage};
use crate::model::registry::Registry;
use crate::model::runtime::ModelRuntime;
use crate::model::trace::{Call, CallPurpose};
use crate::open_responses::{Item, Message, Trace};
use crate::template::{TemplateEngine, TemplateOrigin};

/// What a solver produced.
#[derive(Debug, Clone, Default)]
pub struct Solved {
    pub output: Option<ModelOutput>,
    /// The model input of the last call (single turn) or the conversation so far.
    pub model_input: Value,
    pub messages: Vec<Value>,
    pub usage: Usage,
    /// The conversation as Open Responses items (lf's `SolverTrace.trace`).
    pub trace: Trace,
    /// Every output of the model under test, in order (lf's `SolverTrace.raw_outputs`).
    pub raw_outputs: Vec<Value>,
}

pub struct SolveContext<'a> {
    pub sample: &'a Map<String, Value>,
    /// The model under test; `None` for solvers that call none.
    pub target: Option<&'a ModelRuntime>,
    pub registry: &'a Registry,
    pub templates: &'a TemplateEngine,
    pub origin: &'a TemplateOrigin,
    pub calls: &'a mut Vec<Call>,
    /// Set for trials and repeated runs (see [`ModelRuntime::infer_salted`]).
    pub cache_salt: Option<&'a str>,
}

fn solver_error(class: ErrorClass, message: impl Into<String>) -> SampleError {
    SampleError::new(Stage::Solver, class, message)
}

impl<'a> SolveContext<'a> {
    fn render(&self, template: &str, extra: &[(&str, Value)]) -> Result<String, SampleError> {
        if let Some(text) = crate::template::literal(template) {
            return Ok(text.to_owned());
        }
        let mut ctx = Map::new();
        ctx.insert("sample".into(), Value::Object(self.sample.clone()));
        for (k, v) in extra {
            ctx.insert((*k).to_owned(), v.clone());
        }
        crate::template::render_cached(self.templates, template, self.origin, &ctx).map_err(|e| {
            solver_error(
                ErrorClass::TemplateError,
                format!("cannot render solver template: {}", e.message),
            )
            .with_location(e.location())
            .with_detail(e.excerpt.clone().unwrap_or_default())
        })
    }

    fn target(&self) -> Result<&'a ModelRuntime, SampleError> {
        self.target
            .ok_or_else(|| solver_error(ErrorClass::Internal, "internal error: this solver has no model to call"))
    }

    async fn call(
        &mut self,
        model: &ModelRuntime,
        input: &Value,
        purpose: CallPurpose,
        usage: &mut Usage,
    ) -> Result<ModelOutput, SampleError> {
        let sample = Value::Object(self.sample.clone());
        let (trace, result) = model
            .infer_salted(input, &Map::new(), Some(&sample), self.cache_salt)
            .await;
        self.calls.push(Call {
            model: model.model.key.clone(),
            purpose,
            trace,
        });
        let output = result.map_err(|f| SampleError::from_failure(&model.model.key, f))?;
        if let Some(u) = output.usage {
            *usage += u;
        }
        Ok(output)
    }
}

pub async fn solve(def: &SolverDef, cx: &mut SolveContext<'_>) -> Result<Solved, SampleError> {
    let mut solved = Solved::default();
    match &def.kind {
        SolverKind::SingleTurn { input_builder } => {
            let input = build_input(input_builder, cx)?;
            solved.model_input = input.clone();
            let target = cx.target()?;
            let output = cx.call(target, &input, CallPurpose::Solver, &mut solved.usage).await?;
            let mut conversation = Conversation::default();
            for m in input.get("messages").and_then(Value::as_array).into_iter().flatten() {
                conversation.push_chat(m.clone());
            }
            conversation.push_output(&output);
            solved.raw_outputs.push(output.value.clone());
            solved.output = Some(output);
            conversation.finish_into(&mut solved);
        }
        SolverKind::MultiTurn { message_builders } => {
            let mut conversation = Conversation::default();
            run_builders(message_builders, cx, &mut conversation, None).await?;
            solved.model_input = json!({ "messages": conversation.messages() });
            solved.output = conversation.last.clone();
            solved.usage = conversation.usage;
            solved.raw_outputs = std::mem::take(&mut conversation.raw_outputs);
            conversation.finish_into(&mut solved);
        }
        SolverKind::PassThrough { trace_column } => {
            let trace = recorded_trace(cx.sample, trace_column)?;
            let mut conversation = Conversation::default();
            conversation.push_items(trace.items.clone());
            solved.output = trace.last_assistant_text().map(text_output);
            solved.model_input = json!({ "messages": conversation.messages() });
            solved.messages = conversation.messages();
            solved.trace = trace;
        }
        SolverKind::GroupedSingleTurn { .. } | SolverKind::Python { .. } => {
            return Err(solver_error(
                ErrorClass::Internal,
                format!("internal error: `{}` is run elsewhere", def.kind.type_name()),
            ));
        }
    }
    Ok(solved)
}

/// The model input of a single-turn solver.
pub fn build_input(builder: &InputBuilder, cx: &SolveContext<'_>) -> Result<Value, SampleError> {
    Ok(match builder {
        InputBuilder::ChatCompletion { input_messages } => {
            let mut messages = Vec::new();
            for m in input_messages {
                messages.push(json!({"role": m.role, "content": cx.render(&m.content, &[])?}));
            }
            json!({ "messages": messages })
        }
        InputBuilder::Generic { template } => {
            let text = cx.render(template, &[])?;
            serde_json::from_str(&text).map_err(|e| {
                solver_error(
                    ErrorClass::InvalidInput,
                    format!("the `generic` input template did not render valid JSON: {e}"),
                )
                .with_detail(text.clone())
            })?
        }
    })
}

/// A model output holding only `text` (what a recorded trace's answer looks like to scorers).
pub fn text_output(text: String) -> ModelOutput {
    ModelOutput {
        value: json!({"choices": [{"message": {"role": "assistant", "content": text}}]}),
        text: Some(text),
        refusal: None,
        usage: None,
    }
}

/// The trace recorded in a dataset column: a JSON object, or its JSON text (CSV columns).
pub fn recorded_trace(sample: &Map<String, Value>, column: &str) -> Result<Trace, SampleError> {
    let value = sample.get(column).ok_or_else(|| {
        solver_error(
            ErrorClass::InvalidInput,
            format!("the sample has no column `{column}` holding a trace"),
        )
    })?;
    let value = match value {
        Value::String(text) => serde_json::from_str(text).map_err(|e| {
            solver_error(
                ErrorClass::InvalidInput,
                format!("column `{column}` is not a JSON trace: {e}"),
            )
        })?,
        other => other.clone(),
    };
    serde_json::from_value(value).map_err(|e| {
        solver_error(
            ErrorClass::InvalidInput,
            format!("column `{column}` is not an Open Responses trace (`items` of messages and function calls): {e}"),
        )
    })
}

/// The trace items an output stands for: an Open Responses output's own items, else one
/// assistant message (RAG references as `text_citation` annotations) and its tool calls.
pub fn output_items(output: &ModelOutput) -> Vec<Item> {
    if let Some(items) = output.value.get("items").and_then(Value::as_array) {
        return items
            .iter()
            .filter_map(|i| serde_json::from_value::<Item>(i.clone()).ok())
            .collect();
    }
    let Some(choice) = first_choice(&output.value) else {
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), json!(output.text.clone().unwrap_or_default()));
        return vec![Item::Message(Message::from_chat(&message))];
    };
    let mut message = choice
        .get("message")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    message.insert("role".into(), json!("assistant"));
    if message.get("content").is_none_or(Value::is_null) && message.get("tool_calls").is_none() {
        message.insert("content".into(), json!(""));
    }
    let mut items = Item::from_chat(&message);
    if let Some(refs) = choice.get("references").and_then(Value::as_array)
        && let Some(Item::Message(m)) = items.first_mut()
        && let Some(part) = m.content.first_mut().and_then(Value::as_object_mut)
    {
        let citations: Vec<Value> = refs
            .iter()
            .map(|r| json!({"type": "text_citation", "content": r.get("content").cloned().unwrap_or(Value::Null)}))
            .collect();
        part.insert("annotations".into(), Value::Array(citations));
    }
    items
}

/// The assistant message an output adds to the conversation (see [`reply_message`]).
pub fn assistant_message(output: &ModelOutput) -> Value {
    reply_message(&output.value, output.text.as_deref())
}

/// One message of the conversation and the trace items it stands for.
#[derive(Debug, Clone)]
struct Entry {
    message: Value,
    items: Vec<Item>,
}

#[derive(Default)]
struct Conversation {
    entries: Vec<Entry>,
    /// The target model's latest output (what scorers see), and the one before it, restored when
    /// `keep_iteration: false` drops the latest reply from the transcript.
    last: Option<ModelOutput>,
    previous: Option<ModelOutput>,
    usage: Usage,
    raw_outputs: Vec<Value>,
}

impl Conversation {
    fn messages(&self) -> Vec<Value> {
        self.entries.iter().map(|e| e.message.clone()).collect()
    }

    fn push_chat(&mut self, message: Value) {
        let items = message.as_object().map(Item::from_chat).unwrap_or_default();
        self.entries.push(Entry { message, items });
    }

    fn push_output(&mut self, output: &ModelOutput) {
        self.entries.push(Entry {
            message: assistant_message(output),
            items: output_items(output),
        });
    }

    /// Recorded items, one conversation message each (function calls and outputs stay in
    /// the trace only).
    fn push_items(&mut self, items: Vec<Item>) {
        for item in items {
            let message = match &item {
                Item::Message(m) => {
                    let mut message = Map::new();
                    message.insert("role".into(), json!(m.role));
                    message.insert("content".into(), json!(m.text()));
                    Some(Value::Object(message))
                }
                _ => None,
            };
            match message {
                Some(message) => self.entries.push(Entry {
                    message,
                    items: vec![item],
                }),
                None => match self.entries.last_mut() {
                    Some(entry) => entry.items.push(item),
                    None => self.entries.push(Entry {
                        message: json!({"role": "system", "content": ""}),
                        items: vec![item],
                    }),
                },
            }
        }
    }

    fn last_text(&self) -> &str {
        self.entries
            .last()
            .and_then(|e| e.message.get("content"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn finish_into(self, solved: &mut Solved) {
        solved.messages = self.messages();
        solved.trace = Trace::from_items(self.entries.into_iter().flat_map(|e| e.items).collect());
    }
}

enum Flow {
    Continue,
    Terminate,
}

fn terminates(rule: Option<&TerminateIf>, conversation: &mut Conversation) -> Flow {
    let Some(rule) = rule else { return Flow::Continue };
    if !conversation.last_text().contains(&rule.includes) {
        return Flow::Continue;
    }
    if !rule.keep_iteration {
        let dropped = conversation.entries.pop();
        let was_target_reply = dropped
            .as_ref()
            .and_then(|e| e.message.get("role"))
            .and_then(Value::as_str)
            == Some("assistant")
            && conversation.last.is_some();
        if was_target_reply {
            conversation.last = conversation.previous.take();
        }
    }
    Flow::Terminate
}

fn run_builders<'a>(
    builders: &'a [MessageBuilder],
    cx: &'a mut SolveContext<'_>,
    conversation: &'a mut Conversation,
    loop_index: Option<u32>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Flow, SampleError>> + Send + 'a>> {
    Box::pin(async move {
        for builder in builders {
            let extra = |conversation: &Conversation| {
                let mut extra = vec![("messages", Value::Array(conversation.messages()))];
                if let Some(i) = loop_index {
                    extra.push(("loop_index", json!(i)));
                }
                extra
            };
            let flow = match builder {
                MessageBuilder::ChatMessage(m) => {
                    let content = cx.render(&m.content, &extra(conversation))?;
                    conversation.push_chat(json!({"role": m.role, "content": content}));
                    terminates(m.terminate_if.as_ref(), conversation)
                }
                MessageBuilder::Generate { terminate_if } => {
                    let input = json!({"messages": conversation.messages()});
                    let target = cx.target()?;
                    let output = cx
                        .call(target, &input, CallPurpose::Solver, &mut conversation.usage)
                        .await?;
                    conversation.push_output(&output);
                    conversation.raw_outputs.push(output.value.clone());
                    conversation.previous = conversation.last.replace(output);
                    terminates(terminate_if.as_ref(), conversation)
                }
                MessageBuilder::GenerateMessage {
                    model_key,
                    extra_input_messages,
                    output_role,
                    include_conversation,
                    terminate_if,
                } => {
                    let model = cx
                        .registry
                        .get(model_key)
                        .map_err(|d| solver_error(ErrorClass::Internal, d.message.clone()))?;
                    let mut messages = if *include_conversation {
                        conversation.messages()
                    } else {
                        Vec::new()
                    };
                    for m in extra_input_messages {
                        messages.push(json!({"role": m.role, "content": cx.render(&m.content, &extra(conversation))?}));
                    }
                    let output = cx
                        .call(
                            &model,
                            &json!({"messages": messages}),
                            CallPurpose::GenerateMessage,
                            &mut conversation.usage,
                        )
                        .await?;
                    let role = output_role.clone().unwrap_or_else(|| "user".to_owned());
                    conversation.push_chat(json!({"role": role, "content": output.text.clone().unwrap_or_default()}));
                    terminates(terminate_if.as_ref(), conversation)
                }
                MessageBuilder::LoadTrace { trace_column } => {
                    let trace = recorded_trace(cx.sample, trace_column)?;
                    conversation.push_items(trace.items);
                    Flow::Continue
                }
                MessageBuilder::Loop {
                    message_builders,
                    max_iterations,
                    on_max_iterations_error,
                } => {
                    let mut ended = false;
                    for i in 0..*max_iterations {
                        if let Flow::Terminate = run_builders(message_builders, cx, conversation, Some(i)).await? {
                            ended = true;
                            break;
                        }
                    }
                    // A match ends the loop it is in; the builders after the loop still run.
                    if !ended && *on_max_iterations_error {
                        return Err(solver_error(
                            ErrorClass::SolverError,
                            format!(
                                "the loop reached `max_iterations` ({max_iterations}) without a `terminate_if` match"
                            ),
                        ));
                    }
                    Flow::Continue
                }
            };
            if let Flow::Terminate = flow {
                return Ok(Flow::Terminate);
            }
        }
        Ok(Flow::Continue)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_become_trace_items_with_their_extras() {
        let output = crate::model::io::parse_output(
            crate::model::io::Task::ChatCompletion,
            r#"{"choices":[{"message":{"role":"assistant","content":"hi","conversation_id":"c-1"},"references":[{"content":"chunk"}]}]}"#,
        )
        .unwrap();
        let items = output_items(&output);
        let Item::Message(m) = &items[0] else { panic!() };
        assert_eq!(m.extra["conversation_id"], "c-1");
        assert_eq!(m.content[0]["annotations"][0]["content"], "chunk");
        assert_eq!(assistant_message(&output)["conversation_id"], "c-1");
        let output = crate::model::io::parse_output(
            crate::model::io::Task::ChatCompletion,
            r#"{"items":[{"type":"message","id":"m","status":"completed","role":"assistant","content":[{"type":"output_text","text":"yo","annotations":[]}],"response_id":"r1"}]}"#,
        )
        .unwrap();
        assert_eq!(
            assistant_message(&output),
            json!({"role": "assistant", "content": "yo", "response_id": "r1"})
        );
    }

    #[test]
    fn recorded_traces_come_from_objects_or_text() {
        let sample = json!({"t": "{\"FORMAT\": \"open_responses\", \"items\": [{\"type\": \"message\", \"role\": \"user\", \"content\": [{\"type\": \"input_text\", \"text\": \"q\"}]}, {\"type\": \"message\", \"id\": \"\", \"status\": \"completed\", \"role\": \"assistant\", \"content\": [{\"type\": \"output_text\", \"text\": \"x\"}]}]}"});
        let trace = recorded_trace(sample.as_object().unwrap(), "t").unwrap();
        assert_eq!(trace.last_assistant_text().as_deref(), Some("x"));
        assert!(recorded_trace(&Map::new(), "t").is_err());
    }
}
