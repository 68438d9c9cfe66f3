//! Model adapters (aigo.md §3): a pair of Jinja templates translating the canonical model input
//! into a request body (`process_input`) and a response back into canonical output
//! (`process_output`). Built-in `latticeflow$…` adapters are YAML files in `adapters/builtin/`,
//! compiled into the binary.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::diagnostic::{Diagnostic, Location};
use crate::model::io::Task;
use crate::template::{TemplateEngine, TemplateError, TemplateOrigin, tojson_string};
use crate::yaml::{Located, Node, SourceFile, SourceText, from_node};

/// The built-in adapters: (file name, YAML text).
pub const BUILTINS: &[(&str, &str)] = &[
    (
        "adapters/builtin/identity.yaml",
        include_str!("../../adapters/builtin/identity.yaml"),
    ),
    (
        "adapters/builtin/openai_chat_completion.yaml",
        include_str!("../../adapters/builtin/openai_chat_completion.yaml"),
    ),
    (
        "adapters/builtin/openai_embeddings.yaml",
        include_str!("../../adapters/builtin/openai_embeddings.yaml"),
    ),
    (
        "adapters/builtin/openai_responses.yaml",
        include_str!("../../adapters/builtin/openai_responses.yaml"),
    ),
    (
        "adapters/builtin/anthropic_messages.yaml",
        include_str!("../../adapters/builtin/anthropic_messages.yaml"),
    ),
    (
        "adapters/builtin/gemini_generate_content.yaml",
        include_str!("../../adapters/builtin/gemini_generate_content.yaml"),
    ),
];

#[derive(Debug, Clone)]
pub struct Adapter {
    pub key: String,
    pub display_name: String,
    pub description: Option<String>,
    pub long_description: Option<String>,
    pub provider: Provider,
    pub task: Option<Task>,
    pub process_input: SourceText,
    pub process_output: SourceText,
    pub file: String,
    pub location: Location,
    /// Every file the definition was read from (for a run's fingerprint).
    pub sources: Vec<Arc<SourceFile>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Latticeflow,
    #[default]
    User,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct AdapterWire {
    key: Located<String>,
    display_name: String,
    description: Option<String>,
    long_description: Option<String>,
    provider: Option<Provider>,
    task: Option<Task>,
    process_input: CodeWire,
    process_output: CodeWire,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CodeWire {
    #[serde(rename = "language")]
    _language: Language,
    source_code: SourceText,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Language {
    Jinja,
}

/// The JSON Schema of an adapter file.
pub fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    <AdapterWire as schemars::JsonSchema>::json_schema(generator)
}

pub fn from_yaml(node: &Node, path: &str) -> Result<Adapter, Diagnostic> {
    let wire: AdapterWire = from_node(node, path)?;
    crate::model::check_key(&wire.key, "adapter", true)?;
    Ok(Adapter {
        key: wire.key.value.clone(),
        display_name: wire.display_name,
        description: wire.description,
        long_description: wire.long_description,
        provider: wire.provider.unwrap_or_default(),
        task: wire.task,
        process_input: wire.process_input.source_code,
        process_output: wire.process_output.source_code,
        file: node.span.file.display.clone(),
        location: wire.key.location,
        sources: crate::yaml::sources(node),
    })
}

pub fn builtins() -> Result<Vec<Adapter>, Diagnostic> {
    BUILTINS
        .iter()
        .map(|(file, text)| from_yaml(&crate::yaml::load_str(file, text)?, ""))
        .collect()
}

/// What adapters see as `model_info`.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub model_key: Option<String>,
    pub task: Task,
}

impl ModelInfo {
    fn to_value(&self) -> Value {
        serde_json::json!({
            "model_key": self.model_key,
            "task": self.task.as_str(),
            "modality": self.task.modality(),
        })
    }
}

/// An adapter whose templates are compiled and ready to render.
pub struct CompiledAdapter {
    pub adapter: Arc<Adapter>,
    engine: TemplateEngine,
    native: Option<Native>,
}

/// Adapters whose templates lfeval also computes in Rust, byte for byte, because most calls go
/// through them: rendering the identity adapter cost more than the rest of a constant
/// snippet's call. Anything out of the ordinary (a missing field, a body that is not JSON) is
/// left to the templates, so errors read the same as ever.
#[derive(Debug, Clone, Copy)]
enum Native {
    /// `latticeflow$identity`: the input as `tojson`, the body back unchanged.
    Identity,
    /// `latticeflow$openai_chat_completion`.
    OpenAiChat,
}

impl Native {
    /// Recognised by the templates' text, not by key: only a built-in's exact source counts.
    fn of(adapter: &Adapter) -> Option<Native> {
        static SOURCES: OnceLock<Vec<(Native, String, String)>> = OnceLock::new();
        let sources = SOURCES.get_or_init(|| {
            let builtins = builtins().unwrap_or_default();
            [
                (Native::Identity, "latticeflow$identity"),
                (Native::OpenAiChat, "latticeflow$openai_chat_completion"),
            ]
            .into_iter()
            .filter_map(|(native, key)| {
                let a = builtins.iter().find(|a| a.key == key)?;
                Some((native, a.process_input.text.clone(), a.process_output.text.clone()))
            })
            .collect()
        });
        sources
            .iter()
            .find(|(_, input, output)| adapter.process_input.text == *input && adapter.process_output.text == *output)
            .map(|(native, _, _)| *native)
    }

