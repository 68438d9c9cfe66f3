//! `$provider` models (`models: [{$provider: "openai/gpt-4.1-nano"}]`): lf's shorthand for a
//! model served through a provider integration, referenced afterwards as `openai$gpt-4-1-nano`.
//! The platform keeps the provider's key and catalogue; lfeval serves the same models locally
//! with the user's own key. Each provider is a built-in `custom_connection`: its base URL
//! (overridable, so a proxy or a local test server can stand in), the environment variable (or
//! stored secret) holding its key, and the built-in adapter that speaks its API. OpenAI-compatible
//! providers share the OpenAI Chat Completions adapter; Anthropic and Gemini have their own.
//! Models hosted by LatticeFlow itself (`latticeflow/…`) need the platform and are refused by name.

use std::time::Duration;

use indexmap::IndexMap;

use crate::config_value::{ConfigValue, Source};
use crate::diagnostic::{Diagnostic, Location};
use crate::model::io::Task;
use crate::model::{Connection, CustomConnection, Model, RetryPolicy};
use crate::secrets::Secrets;
use crate::variables::Variables;
use crate::yaml::Located;

/// lf's `IntegrationModelProviderId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
    Together,
    Fireworks,
    SambaNova,
    Novita,
    LatticeFlow,
}

/// Every provider, in lf's order of its enum.
pub const PROVIDERS: &[Provider] = &[
    Provider::Anthropic,
    Provider::Fireworks,
    Provider::Gemini,
    Provider::LatticeFlow,
    Provider::Novita,
    Provider::OpenAi,
    Provider::SambaNova,
    Provider::Together,
];

/// How long one provider call may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(120);

/// The `anthropic-version` header the Messages adapter is written against.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Known model names per provider, so a key written without its `$provider` entry
/// (`lfeval model test 'openai$gpt-4-1-nano'`) finds the name the API wants (`gpt-4.1-nano`).
/// A key not listed here is sent as written after the `$`.
const CATALOGUE: &[(Provider, &[&str])] = &[
    (
        Provider::OpenAi,
        &[
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-mini-2025-04-14",
            "gpt-4.1-nano",
            "gpt-4.1-nano-2025-04-14",
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5-nano",
            "o3",
            "o3-mini",
            "o4-mini",
        ],
    ),
    (
        Provider::Anthropic,
        &[
            "claude-3-5-haiku-latest",
            "claude-3-7-sonnet-latest",
            "claude-sonnet-4-0",
            "claude-opus-4-1",
        ],
    ),
    (
        Provider::Gemini,
        &[
            "gemini-1.5-flash",
            "gemini-1.5-pro",
            "gemini-2.0-flash",
            "gemini-2.0-flash-lite",
            "gemini-2.5-flash",
            "gemini-2.5-pro",
        ],
    ),
];

impl Provider {
    pub fn parse(id: &str) -> Option<Provider> {
        PROVIDERS.iter().copied().find(|p| p.id() == id)
    }

