//! The adapter template engine: minijinja configured to behave like the Python Jinja2
//! environment LatticeFlow adapters are written against (strict undefined, no autoescape,
//! `pycompat` string/dict methods, `fromjson`, a byte-identical `tojson`, `json_escape`, `zip`,
//! `merge`, `regex_replace`), plus fuel and recursion limits, and errors that point into the
//! user's file with a compiler-style excerpt.
//!
//! # Mutation
//!
//! Official adapters mutate lists and dicts (`{% do xs.append(m) %}`, `{% do body.update(...) %}`),
//! while minijinja values are immutable. Mutable containers are therefore their own object types
//! (`MutList`, `MutMap`) that implement `append`, `extend`, `insert`, `pop`, `remove`,
//! `clear`, `copy`, `index`, `count`, `reverse`, `sort` and `update`, `pop`, `setdefault`, `get`,
//! `clear`, `copy`, `popitem` (reads such as `items()`/`keys()` come from `pycompat`). Values
//! become mutable when they enter a template:
//!
//! * the render context and everything `fromjson`, `dict()`, `merge` and `zip` return;
//! * the right-hand side of every `{% set NAME = EXPR %}` and `{% set ns.attr = EXPR %}`: the
//!   source is rewritten before compiling to `{% set NAME = __lfeval_mutable(EXPR) %}`, which
//!   copies plain lists/dicts (literals, filter results) into mutable ones and passes values that
//!   already are mutable through unchanged, so aliasing (`{% set last = msgs[-1] %}`) works as in
//!   Python;
//! * values passed to `append`/`update`/`namespace(...)` and friends.
//!
//! Limits: literals that never pass through one of these doors stay immutable, e.g. a list
//! literal iterated directly (`{% for x in [[1]] %}{% do x.append(2) %}`), `{% with %}` targets,
//! tuple targets (`{% set a, b = [], [] %}`), macro argument defaults, and block sets
//! (`{% set x %}...{% endset %}`, which produce strings anyway). Calling a mutator on an immutable
//! value is an error with a hint rather than a silent no-op. A container cannot be inserted into
//! itself (Python would build a cycle). Lazily concatenated sequences (`xs + ys`) are copied when
//! assigned, matching Python's copy semantics for `+`.
//!
//! Other known differences from Python: `regex_replace` uses the `regex` crate (no
//! look-around or backreferences inside patterns; `$` without `multiline` matches only at the very
//! end); an empty match directly after an empty match is only retried one character later.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use minijinja::value::{
    Enumerator, Kwargs, Object, ObjectRepr, Rest, Tuple, Value, ValueKind, ValueOrKwargs, from_args,
};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};

/// Instruction budget per render. A realistic input adapter over a 1000-message multimodal
/// conversation spends about 37 thousand; three million leaves room for far longer inputs and
/// SSE bodies while a runaway loop stops after ~70 ms in release builds (~0.5 s unoptimised).
pub const FUEL: u64 = 3_000_000;

/// Maximum nesting of macro calls / includes. Deep enough for recursive macros over nested
/// JSON, shallow enough to stay far away from the stack size of worker threads.
pub const RECURSION_LIMIT: usize = 100;

/// Name of the function the `{% set %}` rewrite wraps right-hand sides in.
const MUTABLE_FN: &str = "__lfeval_mutable";

/// JSON nesting beyond this is reported instead of recursing further.
const MAX_JSON_DEPTH: usize = 512;

/// Maps with more entries than this get a hash index; smaller ones are scanned.
const SMALL_MAP: usize = 12;

/// Where a template's text came from, so errors point into the user's file.
#[derive(Debug, Clone)]
pub struct TemplateOrigin {
    /// path shown to users (already project-relative, e.g. `adapters/ragflow.yaml` or `adapters/in.j2`)
    pub file: String,
    /// number of lines before the template's first line in `file` (0 when the file is the template)
    pub line_offset: usize,
    /// column offset of the template text in the file (block-scalar indent), 0 if none
    pub column_offset: usize,
}

