//! The consume-ack loop: take a delivery, validate it, run it on the engine, publish the
//! reply (confirmed), and only then ack. A task that cannot succeed gets an error reply and a
//! dead-lettered copy of its original message, both confirmed, before its ack.
//!
//! Owns the fate of each delivery. It must not know AMQP framing details (the broker module
//! does) nor how tokens are produced (the engine does). The invariant it keeps: a delivery is
//! acked only after everything it owes has been confirmed by the broker; if publishing fails,
//! the delivery is returned to the queue (nack, requeue) so that nothing is lost.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};

use crate::broker::{self, headers, BrokerError, Published, Publisher, Topology};
use crate::config::Settings;
use crate::engine::{Engine, Generation, GenerationRequest};
use crate::protocol::{
    self, ErrorCode, Limits, Reply, ReplyStatus, TaskError, Timings, Usage, HEADER_ATTEMPTS,
    HEADER_ERROR, HEADER_ERROR_CODE, HEADER_FAILED_AT, HEADER_UNDELIVERABLE, HEADER_WORKER,
    WIRE_VERSION,
};

/// Persistent delivery mode (survives a broker restart in a durable queue).
const PERSISTENT: u8 = 2;

/// How long in-flight tasks may run on after a shutdown signal before they are requeued.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A worker failure that stops the consume loop.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Talking to the broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The broker ended the consumer (queue deleted, connection lost...).
    #[error("the broker ended the consumer: {0}")]
    ConsumerEnded(String),
}

/// Everything a task handler needs, shared by all in-flight tasks.
struct Shared {
    engine: Arc<Engine>,
    publisher: Publisher,
    topology: Topology,
    limits: Limits,
    worker_name: String,
}

/// Consumes the requests queue until `shutdown` resolves, then stops taking tasks, lets the
/// ones in flight finish (bounded by a grace period) and closes the connection.
pub async fn run(
    settings: &Settings,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let worker_name = broker::process_name(&settings.broker.connection_name);
    let connection = broker::connect(&settings.broker.url, &worker_name).await?;
    info!(
        broker = %settings.redacted_broker_url(),
        connection_name = %worker_name,
        "connected to RabbitMQ"
    );
    let topology = Topology::new(&settings.topology);
    let setup = connection
        .create_channel()
        .await
        .map_err(BrokerError::from)?;
    topology.declare(&setup).await?;
    let _ = setup.close(200, "topology declared".into()).await;

    let publisher = Publisher::open(&connection).await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(BrokerError::from)?;
    channel
        .basic_qos(settings.broker.prefetch, BasicQosOptions::default())
        .await
        .map_err(BrokerError::from)?;
    let consumer_tag = format!("{worker_name}#1");
    let mut consumer = channel
        .basic_consume(
            topology.requests_queue().into(),
            consumer_tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(BrokerError::from)?;
    info!(
        queue = topology.requests_queue(),
        consumer_tag = %consumer_tag,
        prefetch = settings.broker.prefetch,
        model = %engine.info().name,
        "consuming"
    );

    let shared = Arc::new(Shared {
        engine,
        publisher,
        topology,
        limits: Limits::from_settings(&settings.limits, &settings.sampling),
        worker_name,
    });
    let mut in_flight = JoinSet::new();
    tokio::pin!(shutdown);
    let ended = loop {
        tokio::select! {
            _ = &mut shutdown => break None,
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    in_flight.spawn(handle_delivery(shared.clone(), delivery));
                }
                Some(Err(e)) => break Some(e.to_string()),
                None => break Some("consumer cancelled".to_owned()),
            },
        }
    };

    if ended.is_none() {
        info!(
            in_flight = in_flight.len(),
            "shutting down: no new tasks are taken"
        );
        let _ = channel
            .basic_cancel(consumer_tag.as_str().into(), Default::default())
            .await;
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            left = in_flight.len(),
            "grace period over: unfinished tasks go back to the queue"
        );
        in_flight.abort_all();
    }
    // Closing the channel returns any unacked delivery to the queue.
    let _ = channel.close(200, "worker stopping".into()).await;
    let _ = connection.close(200, "worker stopping".into()).await;
    match ended {
        None => Ok(()),
        Some(reason) => Err(WorkerError::ConsumerEnded(reason)),
    }
}

