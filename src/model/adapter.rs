//! Model adapters (aigo.md §3): a pair of Jinja templates translating the canonical model input
//! into a request body (`process_input`) and a response back into canonical output
//! (`process_output`). Built-in `latticeflow$…` adapters are YAML files in `adapters/builtin/`,
//! compiled into the binary.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::diagnostic::{Diagnostic, Location};
use crate::model::io::Task;
use crate::template::{TemplateEngine, TemplateError, TemplateOrigin};
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

/// Adapters whose templates lfeval also computes in Rust, byte for byte, because every sample
/// of a model without an adapter of its own goes through them: rendering the identity adapter
/// costs more than the rest of a constant snippet's call.
#[derive(Debug, Clone, Copy)]
enum Native {
    /// `latticeflow$identity`: the input as `tojson`, the body back unchanged.
    Identity,
}

impl Native {
    /// Recognised by the templates' text, not by key: only the built-in's exact source counts.
    fn of(adapter: &Adapter) -> Option<Native> {
        static IDENTITY: OnceLock<Option<(String, String)>> = OnceLock::new();
        let (input, output) = IDENTITY
            .get_or_init(|| {
                let identity = builtins().ok()?.into_iter().find(|a| a.key == "latticeflow$identity")?;
                Some((identity.process_input.text, identity.process_output.text))
            })
            .as_ref()?;
        (adapter.process_input.text == *input && adapter.process_output.text == *output).then_some(Native::Identity)
    }

    fn render_input(self, input: &Value) -> String {
        match self {
            Native::Identity => crate::template::tojson_string(input, None),
        }
    }

    fn render_output(self, body: &str, status_code: u16) -> String {
        match self {
            Native::Identity if (200..300).contains(&status_code) => body.to_owned(),
            Native::Identity => {
                let message = format!("A non-2xx status code ({status_code}) was returned by the model.");
                format!(
                    "{{\"error\": {}}}",
                    crate::template::tojson_string(&Value::String(message), None)
                )
            }
        }
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
        if let Some(native) = self.native {
            return Ok(native.render_input(input));
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
        if let Some(native) = self.native {
            return Ok(native.render_output(body, status_code));
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

    fn identity() -> (CompiledAdapter, CompiledAdapter) {
        let adapter = builtins()
            .unwrap()
            .into_iter()
            .find(|a| a.key == "latticeflow$identity")
            .unwrap();
        let native = CompiledAdapter::compile(Arc::new(adapter)).unwrap();
        assert!(
            native.native.is_some(),
            "the built-in identity adapter is computed natively"
        );
        let templated = CompiledAdapter {
            adapter: Arc::clone(&native.adapter),
            engine: CompiledAdapter::compile(Arc::clone(&native.adapter)).unwrap().engine,
            native: None,
        };
        (native, templated)
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
}
