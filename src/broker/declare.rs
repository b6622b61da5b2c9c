//! Declaring one queue or exchange (durable, a refusal for other arguments reported as
//! [`BrokerError::TopologyMismatch`]), and looking whether one exists without declaring it.
//! [`super::Topology`] and [`super::shards`] say what to declare; this module says how.

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::Queue;
use lapin::{Channel, Connection, ExchangeKind};

use super::BrokerError;

/// Declares the durable exchange `name` of `kind` with `arguments`.
pub(super) async fn exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
    arguments: FieldTable,
) -> Result<(), BrokerError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(name.into(), kind, options, arguments)
        .await
        .map_err(|source| mismatch("exchange", name, source))
}

/// Declares the durable queue `name` with `arguments`.
pub(super) async fn queue(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> Result<(), BrokerError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), options, arguments)
        .await
        .map(|_| ())
        .map_err(|source| mismatch("queue", name, source))
}

/// The queue `name` as a passive declare finds it (its ready messages and consumers), or
/// `None` when it does not exist. A miss closes the channel (which lapin logs as an error),
/// so each look opens a channel of its own.
pub async fn passive_queue(
    connection: &Connection,
    name: &str,
) -> Result<Option<Queue>, lapin::Error> {
    let channel = connection.create_channel().await?;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let found = channel
        .queue_declare(name.into(), options, FieldTable::default())
        .await;
    found_or_missing(&channel, found).await
}

/// Whether the exchange `name` exists, by a passive declare on a channel of its own.
pub(super) async fn exchange_exists(
    connection: &Connection,
    name: &str,
) -> Result<bool, lapin::Error> {
    let channel = connection.create_channel().await?;
    let options = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    let found = channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Direct,
            options,
            FieldTable::default(),
        )
        .await;
    Ok(found_or_missing(&channel, found).await?.is_some())
}

/// What a passive declare on `channel` answered: found (the channel is closed here),
/// missing (the broker closed the channel with 404), or another failure.
async fn found_or_missing<T>(
    channel: &Channel,
    answer: Result<T, lapin::Error>,
) -> Result<Option<T>, lapin::Error> {
    match answer {
        Ok(found) => {
            super::close_channel(channel, "looked").await;
            Ok(Some(found))
        }
        Err(e) if e.to_string().contains("NOT_FOUND") => Ok(None),
        Err(e) => Err(e),
    }
}

/// A declare the broker refused: for other arguments than the existing one's (the broker
/// closes the channel with PRECONDITION_FAILED), or for another reason.
fn mismatch(kind: &'static str, name: &str, source: lapin::Error) -> BrokerError {
    if source.to_string().contains("PRECONDITION_FAILED") {
        BrokerError::TopologyMismatch {
            kind,
            name: name.to_owned(),
            source,
        }
    } else {
        BrokerError::Amqp(source)
    }
}
