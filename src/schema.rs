//! The JSON Schema of each YAML entity kind (`lfeval schema KIND`), composed from the schemas
//! derived from the types the loaders deserialize, so the schema cannot drift from what lfeval
//! reads. Editors use it through a `# yaml-language-server: $schema=…` line; the copies committed
//! under `schema/` are checked against [`generate`] by the tests.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::Value;

use crate::yaml::schema::{list_of, or_reference};

/// An entity kind that has a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaKind {
    Model,
    Adapter,
    Dataset,
    Task,
    Run,
}

impl SchemaKind {
    pub const ALL: [SchemaKind; 5] = [
        SchemaKind::Model,
        SchemaKind::Adapter,
        SchemaKind::Dataset,
        SchemaKind::Task,
        SchemaKind::Run,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SchemaKind::Model => "model",
            SchemaKind::Adapter => "adapter",
            SchemaKind::Dataset => "dataset",
            SchemaKind::Task => "task",
            SchemaKind::Run => "run",
        }
    }

    /// The file name under `schema/` (and a project's `.lfeval/schema/`).
    pub fn file_name(self) -> String {
        format!("{}.json", self.name())
    }

    fn title(self) -> &'static str {
        match self {
            SchemaKind::Model => "lfeval model",
            SchemaKind::Adapter => "lfeval model adapter",
            SchemaKind::Dataset => "lfeval dataset",
            SchemaKind::Task => "lfeval task",
            SchemaKind::Run => "lfeval run config",
        }
    }
}

/// The schema of one kind, as pretty JSON with a trailing newline (the committed bytes).
pub fn generate(kind: SchemaKind) -> String {
    // Draft 7 is what editors' YAML language servers support best.
    let mut generator = SchemaGenerator::new(SchemaSettings::draft07());
    let body = match kind {
        SchemaKind::Model => crate::model::json_schema(&mut generator),
        SchemaKind::Adapter => crate::model::adapter::json_schema(&mut generator),
        SchemaKind::Dataset => crate::eval::dataset::DatasetSpec::json_schema(&mut generator),
        SchemaKind::Task => crate::eval::task::json_schema(&mut generator),
        SchemaKind::Run => run_config(&mut generator),
    };
    let mut root = serde_json::Map::new();
    root.insert(
        "$schema".to_owned(),
        Value::from("http://json-schema.org/draft-07/schema#"),
    );
    root.insert("title".to_owned(), Value::from(kind.title()));
    if let Value::Object(body) = body.to_value() {
        root.extend(body);
    }
    let definitions = generator.take_definitions(true);
    if !definitions.is_empty() {
        root.insert("definitions".to_owned(), Value::Object(definitions));
    }
    let mut text = serde_json::to_string_pretty(&root).unwrap_or_default();
    text.push('\n');
    text
}

/// A run config: every entity inline or by `$ref`, a model also as a `$provider` shorthand.
fn run_config(generator: &mut SchemaGenerator) -> Schema {
    let provider = json_schema!({
        "type": "object",
        "required": ["$provider"],
        "properties": {
            "$provider": { "type": "string", "description": "`provider/model`, e.g. `openai/gpt-4.1-nano`." }
        }
    });
    let model = crate::model::json_schema(generator);
    let models = json_schema!({ "type": "array", "items": { "anyOf": [or_reference(model), provider] } });
    let overrides = crate::eval::evaluation::RunOverrides::json_schema(generator);
    json_schema!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "secrets": { "type": "object", "description": "Secrets by name, for `<< secrets.NAME >>`." },
            "model_adapters": list_of(or_reference(crate::model::adapter::json_schema(generator))),
            "models": models,
            "dataset_generators": { "description": "A hosted-platform feature; lfeval refuses it by name." },
            "datasets": list_of(or_reference(crate::eval::dataset::DatasetSpec::json_schema(generator))),
            "tasks": list_of(or_reference(crate::eval::task::json_schema(generator))),
            "evaluation": or_reference(crate::eval::evaluation::json_schema(generator)),
            "config": { "type": "object", "description": "Values for the evaluation's `config_spec`." },
            "run_config": overrides,
            "policies": list_of(crate::eval::policy::Policy::json_schema(generator))
        }
    })
}