impl TemplateOrigin {
    /// An origin for a file that holds nothing but the template.
    pub fn file(file: impl Into<String>) -> Self {
        TemplateOrigin {
            file: file.into(),
            line_offset: 0,
            column_offset: 0,
        }
    }
}

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
    fn bare(kind: TemplateErrorKind, message: impl Into<String>) -> Self {
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

/// Text inserted by the `{% set %}` rewrite, in original-source byte offsets.
#[derive(Debug, Clone, Copy)]
struct Insertion {
    at: usize,
    len: usize,
}

/// What is needed to translate minijinja's positions back into the user's file.
#[derive(Debug, Clone)]
struct SourceMap {
    origin: Option<TemplateOrigin>,
    original: String,
    insertions: Vec<Insertion>,
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

/// Compiled adapter templates plus the environment they render in.
pub struct TemplateEngine {
    env: Environment<'static>,
    sources: HashMap<String, SourceMap>,
}

impl Default for TemplateEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TemplateEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateEngine")
            .field("templates", &self.sources.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TemplateEngine {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // minijinja picks HTML/JSON escaping from the template name (`x.json.j2`); Jinja2 with
        // `autoescape=False` never escapes.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_debug(true);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(unknown_method);
        env.set_formatter(format_value);
        env.add_filter("fromjson", fromjson);
        env.add_filter("tojson", tojson_filter);
        env.add_filter("json_escape", json_escape);
        env.add_filter("zip", zip_filter);
        env.add_filter("merge", merge_filter);
        env.add_filter("regex_replace", regex_replace);
        env.add_function("dict", dict_fn);
        env.add_function("namespace", namespace_fn);
        env.add_function(MUTABLE_FN, mutable_fn);
        TemplateEngine {
            env,
            sources: HashMap::new(),
        }
    }

    /// Compile once; syntax errors are reported here with file:line.
    pub fn add(&mut self, name: &str, source: &str, origin: TemplateOrigin) -> Result<(), TemplateError> {
        let (rewritten, insertions) = rewrite_sets(source);
        let map = SourceMap {
            origin: Some(origin),
            original: source.to_string(),
            insertions,
        };
        if let Err(err) = self.env.add_template_owned(name.to_string(), rewritten) {
            return Err(convert_error(&err, Some(&map), true));
        }
        self.sources.insert(name.to_string(), map);
        Ok(())
    }

    /// Replaces the per-render instruction budget (default [`FUEL`]).
    pub fn set_fuel(&mut self, fuel: u64) {
        self.env.set_fuel(Some(fuel));
    }

    /// Whether a template of that name was added.
    pub fn contains(&self, name: &str) -> bool {
        self.sources.contains_key(name)
    }

    pub fn render(
        &self,
        name: &str,
        ctx: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|_| TemplateError::bare(TemplateErrorKind::Render, format!("unknown template `{name}`")))?;
        template.render(context_value(ctx)).map_err(|err| {
            let map = err
                .name()
                .and_then(|n| self.sources.get(n))
                .or_else(|| self.sources.get(name));
            convert_error(&err, map, false)
        })
    }

    /// Evaluate a standalone Jinja *expression* (used for dataset filters): returns JSON.
    pub fn eval_expression(
        &self,
        expr: &str,
        ctx: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, TemplateError> {
        let map = SourceMap {
            origin: None,
            original: expr.to_string(),
            insertions: Vec::new(),
        };
        let compiled = self
            .env
            .compile_expression_owned(expr.to_string())
            .map_err(|err| convert_error(&err, Some(&map), true))?;
        let value = compiled
            .eval(context_value(ctx))
            .map_err(|err| convert_error(&err, Some(&map), false))?;
        if value.is_undefined() {
            return Err(TemplateError {
                kind: TemplateErrorKind::Undefined,
                message: format!("expression `{}` is undefined", expr.trim()),
                file: None,
                line: None,
                column: None,
                excerpt: None,
            });
        }
        value_to_json(&value, 0).map_err(|err| convert_error(&err, Some(&map), false))
    }

    /// Render a one-off template string (used for prompts like `{{ sample.question }}`) without
    /// registering it.
    pub fn render_str(
        &self,
        source: &str,
        origin: &TemplateOrigin,
        ctx: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let (rewritten, insertions) = rewrite_sets(source);
        let map = SourceMap {
            origin: Some(origin.clone()),
            original: source.to_string(),
            insertions,
        };
        let template = self
            .env
            .template_from_named_str(&origin.file, &rewritten)
            .map_err(|err| convert_error(&err, Some(&map), true))?;
        template.render(context_value(ctx)).map_err(|err| {
            let named = err
                .name()
                .filter(|n| *n != origin.file)
                .and_then(|n| self.sources.get(n));
            convert_error(&err, Some(named.unwrap_or(&map)), false)
        })
    }
}

/// Prints floats the way Python's `str(float)` does (`1e+21`, `1.5e-07`), everything else as
/// minijinja does.
fn format_value(out: &mut minijinja::Output<'_>, state: &mut State<'_, '_>, value: &Value) -> Result<(), Error> {
    if value.kind() == ValueKind::Number
        && !value.is_integer()
        && let Ok(f) = f64::try_from(value.clone())
    {
        let text = match f {
            f if f.is_nan() => "nan".to_string(),
            f if f.is_infinite() => if f > 0.0 { "inf" } else { "-inf" }.to_string(),
            f => python_float(f),
        };
        out.write_str(&text)?;
        return Ok(());
    }
    minijinja::escape_formatter(out, state, value)
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn convert_error(err: &Error, map: Option<&SourceMap>, compiling: bool) -> TemplateError {
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
fn lowercase_first(message: &str) -> String {
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
struct UndefinedNote {
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

fn undefined_note(detail: &str) -> Option<UndefinedNote> {
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
fn excerpt(
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

fn char_count(text: &str, byte_end: usize) -> usize {
    let mut end = byte_end.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].chars().count()
}

// ---------------------------------------------------------------------------------------------
// `{% set %}` rewrite
// ---------------------------------------------------------------------------------------------

/// Wraps the right-hand side of `{% set NAME = EXPR %}` (and `NAME.attr`) in the mutable-copy
/// function. Comments, `{{ }}` blocks, string literals and `{% raw %}` sections are skipped;
/// only text inside a line is inserted, so line numbers are unchanged.
fn rewrite_sets(src: &str) -> (String, Vec<Insertion>) {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 32);
    let mut insertions = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        match b[i + 1] {
            b'#' => i = find(b, i + 2, b"#}").map_or(b.len(), |p| p + 2),
            b'{' => i = scan_to_close(b, i + 2, b"}}"),
            b'%' => {
                let mut j = i + 2;
                if j < b.len() && matches!(b[j], b'-' | b'+') {
                    j += 1;
                }
                j = skip_ws(b, j);
                let word_end = ident_end(b, j);
                let end = scan_to_close(b, word_end, b"%}");
                match &src[j..word_end] {
                    "raw" => i = find_endraw(b, end),
                    "set" => {
                        if let Some((es, ee)) = set_expr_range(b, word_end, end) {
                            out.push_str(&src[copied..es]);
                            out.push_str(MUTABLE_FN);
                            out.push('(');
                            insertions.push(Insertion {
                                at: es,
                                len: MUTABLE_FN.len() + 1,
                            });
                            out.push_str(&src[es..ee]);
                            out.push(')');
                            insertions.push(Insertion { at: ee, len: 1 });
                            copied = ee;
                        }
                        i = end;
                    }
                    _ => i = end,
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&src[copied..]);
    (out, insertions)
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= b.len() {
        return None;
    }
    b[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn ident_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
        i += 1;
    }
    i
}

/// Position just past `close`, skipping string literals; the end of input if unterminated.
fn scan_to_close(b: &[u8], mut i: usize, close: &[u8]) -> usize {
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            _ if b[i..].starts_with(close) => return i + close.len(),
            _ => i += 1,
        }
    }
    b.len()
}

/// Position just past the `{% endraw %}` tag that closes a raw block.
fn find_endraw(b: &[u8], mut i: usize) -> usize {
    while let Some(p) = find(b, i, b"{%") {
        let mut j = p + 2;
        if j < b.len() && matches!(b[j], b'-' | b'+') {
            j += 1;
        }
        j = skip_ws(b, j);
        let word_end = ident_end(b, j);
        if &b[j..word_end] == b"endraw" {
            return find(b, word_end, b"%}").map_or(b.len(), |p| p + 2);
        }
        i = p + 2;
    }
    b.len()
}

/// For a `set` tag whose keyword ends at `i` and whose closing `%}` ends at `end`, the byte range
/// of the right-hand side expression, if this is a single-target assignment.
fn set_expr_range(b: &[u8], i: usize, end: usize) -> Option<(usize, usize)> {
    if end > b.len() || end < 2 || !b[end - 2..end].starts_with(b"%}") {
        return None;
    }
    let mut j = skip_ws(b, i);
    if j == i {
        return None;
    }
    // target: NAME or NAME.attr
    let name_end = ident_end(b, j);
    if name_end == j || b[j].is_ascii_digit() {
        return None;
    }
    j = name_end;
    while j < b.len() && b[j] == b'.' {
        let attr_end = ident_end(b, j + 1);
        if attr_end == j + 1 {
            return None;
        }
        j = attr_end;
    }
    j = skip_ws(b, j);
    if j >= b.len() || b[j] != b'=' || b.get(j + 1) == Some(&b'=') {
        return None;
    }
    let start = skip_ws(b, j + 1);
    let mut stop = end - 2;
    if stop > start && matches!(b[stop - 1], b'-' | b'+') {
        stop -= 1;
    }
    while stop > start && b[stop - 1].is_ascii_whitespace() {
        stop -= 1;
    }
    (stop > start).then_some((start, stop))
}

// ---------------------------------------------------------------------------------------------
// Mutable containers
// ---------------------------------------------------------------------------------------------

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // a panic while holding the lock cannot leave a Vec/map half-updated in a way that matters
    // for rendering, so a poisoned lock is still usable
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A Python-style list that supports in-place mutation.
#[derive(Default)]
struct MutList {
    items: Mutex<Vec<Value>>,
}

impl fmt::Debug for MutList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.snapshot().iter()).finish()
    }
}

impl MutList {
    fn new_value(items: Vec<Value>) -> Value {
        Value::from_object(MutList {
            items: Mutex::new(items),
        })
    }

    fn snapshot(&self) -> Vec<Value> {
        lock(&self.items).clone()
    }
}

impl Object for MutList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let idx = key.as_usize()?;
        lock(&self.items).get(idx).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.snapshot())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(lock(&self.items).len())
    }

    fn is_true(self: &Arc<Self>) -> bool {
        !lock(&self.items).is_empty()
    }

    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let me = Arc::as_ptr(self) as *const ();
        match method {
            "append" => {
                let (item,): (Value,) = from_args(args)?;
                let item = insertable(item, me)?;
                lock(&self.items).push(item);
                Ok(Value::from(()))
            }
            "extend" => {
                let (other,): (Value,) = from_args(args)?;
                let mut new = Vec::new();
                for item in iterate(&other, "extend")? {
                    new.push(insertable(item, me)?);
                }
                lock(&self.items).extend(new);
                Ok(Value::from(()))
            }
            "insert" => {
                let (idx, item): (i64, Value) = from_args(args)?;
                let item = insertable(item, me)?;
                let mut items = lock(&self.items);
                let idx = python_index(idx, items.len()).min(items.len());
                items.insert(idx, item);
                Ok(Value::from(()))
            }
            "pop" => {
                let (idx,): (Option<i64>,) = from_args(args)?;
                let mut items = lock(&self.items);
                if items.is_empty() {
                    return Err(invalid("pop from empty list"));
                }
                let len = items.len();
                let idx = match idx {
                    None => len - 1,
                    Some(i) if i < 0 && i.unsigned_abs() as usize <= len => len - i.unsigned_abs() as usize,
                    Some(i) if i >= 0 && (i as usize) < len => i as usize,
                    Some(_) => return Err(invalid("pop index out of range")),
                };
                Ok(items.remove(idx))
            }
            "remove" => {
                let (needle,): (Value,) = from_args(args)?;
                let snapshot = self.snapshot();
                let Some(pos) = snapshot.iter().position(|v| *v == needle) else {
                    return Err(invalid(format!("list.remove(x): `{needle:?}` is not in list")));
                };
                let mut items = lock(&self.items);
                if pos < items.len() {
                    items.remove(pos);
                }
                Ok(Value::from(()))
            }
            "index" => {
                let (needle,): (Value,) = from_args(args)?;
                self.snapshot()
                    .iter()
                    .position(|v| *v == needle)
                    .map(Value::from)
                    .ok_or_else(|| invalid(format!("`{needle:?}` is not in list")))
            }
            "count" => {
                let (needle,): (Value,) = from_args(args)?;
                Ok(Value::from(self.snapshot().iter().filter(|v| **v == needle).count()))
            }
            "clear" => {
                let () = from_args(args)?;
                lock(&self.items).clear();
                Ok(Value::from(()))
            }
            "copy" => {
                let () = from_args(args)?;
                Ok(MutList::new_value(self.snapshot()))
            }
            "reverse" => {
                let () = from_args(args)?;
                lock(&self.items).reverse();
                Ok(Value::from(()))
            }
            "sort" => {
                let (kwargs,): (Kwargs,) = from_args(args)?;
                let reverse: Option<bool> = kwargs.get("reverse")?;
                kwargs.assert_all_used()?;
                let mut items = self.snapshot();
                items.sort();
                if reverse == Some(true) {
                    items.reverse();
                }
                *lock(&self.items) = items;
                Ok(Value::from(()))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// Insertion-ordered map keyed by minijinja values (Python dict semantics).
#[derive(Default, Clone)]
struct OrderedMap {
    entries: Vec<(Value, Value)>,
    index: HashMap<Value, usize>,
}

impl OrderedMap {
    fn position(&self, key: &Value) -> Option<usize> {
        if self.entries.len() > SMALL_MAP {
            self.index.get(key).copied()
        } else {
            self.entries.iter().position(|(k, _)| k == key)
        }
    }

    fn get(&self, key: &Value) -> Option<&Value> {
        self.position(key).map(|p| &self.entries[p].1)
    }

    fn insert(&mut self, key: Value, value: Value) {
        if let Some(p) = self.position(&key) {
            self.entries[p].1 = value;
            return;
        }
        self.entries.push((key.clone(), value));
        if self.entries.len() > SMALL_MAP {
            if self.index.is_empty() {
                self.reindex();
            } else {
                self.index.insert(key, self.entries.len() - 1);
            }
        }
    }

    fn remove(&mut self, key: &Value) -> Option<Value> {
        let p = self.position(key)?;
        let (_, value) = self.entries.remove(p);
        self.reindex();
        Some(value)
    }

    fn reindex(&mut self) {
        self.index.clear();
        if self.entries.len() > SMALL_MAP {
            for (i, (k, _)) in self.entries.iter().enumerate() {
                self.index.insert(k.clone(), i);
            }
        }
    }
}

/// A Python-style dict that supports in-place mutation and keeps insertion order.
#[derive(Default)]
struct MutMap {
    map: Mutex<OrderedMap>,
}

impl fmt::Debug for MutMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = lock(&self.map).clone();
        f.debug_map().entries(map.entries.iter().map(|(k, v)| (k, v))).finish()
    }
}

impl MutMap {
    fn new_value(map: OrderedMap) -> Value {
        Value::from_object(MutMap { map: Mutex::new(map) })
    }

    fn snapshot(&self) -> Vec<(Value, Value)> {
        lock(&self.map).entries.clone()
    }
}

impl Object for MutMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        lock(&self.map).get(key).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::KeyValueIter(Box::new(self.snapshot().into_iter()))
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(lock(&self.map).entries.len())
    }

    fn is_true(self: &Arc<Self>) -> bool {
        !lock(&self.map).entries.is_empty()
    }

    fn call_method(self: &Arc<Self>, _state: &mut State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let me = Arc::as_ptr(self) as *const ();
        match method {
            "update" => {
                let (other, kwargs): (Option<&Value>, Kwargs) = from_args(args)?;
                let mut pairs = match other {
                    Some(other) => pairs_of(other, "update")?,
                    None => Vec::new(),
                };
                for key in kwargs.args() {
                    pairs.push((Value::from(key), kwargs.get::<Value>(key)?));
                }
                let mut checked = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    checked.push((hashable(k)?, insertable(v, me)?));
                }
                let mut map = lock(&self.map);
                for (k, v) in checked {
                    map.insert(k, v);
                }
                Ok(Value::from(()))
            }
            "get" => {
                let (key, default): (&Value, Option<Value>) = from_args(args)?;
                Ok(lock(&self.map)
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| default.unwrap_or(Value::from(()))))
            }
            "pop" => {
                let (key, default): (&Value, Option<&Value>) = from_args(args)?;
                // `args.len()` distinguishes `pop(k, none)` from `pop(k)`
                match lock(&self.map).remove(key) {
                    Some(v) => Ok(v),
                    None if args.len() > 1 => Ok(default.cloned().unwrap_or(Value::from(()))),
                    None => Err(invalid(format!("key `{key:?}` not found"))),
                }
            }
            "setdefault" => {
                let (key, default): (Value, Option<Value>) = from_args(args)?;
                let key = hashable(key)?;
                if let Some(v) = lock(&self.map).get(&key) {
                    return Ok(v.clone());
                }
                let v = insertable(default.unwrap_or(Value::from(())), me)?;
                lock(&self.map).insert(key, v.clone());
                Ok(v)
            }
            "popitem" => {
                let () = from_args(args)?;
                let mut map = lock(&self.map);
                let Some((k, v)) = map.entries.pop() else {
                    return Err(invalid("popitem(): dictionary is empty"));
                };
                map.reindex();
                Ok(Value::from(Tuple::from(vec![k, v])))
            }
            "clear" => {
                let () = from_args(args)?;
                *lock(&self.map) = OrderedMap::default();
                Ok(Value::from(()))
            }
            "copy" => {
                let () = from_args(args)?;
                Ok(MutMap::new_value(lock(&self.map).clone()))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// The engine's own error for using an undefined `value`: it remembers which expression
/// produced the value, so the final message can name it.
fn undefined_error(value: &Value) -> Error {
    match value.get_attr("") {
        Err(err) => err,
        Ok(_) => Error::from(ErrorKind::UndefinedError),
    }
}

fn invalid(msg: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// Python's index normalisation for `insert` (negative counts from the end, clamped at 0).
fn python_index(idx: i64, len: usize) -> usize {
    if idx < 0 {
        len.saturating_sub(idx.unsigned_abs() as usize)
    } else {
        idx as usize
    }
}

fn is_mutable(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.is::<MutList>() || o.is::<MutMap>())
}

fn object_ptr(value: &Value) -> Option<*const ()> {
    if let Some(l) = value.downcast_object_ref::<MutList>() {
        Some(l as *const MutList as *const ())
    } else {
        value
            .downcast_object_ref::<MutMap>()
            .map(|m| m as *const MutMap as *const ())
    }
}

fn iterate(value: &Value, what: &str) -> Result<Vec<Value>, Error> {
    if value.is_undefined() {
        return Err(undefined_error(value));
    }
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map | ValueKind::String => Ok(value.try_iter()?.collect()),
        kind => Err(invalid(format!("`{what}` expects an iterable, got {kind}"))),
    }
}

