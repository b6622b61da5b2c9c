//! A link to Redis whose every call is bounded in time: connects on first use (the redis
//! crate's connection manager then reconnects by itself), and answers "unavailable" within
//! [`CALL_TIMEOUT`] when Redis is down, never hangs. Shared by the gateway's response state
//! and the worker's finished-task marks; it knows nothing of what they store.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// How long one Redis call may take before Redis counts as unavailable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Redis could not be reached or answered wrongly.
#[derive(Debug, thiserror::Error)]
#[error("Redis is unavailable: {0}")]
pub struct KvError(pub String);

/// A lazily connected, time-bounded Redis link.
pub struct Kv {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
}

impl Kv {
    /// A link to `url` (`redis://` or `rediss://`); nothing is connected yet.
    pub fn new(url: &str) -> Result<Kv, KvError> {
        let client = redis::Client::open(url).map_err(|e| KvError(e.to_string()))?;
        Ok(Kv {
            client,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// The connection, made on first use.
    pub async fn connection(&self) -> Result<ConnectionManager, KvError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = bounded(self.client.get_connection_manager()).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Runs one command. A call that fails drops the connection, so the next one connects
    /// afresh instead of waiting on one that Redis's restart left behind.
    pub async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, KvError> {
        let mut connection = self.connection().await?;
        let answer = bounded(command.query_async(&mut connection)).await;
        if answer.is_err() {
            self.forget().await;
        }
        answer
    }

    /// Runs `pipeline` (its answers ignored), dropping the connection on failure like
    /// [`Kv::run`].
    pub async fn pipeline(&self, pipeline: &redis::Pipeline) -> Result<(), KvError> {
        let mut connection = self.connection().await?;
        let answer = bounded(pipeline.query_async::<()>(&mut connection)).await;
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
    ) -> Result<T, KvError> {
        self.script_on(source, &[key], args).await
    }

    /// Runs a Lua script on `keys` with `args`.
    pub async fn script_on<T: redis::FromRedisValue>(
        &self,
        source: &str,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, KvError> {
        let mut connection = self.connection().await?;
        let script = redis::Script::new(source);
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let answer = bounded(invocation.invoke_async(&mut connection)).await;
        if answer.is_err() {
            self.forget().await;
        }
        answer
    }
}

/// `call` within [`CALL_TIMEOUT`], its error as a [`KvError`].
pub async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, KvError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| KvError(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))?
        .map_err(|e| KvError(e.to_string()))
}
