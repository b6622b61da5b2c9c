//! Running one delivery on the engine: check its content type and body ([`crate::protocol`]
//! validates it into a task), refuse it when its deadline or age has passed, and generate or
//! embed it, streaming chunks to its caller and stopping when a cancel for it arrives (a panic
//! while running fails the attempt as `internal`). What
//! the result comes to is [`super::fate`]'s decision, taken in [`super::delivery`].

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use lapin::message::Delivery;
use tracing::{debug, error, warn};

use super::outbox::Outcome;
use super::stream::{self, ChunkTarget};
use super::task_meta::TaskMeta;
use super::{faults, spans, Shared};
use crate::clock::unix_ms;
use crate::config::EngineRole;
use crate::engine::{Embeddings, GenerationRequest};
use crate::protocol::{self, ErrorCode, TaskError};

/// A task whose deadline passed, or that waited longer than `limits.max_age_ms`, expires
/// instead of starting.
fn check_not_expired(
    shared: &Shared,
    meta: &TaskMeta,
    deadline_ms: Option<u64>,
) -> Result<(), TaskError> {
    if let Some(deadline) = deadline_ms {
        let now = unix_ms();
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
    if let (Some(age), max_age_ms) = (meta.age, shared.max_age_ms) {
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
    Ok(())
}

/// Refuses a body that does not say it is JSON (an absent content type is taken as JSON).
fn check_content(delivery: &Delivery) -> Result<(), TaskError> {
    let properties = &delivery.properties;
    protocol::check_content_properties(
        properties.content_type().as_ref().map(|s| s.as_str()),
        properties.content_encoding().as_ref().map(|s| s.as_str()),
    )
}

/// Runs `work` unless a cancel for the task comes first; then `work` is dropped (the engine
/// drops the job at its next step) and the task ends `cancelled`.
async fn unless_cancelled<T>(
    shared: &Shared,
    meta: &TaskMeta,
    work: impl std::future::Future<Output = Result<T, TaskError>>,
) -> Result<T, TaskError> {
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
    tokio::select! {
        biased;
        _ = cancelled => Err(TaskError::new(ErrorCode::Cancelled, "the task was cancelled by its caller")),
        result = work => result,
    }
}

/// Generates or embeds one delivery, as the worker's role says.
pub(super) async fn run(
    shared: &Shared,
    delivery: &Delivery,
    meta: &TaskMeta,
) -> Result<Outcome, TaskError> {
    let run = async {
        match shared.role {
            EngineRole::Generate => run_task(shared, delivery, meta)
                .await
                .map(|g| Outcome::Generated(Box::new(g))),
            EngineRole::Embed => run_embedding(shared, delivery, meta).await.map(|e| {
                spans::embedded(&e, Instant::now());
                Outcome::Embedded(e)
            }),
        }
    };
    // A panic here is a bug in warren, before anything was published or acked: it fails this
    // attempt as `internal`, under the retry policy, instead of leaving the delivery held (and
    // a prefetch place taken) until the channel closes. Nothing the run shares is left
    // half-changed: the engine's job is dropped with it.
    AssertUnwindSafe(run)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let what = panic_message(panic.as_ref());
            error!(panic = %what, "the task's handler panicked; the attempt fails as `internal`");
            Err(TaskError::new(
                ErrorCode::Internal,
                format!("the worker failed on this task (a bug in warren: {what})"),
            ))
        })
}

/// The text a panic was raised with, when it is text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => text,
        (_, Some(text)) => text,
        _ => "a panic without a message",
    }
}

/// Validates and embeds one embedding task (a worker with `engine.role = "embed"`).
async fn run_embedding(
    shared: &Shared,
    delivery: &Delivery,
    meta: &TaskMeta,
) -> Result<Embeddings, TaskError> {
    check_content(delivery)?;
    let task = protocol::parse_embedding_task(&delivery.data, &shared.limits)?;
    check_not_expired(shared, meta, task.deadline_ms)?;
    shared.telemetry.metrics.attempt_started();
    unless_cancelled(shared, meta, shared.engine.embed(task)).await
}

/// Validates and runs one task.
async fn run_task(
    shared: &Shared,
    delivery: &Delivery,
    meta: &TaskMeta,
) -> Result<crate::engine::Generation, TaskError> {
    check_content(delivery)?;
    let task = protocol::parse_task(&delivery.data, &shared.limits)?;
    check_not_expired(shared, meta, task.deadline_ms)?;
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
        logprobs: task.logprobs.is_some(),
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
    let request = GenerationRequest {
        task,
        stream: sender,
    };
    // Dropping the generation future frees the engine's slot at its next step.
    let generation = unless_cancelled(shared, meta, shared.engine.generate(request)).await;
    if let Ok(generated) = &generation {
        // Before the chunks are flushed: the phases end when the engine answered.
        spans::generated(generated, Instant::now());
    }
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
