//! Turns YAML text into a [`Node`] tree: scalar typing (YAML 1.2 core schema: `yes`/`no` stay
//! strings), anchors and merge keys, duplicate-key rejection, and `!include`.
//!
//! `!include "./file"` is resolved here, relative to the file holding the tag and confined to
//! the project root: a `.yaml`/`.yml` file is parsed as YAML (errors point into it), any other
//! file becomes its text, stripped, like `lf` does.
//!
//! Hostile input stays cheap: aliases are expanded in full (the tree has no sharing), so what
//! they add is counted against [`MAX_ALIAS_NODES`] and [`MAX_ALIAS_BYTES`] per file, which a
//! "billion laughs" document exceeds long before it costs memory; and keys are checked for
//! duplicates through an index, so a mapping loads in time linear in its size.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, ScanError, Span as RawSpan};

use super::node::{Key, Node, SourceFile, Span, Style, Value};
use crate::diagnostic::Diagnostic;

/// Nodes that aliases may add to one file's tree (every use of an alias copies its anchor).
pub const MAX_ALIAS_NODES: usize = 100_000;
/// Bytes of scalar text that aliases may add to one file's tree.
pub const MAX_ALIAS_BYTES: usize = 16 * 1024 * 1024;
/// How deeply lists and mappings may nest. Everything that walks the tree recurses, so the
/// bound keeps the stack bounded too; real configurations nest a dozen levels at most.
pub const MAX_DEPTH: usize = 64;

/// Parses files below one root; tracks the include chain to catch cycles.
pub struct FileParser<'a> {
    pub root: &'a Path,
    pub stack: Vec<PathBuf>,
}

/// Path shown to users: relative to `root` when inside it.
pub fn display_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

impl FileParser<'_> {
    pub fn parse_file(&mut self, path: &Path, included_from: Option<String>) -> Result<Node, Diagnostic> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Diagnostic::new(format!("cannot read `{}`: {e}", display_path(self.root, path))))?;
        let file = Arc::new(SourceFile::new(
            path.to_path_buf(),
            display_path(self.root, path),
            text,
            included_from,
        ));
        self.stack.push(path.to_path_buf());
        let result = self.parse_source(&file);
        self.stack.pop();
        result
    }

    fn parse_source(&mut self, file: &Arc<SourceFile>) -> Result<Node, Diagnostic> {
        let text = file.text.clone();
        let mut builder = Builder {
            file: file.clone(),
            parser: Parser::new_from_str(&text),
            anchors: HashMap::new(),
            expanded: Size::default(),
            depth: 0,
            files: self,
        };
        builder.document()
    }
}

struct Builder<'p, 'a, 'input> {
    file: Arc<SourceFile>,
    parser: Parser<'input, serde_saphyr::granit_parser::StrInput<'input>>,
    /// Anchored nodes with their size, by anchor id.
    anchors: HashMap<usize, (Node, Size)>,
    /// What alias expansion has added to this file's tree so far.
    expanded: Size,
    /// Lists and mappings open around the current event.
    depth: usize,
    files: &'p mut FileParser<'a>,
}

/// The size of a (sub)tree: its nodes and the bytes of its scalar text.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
}

impl Size {
    fn of(node: &Node) -> Size {
        let mut size = Size { nodes: 1, bytes: 0 };
        match &node.value {
            Value::Str(s) => size.bytes = s.len(),
            Value::Seq(items) => {
                for item in items {
                    size.add(Size::of(item));
                }
            }
            Value::Map(entries) => {
                for (key, value) in entries {
                    size.add(Size {
                        nodes: 1,
                        bytes: key.name.len(),
                    });
                    size.add(Size::of(value));
                }
            }
            _ => {}
        }
        size
    }

    fn add(&mut self, other: Size) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

impl<'input> Builder<'_, '_, 'input> {
    fn span(&self, raw: &RawSpan) -> Span {
        let width = if raw.end.line() == raw.start.line() {
            raw.end.col().saturating_sub(raw.start.col()).max(1)
        } else {
            1
        };
        Span {
            file: self.file.clone(),
            line: raw.start.line(),
            col: raw.start.col() + 1,
            width,
        }
    }

    fn scan_error(&self, e: &ScanError) -> Diagnostic {
        let m = e.marker();
        let span = Span {
            file: self.file.clone(),
            line: m.line(),
            col: m.col() + 1,
            width: 1,
        };
        Diagnostic::new(format!("invalid YAML: {}", e.info())).at(&span)
    }

    fn next(&mut self) -> Result<(Event<'input>, RawSpan), Diagnostic> {
        loop {
            match self.parser.next_event() {
                // Comments and anchor metadata are presentation, not data.
                Some(Ok((Event::Anchor(..), _))) => {}
                Some(Ok(ev)) if is_data(&ev.0) => return Ok(ev),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(self.scan_error(&e)),
                None => return Err(Diagnostic::new(format!("unexpected end of `{}`", self.file.display))),
            }
        }
    }