    /// The id lf uses (`openai`), also the prefix of the model keys (`openai$…`).
    pub fn id(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Together => "together",
            Provider::Fireworks => "fireworks",
            Provider::SambaNova => "sambanova",
            Provider::Novita => "novita",
            Provider::LatticeFlow => "latticeflow",
        }
    }

    /// The environment variables that may hold the API key, in order (the provider's own SDK
    /// reads the first one); the first is also the name looked up in the secret store.
    pub fn key_vars(self) -> &'static [&'static str] {
        match self {
            Provider::OpenAi => &["OPENAI_API_KEY"],
            Provider::Anthropic => &["ANTHROPIC_API_KEY"],
            Provider::Gemini => &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
            Provider::Together => &["TOGETHER_API_KEY"],
            Provider::Fireworks => &["FIREWORKS_API_KEY"],
            Provider::SambaNova => &["SAMBANOVA_API_KEY"],
            Provider::Novita => &["NOVITA_API_KEY"],
            Provider::LatticeFlow => &["LF_API_KEY"],
        }
    }

    /// The environment variable that overrides the base URL.
    pub fn base_url_var(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_BASE_URL",
            Provider::Anthropic => "ANTHROPIC_BASE_URL",
            Provider::Gemini => "GEMINI_BASE_URL",
            Provider::Together => "TOGETHER_BASE_URL",
            Provider::Fireworks => "FIREWORKS_BASE_URL",
            Provider::SambaNova => "SAMBANOVA_BASE_URL",
            Provider::Novita => "NOVITA_BASE_URL",
            Provider::LatticeFlow => "LF_URL",
        }
    }

    /// The base URL as each provider's own SDK defaults it.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com/v1",
            Provider::Anthropic => "https://api.anthropic.com",
            Provider::Gemini => "https://generativelanguage.googleapis.com",
            Provider::Together => "https://api.together.xyz/v1",
            Provider::Fireworks => "https://api.fireworks.ai/inference/v1",
            Provider::SambaNova => "https://api.sambanova.ai/v1",
            Provider::Novita => "https://api.novita.ai/v3/openai",
            Provider::LatticeFlow => "",
        }
    }

    /// The built-in adapter that speaks the provider's API.
    pub fn adapter(self) -> &'static str {
        match self {
            Provider::Anthropic => "latticeflow$anthropic_messages",
            Provider::Gemini => "latticeflow$gemini_generate_content",
            _ => "latticeflow$openai_chat_completion",
        }
    }

    /// The URL a chat request goes to, below `base`.
    fn endpoint(self, base: &str, model: &str) -> String {
        let base = base.trim_end_matches('/');
        match self {
            Provider::Anthropic => format!("{base}/v1/messages"),
            Provider::Gemini => format!("{base}/v1beta/models/{model}:generateContent"),
            _ => format!("{base}/chat/completions"),
        }
    }

    /// The refusal for models the platform hosts itself.
    pub fn hosted_refusal(self, model: &str) -> Option<Diagnostic> {
        (self == Provider::LatticeFlow).then(|| {
            Diagnostic::new(format!(
                "`latticeflow/{model}` is a LatticeFlow-hosted model: LatticeFlow-hosted models need the hosted AI GO! platform; lfeval does not run them"
            ))
            .with_hint(
                "use another provider (`$provider: \"openai/gpt-4.1-nano\"`, with your own key) or describe the endpoint with `connection_type: custom_connection`",
            )
        })
    }
}

/// lf's `sanitize_key`: lowercase, every run of other characters than `[a-z0-9_-]` becomes
/// `-`, dashes collapsed and trimmed (`gpt-4.1-nano` → `gpt-4-1-nano`).
pub fn sanitize_key(name: &str) -> String {
    let mut out = String::new();
    for c in name.to_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            c
        } else {
            '-'
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    out.trim_matches('-').to_owned()
}

/// The key a `$provider` model gets: `openai/gpt-4.1-nano` → `openai$gpt-4-1-nano`.
pub fn model_key(provider: Provider, model: &str) -> String {
    format!("{}${}", provider.id(), sanitize_key(model))
}

/// Splits `"openai/gpt-4.1-nano"` as lf does (at the first `/`).
pub fn parse_reference(reference: &str) -> Result<(Provider, String), Diagnostic> {
    let (id, model) = reference.split_once('/').unwrap_or((reference, ""));
    let Some(provider) = Provider::parse(id) else {
        let known: Vec<&str> = PROVIDERS.iter().map(|p| p.id()).collect();
        let hint = match crate::diagnostic::closest(id, known.iter().copied()) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!(
                "providers: {}",
                known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            ),
        };
        return Err(Diagnostic::new(format!("unknown model provider `{id}` in `{reference}`")).with_hint(hint));
    };
    if model.is_empty() {
        return Err(Diagnostic::new(format!("`$provider: \"{reference}\"` names no model"))
            .with_hint(format!("write `{}/<model>`, e.g. `openai/gpt-4.1-nano`", provider.id())));
    }
    Ok((provider, model.to_owned()))
}

/// The provider and model name behind a key such as `openai$gpt-4-1-nano`, for keys that no
/// `$provider` entry defined: the catalogue gives the real name, else the key's own text.
pub fn from_key(key: &str) -> Option<(Provider, String)> {
    let (id, rest) = key.split_once('$')?;
    let provider = Provider::parse(id)?;
    if rest.is_empty() || provider == Provider::LatticeFlow {
        return None;
    }
    let known = CATALOGUE
        .iter()
        .filter(|(p, _)| *p == provider)
        .flat_map(|(_, names)| names.iter())
        .find(|name| sanitize_key(name) == rest);
    Some((provider, known.map_or_else(|| rest.to_owned(), |n| (*n).to_owned())))
}

/// A variable's value as a deferred config value: set → its value, else the named secret when
/// the store has it, else unset with `missing` as the error shown when the value is used.
fn credential(provider: Provider, vars: &Variables, secrets: &Secrets, at: &Location, model: &str) -> ConfigValue {
    let mut value = ConfigValue::literal(serde_json::Value::Null);
    value.location = at.clone();
    value.path = "$provider".to_owned();
    for var in provider.key_vars() {
        if let Some(v) = vars.get(var) {
            value.value = serde_json::Value::String(v);
            value.source = Source::Env((*var).to_owned());
            return value;
        }
    }
    let name = provider.key_vars()[0];
    if secrets.get(name).is_ok() {
        value.source = Source::Secret(name.to_owned());
        return value;
    }
    value.source = Source::Unset {
        var: name.to_owned(),
        error: format!(
            "provider model `{model}` needs an API key: set `{name}` (environment or `.env`) or store it with `lfeval secret set {name}`"
        ),
    };
    value
}

