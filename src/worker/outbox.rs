//! Carries a [`Fate`] out: publishes, confirmed, everything a delivery owes — the reply, the
//! dead-lettered copy, the delayed retry or the recounted copy — and reports whether all of
//! it was confirmed. The caller acks only then (or requeues when it was not), so nothing is
//! lost. It decides nothing: the fate is given.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::BasicProperties;
use tracing::{info, warn};

use super::delivery::{now_ms, TaskMeta};
use super::fate::Fate;
use super::Shared;
use crate::broker::{headers, BrokerError, Published, PERSISTENT};
use crate::engine::Generation;
use crate::protocol::{
    Reply, ReplyStatus, TaskError, Timings, Usage, HEADER_ATTEMPTS, HEADER_ERROR,
    HEADER_ERROR_CODE, HEADER_FAILED_AT, HEADER_LAST_ERROR, HEADER_LAST_ERROR_CODE,
    HEADER_REDELIVERIES, HEADER_UNDELIVERABLE, HEADER_WORKER, HEADER_WORKER_MICROS, WIRE_VERSION,
};
use crate::telemetry::Completion;

/// What one delivery owes, and where it goes.
pub(crate) struct Outbox<'a> {
    shared: &'a Shared,
    delivery: &'a Delivery,
    meta: &'a TaskMeta,
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

    /// Publishes what `fate` owes. `generation` is the result of a [`Fate::Reply`].
    pub(crate) async fn carry_out(
        &self,
        fate: &Fate,
        generation: Option<&Generation>,
        timings: Timings,
    ) -> Result<(), BrokerError> {
        match (fate, generation) {
            (Fate::Reply, Some(generation)) => self.reply_ok(generation, timings).await,
            (Fate::Reply, None) => {
                let error = TaskError::new(
                    crate::protocol::ErrorCode::Internal,
                    "the generation's result was lost",
                );
                self.give_up(&error, timings).await
            }
            (
                Fate::Retry {
                    error,
                    queue,
                    delay,
                },
                _,
            ) => self.schedule_retry(error, queue, *delay).await,
            (Fate::GiveUp(error) | Fate::Poison(error), _) => self.give_up(error, timings).await,
            (Fate::Recount(earlier), _) => self.recount(*earlier).await,
            (Fate::Cancelled(error), _) => {
                info!(reason = %error.message, "task cancelled");
                self.publish_reply(&self.failure(error, timings)).await
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

    async fn reply_ok(&self, generation: &Generation, timings: Timings) -> Result<(), BrokerError> {
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
            error: None,
        };
        info!(
            prompt_tokens = generation.prompt_tokens,
            cached_prompt_tokens = generation.cached_prompt_tokens,
            completion_tokens = generation.completion_tokens,
            total_ms = timings.total,
            "task completed"
        );
        let total = self.meta.received.elapsed();
        let before_generation = total.saturating_sub(generation.generation_time);
        self.shared.telemetry.metrics.completed(&Completion {
            queue_wait: timings.queued as f64 / 1000.0,
            time_to_first_token: before_generation.as_secs_f64(),
            total: total.as_secs_f64(),
            generation: generation.generation_time.as_secs_f64(),
            prompt_tokens: generation.prompt_tokens,
            cached_prompt_tokens: generation.cached_prompt_tokens,
            completion_tokens: generation.completion_tokens,
        });
        self.publish_reply(&reply).await
    }

    /// A task that will not succeed: one error reply, one dead-lettered copy.
    async fn give_up(&self, error: &TaskError, timings: Timings) -> Result<(), BrokerError> {
        warn!(code = error.code.as_str(), reason = %error.message, "task failed");
        self.publish_reply(&self.failure(error, timings)).await?;
        self.dead_letter(error).await
    }

    /// Republishes the task to the delay queue of its level with the attempt count; the
    /// queue's TTL sends it back to the requests queue.
    async fn schedule_retry(
        &self,
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
            headers::republishable(&self.delivery.properties),
            [
                (HEADER_ATTEMPTS, headers::int(i64::from(self.meta.attempt))),
                (HEADER_LAST_ERROR_CODE, headers::text(error.code.as_str())),
                (HEADER_LAST_ERROR, headers::text(error.message.clone())),
            ],
        )
        .with_expiration(delay.as_millis().to_string().as_str().into())
        .with_delivery_mode(PERSISTENT);
        self.publish_exactly("", queue, properties).await
    }

    /// Classic queues: republishes a redelivered task with its delivery count, so that a task
    /// that keeps killing workers is caught (see [`Fate::Recount`]).
    async fn recount(&self, earlier: u32) -> Result<(), BrokerError> {
        warn!(
            earlier_deliveries = earlier,
            "redelivered task (a worker stopped while holding it); counting and requeueing it"
        );
        let properties = headers::with_headers(
            headers::republishable(&self.delivery.properties),
            [(HEADER_REDELIVERIES, headers::int(i64::from(earlier)))],
        );
        let queue = self.shared.topology.requests_queue();
        self.publish_exactly("", queue, properties).await
    }

    /// Publishes `reply` to the task's `reply_to` (or the results queue), confirmed. A reply
    /// whose queue does not exist is kept in the results queue, marked with the lost
    /// `reply_to`.
    async fn publish_reply(&self, reply: &Reply) -> Result<(), BrokerError> {
        let original = &self.delivery.properties;
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_timestamp(now_ms() / 1000)
            .with_type("warren.reply".into())
            .with_app_id("warren".into());
        if let Some(correlation_id) = original.correlation_id() {
            properties = properties.with_correlation_id(correlation_id.clone());
        }
        if let Some(message_id) = original.message_id() {
            properties = properties.with_message_id(message_id.clone());
        }
        let body = reply.to_bytes();
        let worker_micros =
            i64::try_from(self.meta.received.elapsed().as_micros()).unwrap_or(i64::MAX);
        properties = headers::with_headers(
            properties,
            [(HEADER_WORKER_MICROS, headers::int(worker_micros))],
        );
        let results = self.shared.topology.results_queue();
        if let Some(reply_to) = &self.meta.reply_to {
            let published = self
                .shared
                .publisher
                .publish("", reply_to, true, &body, properties.clone())
                .await?;
            match published {
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
        self.publish_body("", results, &body, properties).await
    }

    /// Publishes a copy of the original task, with its properties and the reason added as
    /// headers, to the dead-letter exchange; confirmed.
    async fn dead_letter(&self, error: &TaskError) -> Result<(), BrokerError> {
        let properties = headers::with_headers(
            headers::republishable(&self.delivery.properties),
            [
                (HEADER_ERROR_CODE, headers::text(error.code.as_str())),
                (HEADER_ERROR, headers::text(error.message.clone())),
                (HEADER_ATTEMPTS, headers::int(i64::from(self.meta.attempt))),
                (
                    HEADER_WORKER,
                    headers::text(self.shared.worker_name.clone()),
                ),
                (HEADER_FAILED_AT, headers::int(now_ms() as i64)),
            ],
        )
        .with_delivery_mode(PERSISTENT);
        let topology = &self.shared.topology;
        let exchange = topology.dead_letter_exchange();
        self.publish_exactly(exchange, topology.requests_queue(), properties)
            .await?;
        self.shared
            .telemetry
            .metrics
            .dead_lettered(error.code.as_str());
        Ok(())
    }

    /// Publishes the original body, mandatory and confirmed.
    async fn publish_exactly(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let body = &self.delivery.data;
        self.publish_body(exchange, routing_key, body, properties)
            .await
    }

    /// Publishes, mandatory and confirmed; a message the broker could not route is an error.
    async fn publish_body(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let published = self
            .shared
            .publisher
            .publish(exchange, routing_key, true, body, properties)
            .await?;
        match published {
            Published::Delivered => Ok(()),
            Published::Returned => {
                Err(BrokerError::Unroutable(format!("{exchange}/{routing_key}")))
            }
        }
    }
}
