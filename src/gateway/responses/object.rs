//! OpenAI's Responses API response object: built for each state (`queued`, `in_progress`,
//! and the ends a worker's [`Reply`] leads to) from the checked request
//! ([`super::request`]). Pure values only, unit-tested.

use serde_json::{json, Value};

use super::request::ResponseRequest;
use crate::gateway::completions::logprobs;
use crate::protocol::{ErrorCode, FinishReason, Reply, ReplyStatus};

/// The states of a response; the last four are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Accepted and waiting in the queue.
    Queued,
    /// A worker took it.
    InProgress,
    /// It finished with text.
    Completed,
    /// It stopped at `max_output_tokens`.
    Incomplete,
    /// It failed for good.
    Failed,
    /// Its caller cancelled it.
    Cancelled,
}

impl Status {
    /// The status as OpenAI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete => "incomplete",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a stored status.
    pub fn parse(text: &str) -> Option<Status> {
        [
            Status::Queued,
            Status::InProgress,
            Status::Completed,
            Status::Incomplete,
            Status::Failed,
            Status::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether nothing more happens to a response in this state.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::InProgress)
    }

    /// The webhook event type announcing this final state.
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            Status::Completed => Some("response.completed"),
            Status::Incomplete => Some("response.incomplete"),
            Status::Failed => Some("response.failed"),
            Status::Cancelled => Some("response.cancelled"),
            Status::Queued | Status::InProgress => None,
        }
    }
}

/// The response object of a request just accepted.
pub fn queued(id: &str, created_at: u64, request: &ResponseRequest) -> Value {
    let mut object = json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": Status::Queued.as_str(),
        "background": request.background,
        "model": request.model,
        "output": [],
        "usage": null,
        "error": null,
        "incomplete_details": null,
        "metadata": request.metadata,
    });
    if let (Some(object), Some(echo)) = (object.as_object_mut(), request.echo.as_object()) {
        object.extend(echo.clone());
    }
    object
}

/// `object` moved to `status` (no output yet).
pub fn with_status(object: &Value, status: Status) -> Value {
    let mut next = object.clone();
    next["status"] = json!(status.as_str());
    next
}

/// The final state a worker's reply leads to.
pub fn outcome(reply: &Reply) -> Status {
    match (reply.status, reply.error.as_ref().map(|e| e.code)) {
        (ReplyStatus::Ok, _) if reply.finish_reason == Some(FinishReason::Length) => {
            Status::Incomplete
        }
        (ReplyStatus::Ok, _) => Status::Completed,
        (_, Some(ErrorCode::Cancelled)) => Status::Cancelled,
        _ => Status::Failed,
    }
}

/// `object` finished by `reply`: its status, output, usage and error. Its `model` stays the
/// name it was created with (the one `/v1/models` lists), not the worker's.
pub fn finished(object: &Value, reply: &Reply) -> Value {
    let status = outcome(reply);
    let mut next = with_status(object, status);
    let calls = reply.tool_calls.as_deref().unwrap_or_default();
    let id = object["id"].as_str().unwrap_or_default();
    let suffix = id.trim_start_matches("resp_");
    let mut output = Vec::new();
    // An item cut short by `max_output_tokens` is incomplete, as its response is.
    let item_status = if status == Status::Incomplete {
        "incomplete"
    } else {
        "completed"
    };
    // A reply that only calls tools has no message, as OpenAI's.
    if let Some(text) = reply
        .text
        .as_ref()
        .filter(|t| calls.is_empty() || !t.is_empty())
    {
        let mut content = json!({"type": "output_text", "text": text, "annotations": []});
        if let Some(tokens) = &reply.logprobs {
            content["logprobs"] = logprobs::entries(tokens);
        }
        output.push(json!({
            "type": "message",
            "id": format!("msg_{suffix}"),
            "status": item_status,
            "role": "assistant",
            "content": [content],
        }));
    }
    for (index, call) in calls.iter().enumerate() {
        output.push(json!({
            "type": "function_call",
            "id": format!("fc_{suffix}_{index}"),
            "call_id": call.id,
            "name": call.function.name,
            "arguments": call.function.arguments,
            "status": item_status,
        }));
    }
    if reply.text.is_some() || !calls.is_empty() {
        next["output"] = Value::Array(output);
    }
    if let Some(usage) = reply.usage {
        next["usage"] = json!({
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            // Required by OpenAI's types. A prompt warren reads is kept for reuse without a
            // write of its own, so none is counted.
            "input_tokens_details": {
                "cached_tokens": usage.cached_prompt_tokens,
                "cache_write_tokens": 0,
            },
            "output_tokens_details": {"reasoning_tokens": 0},
        });
    }
    if status == Status::Incomplete {
        next["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    if let (Status::Failed, Some(error)) = (status, &reply.error) {
        next["error"] = json!({"code": error.code.as_str(), "message": error.message});
    }
    next
}

#[cfg(test)]
#[path = "object_tests.rs"]
mod tests;
