//! User-facing errors that point into a file: the message, `file:line:col`, the offending line
//! with a caret under it, the key path, and an optional hint. YAML, template and Python load
//! errors all end up here so they look the same.

use std::fmt;

use crate::source::Span;

/// A place in a file, with the line's text when it is known.
#[derive(Debug, Clone)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub width: usize,
    pub source_line: Option<String>,
}

impl From<&Span> for Location {
    fn from(span: &Span) -> Self {
        Location {
            file: span.file.display.clone(),
            line: span.line,
            col: span.col,
            width: span.width,
            source_line: span.file.line_text(span.line).map(str::to_owned),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub location: Option<Location>,
    /// Dotted key path inside the document, e.g. `config.environment.API_KEY`.
    pub key_path: Option<String>,
    /// Pre-rendered excerpt (e.g. from the template engine) used instead of `source_line`.
    pub excerpt: Option<String>,
    pub notes: Vec<String>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            location: None,
            key_path: None,
            excerpt: None,
            notes: Vec::new(),
            hint: None,
        }
    }

    #[must_use]
    pub fn at(mut self, span: &Span) -> Self {
        self.location = Some(Location::from(span));
        if let Some(from) = &span.file.included_from {
            self.notes.push(format!("included from {from}"));
        }
        self
    }

    #[must_use]
    pub fn at_location(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }

    #[must_use]
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        if !path.is_empty() {
            self.key_path = Some(path);
        }
        self
    }

    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    #[must_use]
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// `file:line:col` when known, for one-line summaries.
    pub fn position(&self) -> Option<String> {
        self.location
            .as_ref()
            .map(|l| format!("{}:{}:{}", l.file, l.line, l.col))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(loc) = &self.location {
            let gutter = loc.line.to_string().len();
            let pad = " ".repeat(gutter);
            // Column 0 means "unknown" (template errors point with their own excerpt).
            if loc.col == 0 {
                write!(f, "\n{pad}--> {}:{}", loc.file, loc.line)?;
            } else {
                write!(f, "\n{pad}--> {}:{}:{}", loc.file, loc.line, loc.col)?;
            }
            if let Some(path) = &self.key_path {
                write!(f, " (at `{path}`)")?;
            }
            if self.excerpt.is_none()
                && let Some(text) = &loc.source_line
            {
                let caret_pad = " ".repeat(loc.col.saturating_sub(1));
                let carets = "^".repeat(loc.width.max(1));
                write!(f, "\n{pad} |\n{} | {text}\n{pad} | {caret_pad}{carets}", loc.line)?;
            }
        } else if let Some(path) = &self.key_path {
            write!(f, "\n  at `{path}`")?;
        }
        if let Some(excerpt) = &self.excerpt {
            write!(f, "\n{}", excerpt.trim_end())?;
        }
        for note in &self.notes {
            write!(f, "\n  = note: {note}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Several diagnostics reported together (e.g. by `validate`).
#[derive(Debug)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\nerror: ")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The candidate closest to `word`, if any is close enough to be what was meant.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// A duration as people write it: `250ms`, `15s`, `1.5s`.
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        let text = format!("{:.2}", d.as_secs_f64());
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// A size as people read it: `32 MiB`, `100.5 MiB`, `12.0 KiB`, `300 bytes`.
pub fn format_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;
    match n {
        n if n >= GIB && n.is_multiple_of(GIB) => format!("{} GiB", n / GIB),
        n if n >= GIB => format!("{:.1} GiB", n as f64 / GIB as f64),
        n if n >= MIB && n.is_multiple_of(MIB) => format!("{} MiB", n / MIB),
        n if n >= MIB => format!("{:.1} MiB", n as f64 / MIB as f64),
        n if n >= KIB && n.is_multiple_of(KIB) => format!("{} KiB", n / KIB),
        n if n >= KIB => format!("{:.1} KiB", n as f64 / KIB as f64),
        n => format!("{n} bytes"),
    }
}

/// A JSON value for an error message: its kind and (shortened) text, e.g. ``string `"abc"` ``.
pub fn describe_value(value: &serde_json::Value) -> String {
    use serde_json::Value;
    let kind = match value {
        Value::Null => return "`null`".into(),
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    // Masked before it is cut, so no part of a secret survives the cut.
    let mut text = crate::redact::redact(&value.to_string()).into_owned();
    if text.len() > 60 {
        let cut = (0..=60).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    format!("{kind} `{text}`")
}
