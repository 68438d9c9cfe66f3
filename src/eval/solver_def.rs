//! The `solver:` of a task as lf 3.17 defines it (aigo.md §8.5), read from YAML: one struct
//! per solver type and message builder, dispatched on `type` by hand so that every error points
//! at the key at fault (a serde-tagged enum would point at the solver's first line). Every
//! solver may carry a Python `postprocessor`.

use serde::Deserialize;

use crate::diagnostic::Diagnostic;
use crate::yaml::{Node, SourceText, Value, from_node, join};

#[derive(Debug, Clone)]
pub struct SolverDef {
    pub kind: SolverKind,
    /// `open_responses` (3.17's default: scorers get a `SolverTrace`) or the deprecated
    /// `latticeflow` (a `SingleSolverOutput` with `messages` and `output`).
    pub message_format: MessageFormat,
    pub postprocessor: Option<SourceText>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFormat {
    #[default]
    OpenResponses,
    Latticeflow,
}

#[derive(Debug, Clone)]
pub enum SolverKind {
    SingleTurn {
        input_builder: InputBuilder,
    },
    MultiTurn {
        message_builders: Vec<MessageBuilder>,
    },
    /// Several model inputs per sample (`grouped_single_turn_solver`).
    GroupedSingleTurn {
        input_builder: InputBuilder,
    },
    /// Scores a recorded trace from the dataset without calling a model.
    PassThrough {
        trace_column: String,
    },
    /// `async def run_solver(sample, model, trace) -> SolverTrace`.
    Python {
        snippet: SourceText,
    },
}

impl SolverKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            SolverKind::SingleTurn { .. } => "single_turn_solver",
            SolverKind::MultiTurn { .. } => "multi_turn_solver",
            SolverKind::GroupedSingleTurn { .. } => "grouped_single_turn_solver",
            SolverKind::PassThrough { .. } => "pass_through_solver",
            SolverKind::Python { .. } => "python",
        }
    }

    /// Whether the solver calls the model under test (and so needs a `model_key`).
    pub fn calls_model(&self) -> bool {
        !matches!(self, SolverKind::PassThrough { .. })
    }
}

#[derive(Debug, Clone)]
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

/// A `chat_message` builder (also the items of `extra_input_messages`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// Required by lf 3.17 (`chat_message`), absent in docs-era `extra_input_messages`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub role: String,
    pub content: String,
    pub terminate_if: Option<TerminateIf>,
}

#[derive(Debug, Clone)]
pub enum MessageBuilder {
    ChatMessage(ChatMessage),
    Generate {
        terminate_if: Option<TerminateIf>,
    },
    GenerateMessage {
        model_key: String,
        extra_input_messages: Vec<ChatMessage>,
        output_role: Option<String>,
        include_conversation: bool,
        terminate_if: Option<TerminateIf>,
    },
    Loop {
        message_builders: Vec<MessageBuilder>,
        max_iterations: u32,
        /// `continue` (or no nested `terminate_if`): go on after the last iteration; `error`:
        /// the sample fails.
        on_max_iterations_error: bool,
    },
    /// Injects a recorded trace from a dataset column.
    LoadTrace {
        trace_column: String,
    },
}

fn tag<'a>(node: &'a Node, path: &str, what: &str, default: Option<&'a str>) -> Result<&'a str, Diagnostic> {
    match node.get("type") {
        Some(n) => n.as_str().ok_or_else(|| {
            Diagnostic::new(format!("`type` of {what} must be a string, found {}", n.kind()))
                .at(&n.span)
                .with_path(join(path, "type"))
        }),
        None => default.ok_or_else(|| {
            Diagnostic::new(format!("{what} needs a `type`"))
                .at(&node.span)
                .with_path(path.to_owned())
        }),
    }
}

fn unknown_type(node: &Node, path: &str, what: &str, found: &str, known: &[&str]) -> Diagnostic {
    let at = node.get("type").unwrap_or(node);
    let hint = match crate::diagnostic::closest(found, known.iter().copied()) {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!(
            "expected one of {}",
            known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        ),
    };
    Diagnostic::new(format!("unknown {what} type `{found}`"))
        .at(&at.span)
        .with_path(join(path, "type"))
        .with_hint(hint)
}

