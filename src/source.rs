//! Where a value came from: the [`SourceFile`] it was read from (its text kept for error
//! excerpts) and the [`Span`] inside it. Both the YAML loader and diagnostics build on these.

use std::path::PathBuf;
use std::sync::Arc;

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
}

impl SourceFile {
    /// The 1-based `line` of the file, without its newline.
    pub fn line_text(&self, line: usize) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)?)
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
