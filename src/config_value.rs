//! A configuration value that may be a secret reference (`<< secrets.NAME >>`), an expanded
//! `$VAR`, or a plain value. Secrets are resolved only when a value is used, and every way of
//! showing a value masks credentials.

use serde::Deserialize;
use std::sync::LazyLock;

use regex::Regex;

use crate::diagnostic::{Diagnostic, Location};
use crate::secrets::Secrets;
use crate::yaml::deserialize_meta;

static SECRET_REF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*<<\s*secrets\.([A-Za-z0-9_-]+)\s*>>\s*$").expect("valid regex"));

/// The secret name in a whole-value `<< secrets.NAME >>` reference.
pub fn secret_reference(text: &str) -> Option<&str> {
    SECRET_REF.captures(text).and_then(|c| c.get(1)).map(|m| m.as_str())
}

#[derive(Debug, Clone)]
pub enum Source {
    Literal,
    /// Expanded from this environment variable.
    Env(String),
    /// `<< secrets.NAME >>`.
    Secret(String),
    /// `$VAR` whose variable is unset; holds the rendered error.
    Unset {
        var: String,
        error: String,
    },
}

#[derive(Debug, Clone)]
pub struct ConfigValue {
    /// The value as written (after `$VAR` expansion); `Null` for secrets and unset variables.
    pub value: serde_json::Value,
    pub source: Source,
    pub location: Location,
    pub path: String,
}

// Any YAML value: a literal, `$VAR`, `${VAR:-default}` or `<< secrets.NAME >>`.
impl schemars::JsonSchema for ConfigValue {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ConfigValue".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A value, `$VAR`, `${VAR:-default}` or `<< secrets.NAME >>`."
        })
    }
}

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let meta = deserialize_meta::<D, serde_json::Value>(deserializer)?;
        let location = meta.location();
        let value = meta.value.clone().unwrap_or(serde_json::Value::Null);
        let source = if let Some(var) = meta.unset_var {
            Source::Unset {
                var,
                error: meta.unset_error.unwrap_or_default(),
            }
        } else if let Some(name) = value.as_str().and_then(secret_reference) {
            Source::Secret(name.to_owned())
        } else if let Some(var) = meta.env_var {
            Source::Env(var)
        } else {
            Source::Literal
        };
        let value = if matches!(source, Source::Secret(_)) {
            serde_json::Value::Null
        } else {
            value
        };
        Ok(ConfigValue {
            value,
            source,
            location,
            path: meta.path,
        })
    }
}

impl ConfigValue {
    pub fn literal(value: serde_json::Value) -> ConfigValue {
        ConfigValue {
            value,
            source: Source::Literal,
            location: Location {
                file: String::new(),
                line: 0,
                col: 0,
                width: 0,
                source_line: None,
            },
            path: String::new(),
        }
    }

    /// The real value; resolves secrets and fails on unset variables. `credential` marks values
    /// that must be masked wherever they could be printed (API keys, headers, environment).
    pub fn resolve(&self, secrets: &Secrets, credential: bool) -> Result<serde_json::Value, Diagnostic> {
        match &self.source {
            Source::Literal => Ok(self.value.clone()),
            Source::Env(var) => {
                if credential && let Some(s) = self.value.as_str() {
                    crate::redact::register(s, &format!("${var}"));
                }
                Ok(self.value.clone())
            }
            Source::Secret(name) => secrets
                .get(name)
                .map(serde_json::Value::String)
                .map_err(|e| e.at_location(self.location.clone()).with_path(self.path.clone())),
            Source::Unset { error, .. } => Err(Diagnostic::new(error.clone())),
        }
    }

    /// How the value is shown to users: secrets as `<<secrets.NAME>>`, variables as `$VAR`.
    pub fn masked(&self) -> String {
        match &self.source {
            Source::Literal => match &self.value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            Source::Env(var) | Source::Unset { var, .. } => format!("${var}"),
            Source::Secret(name) => format!("<<secrets.{name}>>"),
        }
    }

    /// Whether showing the literal value could leak a credential.
    pub fn is_sensitive(&self) -> bool {
        !matches!(self.source, Source::Literal)
    }
}
