//! JSON in and out of templates: context values, `fromjson`, expression results, and a
//! `tojson` whose bytes match Jinja2's (sorted keys, ASCII-only, HTML-safe escapes, Python float
//! formatting), plus `json_escape`.

use std::convert::Infallible;
use std::fmt::Write as _;

use minijinja::Error;
use minijinja::value::{Kwargs, Value, ValueKind};

use super::mut_list::MutList;
use super::mut_map::{MutMap, OrderedMap};
use super::mutation::{invalid, undefined_error};

/// JSON nesting beyond this is reported instead of recursing further.
pub(super) const MAX_JSON_DEPTH: usize = 512;

/// Converts JSON into template values; containers become mutable.
pub(super) fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => MutList::new_value(items.iter().map(json_to_value).collect()),
        serde_json::Value::Object(map) => MutMap::new_value(json_map(map)),
    }
}

pub(super) fn json_map(map: &serde_json::Map<String, serde_json::Value>) -> OrderedMap {
    let mut out = OrderedMap::default();
    for (k, v) in map {
        out.insert(Value::from(k.as_str()), json_to_value(v));
    }
    out
}

pub(super) fn context_value(ctx: &serde_json::Map<String, serde_json::Value>) -> Value {
    MutMap::new_value(json_map(ctx))
}

pub(super) fn fromjson(value: &Value) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(undefined_error(value));
    }
    let parsed: Result<serde_json::Value, _> = if let Some(s) = value.as_str() {
        serde_json::from_str(s)
    } else if let Some(b) = value.as_bytes() {
        serde_json::from_slice(b)
    } else {
        return Err(invalid(format!("`fromjson` expects a string, got {}", value.kind())));
    };
    parsed
        .map(|v| json_to_value(&v))
        .map_err(|e| invalid(format!("invalid JSON passed to `fromjson`: {e}")))
}

/// Converts a template value to JSON (for expression results).
pub(super) fn value_to_json(value: &Value, depth: usize) -> Result<serde_json::Value, Error> {
    if depth > MAX_JSON_DEPTH {
        return Err(invalid("value is nested too deeply to convert to JSON"));
    }
    Ok(match value.kind() {
        ValueKind::Undefined => return Err(undefined_error(value)),
        ValueKind::None => serde_json::Value::Null,
        ValueKind::Bool => serde_json::Value::Bool(value.is_true()),
        ValueKind::Number if value.is_integer() => {
            if let Ok(i) = i64::try_from(value.clone()) {
                serde_json::Value::from(i)
            } else if let Ok(u) = u64::try_from(value.clone()) {
                serde_json::Value::from(u)
            } else {
                float_json(f64::try_from(value.clone())?)?
            }
        }
        ValueKind::Number => float_json(f64::try_from(value.clone())?)?,
        ValueKind::String => serde_json::Value::String(value.as_str().unwrap_or("").to_string()),
        ValueKind::Seq | ValueKind::Iterable => serde_json::Value::Array(
            value
                .try_iter()?
                .map(|v| value_to_json(&v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        ValueKind::Map => {
            let mut out = serde_json::Map::new();
            for (k, v) in map_pairs(value) {
                out.insert(json_key(&k)?, value_to_json(&v, depth + 1)?);
            }
            serde_json::Value::Object(out)
        }
        kind => return Err(invalid(format!("a {kind} cannot be converted to JSON"))),
    })
}

pub(super) fn float_json(f: f64) -> Result<serde_json::Value, Error> {
    serde_json::Number::from_f64(f)
        .map(serde_json::Value::Number)
        .ok_or_else(|| invalid(format!("`{f}` cannot be represented in JSON")))
}

pub(super) fn map_pairs(value: &Value) -> Vec<(Value, Value)> {
    value
        .as_object()
        .and_then(|o| o.try_iter_pairs())
        .map(|i| i.collect())
        .unwrap_or_default()
}

/// How Python's `json` turns a dict key into a string.
pub(super) fn json_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or("").to_string()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_string()),
        ValueKind::None => Ok("null".to_string()),
        ValueKind::Number if key.is_integer() => Ok(key.to_string()),
        ValueKind::Number => Ok(python_float(f64::try_from(key.clone())?)),
        kind => Err(invalid(format!(
            "JSON object keys must be strings, numbers, booleans or none, not {kind}"
        ))),
    }
}

