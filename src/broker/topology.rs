//! The queues and exchanges warren relies on, declared idempotently at start.
//!
//! - requests queue (default `warren.requests`): durable, quorum or classic, dead-letters to
//!   the dead-letter exchange; quorum gets a delivery limit; optional backlog bound and
//!   (classic only) priorities.
//! - dead-letter exchange (`warren.dlx`, fanout, durable) bound to the dead-letter queue
//!   (`warren.dead`, durable, of `parking_queue_type`: classic by default, where requeueing
//!   after a peek keeps its order; quorum on a cluster).
//! - results queue (`warren.results`, durable, `parking_queue_type`) for replies without a
//!   `reply_to`.
//! - control exchange (`warren.control`, fanout, durable): cancel messages; each worker binds
//!   an exclusive, server-named queue to it.
//! - one delay queue per retry level (`warren.delay.1s`, ...: durable, quorum, with a fixed
//!   `x-message-ttl`) that dead-letters expired messages back to the requests queue *at least
//!   once*: a bounded requests queue that is full refuses the retry, and the broker keeps it
//!   in the delay queue and offers it again (classic queues dead-letter at most once: a
//!   refused retry would be dropped).
//! - with routing by model (`tasks_exchange` set): the tasks exchange (direct, durable), and
//!   for a worker the model's own requests queue (`warren.requests.<model>`, its delay queues
//!   `warren.delay.<model>.*`: the configuration names them) bound to it with the model's
//!   name. A publisher that serves no model declares the exchange, not a requests queue.
//! - the batch tier (generation only): the same requests and delay queues again with
//!   `.batch` appended to their names (`warren.requests.batch`, `warren.delay.batch.*`;
//!   bound with `<model>.batch` under routing by model), see [`crate::protocol::tier`].

use lapin::options::QueueBindOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::ExchangeKind::{Direct, Fanout};
use lapin::{Channel, Connection};

use super::headers::{int, table, text};
use super::management::Management;
use super::{declare, shards, BrokerError};
use crate::config::{QueueType, Settings, TopologySettings};
use crate::protocol::Tier;
use crate::retry::{DelayQueue, RetryPolicy};

/// Where a client publishes tasks and sends cancels.
#[derive(Debug, Clone)]
pub struct Route {
    /// Exchange tasks are published to (`""`: the default exchange).
    pub exchange: String,
    /// Routing key (the requests queue's name on the default exchange).
    pub routing_key: String,
    /// Fanout exchange of control messages (cancel).
    pub control_exchange: String,
}

/// The configured topology.
#[derive(Debug, Clone)]
pub struct Topology {
    settings: TopologySettings,
    delay_queues: Vec<DelayQueue>,
    /// Under routing by model: the key its requests queue is bound with (the model's name,
    /// plus the tier's suffix for the batch tier), if this process serves a model.
    model: Option<String>,
    /// The batch tier's queues, as a topology of their own; `None` for an embed worker and
    /// for the batch tier itself.
    batch: Option<Box<Topology>>,
    /// The management API, when configured: where [`shards::check_routes`] looks first.
    management: Option<Management>,
}

impl Topology {
    /// The topology described by `[topology]` and the delay queues of `[retry]`, with its
    /// batch tier.
    pub fn new(settings: &Settings) -> Self {
        let batch = settings.batch_tier().map(|batch| {
            Box::new(Topology {
                settings: batch.topology.clone(),
                delay_queues: RetryPolicy::new(&batch.retry).delay_queues(),
                model: batch
                    .routed_model()
                    .map(|m| Tier::Batch.key(m).into_owned()),
                batch: None,
                management: None,
            })
        });
        Topology {
            settings: settings.topology.clone(),
            delay_queues: RetryPolicy::new(&settings.retry).delay_queues(),
            model: settings.routed_model().map(str::to_owned),
            batch,
            management: Management::from_settings(settings).ok().flatten(),
        }
    }

    /// The batch tier's queues: `requests_queue` and the delay queues of batch tasks.
    pub fn batch_tier(&self) -> Option<&Topology> {
        self.batch.as_deref()
    }

    /// The delay queues of the retry policy.
    pub fn delay_queues(&self) -> &[DelayQueue] {
        &self.delay_queues
    }

