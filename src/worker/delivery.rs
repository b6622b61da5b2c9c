//! The fate of one delivery: validate, run on the engine, then exactly one of
//! - **ok**: publish the reply (confirmed), ack;
//! - **retry**: republish a copy to the delay queue of its level (confirmed), ack — no worker
//!   holds the task while it waits;
//! - **give up**: publish one error reply and a dead-lettered copy (both confirmed), ack;
//! - **poison**: delivered too many times without an outcome (the worker kept dying on it):
//!   treated as a final failure instead of being run again;
//! - **abandoned** (shutdown grace over, or channel lost): nack with requeue, best effort.
//!
//! The invariant: a delivery is acked only after everything it owes has been confirmed by the
//! broker; when publishing fails the delivery is requeued, so nothing is lost.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::BasicProperties;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::stream::{self, ChunkTarget};
use super::{faults, Shared};
use crate::broker::{headers, BrokerError, Published};
use crate::engine::{Generation, GenerationRequest};
use crate::protocol::{
    self, ErrorCode, Reply, ReplyStatus, TaskError, Timings, Usage, HEADER_ATTEMPTS, HEADER_ERROR,
    HEADER_ERROR_CODE, HEADER_FAILED_AT, HEADER_LAST_ERROR, HEADER_LAST_ERROR_CODE,
    HEADER_REDELIVERIES, HEADER_UNDELIVERABLE, HEADER_WORKER, HEADER_WORKER_MICROS, WIRE_VERSION,
};
use crate::retry::Decision;
use crate::telemetry::Completion;

/// Persistent delivery mode (survives a broker restart in a durable queue).
const PERSISTENT: u8 = 2;

/// Header RabbitMQ's quorum queues set on a redelivered message: earlier deliveries that
/// ended without an ack.
const QUORUM_DELIVERY_COUNT: &str = "x-delivery-count";

/// Handles one delivery to the end, or gives it back when `abandon` is cancelled.
pub(crate) async fn handle(shared: Arc<Shared>, delivery: Delivery, abandon: CancellationToken) {
    let meta = TaskMeta::read(&delivery);
    let span = tracing::info_span!(
        "task",
        id = meta.id.as_deref().unwrap_or("-"),
        correlation_id = meta.correlation_id.as_deref().unwrap_or("-"),
        attempt = meta.attempt,
        outcome = tracing::field::Empty,
        code = tracing::field::Empty,
    );
    async move {
        let metrics = &shared.telemetry.metrics;
        metrics.in_flight(1);
        tokio::select! {
            _ = abandon.cancelled() => {
                record_outcome(&shared, "abandoned", "");
                requeue(&delivery).await;
            }
            _ = settle(&shared, &delivery, &meta) => {}
        }
        metrics.in_flight(-1);
    }
    .instrument(span)
    .await
}

/// What the task's properties say about it, read once.
struct TaskMeta {
    id: Option<String>,
    correlation_id: Option<String>,
    reply_to: Option<String>,
    /// This delivery's attempt, counted from 1.
    attempt: u32,
    received: Instant,
    /// Lower bound of the time since the task was published (AMQP `timestamp`).
    age: Option<Duration>,
}

impl TaskMeta {
    fn read(delivery: &Delivery) -> TaskMeta {
        let properties = &delivery.properties;
        let message_id = properties.message_id().as_ref().map(|s| s.to_string());
        let correlation_id = properties.correlation_id().as_ref().map(|s| s.to_string());
        let reply_to = properties
            .reply_to()
            .as_ref()
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty());
        // x-warren-attempts counts the attempts already made; this delivery is the next one.
        let previous = headers::integer(properties, HEADER_ATTEMPTS).unwrap_or(0);
        let attempt = u32::try_from(previous.clamp(0, 1_000)).unwrap_or(0) + 1;
        let age = properties.timestamp().map(|ts| {
            // AMQP timestamps are whole seconds (some clients send milliseconds): take the
            // latest instant the second allows, so the age is never overstated.
            let sent_ms = if ts > 100_000_000_000 {
                ts
            } else {
                ts.saturating_mul(1000).saturating_add(999)
            };
            Duration::from_millis(now_ms().saturating_sub(sent_ms))
        });
        TaskMeta {
            id: message_id.or_else(|| correlation_id.clone()),
            correlation_id,
            reply_to,
            attempt,
            received: Instant::now(),
            age,
        }
    }
}

