//! `<< config.NAME >>` templates (aigo.md §6.7): resolved before a task or evaluation is used,
//! from its `config_spec` defaults and the task specification's `task_config`. A whole-value
//! reference takes the value's type; inside a longer string it is substituted as text (that is
//! how prompts and snippets use it, e.g. `"{{ sample.<< config.column >> }}"`).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value as Json};

use super::node::{Node, Value};
use crate::diagnostic::Diagnostic;

static CONFIG_REF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<<\s*config\.([A-Za-z0-9_-]+)\s*>>").expect("valid regex"));

pub fn substitute(node: &mut Node, values: &Map<String, Json>) -> Result<(), Diagnostic> {
    substitute_in(node, values, false)
}

/// Like [`substitute`], but leaves references to values not in `values` as they are (checking
/// a definition on its own, before any run gives it its config).
pub fn substitute_known(node: &mut Node, values: &Map<String, Json>) -> Result<(), Diagnostic> {
    substitute_in(node, values, true)
}

fn substitute_in(node: &mut Node, values: &Map<String, Json>, lenient: bool) -> Result<(), Diagnostic> {
    match &mut node.value {
        Value::Map(entries) => entries
            .iter_mut()
            .try_for_each(|(_, v)| substitute_in(v, values, lenient)),
        Value::Seq(items) => items.iter_mut().try_for_each(|v| substitute_in(v, values, lenient)),
        Value::Str(text) if text.contains("<<") => {
            let unknown = CONFIG_REF
                .captures_iter(text)
                .find(|c| !values.contains_key(&c[1]))
                .map(|c| c[1].to_owned());
            if lenient && unknown.is_some() {
                let replaced = CONFIG_REF.replace_all(text, |c: &regex::Captures<'_>| match values.get(&c[1]) {
                    Some(Json::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => c[0].to_owned(),
                });
                *text = replaced.into_owned();
                return Ok(());
            }
            if let Some(name) = unknown {
                let known: Vec<String> = values.keys().map(|k| format!("`{k}`")).collect();
                return Err(
                    Diagnostic::new(format!("unknown config value `{name}` in `<< config.{name} >>`"))
                        .at(&node.span)
                        .with_hint(if known.is_empty() {
                            "declare it in the task's `config_spec` or set it in the task specification's `task_config`"
                                .to_owned()
                        } else {
                            format!("known config values: {}", known.join(", "))
                        }),
                );
            }
            if let Some(caps) = CONFIG_REF.captures(text.trim())
                && caps.get(0).is_some_and(|m| m.as_str() == text.trim())
            {
                node.value = from_json(&values[&caps[1]], node);
                return Ok(());
            }
            let replaced = CONFIG_REF.replace_all(text, |c: &regex::Captures<'_>| match &values[&c[1]] {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            });
            *text = replaced.into_owned();
            Ok(())
        }
        _ => Ok(()),
    }
}

fn from_json(value: &Json, at: &Node) -> Value {
    let child = |v: &Json| Node {
        value: from_json(v, at),
        ..at.clone()
    };
    match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n
            .as_i64()
            .map_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0)), Value::Int),
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(items) => Value::Seq(items.iter().map(child).collect()),
        Json::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| {
                    (
                        super::node::Key {
                            name: k.clone(),
                            span: at.span.clone(),
                        },
                        child(v),
                    )
                })
                .collect(),
        ),
    }
}

/// Converts a resolved node to JSON (for `task_config` and free-form maps).
pub fn to_json(node: &Node) -> Json {
    match &node.value {
        Value::Null | Value::Unset(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::Seq(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => Json::Object(entries.iter().map(|(k, v)| (k.name.clone(), to_json(v))).collect()),
    }
}
