//! Finished-task marks in Redis, so that a task is not worked on twice: once the transaction
//! that published what a delivery owes and acked it is committed, its id is recorded
//! (`warren:finished:<requests queue>:<id>`, kept `worker.finished_ttl_s`); a delivery whose
//! id is recorded is acked without being run or answered again. Optional (`worker.redis_url`): a Redis that
//! does not answer makes the worker fall back to at least once, never block.

use std::sync::Arc;

use tracing::{info, warn};

use crate::config::Settings;
use crate::redis_link::{RedisError, RedisLink};

/// The finished marks of one requests queue.
pub(crate) struct Finished {
    redis: RedisLink,
    prefix: String,
    ttl_s: u64,
}

impl Finished {
    /// The marks `settings` ask for (`worker.redis_url`), if any; an unusable URL is logged
    /// and leaves delivery at least once.
    pub(crate) fn configured(settings: &Settings) -> Option<Arc<Finished>> {
        let url = settings.worker.redis_url.as_str();
        if url.is_empty() {
            return None;
        }
        let queue = &settings.topology.requests_queue;
        match Finished::new(url, queue, settings.worker.finished_ttl_s) {
            Ok(finished) => {
                info!("finished tasks are recorded in Redis: a redelivered finished task is not run again");
                Some(Arc::new(finished))
            }
            Err(e) => {
                warn!(error = %e, "worker.redis_url is unusable; delivery stays at least once");
                None
            }
        }
    }

    /// Marks kept at `url` for the tasks of `requests_queue`, `ttl_s` seconds each.
    pub(crate) fn new(url: &str, requests_queue: &str, ttl_s: u64) -> Result<Finished, RedisError> {
        Ok(Finished {
            redis: RedisLink::new(url)?,
            prefix: format!("warren:finished:{requests_queue}:"),
            ttl_s,
        })
    }

    /// Whether task `id` was finished already.
    pub(crate) async fn contains(&self, id: &str) -> Result<bool, RedisError> {
        let key = format!("{}{id}", self.prefix);
        self.redis
            .run::<bool>(redis::cmd("EXISTS").arg(key).clone())
            .await
    }

    /// Records task `id` as finished.
    pub(crate) async fn record(&self, id: &str) -> Result<(), RedisError> {
        let key = format!("{}{id}", self.prefix);
        let mut set = redis::cmd("SET");
        set.arg(key).arg("1").arg("EX").arg(self.ttl_s);
        self.redis.run::<()>(set).await
    }
}