/// Settles a delivery: decides its outcome, publishes what it owes, then acks (or requeues
/// when publishing failed).
async fn settle(shared: &Shared, delivery: &Delivery, meta: &TaskMeta) {
    let published = match redelivery_verdict(shared, delivery) {
        Redelivery::Poison(deliveries) => {
            let error = TaskError::new(
                ErrorCode::Internal,
                format!(
                    "the task was delivered {deliveries} times without finishing (the worker \
                     crashed or was stopped while running it); it is not run again"
                ),
            );
            record_outcome(shared, "poison", error.code.as_str());
            give_up(shared, delivery, meta, &error).await
        }
        Redelivery::Recount(deliveries) => {
            record_outcome(shared, "recounted", "");
            recount(shared, delivery, deliveries).await
        }
        Redelivery::Run => match run_task(shared, delivery, meta).await {
            Ok(generation) => {
                record_outcome(shared, "ok", "");
                finish_ok(shared, delivery, meta, &generation).await
            }
            Err(error) => match shared.retry.decide(error.code, meta.attempt) {
                Decision::Retry { queue, delay } => {
                    record_outcome(shared, "retried", error.code.as_str());
                    schedule_retry(shared, delivery, meta, &error, &queue, delay).await
                }
                Decision::GiveUp => {
                    record_outcome(shared, "error", error.code.as_str());
                    give_up(shared, delivery, meta, &error).await
                }
            },
        },
    };
    match published {
        Ok(()) => {
            if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                // The broker will deliver it again: at least once, so a duplicate is possible.
                warn!(error = %e, "ack failed after everything was confirmed");
            }
        }
        Err(e) => {
            warn!(error = %e, "could not publish what the task owes; returning it to the queue");
            requeue(delivery).await;
        }
    }
}

/// Records how the task settled, in its span and in `warren_tasks_total`.
fn record_outcome(shared: &Shared, outcome: &str, code: &str) {
    let span = tracing::Span::current();
    span.record("outcome", outcome);
    if !code.is_empty() {
        span.record("code", code);
    }
    shared.telemetry.metrics.task_settled(outcome, code);
}

async fn requeue(delivery: &Delivery) {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(e) = delivery.acker.nack(options).await {
        debug!(error = %e, "nack failed; the broker requeues the task when the channel closes");
    }
}

/// What earlier, unfinished deliveries of this message mean for this one.
enum Redelivery {
    /// Run it.
    Run,
    /// Delivered this many times without an outcome: a final failure.
    Poison(u32),
    /// Classic queue: the broker does not count deliveries, so warren republishes the task
    /// with its count in a header and acks this delivery instead of running it.
    Recount(u32),
}

fn redelivery_verdict(shared: &Shared, delivery: &Delivery) -> Redelivery {
    let properties = &delivery.properties;
    let earlier = if shared.classic_queue {
        let counted = headers::integer(properties, HEADER_REDELIVERIES).unwrap_or(0);
        counted + i64::from(delivery.redelivered)
    } else {
        headers::integer(properties, QUORUM_DELIVERY_COUNT).unwrap_or(0)
    };
    let earlier = u32::try_from(earlier.max(0)).unwrap_or(u32::MAX);
    if earlier >= shared.max_redeliveries {
        Redelivery::Poison(earlier + 1)
    } else if shared.classic_queue && delivery.redelivered {
        Redelivery::Recount(earlier)
    } else {
        Redelivery::Run
    }
}

/// Validates and runs one task.
async fn run_task(
    shared: &Shared,
    delivery: &Delivery,
    meta: &TaskMeta,
) -> Result<Generation, TaskError> {
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
    if let (Some(age), max_age_ms) = (meta.age, shared.limits.max_age_ms) {
        if max_age_ms > 0 && age > Duration::from_millis(max_age_ms) {
            return Err(TaskError::new(
                ErrorCode::Expired,
                format!(
                    "the task waited at least {} ms since it was published, more than the limit of {max_age_ms} ms",
                    age.as_millis()
                ),
            ));
        }
    }
    shared.telemetry.metrics.attempt_started();
    if shared.fault_injection {
        faults::inject(&task.input, meta.attempt)?;
    }
    // Chunks need somewhere to go: a task without reply_to gets only its final reply.
    let streaming = match (&meta.reply_to, task.stream) {
        (Some(reply_to), true) => Some(stream::forward(
            shared.publisher.clone(),
            ChunkTarget {
                reply_to: reply_to.clone(),
                correlation_id: meta.correlation_id.clone(),
                id: meta.id.clone(),
                attempt: meta.attempt,
            },
            &shared.stream,
        )),
        _ => None,
    };
    let (sender, forwarder) = streaming.unzip();
    let request = GenerationRequest {
        input: task.input,
        max_tokens: task.max_tokens,
        sampling: task.sampling,
        stop: task.stop,
        timeout: task.timeout,
        stream: sender,
    };
    let generation = shared.engine.generate(request).await;
    if let Some(forwarder) = forwarder {
        // The engine dropped the sender with the job: every chunk is published (or failed)
        // before the final reply goes out.
        match forwarder.await {
            Ok(Ok(chunks)) => debug!(chunks, "streamed"),
            Ok(Err(e)) => warn!(error = %e, "some chunks could not be published"),
            Err(e) => warn!(error = %e, "the chunk forwarder failed"),
        }
    }
    generation
}

