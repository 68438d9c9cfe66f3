//! A project: a directory with `models/` and `adapters/` or `model_adapters/` (lf's folder name),
//! plus, for evaluations, `datasets/`, `tasks/`, `evaluations/` and run files at the top. Loading
//! never stops at the first bad file: each entity that fails is kept as an error, so commands
//! about other entities still work. `$provider` models that the project's run files use are
//! models of the project too, and any `<provider>$<model>` key names one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::diagnostic::Diagnostic;
use crate::model::adapter::{self, Adapter};
use crate::model::{self, Model};
use crate::secrets::Secrets;
use crate::variables::Variables;
use crate::yaml;

/// An entity file that could not be loaded.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub kind: &'static str,
    pub file: String,
    /// The key, when the file got far enough to have one.
    pub key: Option<String>,
    pub diagnostic: Diagnostic,
}

pub struct Project {
    pub root: PathBuf,
    pub vars: Variables,
    pub secrets: Secrets,
    pub models: BTreeMap<String, Arc<Model>>,
    pub adapters: BTreeMap<String, Arc<Adapter>>,
    pub errors: Vec<LoadError>,
}

/// Every `*.yaml`/`*.yml` below `dir`, sorted, skipping `skip`.
pub fn yaml_files(dir: &Path, skip: Option<&Path>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') || Some(path.as_path()) == skip {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn key_of(node: &yaml::Node) -> Option<String> {
    node.get("key").and_then(yaml::Node::as_str).map(str::to_owned)
}

impl Project {
    pub fn load(root: &Path, env_file: Option<&Path>) -> anyhow::Result<Project> {
        let root = root
            .canonicalize()
            .with_context(|| format!("project directory `{}` does not exist", root.display()))?;
        let vars = Variables::load(&root, env_file)?;
        let mut project = Project {
            vars,
            secrets: Secrets::new(),
            models: BTreeMap::new(),
            adapters: BTreeMap::new(),
            errors: Vec::new(),
            root,
        };
        for builtin in adapter::builtins().map_err(|d| anyhow::anyhow!("built-in adapter is invalid: {d}"))? {
            project.adapters.insert(builtin.key.clone(), Arc::new(builtin));
        }
        for path in project.adapter_files() {
            project.load_adapter_file(&path);
        }
        for path in yaml_files(&project.root.join("models"), None) {
            project.load_model_file(&path);
        }
        project.add_provider_models();
        Ok(project)
    }

    /// Every adapter file: `adapters/` (but not lfeval's own `adapters/builtin/`) and lf's
    /// `model_adapters/`.
    pub fn adapter_files(&self) -> Vec<PathBuf> {
        let skip = self.root.join("adapters").join("builtin");
        let mut files = yaml_files(&self.root.join("adapters"), Some(&skip));
        files.extend(yaml_files(&self.root.join("model_adapters"), None));
        files
    }

    /// The `$provider` models the project's top-level run files list, so `model list` and
    /// `model test` know them.
    fn add_provider_models(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        for path in files {
            let Ok(node) = yaml::load(&path, &self.root, &self.vars) else {
                continue;
            };
            if !crate::entity::is_run_config(&node) {
                continue;
            }
            let Some(yaml::Value::Seq(items)) = node.get("models").map(|n| &n.value) else {
                continue;
            };
            for item in items {
                let Some(reference) = item.get("$provider").and_then(yaml::Node::as_str) else {
                    continue;
                };
                let Ok((provider, name)) = model::provider::parse_reference(reference) else {
                    continue;
                };
                let file = yaml::display_path(&self.root, &path);
                let location = crate::diagnostic::Location::from(&item.span);
                if let Ok(m) = model::provider::model(provider, &name, &self.vars, &self.secrets, &file, location)
                    && !self.models.contains_key(&m.key)
                {
                    self.models.insert(m.key.clone(), Arc::new(m));
                }
            }
        }
    }

    fn record(&mut self, kind: &'static str, path: &Path, key: Option<String>, diagnostic: Diagnostic) {
        let file = yaml::display_path(&self.root, path);
        self.errors.push(LoadError {
            kind,
            file,
            key,
            diagnostic,
        });
    }

    pub fn load_adapter_file(&mut self, path: &Path) -> Option<Arc<Adapter>> {
        let node = match yaml::load(path, &self.root, &self.vars) {
            Ok(node) => node,
            Err(d) => {
                self.record("adapter", path, None, d);
                return None;
            }
        };
        let key = key_of(&node);
        match adapter::from_yaml(&node, "") {
            // The entity's file is the one under `adapters/`, even when its content came in
            // through a `$ref` (two files referencing one definition must be told apart).
            Ok(adapter) => self.add_adapter(
                adapter::Adapter {
                    file: yaml::display_path(&self.root, path),
                    ..adapter
                },
                path,
            ),
            Err(d) => {
                self.record("adapter", path, key, d);
                None
            }
        }
    }