/// Key/value pairs of a mapping or of an iterable of 2-item sequences (what `dict()` accepts).
fn pairs_of(value: &Value, what: &str) -> Result<Vec<(Value, Value)>, Error> {
    if value.is_undefined() {
        return Err(undefined_error(value));
    }
    if value.kind() == ValueKind::Map {
        let Some(obj) = value.as_object() else {
            return Ok(Vec::new());
        };
        return Ok(obj.try_iter_pairs().map(|i| i.collect()).unwrap_or_default());
    }
    let mut out = Vec::new();
    for item in iterate(value, what)? {
        let kv: Vec<Value> = match item.kind() {
            ValueKind::Seq | ValueKind::Iterable => item.try_iter()?.collect(),
            _ => Vec::new(),
        };
        let [k, v]: [Value; 2] = kv
            .try_into()
            .map_err(|_| invalid(format!("`{what}` expects a mapping or a sequence of key/value pairs")))?;
        out.push((k, v));
    }
    Ok(out)
}

fn hashable(key: Value) -> Result<Value, Error> {
    if key.is_undefined() {
        return Err(undefined_error(&key));
    }
    match key.kind() {
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable if !key.is_tuple() => {
            Err(invalid(format!("unhashable type `{}` used as a dict key", key.kind())))
        }
        _ => Ok(key),
    }
}

/// Prepares a value for storing inside the container at `container`: copies plain containers
/// into mutable ones and refuses to create a cycle.
fn insertable(value: Value, container: *const ()) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(undefined_error(&value));
    }
    let value = make_mutable(value, 0)?;
    if reaches(&value, container) {
        return Err(invalid("cannot insert a container into itself (circular reference)"));
    }
    Ok(value)
}

/// Whether `target` is `value` or one of its (transitive) elements.
fn reaches(value: &Value, target: *const ()) -> bool {
    let mut stack = vec![value.clone()];
    let mut seen = HashSet::new();
    while let Some(v) = stack.pop() {
        if let Some(ptr) = object_ptr(&v) {
            if ptr == target {
                return true;
            }
            if !seen.insert(ptr as usize) {
                continue;
            }
            if let Some(l) = v.downcast_object_ref::<MutList>() {
                stack.extend(l.snapshot());
            } else if let Some(m) = v.downcast_object_ref::<MutMap>() {
                stack.extend(m.snapshot().into_iter().map(|(_, v)| v));
            }
        } else if v.is_tuple()
            && let Ok(items) = v.try_iter()
        {
            stack.extend(items);
        }
    }
    false
}

/// Copies plain sequences and maps (deeply) into mutable ones; mutable values, namespaces and
/// scalars pass through unchanged.
fn make_mutable(value: Value, depth: usize) -> Result<Value, Error> {
    let Some(obj) = value.as_object() else {
        return Ok(value);
    };
    if is_mutable(&value) || value.is_kwargs() {
        return Ok(value);
    }
    if depth > MAX_JSON_DEPTH {
        return Err(invalid("value is nested too deeply"));
    }
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => {
            let mut items = Vec::new();
            for item in value.try_iter()? {
                items.push(make_mutable(item, depth + 1)?);
            }
            if value.is_tuple() {
                Ok(Value::from(Tuple::from(items)))
            } else {
                Ok(MutList::new_value(items))
            }
        }
        // namespaces must stay themselves: `{% set ns.x = ... %}` only works on the original
        ValueKind::Map if obj.type_name().ends_with("::Namespace") => Ok(value),
        ValueKind::Map => {
            let mut map = OrderedMap::default();
            for (k, v) in obj.try_iter_pairs().into_iter().flatten() {
                map.insert(k, make_mutable(v, depth + 1)?);
            }
            Ok(MutMap::new_value(map))
        }
        _ => Ok(value),
    }
}

