//! A link to Redis whose every call is bounded in time: connects on first use (the redis
//! crate's connection manager then reconnects by itself), and answers "unavailable" within
//! [`CALL_TIMEOUT`] when Redis is down (a link for whole files: [`BULK_CALL_TIMEOUT`]), never
//! hangs. Shared by the gateway's response state
//! and the worker's finished-task marks; it knows nothing of what they store.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// How long one Redis call may take before Redis counts as unavailable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The same for a call that carries a whole file (a batch's input or output, up to hundreds
/// of megabytes), on a link of its own ([`RedisLink::for_bulk`]).
pub const BULK_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Swaps a hash's `status` field (and its `object`) only when it holds the expected one:
/// `KEYS[1]` the hash, `ARGV` = from, to, object. Answers `ok`, `missing` (no such hash, or
/// it expired) or the status it holds instead, so two replicas racing cannot both win.
pub const SET_STATUS_IF: &str = r"
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 'missing' end
if current ~= ARGV[1] then return current end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'object', ARGV[3])
return 'ok'
";

/// Redis could not be reached, or what it holds cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL does not name a Redis server.
    #[error("Redis is unavailable: {0}")]
    BadUrl(#[source] redis::RedisError),
    /// A call failed: no connection, or Redis refused it.
    #[error("Redis is unavailable: {0}")]
    Failed(#[from] redis::RedisError),
    /// A call took longer than its link's bound ([`CALL_TIMEOUT`], [`BULK_CALL_TIMEOUT`]).
    #[error("Redis is unavailable: no answer in time")]
    TimedOut,
    /// A stored value is not what the code that wrote it writes.
    #[error("a value stored in Redis cannot be read: {0}")]
    Corrupt(String),
}

/// A lazily connected, time-bounded Redis link.
pub struct RedisLink {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
    timeout: Duration,
}

impl RedisLink {
    /// A link to `url` (`redis://` or `rediss://`) whose calls are bounded by
    /// [`CALL_TIMEOUT`]; nothing is connected yet.
    pub fn new(url: &str) -> Result<RedisLink, RedisError> {
        Self::bounded_by(url, CALL_TIMEOUT)
    }

    /// A link for calls that carry whole files, bounded by [`BULK_CALL_TIMEOUT`]: a
    /// connection of its own, so that a large transfer holds up none of the small calls on
    /// the other (a connection answers in order).
    pub fn for_bulk(url: &str) -> Result<RedisLink, RedisError> {
        Self::bounded_by(url, BULK_CALL_TIMEOUT)
    }

    fn bounded_by(url: &str, timeout: Duration) -> Result<RedisLink, RedisError> {
        let client = redis::Client::open(url).map_err(RedisError::BadUrl)?;
        Ok(RedisLink {
            client,
            connection: tokio::sync::Mutex::new(None),
            timeout,
        })
    }

    /// The connection, made on first use.
    pub async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        // The crate's own bound on each answer (half a second by default) would cut a file's
        // transfer short: the link's bound is the one that holds.
        let config =
            redis::aio::ConnectionManagerConfig::new().set_response_timeout(Some(self.timeout));
        let connecting = self.client.get_connection_manager_with_config(config);
        let connection = bounded(CALL_TIMEOUT, connecting).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Runs one command. A call that fails drops the connection, so the next one connects
    /// afresh instead of waiting on one that Redis's restart left behind.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        command: redis::Cmd,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        let answer = bounded(self.timeout, command.query_async(&mut connection)).await;
        if answer.is_err() {
            self.forget().await;
        }
        answer
    }

    /// Runs `pipeline` (its answers ignored), dropping the connection on failure like
    /// [`RedisLink::run`].
    pub async fn pipeline(&self, pipeline: &redis::Pipeline) -> Result<(), RedisError> {
        let mut connection = self.connection().await?;
        let answer = bounded(self.timeout, pipeline.query_async::<()>(&mut connection)).await;
        if answer.is_err() {
            self.forget().await;
        }
        answer
    }

    /// Drops the current connection; the next call makes a new one.
    pub async fn forget(&self) {
        *self.connection.lock().await = None;
    }

    /// Runs a Lua script on `key` with `args`.
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        source: &str,
        key: &str,
        args: &[&str],
    ) -> Result<T, RedisError> {
        self.script_on(source, &[key], args).await
    }

    /// Runs a Lua script on `keys` with `args`.
    pub async fn script_on<T: redis::FromRedisValue>(
        &self,
        source: &str,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        let script = redis::Script::new(source);
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let answer = bounded(self.timeout, invocation.invoke_async(&mut connection)).await;
        if answer.is_err() {
            self.forget().await;
        }
        answer
    }
}

/// `call` within `limit`, its error as a [`RedisError`].
pub async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisError> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| RedisError::TimedOut)?
        .map_err(RedisError::Failed)
}