/// The local model behind `$provider: "<provider>/<model>"`.
pub fn model(
    provider: Provider,
    name: &str,
    vars: &Variables,
    secrets: &Secrets,
    file: &str,
    location: Location,
) -> Result<Model, Diagnostic> {
    if let Some(refusal) = provider.hosted_refusal(name) {
        return Err(refusal.at_location(location));
    }
    let key = model_key(provider, name);
    let (base, base_source) = match vars.get(provider.base_url_var()) {
        Some(url) if !url.is_empty() => (url, Source::Env(provider.base_url_var().to_owned())),
        _ => (provider.default_base_url().to_owned(), Source::Literal),
    };
    let url = ConfigValue {
        value: serde_json::Value::String(provider.endpoint(&base, name)),
        source: base_source,
        location: location.clone(),
        path: "$provider".to_owned(),
    };
    let key_value = credential(provider, vars, secrets, &location, &key);
    let mut headers = IndexMap::new();
    let api_key = match provider {
        Provider::Anthropic => {
            headers.insert("x-api-key".to_owned(), key_value);
            let mut version = ConfigValue::literal(serde_json::Value::String(ANTHROPIC_VERSION.to_owned()));
            version.location = location.clone();
            headers.insert("anthropic-version".to_owned(), version);
            None
        }
        Provider::Gemini => {
            headers.insert("x-goog-api-key".to_owned(), key_value);
            None
        }
        _ => Some(key_value),
    };
    Ok(Model {
        display_name: format!("{name} ({})", provider.id()),
        description: Some(format!(
            "`$provider: \"{}/{name}\"`, served with your own `{}`",
            provider.id(),
            provider.key_vars()[0]
        )),
        rate_limit: None,
        max_concurrent_requests: None,
        tokens_per_minute: None,
        isolation: Default::default(),
        pricing: None,
        max_response_bytes: crate::model::DEFAULT_MAX_RESPONSE_BYTES,
        task: Task::ChatCompletion,
        secrets: IndexMap::new(),
        adapter: Located {
            value: provider.adapter().to_owned(),
            location: location.clone(),
            path: "$provider".to_owned(),
        },
        connection: Connection::CustomConnection(Box::new(CustomConnection {
            url,
            api_key,
            model_key: Some(ConfigValue::literal(serde_json::Value::String(name.to_owned()))),
            custom_headers: headers,
            trusted_ca: None,
            accept_untrusted: false,
            timeout: PROVIDER_TIMEOUT,
        })),
        retry: RetryPolicy::default(),
        file: file.to_owned(),
        location,
        sources: Vec::new(),
        key,
        provider: Some(provider),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sanitised_as_lf_does() {
        assert_eq!(sanitize_key("gpt-4.1-nano"), "gpt-4-1-nano");
        assert_eq!(sanitize_key("gpt-4.1-mini-2025-04-14"), "gpt-4-1-mini-2025-04-14");
        assert_eq!(
            sanitize_key("meta-llama/Llama-3.3-70B--Instruct "),
            "meta-llama-llama-3-3-70b-instruct"
        );
        assert_eq!(model_key(Provider::OpenAi, "gpt-4.1-nano"), "openai$gpt-4-1-nano");
    }

    #[test]
    fn references_split_at_the_first_slash() {
        let (p, m) = parse_reference("together/meta-llama/Llama-3").unwrap();
        assert_eq!((p, m.as_str()), (Provider::Together, "meta-llama/Llama-3"));
        assert!(
            parse_reference("opnai/gpt-4o")
                .unwrap_err()
                .hint
                .unwrap()
                .contains("openai")
        );
        assert!(parse_reference("openai").is_err());
    }

    #[test]
    fn catalogue_names_come_back_from_keys() {
        assert_eq!(
            from_key("openai$gpt-4-1-nano"),
            Some((Provider::OpenAi, "gpt-4.1-nano".to_owned()))
        );
        assert_eq!(
            from_key("openai$my-model"),
            Some((Provider::OpenAi, "my-model".to_owned()))
        );
        assert_eq!(from_key("latticeflow$placeholder"), None);
        assert_eq!(from_key("custom$x"), None);
    }
}
