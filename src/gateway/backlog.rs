//! How deep the task queues are and how fast they drain, as RabbitMQ's management API last
//! said (polled with the queue depths), and the `Retry-After` of a full queue's 429: the time
//! its backlog takes to drain at that rate, so callers come back when there is room rather
//! than at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::broker::management::QueueStats;

/// Without statistics (no management API): a guess.
pub const RETRY_AFTER_UNKNOWN: Duration = Duration::from_secs(10);
/// A full queue that nobody drains (no worker, or all stuck): come back in a minute.
pub const RETRY_AFTER_NOT_DRAINING: Duration = Duration::from_secs(60);
/// The longest Retry-After given: beyond it the estimate says little.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);
/// Acks per second below which a queue counts as not draining.
const DRAINING_AT_LEAST: f64 = 0.01;

/// The last statistics of each task queue.
#[derive(Clone, Default)]
pub struct Backlog {
    seen: Arc<RwLock<HashMap<String, QueueStats>>>,
}

impl Backlog {
    /// Records what the management API said of `queue`.
    pub fn record(&self, queue: &str, stats: QueueStats) {
        if let Ok(mut seen) = self.seen.write() {
            seen.insert(queue.to_owned(), stats);
        }
    }

    /// The Retry-After for a publish a full queue refused. The nack does not say which
    /// queue, and the full one is the deepest, so its statistics decide.
    pub fn retry_after_full(&self) -> Duration {
        let deepest = self
            .seen
            .read()
            .ok()
            .and_then(|seen| seen.values().copied().max_by_key(|s| s.messages));
        drain_time(deepest)
    }
}

/// How long `stats`' backlog takes to drain at its ack rate, whole seconds, at least 1 s.
pub fn drain_time(stats: Option<QueueStats>) -> Duration {
    let Some(stats) = stats else {
        return RETRY_AFTER_UNKNOWN;
    };
    if stats.acks_per_second < DRAINING_AT_LEAST {
        return RETRY_AFTER_NOT_DRAINING;
    }
    let seconds = (stats.messages as f64 / stats.acks_per_second).ceil();
    Duration::from_secs_f64(seconds.clamp(1.0, RETRY_AFTER_MAX.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(messages: u64, acks_per_second: f64) -> QueueStats {
        QueueStats {
            messages,
            acks_per_second,
        }
    }

    #[test]
    fn a_full_queue_drains_in_its_depth_over_its_ack_rate() {
        assert_eq!(drain_time(Some(stats(256, 2.0))), Duration::from_secs(128));
        assert_eq!(drain_time(Some(stats(10, 3.0))), Duration::from_secs(4));
        assert_eq!(drain_time(Some(stats(0, 5.0))), Duration::from_secs(1));
        assert_eq!(drain_time(Some(stats(100_000, 1.0))), RETRY_AFTER_MAX);
    }

    #[test]
    fn a_queue_nobody_drains_or_one_never_seen_gets_a_fixed_answer() {
        assert_eq!(drain_time(Some(stats(256, 0.0))), RETRY_AFTER_NOT_DRAINING);
        assert_eq!(drain_time(None), RETRY_AFTER_UNKNOWN);
    }

    #[test]
    fn the_deepest_queue_decides() {
        let backlog = Backlog::default();
        assert_eq!(backlog.retry_after_full(), RETRY_AFTER_UNKNOWN);
        backlog.record("small", stats(3, 1.0));
        backlog.record("full", stats(300, 10.0));
        assert_eq!(backlog.retry_after_full(), Duration::from_secs(30));
    }
}