    fn render_input(self, input: &Value, model_info: &ModelInfo, kwargs: &Map<String, Value>) -> Option<String> {
        let request = match self {
            Native::Identity => return Some(tojson_string(input, None)),
            Native::OpenAiChat => {
                let input = input.as_object()?;
                let mut request = Map::new();
                request.insert("messages".to_owned(), input.get("messages")?.clone());
                if let Some(key) = model_info.model_key.as_deref().filter(|k| !k.is_empty()) {
                    request.insert("model".to_owned(), Value::from(key));
                }
                if let Some(format) = input.get("response_format").filter(|v| truthy(v)) {
                    request.insert("response_format".to_owned(), format.clone());
                }
                for (name, value) in kwargs {
                    request.insert(name.clone(), value.clone());
                }
                request
            }
        };
        // `tojson` sorts keys, so the order of the updates above does not show.
        Some(tojson_string(&Value::Object(request), None))
    }

    fn render_output(self, body: &str, status_code: u16) -> Option<String> {
        let ok = (200..300).contains(&status_code);
        match self {
            Native::Identity if ok => Some(body.to_owned()),
            Native::Identity => Some(error_output(format!(
                "A non-2xx status code ({status_code}) was returned by the model."
            ))),
            Native::OpenAiChat if !ok => {
                let head: String = body.chars().take(500).collect();
                Some(error_output(format!(
                    "A non-2xx status code ({status_code}) was returned by the model: {head}"
                )))
            }
            Native::OpenAiChat => {
                let response: Value = serde_json::from_str(body).ok()?;
                let response = response.as_object()?;
                let message = response
                    .get("choices")?
                    .as_array()?
                    .first()?
                    .get("message")?
                    .as_object()?;
                let mut output = serde_json::json!({"choices": [{"message": {
                    "role": "assistant",
                    "content": message.get("content")?,
                    "refusal": message.get("refusal").unwrap_or(&Value::Null),
                }}]});
                if let Some(usage) = response.get("usage").filter(|v| truthy(v)) {
                    let usage = usage.as_object()?;
                    let counts = serde_json::json!({
                        "num_prompt_tokens": usage.get("prompt_tokens")?,
                        "num_completion_tokens": usage.get("completion_tokens")?,
                    });
                    output.as_object_mut()?.insert("usage".to_owned(), counts);
                }
                Some(tojson_string(&output, None))
            }
        }
    }
}

/// `{"error": "…"}` as the built-in adapters write it.
fn error_output(message: String) -> String {
    format!("{{\"error\": {}}}", tojson_string(&Value::String(message), None))
}

/// Jinja's truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

const INPUT: &str = "process_input";
const OUTPUT: &str = "process_output";

fn origin(text: &SourceText) -> TemplateOrigin {
    TemplateOrigin {
        file: text.file.clone(),
        line_offset: text.line_offset,
        column_offset: text.col_offset,
    }
}

impl CompiledAdapter {
    pub fn compile(adapter: Arc<Adapter>) -> Result<CompiledAdapter, Diagnostic> {
        let mut engine = TemplateEngine::new();
        for (name, text) in [(INPUT, &adapter.process_input), (OUTPUT, &adapter.process_output)] {
            engine
                .add(name, &text.text, origin(text))
                .map_err(|e| template_diagnostic(&adapter.key, name, &e))?;
        }
        let native = Native::of(&adapter);
        Ok(CompiledAdapter {
            adapter,
            engine,
            native,
        })
    }

