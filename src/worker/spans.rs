//! What one delivery tells traces: the task's span, continued from the trace context in the
//! task's headers, and the spans of its phases whose times are known only afterwards (the
//! wait in the queue, the wait for a slot, prompt reading, generation), recorded with
//! [`traces::timed_span`]. The commit's span is a plain `tracing` span in [`super::delivery`].

use std::time::{Duration, Instant};

use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};

use super::task_meta::TaskMeta;
use crate::engine::{Embeddings, Generation};
use crate::telemetry::traces;

/// The span of one delivery: a consumer span named after the queue, a child of the span that
/// published the task when its headers carry a `traceparent`.
pub(super) fn task_span(publisher: &Context, meta: &TaskMeta, queue: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "task",
        otel.name = %format!("process {queue}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.destination.name = queue,
        id = meta.id.as_deref().unwrap_or("-"),
        correlation_id = meta.correlation_id.as_deref().unwrap_or("-"),
        attempt = i64::from(meta.attempt),
        outcome = tracing::field::Empty,
        code = tracing::field::Empty,
    );
    traces::continue_trace(&span, publisher.clone());
    span
}

/// The task's time in the queue, from its publish time (`x-warren-published-us`, else its
/// AMQP `timestamp`) to its receipt, as a sibling of
/// the task's span (a child of the publisher's), or a child of the task's span when it came
/// without trace context. Call it inside the task's span.
pub(super) fn queue_wait(publisher: &Context, meta: &TaskMeta, queue: &str) {
    let Some(published) = meta.age.and_then(|age| meta.received.checked_sub(age)) else {
        return;
    };
    let parent = if publisher.span().span_context().is_valid() {
        publisher.clone()
    } else {
        traces::current_context()
    };
    traces::timed_span(
        "queue wait",
        &parent,
        published,
        meta.received,
        vec![KeyValue::new(
            "messaging.destination.name",
            queue.to_owned(),
        )],
    );
}

/// A generation's phases, ending at `end` (when the engine answered), as children of the
/// current span: the wait for a slot, prompt reading, generation.
pub(super) fn generated(generation: &Generation, end: Instant) {
    let prompt_tokens = i64::from(generation.prompt_tokens);
    let cached = i64::from(generation.cached_prompt_tokens);
    let completion_tokens = i64::from(generation.completion_tokens);
    phases(
        end,
        &[
            ("slot wait", generation.slot_wait, vec![]),
            (
                "prompt",
                generation.prompt_time,
                vec![
                    KeyValue::new("gen_ai.usage.input_tokens", prompt_tokens),
                    KeyValue::new("warren.cached_prompt_tokens", cached),
                ],
            ),
            (
                "generation",
                generation.generation_time,
                vec![KeyValue::new(
                    "gen_ai.usage.output_tokens",
                    completion_tokens,
                )],
            ),
        ],
    );
}

/// An embedding's phases, ending at `end`: the wait for the engine, embedding.
pub(super) fn embedded(embeddings: &Embeddings, end: Instant) {
    let inputs = i64::try_from(embeddings.vectors.len()).unwrap_or(i64::MAX);
    phases(
        end,
        &[
            ("slot wait", embeddings.wait, vec![]),
            (
                "embedding",
                embeddings.time,
                vec![
                    KeyValue::new(
                        "gen_ai.usage.input_tokens",
                        i64::from(embeddings.prompt_tokens),
                    ),
                    KeyValue::new("warren.inputs", inputs),
                ],
            ),
        ],
    );
}

/// Consecutive phases of the given lengths that end at `end`, as children of the current
/// span; phases of no length are left out.
fn phases(end: Instant, phases: &[(&'static str, Duration, Vec<KeyValue>)]) {
    let parent = traces::current_context();
    let total: Duration = phases.iter().map(|(_, length, _)| *length).sum();
    let Some(mut start) = end.checked_sub(total) else {
        return;
    };
    for (name, length, attributes) in phases {
        let finish = start + *length;
        if !length.is_zero() {
            traces::timed_span(name, &parent, start, finish, attributes.clone());
        }
        start = finish;
    }
}
