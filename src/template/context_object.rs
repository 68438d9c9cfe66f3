//! Objects in a prompt's context that are more than JSON: lf 3.17's `trace` (an Open Responses
//! [`Trace`] with its properties and `get_…()` methods, as `trace.get_last_assistant_text()` or
//! `{% for turn in trace.turns %}` use them) and docs-era values such as `model_output`, which
//! print as their text but also read as the object they came from
//! (`model_output.choices[0].message.content`).

use std::fmt;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use minijinja::{Error, ErrorKind, State};

use super::json::json_to_value;
use crate::open_responses::{Item, Trace, Turn, call_pairs, content_text, output_text};

/// A named object for a render context.
#[derive(Debug, Clone)]
pub enum ContextObject {
    Trace(Arc<Trace>),
    /// Prints as `text`; attributes, indexing and iteration read `fields`.
    Text {
        text: String,
        fields: serde_json::Value,
    },
}

impl ContextObject {
    pub(super) fn to_value(&self) -> Value {
        match self {
            ContextObject::Trace(trace) => Value::from_object(TraceObject(Arc::clone(trace))),
            ContextObject::Text { text, fields } => Value::from_object(TextObject {
                text: text.clone(),
                fields: json_to_value(fields),
            }),
        }
    }
}

/// Serialised fields of a trace, in lf's order.
const TRACE_FIELDS: &[&str] = &[
    "FORMAT",
    "items",
    "metadata",
    "events",
    "span_id",
    "span_name",
    "span_type",
];

#[derive(Debug)]
struct TraceObject(Arc<Trace>);

fn items<'a>(items: impl IntoIterator<Item = &'a Item>) -> Value {
    Value::from(
        items
            .into_iter()
            .map(|i| json_to_value(&i.to_json()))
            .collect::<Vec<_>>(),
    )
}

fn pair_values<'a>(pairs: Vec<(&'a Item, Option<&'a Item>)>) -> Value {
    Value::from(
        pairs
            .into_iter()
            .map(|(call, output)| {
                Value::from(vec![
                    json_to_value(&call.to_json()),
                    output.map_or(Value::from(()), |o| json_to_value(&o.to_json())),
                ])
            })
            .collect::<Vec<_>>(),
    )
}

fn optional_text(text: Option<String>) -> Value {
    text.map_or(Value::from(()), Value::from)
}

fn turn_value(turn: &Turn<'_>) -> Value {
    Value::from_object(TurnObject {
        user_message: json_to_value(&turn.user_message.to_json()),
        assistant_items: turn.assistant_items.iter().map(|i| (*i).clone()).collect(),
    })
}

fn one_string(method: &str, args: &[Value]) -> Result<String, Error> {
    match args {
        [arg] if arg.as_str().is_some() => Ok(arg.as_str().unwrap_or_default().to_owned()),
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("`trace.{method}()` takes one string argument"),
        )),
    }
}

fn item_arg(method: &str, args: &[Value]) -> Result<Item, Error> {
    let [arg] = args else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("`trace.{method}()` takes one item"),
        ));
    };
    let json = super::json::value_to_json(arg, 0)?;
    serde_json::from_value(json).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("`trace.{method}()` needs a trace item: {e}"),
        )
    })
}

impl Object for TraceObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let trace = &self.0;
        Some(match key.as_str()? {
            "FORMAT" => Value::from(trace.format.as_str()),
            "items" => items(&trace.items),
            "metadata" => trace.metadata.as_ref().map_or(Value::from(()), json_to_value),
            "events" => trace
                .events
                .as_ref()
                .map_or(Value::from(()), |e| json_to_value(&serde_json::Value::Array(e.clone()))),
            "span_id" => optional_text(trace.span_id.clone()),
            "span_name" => optional_text(trace.span_name.clone()),
            "span_type" => optional_text(trace.span_type.clone()),
            "preamble" => items(trace.preamble()),
            "conversation_items" => items(trace.conversation_items()),
            "system_messages" => items(trace.system_messages()),
            "turns" => Value::from(trace.turns().iter().map(turn_value).collect::<Vec<_>>()),
            "function_calls" => items(trace.function_calls()),
            "function_outputs" => items(trace.function_outputs()),
            "assistant_messages" => items(trace.assistant_messages()),
            "user_messages" => items(trace.user_messages()),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(TRACE_FIELDS)
    }

    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let trace = &self.0;
        let no_args = || {
            if args.is_empty() {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("`trace.{method}()` takes no arguments"),
                ))
            }
        };
        match method {
            "get_last_assistant_text" => no_args().map(|()| optional_text(trace.last_assistant_text())),
            "get_last_user_text" => no_args().map(|()| optional_text(trace.last_user_text())),
            "get_first_system_prompt" => no_args().map(|()| optional_text(trace.first_system_prompt())),
            "get_function_call_pairs" => no_args().map(|()| pair_values(trace.function_call_pairs())),
            "spans" => no_args().map(|()| Value::from(Vec::<Value>::new())),
            "get_function_calls_by_name" => {
                let name = one_string(method, args)?;
                Ok(items(trace.function_calls_by_name(&name)))
            }
            "get_function_output_for_call" => {
                let id = one_string(method, args)?;
                Ok(trace
                    .function_output_for_call(&id)
                    .map_or(Value::from(()), |o| json_to_value(&o.to_json())))
            }
            "get_function_call_arguments" => match item_arg(method, args)? {
                Item::FunctionCall(call) => serde_json::from_str::<serde_json::Value>(&call.arguments)
                    .map(|v| json_to_value(&v))
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::InvalidOperation,
                            format!("the function call's `arguments` are not JSON: {e}"),
                        )
                    }),
                _ => Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "`trace.get_function_call_arguments()` needs a function call",
                )),
            },
            "get_function_output_text" => {
                let item = item_arg(method, args)?;
                Ok(optional_text(output_text(&item)))
            }
            "_get_text_content" => match args {
                [content] => {
                    let json = super::json::value_to_json(content, 0)?;
                    Ok(Value::from(match json {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Array(parts) => content_text(&parts),
                        _ => String::new(),
                    }))
                }
                _ => Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "`trace._get_text_content()` takes one argument",
                )),
            },
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug)]
struct TurnObject {
    user_message: Value,
    assistant_items: Vec<Item>,
}

