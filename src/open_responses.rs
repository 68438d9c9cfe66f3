//! The Open Responses trace that lf 3.17 hands to judges and Python scorers as `trace` (and
//! `solver_output.trace`): conversation [`Item`]s (messages with content parts, function calls
//! and their outputs) and the [`Trace`] queries lf's `Trace` type offers (`turns`,
//! `assistant_messages`, `get_last_assistant_text()`, `get_function_call_pairs()`, …). Extra keys
//! on an item are kept (stateful adapters put their state on the assistant message), and a
//! message's content is always a list of parts, as in lf.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Ids of items lfeval builds itself (lf's `SYNTHETIC_MESSAGE_ID`).
pub const SYNTHETIC_ID: &str = "";

/// One item of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    Message(Message),
    FunctionCall(FunctionCall),
    FunctionCallOutput(FunctionCallOutput),
    CustomTaskInputMessage(CustomContent),
    CustomTaskOutputMessage(CustomContent),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub id: String,
    #[serde(default = "completed")]
    pub status: String,
    pub role: String,
    /// Content parts (`input_text`, `output_text`, `refusal`, …), each with its `type`.
    pub content: Vec<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    #[serde(default)]
    pub id: String,
    pub call_id: String,
    pub name: String,
    /// JSON text.
    pub arguments: String,
    #[serde(default = "completed")]
    pub status: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallOutput {
    #[serde(default)]
    pub id: String,
    pub call_id: String,
    /// A string or a list of content parts.
    pub output: Value,
    #[serde(default = "completed")]
    pub status: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomContent {
    pub content: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn completed() -> String {
    "completed".to_owned()
}

impl Message {
    /// A message lfeval builds from a chat message: user, system and developer text as
    /// `input_text`, assistant text as `output_text`; extra fields of the chat message are kept.
    pub fn from_chat(message: &Map<String, Value>) -> Message {
        let (role, part_type) = chat_role(message);
        let content = match message.get("content") {
            Some(Value::String(text)) => vec![text_part(part_type, text)],
            Some(Value::Array(parts)) => parts
                .iter()
                .map(|p| match p {
                    Value::String(text) => text_part(part_type, text),
                    other => other.clone(),
                })
                .collect(),
            _ => vec![text_part(part_type, "")],
        };
        let extra = chat_extra(message).map(|(k, v)| (k.clone(), v.clone())).collect();
        Message {
            id: SYNTHETIC_ID.to_owned(),
            status: completed(),
            role: role.to_owned(),
            content,
            extra,
        }
    }

    pub fn text(&self) -> String {
        content_text(&self.content)
    }

    /// Whether this is [`Message::from_chat`] of `message`, checked without building it.
    fn is_from_chat(&self, message: &Map<String, Value>) -> bool {
        let (role, part_type) = chat_role(message);
        let content_fits = match message.get("content") {
            Some(Value::String(text)) => matches!(&self.content[..], [part] if is_text_part(part, part_type, text)),
            Some(Value::Array(parts)) => {
                parts.len() == self.content.len()
                    && parts.iter().zip(&self.content).all(|(given, part)| match given {
                        Value::String(text) => is_text_part(part, part_type, text),
                        other => part == other,
                    })
            }
            _ => matches!(&self.content[..], [part] if is_text_part(part, part_type, "")),
        };
        self.id == SYNTHETIC_ID
            && self.status == "completed"
            && self.role == role
            && content_fits
            && chat_extra(message).count() == self.extra.len()
            && chat_extra(message).all(|(k, v)| self.extra.get(k) == Some(v))
    }
}

/// A chat message's role (`user` when it has none) and the type of its text parts.
fn chat_role(message: &Map<String, Value>) -> (&str, &'static str) {
    let role = message.get("role").and_then(Value::as_str).unwrap_or("user");
    let part_type = if role == "assistant" {
        "output_text"
    } else {
        "input_text"
    };
    (role, part_type)
}

/// The fields of a chat message its trace message keeps as they are (adapter state).
fn chat_extra(message: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    message
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "role" | "content" | "tool_calls" | "tool_call_id"))
}

fn text_part(part_type: &str, text: &str) -> Value {
    if part_type == "output_text" {
        json!({"type": "output_text", "text": text, "annotations": []})
    } else {
        json!({"type": part_type, "text": text})
    }
}

/// Whether `part` is `text_part(part_type, text)`.
fn is_text_part(part: &Value, part_type: &str, text: &str) -> bool {
    let Some(part) = part.as_object() else { return false };
    let output = part_type == "output_text";
    part.len() == if output { 3 } else { 2 }
        && part.get("type").and_then(Value::as_str) == Some(part_type)
        && part.get("text").and_then(Value::as_str) == Some(text)
        && (!output
            || part
                .get("annotations")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty))
}

