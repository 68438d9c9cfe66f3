//! A run's fingerprint: everything it resolved that could change its results — the content
//! hash of every file it read (run config, `$ref`/`!include`d files, models, adapters, tasks,
//! snippets, dataset files), the values of the variables and secrets those files refer to
//! (hashed, never stored), the lfeval version, and the flags it ran with. `--resume` compares
//! the fingerprint it finds with the one it computes and refuses to mix two configurations in
//! one run.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::eval::dataset::SourceSpec;
use crate::eval::prepare::Prepared;
use crate::eval::run_config::RunConfig;
use crate::eval::shard::Shard;
use crate::eval::summary::DatasetSummary;
use crate::model::registry::Registry;
use crate::yaml::SourceFile;

/// The file in a run directory that holds the fingerprint.
pub const FINGERPRINT_FILE: &str = "fingerprint.json";

/// The flags that change which samples run or how; a resume reuses them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunFlags {
    pub no_cache: bool,
    pub fail_fast: bool,
    pub max_errors: Option<usize>,
    /// The shard this run is (`--shard I/N`); shards of one run differ only here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub lfeval_version: String,
    /// Project-relative path → SHA-256 of the content.
    pub files: BTreeMap<String, String>,
    /// Variable name → SHA-256 of its value (`unset` when it has none).
    pub variables: BTreeMap<String, String>,
    /// Secret name → SHA-256 of its value (`unknown` when it has none).
    pub secrets: BTreeMap<String, String>,
    pub flags: RunFlags,
}

