//! The batch tier's side of a session: batch tasks (see [`crate::protocol::tier`]) are pulled
//! one at a time with `basic.get`, on the channel interactive deliveries arrive on (so that a
//! batch task's reply and ack commit in a transaction like any other; between transactions,
//! see [`crate::broker::TxChannel::get`]), and only while
//! the worker holds fewer tasks than its engine has slots. A batch task so starts at once:
//! none waits in the worker behind interactive work (where it could outlive the broker's
//! consumer timeout), and an interactive task that arrives meanwhile waits at most for one
//! running task to end. The interactive queue keeps its consumer and its prefetch.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;

use super::Shared;
use crate::broker::BrokerError;
use crate::config::Settings;
use crate::retry::RetryPolicy;

/// How often an idle worker looks at the batch queue; a task ending looks at once too.
const POLL: Duration = Duration::from_millis(200);

/// The batch tier of one session.
pub(super) struct BatchTier {
    /// What a batch delivery's handler shares: the batch queue's topology and retry policy.
    pub(super) shared: Arc<Shared>,
    slots: usize,
    poll: tokio::time::Interval,
}

impl BatchTier {
    /// The batch tier of a worker whose interactive deliveries share `interactive`: the same
    /// channel and engine, the batch queues and their retry policy. `None` for an embed
    /// worker.
    pub(super) fn for_worker(settings: &Settings, interactive: &Shared) -> Option<BatchTier> {
        let topology = interactive.topology.batch_tier()?.clone();
        let tier = settings.batch_tier()?;
        tracing::info!(
            queue = topology.requests_queue(),
            "taking batch tasks when a slot is free"
        );
        let shared = Arc::new(Shared {
            topology,
            retry: RetryPolicy::new(&tier.retry),
            ..interactive.clone()
        });
        let slots = usize::try_from(settings.engine.slots).unwrap_or(usize::MAX);
        Some(BatchTier::new(shared, slots))
    }

    /// The batch tier served with `shared` by an engine with `slots` slots.
    fn new(shared: Arc<Shared>, slots: usize) -> BatchTier {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        BatchTier {
            shared,
            slots,
            poll,
        }
    }

    /// Waits for the next look at the batch queue.
    pub(super) async fn tick(&mut self) {
        self.poll.tick().await;
    }

    /// Takes batch tasks from the queue while the worker, holding `held` tasks, has a slot
    /// that would otherwise stay free; stops at the first empty answer.
    pub(super) async fn take(&self, held: usize) -> Result<Vec<Delivery>, BrokerError> {
        let queue = self.shared.topology.requests_queue();
        let mut taken = Vec::new();
        while held + taken.len() < self.slots {
            match self.shared.settling.get(queue).await? {
                Some(delivery) => taken.push(delivery),
                None => break,
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
