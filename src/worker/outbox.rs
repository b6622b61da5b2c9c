//! What a [`Fate`] owes, as messages: the reply, the dead-lettered copy, the delayed retry.
//! [`super::delivery`] publishes them and acks the delivery in one transaction, so both
//! happen or neither does. The exception is the recounted copy of a redelivered task, which
//! goes back to the requests queue: a full requests queue (`x-overflow = reject-publish`)
//! refuses it, and RabbitMQ would still apply the ack of a transaction holding a refused
//! publish, so that copy is published confirmed before the ack ([`Outbox::recount`]).
//! It decides nothing: the fate is given.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::BasicProperties;
use tracing::{error, info, warn};

use super::fate::Fate;
use super::kept::kept_copy;
use super::task_meta::TaskMeta;
use super::Shared;
use crate::broker::{headers, BrokerError, Outgoing, PERSISTENT};
use crate::clock::unix_ms;
use crate::engine::{Embeddings, Generation};
use crate::protocol::{
    Reply, ReplyStatus, TaskError, Timings, Usage, HEADER_ATTEMPTS, HEADER_ERROR,
    HEADER_ERROR_CODE, HEADER_FAILED_AT, HEADER_LAST_ERROR, HEADER_LAST_ERROR_CODE,
    HEADER_REDELIVERIES, HEADER_WORKER, HEADER_WORKER_MICROS, WIRE_VERSION,
};
use crate::telemetry::KeptReason;

/// What one delivery owes, and where it goes.
pub(crate) struct Outbox<'a> {
    shared: &'a Shared,
    delivery: &'a Delivery,
    meta: &'a TaskMeta,
}

/// What a task that ran produced: the reply carries it.
pub(crate) enum Outcome {
    /// A generation task's completion.
    Generated(Box<Generation>),
    /// An embedding task's vectors.
    Embedded(Embeddings),
}

impl<'a> Outbox<'a> {
    /// The outbox of `delivery`.
    pub(crate) fn new(shared: &'a Shared, delivery: &'a Delivery, meta: &'a TaskMeta) -> Self {
        Outbox {
            shared,
            delivery,
            meta,
        }
    }

    /// The messages `fate` owes, to be published with the ack. `outcome` is the result of
    /// a [`Fate::Reply`]. A [`Fate::Recount`] owes nothing here: see [`Outbox::recount`].
    pub(crate) fn owed(
        &self,
        fate: &Fate,
        outcome: Option<&Outcome>,
        timings: Timings,
    ) -> Vec<Outgoing> {
        match (fate, outcome) {
            (Fate::Reply, Some(Outcome::Generated(generation))) => {
                vec![self.reply_ok(generation, timings)]
            }
            (Fate::Reply, Some(Outcome::Embedded(embeddings))) => {
                vec![self.reply_embedded(embeddings, timings)]
            }
            (Fate::Reply, None) => {
                let error = TaskError::new(
                    crate::protocol::ErrorCode::Internal,
                    "the generation's result was lost",
                );
                self.give_up(&error, timings, true)
            }
            (
                Fate::Retry {
                    error,
                    queue,
                    delay,
                },
                _,
            ) => vec![self.retry(error, queue, *delay)],
            (Fate::GiveUp(error), _) => self.give_up(error, timings, true),
            (Fate::Poison(error), _) => self.give_up(error, timings, false),
            (Fate::Recount(_), _) => Vec::new(),
            (Fate::Cancelled(error), _) => {
                info!(reason = %error.message, "task cancelled");
                vec![self.reply(&self.failure(error, timings))]
            }
        }
    }

    fn failure(&self, error: &TaskError, timings: Timings) -> Reply {
        let model = &self.shared.engine.info().name;
        Reply::failure(
            self.meta.id.clone(),
            error,
            model,
            self.meta.attempt,
            timings,
        )
    }