    fn document(&mut self) -> Result<Node, Diagnostic> {
        let empty = Span {
            file: self.file.clone(),
            line: 1,
            col: 1,
            width: 1,
        };
        let mut root = None;
        loop {
            let (event, raw) = self.next()?;
            match event {
                Event::StreamStart | Event::DocumentEnd => {}
                Event::DocumentStart(..) => {
                    if root.is_some() {
                        return Err(Diagnostic::new("expected a single YAML document")
                            .at(&self.span(&raw))
                            .with_hint("remove the extra `---`"));
                    }
                }
                Event::StreamEnd => break,
                other => root = Some(self.node(other, raw)?),
            }
        }
        Ok(root.unwrap_or_else(|| Node::new(Value::Null, empty, Style::Other)))
    }

    fn node(&mut self, event: Event<'input>, raw: RawSpan) -> Result<Node, Diagnostic> {
        let span = self.span(&raw);
        if matches!(event, Event::SequenceStart(..) | Event::MappingStart(..)) {
            if self.depth >= MAX_DEPTH {
                return Err(Diagnostic::new(format!(
                    "YAML nested deeper than {MAX_DEPTH} levels of lists and mappings"
                ))
                .at(&span));
            }
            self.depth += 1;
            let node = self.collection(event, span);
            self.depth -= 1;
            return node;
        }
        self.leaf(event, span, &raw)
    }

    fn collection(&mut self, event: Event<'input>, span: Span) -> Result<Node, Diagnostic> {
        match event {
            Event::SequenceStart(_, anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, raw) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, raw)?);
                }
                let node = Node::new(Value::Seq(items), span, Style::Other);
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::MappingStart(_, anchor, _) => {
                let node = self.mapping(span)?;
                self.remember(anchor, &node);
                Ok(node)
            }
            _ => Err(Diagnostic::new("unexpected YAML structure").at(&span)),
        }
    }

    fn leaf(&mut self, event: Event<'input>, span: Span, raw: &RawSpan) -> Result<Node, Diagnostic> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| (t.handle().to_owned(), t.suffix().to_owned()));
                let node = match tag {
                    Some((handle, suffix)) if handle == "!" && suffix == "include" => self.include(&text, &span)?,
                    Some((handle, suffix)) if handle == "!" => {
                        return Err(Diagnostic::new(format!("unknown tag `!{suffix}`"))
                            .at(&span)
                            .with_hint("the only supported tag is `!include \"./file\"`"));
                    }
                    Some((_, suffix)) if suffix == "str" => {
                        Node::new(Value::Str(text.into_owned()), span, Style::Quoted)
                    }
                    _ => scalar(&text, style, span),
                };
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::Alias(id) => {
                let Some((node, size)) = self.anchors.get(&id) else {
                    return Err(Diagnostic::new("alias refers to an unknown anchor").at(&span));
                };
                self.expanded.add(*size);
                if self.expanded.nodes > MAX_ALIAS_NODES || self.expanded.bytes > MAX_ALIAS_BYTES {
                    let name = raw
                        .byte_range()
                        .and_then(|r| self.file.text.get(r))
                        .unwrap_or("*?")
                        .to_owned();
                    let what = if self.expanded.nodes > MAX_ALIAS_NODES {
                        format!("{MAX_ALIAS_NODES} nodes")
                    } else {
                        format!("{} MiB of text", MAX_ALIAS_BYTES / (1024 * 1024))
                    };
                    return Err(Diagnostic::new(format!(
                        "alias `{name}` expands the document past the limit of {what} added by aliases"
                    ))
                    .at(&span)
                    .with_hint(
                        "every use of an alias copies its anchor in full; nested aliases multiply, so a small file can expand without bound",
                    ));
                }
                Ok(node.clone())
            }
            _ => Err(Diagnostic::new("unexpected YAML structure").at(&span)),
        }
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), Size::of(node)));
        }
    }

    fn mapping(&mut self, span: Span) -> Result<Node, Diagnostic> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        // Position of each key in `entries`, so duplicates are found without a scan.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut merged: Vec<(Key, Node)> = Vec::new();
        let mut merged_names: HashSet<String> = HashSet::new();
        loop {
            let (ev, raw) = self.next()?;
            if matches!(ev, Event::MappingEnd) {
                break;
            }
            let key_node = self.node(ev, raw)?;
            let name = match &key_node.value {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Null => "null".to_owned(),
                _ => {
                    return Err(Diagnostic::new("mapping keys must be scalars").at(&key_node.span));
                }
            };
            let key = Key {
                name,
                span: key_node.span,
            };
            let (ev, raw) = self.next()?;
            let value = self.node(ev, raw)?;
            if key.name == "<<" && matches!(key_node.style, Style::Plain) {
                merge_into(&mut merged, &mut merged_names, &value)?;
                continue;
            }
            if let Some(&i) = index.get(&key.name) {
                let first = &entries[i].0;
                return Err(Diagnostic::new(format!("duplicate key `{}`", key.name))
                    .at(&key.span)
                    .with_note(format!(
                        "first defined at {}:{}",
                        first.span.file.display, first.span.line
                    )));
            }
            index.insert(key.name.clone(), entries.len());
            entries.push((key, value));
        }
        for (k, v) in merged {
            if !index.contains_key(&k.name) {
                entries.push((k, v));
            }
        }
        Ok(Node::new(Value::Map(entries), span, Style::Other))
    }

    fn include(&mut self, spec: &str, span: &Span) -> Result<Node, Diagnostic> {
        let spec = spec.trim();
        let base = self.file.path.parent().unwrap_or(self.files.root);
        let joined = base.join(spec);
        let path = joined.canonicalize().map_err(|e| {
            Diagnostic::new(format!("cannot include `{spec}`: {e}"))
                .at(span)
                .with_hint(format!(
                    "paths are relative to `{}`",
                    display_path(self.files.root, base)
                ))
        })?;
        if !path.starts_with(self.files.root) {
            return Err(
                Diagnostic::new(format!("`!include \"{spec}\"` escapes the project directory"))
                    .at(span)
                    .with_hint("included files must live inside the project"),
            );
        }
        if path.is_dir() {
            return Err(Diagnostic::new(format!("cannot include `{spec}`: it is a directory")).at(span));
        }
        if self.files.stack.contains(&path) {
            let chain: Vec<String> = self
                .files
                .stack
                .iter()
                .map(|p| display_path(self.files.root, p))
                .collect();
            return Err(
                Diagnostic::new(format!("include cycle: `{spec}` is already being loaded"))
                    .at(span)
                    .with_note(format!(
                        "chain: {} -> {}",
                        chain.join(" -> "),
                        display_path(self.files.root, &path)
                    )),
            );
        }
        let from = format!("{}:{}", self.file.display, span.line);
        let is_yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
        if is_yaml {
            let mut node = self.files.parse_file(&path, Some(from))?;
            if let Value::Null = node.value {
                node.span = span.clone();
            }
            return Ok(node);
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Diagnostic::new(format!("cannot include `{spec}`: {e}")).at(span))?;
        let file = Arc::new(SourceFile::new(
            path.clone(),
            display_path(self.files.root, &path),
            text.clone(),
            Some(from),
        ));
        // `lf` strips the included text; remember how many leading lines went so that line
        // numbers inside the text still match the file.
        let leading = text.len() - text.trim_start().len();
        let skipped = text[..leading].matches('\n').count();
        let node = Node::new(
            Value::Str(text.trim().to_owned()),
            span.clone(),
            Style::Included(file, skipped),
        );
        Ok(node)
    }
}

