//! The worker's consumers of its interactive tier: one per queue it consumes (the requests
//! queue, or each shard of it: [`crate::broker::shards`]), merged into one stream. Each queue
//! has a transactional channel of its own, so that the shards' commits run side by side and
//! each commit touches one task queue; each delivery comes with the [`Shared`] of the queue
//! it came from (its channel, and its name for a recount or a dead letter).

use std::sync::Arc;

use futures_util::stream::{self, BoxStream, SelectAll};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Connection;

use super::Shared;
use crate::broker::{BrokerError, TxChannel};

/// A delivery with what its handler shares, or why the session's consuming ended.
type Next = Result<(Arc<Shared>, Delivery), String>;

/// The consumers of one session.
pub(super) struct Consumers {
    /// Each queue's consumer tag and channel.
    tags: Vec<(String, Arc<TxChannel>)>,
    /// What a delivery's handler shares, per queue (in [`crate::broker::Topology::consumed_queues`]'s order).
    shared: Vec<Arc<Shared>>,
    deliveries: SelectAll<BoxStream<'static, Next>>,
}

impl Consumers {
    /// Consumes every queue of `base`'s tier, each with `prefetch`: the first on `base`'s
    /// channel, each further one (a shard) on a channel of its own from `connection`.
    pub(super) async fn start(
        connection: &Connection,
        base: &Shared,
        worker_name: &str,
        prefetch: u16,
    ) -> Result<Consumers, BrokerError> {
        let mut consumers = Consumers {
            tags: Vec::new(),
            shared: Vec::new(),
            deliveries: SelectAll::new(),
        };
        for (index, queue) in base.topology.consumed_queues().into_iter().enumerate() {
            let settling = match index {
                0 => base.settling.clone(),
                _ => Arc::new(TxChannel::select(connection.create_channel().await?).await?),
            };
            let channel = settling.channel();
            // basic.qos counts per consumer: the consumer below gets `prefetch`.
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            let tag = format!("{worker_name}#{}", index + 1);
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let shared = Arc::new(Shared {
                topology: base.topology.shard_of(&queue),
                settling: settling.clone(),
                ..base.clone()
            });
            let ended = format!("the broker cancelled the consumer of {queue}");
            let handed = shared.clone();
            // Any consumer ending ends the session: its queue's deliveries would stop.
            let stream = consumer
                .map(move |next| next.map(|d| (handed.clone(), d)).map_err(|e| e.to_string()))
                .chain(stream::once(async move { Err(ended) }));
            consumers.deliveries.push(stream.boxed());
            consumers.tags.push((tag, settling));
            consumers.shared.push(shared);
        }
        Ok(consumers)
    }

    /// What each queue's handlers share, in the order the queues were consumed.
    pub(super) fn shared(&self) -> &[Arc<Shared>] {
        &self.shared
    }

    /// The next delivery, or why consuming ended.
    pub(super) async fn next(&mut self) -> Next {
        match self.deliveries.next().await {
            Some(next) => next,
            None => Err("no queue to consume".to_owned()),
        }
    }

    /// The consumer tags, for the log.
    pub(super) fn tags(&self) -> Vec<&str> {
        self.tags.iter().map(|(tag, _)| tag.as_str()).collect()
    }

    /// Cancels every consumer: no new deliveries; those held are still settled. Takes the
    /// consumers (their stream is `Send` but not `Sync`: no borrow of it may cross an await).
    pub(super) async fn cancel(self) {
        for (tag, settling) in &self.tags {
            let _ = settling.cancel_consumer(tag).await;
        }
    }
}
