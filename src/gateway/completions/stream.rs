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
use crate::protocol::{FunctionDelta, Reply, ReplyStatus, ToolCall, ToolCallDelta};

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
    /// The arguments sent of each tool call whose first piece was sent, by index.
    calls_sent: Vec<String>,
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
        calls_sent: Vec::new(),
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
                let task = &state.accepted.request.task;
                let calls_possible = task.tools.as_ref().is_some_and(|t| !t.is_empty())
                    && task.tool_choice.as_ref().is_none_or(|c| c != "none");
                return Some(data(&chunk(state, Piece::Start { calls_possible })));
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
                    for call in calls {
                        let index = call.index as usize;
                        if state.calls_sent.len() <= index {
                            state.calls_sent.resize(index + 1, String::new());
                        }
                        state.calls_sent[index].push_str(&call.function.arguments);
                    }
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
    let calls_continue = state.calls_sent.is_empty() || state.attempt == Some(reply.attempt);
    let unsent_calls = calls_continue
        .then(|| unsent_calls(&state.calls_sent, calls))
        .flatten();
    let Some(unsent_calls) = unsent_calls else {
        state.accepted.guard.disarm();
        return fail(state, ApiError::internal(CALLS_CHANGED));
    };
    let Some(rest) = rest else {
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
    if !unsent_calls.is_empty() {
        closing.push(chunk(state, Piece::ToolCalls(rest, &unsent_calls)));
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

/// The error that ends a stream whose tool calls the final reply does not continue.
pub(crate) const CALLS_CHANGED: &str = "the tool-call arguments streamed do not begin the final \
     reply's (the task was retried after a failure, or its arguments were rewritten); send \
     the request again";

/// What of the reply's `calls` the chunks did not carry (`sent`: the arguments they carried,
/// by call): the rest of each call's arguments, and whole the calls they did not begin (the
/// chunks of another attempt were dropped, or the worker could not publish them all).
/// `None` when the chunks carried arguments the reply's do not begin with (or a call the
/// reply lacks): the client already holds arguments the reply cannot complete.
pub(crate) fn unsent_calls(sent: &[String], calls: &[ToolCall]) -> Option<Vec<ToolCallDelta>> {
    if sent.len() > calls.len() {
        return None;
    }
    let mut unsent = Vec::new();
    for (index, call) in (0_u32..).zip(calls) {
        let Some(sent) = sent.get(index as usize) else {
            unsent.push(ToolCallDelta::whole(index, call));
            continue;
        };
        let rest = call.function.arguments.strip_prefix(sent.as_str())?;
        if !rest.is_empty() {
            unsent.push(ToolCallDelta {
                index,
                id: None,
                kind: None,
                function: FunctionDelta {
                    name: None,
                    arguments: rest.to_owned(),
                },
            });
        }
    }
    Some(unsent)
}

/// Ends the stream with an error event.
fn fail(state: &mut Streaming, error: ApiError) -> Event {
    state.phase = Phase::Done;
    data(&error.body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_completes_the_calls_the_chunks_began_and_adds_those_they_did_not() {
        let calls = [
            ToolCall::new("get_weather".into(), r#"{"city":"Paris"}"#.into()),
            ToolCall::new("get_time".into(), r#"{"zone":"CET"}"#.into()),
        ];
        // Nothing streamed: both whole.
        let whole = unsent_calls(&[], &calls).expect("nothing sent");
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[1].id.as_deref(), Some(calls[1].id.as_str()));
        assert_eq!(whole[1].function.arguments, calls[1].function.arguments);
        // The first call begun, its arguments cut short; the second never sent.
        let rest = unsent_calls(&[r#"{"city":"#.into()], &calls).expect("a prefix sent");
        assert_eq!(rest.len(), 2);
        assert_eq!((rest[0].index, rest[0].id.as_ref()), (0, None));
        assert_eq!(rest[0].function.arguments, r#""Paris"}"#);
        assert_eq!(rest[1].function.name.as_deref(), Some("get_time"));
        // Everything streamed: nothing more.
        let all: Vec<String> = calls.iter().map(|c| c.function.arguments.clone()).collect();
        assert_eq!(unsent_calls(&all, &calls).map(|rest| rest.len()), Some(0));
    }

    #[test]
    fn streamed_arguments_the_reply_does_not_continue_are_refused_not_dropped() {
        let calls = [ToolCall::new(
            "get_weather".into(),
            r#"{"city":"Paris"}"#.into(),
        )];
        // The chunks carried other arguments than the reply holds.
        assert!(unsent_calls(&[r#"{"town":"#.into()], &calls).is_none());
        // The chunks began a call the reply does not have.
        assert!(unsent_calls(&[String::new(), "{".into()], &calls).is_none());
    }
}