/// lf's `Trace._get_text_content`: each part's `text` (or `refusal`), joined by newlines.
pub fn content_text(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| {
            p.get("text")
                .and_then(Value::as_str)
                .or_else(|| p.get("refusal").and_then(Value::as_str))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Item {
    pub fn message(&self) -> Option<&Message> {
        match self {
            Item::Message(m) => Some(m),
            _ => None,
        }
    }

    fn has_role(&self, role: &str) -> bool {
        self.message().is_some_and(|m| m.role == role)
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The items a chat message stands for: the message itself, its `tool_calls` as
    /// function calls, or for role `tool` a function call output.
    pub fn from_chat(message: &Map<String, Value>) -> Vec<Item> {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("user");
        if role == "tool" {
            return vec![Item::FunctionCallOutput(FunctionCallOutput {
                id: SYNTHETIC_ID.to_owned(),
                call_id: message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                output: message.get("content").cloned().unwrap_or(Value::String(String::new())),
                status: completed(),
                extra: Map::new(),
            })];
        }
        let calls = message.get("tool_calls").and_then(Value::as_array);
        let mut items = Vec::new();
        let has_text = matches!(message.get("content"), Some(Value::String(s)) if !s.is_empty())
            || matches!(message.get("content"), Some(Value::Array(_)));
        if calls.is_none() || has_text {
            items.push(Item::Message(Message::from_chat(message)));
        }
        for call in calls.into_iter().flatten() {
            let function = call.get("function");
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
            items.push(Item::FunctionCall(FunctionCall {
                id: SYNTHETIC_ID.to_owned(),
                call_id: text(call.get("id")),
                name: text(function.and_then(|f| f.get("name"))),
                arguments: match function.and_then(|f| f.get("arguments")) {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "{}".to_owned(),
                },
                status: completed(),
                extra: Map::new(),
            }));
        }
        items
    }
}

/// A conversation trace (lf's `Trace`; `FORMAT` is part of its serialised form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    #[serde(rename = "FORMAT", default = "open_responses")]
    pub format: String,
    pub items: Vec<Item>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_type: Option<String>,
}

/// The `FORMAT` of an Open Responses trace.
const FORMAT: &str = "open_responses";

fn open_responses() -> String {
    FORMAT.to_owned()
}

impl Default for Trace {
    fn default() -> Trace {
        Trace::from_items(Vec::new())
    }
}

/// One user message and everything after it up to the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn<'a> {
    pub user_message: &'a Item,
    pub assistant_items: Vec<&'a Item>,
}

impl<'a> Turn<'a> {
    pub fn assistant_messages(&self) -> Vec<&'a Item> {
        self.assistant_items
            .iter()
            .copied()
            .filter(|i| i.has_role("assistant"))
            .collect()
    }

    pub fn function_calls(&self) -> Vec<&'a Item> {
        self.assistant_items
            .iter()
            .copied()
            .filter(|i| matches!(i, Item::FunctionCall(_)))
            .collect()
    }

    pub fn function_outputs(&self) -> Vec<&'a Item> {
        self.assistant_items
            .iter()
            .copied()
            .filter(|i| matches!(i, Item::FunctionCallOutput(_)))
            .collect()
    }

    pub fn function_call_pairs(&self) -> Vec<(&'a Item, Option<&'a Item>)> {
        call_pairs(&self.assistant_items)
    }
}

/// The function calls among `items`, each with its output (matched by `call_id`) if any.
pub fn call_pairs<'a>(items: &[&'a Item]) -> Vec<(&'a Item, Option<&'a Item>)> {
    let calls = items
        .iter()
        .copied()
        .filter(|i| matches!(i, Item::FunctionCall(_)))
        .collect();
    let outputs: Vec<&Item> = items
        .iter()
        .copied()
        .filter(|i| matches!(i, Item::FunctionCallOutput(_)))
        .collect();
    pairs(calls, &outputs)
}

fn call_id(item: &Item) -> Option<&str> {
    match item {
        Item::FunctionCall(c) => Some(&c.call_id),
        Item::FunctionCallOutput(o) => Some(&o.call_id),
        _ => None,
    }
}

/// Calls matched with their outputs by `call_id` (the last output of an id wins, as in lf).
fn pairs<'a>(calls: Vec<&'a Item>, outputs: &[&'a Item]) -> Vec<(&'a Item, Option<&'a Item>)> {
    calls
        .into_iter()
        .map(|call| {
            let output = outputs.iter().rev().find(|o| call_id(o) == call_id(call)).copied();
            (call, output)
        })
        .collect()
}

