//! The canonical model I/O shapes (aigo.md §4): what a model receives after a solver builds its
//! input, and what `process_output` must produce, checked against the model's task.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    #[default]
    ChatCompletion,
    Embeddings,
    Custom,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::ChatCompletion => "chat_completion",
            Task::Embeddings => "embeddings",
            Task::Custom => "custom",
        }
    }

    /// The modality shown to adapters as `model_info.modality`.
    pub fn modality(self) -> &'static str {
        match self {
            Task::Embeddings | Task::ChatCompletion => "text",
            Task::Custom => "custom",
        }
    }

    /// The default test input (`model test` without `--model-input`).
    pub fn default_input(self) -> Option<Value> {
        match self {
            Task::ChatCompletion => Some(serde_json::json!({"messages": [{"role": "user", "content": "Hello!"}]})),
            Task::Embeddings | Task::Custom => None,
        }
    }
}

/// Token usage in AI GO! names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub num_prompt_tokens: u64,
    pub num_completion_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.num_prompt_tokens += other.num_prompt_tokens;
        self.num_completion_tokens += other.num_completion_tokens;
    }
}

/// A model output that passed validation.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    pub value: Value,
    /// The response text scorers look at: the first choice's content, or the last assistant
    /// message of an Open Responses trace.
    pub text: Option<String>,
    pub refusal: Option<String>,
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum OutputError {
    /// The adapter reported a failed inference with `{"error": "..."}`.
    #[error("the model returned an error: {0}")]
    Reported(String),
    #[error("{problem}")]
    Malformed { problem: String, rendered: String },
}

/// Checks a model input against the task's input shape. Chat messages may carry tool calls
/// (`tool_calls` on an assistant message, role `tool` for their results) and content parts.
pub fn validate_input(task: Task, input: &Value) -> Result<(), String> {
    match task {
        Task::ChatCompletion => {
            let messages = input
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("a chat_completion input needs a `messages` list")?;
            for (i, m) in messages.iter().enumerate() {
                let role = m
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or(format!("`messages[{i}]` has no `role`"))?;
                if !matches!(role, "user" | "system" | "assistant" | "developer" | "tool") {
                    return Err(format!(
                        "`messages[{i}].role` is `{role}`; expected `user`, `system`, `assistant`, `developer` or `tool`"
                    ));
                }
                let has_calls = m.get("tool_calls").is_some_and(|c| !c.is_null());
                if m.get("content").is_none() && !has_calls {
                    return Err(format!("`messages[{i}]` has no `content`"));
                }
            }
            Ok(())
        }
        Task::Embeddings => match input.as_array() {
            Some(items) if items.iter().all(Value::is_string) => Ok(()),
            _ => Err("an embeddings input must be a JSON list of strings".to_owned()),
        },
        Task::Custom => Ok(()),
    }
}

/// Token counts in any of the spellings adapters produce: AI GO!'s `num_prompt_tokens` /
/// `num_completion_tokens`, OpenAI Chat's `prompt_tokens` / `completion_tokens`, or the Responses
/// and Messages APIs' `input_tokens` / `output_tokens`. `null` counts as 0.
pub fn parse_usage(usage: &Value) -> Result<Usage, String> {
    let Some(map) = usage.as_object() else {
        return Err(format!("`usage` must be an object, found `{usage}`"));
    };
    let count = |names: &[&str]| -> Result<u64, String> {
        for name in names {
            match map.get(*name) {
                None | Some(Value::Null) => continue,
                Some(v) => {
                    return v
                        .as_u64()
                        .or_else(|| v.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
                        .ok_or(format!("`usage.{name}` must be a whole number, found `{v}`"));
                }
            }
        }
        Ok(0)
    };
    Ok(Usage {
        num_prompt_tokens: count(&["num_prompt_tokens", "prompt_tokens", "input_tokens"])?,
        num_completion_tokens: count(&["num_completion_tokens", "completion_tokens", "output_tokens"])?,
    })
}

/// Parses and checks what `process_output` rendered.
pub fn parse_output(task: Task, rendered: &str) -> Result<ModelOutput, OutputError> {
    let malformed = |problem: String| OutputError::Malformed {
        problem,
        rendered: rendered.to_owned(),
    };
    let value: Value = serde_json::from_str(rendered.trim())
        .map_err(|e| malformed(format!("the output template did not produce valid JSON: {e}")))?;
    if let Some(error) = value.get("error") {
        let message = match error {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned),
            other => other.to_string(),
        };
        return Err(OutputError::Reported(message));
    }
    let usage = match value.get("usage") {
        None | Some(Value::Null) => None,
        Some(u) => Some(parse_usage(u).map_err(malformed)?),
    };
    let (text, refusal) = match task {
        Task::ChatCompletion => chat_text(&value).map_err(malformed)?,
        Task::Embeddings => {
            let ok = value.get("embeddings").and_then(Value::as_array).is_some_and(|rows| {
                rows.iter()
                    .all(|r| r.as_array().is_some_and(|v| v.iter().all(Value::is_number)))
            });
            if !ok {
                return Err(malformed(
                    "an embeddings output needs `embeddings`: a list of number lists".to_owned(),
                ));
            }
            (None, None)
        }
        Task::Custom => (None, None),
    };
    Ok(ModelOutput {
        value,
        text,
        refusal,
        usage,
    })
}

type ChatText = (Option<String>, Option<String>);

