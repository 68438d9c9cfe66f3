//! The response cache: one SQLite file mapping a request to the response a model gave it, so
//! that rerunning an evaluation does not query the model again.
//!
//! An entry's key is a hash of the model's effective configuration (its fingerprint) and the
//! rendered request body: change either and the old entry no longer matches. What is stored is
//! masked with [`crate::redact::redact`] first, since a response can echo a credential back.
//! The file uses WAL mode and a busy timeout, so several lfeval processes can share it.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::model::Connection as ModelConnection;
use crate::redact::redact;

/// Layout of the tables below; bump it (and migrate) when they change.
const SCHEMA_VERSION: i64 = 1;

/// Folded into every key, so that changing how keys are built invalidates old entries rather
/// than matching them by accident.
const KEY_DOMAIN: &str = "lfeval-response-cache-v1";

/// How long a writer waits for another process holding the database before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// `cache_policy` of an evaluation: `reuse` (default), `update` or `no-cache`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CachePolicy {
    /// Answer from the cache when possible and store new responses.
    #[default]
    Reuse,
    /// Always query the model, and store what it says (refreshes stale entries).
    Update,
    /// Neither read nor write the cache.
    NoCache,
}

impl CachePolicy {
    pub fn reads(self) -> bool {
        matches!(self, CachePolicy::Reuse)
    }

    pub fn writes(self) -> bool {
        matches!(self, CachePolicy::Reuse | CachePolicy::Update)
    }
}

/// A model response as it is cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    pub status_code: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Output the call printed (e.g. a snippet's stdout/stderr), replayed with the response.
    pub captured: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot create the directory of cache `{}`: {error}", path.display())]
    CreateDir { path: PathBuf, error: std::io::Error },
    #[error("cache `{}`: {error}", path.display())]
    Sqlite { path: PathBuf, error: rusqlite::Error },
    #[error(
        "cache `{}` has schema version {found}, newer than this lfeval understands ({SCHEMA_VERSION}); hint: upgrade lfeval, or delete the file to start an empty cache",
        path.display()
    )]
    NewerSchema { path: PathBuf, found: i64 },
    #[error(
        "cache `{}` has a corrupt entry `{key}`: {message}; hint: delete the file to start an empty cache",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// An open response cache; share it behind an `Arc` (calls are serialized on one connection).