fn timings(meta: &TaskMeta, generation: Option<&Generation>) -> Timings {
    let total = meta.received.elapsed();
    let (prompt, gen, slot_wait) = generation
        .map_or((Duration::ZERO, Duration::ZERO, Duration::ZERO), |g| {
            (g.prompt_time, g.generation_time, g.slot_wait)
        });
    let in_worker_before_start = total.saturating_sub(prompt + gen).max(slot_wait);
    let in_broker = meta
        .age
        .map_or(Duration::ZERO, |age| age.saturating_sub(total));
    Timings {
        queued: millis(in_broker + in_worker_before_start),
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
    let total = meta.received.elapsed();
    let before_generation = total.saturating_sub(generation.generation_time);
    shared.telemetry.metrics.completed(&Completion {
        queue_wait: reply.timings_ms.queued as f64 / 1000.0,
        time_to_first_token: before_generation.as_secs_f64(),
        total: total.as_secs_f64(),
        generation: generation.generation_time.as_secs_f64(),
        prompt_tokens: generation.prompt_tokens,
        completion_tokens: generation.completion_tokens,
    });
    publish_reply(shared, delivery, meta, &reply).await
}

/// A task that will not succeed: one error reply, one dead-lettered copy.
async fn give_up(
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

/// Republishes the task to the delay queue of its level with the attempt count; the queue's
/// TTL sends it back to the requests queue.
async fn schedule_retry(
    shared: &Shared,
    delivery: &Delivery,
    meta: &TaskMeta,
    error: &TaskError,
    queue: &str,
    delay: Duration,
) -> Result<(), BrokerError> {
    info!(
        code = error.code.as_str(),
        reason = %error.message,
        queue,
        delay_ms = delay.as_millis() as u64,
        "attempt failed; retrying later"
    );
    let properties = headers::with_headers(
        headers::republishable(&delivery.properties),
        [
            (HEADER_ATTEMPTS, headers::int(i64::from(meta.attempt))),
            (HEADER_LAST_ERROR_CODE, headers::text(error.code.as_str())),
            (HEADER_LAST_ERROR, headers::text(error.message.clone())),
        ],
    )
    .with_expiration(delay.as_millis().to_string().as_str().into())
    .with_delivery_mode(PERSISTENT);
    publish_exactly(shared, "", queue, &delivery.data, properties).await
}

/// Classic queues: republishes a redelivered task with its delivery count, so that a task
/// that keeps killing workers is caught (see [`Redelivery::Recount`]).
async fn recount(shared: &Shared, delivery: &Delivery, earlier: u32) -> Result<(), BrokerError> {
    warn!(
        earlier_deliveries = earlier,
        "redelivered task (a worker stopped while holding it); counting and requeueing it"
    );
    let properties = headers::with_headers(
        headers::republishable(&delivery.properties),
        [(HEADER_REDELIVERIES, headers::int(i64::from(earlier)))],
    );
    let queue = shared.topology.requests_queue();
    publish_exactly(shared, "", queue, &delivery.data, properties).await
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
    let worker_micros = i64::try_from(meta.received.elapsed().as_micros()).unwrap_or(i64::MAX);
    properties = headers::with_headers(
        properties,
        [(HEADER_WORKER_MICROS, headers::int(worker_micros))],
    );
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
    publish_exactly(shared, "", results, &body, properties).await
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
    let routing_key = shared.topology.requests_queue();
    publish_exactly(shared, exchange, routing_key, &delivery.data, properties).await?;
    shared.telemetry.metrics.dead_lettered(error.code.as_str());
    Ok(())
}

/// Publishes, mandatory and confirmed; a message the broker could not route is an error.
async fn publish_exactly(
    shared: &Shared,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), BrokerError> {
    match shared
        .publisher
        .publish(exchange, routing_key, true, body, properties)
        .await?
    {
        Published::Delivered => Ok(()),
        Published::Returned => Err(BrokerError::Unroutable(format!("{exchange}/{routing_key}"))),
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
