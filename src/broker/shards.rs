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

use lapin::options::{ExchangeBindOptions, QueueBindOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};

use super::headers::{table, text};
use super::management::Management;
use super::{declare, BrokerError};
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
    let kind = ExchangeKind::Custom(CONSISTENT_HASH.to_owned());
    let arguments_of_exchange = table([("hash-property", text(HASH_PROPERTY))]);
    declare::exchange(channel, &exchange, kind, arguments_of_exchange)
        .await
        .map_err(|e| missing_plugin(&exchange, e))?;
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
        declare::queue(channel, &shard, arguments.clone()).await?;
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
/// shard exchange or a shard. Asks the management API when there is one (every shard of the
/// queue in one call); else, or when it fails, makes passive declares, each on a channel of
/// its own, of the plain queue and the first shard past `shards`, or of the shard exchange.
/// Run before declaring, and again after (a worker of another shard count may have declared
/// meanwhile).
pub(super) async fn check_routes(
    connection: &Connection,
    management: Option<&Management>,
    settings: &TopologySettings,
    key: &str,
    queue: &str,
) -> Result<(), BrokerError> {
    let exchange = shard_exchange(settings, key);
    let listed = match management {
        Some(api) => match api.queue_and_shards(queue).await {
            Ok(names) => Some((names, api.exchange_exists(&exchange).await)),
            Err(e) => {
                tracing::debug!(error = %e, "the management API could not list the queues; asking over AMQP");
                None
            }
        },
        None => None,
    };
    let stale = match listed {
        Some((names, Ok(found))) => stale_of(settings, queue, &names, found.then_some(&*exchange)),
        _ => stale_by_amqp(connection, settings, queue, &exchange).await?,
    };
    if stale.is_empty() {
        return Ok(());
    }
    Err(BrokerError::TopologyConflict(format!(
        "{} left by a configuration with another topology.shards than {shards}: tasks routed \
         there would wait for a worker that never comes, or arrive twice. Stop the workers \
         that use them, let the queues drain, delete them, the shard exchange and the model's \
         delay queues (their dead-letter target differs too), then start again; change \
         topology.shards only with the model's fleet stopped",
        stale.join(", "),
        shards = settings.shards
    )))
}

/// What of the queues `names` (the queue and its shards) and the shard exchange (when it
/// exists) contradicts `settings`' shard count.
fn stale_of(
    settings: &TopologySettings,
    queue: &str,
    names: &[String],
    exchange: Option<&str>,
) -> Vec<String> {
    let shard_prefix = format!("{queue}.shard-");
    let shard_index = |name: &str| name.strip_prefix(&shard_prefix)?.parse::<u16>().ok();
    let mut queues: Vec<&String> = names
        .iter()
        .filter(|name| match (settings.is_sharded(), shard_index(name)) {
            (true, Some(index)) => index >= settings.shards,
            (true, None) => name.as_str() == queue,
            (false, index) => index.is_some(),
        })
        .collect();
    queues.sort();
    let mut stale: Vec<String> = queues.iter().map(|q| format!("queue `{q}`")).collect();
    match exchange {
        Some(exchange) if !settings.is_sharded() => {
            stale.push(format!("shard exchange `{exchange}`"))
        }
        _ => {}
    }
    stale
}

/// [`stale_of`] from passive declares: only the likeliest leftovers.
async fn stale_by_amqp(
    connection: &Connection,
    settings: &TopologySettings,
    queue: &str,
    exchange: &str,
) -> Result<Vec<String>, BrokerError> {
    // A miss closes the channel with NOT_FOUND, which lapin logs as an error: expected here.
    tracing::info!(
        queue,
        "looking for routes another topology.shards left (a NOT_FOUND below is the expected answer)"
    );
    let mut stale = Vec::new();
    if settings.is_sharded() {
        for name in [queue.to_owned(), shard_queue(queue, settings.shards)] {
            if declare::passive_queue(connection, &name).await?.is_some() {
                stale.push(format!("queue `{name}`"));
            }
        }
    } else if declare::exchange_exists(connection, exchange).await? {
        stale.push(format!("shard exchange `{exchange}`"));
    }
    Ok(stale)
}

/// A shard exchange the broker would not declare: without the plugin the broker says
/// `unknown exchange type`, which deserves the command that mends it.
fn missing_plugin(name: &str, error: BrokerError) -> BrokerError {
    let said = error.to_string();
    if said.contains("unknown exchange type") || said.contains("COMMAND_INVALID") {
        BrokerError::TopologyConflict(format!(
            "the broker cannot declare the shard exchange `{name}` ({said}): topology.shards > 1 \
             needs RabbitMQ's consistent-hash exchange (rabbitmq-plugins enable \
             rabbitmq_consistent_hash_exchange)"
        ))
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(shards: &str) -> TopologySettings {
        let vars = [
            ("WARREN__TOPOLOGY__TASKS_EXCHANGE", "t"),
            ("WARREN__TOPOLOGY__SHARDS", shards),
        ];
        let env = config::Environment::with_prefix("WARREN").source(Some(
            vars.into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        ));
        let settings = crate::config::Settings::load_from(None, env).expect("valid");
        settings.topology
    }

    #[test]
    fn a_tiers_shard_exchange_is_the_tasks_exchange_and_its_key() {
        assert_eq!(shard_exchange(&topology("3"), "m.batch"), "t.m.batch");
    }

    #[test]
    fn a_route_of_another_shard_count_is_stale_and_one_of_this_count_is_not() {
        let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let two = topology("2");
        let ours = names(&["q.shard-0", "q.shard-1"]);
        assert!(stale_of(&two, "q", &ours, None).is_empty());
        // Fewer shards than before, or the plain queue of an unsharded fleet.
        let left = names(&[
            "q",
            "q.shard-0",
            "q.shard-1",
            "q.shard-2",
            "q.shard-3",
            "qx.shard-9",
        ]);
        assert_eq!(
            stale_of(&two, "q", &left, None),
            ["queue `q`", "queue `q.shard-2`", "queue `q.shard-3`"]
        );
        // Back to one queue: the shards and the shard exchange are stale, the queue is not.
        let one = topology("1");
        assert_eq!(
            stale_of(&one, "q", &names(&["q", "q.shard-0"]), Some("t.m")),
            ["queue `q.shard-0`", "shard exchange `t.m`"]
        );
        assert!(stale_of(&one, "q", &names(&["q"]), None).is_empty());
    }
}