    fn add_adapter(&mut self, adapter: Adapter, path: &Path) -> Option<Arc<Adapter>> {
        if let Some(existing) = self.adapters.get(&adapter.key) {
            let d = duplicate(
                "adapter",
                &adapter.key,
                &existing.file,
                &adapter.file,
                &adapter.location,
            );
            self.record("adapter", path, Some(adapter.key), d);
            return None;
        }
        let adapter = Arc::new(adapter);
        self.adapters.insert(adapter.key.clone(), adapter.clone());
        Some(adapter)
    }

    pub fn load_model_file(&mut self, path: &Path) -> Option<Arc<Model>> {
        let node = match yaml::load(path, &self.root, &self.vars) {
            Ok(node) => node,
            Err(d) => {
                self.record("model", path, None, d);
                return None;
            }
        };
        let key = key_of(&node);
        match model::from_yaml(node, "") {
            Ok(model) => self.add_model(
                Model {
                    file: yaml::display_path(&self.root, path),
                    ..model
                },
                path,
            ),
            Err(d) => {
                self.record("model", path, key, d);
                None
            }
        }
    }

    pub fn add_model(&mut self, model: Model, path: &Path) -> Option<Arc<Model>> {
        if let Some(existing) = self.models.get(&model.key) {
            if existing.file == model.file {
                return Some(Arc::clone(existing));
            }
            let d = duplicate("model", &model.key, &existing.file, &model.file, &model.location);
            self.record("model", path, Some(model.key), d);
            return None;
        }
        let model = Arc::new(model);
        self.models.insert(model.key.clone(), model.clone());
        Some(model)
    }

    /// The model under `key`, or the reason it is unavailable.
    pub fn model(&self, key: &str) -> Result<Arc<Model>, Diagnostic> {
        if let Some(model) = self.models.get(key) {
            return Ok(model.clone());
        }
        if let Some(err) = self.load_error("model", key) {
            return Err(err.diagnostic.clone());
        }
        if let Some(name) = key.strip_prefix("latticeflow$") {
            return Err(crate::entity::HostedFeature::LatticeFlowModels
                .diagnostic(&format!("`{key}` ({name}) is a LatticeFlow-hosted model")));
        }
        if let Some((provider, name)) = model::provider::from_key(key) {
            let location = crate::diagnostic::Location {
                file: String::new(),
                line: 0,
                col: 0,
                width: 0,
                source_line: None,
            };
            return model::provider::model(provider, &name, &self.vars, &self.secrets, "", location).map(Arc::new);
        }
        Err(unknown("model", key, self.models.keys(), "lfeval model list"))
    }

    pub fn adapter(&self, key: &str) -> Result<Arc<Adapter>, Diagnostic> {
        let key = model::canonical_adapter_key(key);
        if let Some(adapter) = self.adapters.get(key) {
            return Ok(adapter.clone());
        }
        if let Some(err) = self.load_error("adapter", key) {
            return Err(err.diagnostic.clone());
        }
        Err(unknown("adapter", key, self.adapters.keys(), "lfeval adapter list"))
    }

    /// The load error of the `kind` file that defines `key`: by the key it got to, or, for a file
    /// broken before its key could be read, by a file name that matches the key.
    fn load_error(&self, kind: &str, key: &str) -> Option<&LoadError> {
        let of_kind = || self.errors.iter().filter(move |e| e.kind == kind);
        of_kind().find(|e| e.key.as_deref() == Some(key)).or_else(|| {
            of_kind().find(|e| {
                e.key.is_none()
                    && Path::new(&e.file)
                        .file_stem()
                        .is_some_and(|stem| stem.to_string_lossy() == key)
            })
        })
    }

    /// Registers every model's inline `secrets:` (all inline maps are merged, as on the
    /// platform) so that any model can use them and their values are masked from the start.
    /// Best effort: a value that cannot be resolved yet fails when its model is used.
    pub fn register_inline_secrets(&self) {
        for model in self.models.values() {
            let _ = self.register_model_secrets(model);
        }
    }

    /// Registers a model's inline `secrets:` so `<< secrets.X >>` can find them.
    pub fn register_model_secrets(&self, model: &Model) -> Result<(), Diagnostic> {
        for (name, value) in &model.secrets {
            let resolved = value.resolve(&self.secrets, true)?;
            let text = match resolved {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            let origin = format!("{}:{}", value.location.file, value.location.line);
            self.secrets.add_inline(name, &text, &origin)?;
        }
        Ok(())
    }
}

fn duplicate(kind: &str, key: &str, first: &str, second: &str, location: &crate::diagnostic::Location) -> Diagnostic {
    Diagnostic::new(format!("duplicate {kind} key `{key}`"))
        .at_location(location.clone())
        .with_note(format!("`{key}` is defined in both `{first}` and `{second}`"))
        .with_hint(format!("every {kind} needs its own key"))
}

pub fn unknown<'a>(kind: &str, key: &str, known: impl Iterator<Item = &'a String>, list: &str) -> Diagnostic {
    let diag = Diagnostic::new(format!("unknown {kind} `{key}`"));
    match crate::diagnostic::closest(key, known.map(String::as_str)) {
        Some(k) => diag.with_hint(format!("did you mean `{k}`?")),
        None => diag.with_hint(format!("`{list}` shows the {kind}s this project defines")),
    }
}
