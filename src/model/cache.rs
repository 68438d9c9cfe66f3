//! The response cache: one SQLite file mapping a request to the response a model gave it, so
//! that rerunning an evaluation does not query the model again.
//!
//! An entry's key is a hash of the model's effective configuration (its fingerprint) and the
//! rendered request body: change either and the old entry no longer matches. What is stored is
//! masked with [`crate::redact::redact`] first, since a response can echo a credential back.
//! The file uses WAL mode and a busy timeout, so several lfeval processes can share it.
//!
//! Speed: a run looks up and stores once per call, so neither may cost a transaction or a
//! thread hand-off each. Lookups use a cached prepared statement on their own connection (WAL
//! readers never wait for the writer), inside one read transaction kept open from lookup to
//! lookup until the writer next commits (or a second has passed): beginning a transaction takes
//! file locks, which cost more than the lookup itself. Stores go to one writer thread that
//! commits them in batches, and until a batch is committed its entries answer lookups from
//! memory. The writer is woken once per batch, not per store. The first lookup loads the keys of every entry (64
//! bits of each, up to [`FILTER_MAX`] entries) into a Bloom filter, so that a request the cache
//! has never seen (every request of a first run) costs a few bit probes instead of a read
//! transaction; a false positive (about 1 in 100) only reads. Entries another process adds
//! meanwhile are not seen by this one until it next starts.
//!
//! A request identical to one in flight waits for that one's answer ([`CacheHandle::lookup_or_claim`])
//! rather than asking the model again; if that call fails, the next waiter asks.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use growable_bloom_filter::GrowableBloom;
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

/// The most entries one write transaction commits.
const BATCH: usize = 512;

/// The most stores that wait for the writer at once (of [`CacheHandle::store`]): past them a
/// store waits for room, so a disk slower than the model holds the run back instead of the
/// queue growing without end.
const QUEUE_LIMIT: usize = 4 * BATCH;

/// How long the writer waits for more entries before committing what it has.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// WAL pages after which the writer checkpoints (see [`ResponseCache::open`]).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// The longest a lookup snapshot is kept, so that a long run sees what other processes added.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(1);

/// The most entries whose keys are loaded into the filter; past it every lookup reads.
const FILTER_MAX: usize = 1 << 20;

/// How often the filter says a key is there when it is not (then the lookup reads). A set of
/// the keys' 64 bits took ~12 bytes a key; the filter takes under 2.
const FILTER_FALSE_POSITIVES: f64 = 0.01;

const SELECT: &str = "SELECT status_code, headers, body, captured FROM responses WHERE key = ?1";