    fn reply_ok(&self, generation: &Generation, timings: Timings) -> Outgoing {
        let reply = Reply {
            version: WIRE_VERSION,
            id: self.meta.id.clone(),
            status: ReplyStatus::Ok,
            text: Some(generation.text.clone()),
            finish_reason: Some(generation.finish_reason),
            usage: Some(Usage {
                prompt_tokens: generation.prompt_tokens,
                cached_prompt_tokens: generation.cached_prompt_tokens,
                completion_tokens: generation.completion_tokens,
            }),
            timings_ms: timings,
            model: self.shared.engine.info().name.clone(),
            attempt: self.meta.attempt,
            logprobs: generation.logprobs.clone(),
            tool_calls: (!generation.tool_calls.is_empty()).then(|| generation.tool_calls.clone()),
            embeddings: None,
            error: None,
        };
        info!(
            prompt_tokens = generation.prompt_tokens,
            cached_prompt_tokens = generation.cached_prompt_tokens,
            completion_tokens = generation.completion_tokens,
            total_ms = timings.total,
            "task completed"
        );
        self.reply(&reply)
    }

    fn reply_embedded(&self, embeddings: &Embeddings, timings: Timings) -> Outgoing {
        let reply = Reply {
            version: WIRE_VERSION,
            id: self.meta.id.clone(),
            status: ReplyStatus::Ok,
            text: None,
            finish_reason: None,
            usage: Some(Usage {
                prompt_tokens: embeddings.prompt_tokens,
                cached_prompt_tokens: 0,
                completion_tokens: 0,
            }),
            timings_ms: timings,
            model: self.shared.engine.info().name.clone(),
            attempt: self.meta.attempt,
            logprobs: None,
            tool_calls: None,
            embeddings: Some(embeddings.vectors.clone()),
            error: None,
        };
        info!(
            inputs = embeddings.vectors.len(),
            prompt_tokens = embeddings.prompt_tokens,
            total_ms = timings.total,
            "embedding task completed"
        );
        self.reply(&reply)
    }

    /// A task that will not succeed: one error reply, one dead-lettered copy.
    /// The final error reply and the dead letter. `sent_again_may_work` is false for a
    /// poison task: its code (`internal`) is retryable, but this task crashed every worker
    /// that ran it, and the reply must not invite its caller to send it again.
    fn give_up(
        &self,
        error: &TaskError,
        timings: Timings,
        sent_again_may_work: bool,
    ) -> Vec<Outgoing> {
        warn!(code = error.code.as_str(), reason = %error.message, "task failed");
        let mut reply = self.failure(error, timings);
        if let Some(body) = reply.error.as_mut() {
            body.retryable &= sent_again_may_work;
        }
        vec![self.reply(&reply), self.dead_letter(error)]
    }

    /// The task, to the delay queue of its level with the attempt count; the queue's TTL
    /// sends it back to the requests queue.
    fn retry(&self, error: &TaskError, queue: &str, delay: Duration) -> Outgoing {
        info!(
            code = error.code.as_str(),
            reason = %error.message,
            queue,
            delay_ms = delay.as_millis() as u64,
            "attempt failed; retrying later"
        );
        let properties = headers::with_headers(
            self.traced_copy(),
            [
                (HEADER_ATTEMPTS, headers::int(i64::from(self.meta.attempt))),
                (HEADER_LAST_ERROR_CODE, headers::text(error.code.as_str())),
                (HEADER_LAST_ERROR, headers::text(error.message.clone())),
            ],
        )
        .with_expiration(delay.as_millis().to_string().as_str().into())
        .with_delivery_mode(PERSISTENT);
        self.task_copy("", queue, properties)
    }

    /// Classic queues: republishes a redelivered task with its delivery count, so that a task
    /// that keeps killing workers is caught (see [`Fate::Recount`]); confirmed, before the
    /// ack (see the module's comment). A worker that dies between the two leaves two copies
    /// of the task queued.
    pub(crate) async fn recount(&self, earlier: u32) -> Result<(), BrokerError> {
        warn!(
            earlier_deliveries = earlier,
            "redelivered task (a worker stopped while holding it); counting and requeueing it"
        );
        let properties = headers::with_headers(
            headers::republishable(&self.delivery.properties),
            [(HEADER_REDELIVERIES, headers::int(i64::from(earlier)))],
        );
        let copy = self.task_copy("", self.shared.topology.requests_queue(), properties);
        self.shared.publisher.publish_routed(&copy).await
    }

