//! How deep the task queues are and how fast they drain, as RabbitMQ's management API last
//! said (polled beside the queue depths), and the `Retry-After` of a full queue's 429: the
//! time that queue's backlog takes to drain at that rate, so callers come back when there is
//! room rather than at once.

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

    /// The Retry-After for a publish a full queue refused under routing key `key`: the queue
    /// of that name, or under routing by model the queue named after the model
    /// (`<requests queue>.<model>`, or the deepest of its shards `….<model>.shard-<i>`);
    /// else, not knowing which, the deepest.
    pub fn retry_after_full(&self, key: Option<&str>) -> Duration {
        let Ok(seen) = self.seen.read() else {
            return RETRY_AFTER_UNKNOWN;
        };
        let named = key.and_then(|key| {
            seen.get(key).copied().or_else(|| {
                let suffix = format!(".{key}");
                let of_model = |queue: &str| {
                    let queue = queue.rsplit_once(".shard-").map_or(queue, |(base, _)| base);
                    queue.ends_with(&suffix)
                };
                seen.iter()
                    .filter(|(queue, _)| of_model(queue))
                    .map(|(_, stats)| *stats)
                    .max_by_key(|stats| stats.messages)
            })
        });
        let deepest = || seen.values().copied().max_by_key(|s| s.messages);
        drain_time(named.or_else(deepest))
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
    fn the_refused_queue_decides_by_name_or_model_else_the_deepest() {
        let backlog = Backlog::default();
        assert_eq!(backlog.retry_after_full(None), RETRY_AFTER_UNKNOWN);
        backlog.record("warren.requests.small", stats(3, 1.0));
        backlog.record("warren.requests.large", stats(300, 10.0));
        let by_model = backlog.retry_after_full(Some("small"));
        assert_eq!(by_model, Duration::from_secs(3));
        let by_name = backlog.retry_after_full(Some("warren.requests.large"));
        assert_eq!(by_name, Duration::from_secs(30));
        assert_eq!(backlog.retry_after_full(None), Duration::from_secs(30));
        assert_eq!(
            backlog.retry_after_full(Some("unknown")),
            Duration::from_secs(30)
        );
        // A sharded model: the deepest of its shards.
        backlog.record("warren.requests.sharded.shard-0", stats(10, 1.0));
        backlog.record("warren.requests.sharded.shard-1", stats(20, 1.0));
        let sharded = backlog.retry_after_full(Some("sharded"));
        assert_eq!(sharded, Duration::from_secs(20));
    }
}