fn list<'a>(node: &'a Node, path: &str) -> Result<&'a [Node], Diagnostic> {
    match &node.value {
        Value::Seq(items) => Ok(items),
        _ => Err(Diagnostic::new(format!("expected a list, found {}", node.kind()))
            .at(&node.span)
            .with_path(path.to_owned())),
    }
}

fn required(node: &mut Node, key: &str, path: &str) -> Result<Node, Diagnostic> {
    node.take(key).map(|(_, n)| n).ok_or_else(|| {
        Diagnostic::new(format!("missing required key `{key}`"))
            .at(&node.span)
            .with_path(path.to_owned())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostprocessorWire {
    #[serde(rename = "type")]
    _kind: PythonOnly,
    postprocess_snippet: SourceText,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum PythonOnly {
    Python,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonWire {
    #[serde(rename = "type")]
    _kind: String,
    message_format: Option<MessageFormat>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PassThroughWire {
    #[serde(rename = "type")]
    _kind: String,
    message_format: Option<MessageFormat>,
    trace_column: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PythonWire {
    #[serde(rename = "type")]
    _kind: String,
    message_format: Option<MessageFormat>,
    run_solver_snippet: SourceText,
}

const SOLVER_TYPES: &[&str] = &[
    "single_turn_solver",
    "multi_turn_solver",
    "grouped_single_turn_solver",
    "pass_through_solver",
    "python",
];

/// The JSON Schema of a task's `solver:`. Its builders nest and are read by hand, so the schema
/// names the solver types and leaves the rest to `lfeval validate`.
pub fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "required": ["type"],
        "properties": { "type": { "enum": SOLVER_TYPES } }
    })
}

/// Reads a task's `solver:`.
pub fn from_yaml(node: &Node, path: &str) -> Result<SolverDef, Diagnostic> {
    let mut node = node.clone();
    if node.as_map().is_none() {
        return Err(
            Diagnostic::new(format!("a solver must be a mapping, found {}", node.kind()))
                .at(&node.span)
                .with_path(path.to_owned()),
        );
    }
    let postprocessor = match node.take("postprocessor") {
        Some((_, n)) if !matches!(n.value, Value::Null) => {
            Some(from_node::<PostprocessorWire>(&n, &join(path, "postprocessor"))?.postprocess_snippet)
        }
        _ => None,
    };
    let kind = tag(&node, path, "a solver", None)?.to_owned();
    let (kind, message_format) = match kind.as_str() {
        "single_turn_solver" | "grouped_single_turn_solver" => {
            let builder_path = join(path, "input_builder");
            let builder = required(&mut node, "input_builder", path)?;
            let common: CommonWire = from_node(&node, path)?;
            let input_builder = input_builder(&builder, &builder_path)?;
            let kind = if kind == "single_turn_solver" {
                SolverKind::SingleTurn { input_builder }
            } else {
                SolverKind::GroupedSingleTurn { input_builder }
            };
            (kind, common.message_format)
        }
        "multi_turn_solver" => {
            let builders_path = join(path, "message_builders");
            let builders = required(&mut node, "message_builders", path)?;
            let common: CommonWire = from_node(&node, path)?;
            let message_builders = message_builders(&builders, &builders_path, true)?;
            (SolverKind::MultiTurn { message_builders }, common.message_format)
        }
        "pass_through_solver" => {
            let wire: PassThroughWire = from_node(&node, path)?;
            (
                SolverKind::PassThrough {
                    trace_column: wire.trace_column,
                },
                wire.message_format,
            )
        }
        "python" => {
            let wire: PythonWire = from_node(&node, path)?;
            (
                SolverKind::Python {
                    snippet: wire.run_solver_snippet,
                },
                wire.message_format,
            )
        }
        other => return Err(unknown_type(&node, path, "solver", other, SOLVER_TYPES)),
    };
    Ok(SolverDef {
        kind,
        message_format: message_format.unwrap_or_default(),
        postprocessor,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericWire {
    #[serde(rename = "type")]
    _kind: String,
    template: String,
}

fn input_builder(node: &Node, path: &str) -> Result<InputBuilder, Diagnostic> {
    let default = node.get("input_messages").map(|_| "chat_completion");
    match tag(node, path, "an input builder", default)? {
        "chat_completion" => {
            let mut node = node.clone();
            let messages = required(&mut node, "input_messages", path)?;
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Rest {
                #[serde(rename = "type")]
                _kind: Option<String>,
            }
            from_node::<Rest>(&node, path)?;
            let input_messages = from_node(&messages, &join(path, "input_messages"))?;
            Ok(InputBuilder::ChatCompletion { input_messages })
        }
        "generic" => Ok(InputBuilder::Generic {
            template: from_node::<GenericWire>(node, path)?.template,
        }),
        other => Err(unknown_type(
            node,
            path,
            "input builder",
            other,
            &["chat_completion", "generic"],
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateWire {
    #[serde(rename = "type")]
    _kind: String,
    terminate_if: Option<TerminateIf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateMessageWire {
    #[serde(rename = "type")]
    _kind: String,
    model_key: String,
    output_role: Option<String>,
    include_conversation: Option<bool>,
    terminate_if: Option<TerminateIf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoopWire {
    #[serde(rename = "type")]
    _kind: String,
    max_iterations: Option<u32>,
    on_max_iterations: Option<OnMax>,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum OnMax {
    Error,
    Continue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadTraceWire {
    #[serde(rename = "type")]
    _kind: String,
    trace_column: String,
}

const BUILDER_TYPES: &[&str] = &["chat_message", "generate", "generate_message", "loop", "load_trace"];

fn message_builders(node: &Node, path: &str, top_level: bool) -> Result<Vec<MessageBuilder>, Diagnostic> {
    let items = list(node, path)?;
    if items.is_empty() {
        return Err(Diagnostic::new("`message_builders` needs at least one builder")
            .at(&node.span)
            .with_path(path.to_owned()));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| message_builder(item, &format!("{path}[{i}]"), top_level))
        .collect()
}

fn has_terminate_if(builders: &[MessageBuilder]) -> bool {
    builders.iter().any(|b| match b {
        MessageBuilder::ChatMessage(m) => m.terminate_if.is_some(),
        MessageBuilder::Generate { terminate_if } | MessageBuilder::GenerateMessage { terminate_if, .. } => {
            terminate_if.is_some()
        }
        MessageBuilder::Loop { message_builders, .. } => has_terminate_if(message_builders),
        MessageBuilder::LoadTrace { .. } => false,
    })
}

fn message_builder(node: &Node, path: &str, top_level: bool) -> Result<MessageBuilder, Diagnostic> {
    match tag(node, path, "a message builder", None)? {
        "chat_message" => Ok(MessageBuilder::ChatMessage(from_node(node, path)?)),
        "generate" => Ok(MessageBuilder::Generate {
            terminate_if: from_node::<GenerateWire>(node, path)?.terminate_if,
        }),
        "generate_message" => {
            let mut node = node.clone();
            let extra_path = join(path, "extra_input_messages");
            let extra = required(&mut node, "extra_input_messages", path)?;
            let wire: GenerateMessageWire = from_node(&node, path)?;
            let messages: Vec<ChatMessage> = from_node(&extra, &extra_path)?;
            if messages.is_empty() {
                return Err(Diagnostic::new("`extra_input_messages` needs at least one message")
                    .at(&extra.span)
                    .with_path(extra_path));
            }
            for (i, (m, item)) in messages.iter().zip(list(&extra, &extra_path)?).enumerate() {
                if let Some(kind) = &m.kind
                    && kind != "chat_message"
                {
                    return Err(Diagnostic::new(format!("unknown message type `{kind}`"))
                        .at(item.get("type").map_or(&item.span, |n| &n.span))
                        .with_path(format!("{extra_path}[{i}].type"))
                        .with_hint("extra input messages are `chat_message`s"));
                }
            }
            Ok(MessageBuilder::GenerateMessage {
                model_key: wire.model_key,
                extra_input_messages: messages,
                output_role: wire.output_role,
                include_conversation: wire.include_conversation.unwrap_or(true),
                terminate_if: wire.terminate_if,
            })
        }
        "loop" => {
            let mut node = node.clone();
            let builders_path = join(path, "message_builders");
            let builders = required(&mut node, "message_builders", path)?;
            let wire: LoopWire = from_node(&node, path)?;
            let message_builders = message_builders(&builders, &builders_path, false)?;
            let error = wire.on_max_iterations.unwrap_or(OnMax::Error) == OnMax::Error;
            Ok(MessageBuilder::Loop {
                on_max_iterations_error: error && has_terminate_if(&message_builders),
                message_builders,
                max_iterations: wire.max_iterations.unwrap_or(10),
            })
        }
        "load_trace" if top_level => Ok(MessageBuilder::LoadTrace {
            trace_column: from_node::<LoadTraceWire>(node, path)?.trace_column,
        }),
        "load_trace" => Err(Diagnostic::new("`load_trace` can only be a top-level message builder")
            .at(&node.span)
            .with_path(path.to_owned())),
        other => Err(unknown_type(node, path, "message builder", other, BUILDER_TYPES)),
    }
}

/// Every template string a solver renders (compiled once per task specification).
pub fn templates(def: &SolverDef) -> Vec<&str> {
    fn builders<'a>(list: &'a [MessageBuilder], out: &mut Vec<&'a str>) {
        for b in list {
            match b {
                MessageBuilder::ChatMessage(m) => out.push(&m.content),
                MessageBuilder::GenerateMessage {
                    extra_input_messages, ..
                } => out.extend(extra_input_messages.iter().map(|m| m.content.as_str())),
                MessageBuilder::Loop { message_builders, .. } => builders(message_builders, out),
                MessageBuilder::Generate { .. } | MessageBuilder::LoadTrace { .. } => {}
            }
        }
    }
    let mut out = Vec::new();
    match &def.kind {
        SolverKind::SingleTurn { input_builder } | SolverKind::GroupedSingleTurn { input_builder } => {
            match input_builder {
                InputBuilder::ChatCompletion { input_messages } => {
                    out.extend(input_messages.iter().map(|m| m.content.as_str()));
                }
                InputBuilder::Generic { template } => out.push(template),
            }
        }
        SolverKind::MultiTurn { message_builders } => builders(message_builders, &mut out),
        SolverKind::PassThrough { .. } | SolverKind::Python { .. } => {}
    }
    out
}

/// Every model a solver calls besides the model under test (`generate_message` models).
pub fn other_models(def: &SolverDef) -> Vec<&str> {
    fn builders<'a>(list: &'a [MessageBuilder], out: &mut Vec<&'a str>) {
        for b in list {
            match b {
                MessageBuilder::GenerateMessage { model_key, .. } => out.push(model_key),
                MessageBuilder::Loop { message_builders, .. } => builders(message_builders, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    if let SolverKind::MultiTurn { message_builders } = &def.kind {
        builders(message_builders, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SolverDef, Diagnostic> {
        from_yaml(&crate::yaml::load_str("t.yaml", text).unwrap(), "definition.solver")
    }

    #[test]
    fn lf_317_multi_turn_solvers_load() {
        let def = parse(
            "type: multi_turn_solver\nmessage_builders:\n  - type: chat_message\n    role: user\n    content: hi\n  - type: loop\n    max_iterations: 3\n    on_max_iterations: continue\n    message_builders:\n      - type: generate\n      - type: generate_message\n        model_key: sim\n        output_role: user\n        extra_input_messages:\n          - type: chat_message\n            role: user\n            content: go on\n        terminate_if: {includes: '<done>', keep_iteration: false}\n",
        )
        .unwrap();
        assert_eq!(other_models(&def), vec!["sim"]);
        assert_eq!(templates(&def), vec!["hi", "go on"]);
    }

    #[test]
    fn errors_point_at_the_key() {
        let err = parse(
            "type: multi_turn_solver\nmessage_builders:\n  - type: generate_message\n    model_key: m\n    extra_input_messages:\n      - {type: chat_message, role: user, content: x, bogus: 1}\n",
        )
        .unwrap_err();
        assert!(err.message.contains("unknown key `bogus`"), "{err}");
        assert_eq!(err.location.unwrap().line, 6);
        let err = parse(
            "type: single_turn_solver\ninput_builder: {type: generic, template: x}\npostprocessor: {type: python}\n",
        )
        .unwrap_err();
        assert!(err.message.contains("postprocess_snippet"), "{err}");
        assert!(parse("type: pass_through_solver\ntrace_column: trace").is_ok());
        assert!(parse("type: python\nrun_solver_snippet: 'async def run_solver(s, m, t): return t'").is_ok());
        let err = parse("type: single_turn_solvr\n").unwrap_err();
        assert_eq!(err.hint.as_deref(), Some("did you mean `single_turn_solver`?"));
    }
}
