//! Writing JSON into the run directory: every string masked as it is serialised and the text
//! masked once more, whole files replaced atomically, and the directory's lock.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;

use crate::redact::{Masked, redact};

use super::{ResultsError, SAMPLES_FILE};

pub(super) fn path_value(path: &Path) -> Result<Value, ResultsError> {
    path.to_str().map(Value::from).ok_or_else(|| ResultsError::NonUtf8Path {
        path: path.to_path_buf(),
    })
}

/// Serializes with every secret masked: strings as they are written ([`Masked`]), then the
/// text once more, which catches what the value pass cannot (a secret spanning JSON syntax);
/// if masking that breaks the JSON, nothing is written.
pub(super) fn render(value: &impl Serialize, pretty: bool, what: &str) -> Result<String, ResultsError> {
    let serialized = if pretty {
        serde_json::to_string_pretty(&Masked(value))
    } else {
        serde_json::to_string(&Masked(value))
    }
    .map_err(|e| ResultsError::Serialize {
        what: what.to_owned(),
        message: e.to_string(),
    })?;
    match redact(&serialized) {
        std::borrow::Cow::Borrowed(_) => Ok(serialized),
        std::borrow::Cow::Owned(text) => {
            if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
                Ok(text)
            } else {
                Err(ResultsError::Unredactable { what: what.to_owned() })
            }
        }
    }
}

/// Pretty JSON text of a whole file, masked, with a final newline.
pub(super) fn render_file(value: &impl Serialize, target: &Path) -> Result<String, ResultsError> {
    let mut text = render(value, true, &target.display().to_string())?;
    text.push('\n');
    Ok(text)
}

/// Writes `value` as pretty JSON to `target` through [`write_text_atomic`].
pub(super) fn write_atomic(target: &Path, value: &impl Serialize) -> Result<(), ResultsError> {
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
