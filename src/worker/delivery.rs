//! One delivery from receipt to ack: read its properties once ([`TaskMeta`]), validate and
//! run it on the engine (watching for a cancel), let [`super::fate`] decide what it comes to,
//! have [`super::outbox`] publish what that owes, then ack — or, when abandoned (shutdown
//! grace over, channel lost), nack with requeue, best effort.
//!
//! The invariant: a delivery is acked only after everything it owes has been confirmed by the
//! broker; when publishing fails the delivery is requeued, so nothing is lost.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::fate::{self, BeforeRun, Fate, Redeliveries};
use super::outbox::Outbox;
use super::stream::{self, ChunkTarget};
use super::{faults, Shared};
use crate::broker::headers;
use crate::engine::{Generation, GenerationRequest};
use crate::protocol::{
    self, ErrorCode, TaskError, Timings, HEADER_ATTEMPTS, HEADER_REDELIVERIES,
    QUORUM_DELIVERY_COUNT,
};

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
                tracing::Span::current().record("outcome", "abandoned");
                shared.telemetry.metrics.task_settled("abandoned", "");
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
pub(crate) struct TaskMeta {
    /// `message_id`, else `correlation_id`: the reply's `id`, and what a cancel names.
    pub(crate) id: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) reply_to: Option<String>,
    /// This delivery's attempt, counted from 1.
    pub(crate) attempt: u32,
    pub(crate) received: Instant,
    /// Lower bound of the time since the task was published (AMQP `timestamp`).
    pub(crate) age: Option<Duration>,
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

/// Settles a delivery: decides its fate, publishes what it owes, then acks (or requeues
/// when publishing failed).
async fn settle(shared: &Shared, delivery: &Delivery, meta: &TaskMeta) {
    let counts = Redeliveries {
        classic_queue: shared.classic_queue,
        redelivered: delivery.redelivered,
        quorum_count: headers::integer(&delivery.properties, QUORUM_DELIVERY_COUNT).unwrap_or(0),
        warren_count: headers::integer(&delivery.properties, HEADER_REDELIVERIES).unwrap_or(0),
    };
    if already_finished(shared, meta).await {
        info!("the task was finished before (its id is recorded): acked without running it again");
        tracing::Span::current().record("outcome", "duplicate");
        shared.telemetry.metrics.task_settled("duplicate", "");
        if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
            warn!(error = %e, "ack of a finished task failed; it comes back and is skipped again");
        }
        return;
    }
    let (fate, generation) = match fate::before_run(counts, shared.max_redeliveries) {
        BeforeRun::Settle(fate) => (fate, None),
        BeforeRun::Run => {
            let result = run_task(shared, delivery, meta).await;
            let fate = fate::after_run(&result, meta.attempt, &shared.retry);
            (fate, result.ok())
        }
    };
    record_outcome(shared, &fate);
    let timings = timings(meta, generation.as_ref());
    let published = Outbox::new(shared, delivery, meta)
        .carry_out(&fate, generation.as_ref(), timings)
        .await;
    match published {
        Ok(()) => {
            if fate.ends_task() {
                mark_finished(shared, meta).await;
            }
            if shared.fault_injection {
                faults::before_ack(&delivery.data, counts);
            }
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

/// Whether the task's id is recorded as finished (off, or Redis not answering: no).
async fn already_finished(shared: &Shared, meta: &TaskMeta) -> bool {
    let (Some(finished), Some(id)) = (&shared.finished, &meta.id) else {
        return false;
    };
    finished.contains(id).await.unwrap_or_else(|e| {
        warn!(error = %e, "cannot tell whether the task was finished before; running it (at least once)");
        false
    })
}

/// Records the task's id as finished, after what it owes is confirmed and before its ack.
async fn mark_finished(shared: &Shared, meta: &TaskMeta) {
    if let (Some(finished), Some(id)) = (&shared.finished, &meta.id) {
        if let Err(e) = finished.record(id).await {
            warn!(error = %e, "the task could not be recorded as finished; a redelivery would run it again");
        }
    }
}

/// Records how the task settled, in its span and in `warren_tasks_total`.
fn record_outcome(shared: &Shared, fate: &Fate) {
    let span = tracing::Span::current();
    span.record("outcome", fate.outcome());
    let code = fate.code().map_or("", |c| c.as_str());
    if !code.is_empty() {
        span.record("code", code);
    }
    shared.telemetry.metrics.task_settled(fate.outcome(), code);
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
    let task = protocol::parse_task(&delivery.data, &shared.limits, &shared.sampling)?;
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
    // Chunks and `started` need somewhere to go: without reply_to only the reply is sent.
    let target = meta.reply_to.as_ref().map(|reply_to| ChunkTarget {
        reply_to: reply_to.clone(),
        correlation_id: meta.correlation_id.clone(),
        id: meta.id.clone(),
        attempt: meta.attempt,
    });
    if let (Some(target), true) = (&target, task.progress) {
        if let Err(e) = stream::announce_start(&shared.publisher, target).await {
            debug!(error = %e, "the started message could not be published");
        }
    }
    let streaming = match (target, task.stream) {
        (Some(target), true) => Some(stream::forward(
            shared.publisher.clone(),
            target,
            &shared.stream,
        )),
        _ => None,
    };
    let (sender, forwarder) = streaming.unzip();
    let watch = meta
        .id
        .as_deref()
        .map(|id| shared.cancels.watch(id, Instant::now()));
    let cancelled = async {
        match &watch {
            Some(watch) => watch.token().cancelled().await,
            None => std::future::pending().await,
        }
    };
    let request = GenerationRequest {
        task,
        stream: sender,
    };
    // Dropping the generation future frees the engine's slot at its next step.
    let generation = tokio::select! {
        biased;
        _ = cancelled => Err(TaskError::new(ErrorCode::Cancelled, "the task was cancelled by its caller")),
        generation = shared.engine.generate(request) => generation,
    };
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

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