    /// Arguments of a delay queue: a fixed TTL, then back to the requests queue.
    ///
    /// Always a quorum queue dead-lettering at least once, whatever `parking_queue_type`
    /// says: the requests queue is bounded (reject-publish), and only a quorum source keeps a
    /// dead letter its target refused and offers it again (RabbitMQ 3.10+, which requires
    /// the source's own overflow to be reject-publish; nothing else bounds a delay queue).
    /// Sharded, a retry goes back through the tasks exchange, so that it lands in a shard.
    pub fn delay_arguments(&self, queue: &DelayQueue) -> Vec<(&'static str, AMQPValue)> {
        let Route {
            exchange,
            routing_key,
            ..
        } = self.task_route();
        vec![
            ("x-queue-type", text(QueueType::Quorum.as_str())),
            ("x-message-ttl", int(queue.ttl.as_millis() as i64)),
            ("x-dead-letter-exchange", text(exchange)),
            ("x-dead-letter-routing-key", text(routing_key)),
            ("x-dead-letter-strategy", text("at-least-once")),
            ("x-overflow", text("reject-publish")),
        ]
    }

    /// Name of the requests queue: for a shard's consumer ([`Topology::shard_of`]), that shard.
    pub fn requests_queue(&self) -> &str {
        &self.settings.requests_queue
    }

    /// The routing key of a sharded tier: its model's (plus the tier's suffix); `None`
    /// without sharding or without a model.
    fn sharded_key(&self) -> Option<&str> {
        self.model.as_deref().filter(|_| self.settings.is_sharded())
    }

    /// The queues a worker consumes for this tier: the requests queue, or its shards.
    pub fn consumed_queues(&self) -> Vec<String> {
        match self.sharded_key() {
            Some(_) => self.settings.consumed_queues(&self.settings.requests_queue),
            None => vec![self.settings.requests_queue.clone()],
        }
    }

    /// The tier as the consumer of `queue` (one of [`Topology::consumed_queues`]) sees it:
    /// its requests queue is `queue`, where a recount goes and a dead letter says it came
    /// from; retries still go through [`Topology::task_route`].
    pub fn shard_of(&self, queue: &str) -> Topology {
        let mut shard = self.clone();
        shard.settings.requests_queue = queue.to_owned();
        shard.batch = None;
        shard
    }

    /// Where a task of this tier is published to reach its workers again (a retry leaving
    /// its delay queue, a replayed dead letter): the requests queue on the default exchange,
    /// or, sharded, the tasks exchange with the tier's key, which picks a shard.
    pub fn task_route(&self) -> Route {
        let (exchange, routing_key) = match self.sharded_key() {
            Some(key) => (self.settings.tasks_exchange.clone(), key.to_owned()),
            None => (String::new(), self.settings.requests_queue.clone()),
        };
        Route {
            exchange,
            routing_key,
            control_exchange: self.settings.control_exchange.clone(),
        }
    }

    /// Where an embedding task is published to reach the embed workers: the embeddings queue
    /// on the default exchange.
    pub fn embeddings_route(&self) -> Route {
        Route {
            exchange: String::new(),
            routing_key: self.settings.embeddings_queue.clone(),
            control_exchange: self.settings.control_exchange.clone(),
        }
    }

    /// Name of the dead-letter exchange.
    pub fn dead_letter_exchange(&self) -> &str {
        &self.settings.dead_letter_exchange
    }

    /// Name of the dead-letter queue.
    pub fn dead_letter_queue(&self) -> &str {
        &self.settings.dead_letter_queue
    }

    /// Name of the results queue.
    pub fn results_queue(&self) -> &str {
        &self.settings.results_queue
    }

    /// Name of the control exchange (fanout; cancel messages).
    pub fn control_exchange(&self) -> &str {
        &self.settings.control_exchange
    }

    /// Whether tasks are routed by model through the tasks exchange.
    pub fn routes_by_model(&self) -> bool {
        self.settings.routes_by_model()
    }

    /// Where upstream clients publish tasks, and where they send cancels. Under routing by
    /// model the routing key is the configured model (`engine.model_name`); a client that
    /// serves several models gives each task's model itself.
    pub fn client_route(&self) -> Route {
        let (exchange, routing_key) = if self.routes_by_model() {
            let model = self.model.clone().unwrap_or_default();
            (self.settings.tasks_exchange.clone(), model)
        } else {
            (String::new(), self.settings.requests_queue.clone())
        };
        Route {
            exchange,
            routing_key,
            control_exchange: self.settings.control_exchange.clone(),
        }
    }

