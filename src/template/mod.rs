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

mod context_object;
mod error;
mod filters;
mod json;
mod mut_list;
mod mut_map;
mod mutation;
mod regex;
mod set_rewrite;
mod strict_filters;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;

use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, State, UndefinedBehavior};

pub use context_object::ContextObject;
use error::{SourceMap, convert_error};
pub use error::{TemplateError, TemplateErrorKind};
pub use json::tojson_string;
use json::{context_value, json_map, python_float, value_to_json};
use mut_map::MutMap;
use mutation::{dict_fn, mutable_fn, namespace_fn, unknown_method};
use set_rewrite::{MUTABLE_FN, rewrite_sets};

/// Instruction budget per render. A realistic input adapter over a 1000-message multimodal
/// conversation spends about 37 thousand; three million leaves room for far longer inputs and
/// SSE bodies while a runaway loop stops after ~70 ms in release builds (~0.5 s unoptimised).
pub const FUEL: u64 = 3_000_000;

/// Maximum nesting of macro calls / includes. Deep enough for recursive macros over nested
/// JSON, shallow enough to stay far away from the stack size of worker threads.
pub const RECURSION_LIMIT: usize = 100;

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
        strict_filters::register(&mut env);
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
        self.render_with(name, ctx, &[])
    }

    /// [`render`](Self::render) with objects added to the context (`trace`, …).
    pub fn render_with(
        &self,
        name: &str,
        ctx: &serde_json::Map<String, serde_json::Value>,
        objects: &[(&str, ContextObject)],
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|_| TemplateError::bare(TemplateErrorKind::Render, format!("unknown template `{name}`")))?;
        template.render(context_with(ctx, objects)).map_err(|err| {
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

    /// Evaluates a value the way lf's native environment does: a template that is one
    /// `{{ expression }}` yields the expression's value (a bool stays a bool); any other template
    /// yields its rendered text; text without `{{` is read as a bare expression (lfeval's
    /// original filter syntax).
    pub fn eval_native(
        &self,
        text: &str,
        ctx: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, TemplateError> {
        let trimmed = text.trim();
        if let Some(inner) = trimmed.strip_prefix("{{").and_then(|t| t.strip_suffix("}}"))
            && !inner.contains("{{")
            && !inner.contains("}}")
        {
            let inner = inner.trim().trim_start_matches('-').trim_end_matches('-');
            return self.eval_expression(inner, ctx);
        }
        if trimmed.contains("{{") || trimmed.contains("{%") {
            let origin = TemplateOrigin::file("<expression>");
            return self.render_str(text, &origin, ctx).map(serde_json::Value::String);
        }
        self.eval_expression(text, ctx)
    }

    /// Render a one-off template string (used for prompts like `{{ sample.question }}`) without
    /// registering it.
    pub fn render_str(
        &self,
        source: &str,
        origin: &TemplateOrigin,
        ctx: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        self.render_str_with(source, origin, ctx, &[])
    }

    /// [`render_str`](Self::render_str) with objects added to the context.
    pub fn render_str_with(
        &self,
        source: &str,
        origin: &TemplateOrigin,
        ctx: &serde_json::Map<String, serde_json::Value>,
        objects: &[(&str, ContextObject)],
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
        template.render(context_with(ctx, objects)).map_err(|err| {
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

/// What `source` renders to when it holds no Jinja at all, so that callers can skip building a
/// context for it: the text itself, less the one trailing newline Jinja2 drops. Sources with a
/// `\r` are left to the engine (Jinja2 normalises line endings).
pub fn literal(source: &str) -> Option<&str> {
    let jinja = ["{{", "{%", "{#"].iter().any(|open| source.contains(open));
    (!jinja && !source.contains('\r')).then(|| source.strip_suffix('\n').unwrap_or(source))
}

/// Renders `source` with the template compiled under that same name if there is one (see
/// [`TemplateEngine::add`]), else compiles it for this one render.
pub fn render_cached(
    engine: &TemplateEngine,
    source: &str,
    origin: &TemplateOrigin,
    ctx: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, TemplateError> {
    render_cached_with(engine, source, origin, ctx, &[])
}

/// [`render_cached`] with objects added to the context.
pub fn render_cached_with(
    engine: &TemplateEngine,
    source: &str,
    origin: &TemplateOrigin,
    ctx: &serde_json::Map<String, serde_json::Value>,
    objects: &[(&str, ContextObject)],
) -> Result<String, TemplateError> {
    if engine.contains(source) {
        engine.render_with(source, ctx, objects)
    } else {
        engine.render_str_with(source, origin, ctx, objects)
    }
}

/// The render context: the JSON values, mutable as in Jinja2, plus the objects.
fn context_with(ctx: &serde_json::Map<String, serde_json::Value>, objects: &[(&str, ContextObject)]) -> Value {
    if objects.is_empty() {
        return context_value(ctx);
    }
    let mut map = json_map(ctx);
    for (name, object) in objects {
        map.insert(Value::from(*name), object.to_value());
    }
    MutMap::new_value(map)
}
