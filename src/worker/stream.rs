//! Streaming over AMQP: forwards the text an attempt generates to the task's `reply_to` as
//! chunk messages, grouped so that a fast model does not flood the broker; and the `started`
//! message of a task that asked for `progress`.
//!
//! Chunks are non-persistent (the final reply is the durable record) and published in order
//! on the worker's confirm channel; the forwarder ends when the engine drops its sender, so
//! awaiting it before the final reply keeps every chunk ahead of that reply.

use std::time::Duration;

use lapin::BasicProperties;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::broker::{BrokerError, Publisher};
use crate::config::StreamSettings;
use crate::engine::Delta;
use crate::protocol::{Chunk, ReplyStatus, Started, WIRE_VERSION};

/// Where one attempt's chunks go.
pub(super) struct ChunkTarget {
    /// The task's `reply_to`.
    pub reply_to: String,
    /// The task's `correlation_id`, copied to each chunk.
    pub correlation_id: Option<String>,
    /// The reply's `id`.
    pub id: Option<String>,
    /// This attempt.
    pub attempt: u32,
    /// Whether chunks carry the log probabilities of their tokens (the task asked for them).
    pub logprobs: bool,
}

/// Starts forwarding; returns the sender to give the engine and the forwarder, which
/// resolves to the number of chunks sent once the sender is dropped.
pub(super) fn forward(
    publisher: Publisher,
    target: ChunkTarget,
    settings: &StreamSettings,
) -> (
    mpsc::UnboundedSender<Delta>,
    JoinHandle<Result<u32, BrokerError>>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let max_pieces = settings.max_pieces_per_chunk as usize;
    let max_delay = Duration::from_millis(settings.max_chunk_delay_ms);
    let forwarder = tokio::spawn(run(publisher, target, receiver, max_pieces, max_delay));
    (sender, forwarder)
}

async fn run(
    publisher: Publisher,
    target: ChunkTarget,
    mut pieces: mpsc::UnboundedReceiver<Delta>,
    max_pieces: usize,
    max_delay: Duration,
) -> Result<u32, BrokerError> {
    let mut index = 0;
    loop {
        // Wait for the first piece of the next chunk, then gather more until it is full or old.
        let Some(first) = pieces.recv().await else {
            return Ok(index);
        };
        let mut delta = first;
        let mut count = 1;
        let deadline = tokio::time::Instant::now() + max_delay;
        let mut ended = false;
        while count < max_pieces {
            match tokio::time::timeout_at(deadline, pieces.recv()).await {
                Ok(Some(piece)) => {
                    delta.append(piece);
                    count += 1;
                }
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(_) => break,
            }
        }
        publish(&publisher, &target, index, delta).await?;
        index += 1;
        if ended {
            return Ok(index);
        }
    }
}

async fn publish(
    publisher: &Publisher,
    target: &ChunkTarget,
    index: u32,
    delta: Delta,
) -> Result<(), BrokerError> {
    let chunk = Chunk {
        version: WIRE_VERSION,
        id: target.id.clone(),
        status: ReplyStatus::Chunk,
        index,
        delta: delta.text,
        attempt: target.attempt,
        logprobs: target.logprobs.then_some(delta.logprobs),
        tool_calls: (!delta.tool_calls.is_empty()).then_some(delta.tool_calls),
    };
    let body = serde_json::to_vec(&chunk).unwrap_or_default();
    send(publisher, target, "warren.chunk", &body).await
}

/// Tells the task's `reply_to` that the attempt started (the task asked for `progress`).
pub(super) async fn announce_start(
    publisher: &Publisher,
    target: &ChunkTarget,
) -> Result<(), BrokerError> {
    let started = Started::new(target.id.clone(), target.attempt);
    let body = serde_json::to_vec(&started).unwrap_or_default();
    send(publisher, target, "warren.started", &body).await
}

/// Publishes a non-persistent message to the task's `reply_to`, confirmed.
async fn send(
    publisher: &Publisher,
    target: &ChunkTarget,
    kind: &str,
    body: &[u8],
) -> Result<(), BrokerError> {
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(1)
        .with_type(kind.into())
        .with_app_id("warren".into());
    if let Some(correlation_id) = &target.correlation_id {
        properties = properties.with_correlation_id(correlation_id.as_str().into());
    }
    // Not mandatory: a missing reply queue is handled once, by the final reply.
    publisher
        .publish("", &target.reply_to, false, body, properties)
        .await
        .map(|_| ())
}
