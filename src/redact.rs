//! The process-wide redactor: every resolved secret (and credential-bearing `$VAR`) is
//! registered here, and everything lfeval prints or writes passes through [`redact`], which
//! replaces the value with its reference (`<<secrets.NAME>>` or `$VAR`).

use std::borrow::Cow;
use std::sync::RwLock;

static VALUES: RwLock<Vec<(String, String)>> = RwLock::new(Vec::new());

/// Values shorter than this are not masked: replacing `1` or `yes` everywhere would garble
/// output, and such values are not credentials.
const MIN_LEN: usize = 4;

/// Whether a name (an environment key, a variable) suggests its value is a credential.
pub fn looks_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "auth",
        "credential",
        "cookie",
    ]
    .iter()
    .any(|w| name.contains(w))
}

pub fn register(value: &str, label: &str) {
    if value.len() < MIN_LEN {
        return;
    }
    let Ok(mut values) = VALUES.write() else { return };
    if !values.iter().any(|(v, _)| v == value) {
        values.push((value.to_owned(), label.to_owned()));
        // Longest first, so a secret that contains another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.0.len()));
    }
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
        // JSON-escaped forms of the value can appear in request bodies and result files.
        let escaped = serde_json::to_string(value).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        if escaped != value && out.contains(escaped) {
            out = out.replace(escaped, label);
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
}
