//! The datasets or tasks a run can use, by key: those the run config defines (inline or by
//! `$ref`) and those found in the project's folders. A file found both ways is one entity, not a
//! duplicate. A folder file that fails to load is kept as an error under its key (or file name)
//! and only becomes the run's error if the run uses it; otherwise it is a warning, so one broken,
//! unrelated file never blocks a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diagnostic::Diagnostic;
use crate::project::LoadError;

#[derive(Debug, Clone)]
struct Entry<T> {
    value: T,
    /// Project-relative file shown in messages.
    file: String,
    /// The canonical path of the defining file, so that the same file reached twice is one entity.
    path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Entities<T> {
    kind: &'static str,
    /// Where users define this kind, for "unknown" hints.
    defined_in: &'static str,
    entries: BTreeMap<String, Entry<T>>,
    errors: Vec<LoadError>,
}

impl<T> Entities<T> {
    pub fn new(kind: &'static str, defined_in: &'static str) -> Entities<T> {
        Entities {
            kind,
            defined_in,
            entries: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.values().map(|e| &e.value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Adds an entity. The same file reached again is ignored; another file with the same key
    /// is a duplicate, an error for whoever uses that key (and for `explicit` definitions, the
    /// run config's own, at once).
    pub fn insert(&mut self, key: &str, value: T, file: &str, path: &Path, explicit: bool) -> Result<(), Diagnostic> {
        if let Some(existing) = self.entries.get(key) {
            if existing.path == path {
                return Ok(());
            }
            let d = Diagnostic::new(format!("duplicate {} key `{key}`", self.kind))
                .with_note(format!("`{key}` is defined in both `{}` and `{file}`", existing.file))
                .with_hint(format!("every {} needs its own key", self.kind));
            if explicit {
                return Err(d);
            }
            self.entries.remove(key);
            self.record(Some(key.to_owned()), file, d);
            return Ok(());
        }
        if self
            .errors
            .iter()
            .any(|e| e.key.as_deref() == Some(key) && e.diagnostic.message.starts_with("duplicate"))
        {
            return Ok(());
        }
        self.entries.insert(
            key.to_owned(),
            Entry {
                value,
                file: file.to_owned(),
                path: path.to_path_buf(),
            },
        );
        Ok(())
    }

    /// Keeps a file that failed to load.
    pub fn record(&mut self, key: Option<String>, file: &str, diagnostic: Diagnostic) {
        self.errors.push(LoadError {
            kind: self.kind,
            file: file.to_owned(),
            key,
            diagnostic,
        });
    }

    /// The entity under `key`, or why there is none: its file's error, or "unknown".
    pub fn get(&self, key: &str) -> Result<&T, Diagnostic> {
        if let Some(entry) = self.entries.get(key) {
            return Ok(&entry.value);
        }
        if let Some(err) = self.error_for(key) {
            return Err(err.diagnostic.clone());
        }
        Err(crate::project::unknown(
            self.kind,
            key,
            self.entries.keys(),
            self.defined_in,
        ))
    }

    /// The file that defined `key`.
    pub fn file(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|e| e.file.as_str())
    }

    fn error_for(&self, key: &str) -> Option<&LoadError> {
        self.errors.iter().find(|e| e.key.as_deref() == Some(key)).or_else(|| {
            self.errors.iter().find(|e| {
                e.key.is_none()
                    && Path::new(&e.file)
                        .file_stem()
                        .is_some_and(|stem| stem.to_string_lossy() == key)
            })
        })
    }

    /// Load errors of files nothing in `used` refers to: warnings, not errors.
    pub fn unused_errors<'a>(&'a self, used: &'a [String]) -> impl Iterator<Item = &'a LoadError> + 'a {
        self.errors.iter().filter(move |e| {
            !used.iter().any(|k| {
                e.key.as_deref() == Some(k.as_str())
                    || (e.key.is_none()
                        && Path::new(&e.file)
                            .file_stem()
                            .is_some_and(|stem| stem.to_string_lossy() == k.as_str()))
            })
        })
    }

    pub fn errors(&self) -> &[LoadError] {
        &self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_file_twice_is_one_entity_and_a_duplicate_blocks_only_its_key() {
        let mut e: Entities<u32> = Entities::new("task", "`tasks/`");
        e.insert("a", 1, "tasks/a.yaml", Path::new("/p/tasks/a.yaml"), false)
            .unwrap();
        e.insert("a", 1, "tasks/a.yaml", Path::new("/p/tasks/a.yaml"), true)
            .unwrap();
        assert_eq!(e.get("a").copied().unwrap(), 1);
        e.insert("b", 2, "tasks/b.yaml", Path::new("/p/tasks/b.yaml"), false)
            .unwrap();
        e.insert("b", 3, "tasks/c.yaml", Path::new("/p/tasks/c.yaml"), false)
            .unwrap();
        assert!(e.get("b").unwrap_err().message.contains("duplicate task key `b`"));
        assert!(e.insert("a", 9, "run.yaml", Path::new("/p/run.yaml"), true).is_err());
        e.record(None, "tasks/broken.yaml", Diagnostic::new("bad"));
        assert_eq!(e.get("broken").unwrap_err().message, "bad");
        assert_eq!(e.unused_errors(&["a".to_owned()]).count(), 2);
        assert_eq!(e.unused_errors(&["broken".to_owned(), "b".to_owned()]).count(), 0);
    }
}
