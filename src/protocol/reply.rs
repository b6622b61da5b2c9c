//! Replies and streamed chunks, as published to a task's `reply_to`.

use serde::{Deserialize, Serialize};

use super::tools::{ToolCall, ToolCallDelta};
use super::{ErrorCode, TaskError, TokenLogprob, WIRE_VERSION};

/// `status` of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyStatus {
    /// The task completed; `text` holds the completion.
    Ok,
    /// The task failed for good; `error` says why.
    Error,
    /// A piece of streamed text (`stream: true`), before the final reply.
    Chunk,
    /// A worker took the task to its engine (`progress: true`), before any chunk or reply.
    Started,
}

/// The message a worker sends when it takes a task that asked for `progress` to its engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    /// Wire contract version ([`WIRE_VERSION`]).
    pub version: u32,
    /// Same as the final reply's `id`.
    pub id: Option<String>,
    /// Always `started`.
    pub status: ReplyStatus,
    /// The attempt that started, from 1.
    pub attempt: u32,
}

impl Started {
    /// The message for attempt `attempt` of task `id`.
    pub fn new(id: Option<String>, attempt: u32) -> Started {
        Started {
            version: WIRE_VERSION,
            id,
            status: ReplyStatus::Started,
            attempt,
        }
    }
}

/// Anything a worker publishes to a task's `reply_to`.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The task started (`progress: true`).
    Started(Started),
    /// Streamed text (`stream: true`).
    Chunk(Chunk),
    /// The final reply.
    Reply(Reply),
}

impl Message {
    /// Reads a message published to a `reply_to` queue; `None` for anything that is not
    /// contract v1.
    pub fn decode(body: &[u8]) -> Option<Message> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        match value.get("status")?.as_str()? {
            "started" => serde_json::from_value(value).ok().map(Message::Started),
            "chunk" => serde_json::from_value(value).ok().map(Message::Chunk),
            "ok" | "error" => serde_json::from_value(value).ok().map(Message::Reply),
            _ => None,
        }
    }
}

/// A chunk message of a streamed task: text generated so far, in order. The deltas of one
/// attempt concatenate to the final reply's `text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Wire contract version ([`WIRE_VERSION`]).
    pub version: u32,
    /// Same as the final reply's `id`.
    pub id: Option<String>,
    /// Always `chunk`.
    pub status: ReplyStatus,
    /// Position of this chunk in the attempt's stream, from 0.
    pub index: u32,
    /// The new text.
    pub delta: String,
    /// The attempt this text belongs to; a retried task streams again from index 0.
    pub attempt: u32,
    /// With `logprobs` asked for: the tokens this chunk completes (their text ends within
    /// the deltas so far). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Pieces of tool calls, as OpenAI streams them (a task with `tools`). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its text, or a stop sequence appeared.
    Stop,
    /// `max_tokens` was reached (or the context was full).
    Length,
    /// The model called tools: the reply's `tool_calls` holds the calls.
    ToolCalls,
}

/// Token counts of a completed task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the rendered prompt.
    pub prompt_tokens: u32,
    /// Of those, tokens whose KV cells were reused from an earlier task (not read again).
    /// Added in 0.2 of contract v1; absent from older workers' replies (read as 0).
    #[serde(default)]
    pub cached_prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// From the task's publish time (header `x-warren-published-us`, else its AMQP
    /// `timestamp`, else its receipt by the worker) to the start of inference (to its receipt
    /// for a task refused before it started).
    pub queued: u64,
    /// Reading the prompt.
    pub prompt: u64,
    /// Generating the completion.
    pub generation: u64,
    /// From receipt by the worker to the reply being ready.
    pub total: u64,
}

/// The `error` object of a failed reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable kind of failure.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
    /// Whether this kind of failure may succeed if the task is sent again.
    pub retryable: bool,
}

/// The body of a reply (published to `reply_to`, or to the results queue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Wire contract version ([`WIRE_VERSION`]).
    pub version: u32,
    /// The task's `message_id`, else its `correlation_id`, else null.
    pub id: Option<String>,
    /// `ok` or `error`.
    pub status: ReplyStatus,
    /// The completion; null on error.
    pub text: Option<String>,
    /// Why generation ended; null on error.
    pub finish_reason: Option<FinishReason>,
    /// Token counts; null on error.
    pub usage: Option<Usage>,
    /// Where the time went.
    pub timings_ms: Timings,
    /// The model that served (or would have served) the task.
    pub model: String,
    /// Which attempt this reply ends, counted from 1.
    pub attempt: u32,
    /// With `logprobs` asked for and `status` ok: one entry per token of `text`. Absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// The calls the model made (then `finish_reason` is `tool_calls` and `text` holds what
    /// it said besides, often empty). Absent when it made none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// An embedding task's vectors, one per input in order (added in 0.3 of contract v1);
    /// then `text` and `finish_reason` are null. Absent for generation tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<Vec<Vec<f32>>>,
    /// Present only when `status` is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    /// A failed reply for `error`.
    pub fn failure(
        id: Option<String>,
        error: &TaskError,
        model: &str,
        attempt: u32,
        timings: Timings,
    ) -> Reply {
        Reply {
            version: WIRE_VERSION,
            id,
            status: ReplyStatus::Error,
            text: None,
            finish_reason: None,
            usage: None,
            timings_ms: timings,
            model: model.to_owned(),
            attempt,
            logprobs: None,
            tool_calls: None,
            embeddings: None,
            error: Some(ErrorBody {
                code: error.code,
                message: error.message.clone(),
                retryable: error.code.retryable(),
            }),
        }
    }

    /// The reply as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A Reply holds only strings, numbers and enums: serializing it cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn an_error_reply_serializes_with_null_text_and_an_error_object() {
        let err = TaskError::new(ErrorCode::PromptTooLong, "too long");
        let reply = Reply::failure(Some("t1".into()), &err, "m", 1, Timings::default());
        let value: Value = serde_json::from_slice(&reply.to_bytes()).unwrap();
        assert_eq!(value["status"], "error");
        assert_eq!(value["text"], Value::Null);
        assert_eq!(value["error"]["code"], "prompt_too_long");
        assert_eq!(value["error"]["retryable"], false);
        assert_eq!(value["attempt"], 1);
        assert_eq!(value["version"], 1);
    }
}