/// The text of an Open Responses message's content, as lf's `Trace._get_text_content` reads
/// it: a string as is; parts joined by newlines, each its `text` (or `refusal`).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| {
                p.get("text")
                    .and_then(Value::as_str)
                    .or_else(|| p.get("refusal").and_then(Value::as_str))
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn chat_text(value: &Value) -> Result<ChatText, String> {
    if let Some(items) = value.get("items") {
        let items = items
            .as_array()
            .ok_or("an Open Responses output's `items` must be a list")?;
        for (i, item) in items.iter().enumerate() {
            let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
            if !matches!(
                kind,
                "message"
                    | "function_call"
                    | "function_call_output"
                    | "custom_task_input_message"
                    | "custom_task_output_message"
            ) {
                return Err(format!(
                    "`items[{i}].type` is `{kind}`, which is not an Open Responses trace item"
                ));
            }
        }
        let last = items
            .iter()
            .rev()
            .find(|i| {
                i.get("type").and_then(Value::as_str).unwrap_or("message") == "message"
                    && i.get("role").and_then(Value::as_str) == Some("assistant")
            })
            .ok_or("an Open Responses output has no assistant message")?;
        let refusal = last
            .get("content")
            .and_then(Value::as_array)
            .and_then(|parts| parts.iter().find_map(|p| p.get("refusal").and_then(Value::as_str)))
            .map(str::to_owned);
        let text = content_text(last.get("content").unwrap_or(&Value::Null));
        return Ok((Some(text), refusal));
    }
    let message = value
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c.get("message"))
        .ok_or("a chat_completion output needs `choices[0].message`")?;
    let refusal = message.get("refusal").and_then(Value::as_str).map(str::to_owned);
    let has_calls = message.get("tool_calls").is_some_and(|c| !c.is_null());
    let text = match message.get("content") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None if refusal.is_some() || has_calls => None,
        Some(Value::Null) | None => return Err("`choices[0].message.content` is missing".to_owned()),
        Some(parts @ Value::Array(_)) => Some(content_text(parts)),
        Some(other) => {
            return Err(format!(
                "`choices[0].message.content` must be a string, found `{other}`"
            ));
        }
    };
    Ok((text, refusal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_output_with_usage_and_refusal() {
        let out = parse_output(
            Task::ChatCompletion,
            r#"{"choices":[{"message":{"role":"assistant","content":null,"refusal":"no"}}],"usage":{"num_prompt_tokens":3,"num_completion_tokens":0}}"#,
        )
        .expect("valid");
        assert_eq!(out.text, None);
        assert_eq!(out.refusal.as_deref(), Some("no"));
        assert_eq!(
            out.usage,
            Some(Usage {
                num_prompt_tokens: 3,
                num_completion_tokens: 0
            })
        );
    }

    #[test]
    fn error_convention_becomes_reported_error() {
        let err = parse_output(Task::ChatCompletion, r#"{"error": "boom"}"#).expect_err("error");
        assert!(matches!(err, OutputError::Reported(m) if m == "boom"));
    }

    #[test]
    fn malformed_output_keeps_the_rendered_text() {
        let err = parse_output(Task::ChatCompletion, r#"{"choices": []}"#).expect_err("malformed");
        assert!(matches!(err, OutputError::Malformed { rendered, .. } if rendered.contains("choices")));
        assert!(parse_output(Task::Embeddings, r#"{"embeddings": [[1, 2.5]]}"#).is_ok());
        assert!(parse_output(Task::Embeddings, r#"{"embeddings": [["x"]]}"#).is_err());
    }

    #[test]
    fn openai_style_usage_is_mapped() {
        let out = parse_output(
            Task::ChatCompletion,
            r#"{"choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#,
        )
        .expect("valid");
        assert_eq!(
            out.usage,
            Some(Usage {
                num_prompt_tokens: 7,
                num_completion_tokens: 2
            })
        );
        let out = parse_output(
            Task::ChatCompletion,
            r#"{"items":[{"type":"message","id":"m","status":"completed","role":"assistant","content":[{"type":"output_text","text":"a","annotations":[]},{"type":"output_text","text":"b"}]},{"type":"function_call","id":"f","call_id":"c","name":"n","arguments":"{}","status":"completed"}],"usage":{"input_tokens":3,"output_tokens":null}}"#,
        )
        .expect("valid");
        assert_eq!(out.text.as_deref(), Some("a\nb"));
        assert_eq!(out.usage.map(|u| u.num_prompt_tokens), Some(3));
    }

    #[test]
    fn tool_calls_are_accepted() {
        let out = parse_output(
            Task::ChatCompletion,
            r#"{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#,
        )
        .expect("valid");
        assert_eq!(out.text, None);
        assert!(
            validate_input(
                Task::ChatCompletion,
                &serde_json::json!({"messages": [{"role": "assistant", "tool_calls": []}, {"role": "tool", "tool_call_id": "c", "content": "x"}]})
            )
            .is_ok()
        );
    }

    #[test]
    fn chat_input_roles_are_checked() {
        assert!(
            validate_input(
                Task::ChatCompletion,
                &serde_json::json!({"messages": [{"role": "user", "content": "x"}]})
            )
            .is_ok()
        );
        assert!(
            validate_input(
                Task::ChatCompletion,
                &serde_json::json!({"messages": [{"role": "bot", "content": "x"}]})
            )
            .is_err()
        );
    }
}
