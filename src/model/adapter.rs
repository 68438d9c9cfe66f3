//! Model adapters (aigo.md §3): a pair of Jinja templates translating the canonical model input
//! into a request body (`process_input`) and a response back into canonical output
//! (`process_output`). Built-in `latticeflow$…` adapters are YAML files in `adapters/builtin/`,
//! compiled into the binary.

use std::sync::Arc;

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
        Ok(CompiledAdapter { adapter, engine })
    }

    pub fn render_input(
        &self,
        input: &Value,
        model_info: &ModelInfo,
        kwargs: &Map<String, Value>,
    ) -> Result<String, Diagnostic> {
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