fn is_data(event: &Event<'_>) -> bool {
    matches!(
        event,
        Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(..)
            | Event::DocumentEnd
            | Event::Alias(_)
            | Event::Scalar(..)
            | Event::SequenceStart(..)
            | Event::SequenceEnd
            | Event::MappingStart(..)
            | Event::MappingEnd
    )
}

fn merge_into(merged: &mut Vec<(Key, Node)>, names: &mut HashSet<String>, value: &Node) -> Result<(), Diagnostic> {
    match &value.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                if names.insert(k.name.clone()) {
                    merged.push((k.clone(), v.clone()));
                }
            }
            Ok(())
        }
        Value::Seq(items) => items.iter().try_for_each(|item| merge_into(merged, names, item)),
        _ => Err(Diagnostic::new("`<<` merge expects a mapping or a list of mappings").at(&value.span)),
    }
}

/// Types a scalar by the YAML 1.2 core schema. Quoted and block scalars are always strings.
fn scalar(text: &str, style: ScalarStyle, span: Span) -> Node {
    match style {
        ScalarStyle::Plain => Node::new(plain_value(text), span, Style::Plain),
        ScalarStyle::Literal | ScalarStyle::Folded => Node::new(Value::Str(text.to_owned()), span, Style::Block),
        _ => Node::new(Value::Str(text.to_owned()), span, Style::Quoted),
    }
}

fn plain_value(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i64>()
    {
        return Value::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    if looks_like_float(digits)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_owned())
}

fn looks_like_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut parts = mantissa.splitn(2, '.');
    let int_part = parts.next().unwrap_or("");
    let frac_part = parts.next();
    let digits_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac_part {
        Some(frac) => digits_ok(int_part) && digits_ok(frac) && !(int_part.is_empty() && frac.is_empty()),
        None => !int_part.is_empty() && digits_ok(int_part) && exponent.is_some(),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits_ok(e)
    });
    mantissa_ok && exponent_ok
}

/// Parses text that has no file on disk (no includes possible).
pub fn parse_embedded(file: &Arc<SourceFile>) -> Result<Node, Diagnostic> {
    let root = Path::new("/nonexistent-root");
    let mut files = FileParser {
        root,
        stack: Vec::new(),
    };
    files.parse_source(file)
}