const UPSERT: &str = "INSERT INTO responses
         (key, model_key, status_code, headers, body, captured, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT (key) DO UPDATE SET
         model_key = excluded.model_key,
         status_code = excluded.status_code,
         headers = excluded.headers,
         body = excluded.body,
         captured = excluded.captured,
         created_at = excluded.created_at";

/// `cache_policy` of an evaluation: `reuse` (default), `update` or `no-cache`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
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
    #[error("cache `{}` is closed", path.display())]
    Closed { path: PathBuf },
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

/// An open response cache; share it behind an `Arc`. Dropping it commits every stored entry.
#[derive(Debug)]
pub struct ResponseCache {
    path: PathBuf,
    /// For lookups and statistics.
    reader: Mutex<Reader>,
    /// How many batches the writer has committed: a read snapshot older than the last commit
    /// would miss what that commit took out of `pending`.
    commits: Arc<AtomicU64>,
    /// Entries stored but not committed yet, by key (already masked), with the number of the
    /// store that put them there: a commit clears an entry only if no later store replaced it.
    pending: Arc<Mutex<Pending>>,
    stores: AtomicU64,
    queue: Arc<Queue>,
    /// Room in the queue, [`QUEUE_LIMIT`] stores' worth: a permit rides with its store and is
    /// given back once the writer has committed it.
    room: Arc<tokio::sync::Semaphore>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The first 64 bits of every key known to exist, loaded by the first lookup or store;
    /// `None` inside when the file holds more than [`FILTER_MAX`] entries.
    known: OnceLock<Option<Mutex<GrowableBloom>>>,
    /// The first error the writer met (the cache is best effort; [`ResponseCache::finish`]
    /// reports it).
    failed: Arc<Mutex<Option<CacheError>>>,
}

/// The lookup connection and the read transaction it keeps open between lookups.
#[derive(Debug)]
struct Reader {
    connection: Connection,
    /// When the open snapshot began and how many commits it has seen; `None` when none is open.
    snapshot: Option<(Instant, u64)>,
}

impl Reader {
    /// The connection inside a read transaction that sees every commit up to `commits`.
    fn current(&mut self, commits: u64) -> rusqlite::Result<&Connection> {
        let stale = self
            .snapshot
            .is_some_and(|(began, seen)| seen != commits || began.elapsed() > SNAPSHOT_MAX_AGE);
        if stale {
            self.end();
        }
        if self.snapshot.is_none() {
            // Deferred: the snapshot is taken by the first read and lasts until `end`.
            self.connection.execute_batch("BEGIN")?;
            self.snapshot = Some((Instant::now(), commits));
        }
        Ok(&self.connection)
    }

    /// Ends the open snapshot, if any; the next read sees the file as it is now.
    fn end(&mut self) -> &Connection {
        if self.snapshot.take().is_some() && !self.connection.is_autocommit() {
            // A read transaction has nothing to lose: should the rollback fail, the next
            // `BEGIN` fails and reports it.
            let _ = self.connection.execute_batch("ROLLBACK");
        }
        &self.connection
    }
}

/// Rows sent to the writer and not committed yet, by key: `(store number, row)`.
type Pending = HashMap<String, (u64, Arc<Row>)>;

/// One masked entry, as stored (its `created_at` is the time of the batch that commits it).
#[derive(Debug)]
struct Row {
    model_key: String,
    status_code: u16,
    headers: String,
    body: String,
    captured: String,
}

/// What the writer thread has still to do.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    messages: Vec<Message>,
    /// Set by [`ResponseCache::finish`]: the writer commits what is left and stops.
    closed: bool,
}

impl Queue {
    /// Adds a message, waking the writer only when it has something new to wait for: the
    /// first message of a batch, a full batch, or a flush.
    fn push(&self, message: Message) -> bool {
        let mut state = lock(&self.state);
        if state.closed {
            return false;
        }
        let urgent = matches!(message, Message::Flush(_));
        state.messages.push(message);
        let wake = urgent || state.messages.len() == 1 || state.messages.len() >= BATCH;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_one();
    }