/// What the task's properties say about it, read once.
struct TaskMeta {
    id: Option<String>,
    correlation_id: Option<String>,
    reply_to: Option<String>,
    attempt: u32,
    received: Instant,
    broker_wait: Duration,
}

impl TaskMeta {
    fn read(properties: &BasicProperties) -> TaskMeta {
        let message_id = properties.message_id().as_ref().map(|s| s.to_string());
        let correlation_id = properties.correlation_id().as_ref().map(|s| s.to_string());
        let reply_to = properties
            .reply_to()
            .as_ref()
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty());
        // x-warren-attempts counts the attempts already made; this delivery is the next one.
        let previous = headers::integer(properties, HEADER_ATTEMPTS).unwrap_or(0);
        let attempt = u32::try_from(previous.clamp(0, i64::from(u32::MAX - 1))).unwrap_or(0) + 1;
        let broker_wait = properties
            .timestamp()
            .map(|ts| {
                // AMQP timestamps are whole seconds (some clients send milliseconds): take the
                // latest instant the second allows, so the wait is never overstated.
                let sent_ms = if ts > 100_000_000_000 {
                    ts
                } else {
                    ts.saturating_mul(1000).saturating_add(999)
                };
                Duration::from_millis(now_ms().saturating_sub(sent_ms))
            })
            .unwrap_or_default();
        TaskMeta {
            id: message_id.or_else(|| correlation_id.clone()),
            correlation_id,
            reply_to,
            attempt,
            received: Instant::now(),
            broker_wait,
        }
    }
}