fn mutable_fn(args: Rest<Value>) -> Result<Value, Error> {
    let mut args = args.0;
    match args.len() {
        0 => Err(Error::from(ErrorKind::MissingArgument)),
        1 => make_mutable(args.remove(0), 0),
        // `{% set x = a, b %}` assigns a tuple
        _ => {
            let items = args
                .into_iter()
                .map(|v| make_mutable(v, 0))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Value::from(Tuple::from(items)))
        }
    }
}

/// `dict(mapping_or_pairs, **kwargs)` returning a mutable dict.
fn dict_fn(value: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let mut pairs = match value {
        Some(v) => pairs_of(&v, "dict")?,
        None => Vec::new(),
    };
    for key in kwargs.args() {
        pairs.push((Value::from(key), kwargs.get::<Value>(key)?));
    }
    let mut map = OrderedMap::default();
    for (k, v) in pairs {
        map.insert(hashable(k)?, make_mutable(v, 0)?);
    }
    Ok(MutMap::new_value(map))
}

/// `namespace(...)` whose initial values are mutable.
fn namespace_fn(args: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let mut map = OrderedMap::default();
    for arg in args.0 {
        let arg = arg.into_value();
        for (k, v) in pairs_of(&arg, "namespace")? {
            map.insert(k, make_mutable(v, 0)?);
        }
    }
    minijinja::functions::namespace(Some(ValueOrKwargs::from(MutMap::new_value(map))))
}

const MUTATORS: &[&str] = &[
    "append",
    "extend",
    "insert",
    "pop",
    "remove",
    "clear",
    "reverse",
    "sort",
    "update",
    "setdefault",
    "popitem",
];

fn unknown_method(state: &mut State<'_, '_>, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    match minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args) {
        Err(err)
            if err.kind() == ErrorKind::UnknownMethod
                && MUTATORS.contains(&method)
                && matches!(value.kind(), ValueKind::Seq | ValueKind::Map | ValueKind::Iterable) =>
        {
            Err(invalid(format!(
                "cannot call `{method}` on an immutable {}; hint: assign it with \
                 `{{% set name = ... %}}` first to get a mutable copy",
                value.kind()
            )))
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// JSON in and out
// ---------------------------------------------------------------------------------------------

/// Converts JSON into template values; containers become mutable.
fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => MutList::new_value(items.iter().map(json_to_value).collect()),
        serde_json::Value::Object(map) => MutMap::new_value(json_map(map)),
    }
}

fn json_map(map: &serde_json::Map<String, serde_json::Value>) -> OrderedMap {
    let mut out = OrderedMap::default();
    for (k, v) in map {
        out.insert(Value::from(k.as_str()), json_to_value(v));
    }
    out
}

fn context_value(ctx: &serde_json::Map<String, serde_json::Value>) -> Value {
    MutMap::new_value(json_map(ctx))
}

fn fromjson(value: &Value) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(undefined_error(value));
    }
    let parsed: Result<serde_json::Value, _> = if let Some(s) = value.as_str() {
        serde_json::from_str(s)
    } else if let Some(b) = value.as_bytes() {
        serde_json::from_slice(b)
    } else {
        return Err(invalid(format!("`fromjson` expects a string, got {}", value.kind())));
    };
    parsed
        .map(|v| json_to_value(&v))
        .map_err(|e| invalid(format!("invalid JSON passed to `fromjson`: {e}")))
}

/// Converts a template value to JSON (for expression results).
fn value_to_json(value: &Value, depth: usize) -> Result<serde_json::Value, Error> {
    if depth > MAX_JSON_DEPTH {
        return Err(invalid("value is nested too deeply to convert to JSON"));
    }
    Ok(match value.kind() {
        ValueKind::Undefined => return Err(undefined_error(value)),
        ValueKind::None => serde_json::Value::Null,
        ValueKind::Bool => serde_json::Value::Bool(value.is_true()),
        ValueKind::Number if value.is_integer() => {
            if let Ok(i) = i64::try_from(value.clone()) {
                serde_json::Value::from(i)
            } else if let Ok(u) = u64::try_from(value.clone()) {
                serde_json::Value::from(u)
            } else {
                float_json(f64::try_from(value.clone())?)?
            }
        }
        ValueKind::Number => float_json(f64::try_from(value.clone())?)?,
        ValueKind::String => serde_json::Value::String(value.as_str().unwrap_or("").to_string()),
        ValueKind::Seq | ValueKind::Iterable => serde_json::Value::Array(
            value
                .try_iter()?
                .map(|v| value_to_json(&v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        ValueKind::Map => {
            let mut out = serde_json::Map::new();
            for (k, v) in map_pairs(value) {
                out.insert(json_key(&k)?, value_to_json(&v, depth + 1)?);
            }
            serde_json::Value::Object(out)
        }
        kind => return Err(invalid(format!("a {kind} cannot be converted to JSON"))),
    })
}

fn float_json(f: f64) -> Result<serde_json::Value, Error> {
    serde_json::Number::from_f64(f)
        .map(serde_json::Value::Number)
        .ok_or_else(|| invalid(format!("`{f}` cannot be represented in JSON")))
}

fn map_pairs(value: &Value) -> Vec<(Value, Value)> {
    value
        .as_object()
        .and_then(|o| o.try_iter_pairs())
        .map(|i| i.collect())
        .unwrap_or_default()
}

/// How Python's `json` turns a dict key into a string.
fn json_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or("").to_string()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_string()),
        ValueKind::None => Ok("null".to_string()),
        ValueKind::Number if key.is_integer() => Ok(key.to_string()),
        ValueKind::Number => Ok(python_float(f64::try_from(key.clone())?)),
        kind => Err(invalid(format!(
            "JSON object keys must be strings, numbers, booleans or none, not {kind}"
        ))),
    }
}

