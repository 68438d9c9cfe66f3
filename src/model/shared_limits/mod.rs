//! Limits shared by every lfeval process that uses one Redis (`--limits redis://HOST:PORT`):
//! each model key's `rate_limit`, `max_concurrent_requests` and `tokens_per_minute` hold across
//! all shards on all machines. Every decision is one server-side Lua script, atomic and timed by
//! Redis's own clock (`TIME`), so processes never compare clocks:
//!
//! - `admit.lua`: one admission, all or nothing: the shared `Retry-After` pause, then a
//!   concurrency lease, then the GCRA rate limit (burst 1), then the token reservation;
//! - `renew.lua`: the heartbeat that keeps a process's leases alive while its calls run; a
//!   process that dies (SIGKILL) stops renewing, and its leases expire after the lease time;
//! - `release.lua`: drops a lease and settles a token reservation with the real usage;
//! - `pause.lua`: a `Retry-After` seen by one process pauses the model for all of them.
//!
//! Keys are `lfeval:{<namespace>/<model key>}:<kind>`; the braces are a Redis Cluster hash
//! tag, so one model's keys share a slot. Every key expires once it means "idle", so nothing
//! lingers. [`SharedLimits`] is the connection (one per run); [`SharedModel`] one model's
//! limits in this process.

mod model;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};

pub use model::{Lease, ModelLimits, SharedModel, SharedTokens, SharedWait};

/// How long connecting (and loading the scripts) may take at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one command; a frozen server fails a call after this, not never.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the shared limits live, as the command line gave it.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub url: String,
    /// Where the URL came from, for error messages (`--limits` or `LFEVAL_LIMITS`).
    pub origin: &'static str,
    /// Keeps runs that use the same model keys against different provider accounts apart.
    pub namespace: String,
    /// How long a lease outlives a process that stopped renewing it.
    pub lease: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LimitsError {
    #[error(
        "shared limits: invalid Redis URL (from {origin}): {message}; hint: write `redis://HOST:PORT` or `redis://:PASSWORD@HOST:PORT/DB`"
    )]
    InvalidUrl { origin: &'static str, message: String },
    #[error(
        "shared limits: cannot use {url} (from {origin}): {message}\nhint: check that Redis runs there; without `--limits` (and `LFEVAL_LIMITS`) every process keeps its own limits"
    )]
    Connect {
        url: String,
        origin: &'static str,
        message: String,
    },
    #[error(
        "shared limits: {url} has been unreachable for {}: {message}",
        crate::diagnostic::format_duration(*after)
    )]
    Unreachable {
        url: String,
        after: Duration,
        message: String,
    },
}

struct Scripts {
    admit: Script,
    renew: Script,
    release: Script,
    pause: Script,
}

/// The connection to the shared limits, one per run; cheap to clone.
#[derive(Clone)]
pub struct SharedLimits {
    inner: Arc<Inner>,
}

struct Inner {
    con: ConnectionManager,
    scripts: Scripts,
    /// `redis://host:port`, never with a password.
    url: String,
    namespace: String,
    lease: Duration,
    /// `<host>:<pid>:<random>`: lease ids start with it, so the lease set shows who holds what.
    holder: String,
    next_lease: AtomicU64,
}

impl SharedLimits {
    /// Connects, loads the scripts (which also proves the server allows them) and checks the
    /// server's clock, all before any request, so a wrong URL fails the run at once.
    pub async fn connect(config: &LimitsConfig) -> Result<SharedLimits, LimitsError> {
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| LimitsError::InvalidUrl {
                origin: config.origin,
                message: crate::redact::redact(&e.to_string()).into_owned(),
            })?;
        if let Some(password) = info.redis_settings().password() {
            crate::redact::register(password, "the shared limits password");
        }
        let url = format!("redis://{}", info.addr());
        let fail = |message: String| LimitsError::Connect {
            url: url.clone(),
            origin: config.origin,
            message: crate::redact::redact(&message).into_owned(),
        };
        let client = redis::Client::open(info).map_err(|e| fail(e.to_string()))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let scripts = Scripts {
            admit: Script::new(include_str!("admit.lua")),
            renew: Script::new(include_str!("renew.lua")),
            release: Script::new(include_str!("release.lua")),
            pause: Script::new(include_str!("pause.lua")),
        };
        let start = async {
            let mut con = client
                .get_connection_manager_with_config(manager)
                .await
                .map_err(|e| fail(e.to_string()))?;
            for script in [&scripts.admit, &scripts.renew, &scripts.release, &scripts.pause] {
                script.load_async(&mut con).await.map_err(|e| fail(e.to_string()))?;
            }
            let _: (u64, u64) = redis::cmd("TIME")
                .query_async(&mut con)
                .await
                .map_err(|e| fail(e.to_string()))?;
            Ok(con)
        };
        let con = tokio::time::timeout(CONNECT_TIMEOUT, start).await.map_err(|_| {
            fail(format!(
                "no answer within {}",
                crate::diagnostic::format_duration(CONNECT_TIMEOUT)
            ))
        })??;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
        Ok(SharedLimits {
            inner: Arc::new(Inner {
                con,
                scripts,
                url,
                namespace: config.namespace.clone(),
                lease: config.lease,
                holder: format!("{host}:{}:{:08x}", std::process::id(), rand::random::<u32>()),
                next_lease: AtomicU64::new(0),
            }),
        })
    }

    /// One model's shared limits; starts the renewal of its leases. Call inside the runtime.
    pub fn model(&self, key: &str, limits: ModelLimits) -> Arc<SharedModel> {
        SharedModel::start(self.clone(), key, limits)
    }

    /// `redis://host:port` (never with its password).
    pub fn url(&self) -> &str {
        &self.inner.url
    }
}

/// The keys of one model: `lfeval:{<namespace>/<model key>}:<kind>`. `%`, braces and bytes
/// outside printable ASCII are percent-encoded, so the hash tag stays one tag.
struct Keys {
    pause: String,
    rate: String,
    tokens: String,
    leases: String,
}

impl Keys {
    fn new(namespace: &str, model: &str) -> Keys {
        let tag = encode(&format!("{namespace}/{model}"));
        let key = |kind: &str| format!("lfeval:{{{tag}}}:{kind}");
        Keys {
            pause: key("pause"),
            rate: key("rate"),
            tokens: key("tokens"),
            leases: key("leases"),
        }
    }
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x21..0x7f).contains(&byte) && !matches!(byte, b'%' | b'{' | b'}') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
