//! Every way a gateway request can fail, as OpenAI's error envelope
//! `{"error": {"message", "type", "param", "code"}}` with the matching HTTP status, so that
//! the official SDKs raise their typed exceptions. Also the mapping from a worker's error
//! reply (wire contract codes) and from client failures (full queue, lost broker) to HTTP.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::client::ClientError;
use crate::gateway::backlog::RETRY_AFTER_UNKNOWN;
use crate::protocol::{ErrorBody, ErrorCode};

/// The code of a 429 for a full task queue (its Retry-After is estimated where it is
/// published: `BrokerLink::publish_guarded`).
pub const QUEUE_FULL: &str = "queue_full";

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI's `type` (`invalid_request_error`, ...).
    pub kind: &'static str,
    /// Machine-readable code.
    pub code: String,
    /// What went wrong, in words.
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<Box<str>>,
    /// `Retry-After`, for 429 and 503.
    pub retry_after: Option<Duration>,
    /// Tells OpenAI's SDKs not to retry on their own (`x-should-retry: false`): the caller
    /// asked for an answer now, and an SDK would wait out `Retry-After` first.
    pub no_retry: bool,
    /// What a few errors carry besides their envelope (boxed: errors travel in every
    /// `Result` of a request's path, and most carry none).
    pub extras: Option<Box<Extras>>,
}

