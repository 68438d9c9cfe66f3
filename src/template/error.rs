//! Template errors located in the user's file: minijinja's errors translated back through the
//! `{% set %}` rewrite into file coordinates, with a compiler-style excerpt.

use std::fmt::Write as _;
use std::sync::LazyLock;

use super::TemplateOrigin;
use minijinja::{Error, ErrorKind};

use super::set_rewrite::Insertion;

/// What went wrong, for callers that branch (e.g. to decide whether a retry makes sense).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateErrorKind {
    /// The template (or expression) does not parse.
    Syntax,
    /// A variable, attribute or item was used but is not defined.
    Undefined,
    /// The template ran out of fuel or hit the recursion limit.
    Runaway,
    /// Any other failure while rendering.
    Render,
}

/// A template failure located in the user's file.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub kind: TemplateErrorKind,
    /// lowercase description, e.g. "undefined value `inputs`"
    pub message: String,
    pub file: Option<String>,
    /// line in *file* coordinates (template line + line_offset)
    pub line: Option<usize>,
    /// 1-based column in *file* coordinates of what the excerpt's marker points at
    pub column: Option<usize>,
    /// source lines around `line`, each prefixed with its file line number, with a `^` marker
    /// line under the offending line
    pub excerpt: Option<String>,
}

impl TemplateError {
    pub(super) fn bare(kind: TemplateErrorKind, message: impl Into<String>) -> Self {
        TemplateError {
            kind,
            message: message.into(),
            file: None,
            line: None,
            column: None,
            excerpt: None,
        }
    }

    /// `file:line` when known.
    pub fn location(&self) -> Option<String> {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => Some(format!("{file}:{line}")),
            (Some(file), None) => Some(file.clone()),
            (None, Some(line)) => Some(format!("line {line}")),
            (None, None) => None,
        }
    }

    /// Message, location and excerpt as one block of text for terminal output.
    pub fn report(&self) -> String {
        let mut out = self.message.clone();
        if let Some(location) = self.location() {
            let _ = write!(out, "\n --> {location}");
        }
        if let Some(excerpt) = &self.excerpt {
            out.push('\n');
            out.push_str(excerpt);
        }
        out
    }
}

/// What is needed to translate minijinja's positions back into the user's file.
#[derive(Debug, Clone)]
pub(super) struct SourceMap {
    pub(super) origin: Option<TemplateOrigin>,
    pub(super) original: String,
    pub(super) insertions: Vec<Insertion>,
}

impl SourceMap {
    /// Maps a byte offset in the rewritten source to one in the original source.
    fn to_original(&self, offset: usize) -> usize {
        let mut shift = 0;
        for ins in &self.insertions {
            let rewritten_at = ins.at + shift;
            if offset >= rewritten_at + ins.len {
                shift += ins.len;
            } else if offset >= rewritten_at {
                return ins.at;
            } else {
                break;
            }
        }
        offset - shift
    }
}

pub(super) fn convert_error(err: &Error, map: Option<&SourceMap>, compiling: bool) -> TemplateError {
    let detail = err.detail().unwrap_or("");
    let line_offset = map.and_then(|m| m.origin.as_ref()).map_or(0, |o| o.line_offset);
    let undefined = undefined_note(detail);
    let (kind, message) = if compiling {
        let message = match detail {
            "" => err.kind().to_string(),
            d if err.kind() == ErrorKind::SyntaxError => format!("syntax error: {d}"),
            d => format!("{}: {d}", err.kind()),
        };
        (TemplateErrorKind::Syntax, message)
    } else if err.kind() == ErrorKind::OutOfFuel {
        (
            TemplateErrorKind::Runaway,
            "template ran out of fuel (infinite loop?)".to_string(),
        )
    } else if detail.contains("recursion limit exceeded") {
        (
            TemplateErrorKind::Runaway,
            "template recursion limit exceeded (recursive macro?)".to_string(),
        )
    } else if let Some(note) = undefined {
        (TemplateErrorKind::Undefined, note.message(line_offset))
    } else if err.kind() == ErrorKind::UndefinedError {
        (TemplateErrorKind::Undefined, "undefined value".to_string())
    } else {
        let message = match (err.kind(), detail) {
            (kind, "") => kind.to_string(),
            (ErrorKind::SyntaxError, d) => format!("syntax error: {d}"),
            (ErrorKind::InvalidOperation | ErrorKind::UnknownMethod, d) => d.to_string(),
            (ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction, d) => {
                match d.strip_suffix(" is unknown").and_then(|r| r.split_once(' ')) {
                    Some((what, name)) => format!("unknown {what} `{name}`"),
                    None => format!("{}: {d}", err.kind()),
                }
            }
            (kind, d) => format!("{kind}: {d}"),
        };
        (TemplateErrorKind::Render, message)
    };

    let mut out = TemplateError::bare(kind, lowercase_first(message.trim_end_matches('.')));
    let Some(map) = map else {
        return out;
    };
    out.file = map.origin.as_ref().map(|o| o.file.clone());
    if let Some(line) = err.line() {
        let span = err.range().map(|r| map.to_original(r.start)..map.to_original(r.end));
        out.line = Some(line + line_offset);
        let column_offset = map.origin.as_ref().map_or(0, |o| o.column_offset);
        let (text, column) = excerpt(&map.original, line, span, line_offset, column_offset);
        out.excerpt = Some(text);
        out.column = Some(column);
    }
    out
}