    /// The next batch: blocks until there is a message, then gathers whatever arrives within
    /// the window. `None` once closed and drained.
    fn next_batch(&self) -> Option<Vec<Message>> {
        let mut state = lock(&self.state);
        while state.messages.is_empty() && !state.closed {
            state = self.ready.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if state.messages.is_empty() {
            return None;
        }
        let settled = |s: &QueueState| {
            s.closed || s.messages.len() >= BATCH || s.messages.iter().any(|m| matches!(m, Message::Flush(_)))
        };
        if !settled(&state) {
            state = self
                .ready
                .wait_timeout_while(state, BATCH_WINDOW, |s| !settled(s))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Some(std::mem::take(&mut state.messages))
    }
}

#[derive(Debug)]
enum Message {
    Store {
        key: String,
        row: Arc<Row>,
        number: u64,
        room: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    /// Answered once everything sent before it is committed.
    Flush(mpsc::Sender<()>),
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
        let mut connection = connect(path).map_err(sqlite)?;

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
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let failed = Arc::new(Mutex::new(None));
        let queue = Arc::new(Queue::default());
        let writer_connection = connect(path).map_err(sqlite)?;
        // Checkpointing copies every page the WAL holds back into the file (and syncs it); at the
        // default 1,000 pages a run of random keys copies the same index pages again and again.
        // Every 16,384 pages (64 MiB at most) the writer does it a few times a run instead.
        writer_connection
            .pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .map_err(sqlite)?;
        let commits = Arc::new(AtomicU64::new(0));
        let writer = start_writer(writer_connection, path, &queue, &pending, &commits, &failed);
        Ok(ResponseCache {
            path: path.to_path_buf(),
            reader: Mutex::new(Reader {
                connection,
                snapshot: None,
            }),
            commits,
            pending,
            stores: AtomicU64::new(0),
            queue,
            room: Arc::new(tokio::sync::Semaphore::new(QUEUE_LIMIT)),
            writer: Mutex::new(Some(writer)),
            known: OnceLock::new(),
            failed,
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
        if let Some((_, row)) = lock(&self.pending).get(key) {
            return self.decode(
                key,
                i64::from(row.status_code),
                &row.headers,
                row.body.clone(),
                row.captured.clone(),
            );
        }
        if let Some(known) = self.known()
            && !lock(known).contains(key_bits(key))
        {
            return Ok(None);
        }
        // Read after `pending`: a commit counts itself before it clears its entries there.
        let commits = self.commits.load(Ordering::Acquire);
        let mut reader = self.lock();
        let row = reader
            .current(commits)
            .and_then(|connection| connection.prepare_cached(SELECT))
            .and_then(|mut statement| {
                statement
                    .query_row([key], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, String>(3)?,
                        ))
                    })
                    .optional()
            })
            .map_err(|error| self.sqlite(error))?;
        drop(reader);
        let Some((status_code, headers, body, captured)) = row else {
            return Ok(None);
        };
        self.decode(key, status_code, &headers, body, captured)
    }

    fn decode(
        &self,
        key: &str,
        status_code: i64,
        headers: &str,
        body: String,
        captured: String,
    ) -> Result<Option<CachedResponse>, CacheError> {
        let corrupt = |message: String| CacheError::Corrupt {
            path: self.path.clone(),
            key: key.to_owned(),
            message,
        };
        let status_code =
            u16::try_from(status_code).map_err(|_| corrupt(format!("status code {status_code} is out of range")))?;
        let headers: Vec<(String, String)> =
            serde_json::from_str(headers).map_err(|e| corrupt(format!("headers are not a list of pairs: {e}")))?;
        Ok(Some(CachedResponse {
            status_code,
            headers,
            body,
            captured,
        }))
    }

    /// Stores (or replaces) the response for `key`, masking secrets in everything stored; never
    /// waits.
    pub fn put(&self, key: &str, model_key: &str, response: &CachedResponse) -> Result<(), CacheError> {
        self.enqueue(key, model_key, response, None)
    }

    /// Like [`ResponseCache::put`], once the queue has room.
    pub async fn put_when_room(&self, key: &str, model_key: &str, response: &CachedResponse) -> Result<(), CacheError> {
        // The semaphore is never closed; were it, the store would go ahead without a permit.
        let room = Arc::clone(&self.room).acquire_owned().await.ok();
        self.enqueue(key, model_key, response, room)
    }

    fn enqueue(
        &self,
        key: &str,
        model_key: &str,
        response: &CachedResponse,
        room: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<(), CacheError> {
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
        let row = Arc::new(Row {
            model_key: redact(model_key).into_owned(),
            status_code: response.status_code,
            headers,
            body: redact(&response.body).into_owned(),
            captured: redact(&response.captured).into_owned(),
        });
        if let Some(known) = self.known() {
            lock(known).insert(key_bits(key));
        }
        let number = self.stores.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(key.to_owned(), (number, Arc::clone(&row)));
        self.send(Message::Store {
            key: key.to_owned(),
            row,
            number,
            room,
        })
    }

    /// Waits until everything stored so far is committed.
    pub fn flush(&self) -> Result<(), CacheError> {
        let (done, wait) = mpsc::channel();
        self.send(Message::Flush(done))?;
        let _ = wait.recv();
        Ok(())
    }

    fn send(&self, message: Message) -> Result<(), CacheError> {
        if self.queue.push(message) {
            Ok(())
        } else {
            Err(CacheError::Closed {
                path: self.path.clone(),
            })
        }
    }

    /// Commits every stored entry and stops the writer; reports the first write that failed.
    /// Later stores fail with [`CacheError::Closed`].
    pub fn finish(&self) -> Result<(), CacheError> {
        // An open snapshot would keep the writer's last checkpoint from emptying the WAL.
        self.lock().end();
        if let Some(writer) = lock(&self.writer).take() {
            self.queue.close();
            let _ = writer.join();
        }
        match lock(&self.failed).take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// `(entries, bytes)`: the number of committed responses and the UTF-8 size of their
    /// stored headers, bodies and captured output (not the size of the file, which includes
    /// indexes and free pages).
    pub fn stats(&self) -> Result<(u64, u64), CacheError> {
        let mut reader = self.lock();
        let (entries, bytes): (i64, i64) = reader
            .end()
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

    /// The keys known to exist, loaded on first use. A file that
    /// cannot be read this way gets no filter: lookups then read, as they would without one.
    fn known(&self) -> Option<&Mutex<GrowableBloom>> {
        self.known
            .get_or_init(|| {
                let mut reader = self.lock();
                let mut statement = reader
                    .end()
                    .prepare("SELECT substr(key, 1, 16) FROM responses LIMIT ?1")
                    .ok()?;
                let rows = statement
                    .query_map([FILTER_MAX as i64 + 1], |row| row.get::<_, String>(0))
                    .ok()?;
                // Sized for a run's worth; it grows (in layers twice as large) with what the
                // file holds and what this run stores.
                let mut known = GrowableBloom::new(FILTER_FALSE_POSITIVES, 4096);
                let mut loaded = 0;
                for prefix in rows {
                    known.insert(key_bits(&prefix.ok()?));
                    loaded += 1;
                }
                (loaded <= FILTER_MAX).then(|| Mutex::new(known))
            })
            .as_ref()
    }

    /// A panic elsewhere while the lock was held cannot leave the connection half-way through
    /// a statement (rusqlite resets statements on drop), so a poisoned lock is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Reader> {
        lock(&self.reader)
    }

    fn sqlite(&self, error: rusqlite::Error) -> CacheError {
        CacheError::Sqlite {
            path: self.path.clone(),
            error,
        }
    }
}

/// The first 64 bits of a key (hex SHA-256, see [`ResponseCache::key`]); any other key maps
/// to one shared value, which only makes its lookups read.
fn key_bits(key: &str) -> u64 {
    key.get(..16)
        .and_then(|prefix| u64::from_str_radix(prefix, 16).ok())
        .unwrap_or(u64::MAX)
}

/// A model's view of the response cache.
pub struct CacheHandle {
    pub cache: Arc<ResponseCache>,
    pub policy: CachePolicy,
    /// Identifies the model's effective configuration (see [`fingerprint`]).
    pub fingerprint: String,
    /// Keys being asked of the model right now, each with what its waiters wait on.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// What [`CacheHandle::lookup_or_claim`] found.
pub enum Lookup<'a> {
    Hit(CachedResponse),
    /// The caller asks the model. With a claim, calls with the same key wait until it is dropped
    /// (after the answer is stored, or the call failed); without one, the caller already waited
    /// for a call that failed and now asks alongside the others that waited.
    Miss(Option<Claim<'a>>),
}

/// A key this call is asking the model; dropping it lets the calls waiting for it look again.
pub struct Claim<'a> {
    handle: &'a CacheHandle,
    key: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.handle.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(done) = in_flight.remove(&self.key) {
            // A closed semaphore answers every waiter at once, late ones included.
            done.close();
        }
    }
}

impl CacheHandle {
    pub fn new(cache: Arc<ResponseCache>, policy: CachePolicy, fingerprint: String) -> CacheHandle {
        CacheHandle {
            cache,
            policy,
            fingerprint,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// A lookup is one indexed read on a WAL database (microseconds, never waiting for a
    /// writer), so it runs where the call is. A cache that cannot be read is a miss: the call
    /// is made instead.
    pub fn lookup(&self, key: &str) -> Option<CachedResponse> {
        self.cache.get(key).ok().flatten()
    }

    /// The cached answer, or else the right to ask the model. A request identical to one in
    /// flight (the same judge prompt for two samples, say) waits for that one's answer instead
    /// of asking the model a second time. If that call fails (after its own retries), the
    /// waiters ask at once rather than queueing behind each other, so a request that keeps
    /// failing costs one wait, not one per duplicate.
    pub async fn lookup_or_claim(&self, key: &str) -> Lookup<'_> {
        let mut waited = false;
        loop {
            if let Some(hit) = self.lookup(key) {
                return Lookup::Hit(hit);
            }
            let wait = {
                let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
                match in_flight.get(key) {
                    None => {
                        in_flight.insert(key.to_owned(), Arc::new(tokio::sync::Semaphore::new(0)));
                        return Lookup::Miss(Some(Claim {
                            handle: self,
                            key: key.to_owned(),
                        }));
                    }
                    Some(_) if waited => return Lookup::Miss(None),
                    Some(done) => Arc::clone(done),
                }
            };
            // Never granted: it only closes, when the claim is dropped.
            let _ = wait.acquire().await;
            waited = true;
        }
    }

    /// Hands the response to the writer thread. Waits only when [`QUEUE_LIMIT`] stores are
    /// already waiting for the disk.
    pub async fn store(&self, key: &str, model_key: &str, response: &CachedResponse) {
        let _ = self.cache.put_when_room(key, model_key, response).await;
    }
}

impl Drop for ResponseCache {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Starts the thread that commits stores in batches.
fn start_writer(
    connection: Connection,
    path: &Path,
    queue: &Arc<Queue>,
    pending: &Arc<Mutex<Pending>>,
    commits: &Arc<AtomicU64>,
    failed: &Arc<Mutex<Option<CacheError>>>,
) -> JoinHandle<()> {
    let (queue, pending, commits, failed, path) = (
        Arc::clone(queue),
        Arc::clone(pending),
        Arc::clone(commits),
        Arc::clone(failed),
        path.to_path_buf(),
    );
    std::thread::Builder::new()
        .name("lfeval-cache".to_owned())
        .spawn(move || {
            let mut connection = connection;
            while let Some(messages) = queue.next_batch() {
                let mut batch = Vec::new();
                let mut flushes = Vec::new();
                for message in messages {
                    match message {
                        Message::Store { key, row, number, room } => batch.push((key, row, number, room)),
                        Message::Flush(done) => flushes.push(done),
                    }
                }
                for chunk in batch.chunks(BATCH) {
                    if let Err(error) = write_batch(&mut connection, chunk) {
                        lock(&failed).get_or_insert(CacheError::Sqlite {
                            path: path.clone(),
                            error,
                        });
                    }
                    // Before the entries leave `pending`: a lookup that no longer finds one
                    // there must take a snapshot that has it.
                    commits.fetch_add(1, Ordering::Release);
                    let mut pending = lock(&pending);
                    for (key, _, number, _) in chunk {
                        if pending.get(key).is_some_and(|(n, _)| n == number) {
                            pending.remove(key);
                        }
                    }
                }
                // Their room goes back before a flush is answered: a flushed queue is empty.
                drop(batch);
                for done in flushes {
                    let _ = done.send(());
                }
            }
        })
        .unwrap_or_else(|e| panic!("cannot start the cache writer thread: {e}"))
}

/// A store as the writer holds it: the key, the row, the store's number and its room in the
/// queue.
type Stored = (String, Arc<Row>, u64, Option<tokio::sync::OwnedSemaphorePermit>);

fn write_batch(connection: &mut Connection, batch: &[Stored]) -> rusqlite::Result<()> {
    let created_at = jiff::Timestamp::now().to_string();
    let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut statement = tx.prepare_cached(UPSERT)?;
        for (key, row, _, _) in batch {
            statement.execute(params![
                key,
                row.model_key,
                row.status_code,
                row.headers,
                row.body,
                row.captured,
                created_at
            ])?;
        }
    }
    tx.commit()
}

/// A connection with the settings every cache connection uses.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers and one writer work at once; with it, `NORMAL` sync loses at most the
    // last commits on power loss, never the database, which suits a cache.
    let _mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(connection)
}

/// A panic elsewhere while a lock was held cannot leave its data half-updated here (rusqlite
/// resets statements on drop; maps are updated in one call), so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
        assert_eq!(cache.get(&key).unwrap(), Some(second.clone()));
        // "[]" + 9 UTF-8 bytes of "ünïcode", once committed.
        cache.flush().unwrap();
        assert_eq!(cache.get(&key).unwrap(), Some(second));
        assert_eq!(cache.stats().unwrap(), (1, 2 + 9));
    }