/// What a few errors carry besides their envelope.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// For a full queue: the routing key the broker refused (the queue's name, or under
    /// routing by model the model's), which picks the queue whose drain sets `retry_after`.
    pub refused_key: Option<Box<str>>,
    /// More headers: OpenAI's `x-ratelimit-*` on a rate limit's 429.
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            code: code.to_owned(),
            message: message.into(),
            param: None,
            retry_after: None,
            no_retry: false,
            extras: None,
        }
    }

    /// For a full queue: the routing key the broker refused.
    pub fn refused_key(&self) -> Option<&str> {
        self.extras.as_ref()?.refused_key.as_deref()
    }

    /// The same error with these headers too.
    pub fn with_headers(mut self, headers: Vec<(&'static str, String)>) -> Self {
        self.extras.get_or_insert_default().headers = headers;
        self
    }

    /// 400: the request is malformed or asks for something impossible.
    pub fn invalid(message: impl Into<String>, param: Option<String>) -> Self {
        ApiError {
            param: param.map(String::into_boxed_str),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
                message,
            )
        }
    }

    /// A 400 for a request body serde could not read into its shape: the field's path as
    /// `param` (a missing top-level field's name), none when the body itself is wrong.
    pub fn bad_shape(error: &serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = error.path().to_string();
        if path == "." {
            let why = error.inner().to_string();
            let missing = why
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(field, _)| field.to_owned());
            match missing {
                Some(field) => ApiError::invalid(format!("`{field}` is required"), Some(field)),
                None => ApiError::invalid(format!("the request body is not valid: {why}"), None),
            }
        } else {
            let message = format!("`{path}` is not valid: {}", error.inner());
            ApiError::invalid(message, Some(path))
        }
    }

    /// 401: no API key, or not one of the accepted keys.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            message,
        )
    }

    /// 404: no such route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            message,
        )
    }

    /// 405: the path exists, not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "this endpoint does not take this method",
        )
    }

    /// 404 for a stored object (a `file`, a `batch`) that does not exist or belongs to another
    /// key: code `{what}_not_found`, as OpenAI names it.
    pub fn no_such(what: &str, id: &str) -> Self {
        ApiError {
            code: format!("{what}_not_found"),
            ..Self::not_found(format!("no {what} with id `{id}`"))
        }
    }

    /// 400 for a task the worker would refuse: the wire contract's message, as it would be in
    /// the worker's error reply.
    pub fn refused_task(error: crate::protocol::TaskError) -> Self {
        Self::invalid(error.message, None)
    }

    /// 413: the body is larger than `gateway.max_body_bytes`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// The request's body, or why it could not be read (413 over `limit`).
    pub fn read_body(
        body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
        limit: usize,
    ) -> Result<axum::body::Bytes, ApiError> {
        use axum::extract::rejection::BytesRejection;
        body.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(_) => ApiError::too_large(limit),
            other => ApiError::invalid(other.body_text(), None),
        })
    }

    /// 429: a rate limit of this key is spent, or the queue is full.
    pub fn rate_limited(code: &str, message: impl Into<String>, retry_after: Duration) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                code,
                message,
            )
        }
    }

    /// 503: the broker cannot be reached right now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "broker_unavailable",
                message,
            )
        }
    }

    /// 503 with a `code` of its own, for what is expected to pass (set `retry_after`).
    pub fn service_unavailable(code: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            code,
            message,
        )
    }

    /// 503: RabbitMQ blocks publishers (a memory or disk alarm): a publish would wait until
    /// it clears.
    pub fn broker_blocked(reason: &str) -> Self {
        ApiError {
            retry_after: Some(Duration::from_secs(5)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "broker_blocked",
                format!(
                    "RabbitMQ is blocking publishers ({reason}, a memory or disk alarm); \
                     try again later"
                ),
            )
        }
    }

    /// Whether this is [`ApiError::broker_blocked`].
    pub fn is_blocked(&self) -> bool {
        self.code == "broker_blocked"
    }

    /// 504: no reply came in time. Not for an SDK to retry: the caller has waited the
    /// operator's bound already, and each retry would be a new task waiting as long.
    pub fn timed_out(waited: Duration) -> Self {
        ApiError {
            no_retry: true,
            ..Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "timeout",
                format!(
                    "no reply within {} ms; the task was cancelled",
                    waited.as_millis()
                ),
            )
        }
    }

    /// 500: the gateway itself failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal",
            message,
        )
    }

    /// The answer for a failed reply: its error, or 500 when it carries none.
    pub fn of_failed_reply(reply: &crate::protocol::Reply) -> Self {
        reply.error.as_ref().map_or_else(
            || ApiError::internal("the worker failed without a reason"),
            ApiError::from_reply,
        )
    }

    /// The answer for a worker's error reply. A reply that ended the task after its retries
    /// or its time (`inference_failed`, `timeout`, `expired`, `cancelled`), or says it is not
    /// retryable (a poison task's `internal`), is not for an SDK to retry on its own: the
    /// worker's retry policy is spent, the time waited already.
    pub fn from_reply(error: &ErrorBody) -> Self {
        let (status, kind) = match error.code {
            ErrorCode::InvalidRequest
            | ErrorCode::PromptTooLong
            | ErrorCode::ContextLengthExceeded => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            ErrorCode::Timeout | ErrorCode::Expired => {
                (StatusCode::GATEWAY_TIMEOUT, "server_error")
            }
            // Only the gateway cancels its own tasks, after its caller left or timed out.
            ErrorCode::Cancelled => (StatusCode::GATEWAY_TIMEOUT, "server_error"),
            ErrorCode::InferenceFailed | ErrorCode::Internal => {
                (StatusCode::INTERNAL_SERVER_ERROR, "server_error")
            }
        };
        let no_retry = !error.retryable
            || matches!(
                error.code,
                ErrorCode::InferenceFailed
                    | ErrorCode::Timeout
                    | ErrorCode::Expired
                    | ErrorCode::Cancelled
            );
        ApiError {
            no_retry,
            ..Self::new(status, kind, error.code.as_str(), error.message.clone())
        }
    }

    /// The error object alone, as sent inside a stream.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::QueueFull(key) => ApiError {
                extras: Some(Box::new(Extras {
                    refused_key: Some(key.as_str().into()),
                    ..Extras::default()
                })),
                ..ApiError::rate_limited(
                    QUEUE_FULL,
                    format!("the requests queue `{key}` is full; try again later"),
                    RETRY_AFTER_UNKNOWN,
                )
            },
            ClientError::Unroutable(queue) => {
                ApiError::unavailable(format!("the requests queue `{queue}` does not exist"))
            }
            ClientError::Disconnected => {
                ApiError::unavailable("the connection to RabbitMQ is lost; try again")
            }
            ClientError::Broker(e) => ApiError::unavailable(format!("RabbitMQ failed: {e}")),
        }
    }
}

/// What a failed request's log line says of its error: put on the response by
/// [`ApiError`], read by the request's span (`gateway::traced`), which logs server errors.
#[derive(Debug, Clone)]
pub struct ErrorSummary {
    /// The envelope's `code`.
    pub code: String,
    /// Its `message`.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        response.extensions_mut().insert(ErrorSummary {
            code: self.code.clone(),
            message: self.message.clone(),
        });
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if self.no_retry {
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        for (name, value) in self.extras.iter().flat_map(|extras| extras.headers.iter()) {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.headers_mut().insert(*name, value);
            }
        }
        response
    }
}

#[cfg(test)]
#[path = "errors_tests.rs"]
mod tests;