/// Messages are lowercase; acronyms such as `JSON` keep their case.
pub(super) fn lowercase_first(message: &str) -> String {
    let mut chars = message.chars();
    let (Some(first), second) = (chars.next(), chars.next()) else {
        return message.to_string();
    };
    if first.is_uppercase() && !second.is_some_and(char::is_uppercase) {
        let mut out: String = first.to_lowercase().collect();
        out.push_str(&message[first.len_utf8()..]);
        out
    } else {
        message.to_string()
    }
}

/// What minijinja's debug mode says about the undefined value behind an error: it appends
/// "(`x.y` is undefined, from line 3)" to the detail, or the detail is just "`x.y` is undefined".
pub(super) struct UndefinedNote {
    expr: String,
    from: Option<String>,
    detail: Option<String>,
}

impl UndefinedNote {
    fn message(&self, line_offset: usize) -> String {
        let mut out = format!("undefined value `{}`", self.expr);
        if let Some(from) = &self.from {
            // same-template locations are "line N" in template coordinates
            match from.strip_prefix("line ").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => {
                    let _ = write!(out, " (from line {})", n + line_offset);
                }
                None => {
                    let _ = write!(out, " (from {from})");
                }
            }
        }
        if let Some(detail) = &self.detail {
            let _ = write!(out, ": {detail}");
        }
        out
    }
}

pub(super) fn undefined_note(detail: &str) -> Option<UndefinedNote> {
    static ALONE: LazyLock<Option<regex::Regex>> =
        LazyLock::new(|| regex::Regex::new(r"(?s)^`(?P<e>[^`]+)` is undefined(?: \(from (?P<l>[^)]+)\))?$").ok());
    static APPENDED: LazyLock<Option<regex::Regex>> = LazyLock::new(|| {
        regex::Regex::new(r"(?s)^(?P<d>.*) \(`(?P<e>[^`]+)` is undefined(?:, from (?P<l>[^)]+))?\)$").ok()
    });
    let caps = ALONE
        .as_ref()
        .and_then(|re| re.captures(detail))
        .or_else(|| APPENDED.as_ref().and_then(|re| re.captures(detail)))?;
    Some(UndefinedNote {
        expr: caps.name("e")?.as_str().to_string(),
        from: caps.name("l").map(|m| m.as_str().to_string()),
        detail: caps.name("d").map(|m| m.as_str().to_string()),
    })
}

/// Renders up to two lines of context around `line` (1-based, template coordinates), numbered
/// in file coordinates, with a marker line under the offending line.
pub(super) fn excerpt(
    source: &str,
    line: usize,
    span: Option<std::ops::Range<usize>>,
    line_offset: usize,
    column_offset: usize,
) -> (String, usize) {
    let lines: Vec<&str> = source.split('\n').collect();
    let idx = line.saturating_sub(1).min(lines.len().saturating_sub(1));
    let first = idx.saturating_sub(2);
    let last = (idx + 2).min(lines.len().saturating_sub(1));
    let width = (last + 1 + line_offset).to_string().len();
    let indent = " ".repeat(column_offset);

    // marker position: the span when it starts on the error line, else the whole line's text
    let line_start: usize = lines[..idx].iter().map(|l| l.len() + 1).sum();
    let text = lines[idx].trim_end_matches('\r');
    let (start_col, end_col) = match span {
        Some(span) if span.start >= line_start && span.start <= line_start + text.len() => {
            let start = span.start - line_start;
            let end = span.end.clamp(span.start, line_start + text.len()) - line_start;
            let start_col = char_count(text, start);
            let end_col = char_count(text, end).max(start_col + 1);
            (start_col, end_col)
        }
        _ => {
            let leading = text.chars().take_while(|c| c.is_whitespace()).count();
            let total = text.chars().count();
            (leading, total.max(leading + 1))
        }
    };

    let mut out = String::new();
    for (i, text) in lines.iter().enumerate().take(last + 1).skip(first) {
        let text = text.trim_end_matches('\r');
        let number = i + 1 + line_offset;
        if text.is_empty() {
            let _ = writeln!(out, "{number:>width$} |");
        } else {
            let _ = writeln!(out, "{number:>width$} | {indent}{text}");
        }
        if i == idx {
            let pad: String = text
                .chars()
                .take(start_col)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{:>width$} | {indent}{pad}{}", "", "^".repeat(end_col - start_col));
        }
    }
    out.truncate(out.trim_end().len());
    (out, column_offset + start_col + 1)
}

pub(super) fn char_count(text: &str, byte_end: usize) -> usize {
    let mut end = byte_end.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].chars().count()
}