impl Trace {
    pub fn from_items(items: Vec<Item>) -> Trace {
        Trace {
            format: open_responses(),
            items,
            metadata: None,
            events: None,
            span_id: None,
            span_name: None,
            span_type: None,
        }
    }

    /// The trace a chat conversation makes: each message's [`Item::from_chat`].
    pub fn from_chat(messages: &[Value]) -> Trace {
        Trace::from_items(
            messages
                .iter()
                .filter_map(Value::as_object)
                .flat_map(Item::from_chat)
                .collect(),
        )
    }

    /// Whether this is [`Trace::from_chat`] of `messages`. Every record asks (a line leaves out
    /// a trace its messages make), so plain messages are compared in place, not built.
    pub fn is_from_chat(&self, messages: &[Value]) -> bool {
        // Exhaustive, so that a field added to traces is not forgotten here.
        let Trace {
            format,
            items,
            metadata,
            events,
            span_id,
            span_name,
            span_type,
        } = self;
        if format != FORMAT
            || metadata.is_some()
            || events.is_some()
            || span_id.is_some()
            || span_name.is_some()
            || span_type.is_some()
        {
            return false;
        }
        let mut rest = &items[..];
        for message in messages.iter().filter_map(Value::as_object) {
            let role = message.get("role").and_then(Value::as_str);
            let calls = message.get("tool_calls").and_then(Value::as_array);
            if role != Some("tool") && calls.is_none() {
                // A plain message makes exactly one message item.
                match rest.split_first() {
                    Some((Item::Message(m), tail)) if m.is_from_chat(message) => rest = tail,
                    _ => return false,
                }
                continue;
            }
            let made = Item::from_chat(message);
            match rest.split_at_checked(made.len()) {
                Some((head, tail)) if head == made => rest = tail,
                _ => return false,
            }
        }
        rest.is_empty()
    }

    /// Items before the first user message.
    pub fn preamble(&self) -> &[Item] {
        let first_user = self
            .items
            .iter()
            .position(|i| i.has_role("user"))
            .unwrap_or(self.items.len());
        &self.items[..first_user]
    }

    /// Items from the first user message on.
    pub fn conversation_items(&self) -> &[Item] {
        &self.items[self.preamble().len()..]
    }

    /// System messages of the preamble.
    pub fn system_messages(&self) -> Vec<&Item> {
        self.preamble().iter().filter(|i| i.has_role("system")).collect()
    }