async fn handle_delivery(shared: Arc<Shared>, delivery: Delivery) {
    let meta = TaskMeta::read(&delivery.properties);
    let span = tracing::info_span!(
        "task",
        id = meta.id.as_deref().unwrap_or("-"),
        correlation_id = meta.correlation_id.as_deref().unwrap_or("-"),
        attempt = meta.attempt,
        outcome = tracing::field::Empty,
    );
    async move {
        let outcome = run_task(&shared, &delivery).await;
        let settled = match &outcome {
            Ok(generation) => {
                tracing::Span::current().record("outcome", "ok");
                finish_ok(&shared, &delivery, &meta, generation).await
            }
            Err(error) => {
                tracing::Span::current().record("outcome", error.code.as_str());
                finish_failed(&shared, &delivery, &meta, error).await
            }
        };
        match settled {
            Ok(()) => {
                if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                    // The broker will redeliver it: at-least-once, a duplicate reply is possible.
                    warn!(error = %e, "ack failed after the reply was confirmed");
                }
            }
            Err(e) => {
                warn!(error = %e, "could not publish what the task owes; returning it to the queue");
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                if let Err(e) = delivery.acker.nack(requeue).await {
                    warn!(error = %e, "nack failed; the broker requeues the task when the channel closes");
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Validates and runs one task.
async fn run_task(shared: &Shared, delivery: &Delivery) -> Result<Generation, TaskError> {
    let properties = &delivery.properties;
    protocol::check_content_properties(
        properties.content_type().as_ref().map(|s| s.as_str()),
        properties.content_encoding().as_ref().map(|s| s.as_str()),
    )?;
    let task = protocol::parse_task(&delivery.data, &shared.limits)?;
    if let Some(deadline) = task.deadline_ms {
        let now = now_ms();
        if now >= deadline {
            return Err(TaskError::new(
                ErrorCode::Expired,
                format!(
                    "the task's deadline_ms ({deadline}) passed {} ms before it could start",
                    now - deadline
                ),
            ));
        }
    }
    let request = GenerationRequest {
        input: task.input,
        max_tokens: task.max_tokens,
        sampling: task.sampling,
        stop: task.stop,
        timeout: task.timeout,
    };
    shared.engine.generate(request).await
}

fn timings(meta: &TaskMeta, generation: Option<&Generation>) -> Timings {
    let total = meta.received.elapsed();
    let (prompt, gen, slot_wait) = generation
        .map_or((Duration::ZERO, Duration::ZERO, Duration::ZERO), |g| {
            (g.prompt_time, g.generation_time, g.slot_wait)
        });
    let in_worker_before_start = total.saturating_sub(prompt + gen).max(slot_wait);
    Timings {
        queued: millis(meta.broker_wait + in_worker_before_start),
        prompt: millis(prompt),
        generation: millis(gen),
        total: millis(total),
    }
}

async fn finish_ok(
    shared: &Shared,
    delivery: &Delivery,
    meta: &TaskMeta,
    generation: &Generation,
) -> Result<(), BrokerError> {
    let reply = Reply {
        version: WIRE_VERSION,
        id: meta.id.clone(),
        status: ReplyStatus::Ok,
        text: Some(generation.text.clone()),
        finish_reason: Some(generation.finish_reason),
        usage: Some(Usage {
            prompt_tokens: generation.prompt_tokens,
            completion_tokens: generation.completion_tokens,
        }),
        timings_ms: timings(meta, Some(generation)),
        model: shared.engine.info().name.clone(),
        attempt: meta.attempt,
        error: None,
    };
    info!(
        prompt_tokens = generation.prompt_tokens,
        completion_tokens = generation.completion_tokens,
        total_ms = reply.timings_ms.total,
        "task completed"
    );
    publish_reply(shared, delivery, meta, &reply).await
}

/// A task that will not succeed: one error reply, one dead-lettered copy.
async fn finish_failed(
    shared: &Shared,
    delivery: &Delivery,
    meta: &TaskMeta,
    error: &TaskError,
) -> Result<(), BrokerError> {
    warn!(code = error.code.as_str(), reason = %error.message, "task failed");
    let reply = Reply::failure(
        meta.id.clone(),
        error,
        &shared.engine.info().name,
        meta.attempt,
        timings(meta, None),
    );
    publish_reply(shared, delivery, meta, &reply).await?;
    dead_letter(shared, delivery, meta.attempt, error).await
}

/// Publishes `reply` to the task's `reply_to` (or the results queue), confirmed. A reply whose
/// queue does not exist is kept in the results queue, marked with the lost `reply_to`.
async fn publish_reply(
    shared: &Shared,
    delivery: &Delivery,
    meta: &TaskMeta,
    reply: &Reply,
) -> Result<(), BrokerError> {
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT)
        .with_timestamp(now_ms() / 1000)
        .with_type("warren.reply".into())
        .with_app_id("warren".into());
    if let Some(correlation_id) = delivery.properties.correlation_id() {
        properties = properties.with_correlation_id(correlation_id.clone());
    }
    if let Some(message_id) = delivery.properties.message_id() {
        properties = properties.with_message_id(message_id.clone());
    }
    let body = reply.to_bytes();
    let results = shared.topology.results_queue();
    if let Some(reply_to) = &meta.reply_to {
        match shared
            .publisher
            .publish("", reply_to, true, &body, properties.clone())
            .await?
        {
            Published::Delivered => return Ok(()),
            Published::Returned => {
                warn!(reply_to = %reply_to, queue = results, "reply queue does not exist; keeping the reply in the results queue");
                properties = headers::with_headers(
                    properties,
                    [(HEADER_UNDELIVERABLE, headers::text(reply_to.clone()))],
                );
            }
        }
    }
    match shared
        .publisher
        .publish("", results, true, &body, properties)
        .await?
    {
        Published::Delivered => Ok(()),
        Published::Returned => Err(BrokerError::Nacked(results.to_owned())),
    }
}

/// Publishes a copy of the original task, with its properties and the reason added as
/// headers, to the dead-letter exchange; confirmed.
async fn dead_letter(
    shared: &Shared,
    delivery: &Delivery,
    attempts: u32,
    error: &TaskError,
) -> Result<(), BrokerError> {
    let properties = headers::with_headers(
        headers::republishable(&delivery.properties),
        [
            (HEADER_ERROR_CODE, headers::text(error.code.as_str())),
            (HEADER_ERROR, headers::text(error.message.clone())),
            (HEADER_ATTEMPTS, headers::int(i64::from(attempts))),
            (HEADER_WORKER, headers::text(shared.worker_name.clone())),
            (HEADER_FAILED_AT, headers::int(now_ms() as i64)),
        ],
    )
    .with_delivery_mode(PERSISTENT);
    let exchange = shared.topology.dead_letter_exchange();
    match shared
        .publisher
        .publish(
            exchange,
            shared.topology.requests_queue(),
            true,
            &delivery.data,
            properties,
        )
        .await?
    {
        Published::Delivered => Ok(()),
        Published::Returned => Err(BrokerError::Nacked(exchange.to_owned())),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
