//! The spanned YAML tree: every value remembers the file, line and column it came from, so any
//! later error (a wrong type, an unknown key, an unset variable) can point at the exact spot.

use std::sync::Arc;

pub use crate::source::{SourceFile, Span};

/// How a scalar was written; decides its type and where its text starts.
#[derive(Debug, Clone)]
pub enum Style {
    Plain,
    Quoted,
    /// A `|` or `>` block; its span starts at the first content line.
    Block,
    /// The text came from `!include`; it starts after this many (stripped) lines of that file.
    Included(Arc<SourceFile>, usize),
    /// A collection, or a value built by the loader.
    Other,
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
    /// A `$VAR` whose variable is not set; an error only when something needs the value.
    Unset(UnsetVar),
}

#[derive(Debug, Clone)]
pub struct UnsetVar {
    pub var: String,
    /// The `${VAR:?message}` message, if the author wrote one.
    pub message: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub span: Span,
    pub style: Style,
    /// Set when the value was produced by `$VAR` expansion (used to mask credentials).
    pub env_var: Option<String>,
}

impl Node {
    pub fn new(value: Value, span: Span, style: Style) -> Node {
        Node {
            value,
            span,
            style,
            env_var: None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    /// Removes and returns the value under `key` in a mapping.
    pub fn take(&mut self, key: &str) -> Option<(Key, Node)> {
        let Value::Map(entries) = &mut self.value else {
            return None;
        };
        let index = entries.iter().position(|(k, _)| k.name == key)?;
        Some(entries.remove(index))
    }

    /// A short name for the node's type, as used in error messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Unset(_) => "an unset variable",
        }
    }

    /// Where the text of a string scalar starts in its file: (file, lines before, indent).
    /// Used so that templates and Python snippets report errors at real file lines.
    pub fn text_origin(&self) -> (Arc<SourceFile>, usize, usize) {
        match &self.style {
            Style::Included(file, skipped) => (file.clone(), *skipped, 0),
            Style::Block => (
                self.span.file.clone(),
                self.span.line.saturating_sub(1),
                block_indent(self),
            ),
            _ => (self.span.file.clone(), self.span.line.saturating_sub(1), 0),
        }
    }
}

/// The indentation of a block scalar's first content line.
fn block_indent(node: &Node) -> usize {
    node.span
        .file
        .line_text(node.span.line)
        .map_or(0, |line| line.len() - line.trim_start().len())
}