    pub fn turns(&self) -> Vec<Turn<'_>> {
        let mut turns: Vec<Turn<'_>> = Vec::new();
        for item in self.conversation_items() {
            if item.has_role("user") {
                turns.push(Turn {
                    user_message: item,
                    assistant_items: Vec::new(),
                });
            } else if let Some(turn) = turns.last_mut() {
                turn.assistant_items.push(item);
            }
        }
        turns
    }

    fn conversation_where(&self, keep: impl Fn(&Item) -> bool) -> Vec<&Item> {
        self.conversation_items().iter().filter(|i| keep(i)).collect()
    }

    pub fn function_calls(&self) -> Vec<&Item> {
        self.conversation_where(|i| matches!(i, Item::FunctionCall(_)))
    }

    pub fn function_outputs(&self) -> Vec<&Item> {
        self.conversation_where(|i| matches!(i, Item::FunctionCallOutput(_)))
    }

    pub fn assistant_messages(&self) -> Vec<&Item> {
        self.conversation_where(|i| i.has_role("assistant"))
    }

    pub fn user_messages(&self) -> Vec<&Item> {
        self.conversation_where(|i| i.has_role("user"))
    }

    pub fn function_calls_by_name(&self, name: &str) -> Vec<&Item> {
        self.function_calls()
            .into_iter()
            .filter(|i| matches!(i, Item::FunctionCall(c) if c.name == name))
            .collect()
    }

    pub fn function_output_for_call(&self, id: &str) -> Option<&Item> {
        self.function_outputs().into_iter().find(|o| call_id(o) == Some(id))
    }

    pub fn function_call_pairs(&self) -> Vec<(&Item, Option<&Item>)> {
        pairs(self.function_calls(), &self.function_outputs())
    }

    pub fn last_assistant_text(&self) -> Option<String> {
        self.assistant_messages()
            .last()
            .and_then(|i| i.message())
            .map(Message::text)
    }

    pub fn last_user_text(&self) -> Option<String> {
        self.user_messages().last().and_then(|i| i.message()).map(Message::text)
    }

    pub fn first_system_prompt(&self) -> Option<String> {
        self.system_messages()
            .first()
            .and_then(|i| i.message())
            .map(Message::text)
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `get_function_output_text`: the text of a function call output.
pub fn output_text(item: &Item) -> Option<String> {
    match item {
        Item::FunctionCallOutput(o) => Some(match &o.output {
            Value::String(s) => s.clone(),
            Value::Array(parts) => content_text(parts),
            other => other.to_string(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(role: &str, content: &str) -> Map<String, Value> {
        json!({"role": role, "content": content}).as_object().cloned().unwrap()
    }

    fn sample_trace() -> Trace {
        let mut items = Vec::new();
        items.extend(Item::from_chat(&chat("system", "Be brief.")));
        items.extend(Item::from_chat(&chat("user", "Weather?")));
        items.extend(Item::from_chat(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Bern\"}"}}
            ]})
            .as_object()
            .unwrap(),
        ));
        items.extend(Item::from_chat(
            json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"})
                .as_object()
                .unwrap(),
        ));
        items.extend(Item::from_chat(
            json!({"role": "assistant", "content": "Sunny.", "conversation_id": "x"})
                .as_object()
                .unwrap(),
        ));
        items.extend(Item::from_chat(&chat("user", "Thanks")));
        Trace::from_items(items)
    }

    #[test]
    fn queries_follow_lf_semantics() {
        let trace = sample_trace();
        assert_eq!(trace.preamble().len(), 1);
        assert_eq!(trace.first_system_prompt().as_deref(), Some("Be brief."));
        assert_eq!(trace.last_assistant_text().as_deref(), Some("Sunny."));
        assert_eq!(trace.last_user_text().as_deref(), Some("Thanks"));
        let turns = trace.turns();
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0].assistant_items.len(), 3);
        assert_eq!(turns[0].function_call_pairs().len(), 1);
        let pairs = trace.function_call_pairs();
        assert_eq!(pairs[0].1.and_then(output_text).as_deref(), Some("sunny"));
        assert_eq!(trace.function_calls_by_name("weather").len(), 1);
        assert!(trace.function_output_for_call("nope").is_none());
        // Extra fields (adapter state) stay on the message.
        let last = trace.assistant_messages()[0].message().unwrap().clone();
        assert_eq!(last.extra["conversation_id"], "x");
    }

    #[test]
    fn a_trace_is_recognised_as_the_one_its_messages_make() {
        let conversations: Vec<Vec<Value>> = vec![
            vec![
                json!({"role": "user", "content": "q"}),
                json!({"role": "assistant", "content": "a"}),
            ],
            vec![
                json!({"role": "system", "content": "Be brief."}),
                json!({"role": "user", "content": [{"type": "input_image", "url": "x"}, "and text"]}),
                json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": {"city": "Bern"}}}
                ]}),
                json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"}),
                json!({"role": "assistant", "content": "Sunny.", "conversation_id": "x"}),
            ],
            vec![
                json!({"content": "no role"}),
                json!({"role": 3}),
                json!("not a message"),
            ],
            vec![json!({"role": "assistant", "content": "a", "tool_calls": "not a list"})],
            vec![json!({"role": "user", "content": "q"})],
            vec![],
        ];
        let mut traces: Vec<Trace> = conversations.iter().map(|m| Trace::from_chat(m)).collect();
        let mut changed = traces[1].clone();
        changed.span_id = Some("s".into());
        traces.push(changed);
        let mut changed = traces[0].clone();
        if let Some(Item::Message(m)) = changed.items.last_mut() {
            m.content[0]["annotations"] = json!([{"type": "text_citation"}]);
        }
        traces.push(changed);
        let mut changed = traces[1].clone();
        if let Some(Item::Message(m)) = changed.items.last_mut() {
            m.extra.insert("conversation_id".into(), json!("y"));
        }
        traces.push(changed);
        for trace in &traces {
            for messages in &conversations {
                assert_eq!(
                    trace.is_from_chat(messages),
                    *trace == Trace::from_chat(messages),
                    "{trace:?} from {messages:?}"
                );
            }
        }
    }

    #[test]
    fn the_serialised_form_is_lfs() {
        let trace = sample_trace();
        let value = trace.to_json();
        assert_eq!(value["FORMAT"], "open_responses");
        assert_eq!(value["items"][0]["type"], "message");
        assert_eq!(value["items"][0]["content"][0]["type"], "input_text");
        assert_eq!(value["items"][2]["type"], "function_call");
        assert_eq!(value["items"][4]["conversation_id"], "x");
        let back: Trace = serde_json::from_value(value).unwrap();
        assert_eq!(back, trace);
    }
}
