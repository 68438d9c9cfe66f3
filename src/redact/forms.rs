//! The forms a secret takes in text lfeval may write: as written; escaped for JSON (serde's,
//! Python's `ensure_ascii`, Jinja2's `tojson` with `<>&'` escaped), for HTML (Python's
//! `html.escape`, markupsafe's, without quotes) and for URLs (percent-encoding with upper- and
//! lowercase hex, `+` for spaces, `encodeURIComponent`'s safe set); each escaped form escaped
//! for JSON once more (a JSON document inside a JSON string); and encoded as hex and base64
//! (standard and URL-safe alphabets, at each of the three byte alignments it can have inside a
//! longer encoded text).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Encoded forms (hex, base64, URL) shorter than this are left out: they would match unrelated
/// text, and a secret that short is not worth encoding.
const MIN_ENCODED: usize = 8;

/// Every form of `value`, deduplicated, the value itself first.
pub fn forms(value: &str) -> Vec<String> {
    let mut escaped = vec![
        value.to_owned(),
        serde_escape(value),
        json_escape(value, false),
        json_escape(value, true),
        html_escape(value, Some("&quot;"), Some("&#x27;")),
        html_escape(value, Some("&#34;"), Some("&#39;")),
        html_escape(value, Some("&quot;"), Some("&#39;")),
        html_escape(value, None, None),
    ];
    let nested: Vec<String> = escaped.iter().skip(1).map(|f| serde_escape(f)).collect();
    escaped.extend(nested);

    let mut encoded = vec![
        percent_encode(value, UNRESERVED, false, true),
        percent_encode(value, UNRESERVED, false, false),
        percent_encode(value, UNRESERVED, true, true),
        percent_encode(value, URI_COMPONENT, false, true),
        hex::encode(value),
        hex::encode_upper(value),
    ];
    for alignment in 0..3 {
        encoded.push(base64_inner(value.as_bytes(), alignment, false));
        encoded.push(base64_inner(value.as_bytes(), alignment, true));
    }
    encoded.retain(|f| f.len() >= MIN_ENCODED);

    let mut out = Vec::with_capacity(escaped.len() + encoded.len());
    for form in escaped.into_iter().chain(encoded) {
        if !form.is_empty() && !out.contains(&form) {
            out.push(form);
        }
    }
    out
}

/// serde_json's string escaping, without the quotes.
fn serde_escape(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_owned()
}

/// JSON string escaping with every non-ASCII character as `\uXXXX` (Python's `ensure_ascii`),
/// and with `html` also `<>&'` (Jinja2's `tojson`). No surrounding quotes.
pub fn json_escape(value: &str, html: bool) -> String {
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

fn html_escape(value: &str, quot: Option<&str>, apos: Option<&str>) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match (c, quot, apos) {
            ('&', ..) => out.push_str("&amp;"),
            ('<', ..) => out.push_str("&lt;"),
            ('>', ..) => out.push_str("&gt;"),
            ('"', Some(q), _) => out.push_str(q),
            ('\'', _, Some(a)) => out.push_str(a),
            (c, ..) => out.push(c),
        }
    }
    out
}

/// RFC 3986 unreserved characters (Python's `quote(s, safe="")`).
const UNRESERVED: &str = "-._~";
/// What JavaScript's `encodeURIComponent` leaves alone.
const URI_COMPONENT: &str = "-._~!*'()";

fn percent_encode(value: &str, safe: &str, plus_for_space: bool, upper: bool) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || safe.as_bytes().contains(&b) {
            out.push(b as char);
        } else if b == b' ' && plus_for_space {
            out.push('+');
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// The base64 characters that depend on `bytes` alone when they sit `alignment` bytes past a
/// 3-byte boundary of a longer encoded text: the characters shared with the neighbours'
/// bits at either end are left out.
fn base64_inner(bytes: &[u8], alignment: usize, url_safe: bool) -> String {
    let mut padded = vec![0u8; alignment];
    padded.extend_from_slice(bytes);
    let engine = if url_safe { &URL_SAFE_NO_PAD } else { &STANDARD_NO_PAD };
    let encoded = engine.encode(&padded);
    let start = (alignment * 8).div_ceil(6);
    let end = (padded.len() * 8) / 6;
    encoded.get(start..end).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_forms_match_the_secret_inside_any_encoded_text() {
        let secret = "sk-canary-ÄÖ<&>'-1234567890";
        let found = forms(secret);
        for prefix in ["", "a", "ab", "abc", "abcd"] {
            for suffix in ["", "z", "yz"] {
                let text = format!("{prefix}{secret}{suffix}");
                for engine in [
                    &base64::engine::general_purpose::STANDARD,
                    &base64::engine::general_purpose::URL_SAFE,
                ] {
                    let encoded = engine.encode(text.as_bytes());
                    assert!(
                        found.iter().any(|f| f.len() >= 30 && encoded.contains(f.as_str())),
                        "no form of the secret in `{encoded}` (prefix `{prefix}`)"
                    );
                }
            }
        }
    }

    #[test]
    fn escaped_and_encoded_forms() {
        let found = forms("a&b<c>'d é\"");
        for form in [
            "a&b<c>'d é\"",
            r#"a&b<c>'d é\""#,
            r#"a&b<c>'d \u00e9\""#,
            r#"a\u0026b\u003cc\u003e\u0027d \u00e9\""#,
            "a&amp;b&lt;c&gt;&#x27;d é&quot;",
            "a&amp;b&lt;c&gt;&#39;d é&#34;",
            "a%26b%3Cc%3E%27d%20%C3%A9%22",
            "a%26b%3Cc%3E'd%20%C3%A9%22",
            "a%26b%3Cc%3E%27d+%C3%A9%22",
            r#"a\\u0026b\\u003cc\\u003e\\u0027d \\u00e9\\\""#,
            "6126623c633e276420c3a922",
        ] {
            assert!(found.iter().any(|f| f == form), "missing `{form}` in {found:#?}");
        }
    }
}
