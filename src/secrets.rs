//! Secrets: `<< secrets.NAME >>` resolution from inline `secrets:` maps and the local secret
//! store (a JSON file created with mode 0600, managed by `lfeval secret`). Every resolved value
//! is registered with [`crate::redact`] so it never reaches output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::diagnostic::Diagnostic;

pub const SECRETS_FILE_ENV: &str = "LFEVAL_SECRETS_FILE";

/// The local store: `$LFEVAL_SECRETS_FILE`, else `<config dir>/lfeval/secrets.json`.
pub fn store_path() -> PathBuf {
    if let Some(path) = std::env::var_os(SECRETS_FILE_ENV) {
        return PathBuf::from(path);
    }
    dirs::config_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("lfeval")
        .join("secrets.json")
}

pub fn read_store(path: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(BTreeMap::new()),
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("secret store `{}` is not valid JSON", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read secret store `{}`", path.display())),
    }
}

pub fn write_store(path: &std::path::Path, secrets: &BTreeMap<String, String>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write `{}`", tmp.display()))?;
    // `mode` only applies on creation; tighten a pre-existing temp file too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(serde_json::to_string_pretty(secrets)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Where secret values come from while a command runs.
#[derive(Clone, Default)]
pub struct Secrets {
    inner: Arc<Mutex<SecretsInner>>,
}

#[derive(Default)]
struct SecretsInner {
    /// Inline values with the place that declared them.
    inline: BTreeMap<String, (String, String)>,
    store: Option<BTreeMap<String, String>>,
    store_path: PathBuf,
}

impl Secrets {
    pub fn new() -> Secrets {
        let inner = SecretsInner {
            store_path: store_path(),
            ..SecretsInner::default()
        };
        Secrets {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// Adds an inline `secrets:` value; the same name with a different value is an error.
    pub fn add_inline(&self, name: &str, value: &str, origin: &str) -> Result<(), Diagnostic> {
        crate::redact::register(value, &format!("<<secrets.{name}>>"));
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Diagnostic::new("secret registry is poisoned"))?;
        if let Some((existing, first)) = inner.inline.get(name) {
            if existing != value {
                return Err(
                    Diagnostic::new(format!("secret `{name}` is declared twice with different values"))
                        .with_note(format!("first declared in {first}"))
                        .with_note(format!("then in {origin}")),
                );
            }
            return Ok(());
        }
        inner
            .inline
            .insert(name.to_owned(), (value.to_owned(), origin.to_owned()));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<String, Diagnostic> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Diagnostic::new("secret registry is poisoned"))?;
        if let Some((value, _)) = inner.inline.get(name) {
            return Ok(value.clone());
        }
        if inner.store.is_none() {
            let path = inner.store_path.clone();
            inner.store = Some(read_store(&path).map_err(|e| Diagnostic::new(format!("{e:#}")))?);
        }
        let value = inner.store.as_ref().and_then(|s| s.get(name)).cloned();
        match value {
            Some(value) => {
                crate::redact::register(&value, &format!("<<secrets.{name}>>"));
                Ok(value)
            }
            None => Err(Diagnostic::new(format!("unknown secret `{name}`"))
                .with_note(format!(
                    "looked in inline `secrets:` maps and in the secret store `{}`",
                    inner.store_path.display()
                ))
                .with_hint(format!(
                    "add it with `lfeval secret set {name}` (the value is read from stdin)"
                ))),
        }
    }
}