    #[test]
    fn stores_wait_for_room_while_the_disk_holds_the_writer_up() {
        use std::future::Future;
        use std::task::Poll;

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("cache.sqlite");
        let cache = ResponseCache::open(&path).unwrap();
        // Another process's write transaction holds the writer at its first commit.
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            for i in 0..QUEUE_LIMIT {
                let key = ResponseCache::key("fp", &i.to_string());
                cache.put_when_room(&key, "m", &response("queued")).await.unwrap();
            }
            assert_eq!(cache.room.available_permits(), 0);
            let (last, answer) = (ResponseCache::key("fp", "last"), response("last"));
            let waiting = cache.put_when_room(&last, "m", &answer);
            let mut waiting = std::pin::pin!(waiting);
            let polled = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx).is_ready())).await;
            assert!(!polled, "a store past the limit waits");
            assert!(!lock(&cache.pending).contains_key(&last));

            blocker.execute_batch("ROLLBACK").unwrap();
            waiting.await.unwrap();
            cache.flush().unwrap();
            assert_eq!(cache.get(&last).unwrap(), Some(response("last")));
            assert_eq!(cache.room.available_permits(), QUEUE_LIMIT, "every permit came back");
        });
        assert_eq!(cache.stats().unwrap().0, QUEUE_LIMIT as u64 + 1);
    }

    #[test]
    fn a_lookup_snapshot_sees_every_commit_of_the_writer() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ResponseCache::open(&tmp.path().join("cache.sqlite")).unwrap();
        let (a, b) = (ResponseCache::key("fp", "a"), ResponseCache::key("fp", "b"));
        cache.put(&a, "m", &response("A")).unwrap();
        cache.flush().unwrap();
        // Read from the file: this opens the snapshot later lookups reuse.
        assert_eq!(cache.get(&a).unwrap(), Some(response("A")));
        assert!(lock(&cache.reader).snapshot.is_some());

        // Committed after the snapshot began, and gone from `pending`: only a newer snapshot
        // has it.
        cache.put(&b, "m", &response("B")).unwrap();
        cache.flush().unwrap();
        assert!(lock(&cache.pending).is_empty());
        assert_eq!(cache.get(&b).unwrap(), Some(response("B")));
        assert_eq!(cache.get(&a).unwrap(), Some(response("A")));

        // Another process's entry is not in this one's filter, but the file has it.
        let other = ResponseCache::open(&tmp.path().join("cache.sqlite")).unwrap();
        let c = ResponseCache::key("fp", "c");
        other.put(&c, "m", &response("C")).unwrap();
        other.finish().unwrap();
        assert_eq!(cache.stats().unwrap().0, 3, "statistics read the file as it is now");
    }

    #[test]
    fn stores_from_many_threads_are_all_committed_once() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("cache.sqlite");
        let cache = Arc::new(ResponseCache::open(&path).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    for i in 0..300 {
                        let key = ResponseCache::key("fp", &format!("{t}-{i}"));
                        cache.put(&key, "m", &response(&format!("body {t}-{i}"))).unwrap();
                        // Readable at once, before any commit.
                        assert!(cache.get(&key).unwrap().is_some());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(cache);
        let reopened = ResponseCache::open(&path).unwrap();
        assert_eq!(reopened.stats().unwrap().0, 1200);
        let key = ResponseCache::key("fp", "3-299");
        assert_eq!(reopened.get(&key).unwrap().unwrap().body, "body 3-299");
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