    pub fn render_input(
        &self,
        input: &Value,
        model_info: &ModelInfo,
        kwargs: &Map<String, Value>,
    ) -> Result<String, Diagnostic> {
        if let Some(rendered) = self.native.and_then(|n| n.render_input(input, model_info, kwargs)) {
            return Ok(rendered);
        }
        let mut ctx = Map::new();
        ctx.insert("input".to_owned(), input.clone());
        ctx.insert("model_info".to_owned(), model_info.to_value());
        ctx.insert("kwargs".to_owned(), Value::Object(kwargs.clone()));
        self.engine
            .render(INPUT, &ctx)
            .map_err(|e| template_diagnostic(&self.adapter.key, INPUT, &e))
    }

    pub fn render_output(
        &self,
        body: &str,
        status_code: u16,
        headers: &Map<String, Value>,
        model_info: &ModelInfo,
    ) -> Result<String, Diagnostic> {
        if let Some(rendered) = self.native.and_then(|n| n.render_output(body, status_code)) {
            return Ok(rendered);
        }
        let mut ctx = Map::new();
        ctx.insert("body".to_owned(), Value::String(body.to_owned()));
        ctx.insert("status_code".to_owned(), Value::from(status_code));
        ctx.insert("headers".to_owned(), Value::Object(headers.clone()));
        ctx.insert("model_info".to_owned(), model_info.to_value());
        self.engine
            .render(OUTPUT, &ctx)
            .map_err(|e| template_diagnostic(&self.adapter.key, OUTPUT, &e))
    }
}

fn template_diagnostic(adapter: &str, template: &str, err: &TemplateError) -> Diagnostic {
    let mut diag = Diagnostic::new(format!("adapter `{adapter}`: `{template}` failed: {}", err.message));
    if let (Some(file), Some(line)) = (&err.file, err.line) {
        diag = diag.at_location(Location {
            file: file.clone(),
            line,
            col: err.column.unwrap_or(0),
            width: 1,
            source_line: None,
        });
    }
    diag.excerpt = err.excerpt.clone();
    diag
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A built-in adapter compiled twice: natively computed, and through its templates.
    fn both(key: &str) -> (CompiledAdapter, CompiledAdapter) {
        let adapter = builtins().unwrap().into_iter().find(|a| a.key == key).unwrap();
        let native = CompiledAdapter::compile(Arc::new(adapter)).unwrap();
        assert!(native.native.is_some(), "`{key}` is computed natively");
        let templated = CompiledAdapter {
            adapter: Arc::clone(&native.adapter),
            engine: CompiledAdapter::compile(Arc::clone(&native.adapter)).unwrap().engine,
            native: None,
        };
        (native, templated)
    }

    fn identity() -> (CompiledAdapter, CompiledAdapter) {
        both("latticeflow$identity")
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let text = "[a-z<>&'\"\\\\/ \u{e9}\u{1f600}\u{7f}\u{2028}\n\t]{0,12}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            text.prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((text, inner), 0..4).prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The native identity adapter renders exactly what its templates render.
        #[test]
        fn native_identity_renders_as_its_templates(
            input in json_value(),
            body in "[a-z{}\":<>&\n ]{0,20}",
            status in prop_oneof![Just(200u16), Just(204), Just(299), Just(300), Just(404), Just(500), 100u16..600],
        ) {
            let (native, templated) = identity();
            let info = ModelInfo { model_key: Some("m".into()), task: Task::ChatCompletion };
            let kwargs = Map::new();
            prop_assert_eq!(
                native.render_input(&input, &info, &kwargs).unwrap(),
                templated.render_input(&input, &info, &kwargs).unwrap()
            );
            let headers = Map::new();
            prop_assert_eq!(
                native.render_output(&body, status, &headers, &info).unwrap(),
                templated.render_output(&body, status, &headers, &info).unwrap()
            );
        }
    }

    fn openai_body() -> impl Strategy<Value = String> {
        let message = (json_value(), prop::option::of(json_value()), any::<bool>()).prop_map(
            |(content, refusal, has_content)| {
                let mut m = Map::new();
                if has_content {
                    m.insert("content".into(), content);
                }
                if let Some(r) = refusal {
                    m.insert("refusal".into(), r);
                }
                Value::Object(m)
            },
        );
        let usage = prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            json_value().prop_map(Some),
            (json_value(), json_value())
                .prop_map(|(p, c)| Some(serde_json::json!({"prompt_tokens": p, "completion_tokens": c}))),
        ];
        prop_oneof![
            (message, usage).prop_map(|(message, usage)| {
                let mut r = serde_json::json!({"id": "x", "choices": [{"index": 0, "message": message}]});
                if let Some(u) = usage {
                    r["usage"] = u;
                }
                r.to_string()
            }),
            json_value().prop_map(|v| v.to_string()),
            "[a-z{}\":,\u{e9}\u{1f600} ]{0,700}",
        ]
    }

