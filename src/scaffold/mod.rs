//! The files `lfeval init` and `lfeval model new` write: a project whose every file validates,
//! passes `model test` and runs with no network (the scaffolded snippet answers offline until it
//! is given a URL), and the JSON Schemas its `# yaml-language-server` lines point at. Files are
//! planned first and written only when none would be overwritten (unless forced).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::diagnostic::Diagnostic;
use crate::schema::SchemaKind;

/// The adapter `init` writes: OpenAI Chat Completions, for the user to edit.
pub const ADAPTER_KEY: &str = "chat-api";

/// Where a project keeps the schemas its files name (a generated, ignored folder).
pub const SCHEMA_DIR: &str = ".lfeval/schema";

/// One file to write, relative to the project root.
pub struct PlannedFile {
    pub path: PathBuf,
    pub contents: String,
    /// Generated files (the schemas) are refreshed without `--force`.
    pub generated: bool,
    /// What the file is for, as `init` lists it (empty: not listed one by one).
    pub about: String,
}

/// A model to scaffold.
pub struct ModelPlan<'a> {
    pub key: &'a str,
    /// The default endpoint (empty: the snippet answers offline).
    pub url: &'a str,
    pub adapter: &'a str,
}

impl ModelPlan<'_> {
    /// `my-model` → `my_model` (the snippet's file name).
    pub fn snippet_name(&self) -> String {
        self.key.replace('-', "_")
    }

    /// `my-model` → `MY_MODEL` (the prefix of its variables).
    pub fn var_prefix(&self) -> String {
        self.key.replace('-', "_").to_ascii_uppercase()
    }

    pub fn model_path(&self) -> PathBuf {
        Path::new("models").join(format!("{}.yaml", self.key))
    }

    pub fn snippet_path(&self) -> PathBuf {
        Path::new("snippets").join(format!("{}.py", self.snippet_name()))
    }

    fn fill(&self, template: &str) -> String {
        let offline = if self.url.is_empty() {
            "while it is empty,\n    # the snippet answers offline (an echo)."
        } else {
            "it defaults to the URL\n    # given to `lfeval model new`."
        };
        template
            .replace("@OFFLINE_NOTE@", offline)
            .replace("@KEY@", self.key)
            .replace("@SNIPPET@", &self.snippet_name())
            .replace("@VAR@", &self.var_prefix())
            .replace("@URL@", self.url)
            .replace("@ADAPTER@", self.adapter)
    }
}

/// Checks a key the way model files do, before anything is written.
pub fn check_key(key: &str) -> Result<(), Diagnostic> {
    let valid = !key.is_empty()
        && key.len() <= 250
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && key.starts_with(|c: char| c.is_ascii_alphabetic());
    if valid {
        Ok(())
    } else {
        Err(Diagnostic::new(format!("invalid model key `{key}`"))
            .with_hint("a key starts with a letter and has letters, digits, `_` and `-`, e.g. `my-model`"))
    }
}

/// A model file and its snippet.
pub fn model_files(model: &ModelPlan) -> Vec<PlannedFile> {
    vec![
        planned(
            model.model_path(),
            model.fill(include_str!("files/model.yaml")),
            format!("the model; `{}_URL` points it at your endpoint", model.var_prefix()),
        ),
        planned(
            model.snippet_path(),
            model.fill(include_str!("files/snippet.py")),
            if model.url.is_empty() {
                "its `run_inference`, answering offline until then".to_owned()
            } else {
                format!("its `run_inference`, calling `{}`", model.url)
            },
        ),
    ]
}

/// A whole project around one offline model.
pub fn project_files(model_key: &str) -> Vec<PlannedFile> {
    let model = ModelPlan {
        key: model_key,
        url: "",
        adapter: ADAPTER_KEY,
    };
    let mut files = vec![planned(
        "run.yaml".into(),
        model.fill(include_str!("files/run.yaml")),
        format!("the evaluation: task `qa` on model `{model_key}`"),
    )];
    files.extend(model_files(&model));
    files.extend([
        planned(
            Path::new("adapters").join(format!("{ADAPTER_KEY}.yaml")),
            include_str!("files/adapter.yaml").to_owned(),
            "the endpoint's request and response format (OpenAI Chat Completions)".to_owned(),
        ),
        planned(
            "datasets/questions.yaml".into(),
            include_str!("files/dataset.yaml").to_owned(),
            "the dataset `questions`".to_owned(),
        ),
        planned(
            "datasets/questions.jsonl".into(),
            include_str!("files/questions.jsonl").to_owned(),
            "its three rows".to_owned(),
        ),
        planned(
            "tasks/qa.yaml".into(),
            include_str!("files/task.yaml").to_owned(),
            "the task: ask each question, score by exact match".to_owned(),
        ),
        planned(
            ".gitignore".into(),
            include_str!("files/gitignore").to_owned(),
            "keeps `runs/`, `.lfeval/` and `.env` out of git".to_owned(),
        ),
    ]);
    files.extend(schema_files());
    files
}

/// The schemas the scaffolded files point at, under [`SCHEMA_DIR`].
pub fn schema_files() -> Vec<PlannedFile> {
    SchemaKind::ALL
        .iter()
        .map(|kind| PlannedFile {
            path: Path::new(SCHEMA_DIR).join(kind.file_name()),
            contents: crate::schema::generate(*kind),
            generated: true,
            about: String::new(),
        })
        .collect()
}

fn planned(path: PathBuf, contents: String, about: String) -> PlannedFile {
    PlannedFile {
        path,
        contents,
        generated: false,
        about,
    }
}

/// Writes the files under `root`; refuses, writing nothing, when one exists and `force` is off.
pub fn write(root: &Path, files: &[PlannedFile], force: bool) -> anyhow::Result<()> {
    if !force {
        let existing: Vec<String> = files
            .iter()
            .filter(|f| !f.generated && root.join(&f.path).exists())
            .map(|f| format!("`{}`", f.path.display()))
            .collect();
        if !existing.is_empty() {
            let verb = if existing.len() == 1 { "exists" } else { "exist" };
            return Err(Diagnostic::new(format!(
                "{} already {verb} in `{}`; nothing was written",
                existing.join(", "),
                root.display()
            ))
            .with_hint("choose another directory or key, or pass `--force` to replace them")
            .into());
        }
    }
    for file in files {
        let path = root.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        std::fs::write(&path, &file.contents).with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    Ok(())
}