    /// `reply`, to the task's `reply_to` (or the results queue).
    fn reply(&self, reply: &Reply) -> Outgoing {
        let original = &self.delivery.properties;
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_timestamp(unix_ms() / 1000)
            .with_type("warren.reply".into())
            .with_app_id("warren".into());
        if let Some(correlation_id) = original.correlation_id() {
            properties = properties.with_correlation_id(correlation_id.clone());
        }
        if let Some(message_id) = original.message_id() {
            properties = properties.with_message_id(message_id.clone());
        }
        let worker_micros =
            i64::try_from(self.meta.received.elapsed().as_micros()).unwrap_or(i64::MAX);
        properties = headers::with_headers(
            properties,
            [(HEADER_WORKER_MICROS, headers::int(worker_micros))],
        );
        // The reply names the span of the task that answered (traces on).
        properties = crate::telemetry::traces::with_current_context(properties);
        let queue = match &self.meta.reply_to {
            Some(reply_to) => reply_to.as_str(),
            None => self.shared.topology.results_queue(),
        };
        Outgoing {
            exchange: String::new(),
            routing_key: queue.to_owned(),
            body: reply.to_bytes(),
            properties,
        }
    }

    /// A copy of the original task, with its properties and the reason added as headers,
    /// to the dead-letter exchange.
    fn dead_letter(&self, error: &TaskError) -> Outgoing {
        let properties = headers::with_headers(
            self.traced_copy(),
            [
                (HEADER_ERROR_CODE, headers::text(error.code.as_str())),
                (HEADER_ERROR, headers::text(error.message.clone())),
                (HEADER_ATTEMPTS, headers::int(i64::from(self.meta.attempt))),
                (
                    HEADER_WORKER,
                    headers::text(self.shared.worker_name.clone()),
                ),
                (HEADER_FAILED_AT, headers::int(unix_ms() as i64)),
            ],
        )
        .with_delivery_mode(PERSISTENT);
        let topology = &self.shared.topology;
        self.task_copy(
            topology.dead_letter_exchange(),
            topology.requests_queue(),
            properties,
        )
    }

    /// The task's properties fit to republish; a task that came without trace context, or
    /// with a `traceparent` that is not valid W3C, carries its span's instead (traces on), so
    /// that its next attempt, or its replay, joins its trace.
    fn traced_copy(&self) -> BasicProperties {
        use opentelemetry::trace::TraceContextExt;
        let copy = headers::republishable(&self.delivery.properties);
        let sent = crate::telemetry::traces::from_amqp(&copy);
        if sent.span().span_context().is_valid() {
            copy
        } else {
            crate::telemetry::traces::with_current_context(copy)
        }
    }

    /// The original body, with `properties`.
    fn task_copy(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
    ) -> Outgoing {
        Outgoing {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            body: self.delivery.data.clone(),
            properties,
        }
    }

    /// Keeps messages the broker could not deliver at the commit (a reply whose `reply_to`
    /// queue is gone, mostly) in the results queue, marked with where they were going:
    /// their delivery is already acked, so this is their only record.
    pub(crate) async fn keep_undeliverable(&self, returned: Vec<Outgoing>, maybe_delivered: bool) {
        let results = self.shared.topology.results_queue();
        for message in returned {
            let destination = message.destination();
            warn!(destination = %destination, queue = results, "the broker could not deliver a message this task owed; keeping it in the results queue");
            let kept = kept_copy(message, results, maybe_delivered);
            match self.shared.publisher.publish_routed(&kept).await {
                Ok(()) => self
                    .shared
                    .telemetry
                    .metrics
                    .kept(KeptReason::Undeliverable),
                Err(e) => {
                    error!(error = %e, "a message the task owed could not be kept in the results queue: it is lost")
                }
            }
        }
    }
}
