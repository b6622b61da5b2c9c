//! Streaming a response (`stream: true`) as OpenAI's typed server-sent events, each with its
//! `type` and a `sequence_number` from 0: `response.created`, `response.in_progress`, then
//! per output item `response.output_item.added`, its pieces (`response.content_part.added`,
//! `response.output_text.delta`/`.done`, `response.content_part.done` for the message;
//! `response.function_call_arguments.delta`/`.done` for a call) and
//! `response.output_item.done`, and last `response.completed` (or `response.incomplete`,
//! `response.failed`; an `error` event when no reply comes). The items' ids are the ones the
//! final response object gives them ([`object::finished`]).
//!
//! [`Events`] is the pure part: what events a piece of the answer makes. The relay
//! ([`super::stream`]) feeds it the first attempt's AMQP chunks and the final reply.

use serde_json::{json, Value};

use super::object::{self, Status};
use crate::gateway::completions::logprobs;
use crate::gateway::completions::stream::{unsent_calls, CALLS_CHANGED};
use crate::gateway::errors::ApiError;
use crate::protocol::{Reply, ReplyStatus, TokenLogprob, ToolCallDelta};

/// The events of one streamed response, built piece by piece.
pub(super) struct Events {
    /// The response object as created (status and output filled in as it goes).
    object: Value,
    /// `resp_…` without its prefix: the items' ids are made from it.
    suffix: String,
    sequence: u64,
    /// The message item's output index, once it was opened.
    message_index: Option<usize>,
    /// Its text so far.
    message_text: String,
    /// Whether it is still open (a call's first piece closes it).
    message_open: bool,
    /// The log probability entries sent with its deltas so far.
    logprobs_sent: Vec<Value>,
    /// Calls opened: output index, call id, name, arguments so far.
    calls: Vec<OpenCall>,
    items: usize,
}

struct OpenCall {
    output_index: usize,
    call_id: String,
    name: String,
    arguments: String,
}

impl Events {
    /// The events of a response whose created object is `object`.
    pub(super) fn new(object: Value) -> Events {
        let suffix = object["id"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("resp_")
            .to_owned();
        Events {
            object,
            suffix,
            sequence: 0,
            message_index: None,
            message_text: String::new(),
            message_open: false,
            logprobs_sent: Vec::new(),
            calls: Vec::new(),
            items: 0,
        }
    }

    fn event(&mut self, kind: &str, mut body: Value) -> Value {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        body
    }

    /// The response object as created.
    pub(super) fn created(&self) -> &Value {
        &self.object
    }

    /// `response.created` and `response.in_progress`.
    pub(super) fn opening(&mut self) -> Vec<Value> {
        let progress = object::with_status(&self.object, Status::InProgress);
        vec![
            self.event("response.created", json!({"response": progress})),
            self.event("response.in_progress", json!({"response": progress})),
        ]
    }

    fn message_id(&self) -> String {
        format!("msg_{}", self.suffix)
    }

    /// Opens the message item, unless it was opened before.
    fn open_message(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        if self.message_index.is_none() {
            let index = self.items;
            self.items += 1;
            self.message_open = true;
            self.message_index = Some(index);
            let item = json!({"type": "message", "id": self.message_id(), "status": "in_progress",
                              "role": "assistant", "content": []});
            let added = json!({"output_index": index, "item": item});
            events.push(self.event("response.output_item.added", added));
            let part = json!({"item_id": self.message_id(), "output_index": index, "content_index": 0,
                              "part": {"type": "output_text", "text": "", "annotations": []}});
            events.push(self.event("response.content_part.added", part));
        }
        events
    }

    /// New text of the message (opened on its first text).
    pub(super) fn text(&mut self, delta: &str, tokens: &[TokenLogprob]) -> Vec<Value> {
        // A token can end with no text of its own (a stop string began inside it): its entry
        // still goes out, with an empty delta.
        if delta.is_empty() && tokens.is_empty() {
            return Vec::new();
        }
        let mut events = self.open_message();
        // Text after a call would belong to a message the stream already closed: the final
        // object holds it, the events do not.
        let (Some(index), true) = (self.message_index, self.message_open) else {
            return events;
        };
        self.message_text.push_str(delta);
        let entries = logprobs::entries(tokens);
        if let Value::Array(sent) = &entries {
            self.logprobs_sent.extend(sent.iter().cloned());
        }
        let body = json!({"item_id": self.message_id(), "output_index": index, "content_index": 0,
                          "delta": delta, "logprobs": entries});
        events.push(self.event("response.output_text.delta", body));
        events
    }

    /// Closes the open message, if any, as `status`.
    fn close_message(&mut self, status: &str) -> Vec<Value> {
        let (Some(index), true) = (self.message_index, self.message_open) else {
            return Vec::new();
        };
        self.message_open = false;
        let text = self.message_text.clone();
        let id = self.message_id();
        let part = json!({"type": "output_text", "text": text, "annotations": []});
        let item = json!({"type": "message", "id": id, "status": status, "role": "assistant",
                          "content": [part]});
        vec![
            self.event(
                "response.output_text.done",
                json!({"item_id": id, "output_index": index,
                "content_index": 0, "text": text, "logprobs": self.logprobs_sent.clone()}),
            ),
            self.event(
                "response.content_part.done",
                json!({"item_id": id, "output_index": index,
                "content_index": 0, "part": part}),
            ),
            self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ),
        ]
    }