/// Python's `repr(float)` (as `json.dumps` writes floats, with `NaN`/`Infinity` allowed).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // `{:e}` yields the shortest round-tripping digits, e.g. `-1.5e-7`
    let formatted = format!("{f:e}");
    let (mantissa, exp) = formatted.split_once('e').unwrap_or((&formatted, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let decpt = exp + 1;
    let mut out = String::from(sign);
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            out.push_str("0.");
            out.push_str(&"0".repeat((-decpt) as usize));
            out.push_str(&digits);
        } else if decpt >= n {
            out.push_str(&digits);
            out.push_str(&"0".repeat((decpt - n) as usize));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt as usize]);
            out.push('.');
            out.push_str(&digits[decpt as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

/// Writes `s` as a JSON string literal the way Python's `json.dumps` does (`ensure_ascii`),
/// optionally with Jinja2's HTML-safe escapes for `<`, `>`, `&` and `'`.
fn write_json_str(out: &mut String, s: &str, html_safe: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\'' if html_safe => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Python's `json.dumps` layout for a container: `", "` separators inline, or one item per
/// line with `","` separators when indenting.
fn write_container<T, E>(
    out: &mut String,
    open: char,
    close: char,
    items: Vec<T>,
    indent: Option<usize>,
    level: usize,
    mut write_item: impl FnMut(&mut String, T) -> Result<(), E>,
) -> Result<(), E> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    let inner = indent.map(|n| " ".repeat(n * (level + 1)));
    for (i, item) in items.into_iter().enumerate() {
        match &inner {
            Some(pad) => {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                out.push_str(pad);
            }
            None if i > 0 => out.push_str(", "),
            None => {}
        }
        write_item(out, item)?;
    }
    if let Some(n) = indent {
        out.push('\n');
        out.push_str(&" ".repeat(n * level));
    }
    out.push(close);
    Ok(())
}

fn write_value_json(out: &mut String, value: &Value, indent: Option<usize>, level: usize) -> Result<(), Error> {
    if level > MAX_JSON_DEPTH {
        return Err(invalid("value is nested too deeply for `tojson` (circular reference?)"));
    }
    match value.kind() {
        ValueKind::Undefined => return Err(undefined_error(value)),
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => {
            let _ = write!(out, "{value}");
        }
        ValueKind::Number => out.push_str(&python_float(f64::try_from(value.clone())?)),
        ValueKind::String => write_json_str(out, value.as_str().unwrap_or(""), true),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, '[', ']', items, indent, level, |out, item| {
                write_value_json(out, &item, indent, level + 1)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for (k, v) in map_pairs(value) {
                entries.push((json_key(&k)?, k, v));
            }
            sort_entries(&mut entries)?;
            write_container(out, '{', '}', entries, indent, level, |out, (key, _, v)| {
                write_json_str(out, &key, true);
                out.push_str(": ");
                write_value_json(out, &v, indent, level + 1)
            })?;
        }
        ValueKind::Invalid => return Err(invalid("invalid value passed to `tojson`")),
        kind => {
            return Err(invalid(format!("a {kind} is not JSON serializable")));
        }
    }
    Ok(())
}

/// `sort_keys=True`: Python sorts the original keys, so strings sort as strings, numbers
/// numerically, and a mix of both is an error.
fn sort_entries(entries: &mut [(String, Value, Value)]) -> Result<(), Error> {
    if entries.iter().all(|(_, k, _)| k.kind() == ValueKind::String) {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
    } else if entries
        .iter()
        .all(|(_, k, _)| matches!(k.kind(), ValueKind::Number | ValueKind::Bool))
    {
        entries.sort_by(|a, b| a.1.cmp(&b.1));
    } else if entries.len() > 1 {
        return Err(invalid(
            "`tojson` cannot sort keys of mixed types (python raises a TypeError)",
        ));
    }
    Ok(())
}

fn write_serde_json(
    out: &mut String,
    value: &serde_json::Value,
    indent: Option<usize>,
    level: usize,
) -> Result<(), Infallible> {
    match value {
        serde_json::Value::Null => out.push_str("null"),
        serde_json::Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => out.push_str(&python_float(f)),
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        serde_json::Value::String(s) => write_json_str(out, s, true),
        serde_json::Value::Array(items) => {
            let items = items.iter().collect();
            write_container(out, '[', ']', items, indent, level, |out, v| {
                write_serde_json(out, v, indent, level + 1)
            })?;
        }
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            write_container(out, '{', '}', entries, indent, level, |out, (k, v)| {
                write_json_str(out, k, true);
                out.push_str(": ");
                write_serde_json(out, v, indent, level + 1)
            })?;
        }
    }
    Ok(())
}

/// The bytes Jinja2's `tojson` filter produces for `value` (sorted keys, ASCII-only,
/// HTML-safe escapes, Python float formatting).
pub fn tojson_string(value: &serde_json::Value, indent: Option<usize>) -> String {
    let mut out = String::new();
    let Ok(()) = write_serde_json(&mut out, value, indent, 0);
    out
}

fn tojson_filter(value: &Value, indent: Option<usize>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match kwargs.get::<Option<usize>>("indent")? {
        Some(i) => Some(i),
        None => indent,
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_value_json(&mut out, value, indent, 0)?;
    Ok(Value::from_safe_string(out))
}

/// `json.dumps(s)[1:-1]` for strings; anything else passes through.
fn json_escape(value: Value) -> Value {
    match value.as_str() {
        Some(s) => {
            let mut out = String::with_capacity(s.len() + 2);
            write_json_str(&mut out, s, false);
            Value::from(&out[1..out.len() - 1])
        }
        None => value,
    }
}

fn zip_filter(value: &Value, others: Rest<Value>) -> Result<Value, Error> {
    let mut columns = vec![iterate(value, "zip")?];
    for other in others.iter() {
        columns.push(iterate(other, "zip")?);
    }
    let len = columns.iter().map(Vec::len).min().unwrap_or(0);
    let rows = (0..len)
        .map(|i| Value::from(Tuple::from(columns.iter().map(|c| c[i].clone()).collect::<Vec<_>>())))
        .collect();
    Ok(MutList::new_value(rows))
}

fn merge_filter(left: &Value, right: &Value) -> Result<Value, Error> {
    if left.kind() != ValueKind::Map || right.kind() != ValueKind::Map {
        return Err(invalid(format!(
            "`merge` expects two mappings, got {} and {}",
            left.kind(),
            right.kind()
        )));
    }
    deep_merge(left, right, 0)
}

fn deep_merge(left: &Value, right: &Value, depth: usize) -> Result<Value, Error> {
    if depth > MAX_JSON_DEPTH {
        return Err(invalid("value is nested too deeply to merge"));
    }
    let mut map = OrderedMap::default();
    for (k, v) in map_pairs(left) {
        map.insert(k, v);
    }
    for (k, rv) in map_pairs(right) {
        let merged = match map.get(&k) {
            Some(lv) if lv.kind() == ValueKind::Map && rv.kind() == ValueKind::Map => deep_merge(lv, &rv, depth + 1)?,
            _ => make_mutable(rv, 0)?,
        };
        map.insert(k, merged);
    }
    Ok(MutMap::new_value(map))
}

// ---------------------------------------------------------------------------------------------
// regex_replace
// ---------------------------------------------------------------------------------------------

type RegexKey = (String, bool, bool);

static REGEX_CACHE: LazyLock<Mutex<HashMap<RegexKey, regex::Regex>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn compiled_regex(pattern: &str, multiline: bool, ignorecase: bool) -> Result<regex::Regex, Error> {
    let key = (pattern.to_string(), multiline, ignorecase);
    if let Some(re) = lock(&REGEX_CACHE).get(&key) {
        return Ok(re.clone());
    }
    let re = regex::RegexBuilder::new(pattern)
        .multi_line(multiline)
        .case_insensitive(ignorecase)
        .build()
        .map_err(|e| {
            invalid(format!(
                "invalid regular expression `{pattern}`: {}",
                regex_error_summary(&e)
            ))
        })?;
    let mut cache = lock(&REGEX_CACHE);
    if cache.len() >= 256 {
        cache.clear();
    }
    cache.insert(key, re.clone());
    Ok(re)
}

/// The one-line reason of a regex error (the full text repeats the pattern with a caret).
fn regex_error_summary(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .map_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "), str::to_string)
}

/// Translates a Python `re.sub` replacement template into the `regex` crate's syntax.
fn translate_replacement(repl: &str, re: &regex::Regex) -> Result<String, Error> {
    let groups = re.captures_len(); // includes group 0
    let check_group = |n: usize| {
        if n < groups {
            Ok(format!("${{{n}}}"))
        } else {
            Err(invalid(format!("invalid group reference {n} in replacement")))
        }
    };
    let chars: Vec<char> = repl.chars().collect();
    let mut out = String::with_capacity(repl.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' {
            out.push_str("$$");
            i += 1;
            continue;
        }
        if c != '\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&d) = chars.get(i + 1) else {
            return Err(invalid("bad escape (end of replacement)"));
        };
        i += 2;
        match d {
            'g' => {
                if chars.get(i) != Some(&'<') {
                    return Err(invalid("missing `<` after `\\g` in replacement"));
                }
                let Some(close) = chars[i..].iter().position(|c| *c == '>') else {
                    return Err(invalid("missing `>`, unterminated group name in replacement"));
                };
                let name: String = chars[i + 1..i + close].iter().collect();
                i += close + 1;
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_digit()) {
                    let n = name
                        .parse::<usize>()
                        .map_err(|_| invalid(format!("invalid group reference {name}")))?;
                    out.push_str(&check_group(n)?);
                } else if re.capture_names().flatten().any(|n| n == name) {
                    let _ = write!(out, "${{{name}}}");
                } else {
                    return Err(invalid(format!("unknown group name `{name}` in replacement")));
                }
            }
            '0' => {
                // octal escape: \0, \0o, \0oo
                let mut code = 0u32;
                let mut taken = 0;
                while taken < 2 && chars.get(i).is_some_and(|c| ('0'..='7').contains(c)) {
                    code = code * 8 + chars[i].to_digit(8).unwrap_or(0);
                    i += 1;
                    taken += 1;
                }
                push_literal(&mut out, char::from_u32(code).unwrap_or('\0'));
            }
            '1'..='9' => {
                let mut digits = String::from(d);
                if let Some(&e) = chars.get(i)
                    && e.is_ascii_digit()
                {
                    let octal = d <= '7' && e <= '7' && chars.get(i + 1).is_some_and(|c| ('0'..='7').contains(c));
                    if octal {
                        let text: String = [d, e, chars[i + 1]].iter().collect();
                        let code = u32::from_str_radix(&text, 8).unwrap_or(0);
                        if code > 0o377 {
                            return Err(invalid(format!("octal escape value \\{text} outside of range 0-0o377")));
                        }
                        push_literal(&mut out, char::from_u32(code).unwrap_or('\0'));
                        i += 2;
                        continue;
                    }
                    digits.push(e);
                    i += 1;
                }
                let n = digits.parse::<usize>().unwrap_or(usize::MAX);
                out.push_str(&check_group(n)?);
            }
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            '\\' => out.push('\\'),
            d if d.is_ascii_alphabetic() => {
                return Err(invalid(format!("bad escape \\{d} in replacement")));
            }
            d => {
                out.push('\\');
                push_literal(&mut out, d);
            }
        }
    }
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    if c == '$' {
        out.push_str("$$");
    } else {
        out.push(c);
    }
}

