//! Rows of a folder source: one row per text file, sorted by relative path, with optional YAML
//! front matter.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use sha2::{Digest, Sha256};

use super::{DatasetError, Location, RawRow, Row, RowResult};

pub(super) struct FolderRows {
    files: std::vec::IntoIter<(String, PathBuf)>,
    index: usize,
}

impl FolderRows {
    pub(super) fn open(root: PathBuf, extension: Option<&str>) -> Result<Self, DatasetError> {
        let mut files = Vec::new();
        list_files(&root, "", &mut files)?;
        let wanted = extension.map(|e| format!(".{}", e.trim_start_matches('.').to_ascii_lowercase()));
        files.retain(|(rel, _)| {
            let lower = rel.to_ascii_lowercase();
            !lower.ends_with(".pdf") && wanted.as_ref().is_none_or(|ext| lower.ends_with(ext))
        });
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(FolderRows {
            files: files.into_iter(),
            index: 0,
        })
    }
}

pub(super) fn list_files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), DatasetError> {
    let open_error = |error| DatasetError::Open {
        path: dir.to_owned(),
        error,
    };
    for entry in std::fs::read_dir(dir).map_err(open_error)? {
        let entry = entry.map_err(open_error)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(DatasetError::Read {
                location: Location {
                    path: path.into(),
                    line: None,
                },
                message: "file name is not valid UTF-8".into(),
            });
        };
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}{name}");
        let file_type = entry.file_type().map_err(open_error)?;
        if file_type.is_dir() {
            list_files(&path, &format!("{rel}/"), out)?;
        } else if file_type.is_file() || (file_type.is_symlink() && std::fs::metadata(&path).is_ok_and(|m| m.is_file()))
        {
            out.push((rel, path));
        }
    }
    Ok(())
}

impl Iterator for FolderRows {
    type Item = RowResult;

    fn next(&mut self) -> Option<RowResult> {
        let (rel, path) = self.files.next()?;
        let index = self.index;
        self.index += 1;
        Some(folder_row(rel, path, index))
    }
}

pub(super) fn folder_row(rel: String, path: PathBuf, index: usize) -> RowResult {
    let bytes = std::fs::read(&path).map_err(|error| DatasetError::Open {
        path: path.clone(),
        error,
    })?;
    let sample_id = hex::encode(Sha256::digest(&bytes));
    let text = String::from_utf8(bytes).map_err(|_| DatasetError::NotUtf8 { path: path.clone() })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let (front, content) = match split_front_matter(text) {
        Some((yaml, content)) => (parse_front_matter(yaml, &path)?, content),
        None => (Map::new(), text),
    };
    let mut row = Row::new();
    row.insert("sample_id".into(), Value::String(sample_id));
    row.insert("file_name".into(), Value::String(rel));
    row.insert("content".into(), Value::String(content.to_owned()));
    for (key, value) in front {
        if !row.contains_key(&key) {
            row.insert(key, value);
        }
    }
    Ok(RawRow {
        location: Location {
            path: path.into(),
            line: None,
        },
        index,
        row,
    })
}

/// Splits `---\n<yaml>---\n<content>`; `None` when the text has no complete front matter.
pub(super) fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let first_end = text.find('\n')?;
    if text[..first_end].trim_end() != "---" {
        return None;
    }
    let body = &text[first_end + 1..];
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&body[..offset], &body[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

pub(super) fn parse_front_matter(yaml: &str, path: &Path) -> Result<Map<String, Value>, DatasetError> {
    if yaml.trim().is_empty() {
        return Ok(Map::new());
    }
    // The leading newline makes YAML error lines match the file's lines (front matter starts
    // on line 2). Strict booleans: the YAML 1.1 set here also includes `y`/`n`, which would
    // turn `tags: [x, y]` into `["x", true]`.
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options::<Map<String, Value>>(&format!("\n{yaml}"), options).map_err(|err| {
        DatasetError::FrontMatter {
            path: path.to_owned(),
            message: err.to_string(),
        }
    })
}