impl TurnObject {
    fn turn_items(&self, keep: impl Fn(&Item) -> bool) -> Value {
        items(self.assistant_items.iter().filter(|i| keep(i)))
    }
}

impl Object for TurnObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(match key.as_str()? {
            "user_message" => self.user_message.clone(),
            "assistant_items" => items(&self.assistant_items),
            "assistant_messages" => self.turn_items(|i| i.message().is_some_and(|m| m.role == "assistant")),
            "function_calls" => self.turn_items(|i| matches!(i, Item::FunctionCall(_))),
            "function_outputs" => self.turn_items(|i| matches!(i, Item::FunctionCallOutput(_))),
            "function_call_pairs" => pair_values(call_pairs(&self.assistant_items.iter().collect::<Vec<_>>())),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["user_message", "assistant_items"])
    }
}

#[derive(Debug)]
struct TextObject {
    text: String,
    fields: Value,
}

impl Object for TextObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.fields.get_item(key).ok().filter(|v| !v.is_undefined())
    }

    fn is_true(self: &Arc<Self>) -> bool {
        !self.text.is_empty()
    }

    fn call_method(self: &Arc<Self>, state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        // String methods (`model_output.strip()`) act on the text; others on the fields.
        let text = Value::from(self.text.as_str());
        match text.call_method(state, method, args) {
            Err(e) if e.kind() == ErrorKind::UnknownMethod => self.fields.call_method(state, method, args),
            other => other,
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{TemplateEngine, TemplateOrigin};
    use serde_json::json;

    fn render(source: &str, objects: &[(&str, ContextObject)]) -> String {
        let engine = TemplateEngine::new();
        engine
            .render_str_with(source, &TemplateOrigin::file("t"), &serde_json::Map::new(), objects)
            .unwrap_or_else(|e| panic!("{}", e.message))
    }

    fn trace() -> ContextObject {
        let trace: Trace = serde_json::from_value(json!({"items": [
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be brief."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Bern?"}]},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\": \"Bern\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]}
        ]}))
        .unwrap();
        ContextObject::Trace(Arc::new(trace))
    }

    #[test]
    fn prompts_read_the_trace_as_lf_3_17_templates_do() {
        let objects = [("trace", trace())];
        assert_eq!(render("{{ trace.get_last_assistant_text() }}", &objects), "Sunny.");
        assert_eq!(render("{{ trace.get_first_system_prompt() }}", &objects), "Be brief.");
        assert_eq!(render("{{ trace.get_last_user_text() }}", &objects), "Weather in Bern?");
        assert_eq!(
            render(
                "{% for turn in trace.turns %}{{ loop.index }}:{{ turn.assistant_messages | length }}:{{ turn.function_call_pairs | length }}{% endfor %}",
                &objects
            ),
            "1:1:1"
        );
        assert_eq!(
            render(
                "{% set call = trace.get_function_calls_by_name('weather')[0] %}{{ trace.get_function_call_arguments(call).city }} {{ trace.get_function_output_text(trace.get_function_output_for_call(call.call_id)) }}",
                &objects
            ),
            "Bern sunny"
        );
        assert_eq!(
            render("{{ trace.items | length }} {{ trace.FORMAT }}", &objects),
            "5 open_responses"
        );
        assert_eq!(
            render("{{ (trace | tojson | fromjson).items[0].role }}", &objects),
            "system"
        );
    }

    #[test]
    fn docs_era_outputs_print_as_text_and_read_as_objects() {
        let objects = [(
            "model_output",
            ContextObject::Text {
                text: "Paris".into(),
                fields: json!({"choices": [{"message": {"role": "assistant", "content": "Paris"}}]}),
            },
        )];
        assert_eq!(render("{{ model_output }}", &objects), "Paris");
        assert_eq!(
            render("{{ model_output.choices[0].message.content }}", &objects),
            "Paris"
        );
        assert_eq!(render("{{ model_output.lower() }}", &objects), "paris");
        assert_eq!(render("{% if model_output %}yes{% endif %}", &objects), "yes");
    }
}