fn regex_replace(value: &Value, pattern: &str, replacement: &str, rest: Rest<ValueOrKwargs>) -> Result<Value, Error> {
    let rest = rest.into_values();
    let (positional, kwargs): (&[Value], Kwargs) = from_args(&rest)?;
    if positional.len() > 3 {
        return Err(Error::from(ErrorKind::TooManyArguments));
    }
    let flag = |i: usize, name: &str| -> Result<bool, Error> {
        match kwargs.get::<Option<bool>>(name)? {
            Some(b) => Ok(b),
            None => Ok(positional.get(i).is_some_and(Value::is_true)),
        }
    };
    let multiline = flag(0, "multiline")?;
    let ignorecase = flag(1, "ignorecase")?;
    let count = match kwargs.get::<Option<i64>>("count")? {
        Some(c) => c,
        None => match positional.get(2) {
            Some(v) => i64::try_from(v.clone())?,
            None => 0,
        },
    };
    kwargs.assert_all_used()?;
    if value.is_undefined() {
        return Err(undefined_error(value));
    }
    let Some(text) = value.as_str() else {
        return Err(invalid(format!(
            "`regex_replace` expects a string, got {}",
            value.kind()
        )));
    };
    let re = compiled_regex(pattern, multiline, ignorecase)?;
    let template = translate_replacement(replacement, &re)?;
    Ok(Value::from(python_sub(&re, text, &template, count)))
}

/// `re.sub` with Python 3.7+ empty-match rules: an empty match right after a previous match is
/// allowed, an empty match at the position where the previous empty match was is not.
fn python_sub(re: &regex::Regex, text: &str, template: &str, count: i64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut pos = 0;
    let mut must_advance = false;
    let mut n = 0i64;
    while pos <= text.len() && (count <= 0 || n < count) {
        let Some(mut caps) = re.captures_at(text, pos) else {
            break;
        };
        let Some(mut m) = caps.get(0) else {
            break;
        };
        if must_advance && m.is_empty() && m.start() == pos {
            let Some(next) = text[pos..].chars().next() else {
                break;
            };
            let Some(retry) = re.captures_at(text, pos + next.len_utf8()) else {
                break;
            };
            caps = retry;
            let Some(retry_m) = caps.get(0) else {
                break;
            };
            m = retry_m;
        }
        out.push_str(&text[last..m.start()]);
        caps.expand(template, &mut out);
        last = m.end();
        pos = m.end();
        must_advance = m.is_empty();
        n += 1;
    }
    out.push_str(&text[last..]);
    out
}

