//! Streaming a response (`stream: true`): relays the task's AMQP chunks and final reply as
//! OpenAI's typed server-sent events ([`Events`] says which), stores the final object when
//! asked, and ends with an `error` event when no reply comes in time.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Instant;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::Value;

use super::events::Events;
use super::object;
use super::Keeper;
use crate::client::{Incoming, Pending};
use crate::gateway::broker_link::CancelOnDrop;
use crate::gateway::errors::ApiError;
use crate::gateway::metrics::StreamOpen;
use crate::protocol::Chunk;

/// What the relay holds between events.
struct Relay {
    events: Events,
    queue: VecDeque<Value>,
    pending: Pending,
    guard: CancelOnDrop,
    deadline: Instant,
    timeout: std::time::Duration,
    attempt: Option<u32>,
    done: bool,
    /// Stores the final object (`store`).
    keeper: Option<Keeper>,
    _open: StreamOpen,
}

/// The streaming answer to a response request whose task was published.
pub(super) fn respond(
    object: Value,
    pending: Pending,
    guard: CancelOnDrop,
    timeout: std::time::Duration,
    keeper: Option<Keeper>,
    open: StreamOpen,
) -> Response {
    let mut events = Events::new(object);
    let queue = events.opening().into();
    let relay = Relay {
        events,
        queue,
        pending,
        guard,
        deadline: Instant::now() + timeout,
        timeout,
        attempt: None,
        done: false,
        keeper,
        _open: open,
    };
    let events = stream::unfold(relay, |mut relay| async move {
        let event = next(&mut relay).await?;
        let kind = event["type"].as_str().unwrap_or("message").to_owned();
        let sse = Event::default().event(kind).data(event.to_string());
        Some((Ok::<_, Infallible>(sse), relay))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn next(relay: &mut Relay) -> Option<Value> {
    loop {
        if let Some(event) = relay.queue.pop_front() {
            return Some(event);
        }
        if relay.done {
            return None;
        }
        let incoming = tokio::time::timeout_at(relay.deadline.into(), relay.pending.next()).await;
        let events = match incoming {
            Err(_) => relay.end_with(&ApiError::timed_out(relay.timeout)),
            Ok(None) => relay.end_with(&ApiError::unavailable(
                "the connection to RabbitMQ was lost",
            )),
            Ok(Some(Incoming::Chunk(chunk))) => relay.chunk(&chunk),
            Ok(Some(Incoming::Reply { reply, .. })) => {
                relay.done = true;
                relay.guard.disarm();
                if relay.events.streamed_calls() && relay.attempt != Some(reply.attempt) {
                    // Calls streamed from an attempt that failed cannot be taken back.
                    let lost = ApiError::internal(
                        "the task was retried after a failure and its calls changed; send the request again",
                    );
                    return Some(relay.events.error(&lost));
                }
                let events = relay.events.finish(&reply);
                // A stream that ended with an `error` event told its caller to send the
                // request again: nothing is kept under its id.
                let answered = events.last().is_none_or(|event| event["type"] != "error");
                if let Some(keeper) = relay.keeper.take().filter(|_| answered) {
                    keeper
                        .keep(&object::finished(relay.events.created(), &reply))
                        .await;
                }
                events
            }
            Ok(Some(Incoming::Started)) => Vec::new(),
        };
        relay.queue.extend(events);
    }
}

impl Relay {
    /// The events of the first attempt's chunks (a retried attempt's are dropped: what was
    /// sent cannot be taken back; the final reply completes it).
    fn chunk(&mut self, chunk: &Chunk) -> Vec<Value> {
        if *self.attempt.get_or_insert(chunk.attempt) != chunk.attempt {
            return Vec::new();
        }
        let tokens = chunk.logprobs.as_deref().unwrap_or_default();
        let mut events = self.events.text(&chunk.delta, tokens);
        if let Some(pieces) = &chunk.tool_calls {
            events.extend(self.events.calls(pieces));
        }
        events
    }

    fn end_with(&mut self, error: &ApiError) -> Vec<Value> {
        self.done = true;
        vec![self.events.error(error)]
    }
}