#[derive(Debug)]
pub struct ResponseCache {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl ResponseCache {
    /// Opens (creating if needed) the cache at `path`, including its parent directories.
    pub fn open(path: &Path) -> Result<ResponseCache, CacheError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| CacheError::CreateDir {
                path: path.to_path_buf(),
                error,
            })?;
        }
        let sqlite = |error| CacheError::Sqlite {
            path: path.to_path_buf(),
            error,
        };
        let mut connection = Connection::open(path).map_err(sqlite)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        // WAL lets readers and one writer work at once; with it, `NORMAL` sync loses at most
        // the last commits on power loss, never the database, which suits a cache.
        let _mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(sqlite)?;
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;

        // `IMMEDIATE` takes the write lock up front, so two processes opening a fresh file at
        // once do not both try to create the schema.
        let tx = connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sqlite)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS responses (
                 key TEXT PRIMARY KEY NOT NULL,
                 model_key TEXT NOT NULL,
                 status_code INTEGER NOT NULL,
                 headers TEXT NOT NULL,
                 body TEXT NOT NULL,
                 captured TEXT NOT NULL,
                 created_at TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS responses_model_key ON responses (model_key);",
        )
        .map_err(sqlite)?;
        let found: Option<i64> = tx
            .query_row("SELECT MAX(version) FROM schema_version", [], |row| row.get(0))
            .map_err(sqlite)?;
        match found {
            None => {
                tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [SCHEMA_VERSION])
                    .map_err(sqlite)?;
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(CacheError::NewerSchema {
                    path: path.to_path_buf(),
                    found,
                });
            }
            Some(_) => {}
        }
        tx.commit().map_err(sqlite)?;
        Ok(ResponseCache {
            path: path.to_path_buf(),
            connection: Mutex::new(connection),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cache key: SHA-256 (hex) over the fingerprint and the body, each prefixed with its
    /// length so that no two different pairs can produce the same byte string.
    pub fn key(model_fingerprint: &str, request_body: &str) -> String {
        let mut hasher = Sha256::new();
        for part in [KEY_DOMAIN, model_fingerprint, request_body] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    pub fn get(&self, key: &str) -> Result<Option<CachedResponse>, CacheError> {
        let connection = self.lock();
        let row = connection
            .query_row(
                "SELECT status_code, headers, body, captured FROM responses WHERE key = ?1",
                [key],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(|error| self.sqlite(error))?;
        let Some((status_code, headers, body, captured)) = row else {
            return Ok(None);
        };
        let corrupt = |message: String| CacheError::Corrupt {
            path: self.path.clone(),
            key: key.to_owned(),
            message,
        };
        let status_code =
            u16::try_from(status_code).map_err(|_| corrupt(format!("status code {status_code} is out of range")))?;
        let headers: Vec<(String, String)> =
            serde_json::from_str(&headers).map_err(|e| corrupt(format!("headers are not a list of pairs: {e}")))?;
        Ok(Some(CachedResponse {
            status_code,
            headers,
            body,
            captured,
        }))
    }

    /// Stores (or replaces) the response for `key`, masking secrets in everything stored.
    pub fn put(&self, key: &str, model_key: &str, response: &CachedResponse) -> Result<(), CacheError> {
        let headers: Vec<(Cow<'_, str>, Cow<'_, str>)> = response
            .headers
            .iter()
            .map(|(name, value)| (redact(name), redact(value)))
            .collect();
        // A list of string pairs always serializes; the fallback only keeps this panic-free.
        let headers = serde_json::to_string(&headers).unwrap_or_else(|_| "[]".to_owned());
        // The pairs are masked one by one above; this pass catches a secret that spans the
        // JSON syntax, and if masking it breaks the list, the headers are dropped rather than
        // stored with the secret.
        let headers = match redact(&headers) {
            Cow::Borrowed(_) => headers,
            Cow::Owned(masked) if serde_json::from_str::<Vec<(String, String)>>(&masked).is_ok() => masked,
            Cow::Owned(_) => "[]".to_owned(),
        };
        let created_at = jiff::Timestamp::now().to_string();
        let connection = self.lock();
        connection
            .execute(
                "INSERT INTO responses
                     (key, model_key, status_code, headers, body, captured, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (key) DO UPDATE SET
                     model_key = excluded.model_key,
                     status_code = excluded.status_code,
                     headers = excluded.headers,
                     body = excluded.body,
                     captured = excluded.captured,
                     created_at = excluded.created_at",
                params![
                    key,
                    redact(model_key),
                    response.status_code,
                    headers,
                    redact(&response.body),
                    redact(&response.captured),
                    created_at,
                ],
            )
            .map_err(|error| self.sqlite(error))?;
        Ok(())
    }

    /// `(entries, bytes)`: the number of cached responses and the UTF-8 size of their stored
    /// headers, bodies and captured output (not the size of the file, which includes indexes
    /// and free pages).
    pub fn stats(&self) -> Result<(u64, u64), CacheError> {
        let connection = self.lock();
        let (entries, bytes): (i64, i64) = connection
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(
                     LENGTH(CAST(headers AS BLOB)) + LENGTH(CAST(body AS BLOB))
                     + LENGTH(CAST(captured AS BLOB))), 0)
                 FROM responses",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(|error| self.sqlite(error))?;
        // COUNT and SUM of lengths are never negative.
        Ok((entries.max(0) as u64, bytes.max(0) as u64))
    }

    /// A panic elsewhere while the lock was held cannot leave the connection half-way through
    /// a statement (rusqlite resets statements on drop), so a poisoned lock is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sqlite(&self, error: rusqlite::Error) -> CacheError {
        CacheError::Sqlite {
            path: self.path.clone(),
            error,
        }
    }
}

/// A model's view of the response cache.
pub struct CacheHandle {
    pub cache: Arc<ResponseCache>,
    pub policy: CachePolicy,
    /// Identifies the model's effective configuration (see [`fingerprint`]).
    pub fingerprint: String,
}

impl CacheHandle {
    /// SQLite calls block, so they run on the blocking pool, never on a runtime worker. A cache
    /// that cannot be read is treated as a miss: the call is made instead.
    pub async fn lookup(&self, key: &str) -> Option<CachedResponse> {
        let (cache, key) = (Arc::clone(&self.cache), key.to_owned());
        tokio::task::spawn_blocking(move || cache.get(&key)).await.ok()?.ok()?
    }

    pub async fn store(&self, key: &str, model_key: &str, response: CachedResponse) {
        let (cache, key, model_key) = (Arc::clone(&self.cache), key.to_owned(), model_key.to_owned());
        let _ = tokio::task::spawn_blocking(move || cache.put(&key, &model_key, &response)).await;
    }
}

/// What identifies a model's responses in the cache: everything that changes what the endpoint
/// would answer for the same request body, with variables and secrets resolved (the fingerprint
/// is only ever hashed, never stored).
pub fn fingerprint(
    model: &crate::model::Model,
    adapter: &crate::model::adapter::Adapter,
    secrets: &crate::secrets::Secrets,
) -> String {
    let resolved: Vec<Value> = model
        .deferred_values()
        .into_iter()
        .map(|v| json!([v.path, v.resolve(secrets, true).unwrap_or(Value::Null)]))
        .collect();
    let connection = match &model.connection {
        ModelConnection::CustomInference(c) => json!({"type": "custom_inference", "snippet": c.snippet.text}),
        ModelConnection::CustomConnection(c) => {
            json!({"type": "custom_connection", "model_key": c.model_key.as_ref().map(|v| &v.value)})
        }
    };
    json!({
        "model": model.key,
        "task": model.task.as_str(),
        "connection": connection,
        "values": resolved,
        "adapter_input": adapter.process_input.text,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &str) -> CachedResponse {
        CachedResponse {
            status_code: 200,
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-request-id".to_owned(), "r-1".to_owned()),
            ],
            body: body.to_owned(),
            captured: "printed by the snippet\n".to_owned(),
        }
    }

    #[test]
    fn put_get_and_miss() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ResponseCache::open(&tmp.path().join("nested/dir/cache.sqlite")).unwrap();
        let key = ResponseCache::key("model-fp", "{\"prompt\":\"hi\"}");
        assert_eq!(cache.get(&key).unwrap(), None);
        assert_eq!(cache.stats().unwrap(), (0, 0));

        let first = response("{\"answer\":\"hello\"}");
        cache.put(&key, "my-model", &first).unwrap();
        assert_eq!(cache.get(&key).unwrap(), Some(first));
        assert_eq!(cache.get(&ResponseCache::key("model-fp", "other")).unwrap(), None);

        // Upsert: the newer response replaces the older one.
        let second = CachedResponse {
            status_code: 429,
            headers: vec![],
            body: "ünïcode".to_owned(),
            captured: String::new(),
        };
        cache.put(&key, "my-model", &second).unwrap();
        assert_eq!(cache.get(&key).unwrap(), Some(second));
        // "[]" + 9 UTF-8 bytes of "ünïcode".
        assert_eq!(cache.stats().unwrap(), (1, 2 + 9));
    }

    #[test]
    fn policy_flags_and_yaml_spelling() {
        assert!(CachePolicy::Reuse.reads() && CachePolicy::Reuse.writes());
        assert!(!CachePolicy::Update.reads() && CachePolicy::Update.writes());
        assert!(!CachePolicy::NoCache.reads() && !CachePolicy::NoCache.writes());
        assert_eq!(CachePolicy::default(), CachePolicy::Reuse);
        let parse = |s: &str| serde_json::from_value::<CachePolicy>(serde_json::json!(s));
        assert_eq!(parse("reuse").unwrap(), CachePolicy::Reuse);
        assert_eq!(parse("update").unwrap(), CachePolicy::Update);
        assert_eq!(parse("no-cache").unwrap(), CachePolicy::NoCache);
        assert!(parse("no_cache").is_err());
    }

    #[test]
    fn keys_are_stable_and_separate_their_inputs() {
        let key = ResponseCache::key("fp", "body");
        assert_eq!(key, ResponseCache::key("fp", "body"));
        assert_eq!(key.len(), 64);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(key, ResponseCache::key("fp", "body "));
        assert_ne!(key, ResponseCache::key("fp2", "body"));
        // Without the length prefixes these two would hash the same bytes.
        assert_ne!(ResponseCache::key("ab", "c"), ResponseCache::key("a", "bc"));
        // Pinned: a change here silently invalidates every user's cache.
        assert_eq!(
            key,
            hex::encode(Sha256::digest(
                [
                    &(KEY_DOMAIN.len() as u64).to_le_bytes()[..],
                    KEY_DOMAIN.as_bytes(),
                    &2u64.to_le_bytes(),
                    b"fp",
                    &4u64.to_le_bytes(),
                    b"body",
                ]
                .concat()
            ))
        );
    }

    #[test]
    fn entries_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("cache.sqlite");
        let key = ResponseCache::key("fp", "body");
        {
            let cache = ResponseCache::open(&path).unwrap();
            cache.put(&key, "m", &response("kept")).unwrap();
        }
        let cache = ResponseCache::open(&path).unwrap();
        assert_eq!(cache.get(&key).unwrap(), Some(response("kept")));
        assert_eq!(cache.stats().unwrap().0, 1);
        drop(cache);
        let raw = Connection::open(&path).unwrap();
        let versions: Vec<i64> = raw
            .prepare("SELECT version FROM schema_version")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(versions, vec![SCHEMA_VERSION]);
        let mode: String = raw.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn newer_schemas_and_corrupt_rows_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("cache.sqlite");
        let cache = ResponseCache::open(&path).unwrap();
        {
            let raw = Connection::open(&path).unwrap();
            raw.execute(
                "INSERT INTO responses VALUES ('k', 'm', 70000, '[]', '', '', 'now')",
                [],
            )
            .unwrap();
            raw.execute(
                "INSERT INTO responses VALUES ('h', 'm', 200, '{\"a\":1}', '', '', 'now')",
                [],
            )
            .unwrap();
            raw.execute("UPDATE schema_version SET version = 99", []).unwrap();
        }
        assert!(matches!(cache.get("k"), Err(CacheError::Corrupt { .. })));
        assert!(matches!(cache.get("h"), Err(CacheError::Corrupt { .. })));
        drop(cache);
        match ResponseCache::open(&path) {
            Err(CacheError::NewerSchema { found, .. }) => assert_eq!(found, 99),
            other => panic!("expected a newer schema, got {other:?}"),
        }
    }

    #[test]
    fn a_registered_secret_never_reaches_the_cache_file() {
        crate::redact::register("sk-canary-XYZ123", "<<secrets.CANARY>>");
        let tmp = tempfile::tempdir().unwrap();
        let cache = ResponseCache::open(&tmp.path().join("cache.sqlite")).unwrap();
        let key = ResponseCache::key("fp", "body");
        let leaky = CachedResponse {
            status_code: 401,
            headers: vec![("x-echo-key".to_owned(), "sk-canary-XYZ123".to_owned())],
            body: "{\"error\":\"bad key sk-canary-XYZ123\"}".to_owned(),
            captured: "using sk-canary-XYZ123\n".to_owned(),
        };
        cache.put(&key, "model-sk-canary-XYZ123", &leaky).unwrap();
        let stored = cache.get(&key).unwrap().unwrap();
        assert_eq!(stored.body, "{\"error\":\"bad key <<secrets.CANARY>>\"}");
        assert_eq!(
            stored.headers,
            vec![("x-echo-key".to_owned(), "<<secrets.CANARY>>".to_owned())]
        );
        assert_eq!(stored.captured, "using <<secrets.CANARY>>\n");
        drop(cache);

        // Database, WAL and shared-memory files alike.
        let mut files = 0;
        for entry in std::fs::read_dir(tmp.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            files += 1;
            assert!(!bytes.windows(16).any(|w| w == b"sk-canary-XYZ123"));
        }
        assert!(files >= 1);
    }
}