    fn call_item(&self, call: usize, status: &str) -> Value {
        let open = &self.calls[call];
        json!({"type": "function_call", "id": format!("fc_{}_{call}", self.suffix),
               "call_id": open.call_id, "name": open.name, "arguments": open.arguments,
               "status": status})
    }

    /// Pieces of tool calls: a call's first piece opens its item (closing the message).
    pub(super) fn calls(&mut self, pieces: &[ToolCallDelta]) -> Vec<Value> {
        let mut events = Vec::new();
        for piece in pieces {
            let call = piece.index as usize;
            if call == self.calls.len() {
                events.extend(self.close_message("completed"));
                let output_index = self.items;
                self.items += 1;
                self.calls.push(OpenCall {
                    output_index,
                    call_id: piece.id.clone().unwrap_or_default(),
                    name: piece.function.name.clone().unwrap_or_default(),
                    arguments: String::new(),
                });
                let added = json!({"output_index": output_index, "item": self.call_item(call, "in_progress")});
                events.push(self.event("response.output_item.added", added));
            }
            let Some(open) = self.calls.get_mut(call) else {
                continue;
            };
            if piece.function.arguments.is_empty() {
                continue;
            }
            open.arguments.push_str(&piece.function.arguments);
            let body = json!({"item_id": format!("fc_{}_{call}", self.suffix),
                              "output_index": open.output_index, "delta": piece.function.arguments});
            events.push(self.event("response.function_call_arguments.delta", body));
        }
        events
    }

    /// The final reply: what it adds, every open item closed, and the final event.
    pub(super) fn finish(&mut self, reply: &Reply) -> Vec<Value> {
        let finished = object::finished(&self.object, reply);
        if reply.status == ReplyStatus::Error {
            return vec![self.event("response.failed", json!({"response": finished}))];
        }
        let text = reply.text.as_deref().unwrap_or_default();
        let calls = reply.tool_calls.as_deref().unwrap_or_default();
        // The rest of each call the chunks began (the engine's last piece comes with the
        // reply when chunks were grouped), and whole the calls they did not carry.
        let sent: Vec<String> = self.calls.iter().map(|c| c.arguments.clone()).collect();
        let Some(unsent_calls) = unsent_calls(&sent, calls) else {
            return vec![self.error(&ApiError::internal(CALLS_CHANGED))];
        };
        let Some(rest) = text
            .strip_prefix(self.message_text.as_str())
            .map(str::to_owned)
        else {
            let changed = ApiError::internal(
                "the task was retried after a failure and its text changed; send the request again",
            );
            return vec![self.error(&changed)];
        };
        // The entries of the tokens the chunks did not carry (those the task asked for).
        let tokens = reply.logprobs.as_deref().unwrap_or_default();
        let unsent = tokens.get(self.logprobs_sent.len()..).unwrap_or_default();
        let mut events = self.text(&rest, unsent);
        // A reply with neither text nor calls still has its (empty) message, as the object.
        if calls.is_empty() && self.message_index.is_none() {
            events.extend(self.open_message());
        }
        let status = if object::outcome(reply) == Status::Incomplete {
            "incomplete"
        } else {
            "completed"
        };
        events.extend(self.close_message(status));
        events.extend(self.calls(&unsent_calls));
        for index in 0..self.calls.len() {
            let open = &self.calls[index];
            let body = json!({"item_id": format!("fc_{}_{index}", self.suffix),
                              "output_index": open.output_index, "name": open.name,
                              "arguments": open.arguments});
            let output_index = open.output_index;
            events.push(self.event("response.function_call_arguments.done", body));
            let item = self.call_item(index, status);
            events.push(self.event(
                "response.output_item.done",
                json!({"output_index": output_index, "item": item}),
            ));
        }
        let kind = match object::outcome(reply) {
            Status::Incomplete => "response.incomplete",
            _ => "response.completed",
        };
        events.push(self.event(kind, json!({"response": finished})));
        events
    }

    /// Whether a call was streamed (its attempt's calls are then the only ones that fit).
    pub(super) fn streamed_calls(&self) -> bool {
        !self.calls.is_empty()
    }

    /// The `error` event that ends a stream without a reply.
    pub(super) fn error(&mut self, error: &ApiError) -> Value {
        let body = error.body();
        let inner = &body["error"];
        self.event(
            "error",
            json!({"code": inner["code"], "message": inner["message"], "param": inner["param"]}),
        )
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
