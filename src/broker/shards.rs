//! Sharding: one model's traffic spread over several queues (`topology.shards` > 1), so that
//! it is not bound by what one queue's leader carries.
//!
//! Publishers do not change: they publish to the tasks exchange with the model's name as
//! routing key, as under plain routing by model. There the model's name is bound to a
//! consistent-hash exchange of the model's own (`<tasks_exchange>.<key>`, from RabbitMQ's
//! `rabbitmq_consistent_hash_exchange` plugin), which hands each task to one of the model's
//! shard queues (`<queue>.shard-<i>`, weight 1 each) by a hash of its `correlation_id`. So a
//! task still lands in exactly one queue, and every worker of the model consumes every shard.
//!
//! A direct exchange delivers to every destination bound with a key: a model's plain queue
//! and its shard exchange bound at once would give each task twice. Before declaring, a
//! worker therefore looks for routes a configuration with another shard count left behind
//! ([`check_routes`]) and refuses to start while one exists.

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};

use super::headers::{table, text};
use super::management::Management;
use super::BrokerError;
use crate::config::{shard_queue, TopologySettings};

/// The message property the shard exchange hashes: warren's publishers set it to the task's
/// id, and the wire contract recommends it.
pub const HASH_PROPERTY: &str = "correlation_id";

/// The exchange type of RabbitMQ's consistent-hash plugin.
const CONSISTENT_HASH: &str = "x-consistent-hash";

/// The shard exchange of routing key `key` (a model's name, or its batch tier's key).
pub fn shard_exchange(settings: &TopologySettings, key: &str) -> String {
    format!("{}.{key}", settings.tasks_exchange)
}

/// Declares the shard exchange of `key`, binds it to the tasks exchange with `key`, and
/// declares and binds the shards of `queue` with `arguments`.
pub(super) async fn declare(
    channel: &Channel,
    settings: &TopologySettings,
    key: &str,
    queue: &str,
    arguments: &FieldTable,
) -> Result<(), BrokerError> {
    let exchange = shard_exchange(settings, key);
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Custom(CONSISTENT_HASH.to_owned()),
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            table([("hash-property", text(HASH_PROPERTY))]),
        )
        .await
        .map_err(|source| refused_exchange(&exchange, source))?;
    channel
        .exchange_bind(
            exchange.as_str().into(),
            settings.tasks_exchange.as_str().into(),
            key.into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for index in 0..settings.shards {
        let shard = shard_queue(queue, index);
        channel
            .queue_declare(
                shard.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments.clone(),
            )
            .await
            .map_err(|source| super::topology::mismatch("queue", &shard, source))?;
        // The binding key is the shard's weight: every shard takes an equal share.
        channel
            .queue_bind(
                shard.as_str().into(),
                exchange.as_str().into(),
                "1".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Refuses the model's queue `queue` (routing key `key`) when the broker holds a route of
/// another shard count: sharded, the plain queue or a shard past `shards`; not sharded, the
/// shard exchange. Each look asks the management API when there is one, else (or when it
/// fails) makes a passive declare on a channel of its own.
pub(super) async fn check_routes(
    connection: &Connection,
    management: Option<&Management>,
    settings: &TopologySettings,
    key: &str,
    queue: &str,
) -> Result<(), BrokerError> {
    let exists = |kind, name| exists(connection, management, kind, name);
    let advice = "stop the workers that use it, let its queues drain, delete them and the \
                  shard exchange (rabbitmqctl delete_queue / the management UI), then start \
                  again; change topology.shards only with the model's fleet stopped";
    if settings.is_sharded() {
        let beyond = shard_queue(queue, settings.shards);
        for stale in [queue.to_owned(), beyond] {
            if exists(Kind::Queue, stale.clone()).await? {
                return Err(BrokerError::TopologyConflict(format!(
                    "queue `{stale}` exists, left by a configuration with another \
                     topology.shards than {shards}: tasks routed there would wait for a \
                     worker that never comes, or arrive twice; {advice}",
                    shards = settings.shards
                )));
            }
        }
    } else {
        let exchange = shard_exchange(settings, key);
        if exists(Kind::Exchange, exchange.clone()).await? {
            return Err(BrokerError::TopologyConflict(format!(
                "shard exchange `{exchange}` exists, left by a configuration with \
                 topology.shards > 1: with `{queue}` bound too, each task would arrive twice; \
                 {advice}"
            )));
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Queue,
    Exchange,
}

/// Whether a queue or exchange named `name` exists.
async fn exists(
    connection: &Connection,
    management: Option<&Management>,
    kind: Kind,
    name: String,
) -> Result<bool, BrokerError> {
    if let Some(api) = management {
        let path = match kind {
            Kind::Queue => "queues",
            Kind::Exchange => "exchanges",
        };
        match api.exists(path, &name).await {
            Ok(exists) => return Ok(exists),
            Err(e) => {
                tracing::debug!(error = %e, "the management API could not tell; asking over AMQP")
            }
        }
    }
    // A miss closes the channel with NOT_FOUND, which lapin logs as an error: expected here.
    tracing::info!(name = %name, "looking for a route another topology.shards left (a NOT_FOUND below is the expected answer)");
    let name = name.as_str();
    let channel = connection.create_channel().await?;
    let passive = match kind {
        Kind::Queue => channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|_| ()),
        Kind::Exchange => {
            channel
                .exchange_declare(
                    name.into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
        }
    };
    match passive {
        Ok(()) => {
            let _ = channel.close(200, "looked".into()).await;
            Ok(true)
        }
        // The broker closed the channel with 404: nothing of that name.
        Err(e) if e.to_string().contains("NOT_FOUND") => Ok(false),
        Err(e) => Err(BrokerError::Amqp(e)),
    }
}

/// A shard exchange the broker would not declare: without the plugin the broker says
/// `unknown exchange type`, which deserves the command that mends it.
fn refused_exchange(name: &str, source: lapin::Error) -> BrokerError {
    let said = source.to_string();
    if said.contains("unknown exchange type") || said.contains("COMMAND_INVALID") {
        BrokerError::TopologyConflict(format!(
            "the broker cannot declare the shard exchange `{name}` ({said}): topology.shards > 1 \
             needs RabbitMQ's consistent-hash exchange (rabbitmq-plugins enable \
             rabbitmq_consistent_hash_exchange)"
        ))
    } else {
        super::topology::mismatch("exchange", name, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiers_shard_exchange_is_the_tasks_exchange_and_its_key() {
        let vars = [
            ("WARREN__TOPOLOGY__TASKS_EXCHANGE", "warren.tasks"),
            ("WARREN__TOPOLOGY__SHARDS", "3"),
        ];
        let env = config::Environment::with_prefix("WARREN").source(Some(
            vars.into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        ));
        let settings = crate::config::Settings::load_from(None, env).expect("valid");
        let exchange = shard_exchange(&settings.topology, "m.batch");
        assert_eq!(exchange, "warren.tasks.m.batch");
    }
}
