//! Writing JSON into the run directory: every value masked before it is serialised and the
//! text masked once more, whole files replaced atomically, and the directory's lock.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::redact::redact;

use super::{ResultsError, SAMPLES_FILE};

pub(super) fn path_value(path: &Path) -> Result<Value, ResultsError> {
    path.to_str().map(Value::from).ok_or_else(|| ResultsError::NonUtf8Path {
        path: path.to_path_buf(),
    })
}

/// Masks secrets in every string and object key, and in numbers whose text contains one
/// (those become strings: the mask is not a number).
pub(super) fn redact_value(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(redact(s).into_owned()),
        Value::Number(n) => {
            let text = n.to_string();
            match redact(&text) {
                std::borrow::Cow::Borrowed(_) => value.clone(),
                std::borrow::Cow::Owned(masked) => Value::String(masked),
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(redact_value).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (redact(k).into_owned(), redact_value(v)))
                .collect(),
        ),
        Value::Null | Value::Bool(_) => value.clone(),
    }
}

/// Serializes with every secret masked. The text pass catches what the value pass cannot
/// (a secret spanning JSON syntax); if masking that breaks the JSON, nothing is written.
pub(super) fn render(value: &Value, pretty: bool, what: &str) -> Result<String, ResultsError> {
    let masked = redact_value(value);
    let serialized = if pretty {
        serde_json::to_string_pretty(&masked)
    } else {
        serde_json::to_string(&masked)
    }
    .map_err(|e| ResultsError::Serialize {
        what: what.to_owned(),
        message: e.to_string(),
    })?;
    match redact(&serialized) {
        std::borrow::Cow::Borrowed(_) => Ok(serialized),
        std::borrow::Cow::Owned(text) => {
            if serde_json::from_str::<Value>(&text).is_ok() {
                Ok(text)
            } else {
                Err(ResultsError::Unredactable { what: what.to_owned() })
            }
        }
    }
}

/// Pretty JSON text of a whole file, masked, with a final newline.
pub(super) fn render_file(value: &Value, target: &Path) -> Result<String, ResultsError> {
    let mut text = render(value, true, &target.display().to_string())?;
    text.push('\n');
    Ok(text)
}

/// Writes `value` as pretty JSON to `target` through [`write_text_atomic`].
pub(super) fn write_atomic(target: &Path, value: &Value) -> Result<(), ResultsError> {
    write_text_atomic(target, &render_file(value, target)?)
}

/// Writes `text` to a temporary sibling of `target`, syncs it and renames it over `target`:
/// readers (and a crash) see the old file or the new one, never a mix.
pub(super) fn write_text_atomic(target: &Path, text: &str) -> Result<(), ResultsError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(ResultsError::InvalidRelativePath {
            relative: target.display().to_string(),
        });
    };
    fs::create_dir_all(parent).map_err(|e| ResultsError::io("create directory", parent, e))?;
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.{unique}.tmp", std::process::id()));
    let temp = parent.join(temp_name);
    let result = (|| {
        let mut file = File::create(&temp).map_err(|e| ResultsError::io("create", &temp, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| ResultsError::io("write", &temp, e))?;
        fs::rename(&temp, target).map_err(|e| ResultsError::io("replace", target, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    // Makes the rename itself durable; not every platform can open a directory for this.
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

pub(super) fn lock(file: &File, dir: &Path) -> Result<(), ResultsError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(fs::TryLockError::WouldBlock) => Err(ResultsError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(error)) => Err(ResultsError::io("lock", &dir.join(SAMPLES_FILE), error)),
    }
}

pub(super) fn file_len(file: &File, path: &Path) -> Result<u64, ResultsError> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| ResultsError::io("read metadata of", path, e))
}
