//! Running one delivery on the engine: check its content type and body ([`crate::protocol`]
//! validates it into a task), refuse it when its deadline or age has passed, and generate or
//! embed it, streaming chunks to its caller and stopping when a cancel for it arrives. What
//! the result comes to is [`super::fate`]'s decision, taken in [`super::delivery`].

use std::time::{Duration, Instant};

use lapin::message::Delivery;
use tracing::{debug, warn};

use super::stream::{self, ChunkTarget};
use super::task_meta::TaskMeta;
use super::{faults, spans, Shared};
use crate::clock::unix_ms;
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

/// Validates and embeds one embedding task (a worker with `engine.role = "embed"`).
pub(super) async fn run_embedding(
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
pub(super) async fn run_task(
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
