//! Where a value came from: the [`SourceFile`] it was read from (its text kept for error
//! excerpts) and the [`Span`] inside it. Both the YAML loader and diagnostics build on these.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// A YAML (or included) file as loaded: its text is kept for error excerpts.
#[derive(Debug)]
pub struct SourceFile {
    /// Absolute, canonical path.
    pub path: PathBuf,
    /// Path shown to users (relative to the project when possible).
    pub display: String,
    pub text: String,
    /// `file:line` of the `!include` that pulled this file in, if any.
    pub included_from: Option<String>,
    /// Byte offset of each line's start, built on first use: every located value looks its
    /// line up, so a scan per lookup would make loading quadratic in the file's size.
    line_starts: OnceLock<Vec<usize>>,
}

impl SourceFile {
    pub fn new(path: PathBuf, display: String, text: String, included_from: Option<String>) -> SourceFile {
        SourceFile {
            path,
            display,
            text,
            included_from,
            line_starts: OnceLock::new(),
        }
    }

    /// The 1-based `line` of the file, without its newline.
    pub fn line_text(&self, line: usize) -> Option<&str> {
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .filter(|&start| start < self.text.len())
                .collect()
        });
        let start = *starts.get(line.checked_sub(1)?)?;
        let rest = &self.text[start..];
        let end = rest.find('\n').unwrap_or(rest.len());
        Some(rest[..end].strip_suffix('\r').unwrap_or(&rest[..end]))
    }
}

/// A position in a source file (1-based line and column).
#[derive(Debug, Clone)]
pub struct Span {
    pub file: Arc<SourceFile>,
    pub line: usize,
    pub col: usize,
    /// Characters covered on `line`, for the caret under an excerpt.
    pub width: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_found_like_str_lines() {
        for text in ["", "a", "a\n", "a\nb", "a\r\nb\r\n", "a\n\nc\n", "\n\n"] {
            let file = SourceFile::new(PathBuf::from("t"), "t".into(), text.to_owned(), None);
            let expected: Vec<&str> = text.lines().collect();
            let found: Vec<&str> = (1..=expected.len() + 1).filter_map(|n| file.line_text(n)).collect();
            assert_eq!(found, expected, "{text:?}");
            assert_eq!(file.line_text(0), None);
        }
    }
}
