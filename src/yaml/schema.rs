//! JSON Schema pieces shared by the entity schemas of `lfeval schema`: alternatives told apart
//! by a pinned key (`type`, `connection_type`), properties added to a derived schema, and the
//! `$ref: ./file.yaml` form any mapping of the dialect may take instead.

use schemars::{Schema, json_schema};
use serde_json::{Value, json};

/// Pins `key` of an object schema to one value, so `anyOf` alternatives are told apart by it.
pub fn pin(schema: &mut Schema, key: &str, value: &str) {
    insert_property(schema, key, json_schema!({ "const": value }), false);
}

/// Adds (or replaces) one property of an object schema.
pub fn insert_property(schema: &mut Schema, key: &str, property: Schema, required: bool) {
    let object = schema.ensure_object();
    let properties = object
        .entry("properties")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Some(properties) = properties.as_object_mut() {
        properties.insert(key.to_owned(), property.to_value());
    }
    if required {
        let list = object.entry("required").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut()
            && !list.iter().any(|k| k == key)
        {
            list.push(Value::from(key));
        }
    }
}

/// One of the alternatives, each with `type` pinned to its name and required.
pub fn tagged(alternatives: Vec<(&str, Schema)>) -> Schema {
    let any_of: Vec<Value> = alternatives
        .into_iter()
        .map(|(name, mut schema)| {
            insert_property(&mut schema, "type", json_schema!({ "const": name }), true);
            schema.to_value()
        })
        .collect();
    json_schema!({ "anyOf": any_of })
}

/// The schema, or a mapping taken from another file by `$ref` (sibling keys merge into it).
pub fn or_reference(schema: Schema) -> Schema {
    json_schema!({
        "anyOf": [
            schema.to_value(),
            {
                "type": "object",
                "required": ["$ref"],
                "properties": {
                    "$ref": { "type": "string", "description": "A YAML file, relative to this one." }
                }
            }
        ]
    })
}

/// A list of `item`s.
pub fn list_of(item: Schema) -> Schema {
    json_schema!({ "type": "array", "items": item.to_value() })
}
