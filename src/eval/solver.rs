//! Solvers (aigo.md §8.5): turn a dataset sample into model calls. `single_turn_solver` builds
//! one model input (chat messages, or a `generic` JSON template); `multi_turn_solver` runs a
//! conversation from `chat_message`, `generate`, `generate_message` and `loop` builders, ending
//! early when a `terminate_if` text appears.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error_class::ErrorClass;
use crate::eval::record::{SampleError, Stage, reply_message};
use crate::model::io::{ModelOutput, Usage};
use crate::model::registry::Registry;
use crate::model::runtime::ModelRuntime;
use crate::model::trace::{Call, CallPurpose};
use crate::template::{TemplateEngine, TemplateOrigin};

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SolverDef {
    SingleTurnSolver {
        input_builder: InputBuilder,
        message_format: Option<String>,
    },
    MultiTurnSolver {
        message_builders: Vec<MessageBuilder>,
        message_format: Option<String>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InputBuilder {
    ChatCompletion { input_messages: Vec<MessageTemplate> },
    Generic { template: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageTemplate {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminateIf {
    pub includes: String,
    #[serde(default = "yes")]
    pub keep_iteration: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MessageBuilder {
    ChatMessage {
        role: String,
        content: String,
        terminate_if: Option<TerminateIf>,
    },
    Generate {
        terminate_if: Option<TerminateIf>,
    },
    GenerateMessage {
        model_key: String,
        #[serde(default)]
        extra_input_messages: Vec<MessageTemplate>,
        output_role: Option<String>,
        include_conversation: Option<bool>,
        terminate_if: Option<TerminateIf>,
    },
    Loop {
        message_builders: Vec<MessageBuilder>,
        max_iterations: Option<u32>,
        on_max_iterations: Option<String>,
    },
}

/// What a solver produced.
#[derive(Debug, Clone, Default)]
pub struct Solved {
    pub output: Option<ModelOutput>,
    /// The model input of the last call (single turn) or the conversation so far.
    pub model_input: Value,
    pub messages: Vec<Value>,
    pub usage: Usage,
}

pub struct SolveContext<'a> {
    pub sample: &'a Map<String, Value>,
    pub target: &'a ModelRuntime,
    pub registry: &'a Registry,
    pub templates: &'a TemplateEngine,
    pub origin: &'a TemplateOrigin,
    pub calls: &'a mut Vec<Call>,
}

impl SolveContext<'_> {
    fn render(&self, template: &str, extra: &[(&str, Value)]) -> Result<String, SampleError> {
        let mut ctx = Map::new();
        ctx.insert("sample".into(), Value::Object(self.sample.clone()));
        for (k, v) in extra {
            ctx.insert((*k).to_owned(), v.clone());
        }
        self.templates.render_str(template, self.origin, &ctx).map_err(|e| {
            SampleError::new(
                Stage::Solver,
                ErrorClass::TemplateError,
                format!("cannot render solver template: {}", e.message),
            )
            .with_location(e.location())
            .with_detail(e.excerpt.clone().unwrap_or_default())
        })
    }

    async fn call(
        &mut self,
        model: &ModelRuntime,
        input: &Value,
        purpose: CallPurpose,
        usage: &mut Usage,
    ) -> Result<ModelOutput, SampleError> {
        let sample = Value::Object(self.sample.clone());
        let (trace, result) = model.infer(input, &Map::new(), Some(&sample)).await;
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

/// Every template string a solver renders (compiled once per task specification).
pub fn templates(def: &SolverDef) -> Vec<&str> {
    fn builders<'a>(list: &'a [MessageBuilder], out: &mut Vec<&'a str>) {
        for b in list {
            match b {
                MessageBuilder::ChatMessage { content, .. } => out.push(content),
                MessageBuilder::GenerateMessage {
                    extra_input_messages, ..
                } => {
                    out.extend(extra_input_messages.iter().map(|m| m.content.as_str()));
                }
                MessageBuilder::Loop { message_builders, .. } => builders(message_builders, out),
                MessageBuilder::Generate { .. } => {}
            }
        }
    }
    let mut out = Vec::new();
    match def {
        SolverDef::SingleTurnSolver {
            input_builder: InputBuilder::ChatCompletion { input_messages },
            ..
        } => {
            out.extend(input_messages.iter().map(|m| m.content.as_str()));
        }
        SolverDef::SingleTurnSolver {
            input_builder: InputBuilder::Generic { template },
            ..
        } => out.push(template),
        SolverDef::MultiTurnSolver { message_builders, .. } => builders(message_builders, &mut out),
    }
    out
}

pub async fn solve(def: &SolverDef, cx: &mut SolveContext<'_>) -> Result<Solved, SampleError> {
    let mut solved = Solved::default();
    match def {
        SolverDef::SingleTurnSolver {
            input_builder,
            message_format: _,
        } => {
            let input = match input_builder {
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
                        SampleError::new(
                            Stage::Solver,
                            ErrorClass::InvalidInput,
                            format!("the `generic` input template did not render valid JSON: {e}"),
                        )
                        .with_detail(text.clone())
                    })?
                }
            };
            solved.model_input = input.clone();
            let output = cx
                .call(cx.target, &input, CallPurpose::Solver, &mut solved.usage)
                .await?;
            let mut messages = input
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            messages.push(assistant_message(&output));
            solved.messages = messages;
            solved.output = Some(output);
        }
        SolverDef::MultiTurnSolver {
            message_builders,
            message_format: _,
        } => {
            let mut conversation = Conversation {
                messages: Vec::new(),
                last: None,
                previous: None,
                usage: Usage::default(),
            };
            run_builders(message_builders, cx, &mut conversation, None).await?;
            solved.model_input = json!({ "messages": conversation.messages });
            solved.messages = conversation.messages;
            solved.output = conversation.last;
            solved.usage = conversation.usage;
        }
    }
    Ok(solved)
}

/// The assistant message a model output adds to the conversation.
fn assistant_message(output: &ModelOutput) -> Value {
    reply_message(&output.value, output.text.as_deref())
}

struct Conversation {
    messages: Vec<Value>,
    /// The target model's latest output (what scorers see), and the one before it, restored when
    /// `keep_iteration: false` drops the latest reply from the transcript.
    last: Option<ModelOutput>,
    previous: Option<ModelOutput>,
    usage: Usage,
}

enum Flow {
    Continue,
    Terminate,
}

fn terminates(rule: Option<&TerminateIf>, conversation: &mut Conversation) -> Flow {
    let Some(rule) = rule else { return Flow::Continue };
    let text = conversation
        .messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !text.contains(&rule.includes) {
        return Flow::Continue;
    }
    if !rule.keep_iteration {
        let dropped = conversation.messages.pop();
        let was_target_reply = dropped.as_ref().and_then(|m| m.get("role")).and_then(Value::as_str)
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
                let mut extra = vec![("messages", Value::Array(conversation.messages.clone()))];
                if let Some(i) = loop_index {
                    extra.push(("loop_index", json!(i)));
                }
                extra
            };
            let flow = match builder {
                MessageBuilder::ChatMessage {
                    role,
                    content,
                    terminate_if,
                } => {
                    let content = cx.render(content, &extra(conversation))?;
                    conversation.messages.push(json!({"role": role, "content": content}));
                    terminates(terminate_if.as_ref(), conversation)
                }
                MessageBuilder::Generate { terminate_if } => {
                    let input = json!({"messages": conversation.messages});
                    let output = cx
                        .call(cx.target, &input, CallPurpose::Solver, &mut conversation.usage)
                        .await?;
                    conversation.messages.push(assistant_message(&output));
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
                        .map_err(|d| SampleError::new(Stage::Solver, ErrorClass::Internal, d.message.clone()))?;
                    let mut messages = if include_conversation.unwrap_or(true) {
                        conversation.messages.clone()
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
                    conversation
                        .messages
                        .push(json!({"role": role, "content": output.text.clone().unwrap_or_default()}));
                    terminates(terminate_if.as_ref(), conversation)
                }
                MessageBuilder::Loop {
                    message_builders,
                    max_iterations,
                    on_max_iterations,
                } => {
                    let max = max_iterations.unwrap_or(10);
                    let mut ended = false;
                    for i in 0..max {
                        if let Flow::Terminate = run_builders(message_builders, cx, conversation, Some(i)).await? {
                            ended = true;
                            break;
                        }
                    }
                    // A match ends the loop it is in; the builders after the loop still run.
                    if !ended && on_max_iterations.as_deref() != Some("continue") {
                        return Err(SampleError::new(
                            Stage::Solver,
                            ErrorClass::SolverError,
                            format!("the loop reached `max_iterations` ({max}) without a `terminate_if` match"),
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
