//! The process-wide redactor: every resolved secret (and credential-bearing `$VAR`) is
//! registered here, and everything lfeval prints or writes passes through [`redact`], which
//! replaces the value with its reference (`<<secrets.NAME>>` or `$VAR`).
//!
//! Values that are JSON literals (`null`, `true`, numbers) are not masked: they are placeholders
//! rather than credentials, and replacing them would corrupt token counts and JSON documents.
//!
//! A value is also masked in the escaped forms it takes inside JSON text: serde's, Python
//! `json.dumps`' (non-ASCII as `\uXXXX`) and Jinja2 `tojson`'s (also `<>&'` escaped).

use std::borrow::Cow;
use std::sync::RwLock;

/// (form to find, label to show), longest first.
static VALUES: RwLock<Vec<(String, String)>> = RwLock::new(Vec::new());

/// Values shorter than this are not masked: replacing `1` or `yes` everywhere would garble
/// output, and such values are not credentials.
const MIN_LEN: usize = 4;

/// Whether a name (an environment key, a header, a variable) suggests its value is a credential.
/// `key` counts (`OPENAI_KEY`, `X-Api-Key`) except where it names an entity (`model_key`).
pub fn looks_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    let entity_key = ["model_key", "task_key", "dataset_key", "adapter_key", "evaluation_key"]
        .iter()
        .any(|k| name.ends_with(k))
        || name == "key";
    ["token", "secret", "password", "passwd", "auth", "credential", "cookie"]
        .iter()
        .any(|w| name.contains(w))
        || (name.contains("key") && !entity_key)
}

pub fn register(value: &str, label: &str) {
    // A JSON literal (`null`, `true`, `1234`) is a placeholder, not a credential, and masking it
    // would corrupt every JSON document lfeval writes.
    if value.len() < MIN_LEN || serde_json::from_str::<serde_json::Value>(value).is_ok_and(|v| !v.is_string()) {
        return;
    }
    let Ok(mut values) = VALUES.write() else { return };
    for form in forms(value) {
        if !values.iter().any(|(v, _)| *v == form) {
            values.push((form, label.to_owned()));
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.0.len()));
}

/// The value as written raw and inside JSON strings by the usual encoders.
fn forms(value: &str) -> Vec<String> {
    let serde = serde_json::to_string(value).unwrap_or_default();
    let mut out = vec![
        value.to_owned(),
        serde.trim_matches('"').to_owned(),
        json_escape(value, false),
        json_escape(value, true),
    ];
    out.sort();
    out.dedup();
    out
}

/// JSON string escaping with every non-ASCII character as `\uXXXX` (Python's `ensure_ascii`),
/// and with `html` also `<>&'` (Jinja2's `tojson`). No surrounding quotes.
fn json_escape(value: &str, html: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\'' if html => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 || (c as u32) >= 0x7f => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

pub fn redact(text: &str) -> Cow<'_, str> {
    let Ok(values) = VALUES.read() else {
        return Cow::Borrowed(text);
    };
    if !values.iter().any(|(v, _)| text.contains(v.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for (value, label) in values.iter() {
        if out.contains(value.as_str()) {
            out = out.replace(value.as_str(), label);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn registered_values_are_masked() {
        super::register("sk-canary-123456", "<<secrets.CANARY>>");
        super::register("abc", "$SHORT");
        assert_eq!(super::redact("key=sk-canary-123456!"), "key=<<secrets.CANARY>>!");
        assert_eq!(super::redact("abc"), "abc");
    }

    #[test]
    fn credential_names() {
        for name in [
            "OPENAI_API_KEY",
            "X-Api-Key",
            "Authorization",
            "db_password",
            "OPENAI_KEY",
            "session_token",
        ] {
            assert!(super::looks_sensitive(name), "{name}");
        }
        for name in ["model_key", "MODEL_KEY", "key", "MODEL_ENDPOINT_URL", "timeout"] {
            assert!(!super::looks_sensitive(name), "{name}");
        }
    }

    #[test]
    fn escaped_forms_are_masked_and_literals_are_not_registered() {
        super::register("pä<ss>w'ord-77", "$PASSWORD");
        assert_eq!(
            super::redact(r"{'p': 'p\u00e4\u003css\u003ew\u0027ord-77'}"),
            "{'p': '$PASSWORD'}"
        );
        assert_eq!(
            super::redact(r#"{"p": "p\u00e4<ss>w'ord-77"}"#),
            r#"{"p": "$PASSWORD"}"#
        );
        super::register("null", "$NULLISH");
        super::register("12345", "$NUMBER");
        assert_eq!(
            super::redact(r#"{"a": null, "b": 12345}"#),
            r#"{"a": null, "b": 12345}"#
        );
    }
}
