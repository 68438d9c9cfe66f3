//! The process-wide redactor: every resolved secret (and every `$VAR` that lands in a
//! credential position or a snippet's `environment`) is registered here with all the [`forms`]
//! it can take, and everything lfeval prints or writes passes through [`redact`], which
//! replaces each form with the value's reference (`<<secrets.NAME>>` or `$VAR`). JSON lfeval
//! writes is masked value by value as it is serialised ([`Masked`]), so an escape the encoder
//! adds cannot produce a form nobody registered.
//!
//! What is left of a secret cut short (an adapter's `body[:500]`, a shortened message, the
//! omitted middle of captured output) is masked too: [`PARTIAL_MIN`] or more characters of a
//! form's start that end where a cut text ends (the end of the text, a closing quote or
//! backslash of an enclosing string, a line end, an ellipsis), or of a form's end right after
//! an ellipsis. Cuts made by lfeval itself mask first and cut afterwards.
//!
//! Values that are JSON literals (`null`, `true`, numbers) are not masked: they are placeholders
//! rather than credentials, and replacing them would corrupt token counts and JSON documents.

mod forms;
mod masked;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};

pub use forms::forms;
pub use masked::Masked;

/// Values shorter than this are not masked: replacing `1` or `yes` everywhere would garble
/// output, and such values are not credentials.
const MIN_LEN: usize = 4;

/// The fewest characters of a cut secret that are masked; 4 or fewer may remain visible.
pub const PARTIAL_MIN: usize = 5;

struct Registry {
    /// (form, label), longest first.
    forms: Vec<(String, String)>,
    matcher: Option<Arc<Matcher>>,
}

/// Automatons over the registered forms, rebuilt when a value is registered.
struct Matcher {
    /// Whole forms, leftmost-longest (a secret containing another is masked whole).
    whole: AhoCorasick,
    labels: Vec<String>,
    /// The first [`PARTIAL_MIN`] characters of each form long enough to be cut (index into
    /// `cut_forms`), and the last ones.
    heads: AhoCorasick,
    tails: AhoCorasick,
    cut_forms: Vec<(String, String)>,
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry {
    forms: Vec::new(),
    matcher: None,
});

/// Set once a value is registered: every string lfeval writes asks, and most runs register
/// none, so the common answer costs one load instead of a lock shared by every thread.
static ARMED: AtomicBool = AtomicBool::new(false);

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

/// Masks `value` (in every form) as `label` from now on.
pub fn register(value: &str, label: &str) {
    // A JSON literal (`null`, `true`, `1234`) is a placeholder, not a credential, and masking it
    // would corrupt every JSON document lfeval writes.
    if value.chars().count() < MIN_LEN || serde_json::from_str::<serde_json::Value>(value).is_ok_and(|v| !v.is_string())
    {
        return;
    }
    let Ok(mut registry) = REGISTRY.write() else { return };
    let mut added = false;
    for form in forms(value) {
        if !registry.forms.iter().any(|(v, _)| *v == form) {
            registry.forms.push((form, label.to_owned()));
            added = true;
        }
    }
    if added {
        registry.forms.sort_by_key(|v| std::cmp::Reverse(v.0.len()));
        registry.matcher = Matcher::build(&registry.forms).map(Arc::new);
        ARMED.store(registry.matcher.is_some(), Ordering::Release);
    }
}

/// Whether any value is registered, i.e. whether masking can change anything.
fn armed() -> bool {
    ARMED.load(Ordering::Acquire)
}

fn matcher() -> Option<Arc<Matcher>> {
    if !armed() {
        return None;
    }
    REGISTRY.read().ok()?.matcher.clone()
}

/// `text` with every registered form, and what is left of one cut short, masked.
pub fn redact(text: &str) -> Cow<'_, str> {
    match matcher() {
        Some(m) => m.redact(text),
        None => Cow::Borrowed(text),
    }
}

/// Masks every string and object key of `value` in place, as [`Masked`] writes them.
pub fn redact_value_in_place(value: &mut serde_json::Value) {
    if armed()
        && let Ok(masked) = serde_json::to_value(Masked(&*value))
    {
        *value = masked;
    }
}

/// `value` as pretty JSON, masked as it is serialised.
pub fn to_json_pretty(value: &(impl serde::Serialize + ?Sized)) -> String {
    serde_json::to_string_pretty(&Masked(value)).unwrap_or_default()
}

impl Matcher {
    fn build(forms: &[(String, String)]) -> Option<Matcher> {
        let whole = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(forms.iter().map(|(f, _)| f))
            .ok()?;
        let cut_forms: Vec<(String, String)> = forms
            .iter()
            .filter(|(f, _)| f.chars().count() > PARTIAL_MIN)
            .cloned()
            .collect();
        let head = |f: &str| f.char_indices().nth(PARTIAL_MIN).map_or(f, |(i, _)| &f[..i]).to_owned();
        let tail = |f: &str| {
            let n = f.chars().count();
            f.char_indices()
                .nth(n - PARTIAL_MIN)
                .map_or(f, |(i, _)| &f[i..])
                .to_owned()
        };
        let heads = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(cut_forms.iter().map(|(f, _)| head(f)))
            .ok()?;
        let tails = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(cut_forms.iter().map(|(f, _)| tail(f)))
            .ok()?;
        Some(Matcher {
            whole,
            labels: forms.iter().map(|(_, l)| l.clone()).collect(),
            heads,
            tails,
            cut_forms,
        })
    }

    fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let masked: Cow<'t, str> = if self.whole.is_match(text) {
            let mut out = String::with_capacity(text.len());
            self.whole.replace_all_with(text, &mut out, |m, _, dst| {
                dst.push_str(&self.labels[m.pattern().as_usize()]);
                true
            });
            Cow::Owned(out)
        } else {
            Cow::Borrowed(text)
        };
        match self.cuts(&masked) {
            None => masked,
            Some(ranges) => {
                let mut out = String::with_capacity(masked.len());
                let mut at = 0;
                for (start, end, label) in ranges {
                    out.push_str(&masked[at..start]);
                    out.push_str(label);
                    at = end;
                }
                out.push_str(&masked[at..]);
                Cow::Owned(out)
            }
        }
    }

    /// Ranges holding a cut form at a boundary, in order and not overlapping.
    fn cuts<'a>(&'a self, text: &str) -> Option<Vec<(usize, usize, &'a str)>> {
        let mut found: Vec<(usize, usize, &str)> = Vec::new();
        for m in self.heads.find_overlapping_iter(text) {
            let (form, label) = &self.cut_forms[m.pattern().as_usize()];
            let start = m.start();
            let len = common_prefix(&text[start..], form);
            let end = start + len;
            if len < form.len() && len >= m.len() && boundary_after(text, end) {
                found.push((start, end, label));
            }
        }
        for m in self.tails.find_overlapping_iter(text) {
            let (form, label) = &self.cut_forms[m.pattern().as_usize()];
            let end = m.end();
            let len = common_suffix(&text[..end], form);
            let start = end - len;
            if len < form.len() && len >= m.len() && boundary_before(text, start) {
                found.push((start, end, label));
            }
        }
        if found.is_empty() {
            return None;
        }
        // Longest first at each start, then drop whatever overlaps a range already taken.
        found.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut kept: Vec<(usize, usize, &str)> = Vec::with_capacity(found.len());
        for range in found {
            if kept.last().is_none_or(|last| range.0 >= last.1) {
                kept.push(range);
            }
        }
        Some(kept)
    }
}

/// Length in bytes of the common start of `a` and `b`, on a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or_else(|| a.len().min(b.len()), |((i, _), _)| i)
}

/// Length in bytes of the common end of `a` and `b`, on a character boundary.
fn common_suffix(a: &str, b: &str) -> usize {
    let mut len = 0;
    for (x, y) in a.chars().rev().zip(b.chars().rev()) {
        if x != y {
            break;
        }
        len += x.len_utf8();
    }
    len
}

/// Characters that can follow (or precede) a cut text inside a longer one. Words and ordinary
/// punctuation are not among them, so text that merely starts like a secret stays readable.
fn is_cut_mark(c: char) -> bool {
    matches!(c, '"' | '\'' | '\\' | '\n' | '\r' | '…')
}

fn boundary_after(text: &str, at: usize) -> bool {
    let rest = &text[at..];
    rest.chars().next().is_none_or(is_cut_mark) || rest.starts_with("...")
}

/// A text cut at its start says so with an ellipsis (lfeval's own cuts do); anything else
/// before a secret's last characters is ordinary text that happens to end like it.
fn boundary_before(text: &str, at: usize) -> bool {
    let before = &text[..at];
    before.ends_with('…') || before.ends_with("...")
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

    #[test]
    fn a_secret_cut_short_leaves_at_most_four_characters() {
        super::register("tr-9f8e7d6c5b4a39281706", "<<secrets.CUT>>");
        // Cut by a slice at the end of an error text, inside JSON, or before an ellipsis.
        assert_eq!(
            super::redact("model answered 401: invalid key tr-9f8e7d6c5b"),
            "model answered 401: invalid key <<secrets.CUT>>"
        );
        assert_eq!(
            super::redact(r#"{"error": "key tr-9f8e7"}"#),
            r#"{"error": "key <<secrets.CUT>>"}"#
        );
        assert_eq!(super::redact("key tr-9f8e7d…\nnext"), "key <<secrets.CUT>>…\nnext");
        // The tail kept after an omitted middle.
        assert_eq!(
            super::redact("omitted]\n…5b4a39281706 end"),
            "omitted]\n…<<secrets.CUT>> end"
        );
        assert_eq!(super::redact("\"39281706-vars\""), "\"39281706-vars\"");
        // Four characters are not enough to tell; text that merely starts like the secret,
        // within a sentence, is left alone.
        assert_eq!(super::redact("tr-9f"), "<<secrets.CUT>>");
        assert_eq!(super::redact("tr-9\""), "tr-9\"");
        assert_eq!(
            super::redact("tr-9f8e7dz and tr-9f8e7 here"),
            "tr-9f8e7dz and tr-9f8e7 here"
        );
    }

    #[test]
    fn encoded_forms_are_masked() {
        use base64::Engine as _;
        let secret = "enc-Zz81&<é>-long-enough";
        super::register(secret, "$ENC");
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("x{secret}y"));
        let masked = super::redact(&b64);
        assert!(masked.contains("$ENC"), "{masked}");
        assert!(masked.len() < b64.len(), "{masked}");
        assert_eq!(super::redact(&hex::encode(secret)), "$ENC");
    }
}
