//! The model call chain. A [`Model`] (this file: the YAML entity, validated into real types)
//! is called through its [`adapter`] (`process_input` / `process_output`), its [`gate`]
//! (concurrency, `Retry-After` pause, rate and token limits, shared across processes by
//! [`shared_limits`]), its [`retry`] policy and the response
//! [`cache`], over a [`connection`] (an HTTP endpoint or a Python snippet); the [`runtime`] runs
//! that chain once and records every step in a [`trace`], and the [`registry`] holds one runtime
//! per model key for a whole run. Shapes of model inputs and outputs live in [`io`].
//!
//! `custom_inference` runs a Python snippet; `custom_connection` POSTs to a URL.

pub mod adapter;
pub mod adaptive;
pub mod cache;
pub mod connection;
pub mod gate;
pub mod io;
pub mod pricing;
pub mod provider;
pub mod registry;
pub mod retry;
pub mod runtime;
pub mod shared_limits;
pub mod token_rate;
pub mod trace;

pub use retry::RetryPolicy;

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::config_value::ConfigValue;
use crate::diagnostic::{Diagnostic, Location};
use crate::model::io::Task;
pub use crate::python::Isolation;
use crate::yaml::{Located, Node, SourceFile, SourceText, from_node};

pub const DEFAULT_ADAPTER: &str = "latticeflow$identity";
const DEFAULT_HTTP_TIMEOUT: f64 = 60.0;
const DEFAULT_SNIPPET_TIMEOUT: f64 = 60.0;
/// `max_response_bytes` when a model sets none.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 * 1024 * 1024;
/// Largest `max_response_bytes`: bodies are held in memory, a few copies at a time.
const MAX_RESPONSE_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;
/// Largest `max_concurrent_requests`: beyond this the machine, not the endpoint, is the limit
/// (every in-flight call holds a task, a connection or a thread, and for `isolation: process`
/// a worker process).
pub const MAX_CONCURRENT_REQUESTS: u32 = 10_000;
/// Largest `rate_limit` in requests per minute (about 16,000 a second).
pub const MAX_RATE_LIMIT: u32 = 1_000_000;
/// The largest `tokens_per_minute` accepted (far above any provider tier).
pub const MAX_TOKENS_PER_MINUTE: u32 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct Model {
    pub key: String,
    pub display_name: String,
    pub description: Option<String>,
    /// Requests per minute.
    pub rate_limit: Option<u32>,
    pub max_concurrent_requests: Option<u32>,
    /// Prompt plus completion tokens per minute (an lfeval extension).
    pub tokens_per_minute: Option<u32>,
    /// Where a `custom_inference` snippet runs (an lfeval extension).
    pub isolation: Isolation,
    /// The largest response (HTTP body or snippet return value) an attempt may produce.
    pub max_response_bytes: u64,
    pub task: Task,
    pub secrets: IndexMap<String, ConfigValue>,
    pub adapter: Located<String>,
    pub connection: Connection,
    pub retry: RetryPolicy,
    /// USD per million tokens, when the model declares it.
    pub pricing: Option<pricing::Pricing>,
    /// The file that defined the model (project-relative).
    pub file: String,
    pub location: Location,
    /// Every file the definition was read from (for a run's fingerprint).
    pub sources: Vec<Arc<SourceFile>>,
    /// Set for `$provider` models (built-in connections, not a file of the project).
    pub provider: Option<provider::Provider>,
}

#[derive(Debug, Clone)]
pub enum Connection {
    CustomInference(Box<CustomInference>),
    CustomConnection(Box<CustomConnection>),
}

