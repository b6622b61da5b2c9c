//! Streaming a task as server-sent events, the way OpenAI streams: an opening chunk
//! (chat: `delta.role`), one chunk per AMQP chunk message, a closing chunk with
//! `finish_reason`, the usage chunk when `stream_options.include_usage` asked for it, then
//! `data: [DONE]`. A failure ends the stream with an `{"error": …}` event instead.
//!
//! Only the first attempt's chunks are forwarded (text sent cannot be taken back); if a
//! retried attempt ended the task, the difference is sent from its final text when that
//! text continues what was sent, else the stream ends with an error. When the caller goes
//! away the stream is dropped, and with it the guard that cancels the task.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde_json::Value;

use super::reply::{self, Piece};
use super::{logprobs, Accepted};
use crate::client::Incoming;
use crate::gateway::errors::ApiError;
use crate::gateway::metrics::StreamOpen;
use crate::gateway::Shared;
use crate::protocol::{Reply, ReplyStatus, ToolCall, ToolCallDelta};

/// Where a stream is.
enum Phase {
    Opening,
    Relaying,
    Closing(Vec<Value>),
    Done,
}

struct Streaming {
    accepted: Accepted,
    phase: Phase,
    sent: String,
    /// Log probabilities sent (entries, and the characters their tokens span).
    logprobs_sent: usize,
    offset_sent: usize,
    attempt: Option<u32>,
    /// Tool calls whose first piece was sent.
    calls_streamed: usize,
    _open: StreamOpen,
    waited: std::time::Duration,
}

/// The streaming response for an accepted request.
pub fn respond(app: Arc<Shared>, accepted: Accepted) -> Response {
    let state = Streaming {
        accepted,
        phase: Phase::Opening,
        sent: String::new(),
        logprobs_sent: 0,
        offset_sent: 0,
        attempt: None,
        calls_streamed: 0,
        _open: app.metrics.stream_opened(),
        waited: app.request_timeout,
    };
    Sse::new(events(state))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn events(state: Streaming) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(state, |mut state| async move {
        let event = next_event(&mut state).await?;
        Some((Ok(event), state))
    })
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

async fn next_event(state: &mut Streaming) -> Option<Event> {
    loop {
        match &mut state.phase {
            Phase::Opening => {
                state.phase = Phase::Relaying;
                return Some(data(&chunk(state, Piece::Start)));
            }
            Phase::Closing(events) => {
                if events.is_empty() {
                    state.phase = Phase::Done;
                    state.accepted.guard.disarm();
                    return Some(Event::default().data("[DONE]"));
                }
                let event = events.remove(0);
                return Some(data(&event));
            }
            Phase::Done => return None,
            Phase::Relaying => {}
        }
        let deadline = state.accepted.deadline;
        let incoming =
            tokio::time::timeout_at(deadline.into(), state.accepted.pending.next()).await;
        match incoming {
            Err(_) => return Some(fail(state, ApiError::timed_out(state.waited))),
            Ok(None) => {
                let lost = ApiError::unavailable("the connection to RabbitMQ was lost");
                return Some(fail(state, lost));
            }
            Ok(Some(Incoming::Chunk(piece))) => {
                if *state.attempt.get_or_insert(piece.attempt) != piece.attempt {
                    continue;
                }
                state.sent.push_str(&piece.delta);
                if let Some(calls) = piece.tool_calls.as_deref() {
                    state.calls_streamed += calls.iter().filter(|c| c.id.is_some()).count();
                    return Some(data(&chunk(state, Piece::ToolCalls(&piece.delta, calls))));
                }
                let logprobs = piece.logprobs.as_deref().map(|tokens| {
                    let offset = state.offset_sent;
                    state.logprobs_sent += tokens.len();
                    state.offset_sent += logprobs::chars(tokens);
                    (tokens, offset)
                });
                return Some(data(&chunk(state, Piece::Text(&piece.delta, logprobs))));
            }
            Ok(Some(Incoming::Reply { reply, .. })) => return Some(finish(state, &reply)),
            Ok(Some(Incoming::Started)) => continue,
        }
    }
}

fn chunk(state: &Streaming, piece: Piece<'_>) -> Value {
    let a = &state.accepted;
    reply::chunk(a.request.kind, &a.id, a.created, &a.request.model, piece)
}

/// The events after the final reply: the rest of the text, the closing chunk, the usage.
fn finish(state: &mut Streaming, reply: &Reply) -> Event {
    if let Some(usage) = reply.usage {
        state
            .accepted
            .charge
            .settle_later(usage.prompt_tokens.saturating_add(usage.completion_tokens));
    }
    if reply.status == ReplyStatus::Error {
        let error = ApiError::of_failed_reply(reply);
        state.accepted.guard.disarm();
        return fail(state, error);
    }
    let text = reply.text.as_deref().unwrap_or_default();
    let calls = reply.tool_calls.as_deref().unwrap_or_default();
    let rest = text.strip_prefix(state.sent.as_str());
    // Streamed calls belong to the attempt that streamed them; another attempt's reply
    // cannot continue them.
    let calls_continue = state.calls_streamed == 0 || state.attempt == Some(reply.attempt);
    let (Some(rest), true) = (rest, calls_continue) else {
        state.accepted.guard.disarm();
        return fail(
            state,
            ApiError::internal(
                "the task was retried after a failure and its text changed; send the request again",
            ),
        );
    };
    let unsent = reply.logprobs.as_deref().map(|tokens| {
        let unsent = tokens.get(state.logprobs_sent..).unwrap_or_default();
        (unsent, state.offset_sent)
    });
    let mut closing = Vec::new();
    if state.calls_streamed == 0 && !calls.is_empty() {
        // Chunks of another attempt were dropped: the calls go out whole.
        let whole = whole_calls(calls);
        closing.push(chunk(state, Piece::ToolCalls(rest, &whole)));
    } else if !rest.is_empty() || unsent.is_some_and(|(tokens, _)| !tokens.is_empty()) {
        closing.push(chunk(state, Piece::Text(rest, unsent)));
    }
    closing.push(chunk(state, Piece::Finish(reply)));
    if state.accepted.request.include_usage {
        closing.push(chunk(state, Piece::Usage(reply)));
    }
    let first = closing.remove(0);
    state.phase = Phase::Closing(closing);
    data(&first)
}

/// Calls as one streamed piece each: id, name and all the arguments.
fn whole_calls(calls: &[ToolCall]) -> Vec<ToolCallDelta> {
    (0_u32..)
        .zip(calls)
        .map(|(index, call)| ToolCallDelta::whole(index, call))
        .collect()
}

/// Ends the stream with an error event.
fn fail(state: &mut Streaming, error: ApiError) -> Event {
    state.phase = Phase::Done;
    data(&error.body())
}
