//! Why a task failed: the wire's error codes, and the error value carried inside warren.

use serde::{Deserialize, Serialize};

/// Why a task failed. Serialized in snake_case (`invalid_request`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not a valid v1 task (not JSON, wrong types, out of range...).
    InvalidRequest,
    /// The prompt does not fit in the model's context.
    PromptTooLong,
    /// The prompt fits, but not with the `max_tokens` the task asks for.
    ContextLengthExceeded,
    /// Inference took longer than the task's `timeout_ms`.
    Timeout,
    /// The task's deadline passed before it could start.
    Expired,
    /// llama.cpp failed while running the task.
    InferenceFailed,
    /// Something inside warren failed.
    Internal,
    /// The task's caller cancelled it (a cancel message on the control exchange).
    Cancelled,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::InvalidRequest,
        ErrorCode::PromptTooLong,
        ErrorCode::ContextLengthExceeded,
        ErrorCode::Timeout,
        ErrorCode::Expired,
        ErrorCode::InferenceFailed,
        ErrorCode::Internal,
        ErrorCode::Cancelled,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::PromptTooLong => "prompt_too_long",
            ErrorCode::ContextLengthExceeded => "context_length_exceeded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Expired => "expired",
            ErrorCode::InferenceFailed => "inference_failed",
            ErrorCode::Internal => "internal",
            ErrorCode::Cancelled => "cancelled",
        }
    }

    /// Whether this kind of failure may succeed when tried again. Bad input never does.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Timeout | ErrorCode::InferenceFailed | ErrorCode::Internal
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of one task, with a message meant for the task's author.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct TaskError {
    /// The kind of failure.
    pub code: ErrorCode,
    /// What went wrong, in words.
    pub message: String,
}

impl TaskError {
    /// A failure of the given kind.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TaskError {
            code,
            message: message.into(),
        }
    }

    /// An `invalid_request` failure.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// An `internal` failure.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

/// A value quoted in an error message, cut short so a hostile 1 MB value does not echo back.
pub(super) fn short(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.len() <= 40 {
        return text;
    }
    let mut end = 40;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(ErrorCode::Timeout.retryable());
        assert!(ErrorCode::InferenceFailed.retryable());
        assert!(ErrorCode::Internal.retryable());
        assert!(!ErrorCode::InvalidRequest.retryable());
        assert!(!ErrorCode::PromptTooLong.retryable());
        assert!(!ErrorCode::ContextLengthExceeded.retryable());
        assert!(!ErrorCode::Expired.retryable());
    }
}
