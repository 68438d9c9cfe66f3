//! The dialect's directives applied to a parsed tree: `$ref` (replace or merge a mapping),
//! `$VAR` / `${VAR}` / `${VAR:-default}` / `${VAR:?message}` expansion, and the `((TODO))`
//! sentinel check.
//!
//! A whole-value `$VAR` expands in any scalar; `${VAR}` inside a longer string expands only in
//! plain and quoted scalars, never in block scalars or included files, where `$` usually
//! belongs to a template or a program.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use super::node::{Node, Style, UnsetVar, Value};
use super::parse::{FileParser, display_path};
use crate::diagnostic::Diagnostic;
use crate::variables::Variables;

static WHOLE_VAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)(.*))?\})$").expect("valid regex")
});
static INNER_VAR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}").expect("valid regex"));

/// A variable whose name looks like a credential (`API_KEY`, `TOKEN`, …) is masked wherever
/// its value would be shown, even when it is pasted into a longer string such as a URL.
fn mask_if_sensitive(name: &str, value: &str, sensitive_key: bool) {
    if sensitive_key || crate::redact::looks_sensitive(name) {
        crate::redact::register(value, &format!("${name}"));
    }
}

/// `$NAME` or `${NAME[:-default|:?message]}`, for values that start with `$`.
static DOLLAR_WORD_VAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))").expect("valid regex")
});

pub const TODO_SENTINEL: &str = "((TODO))";

pub struct Resolver<'a> {
    pub root: &'a Path,
    pub vars: &'a Variables,
}