/// One difference between two fingerprints, worded for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change(pub String);

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:?message}` references.
static VARIABLE: LazyLock<Regex> = LazyLock::new(|| {
    #[expect(clippy::expect_used, reason = "a constant pattern")]
    Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)|\$([A-Za-z_][A-Za-z0-9_]*)").expect("valid pattern")
});

/// `<< secrets.NAME >>` references.
static SECRET: LazyLock<Regex> = LazyLock::new(|| {
    #[expect(clippy::expect_used, reason = "a constant pattern")]
    Regex::new(r"<<\s*secrets\.([A-Za-z0-9_.-]+)\s*>>").expect("valid pattern")
});

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Fingerprint {
    /// The fingerprint a run directory recorded, `None` for a run from before fingerprints.
    pub fn read(dir: &Path) -> anyhow::Result<Option<Fingerprint>> {
        let path = dir.join(FINGERPRINT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("invalid `{}`: {e}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read `{}`: {e}", path.display())),
        }
    }

    /// Computes the fingerprint of a prepared run.
    pub fn compute(
        config: &RunConfig,
        prepared: &[Prepared],
        registry: &Registry,
        flags: RunFlags,
    ) -> anyhow::Result<Fingerprint> {
        let project = &config.project;
        let (mut sources, data_files) = task_sources(config, prepared);
        for runtime in registry.runtimes() {
            sources.extend(runtime.model.sources.iter().cloned());
            sources.extend(runtime.adapter.adapter.sources.iter().cloned());
        }
        let mut fingerprint = Fingerprint {
            lfeval_version: env!("CARGO_PKG_VERSION").to_owned(),
            flags,
            ..Fingerprint::default()
        };
        for file in &sources {
            fingerprint
                .files
                .insert(file.display.clone(), sha256(file.text.as_bytes()));
            for caps in VARIABLE.captures_iter(&file.text) {
                let name = caps.get(1).or_else(|| caps.get(2)).map_or("", |m| m.as_str());
                let value = project
                    .vars
                    .get(name)
                    .map_or_else(|| "unset".to_owned(), |v| sha256(v.as_bytes()));
                fingerprint.variables.insert(name.to_owned(), value);
            }
            for caps in SECRET.captures_iter(&file.text) {
                let name = &caps[1];
                let value = project
                    .secrets
                    .get(name)
                    .map_or_else(|_| "unknown".to_owned(), |v| sha256(v.as_bytes()));
                fingerprint.secrets.insert(name.to_owned(), value);
            }
        }
        for path in data_files {
            let display = crate::yaml::display_path(&project.root, &path);
            fingerprint.files.insert(display, hash_path(&path)?);
        }
        Ok(fingerprint)
    }

    /// The files of the run's tasks (run config, tasks, datasets, data) that differ here from
    /// what `self` recorded: `merge` recomputes metrics from these, so they must be the ones
    /// the shards ran. Models, adapters and variables are not compared: merging calls no model.
    pub fn task_file_changes(&self, config: &RunConfig, prepared: &[Prepared]) -> anyhow::Result<Vec<Change>> {
        let (sources, data_files) = task_sources(config, prepared);
        let mut here = BTreeMap::new();
        for file in &sources {
            here.insert(file.display.clone(), sha256(file.text.as_bytes()));
        }
        for path in data_files {
            here.insert(
                crate::yaml::display_path(&config.project.root, &path),
                hash_path(&path)?,
            );
        }
        let mut changes = Vec::new();
        for (name, hash) in &here {
            match self.files.get(name) {
                None => changes.push(Change(format!("file `{name}` was not part of the run"))),
                Some(recorded) if recorded != hash => changes.push(Change(format!("file `{name}` changed"))),
                Some(_) => {}
            }
        }
        Ok(changes)
    }

    /// The datasets of the prepared specifications (each once), with the content hashes this
    /// fingerprint holds for their data.
    pub fn datasets<'a>(
        &self,
        config: &RunConfig,
        prepared: impl IntoIterator<Item = &'a Prepared>,
    ) -> Vec<DatasetSummary> {
        let mut out: Vec<DatasetSummary> = Vec::new();
        for dataset in prepared.into_iter().flat_map(|p| p.datasets()) {
            if out.iter().any(|d| d.key == dataset.spec.key) {
                continue;
            }
            let path = match dataset.spec.effective_source() {
                Ok(SourceSpec::Local { file_path, .. }) => Some(dataset.base_dir.join(file_path)),
                Ok(SourceSpec::Folder { directory_path, .. }) => Some(dataset.base_dir.join(directory_path)),
                _ => None,
            };
            let path = path.map(|path| crate::yaml::display_path(&config.project.root, &path));
            out.push(DatasetSummary {
                key: dataset.spec.key.clone(),
                sha256: path.as_ref().and_then(|p| self.files.get(p)).cloned(),
                path,
            });
        }
        out
    }

    /// What changed from `self` (recorded) to `now`, one line per difference.
    pub fn changes(&self, now: &Fingerprint) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.lfeval_version != now.lfeval_version {
            changes.push(Change(format!(
                "lfeval changed from {} to {}",
                self.lfeval_version, now.lfeval_version
            )));
        }
        diff(&self.files, &now.files, "file", &mut changes);
        diff(&self.variables, &now.variables, "variable", &mut changes);
        diff(&self.secrets, &now.secrets, "secret", &mut changes);
        if self.flags != now.flags {
            changes.push(Change(format!(
                "flags changed from {} to {}",
                describe_flags(&self.flags),
                describe_flags(&now.flags)
            )));
        }
        changes
    }
}

/// The source files and data files of the run config and its task specifications.
fn task_sources(config: &RunConfig, prepared: &[Prepared]) -> (Vec<Arc<SourceFile>>, Vec<std::path::PathBuf>) {
    let mut sources: Vec<Arc<SourceFile>> = config.sources.clone();
    let mut data_files = Vec::new();
    for p in prepared {
        sources.extend(p.task.sources.iter().cloned());
        for dataset in p.datasets() {
            sources.extend(dataset.sources.iter().cloned());
            match dataset.spec.effective_source() {
                Ok(SourceSpec::Local { file_path, .. }) => data_files.push(dataset.base_dir.join(file_path)),
                Ok(SourceSpec::Folder { directory_path, .. }) => data_files.push(dataset.base_dir.join(directory_path)),
                // A dataset without a readable source fails when it is opened, with its own error.
                _ => {}
            }
        }
    }
    (sources, data_files)
}

fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>, what: &str, out: &mut Vec<Change>) {
    for (name, hash) in before {
        match after.get(name) {
            None => out.push(Change(format!("{what} `{name}` is no longer used"))),
            Some(h) if h != hash => out.push(Change(format!("{what} `{name}` changed"))),
            Some(_) => {}
        }
    }
    for name in after.keys().filter(|n| !before.contains_key(*n)) {
        out.push(Change(format!("{what} `{name}` is new to the run")));
    }
}

fn describe_flags(flags: &RunFlags) -> String {
    let mut parts = Vec::new();
    if flags.no_cache {
        parts.push("--no-cache".to_owned());
    }
    if flags.fail_fast {
        parts.push("--fail-fast".to_owned());
    }
    if let Some(n) = flags.max_errors {
        parts.push(format!("--max-errors {n}"));
    }
    if let Some(shard) = flags.shard {
        parts.push(format!("--shard {shard}"));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        format!("`{}`", parts.join(" "))
    }
}

/// SHA-256 of a file, or of a folder's files (relative names and contents, in name order).
fn hash_path(path: &Path) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    if path.is_dir() {
        let mut files = Vec::new();
        let mut pending = vec![path.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    pending.push(p);
                } else {
                    files.push(p);
                }
            }
        }
        files.sort();
        for file in files {
            hasher.update(file.strip_prefix(path).unwrap_or(&file).to_string_lossy().as_bytes());
            hasher.update([0]);
            stream_into(&file, &mut hasher)?;
        }
    } else {
        stream_into(path, &mut hasher)?;
    }
    Ok(hex::encode(hasher.finalize()))
}

fn stream_into(path: &Path, hasher: &mut Sha256) -> anyhow::Result<()> {
    let mut file = File::open(path).map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", path.display()))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(files: &[(&str, &str)], vars: &[(&str, &str)]) -> Fingerprint {
        Fingerprint {
            lfeval_version: "1.0.0".into(),
            files: files.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            variables: vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..Fingerprint::default()
        }
    }

    #[test]
    fn identical_fingerprints_have_no_changes() {
        let a = fingerprint(&[("run.yaml", "h1"), ("tasks/t.yaml", "h2")], &[("KEY", "v")]);
        assert!(a.changes(&a.clone()).is_empty());
    }

    #[test]
    fn every_changed_file_and_variable_is_named() {
        let before = fingerprint(
            &[("run.yaml", "h1"), ("tasks/t.yaml", "h2"), ("old.yaml", "h3")],
            &[("KEY", "v")],
        );
        let mut after = fingerprint(
            &[("run.yaml", "h1"), ("tasks/t.yaml", "CHANGED"), ("new.yaml", "h4")],
            &[("KEY", "w")],
        );
        after.flags.no_cache = true;
        after.lfeval_version = "1.1.0".into();
        let changes: Vec<String> = before.changes(&after).into_iter().map(|c| c.0).collect();
        assert_eq!(
            changes,
            vec![
                "lfeval changed from 1.0.0 to 1.1.0",
                "file `old.yaml` is no longer used",
                "file `tasks/t.yaml` changed",
                "file `new.yaml` is new to the run",
                "variable `KEY` changed",
                "flags changed from none to `--no-cache`",
            ]
        );
    }

    #[test]
    fn variable_and_secret_references_are_found_in_file_text() {
        let text = "url: ${BASE_URL:-http://x}/v1\nkey: $API_KEY\nsecret: << secrets.TOKEN >>\n";
        let vars: Vec<&str> = VARIABLE
            .captures_iter(text)
            .map(|c| c.get(1).or_else(|| c.get(2)).unwrap().as_str())
            .collect();
        assert_eq!(vars, vec!["BASE_URL", "API_KEY"]);
        assert_eq!(&SECRET.captures(text).unwrap()[1], "TOKEN");
    }

    #[test]
    fn a_folder_hash_follows_names_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one").unwrap();
        let first = hash_path(dir.path()).unwrap();
        std::fs::write(dir.path().join("a.txt"), "two").unwrap();
        let second = hash_path(dir.path()).unwrap();
        assert_ne!(first, second);
        std::fs::rename(dir.path().join("a.txt"), dir.path().join("b.txt")).unwrap();
        assert_ne!(hash_path(dir.path()).unwrap(), second);
    }
}
