//! `warren topology`'s description of a [`Topology`]: every queue and exchange, one a line,
//! with its arguments and what it is for.

use lapin::types::AMQPValue;

use super::Topology;
use crate::broker::shards;
use crate::protocol::Tier;

impl Topology {
    /// A human-readable description of the topology, for `warren topology`.
    pub fn describe(&self) -> String {
        let s = &self.settings;
        let args = self
            .requests_arguments()
            .into_iter()
            .map(|(k, v)| format!("{k}={}", show(&v)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut text = String::new();
        for queue in self.consumed_queues() {
            text.push_str(&format!("queue    {queue}  durable, {args}\n"));
        }
        for queue in self.batch.iter().flat_map(|batch| batch.consumed_queues()) {
            text.push_str(&format!(
                "queue    {queue}  durable, {args}: the batch tier, taken when a slot is free\n"
            ));
        }
        text.push_str(&format!(
            "exchange {dlx}  fanout, durable\n\
             queue    {dead}  durable, x-queue-type={parking}, bound to {dlx}\n\
             queue    {results}  durable, x-queue-type={parking}\n\
             exchange {control}  fanout, durable (cancel messages; each worker binds its own queue)\n",
            dlx = s.dead_letter_exchange,
            dead = s.dead_letter_queue,
            results = s.results_queue,
            control = s.control_exchange,
            parking = s.parking_queue_type.as_str(),
        ));
        for tier in std::iter::once(self).chain(self.batch.as_deref()) {
            for queue in &tier.delay_queues {
                text.push_str(&format!(
                    "queue    {}  durable, x-queue-type=quorum, x-message-ttl={}, dead-letters to {} (at least once)\n",
                    queue.name,
                    queue.ttl.as_millis(),
                    match tier.sharded_key() {
                        Some(key) => format!("exchange {} with key {key}", s.tasks_exchange),
                        None => tier.settings.requests_queue.clone(),
                    }
                ));
            }
            if let Some(key) = tier.sharded_key() {
                text.push_str(&format!(
                    "exchange {exchange}  x-consistent-hash (hash-property={property}), bound to {tasks} with {key}: sends each task to one of the {shards} shards {queue}.shard-<i> above\n",
                    exchange = shards::shard_exchange(s, key),
                    property = shards::HASH_PROPERTY,
                    tasks = s.tasks_exchange,
                    shards = s.shards,
                    queue = tier.settings.requests_queue,
                ));
            }
        }
        match (self.routes_by_model(), &self.model) {
            (true, model) => text.push_str(&format!(
                "exchange {exchange}  direct, durable: publish tasks here with the model's name as routing key (plus `.batch` for the batch tier){bound}\n",
                exchange = s.tasks_exchange,
                bound = model
                    .as_ref()
                    .map(|m| match self.sharded_key() {
                        Some(_) => format!(" ({} is bound with {m})", shards::shard_exchange(s, m)),
                        None => format!(" ({} is bound with {m})", s.requests_queue),
                    })
                    .unwrap_or_default(),
            )),
            (false, _) => text.push_str(&format!(
                "publish tasks to the default exchange (\"\") with routing key {} (batch tier: {})\n",
                s.requests_queue,
                Tier::Batch.key(&s.requests_queue)
            )),
        }
        text
    }
}

pub(super) fn show(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::LongLongInt(v) => v.to_string(),
        other => format!("{other:?}"),
    }
}