impl Resolver<'_> {
    pub fn resolve(&self, node: &mut Node, stack: &mut Vec<std::path::PathBuf>) -> Result<(), Diagnostic> {
        self.resolve_in(node, stack, false)
    }

    /// `sensitive`: the value sits under a key that names a credential (`api_key`, `AUTH`, …),
    /// so every variable expanded into it is masked wherever it would be shown.
    fn resolve_in(
        &self,
        node: &mut Node,
        stack: &mut Vec<std::path::PathBuf>,
        sensitive: bool,
    ) -> Result<(), Diagnostic> {
        let reference = node.get("$ref").cloned();
        if reference.is_some() {
            node.take("$ref");
        }
        match &mut node.value {
            Value::Map(entries) => {
                for (key, value) in entries.iter_mut() {
                    let sensitive = sensitive || crate::redact::looks_sensitive(&key.name);
                    self.resolve_in(value, stack, sensitive)?;
                }
            }
            Value::Seq(items) => {
                for item in items.iter_mut() {
                    self.resolve_in(item, stack, sensitive)?;
                }
            }
            Value::Str(text) if !matches!(node.style, Style::Included(..)) => {
                let block = matches!(node.style, Style::Block);
                if let Some((value, var)) = self.expand(text, block, sensitive) {
                    node.value = value;
                    node.env_var = var;
                }
            }
            _ => {}
        }
        // The referenced file is resolved on its own (relative to itself), after the siblings,
        // so nothing is expanded twice.
        if let Some(reference) = reference {
            self.apply_ref(node, &reference, stack)?;
        }
        Ok(())
    }

    /// Expands variables in `text`; `None` when there is nothing to expand.
    fn expand(&self, text: &str, block: bool, sensitive: bool) -> Option<(Value, Option<String>)> {
        if let Some(caps) = WHOLE_VAR.captures(text.trim()) {
            let name = caps
                .get(1)
                .or_else(|| caps.get(2))
                .map_or("", |m| m.as_str())
                .to_owned();
            let op = caps.get(3).map(|m| m.as_str());
            let arg = caps.get(4).map(|m| m.as_str().to_owned());
            return Some(match (self.vars.get(&name), op) {
                (Some(v), _) => {
                    mask_if_sensitive(&name, &v, sensitive);
                    (Value::Str(v), Some(name))
                }
                (None, Some(":-")) => (Value::Str(arg.unwrap_or_default()), None),
                (None, Some(":?")) => (
                    Value::Unset(UnsetVar {
                        var: name,
                        message: arg,
                    }),
                    None,
                ),
                (None, _) => (
                    Value::Unset(UnsetVar {
                        var: name,
                        message: None,
                    }),
                    None,
                ),
            });
        }
        // Like `lf` (shell `expandvars` over a value that starts with `$` and has no
        // whitespace), `$BASE/chat/completions` expands every variable in it.
        let dollar_word = text.starts_with('$') && !text.contains(char::is_whitespace);
        if block || !(text.contains("${") || dollar_word) {
            return None;
        }
        let mut unset = None;
        let pattern: &Regex = if dollar_word { &DOLLAR_WORD_VAR } else { &INNER_VAR };
        let expanded = pattern.replace_all(text, |caps: &regex::Captures<'_>| {
            let name = caps.get(1).or_else(|| caps.get(4)).map_or("", |m| m.as_str());
            match (self.vars.get(name), caps.get(2).map(|m| m.as_str())) {
                (Some(v), _) => {
                    mask_if_sensitive(name, &v, sensitive);
                    v
                }
                (None, Some(":-")) => caps.get(3).map_or("", |m| m.as_str()).to_owned(),
                (None, op) => {
                    let message = if op == Some(":?") {
                        caps.get(3).map(|m| m.as_str().to_owned())
                    } else {
                        None
                    };
                    unset.get_or_insert(UnsetVar {
                        var: name.to_owned(),
                        message,
                    });
                    String::new()
                }
            }
        });
        match unset {
            Some(u) => Some((Value::Unset(u), None)),
            None if expanded != text => Some((Value::Str(expanded.into_owned()), None)),
            None => None,
        }
    }

    fn apply_ref(
        &self,
        node: &mut Node,
        reference: &Node,
        stack: &mut Vec<std::path::PathBuf>,
    ) -> Result<(), Diagnostic> {
        let Some(spec) = reference.as_str() else {
            return Err(
                Diagnostic::new(format!("`$ref` must be a path string, found {}", reference.kind()))
                    .at(&reference.span),
            );
        };
        if spec.contains("://") || spec.contains('#') {
            return Err(Diagnostic::new(format!("unsupported `$ref` target `{spec}`"))
                .at(&reference.span)
                .with_hint(
                    "`$ref` takes a relative or absolute path to a YAML file; URLs and `#` pointers are not supported",
                ));
        }
        let base = reference.span.file.path.parent().unwrap_or(self.root);
        let path = base
            .join(spec)
            .canonicalize()
            .map_err(|e| Diagnostic::new(format!("cannot load `$ref: {spec}`: {e}")).at(&reference.span))?;
        // Confined like `!include`: a config must not read files from elsewhere on the machine.
        if !path.starts_with(self.root) {
            return Err(Diagnostic::new(format!("`$ref: {spec}` escapes the project directory"))
                .at(&reference.span)
                .with_hint("referenced files must live inside the project, like `!include`d ones"));
        }
        if stack.contains(&path) {
            return Err(Diagnostic::new(format!(
                "`$ref` cycle: `{}` is already being loaded",
                display_path(self.root, &path)
            ))
            .at(&reference.span));
        }
        let mut parser = FileParser {
            root: self.root,
            stack: stack.clone(),
        };
        let from = format!("{}:{}", reference.span.file.display, reference.span.line);
        let mut loaded = parser.parse_file(&path, Some(from))?;
        stack.push(path);
        let resolved = self.resolve(&mut loaded, stack);
        stack.pop();
        resolved?;
        node.take("$ref");
        let siblings = node.as_map().map_or(0, <[_]>::len);
        if siblings == 0 {
            *node = loaded;
            return Ok(());
        }
        let Value::Map(referenced) = loaded.value else {
            return Err(Diagnostic::new(format!(
                "`$ref: {spec}` is {} but has sibling keys; only a mapping can be merged",
                loaded.kind()
            ))
            .at(&reference.span));
        };
        // Referenced keys win over the siblings written next to `$ref`.
        let Value::Map(entries) = &mut node.value else {
            return Ok(());
        };
        for (key, value) in referenced {
            match entries.iter_mut().find(|(k, _)| k.name == key.name) {
                Some(slot) => *slot = (key, value),
                None => entries.push((key, value)),
            }
        }
        Ok(())
    }
}

/// Every key path whose value still holds the `((TODO))` sentinel.
pub fn find_todos(node: &Node, path: &str, found: &mut Vec<(String, Node)>) {
    match &node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                find_todos(v, &join(path, &k.name), found);
            }
        }
        Value::Seq(items) => {
            for (i, v) in items.iter().enumerate() {
                find_todos(v, &format!("{path}[{i}]"), found);
            }
        }
        Value::Str(s) if s.contains(TODO_SENTINEL) => found.push((path.to_owned(), node.clone())),
        _ => {}
    }
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}