impl Connection {
    pub fn type_name(&self) -> &'static str {
        match self {
            Connection::CustomInference(_) => "custom_inference",
            Connection::CustomConnection(_) => "custom_connection",
        }
    }

    pub fn timeout(&self) -> Duration {
        match self {
            Connection::CustomInference(c) => c.timeout,
            Connection::CustomConnection(c) => c.timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CustomInference {
    pub snippet: SourceText,
    pub environment: IndexMap<String, ConfigValue>,
    /// Bound on one snippet call.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct CustomConnection {
    pub url: ConfigValue,
    pub api_key: Option<ConfigValue>,
    /// May be a `$VAR`, deferred like `url` until the model is used.
    pub model_key: Option<ConfigValue>,
    pub custom_headers: IndexMap<String, ConfigValue>,
    pub trusted_ca: Option<ConfigValue>,
    pub accept_untrusted: bool,
    pub timeout: Duration,
}

impl Model {
    /// `model_info.model_key` as adapters see it; an unset `$VAR` is an error only now, when
    /// the model is used.
    pub fn model_key(&self, secrets: &crate::secrets::Secrets) -> Result<Option<String>, Diagnostic> {
        let Connection::CustomConnection(c) = &self.connection else {
            return Ok(None);
        };
        let Some(value) = &c.model_key else { return Ok(None) };
        Ok(match value.resolve(secrets, false)? {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s),
            other => Some(other.to_string()),
        })
    }

    /// Every value that is resolved only when the model is used (variables, secrets).
    pub fn deferred_values(&self) -> Vec<&ConfigValue> {
        let mut values: Vec<&ConfigValue> = self.secrets.values().collect();
        match &self.connection {
            Connection::CustomInference(c) => values.extend(c.environment.values()),
            Connection::CustomConnection(c) => {
                values.push(&c.url);
                values.extend(c.model_key.iter().filter(|v| v.is_sensitive()));
                values.extend(c.api_key.iter());
                values.extend(c.custom_headers.values());
                values.extend(c.trusted_ca.iter());
            }
        }
        values
    }

    /// Concurrency cap used when the model sets none.
    pub fn concurrency(&self) -> usize {
        self.max_concurrent_requests.map_or(4, |n| n as usize)
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ModelWire {
    key: Located<String>,
    display_name: Located<String>,
    description: Option<String>,
    rate_limit: Option<Located<u32>>,
    max_concurrent_requests: Option<Located<u32>>,
    tokens_per_minute: Option<Located<u32>>,
    isolation: Option<Located<Isolation>>,
    max_response_bytes: Option<Located<u64>>,
    task: Option<Task>,
    secrets: Option<IndexMap<String, ConfigValue>>,
    retry: Option<Located<RetryPolicy>>,
    pricing: Option<Located<pricing::Pricing>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct AdapterRef {
    key: Located<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CustomInferenceWire {
    #[serde(rename = "connection_type")]
    _connection_type: String,
    adapter: Option<AdapterRef>,
    run_inference_snippet: SourceText,
    #[serde(default)]
    environment: IndexMap<String, ConfigValue>,
    timeout: Option<Located<f64>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CustomConnectionWire {
    #[serde(rename = "connection_type")]
    _connection_type: Option<String>,
    adapter: Option<AdapterRef>,
    url: ConfigValue,
    api_key: Option<ConfigValue>,
    model_key: Option<ConfigValue>,
    custom_headers: Option<IndexMap<String, ConfigValue>>,
    tls_context: Option<TlsContextWire>,
    timeout: Option<Located<f64>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TlsContextWire {
    validation_context: Option<ValidationContextWire>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ValidationContextWire {
    trusted_ca: Option<ConfigValue>,
    trust_chain_verification: Option<TrustChain>,
}

#[derive(Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum TrustChain {
    VerifyTrustChain,
    AcceptUntrusted,
}

/// The JSON Schema of a model file: its top-level keys and a `config` of either connection type.
pub fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use crate::yaml::schema;
    let mut model = <ModelWire as schemars::JsonSchema>::json_schema(generator);
    let mut inference = <CustomInferenceWire as schemars::JsonSchema>::json_schema(generator);
    schema::pin(&mut inference, "connection_type", "custom_inference");
    let mut connection = <CustomConnectionWire as schemars::JsonSchema>::json_schema(generator);
    schema::pin(&mut connection, "connection_type", "custom_connection");
    let config = schemars::json_schema!({ "anyOf": [inference, connection] });
    schema::insert_property(&mut model, "config", config, true);
    model
}

/// Legacy adapter keys and what they mean now.
pub fn canonical_adapter_key(key: &str) -> &str {
    match key {
        "latticeflow$identity_chat_completion" | "latticeflow$identity_embeddings" | "latticeflow$identity_custom" => {
            DEFAULT_ADAPTER
        }
        other => other,
    }
}

pub fn check_key(key: &Located<String>, what: &str, allow_dollar: bool) -> Result<(), Diagnostic> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (allow_dollar && c == '$');
    if key.is_empty() || key.len() > 250 || !key.chars().all(valid_char) {
        let allowed = if allow_dollar {
            "letters, digits, `_`, `-` and `$`"
        } else {
            "letters, digits, `_` and `-`"
        };
        return Err(Diagnostic::new(format!("invalid {what} key `{}`", key.value))
            .at_location(key.location.clone())
            .with_path(key.path.clone())
            .with_hint(format!("keys are 1 to 250 characters: {allowed}")));
    }
    Ok(())
}

fn timeout(value: Option<Located<f64>>, default: f64) -> Result<Duration, Diagnostic> {
    let Some(t) = value else {
        return Ok(Duration::from_secs_f64(default));
    };
    if !(t.value > 0.0 && t.value.is_finite() && t.value < 86_400.0) {
        return Err(Diagnostic::new(format!(
            "`timeout` must be a number of seconds greater than 0, found `{}`",
            t.value
        ))
        .at_location(t.location.clone())
        .with_path(t.path.clone()));
    }
    Ok(Duration::from_secs_f64(t.value))
}

fn retry_policy(value: Option<Located<RetryPolicy>>) -> Result<RetryPolicy, Diagnostic> {
    let Some(policy) = value else {
        return Ok(RetryPolicy::default());
    };
    let p = &policy.value;
    let sane = |s: f64| s.is_finite() && (0.0..=3600.0).contains(&s);
    if p.max_attempts == 0
        || p.max_attempts > 100
        || !sane(p.initial_backoff)
        || !sane(p.max_backoff)
        || !sane(p.max_retry_after)
    {
        return Err(Diagnostic::new("invalid `retry` policy")
            .at_location(policy.location.clone())
            .with_path(policy.path.clone())
            .with_hint("`max_attempts` is 1 to 100; `initial_backoff`, `max_backoff` and `max_retry_after` are seconds from 0 to 3600"));
    }
    Ok(policy.value)
}

/// A whole number in `1..=max`, or an error naming the key and its allowed range.
fn in_range(value: Option<Located<u32>>, name: &str, max: u32) -> Result<Option<u32>, Diagnostic> {
    match value {
        Some(v) if v.value == 0 || v.value > max => Err(Diagnostic::new(format!(
            "`{name}` must be from 1 to {max}, found `{}`",
            v.value
        ))
        .at_location(v.location.clone())
        .with_path(v.path.clone())),
        other => Ok(other.map(|v| v.value)),
    }
}

fn max_response_bytes(value: Option<Located<u64>>) -> Result<u64, Diagnostic> {
    match value {
        Some(v) if !(1024..=MAX_RESPONSE_BYTES_LIMIT).contains(&v.value) => Err(Diagnostic::new(format!(
            "`max_response_bytes` must be from 1024 to {MAX_RESPONSE_BYTES_LIMIT} (1 GiB), found `{}`",
            v.value
        ))
        .at_location(v.location.clone())
        .with_path(v.path.clone())),
        Some(v) => Ok(v.value),
        None => Ok(DEFAULT_MAX_RESPONSE_BYTES),
    }
}

fn adapter_key(adapter: Option<AdapterRef>, config: &Node) -> Located<String> {
    match adapter {
        Some(a) => {
            let mut key = a.key;
            key.value = canonical_adapter_key(&key.value).to_owned();
            key
        }
        None => Located {
            value: DEFAULT_ADAPTER.to_owned(),
            location: Location::from(&config.span),
            path: "config".to_owned(),
        },
    }
}

/// Reads a model from its YAML tree.
pub fn from_yaml(mut node: Node, path: &str) -> Result<Model, Diagnostic> {
    let sources = crate::yaml::sources(&node);
    let key_path = |k: &str| crate::yaml::join(path, k);
    let Some(_) = node.as_map() else {
        return Err(Diagnostic::new(format!("a model must be a mapping, found {}", node.kind())).at(&node.span));
    };
    let config = node.take("config");
    let wire: ModelWire = from_node(&node, path)?;
    check_key(&wire.key, "model", true)?;
    if wire.display_name.trim().is_empty() {
        return Err(Diagnostic::new("`display_name` must not be empty")
            .at_location(wire.display_name.location.clone())
            .with_path(key_path("display_name")));
    }
    let Some((_, config)) = config else {
        return Err(Diagnostic::new("missing required key `config`")
            .at(&node.span)
            .with_path(path.to_owned())
            .with_hint("add `config:` with `connection_type: custom_inference` or `custom_connection`"));
    };
    let config_path = key_path("config");
    let connection_type = match config.get("connection_type") {
        None => None,
        Some(n) => Some(n.as_str().map(str::to_owned).ok_or_else(|| {
            Diagnostic::new(format!("`connection_type` must be a string, found {}", n.kind())).at(&n.span)
        })?),
    };
    let (connection, adapter) = match connection_type.as_deref() {
        Some("custom_inference") => {
            let wire: CustomInferenceWire = from_node(&config, &config_path)?;
            let adapter = adapter_key(wire.adapter, &config);
            let connection = Connection::CustomInference(Box::new(CustomInference {
                snippet: wire.run_inference_snippet,
                environment: wire.environment,
                timeout: timeout(wire.timeout, DEFAULT_SNIPPET_TIMEOUT)?,
            }));
            (connection, adapter)
        }
        None | Some("custom_connection") => {
            let wire: CustomConnectionWire = from_node(&config, &config_path)?;
            let adapter = adapter_key(wire.adapter, &config);
            let validation = wire.tls_context.and_then(|t| t.validation_context);
            let (trusted_ca, accept_untrusted) = match validation {
                Some(v) => (
                    v.trusted_ca,
                    v.trust_chain_verification == Some(TrustChain::AcceptUntrusted),
                ),
                None => (None, false),
            };
            let connection = Connection::CustomConnection(Box::new(CustomConnection {
                url: wire.url,
                api_key: wire.api_key,
                model_key: wire.model_key,
                custom_headers: wire.custom_headers.unwrap_or_default(),
                trusted_ca,
                accept_untrusted,
                timeout: timeout(wire.timeout, DEFAULT_HTTP_TIMEOUT)?,
            }));
            (connection, adapter)
        }
        Some(other) => {
            let node = config.get("connection_type").unwrap_or(&config);
            let hint = match other {
                "provider_connection"
                | "langsmith"
                | "azure_foundry"
                | "aws_bedrock"
                | "claude_managed_agents"
                | "dify"
                | "placeholder" => {
                    format!(
                        "`{other}` needs the hosted platform; describe the endpoint with `custom_connection` (a URL and an adapter) or `custom_inference` (a Python snippet)"
                    )
                }
                _ => "expected `custom_inference` or `custom_connection`".to_owned(),
            };
            return Err(Diagnostic::new(format!("unsupported connection type `{other}`"))
                .at(&node.span)
                .with_path(crate::yaml::join(&config_path, "connection_type"))
                .with_hint(hint));
        }
    };
    let isolation = match wire.isolation {
        Some(i) if i.value == Isolation::Process && !matches!(connection, Connection::CustomInference(_)) => {
            return Err(
                Diagnostic::new("`isolation: process` applies to `custom_inference` models only")
                    .at_location(i.location.clone())
                    .with_path(i.path.clone())
                    .with_hint("it runs the model's Python snippet in worker processes; an HTTP model has no snippet"),
            );
        }
        Some(i) => i.value,
        None => Isolation::InProcess,
    };
    Ok(Model {
        key: wire.key.value.clone(),
        display_name: wire.display_name.value,
        description: wire.description,
        rate_limit: in_range(wire.rate_limit, "rate_limit", MAX_RATE_LIMIT)?,
        max_concurrent_requests: in_range(
            wire.max_concurrent_requests,
            "max_concurrent_requests",
            MAX_CONCURRENT_REQUESTS,
        )?,
        tokens_per_minute: in_range(wire.tokens_per_minute, "tokens_per_minute", MAX_TOKENS_PER_MINUTE)?,
        isolation,
        max_response_bytes: max_response_bytes(wire.max_response_bytes)?,
        task: wire.task.unwrap_or_default(),
        secrets: wire.secrets.unwrap_or_default(),
        adapter,
        connection,
        retry: retry_policy(wire.retry)?,
        pricing: pricing::validate(wire.pricing)?,
        file: node.span.file.display.clone(),
        location: wire.key.location,
        sources,
        provider: None,
    })
}
