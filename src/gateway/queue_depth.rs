//! How deep the task queues are, as the fleet sees them: every [`POLL_EVERY`] the gateway
//! declares each task queue passively (nothing is created; the broker answers with the ready
//! messages and the consumers) and sets `warren_queue_messages` and
//! `warren_queue_consumers`. The queues are the requests queue, or under routing by model
//! each served model's queue, each with its batch tier's queue (taken with `basic.get`: it
//! shows no consumers), and the embeddings queue. A queue that does not exist (no
//! worker of that kind ever declared it) reads 0 and 0. Needs no management plugin; with
//! `broker.management_url` it also asks the management API how fast each queue drains, for
//! the Retry-After of a full queue's 429 ([`super::backlog`]). The broker closes the channel
//! of a passive declare that misses, which lapin logs at error level: a queue whose last
//! declare missed and that the API also answers 404 for is declared again only every
//! [`RECHECK_EVERY_POLLS`]th poll (an API of another broker, a wrong `management_url`,
//! cannot hide a queue longer than that), or as soon as the API finds it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::broker_link::BrokerLink;
use super::metrics::GatewayMetrics;
use crate::broker::management::Management;
use crate::config::Settings;
use crate::protocol::Tier;

/// How often the queues are looked at.
pub const POLL_EVERY: Duration = Duration::from_secs(5);

/// Of the polls that skip a queue both the last declare and the management API found missing,
/// every this-many-th declares it all the same.
const RECHECK_EVERY_POLLS: u32 = 12;

/// The task queues of a deployment as `settings` describe it.
pub fn watched_queues(settings: &Settings) -> Vec<String> {
    let t = &settings.topology;
    let mut queues: Vec<String> = if t.routes_by_model() {
        settings
            .gateway
            .served_models()
            .iter()
            .map(|model| t.model_queue(model))
            .collect()
    } else {
        vec![t.requests_queue.clone()]
    };
    let batch = queues.iter().map(|q| Tier::Batch.key(q).into_owned());
    queues = queues.iter().cloned().chain(batch).collect();
    queues = queues.iter().flat_map(|q| t.consumed_queues(q)).collect();
    queues.push(t.embeddings_queue.clone());
    queues
}

/// Polls `queues` until `shutdown`, whenever the broker link is connected; with a management
/// API, reads their drain rates in a loop of its own, so that a slow API never holds up the
/// depths.
pub async fn watch(
    broker_link: BrokerLink,
    queues: Vec<String>,
    management: Option<Management>,
    metrics: Arc<GatewayMetrics>,
    shutdown: CancellationToken,
) {
    let missing = MissingQueues::default();
    if let Some(api) = management {
        tokio::spawn(watch_drain_rates(
            api,
            broker_link.clone(),
            queues.clone(),
            missing.clone(),
            shutdown.clone(),
        ));
    }
    // Queues whose last declare missed, with the polls skipped since.
    let mut missed: HashMap<&str, u32> = HashMap::new();
    loop {
        if let Some(client) = broker_link.client() {
            for queue in &queues {
                let skipped = missed.get(queue.as_str()).copied();
                let seen = if declares(skipped, missing.contains(queue)) {
                    let seen = depth(client.connection(), queue).await;
                    match seen {
                        Some(_) => missed.remove(queue.as_str()),
                        None => missed.insert(queue, 0),
                    };
                    seen
                } else {
                    missed.insert(queue, skipped.unwrap_or_default() + 1);
                    None
                };
                metrics.queue_depth(queue, seen);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

/// Records what the management API says of each of `queues`, every [`POLL_EVERY`].
async fn watch_drain_rates(
    api: Management,
    broker_link: BrokerLink,
    queues: Vec<String>,
    missing: MissingQueues,
    shutdown: CancellationToken,
) {
    loop {
        for queue in &queues {
            let answer = api.queue_stats(queue).await;
            missing.set(queue, matches!(answer, Ok(None)));
            match answer {
                Ok(Some(stats)) => broker_link.backlog().record(queue, stats),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, queue, "no drain rate this time"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

/// Whether to declare a queue this poll, given the polls skipped since its last declare missed
/// (`None`: that declare found it, or there was none) and whether the management API answers
/// 404 for it.
fn declares(skipped_since_missed: Option<u32>, api_says_missing: bool) -> bool {
    match skipped_since_missed {
        None => true,
        Some(_) if !api_says_missing => true,
        Some(skipped) => skipped + 1 >= RECHECK_EVERY_POLLS,
    }
}

/// The queues the management API answered 404 for at its last look. A queue it could not be
/// asked about is not in it.
#[derive(Debug, Clone, Default)]
struct MissingQueues(Arc<Mutex<HashSet<String>>>);

impl MissingQueues {
    fn set(&self, queue: &str, missing: bool) {
        let mut queues = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if missing {
            queues.insert(queue.to_owned());
        } else {
            queues.remove(queue);
        }
    }

    fn contains(&self, queue: &str) -> bool {
        let queues = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        queues.contains(queue)
    }
}

/// Ready messages and consumers of `queue`, or `None` when it does not exist (or the broker
/// did not answer).
pub(super) async fn depth(connection: &lapin::Connection, queue: &str) -> Option<(u32, u32)> {
    let found = crate::broker::declare::passive_queue(connection, queue).await;
    found
        .ok()
        .flatten()
        .map(|q| (q.message_count(), q.consumer_count()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_skipped_only_while_its_declare_and_the_api_both_miss_it_and_rechecked_in_time() {
        assert!(declares(None, false), "never looked at");
        assert!(
            declares(None, true),
            "found at the last declare: an API 404 is not trusted"
        );
        assert!(declares(Some(0), false), "missed, but the API finds it now");
        assert!(!declares(Some(0), true), "missed by both");
        let skips = (0..)
            .take_while(|&skipped| !declares(Some(skipped), true))
            .count();
        assert_eq!(skips as u32, RECHECK_EVERY_POLLS - 1, "then declared again");
    }

    #[test]
    fn a_queue_is_missing_from_a_404_until_the_api_finds_it_again() {
        let missing = MissingQueues::default();
        assert!(!missing.contains("warren.embeddings"));
        missing.set("warren.embeddings", true);
        assert!(missing.clone().contains("warren.embeddings"));
        assert!(!missing.contains("warren.requests"));
        missing.set("warren.embeddings", false);
        assert!(!missing.contains("warren.embeddings"));
    }

    #[test]
    fn each_task_queue_its_batch_tier_and_the_embeddings_queue_are_watched() {
        let mut settings = Settings::defaults();
        assert_eq!(
            watched_queues(&settings),
            vec![
                "warren.requests",
                "warren.requests.batch",
                "warren.embeddings"
            ]
        );
        settings.topology.tasks_exchange = "warren.tasks".into();
        settings.gateway.models = "small,large".into();
        assert_eq!(
            watched_queues(&settings),
            vec![
                "warren.requests.small",
                "warren.requests.large",
                "warren.requests.small.batch",
                "warren.requests.large.batch",
                "warren.embeddings"
            ]
        );
    }
}
