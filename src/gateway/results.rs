//! The results of background responses and batch requests: every gateway replica consumes the
//! shared durable queue `gateway.results_queue` (competing consumers, manual acks) that their
//! tasks name as their `reply_to`. For a response, a worker's `started` message moves it to
//! `in_progress` and its reply to its final state, and sends the webhook; for a batch request
//! (its correlation id names the batch and the line), the reply becomes the line's outcome.
//! A message is acked only once Redis has recorded it, so a reply that arrives while every
//! gateway (or Redis) is down waits in the queue. Reconnects to RabbitMQ by itself.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::{self, BrokerError};
use crate::clock::unix_seconds;
use crate::config::Settings;
use crate::gateway::batches::{self, store::BatchStore};
use crate::gateway::responses::object::{self, Status};
use crate::gateway::responses::store::{Meta, Record, Store, StoreError, Transition};
use crate::gateway::responses::webhooks::Webhooks;
use crate::protocol::{Message, Reply};
use crate::retry::ReconnectBackoff;

/// Deliveries of results held at once by one gateway.
const PREFETCH: u16 = 32;

/// Consumes results until `shutdown`, reconnecting whenever the broker is lost.
pub async fn consume(
    settings: Settings,
    store: Arc<Store>,
    webhooks: Arc<Webhooks>,
    batches: Arc<BatchStore>,
    shutdown: CancellationToken,
) {
    let name = broker::process_name(&format!("{}-results", settings.gateway.connection_name));
    let mut backoff = ReconnectBackoff::new(&settings.broker);
    loop {
        let stores = Stores {
            responses: &store,
            webhooks: &webhooks,
            batches: &batches,
        };
        let session = session(&settings, &name, &stores, &shutdown);
        match session.await {
            Ok(()) => return,
            Err(e) => warn!(error = %e, "results consumer lost the broker; reconnecting"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Where results are recorded.
struct Stores<'a> {
    responses: &'a Arc<Store>,
    webhooks: &'a Arc<Webhooks>,
    batches: &'a Arc<BatchStore>,
}

async fn session(
    settings: &Settings,
    name: &str,
    stores: &Stores<'_>,
    shutdown: &CancellationToken,
) -> Result<(), BrokerError> {
    let connection = broker::connect(&settings.broker.url, name).await?;
    let channel = connection.create_channel().await?;
    let queue = &settings.gateway.results_queue;
    channel
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            broker::Topology::new(settings).parking_arguments(),
        )
        .await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            format!("{name}#results").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    info!(queue = %queue, "consuming background results");
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => {
                crate::broker::close(&connection, "gateway stopping").await;
                return Ok(());
            }
            next = deliveries.next() => match next {
                Some(delivery) => delivery?,
                None => return Err(BrokerError::ConsumerEnded(queue.clone())),
            },
        };
        let id = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.to_string());
        let shown = id.as_deref().unwrap_or_default();
        let recorded = match (id.as_deref(), Message::decode(&delivery.data)) {
            (Some(id), Some(message)) => match batches::object::parse_line_id(id) {
                Some((batch, index)) => record_line(stores.batches, &batch, index, message).await,
                None => record(stores.responses, stores.webhooks, id, message).await,
            },
            _ => {
                warn!(
                    correlation_id = %shown,
                    "a message that is not a contract-v1 result was dropped from the results queue"
                );
                Ok(())
            }
        };
        match recorded {
            Ok(()) => {
                delivery.acker.ack(BasicAckOptions::default()).await?;
            }
            Err(e) => {
                warn!(correlation_id = %shown, error = %e, "result not recorded; it goes back to the queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                delivery.acker.nack(requeue).await?;
            }
        }
    }
}

/// Records the reply of request `index` of batch `batch` (its other messages say nothing).
async fn record_line(
    batches: &BatchStore,
    batch: &str,
    index: usize,
    message: Message,
) -> Result<(), StoreError> {
    if let Message::Reply(reply) = message {
        let outcome = batches::outcome::Outcome::Answered {
            reply: Box::new(reply),
            at: unix_seconds(),
        };
        batches.record(batch, index, &outcome).await?;
    }
    Ok(())
}

/// Records one message of response `id`.
async fn record(
    store: &Arc<Store>,
    webhooks: &Arc<Webhooks>,
    id: &str,
    message: Message,
) -> Result<(), StoreError> {
    match message {
        Message::Started(_) => {
            if let Some(record) = store.get(id).await? {
                if record.status == Status::Queued {
                    let next = object::with_status(&record.object, Status::InProgress);
                    store
                        .transition(id, Status::Queued, Status::InProgress, &next)
                        .await?;
                }
            }
            Ok(())
        }
        Message::Chunk(_) => Ok(()),
        Message::Reply(reply) => finish(store, webhooks, id, &reply).await,
    }
}

/// Moves response `id` to the final state `reply` leads to, unless it already has one.
async fn finish(
    store: &Arc<Store>,
    webhooks: &Arc<Webhooks>,
    id: &str,
    reply: &Reply,
) -> Result<(), StoreError> {
    let status = object::outcome(reply);
    for _ in 0..5 {
        let Some(record) = store.get(id).await? else {
            if store.was_deleted(id).await? {
                return Ok(());
            }
            // Redis lost the record (restarted without persistence, or the TTL passed):
            // keep what the reply alone tells rather than drop the result.
            let bare = json!({
                "id": id, "object": "response", "created_at": unix_seconds(),
                "background": true, "output": [], "metadata": {}, "usage": null,
                "error": null, "incomplete_details": null,
            });
            let record = Record {
                status,
                object: object::finished(&bare, reply),
                meta: Meta::default(),
                input: Vec::new(),
            };
            store.create(id, &record).await?;
            webhooks.notify(store, id, status, None);
            return Ok(());
        };
        if record.status.is_final() {
            return Ok(());
        }
        let next = object::finished(&record.object, reply);
        match store.transition(id, record.status, status, &next).await? {
            Transition::Done => {
                webhooks.notify(store, id, status, record.meta.callback_url.as_deref());
                return Ok(());
            }
            Transition::Missing | Transition::Conflict(_) => continue,
        }
    }
    Ok(())
}