    proptest! {
        /// The native OpenAI chat adapter renders what its templates render, or leaves the
        /// case to them.
        #[test]
        fn native_openai_chat_renders_as_its_templates(
            messages in prop::option::of(json_value()),
            response_format in prop::option::of(json_value()),
            model_key in prop_oneof![Just(None), Just(Some(String::new())), Just(Some("gpt-4.1-nano".to_owned()))],
            kwargs in prop::collection::vec(("[a-z_]{1,8}", json_value()), 0..3),
            body in openai_body(),
            status in prop_oneof![Just(200u16), Just(201), Just(400), Just(429), Just(500), 100u16..600],
        ) {
            let (native, templated) = both("latticeflow$openai_chat_completion");
            let mut input = Map::new();
            if let Some(m) = messages {
                input.insert("messages".into(), m);
            }
            if let Some(f) = response_format {
                input.insert("response_format".into(), f);
            }
            let input = Value::Object(input);
            let info = ModelInfo { model_key, task: Task::ChatCompletion };
            let kwargs: Map<String, Value> = kwargs.into_iter().collect();
            let (a, b) = (native.render_input(&input, &info, &kwargs), templated.render_input(&input, &info, &kwargs));
            prop_assert_eq!(a.as_ref().ok(), b.as_ref().ok());
            prop_assert_eq!(a.is_err(), b.is_err());
            let headers = Map::new();
            let (a, b) = (
                native.render_output(&body, status, &headers, &info),
                templated.render_output(&body, status, &headers, &info),
            );
            prop_assert_eq!(a.as_ref().ok(), b.as_ref().ok());
            prop_assert_eq!(a.is_err(), b.is_err());
        }
    }
}
