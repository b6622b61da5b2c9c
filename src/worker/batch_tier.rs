//! The batch tier's side of a session: batch tasks (see [`crate::protocol::tier`]) are pulled
//! one at a time with `basic.get`, on the channel interactive deliveries arrive on (so that a
//! batch task's reply and ack commit in a transaction like any other; between transactions,
//! see [`crate::broker::TxChannel::get`]), and only while
//! the worker holds fewer tasks than its engine has slots. A batch task so starts at once:
//! none waits in the worker behind interactive work (where it could outlive the broker's
//! consumer timeout), and an interactive task that arrives meanwhile waits at most for one
//! running task to end. The interactive queue keeps its consumer and its prefetch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;

use super::Shared;
use crate::broker::BrokerError;
use crate::config::Settings;
use crate::retry::RetryPolicy;

/// How often an idle worker looks at the batch queue; a task ending looks at once too.
const POLL: Duration = Duration::from_millis(200);

/// The most shards of the batch tier one look asks (one `basic.get` round trip each, in the
/// session's loop): with many shards, each is looked at every few looks.
const SHARDS_PER_LOOK: usize = 4;

/// The batch tier of one session.
pub(super) struct BatchTier {
    /// What a batch delivery's handler shares, one per queue of the tier (its shards, when
    /// sharded): the queue's topology and the tier's retry policy.
    queues: Vec<Arc<Shared>>,
    /// The queue the next look starts at: shards take turns being looked at first.
    next_first: AtomicUsize,
    slots: usize,
    poll: tokio::time::Interval,
}

impl BatchTier {
    /// The batch tier of a worker whose interactive deliveries share `interactive`: the same
    /// engine, the batch queues and their retry policy; a batch queue's tasks are taken on
    /// the channel of the interactive queue at the same place in `channels` (its shard's, when
    /// sharded). `None` for an embed worker.
    pub(super) fn for_worker(
        settings: &Settings,
        interactive: &Shared,
        channels: &[Arc<Shared>],
    ) -> Option<BatchTier> {
        let topology = interactive.topology.batch_tier()?.clone();
        let tier = settings.batch_tier()?;
        let consumed = topology.consumed_queues();
        tracing::info!(queues = ?consumed, "taking batch tasks when a slot is free");
        let retry = RetryPolicy::new(&tier.retry);
        let queues = consumed
            .iter()
            .zip(channels.iter().cycle())
            .map(|(queue, channel)| {
                Arc::new(Shared {
                    topology: topology.shard_of(queue),
                    retry: retry.clone(),
                    settling: channel.settling.clone(),
                    ..interactive.clone()
                })
            })
            .collect();
        let slots = usize::try_from(settings.engine.slots).unwrap_or(usize::MAX);
        Some(BatchTier::new(queues, slots))
    }

    /// The batch tier served from `queues` by an engine with `slots` slots.
    fn new(queues: Vec<Arc<Shared>>, slots: usize) -> BatchTier {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        BatchTier {
            queues,
            next_first: AtomicUsize::new(0),
            slots,
            poll,
        }
    }

    /// Waits for the next look at the batch queue.
    pub(super) async fn tick(&mut self) {
        self.poll.tick().await;
    }

    /// Takes batch tasks from the tier's queues while the worker, holding `held` tasks, has
    /// a slot that would otherwise stay free; leaves a queue at its first empty answer. Looks
    /// at [`SHARDS_PER_LOOK`] shards at most, the next ones at the next look.
    pub(super) async fn take(
        &self,
        held: usize,
    ) -> Result<Vec<(Arc<Shared>, Delivery)>, BrokerError> {
        let mut taken = Vec::new();
        let looked_at = self.queues.len().min(SHARDS_PER_LOOK);
        let first = self.next_first.fetch_add(looked_at, Ordering::Relaxed);
        for turn in 0..looked_at {
            let shared = &self.queues[(first + turn) % self.queues.len()];
            let queue = shared.topology.requests_queue();
            while held + taken.len() < self.slots {
                match shared.settling.get(queue).await? {
                    Some(delivery) => taken.push((shared.clone(), delivery)),
                    None => break,
                }
            }
        }
        Ok(taken)
    }
}

/// Waits for the batch tier's next look; never, without a batch tier.
pub(super) async fn next_look(batch: &mut Option<BatchTier>) {
    match batch {
        Some(batch) => batch.tick().await,
        None => std::future::pending().await,
    }
}