    /// Arguments of the requests queue, as declared.
    pub fn requests_arguments(&self) -> Vec<(&'static str, AMQPValue)> {
        let s = &self.settings;
        let mut args = vec![
            ("x-queue-type", text(s.queue_type.as_str())),
            (
                "x-dead-letter-exchange",
                text(s.dead_letter_exchange.clone()),
            ),
        ];
        if s.queue_type == QueueType::Quorum {
            args.push(("x-delivery-limit", int(i64::from(s.delivery_limit))));
        }
        if s.max_length > 0 {
            args.push(("x-max-length", int(i64::from(s.max_length))));
            args.push(("x-overflow", text("reject-publish")));
        }
        if s.queue_type == QueueType::Classic && s.max_priority > 0 {
            args.push(("x-max-priority", int(i64::from(s.max_priority))));
        }
        args
    }

    /// Arguments of the queues that hold messages for later (dead letters, results).
    pub fn parking_arguments(&self) -> FieldTable {
        table([(
            "x-queue-type",
            text(self.settings.parking_queue_type.as_str()),
        )])
    }

    /// Declares everything, on a channel of its own. Safe to run any number of times with the
    /// same configuration; a queue that exists with other arguments is reported as
    /// [`BrokerError::TopologyMismatch`], a route left by another shard count as
    /// [`BrokerError::TopologyConflict`] (looked for first: see [`shards`]).
    pub async fn declare(&self, connection: &Connection) -> Result<(), BrokerError> {
        self.check_routes(connection).await?;
        let channel = connection.create_channel().await?;
        let declared = self.declare_on(&channel).await;
        super::close_channel(&channel, "topology declared").await;
        declared?;
        // A process of another shard count that declared meanwhile shows now.
        self.check_routes(connection).await
    }

    /// [`shards::check_routes`] for each tier's queue, when this process serves a model.
    async fn check_routes(&self, connection: &Connection) -> Result<(), BrokerError> {
        let Some(model) = &self.model else {
            return Ok(());
        };
        for tier in std::iter::once(self).chain(self.batch.as_deref()) {
            let queue = &tier.settings.requests_queue;
            let key = tier.model.as_deref().unwrap_or(model);
            let management = self.management.as_ref();
            shards::check_routes(connection, management, &tier.settings, key, queue).await?;
        }
        Ok(())
    }

    async fn declare_on(&self, channel: &Channel) -> Result<(), BrokerError> {
        let s = &self.settings;
        declare::exchange(
            channel,
            &s.dead_letter_exchange,
            Fanout,
            FieldTable::default(),
        )
        .await?;
        declare::queue(channel, &s.dead_letter_queue, self.parking_arguments()).await?;
        channel
            .queue_bind(
                s.dead_letter_queue.as_str().into(),
                s.dead_letter_exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        declare::queue(channel, &s.results_queue, self.parking_arguments()).await?;
        declare::exchange(channel, &s.control_exchange, Fanout, FieldTable::default()).await?;
        if self.routes_by_model() {
            declare::exchange(channel, &s.tasks_exchange, Direct, FieldTable::default()).await?;
            if self.model.is_none() {
                return Ok(());
            }
        }
        self.declare_tier(channel).await?;
        if let Some(batch) = &self.batch {
            batch.declare_tier(channel).await?;
        }
        Ok(())
    }

    /// Declares the tier's requests queue (bound to the tasks exchange under routing by
    /// model) and its delay queues.
    async fn declare_tier(&self, channel: &Channel) -> Result<(), BrokerError> {
        let s = &self.settings;
        if let Some(key) = self.sharded_key() {
            let arguments = table(self.requests_arguments());
            shards::declare(channel, s, key, &s.requests_queue, &arguments).await?;
        } else {
            declare::queue(channel, &s.requests_queue, table(self.requests_arguments())).await?;
        }
        // A model is only set under routing by model; a sharded tier is bound above.
        if let (Some(model), None) = (&self.model, self.sharded_key()) {
            channel
                .queue_bind(
                    s.requests_queue.as_str().into(),
                    s.tasks_exchange.as_str().into(),
                    model.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        for queue in &self.delay_queues {
            declare::queue(channel, &queue.name, table(self.delay_arguments(queue))).await?;
        }
        Ok(())
    }
}

#[path = "topology_describe.rs"]
mod describe;

#[cfg(test)]
#[path = "topology_tests.rs"]
mod tests;
