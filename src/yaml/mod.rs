//! The AI GO! YAML dialect: parse a file into a spanned tree ([`parse`]), apply `!include`,
//! `$ref`, `$VAR` and `((TODO))` ([`resolve`]), then deserialize into typed definitions with
//! located errors ([`de`]). The parser is serde-saphyr's (granit-parser event stream).

mod config_template;
mod de;
mod node;
mod parse;
mod resolve;
pub mod schema;

use std::path::Path;
use std::sync::Arc;

pub use config_template::{substitute as substitute_config, substitute_known as substitute_known_config, to_json};
pub use de::{Located, MetaWire, SourceText, deserialize_meta, from_node, unset_error};
pub use node::{Key, Node, SourceFile, Span, Style, Value};
pub use parse::display_path;
pub use resolve::join;

use crate::diagnostic::Diagnostic;
use crate::variables::Variables;

/// Loads `path` (inside `root`), resolving every directive. A file that still holds the
/// `((TODO))` sentinel is rejected with every key path that needs filling in.
pub fn load(path: &Path, root: &Path, vars: &Variables) -> Result<Node, Diagnostic> {
    let path = path
        .canonicalize()
        .map_err(|e| Diagnostic::new(format!("cannot read `{}`: {e}", display_path(root, path))))?;
    let mut parser = parse::FileParser {
        root,
        stack: Vec::new(),
    };
    let mut node = parser.parse_file(&path, None)?;
    resolve::Resolver { root, vars }.resolve(&mut node, &mut vec![path])?;
    check_todos(&node)?;
    Ok(node)
}

/// Every file that contributed to `node`: its own, and those `!include` and `$ref` pulled in.
/// Built-in definitions (compiled into the binary) have no file on disk and are left out.
pub fn sources(node: &Node) -> Vec<Arc<SourceFile>> {
    fn walk(node: &Node, out: &mut Vec<Arc<SourceFile>>) {
        let mut add = |file: &Arc<SourceFile>| {
            if !out.iter().any(|f| Arc::ptr_eq(f, file) || f.path == file.path) {
                out.push(Arc::clone(file));
            }
        };
        add(&node.span.file);
        if let Style::Included(file, _) = &node.style {
            add(file);
        }
        match &node.value {
            Value::Seq(items) => items.iter().for_each(|n| walk(n, out)),
            Value::Map(entries) => entries.iter().for_each(|(_, n)| walk(n, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(node, &mut out);
    out.retain(|f| f.path.is_absolute());
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Loads YAML text that is not on disk (built-in definitions compiled into the binary).
pub fn load_str(display: &str, text: &str) -> Result<Node, Diagnostic> {
    let file = Arc::new(SourceFile::new(
        Path::new(display).to_path_buf(),
        display.to_owned(),
        text.to_owned(),
        None,
    ));
    parse::parse_embedded(&file)
}

fn check_todos(node: &Node) -> Result<(), Diagnostic> {
    let mut found = Vec::new();
    resolve::find_todos(node, "", &mut found);
    let Some((first_path, first)) = found.first() else {
        return Ok(());
    };
    let paths: Vec<String> = found.iter().map(|(p, _)| format!("`{p}`")).collect();
    Err(Diagnostic::new(format!(
        "`{}` still has {} placeholder(s) to fill in: {}",
        resolve::TODO_SENTINEL,
        found.len(),
        paths.join(", ")
    ))
    .at(&first.span)
    .with_path(first_path.clone())
    .with_hint("replace every `((TODO))` with a real value"))
}

#[cfg(test)]
mod tests;