/// Renders `source` with the template compiled under that same name if there is one (see
/// [`TemplateEngine::add`]), else compiles it for this one render.
pub fn render_cached(
    engine: &TemplateEngine,
    source: &str,
    origin: &TemplateOrigin,
    ctx: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, TemplateError> {
    if engine.contains(source) {
        engine.render(source, ctx)
    } else {
        engine.render_str(source, origin, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn ctx(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match value {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }

    fn render(src: &str, context: serde_json::Value) -> Result<String, TemplateError> {
        let engine = TemplateEngine::new();
        engine.render_str(src, &TemplateOrigin::file("t.j2"), &ctx(context))
    }

    fn ok(src: &str, context: serde_json::Value) -> String {
        match render(src, context) {
            Ok(s) => s,
            Err(e) => panic!("render failed: {}", e.report()),
        }
    }

    fn err(src: &str, context: serde_json::Value) -> TemplateError {
        match render(src, context) {
            Ok(s) => panic!("expected an error, rendered {s:?}"),
            Err(e) => e,
        }
    }

    // ---- tojson ------------------------------------------------------------------------------

    #[test]
    fn tojson_sorts_keys_and_escapes_like_jinja2() {
        let out = ok(
            "{{ v | tojson }}",
            json!({"v": {"b": 1, "a": ["<x>", "Zürich", "😀", "it's & \u{7f}"]}}),
        );
        assert_eq!(
            out,
            r#"{"a": ["\u003cx\u003e", "Z\u00fcrich", "\ud83d\ude00", "it\u0027s \u0026 \u007f"], "b": 1}"#
        );
    }

    #[test]
    fn tojson_indent_keyword_and_positional() {
        let expected = "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}";
        assert_eq!(
            ok("{{ v | tojson(indent=2) }}", json!({"v": {"b": [], "a": [1, {}]}})),
            expected
        );
        assert_eq!(
            ok("{{ v | tojson(2) }}", json!({"v": {"b": [], "a": [1, {}]}})),
            expected
        );
    }

    #[test]
    fn python_float_repr_matches_python() {
        let cases = [
            (0.1, "0.1"),
            (1.0, "1.0"),
            (1e21, "1e+21"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.0, "-0.0"),
            (123456789.123, "123456789.123"),
            (2.675, "2.675"),
            (-2.5e300, "-2.5e+300"),
            (5e-324, "5e-324"),
            (f64::INFINITY, "Infinity"),
            (f64::NAN, "NaN"),
        ];
        for (f, expected) in cases {
            assert_eq!(python_float(f), expected, "{f:e}");
        }
    }

    #[test]
    fn tojson_of_computed_values() {
        assert_eq!(ok("{{ (4 / 2) | tojson }}", json!({})), "2.0");
        assert_eq!(ok("{{ (2 ** 70) | tojson }}", json!({})), "1180591620717411303424");
        assert_eq!(ok("{{ none | tojson }}", json!({})), "null");
        assert_eq!(ok("{{ (1, 'a') | tojson }}", json!({})), r#"[1, "a"]"#);
        let e = err("{{ {1: 'a', 'b': 2} | tojson }}", json!({}));
        assert!(e.message.contains("mixed types"), "{}", e.message);
        assert_eq!(
            ok("{{ {10: 'a', 2: 'b'} | tojson }}", json!({})),
            r#"{"2": "b", "10": "a"}"#
        );
    }

    #[test]
    fn tojson_output_is_not_escaped_again() {
        let mut engine = TemplateEngine::new();
        engine
            .add("body.json.j2", "{{ x }} {{ v | tojson }}", TemplateOrigin::file("a.j2"))
            .unwrap();
        let out = engine
            .render("body.json.j2", &ctx(json!({"x": "<&>", "v": "<"})))
            .unwrap();
        assert_eq!(out, r#"<&> "\u003c""#);
    }

    #[test]
    fn tojson_string_matches_filter() {
        let v = json!({"z": [1.5, -0.0, 1e21, "é"], "a": null, "m": {"y": true, "x": 18446744073709551615u64}});
        let filter = ok("{{ v | tojson(indent=2) }}", json!({"v": v.clone()}));
        assert_eq!(tojson_string(&v, Some(2)), filter);
        assert_eq!(
            tojson_string(&v, None),
            r#"{"a": null, "m": {"x": 18446744073709551615, "y": true}, "z": [1.5, -0.0, 1e+21, "\u00e9"]}"#
        );
    }

    // ---- other filters -----------------------------------------------------------------------

    #[test]
    fn fromjson_parses_and_reports_invalid_json() {
        assert_eq!(
            ok(
                "{% set b = body | fromjson %}{{ b.choices[0].text }}-{{ b.n + 1 }}",
                json!({"body": r#"{"choices": [{"text": "hi"}], "n": 41}"#})
            ),
            "hi-42"
        );
        let e = err("{% set b = body | fromjson %}", json!({"body": "{\"a\": }"}));
        assert_eq!(e.kind, TemplateErrorKind::Render);
        assert!(
            e.message
                .starts_with("invalid JSON passed to `fromjson`: expected value at line 1 column 7"),
            "{}",
            e.message
        );
        let e = err("{{ body | fromjsn }}", json!({"body": "{}"}));
        assert_eq!(e.message, "unknown filter `fromjsn`");
        let e = err("{{ 3 | fromjson }}", json!({}));
        assert!(e.message.contains("expects a string"), "{}", e.message);
    }

    #[test]
    fn json_escape_strips_quotes_and_passes_non_strings() {
        assert_eq!(
            ok(
                r#"{"q": "{{ s | json_escape }}", "n": {{ n | json_escape }}}"#,
                json!({"s": "say \"hi\"\n<é>", "n": 3})
            ),
            r#"{"q": "say \"hi\"\n<\u00e9>", "n": 3}"#
        );
    }

    #[test]
    fn zip_pairs_up_to_the_shortest() {
        assert_eq!(
            ok(
                "{% for a, b in xs | zip(ys) %}{{ a }}{{ b }};{% endfor %}",
                json!({"xs": [1, 2, 3], "ys": ["a", "b"]})
            ),
            "1a;2b;"
        );
        assert_eq!(
            ok("{{ [1, 2] | zip('ab', [true, false]) | tojson }}", json!({})),
            r#"[[1, "a", true], [2, "b", false]]"#
        );
    }

    #[test]
    fn merge_is_deep_and_right_wins() {
        assert_eq!(
            ok(
                "{{ a | merge(b) | tojson }}",
                json!({"a": {"x": {"p": 1, "q": 2}, "y": 1}, "b": {"x": {"q": 3}, "y": {"z": 1}}})
            ),
            r#"{"x": {"p": 1, "q": 3}, "y": {"z": 1}}"#
        );
        let e = err("{{ a | merge([1]) }}", json!({"a": {}}));
        assert!(e.message.contains("`merge` expects two mappings"), "{}", e.message);
        // the result is mutable
        assert_eq!(
            ok(
                "{% set m = {} | merge({'a': [1]}) %}{% do m.a.append(2) %}{{ m.a }}",
                json!({})
            ),
            "[1, 2]"
        );
    }

    #[test]
    fn regex_replace_has_python_semantics() {
        // expectations were produced by Jinja2 3.1.6 with `re.sub`; note that Jinja string
        // literals process backslash escapes, so a backreference is written `'\\1'`
        let r = |src: &str| ok(src, json!({"s": "Hello World\nhello again"}));
        assert_eq!(
            r(r"{{ s | regex_replace('(\\w+) (\\w+)', '\\2 \\1') }}"),
            "World Hello\nagain hello"
        );
        assert_eq!(
            r(r"{{ s | regex_replace('(?P<w>o)', '[\\g<w>]', count=2) }}"),
            "Hell[o] W[o]rld\nhello again"
        );
        assert_eq!(
            r("{{ s | regex_replace('^hello', 'X', ignorecase=true, multiline=true) }}"),
            "X World\nX again"
        );
        assert_eq!(
            r("{{ s | regex_replace('^hello', 'X', true, true) }}"),
            "X World\nX again"
        );
        assert_eq!(
            r(r"{{ s | regex_replace('o', '$1\\n|') }}"),
            "Hell$1\n| W$1\n|rld\nhell$1\n| again"
        );
        assert_eq!(r(r"{{ s | regex_replace('(\w+) (\w+)', 'x') }}"), "x\nx");
        assert_eq!(ok("{{ 'abxd' | regex_replace('x*', '-') }}", json!({})), "-a-b--d-");
        assert_eq!(
            ok(r"{{ 'a.b' | regex_replace('\\.', '\\g<0>\\g<0>') }}", json!({})),
            "a..b"
        );
        assert_eq!(
            ok(r"{{ 'a.b' | regex_replace('(\\.)', '\\\\1\\101') }}", json!({})),
            r"a\1Ab"
        );
        assert_eq!(ok(r"{{ 'a.b' | regex_replace('(\\.)', '\\.') }}", json!({})), r"a\.b");
        let e = err("{{ s | regex_replace('(', 'x') }}", json!({"s": "a"}));
        assert_eq!(e.message, "invalid regular expression `(`: unclosed group");
        let e = err(r"{{ s | regex_replace('(a)', '\\2') }}", json!({"s": "a"}));
        assert!(e.message.contains("invalid group reference 2"), "{}", e.message);
        let e = err(r"{{ s | regex_replace('a', '\\q') }}", json!({"s": "a"}));
        assert!(e.message.contains("bad escape"), "{}", e.message);
    }

    #[test]
    fn pycompat_methods_work() {
        assert_eq!(
            ok(
                "{% for l in body.split('\\n') %}{% if l.startswith('data: ') %}[{{ l[6:].strip() }}]{% endif %}{% endfor %}",
                json!({"body": "data:  a \nx\ndata: b"})
            ),
            "[a][b]"
        );
        assert_eq!(
            ok(
                "{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}{{ d.get('zz', 'dflt') }}",
                json!({"d": {"b": 1, "a": 2}})
            ),
            "b=1,a=2,dflt"
        );
    }

    // ---- mutation ----------------------------------------------------------------------------

    #[test]
    fn append_in_loop_is_visible_after_the_loop() {
        let out = ok(
            "{% set xs = [] %}{% for m in input.messages %}{% do xs.append(m) %}{% endfor %}{{ xs | tojson }}",
            json!({"input": {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}}),
        );
        assert_eq!(
            out,
            r#"[{"content": "a", "role": "user"}, {"content": "b", "role": "assistant"}]"#
        );
    }

    #[test]
    fn dict_update_on_literal_dict_and_fromjson() {
        assert_eq!(
            ok(
                "{% set d = {} %}{% do d.update({'a': 1}) %}{% do d.update(b=2) %}{{ d | tojson }}",
                json!({})
            ),
            r#"{"a": 1, "b": 2}"#
        );
        assert_eq!(
            ok(
                "{% set body = body | fromjson %}{% do body.update({'model': 'x'}) %}{{ body | tojson }}",
                json!({"body": "{\"z\": 1}"})
            ),
            r#"{"model": "x", "z": 1}"#
        );
        assert_eq!(
            ok(
                "{% set d = dict() %}{% do d.update({'k': [1]}) %}{% do d.k.append(2) %}{{ d }}",
                json!({})
            ),
            "{'k': [1, 2]}"
        );
        assert_eq!(
            ok(
                "{% set d = dict(a=1) %}{% do d.update(dict([('b', 2)])) %}{{ d | tojson }}",
                json!({})
            ),
            r#"{"a": 1, "b": 2}"#
        );
    }

    #[test]
    fn list_methods() {
        let out = ok(
            "{% set xs = [1, 2] %}{% do xs.extend([3, 4]) %}{% do xs.insert(0, 0) %}{% do xs.insert(-1, 9) %}\
             {% set p = xs.pop() %}{% set q = xs.pop(0) %}{% do xs.remove(9) %}\
             {{ xs }} {{ p }} {{ q }} {{ xs.index(3) }} {{ xs | length }} {{ xs[-1] }} {{ 2 in xs }}",
            json!({}),
        );
        assert_eq!(out, "[1, 2, 3] 4 0 2 3 3 True");
        assert_eq!(
            ok(
                "{% set xs = [3, 1, 2] %}{% do xs.sort(reverse=true) %}{{ xs }}",
                json!({})
            ),
            "[3, 2, 1]"
        );
        let e = err("{% set xs = [] %}{% do xs.pop() %}", json!({}));
        assert_eq!(e.message, "pop from empty list");
        let e = err("{% set xs = [] %}{% do xs.append(xs) %}", json!({}));
        assert!(e.message.contains("circular reference"), "{}", e.message);
    }

    #[test]
    fn dict_methods() {
        let out = ok(
            "{% set d = {'a': 1, 'b': 2} %}{% set x = d.pop('a') %}{% set y = d.pop('zz', 7) %}\
             {% do d.setdefault('l', []).append(1) %}{% do d.setdefault('l', []).append(2) %}\
             {% set c = d.copy() %}{% do c.clear() %}{{ d | tojson }} {{ x }} {{ y }} {{ c }} {{ 'b' in d }} {{ d['b'] }}",
            json!({}),
        );
        assert_eq!(out, r#"{"b": 2, "l": [1, 2]} 1 7 {} True 2"#);
        let e = err("{% set d = {} %}{% do d.pop('k') %}", json!({}));
        assert_eq!(e.message, "key `'k'` not found");
    }

    #[test]
    fn aliasing_and_nested_literals_are_mutable() {
        assert_eq!(
            ok(
                "{% set body = {'messages': []} %}{% for m in msgs %}{% do body.messages.append({'c': m}) %}{% endfor %}{% do body.messages[-1].update({'last': true}) %}{{ body | tojson }}",
                json!({"msgs": ["a", "b"]})
            ),
            r#"{"messages": [{"c": "a"}, {"c": "b", "last": true}]}"#
        );
        // `set` of an existing mutable value aliases it, as in Python
        assert_eq!(
            ok(
                "{% set last = input.messages[-1] %}{% do last.update({'x': 1}) %}{{ input.messages[-1].x }}",
                json!({"input": {"messages": [{}]}})
            ),
            "1"
        );
        // `+` builds a new list that later appends don't leak into
        assert_eq!(
            ok(
                "{% set xs = [1] %}{% set ys = xs + [2] %}{% do xs.append(3) %}{% do ys.append(4) %}{{ xs }}{{ ys }}",
                json!({})
            ),
            "[1, 3][1, 2, 4]"
        );
    }

    #[test]
    fn namespaces_keep_working() {
        assert_eq!(
            ok(
                "{% set ns = namespace(items=[], n=0) %}{% for i in [1, 2] %}{% do ns.items.append(i) %}{% set ns.n = ns.n + i %}{% endfor %}{% set ns.more = [] %}{% do ns.more.append(1) %}{{ ns.items }} {{ ns.n }} {{ ns.more }}",
                json!({})
            ),
            "[1, 2] 3 [1]"
        );
    }

    #[test]
    fn mutating_an_immutable_value_explains_itself() {
        let e = err("{% for x in [[1]] %}{% do x.append(2) %}{% endfor %}", json!({}));
        assert!(
            e.message
                .starts_with("cannot call `append` on an immutable sequence; hint:"),
            "{}",
            e.message
        );
    }

    #[test]
    fn rewrite_leaves_other_text_alone() {
        let src = "{# {% set a = [] %} #}{{ '{% set b = [] %}' }}{% raw %}{% set c = [] %}{% endraw %}{%- set d = {'%}': 1} -%}{% set e %}x{% endset %}{% set f, g = 1, 2 %}";
        let (out, ins) = rewrite_sets(src);
        assert_eq!(
            out,
            "{# {% set a = [] %} #}{{ '{% set b = [] %}' }}{% raw %}{% set c = [] %}{% endraw %}{%- set d = __lfeval_mutable({'%}': 1}) -%}{% set e %}x{% endset %}{% set f, g = 1, 2 %}"
        );
        assert_eq!(ins.len(), 2);
        assert_eq!(ok(src, json!({})), "{% set b = [] %}{% set c = [] %}");
    }

    // ---- strictness, limits, errors ----------------------------------------------------------

    #[test]
    fn strict_undefined_names_the_variable() {
        let e = err("a\n{{ inputs.messages }}", json!({"input": {}}));
        assert_eq!(e.kind, TemplateErrorKind::Undefined);
        assert_eq!(e.message, "undefined value `inputs`");
        assert_eq!(e.line, Some(2));
        let e = err("{{ input.nope }}", json!({"input": {}}));
        assert_eq!(e.message, "undefined value `input.nope`");
        assert_eq!(ok("{{ x is defined }}{{ y | default('d') }}", json!({})), "Falsed");
        // filters that reject undefined input still name it
        let e = err("{{ input.body | tojson }}", json!({"input": {}}));
        assert_eq!(e.message, "undefined value `input.body`");
        let e = err("{{ raw | fromjson }}", json!({}));
        assert_eq!(e.message, "undefined value `raw`");
    }

    #[test]
    fn floats_print_like_python() {
        assert_eq!(
            ok("{{ 1e21 }} {{ 1.5e-7 }} {{ 2.0 }} {{ 0.1 + 0.2 }} {{ 3 }}", json!({})),
            "1e+21 1.5e-07 2.0 0.30000000000000004 3"
        );
    }

    #[test]
    fn whitespace_matches_jinja2_defaults() {
        assert_eq!(ok("{% if true %}\nA\n{% endif %}\n", json!({})), "\nA\n");
        assert_eq!(ok("  {%- if true -%}  B  {%- endif %}", json!({})), "B");
    }

    #[test]
    fn runaway_loop_fails_fast() {
        let start = Instant::now();
        let e = err(
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
            json!({}),
        );
        assert_eq!(e.kind, TemplateErrorKind::Runaway);
        assert_eq!(e.message, "template ran out of fuel (infinite loop?)");
        assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());

        let e = err("{% for i in range(10**9) %}{% endfor %}", json!({}));
        assert!(e.message.contains("range has too many elements"), "{}", e.message);

        let start = Instant::now();
        let e = err("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", json!({}));
        assert_eq!(e.kind, TemplateErrorKind::Runaway, "{}", e.message);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn large_conversation_renders_within_fuel() {
        let messages: Vec<_> = (0..1000)
            .map(|i| json!({"role": if i % 2 == 0 {"user"} else {"assistant"}, "content": format!("message {i} <b>é</b>")}))
            .collect();
        let src = "{% set msgs = [] %}{% for m in input.messages %}{% if m.role in ['user', 'assistant'] %}\
                   {% do msgs.append({'role': m.role, 'content': m.content | trim}) %}{% endif %}{% endfor %}\
                   {% set body = {'model': model_info.model_key, 'messages': msgs} %}\
                   {% for k, v in kwargs.items() %}{% do body.update({k: v}) %}{% endfor %}{{ body | tojson }}";
        let out = ok(
            src,
            json!({"input": {"messages": messages}, "model_info": {"model_key": "m"}, "kwargs": {"temperature": 0.5}}),
        );
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["messages"].as_array().map(Vec::len), Some(1000));
        assert_eq!(parsed["temperature"], json!(0.5));
    }

    #[test]
    fn syntax_error_maps_to_file_lines_with_excerpt() {
        let mut engine = TemplateEngine::new();
        let origin = TemplateOrigin {
            file: "adapters/x.yaml".into(),
            line_offset: 10,
            column_offset: 4,
        };
        let e = engine
            .add("x", "{% set a = 1 %}\nline two\n{% if a %}\n{{ a }\nfive", origin)
            .unwrap_err();
        assert_eq!(e.kind, TemplateErrorKind::Syntax);
        assert!(e.message.starts_with("syntax error: "), "{}", e.message);
        assert_eq!(e.file.as_deref(), Some("adapters/x.yaml"));
        assert_eq!(e.line, Some(14));
        let excerpt = e.excerpt.unwrap();
        assert!(
            excerpt.starts_with("12 |     line two\n13 |     {% if a %}\n14 |     {{ a }\n   |     "),
            "{excerpt}"
        );
        assert!(excerpt.ends_with("15 |     five"), "{excerpt}");
        assert!(!engine.contains("x"));
    }

    #[test]
    fn render_error_excerpt_points_at_the_original_source() {
        let mut engine = TemplateEngine::new();
        let origin = TemplateOrigin {
            file: "in.j2".into(),
            line_offset: 2,
            column_offset: 0,
        };
        engine
            .add(
                "in",
                "{% set xs = [] %}\n{% set body = {'a': input.nope + 1} %}\nok",
                origin,
            )
            .unwrap();
        let e = engine.render("in", &ctx(json!({"input": {}}))).unwrap_err();
        assert_eq!(e.kind, TemplateErrorKind::Undefined);
        assert_eq!(
            e.message,
            "undefined value `input.nope`: tried to use + operator on unsupported types undefined and number"
        );
        assert_eq!(e.line, Some(4));
        assert_eq!(
            e.excerpt.as_deref(),
            Some(
                "3 | {% set xs = [] %}\n4 | {% set body = {'a': input.nope + 1} %}\n  |                     ^^^^^^^^^^^^^^\n5 | ok"
            )
        );
        assert_eq!(e.location().as_deref(), Some("in.j2:4"));
    }

    #[test]
    fn eval_expression_returns_json() {
        let engine = TemplateEngine::new();
        let c = ctx(json!({"sample": {"category": "math", "n": 3, "tags": ["a"]}}));
        assert_eq!(
            engine
                .eval_expression("sample.category == 'math' and sample.n > 2", &c)
                .unwrap(),
            json!(true)
        );
        assert_eq!(
            engine.eval_expression("sample.tags + ['b']", &c).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            engine.eval_expression("{'k': sample.n / 2}", &c).unwrap(),
            json!({"k": 1.5})
        );
        let e = engine.eval_expression("sample.missing", &c).unwrap_err();
        assert_eq!(e.kind, TemplateErrorKind::Undefined);
        let e = engine.eval_expression("sample.n >", &c).unwrap_err();
        assert_eq!(e.kind, TemplateErrorKind::Syntax);
    }

    // ---- Jinja2 byte-compat corpus -----------------------------------------------------------

    #[test]
    fn tojson_matches_jinja2_corpus() {
        let expected = include_str!("../tests/tojson/expected.jsonl");
        let engine = TemplateEngine::new();
        let mut cases = 0;
        for line in expected.lines().filter(|l| !l.trim().is_empty()) {
            let case: serde_json::Value = serde_json::from_str(line).unwrap();
            let value = case["value"].clone();
            let indent = case["indent"].as_u64().map(|i| i as usize);
            let jinja2 = case["jinja2"].as_str().unwrap();
            let src = match indent {
                Some(i) => format!("{{{{ value | tojson(indent={i}) }}}}"),
                None => "{{ value | tojson }}".to_string(),
            };
            let rendered = engine
                .render_str(&src, &TemplateOrigin::file("corpus"), &ctx(json!({"value": value})))
                .unwrap();
            assert_eq!(rendered, jinja2, "filter output for {line}");
            assert_eq!(tojson_string(&value, indent), jinja2, "tojson_string for {line}");
            cases += 1;
        }
        assert!(cases >= 40, "only {cases} corpus cases");
    }

    proptest! {
        #[test]
        fn tojson_of_any_string_round_trips(chars in proptest::collection::vec(any::<char>(), 0..48)) {
            let s: String = chars.into_iter().collect();
            let out = tojson_string(&json!(s), None);
            prop_assert!(out.is_ascii());
            prop_assert!(!out.contains(['<', '>', '&', '\'']));
            let back: String = serde_json::from_str(&out).unwrap();
            prop_assert_eq!(&back, &s);
            let filtered = render("{{ s | tojson }}", json!({"s": s})).unwrap();
            prop_assert_eq!(filtered, out);
        }

        #[test]
        fn python_float_round_trips(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let text = python_float(f);
            let back: f64 = text.parse().unwrap();
            prop_assert_eq!(back.to_bits(), f.to_bits());
            prop_assert!(text.contains('.') || text.contains('e'));
        }
    }
}