/// Python's `repr(float)` (as `json.dumps` writes floats, with `NaN`/`Infinity` allowed).
pub(super) fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // `{:e}` yields the shortest round-tripping digits, e.g. `-1.5e-7`
    let formatted = format!("{f:e}");
    let (mantissa, exp) = formatted.split_once('e').unwrap_or((&formatted, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let decpt = exp + 1;
    let mut out = String::from(sign);
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            out.push_str("0.");
            out.push_str(&"0".repeat((-decpt) as usize));
            out.push_str(&digits);
        } else if decpt >= n {
            out.push_str(&digits);
            out.push_str(&"0".repeat((decpt - n) as usize));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt as usize]);
            out.push('.');
            out.push_str(&digits[decpt as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

/// Writes `s` as a JSON string literal the way Python's `json.dumps` does (`ensure_ascii`),
/// optionally with Jinja2's HTML-safe escapes for `<`, `>`, `&` and `'`.
pub(super) fn write_json_str(out: &mut String, s: &str, html_safe: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\'' if html_safe => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Python's `json.dumps` layout for a container: `", "` separators inline, or one item per
/// line with `","` separators when indenting.
pub(super) fn write_container<T, E>(
    out: &mut String,
    open: char,
    close: char,
    items: Vec<T>,
    indent: Option<usize>,
    level: usize,
    mut write_item: impl FnMut(&mut String, T) -> Result<(), E>,
) -> Result<(), E> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    let inner = indent.map(|n| " ".repeat(n * (level + 1)));
    for (i, item) in items.into_iter().enumerate() {
        match &inner {
            Some(pad) => {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                out.push_str(pad);
            }
            None if i > 0 => out.push_str(", "),
            None => {}
        }
        write_item(out, item)?;
    }
    if let Some(n) = indent {
        out.push('\n');
        out.push_str(&" ".repeat(n * level));
    }
    out.push(close);
    Ok(())
}

pub(super) fn write_value_json(
    out: &mut String,
    value: &Value,
    indent: Option<usize>,
    level: usize,
) -> Result<(), Error> {
    if level > MAX_JSON_DEPTH {
        return Err(invalid("value is nested too deeply for `tojson` (circular reference?)"));
    }
    match value.kind() {
        ValueKind::Undefined => return Err(undefined_error(value)),
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => {
            let _ = write!(out, "{value}");
        }
        ValueKind::Number => out.push_str(&python_float(f64::try_from(value.clone())?)),
        ValueKind::String => write_json_str(out, value.as_str().unwrap_or(""), true),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, '[', ']', items, indent, level, |out, item| {
                write_value_json(out, &item, indent, level + 1)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for (k, v) in map_pairs(value) {
                entries.push((json_key(&k)?, k, v));
            }
            sort_entries(&mut entries)?;
            write_container(out, '{', '}', entries, indent, level, |out, (key, _, v)| {
                write_json_str(out, &key, true);
                out.push_str(": ");
                write_value_json(out, &v, indent, level + 1)
            })?;
        }
        ValueKind::Invalid => return Err(invalid("invalid value passed to `tojson`")),
        kind => {
            return Err(invalid(format!("a {kind} is not JSON serializable")));
        }
    }
    Ok(())
}

/// `sort_keys=True`: Python sorts the original keys, so strings sort as strings, numbers
/// numerically, and a mix of both is an error.
pub(super) fn sort_entries(entries: &mut [(String, Value, Value)]) -> Result<(), Error> {
    if entries.iter().all(|(_, k, _)| k.kind() == ValueKind::String) {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
    } else if entries
        .iter()
        .all(|(_, k, _)| matches!(k.kind(), ValueKind::Number | ValueKind::Bool))
    {
        entries.sort_by(|a, b| a.1.cmp(&b.1));
    } else if entries.len() > 1 {
        return Err(invalid(
            "`tojson` cannot sort keys of mixed types (python raises a TypeError)",
        ));
    }
    Ok(())
}

pub(super) fn write_serde_json(
    out: &mut String,
    value: &serde_json::Value,
    indent: Option<usize>,
    level: usize,
) -> Result<(), Infallible> {
    match value {
        serde_json::Value::Null => out.push_str("null"),
        serde_json::Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => out.push_str(&python_float(f)),
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        serde_json::Value::String(s) => write_json_str(out, s, true),
        serde_json::Value::Array(items) => {
            let items = items.iter().collect();
            write_container(out, '[', ']', items, indent, level, |out, v| {
                write_serde_json(out, v, indent, level + 1)
            })?;
        }
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            write_container(out, '{', '}', entries, indent, level, |out, (k, v)| {
                write_json_str(out, k, true);
                out.push_str(": ");
                write_serde_json(out, v, indent, level + 1)
            })?;
        }
    }
    Ok(())
}

/// The bytes Jinja2's `tojson` filter produces for `value` (sorted keys, ASCII-only,
/// HTML-safe escapes, Python float formatting).
pub fn tojson_string(value: &serde_json::Value, indent: Option<usize>) -> String {
    let mut out = String::new();
    let Ok(()) = write_serde_json(&mut out, value, indent, 0);
    out
}

pub(super) fn tojson_filter(value: &Value, indent: Option<usize>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match kwargs.get::<Option<usize>>("indent")? {
        Some(i) => Some(i),
        None => indent,
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_value_json(&mut out, value, indent, 0)?;
    Ok(Value::from_safe_string(out))
}

/// `json.dumps(s)[1:-1]` for strings; anything else passes through.
pub(super) fn json_escape(value: Value) -> Value {
    match value.as_str() {
        Some(s) => {
            let mut out = String::with_capacity(s.len() + 2);
            write_json_str(&mut out, s, false);
            Value::from(&out[1..out.len() - 1])
        }
        None => value,
    }
}
