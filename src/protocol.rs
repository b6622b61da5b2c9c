//! Wire contract v1: the JSON a task carries, the JSON a reply carries, and the headers warren
//! adds to dead letters. This module is the product's API (the README documents it field by
//! field): it parses and validates a task body into a [`Task`], and defines the [`Reply`].
//! It must not touch the broker or the engine; it only turns bytes into checked values and back.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{LimitSettings, SamplingSettings};

/// Version of the wire contract, sent in every reply's `version`.
pub const WIRE_VERSION: u32 = 1;

/// Header on a dead-lettered copy: the error code that ended the task.
pub const HEADER_ERROR_CODE: &str = "x-warren-error-code";
/// Header on a dead-lettered copy: the human-readable reason.
pub const HEADER_ERROR: &str = "x-warren-error";
/// Header carrying the attempt number of a task (1 for the first delivery).
pub const HEADER_ATTEMPTS: &str = "x-warren-attempts";
/// Header on a dead-lettered copy: the worker that gave up on it.
pub const HEADER_WORKER: &str = "x-warren-worker";
/// Header on a dead-lettered copy: when it was dead-lettered (Unix time, milliseconds).
pub const HEADER_FAILED_AT: &str = "x-warren-failed-at-ms";
/// Header on a task waiting in a delay queue: the code of the failure that is being retried.
pub const HEADER_LAST_ERROR_CODE: &str = "x-warren-last-error-code";
/// Header on a task waiting in a delay queue: the reason of the failure being retried.
pub const HEADER_LAST_ERROR: &str = "x-warren-last-error";
/// Header on a task in a classic requests queue: deliveries that ended without an outcome.
pub const HEADER_REDELIVERIES: &str = "x-warren-redeliveries";
/// Header on a reply: microseconds from the task's receipt by the worker to the reply's
/// publication (the worker's own time, at a finer grain than `timings_ms.total`).
pub const HEADER_WORKER_MICROS: &str = "x-warren-worker-us";
/// Header on a reply that went to the results queue because its `reply_to` queue did not
/// exist: the original `reply_to`.
pub const HEADER_UNDELIVERABLE: &str = "x-warren-undeliverable-reply-to";

/// Why a task failed. Serialized in snake_case (`invalid_request`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not a valid v1 task (not JSON, wrong types, out of range...).
    InvalidRequest,
    /// The prompt does not fit in the model's context.
    PromptTooLong,
    /// Inference took longer than the task's `timeout_ms`.
    Timeout,
    /// The task's deadline passed before it could start.
    Expired,
    /// llama.cpp failed while running the task.
    InferenceFailed,
    /// Something inside warren failed.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::PromptTooLong => "prompt_too_long",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Expired => "expired",
            ErrorCode::InferenceFailed => "inference_failed",
            ErrorCode::Internal => "internal",
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

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }
}

/// Who speaks in a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user's turn.
    User,
    /// The model's earlier turn.
    Assistant,
}

impl Role {
    /// The role's name as the chat template expects it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a chat task.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What they say.
    pub content: String,
}

/// What the model continues: raw text or a chat rendered with a template.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Raw text, continued as is.
    Prompt(String),
    /// A conversation, rendered with the model's chat template.
    Messages(Vec<ChatMessage>),
}

/// Sampling parameters of a task. `None` means "off" (or the configured default for top_k).
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus sampling in (0, 1].
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: Option<u32>,
    /// Drop tokens less likely than min_p times the most likely one.
    pub min_p: Option<f32>,
    /// Penalty on repeated tokens; 1.0 = off.
    pub repeat_penalty: Option<f32>,
    /// Seed of the random sampler; random when absent.
    pub seed: Option<u32>,
}

/// A validated task, ready for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// What to complete.
    pub input: Input,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// How to pick tokens.
    pub sampling: Sampling,
    /// Stop sequences: generation ends before the first one that appears.
    pub stop: Vec<String>,
    /// Bound on one attempt's inference.
    pub timeout: Duration,
    /// Absolute deadline (Unix time, ms) after which the task must not start.
    pub deadline_ms: Option<u64>,
    /// Send the text in chunk messages as it is generated.
    pub stream: bool,
}

/// The limits validation applies, taken from the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `max_tokens` when absent.
    pub default_max_tokens: u32,
    /// Highest `max_tokens`.
    pub max_tokens_cap: u32,
    /// `timeout_ms` when absent.
    pub default_timeout_ms: u64,
    /// Highest `timeout_ms`.
    pub timeout_cap_ms: u64,
    /// Largest body.
    pub max_body_bytes: usize,
    /// Oldest task still run, in ms; 0 = no limit.
    pub max_age_ms: u64,
    /// Most stop sequences.
    pub max_stop_sequences: usize,
    /// Longest stop sequence in bytes.
    pub max_stop_bytes: usize,
    /// top_k applied when sampling and the task gives none.
    pub default_top_k: u32,
}

impl Limits {
    /// Limits from the `[limits]` and `[sampling]` sections.
    pub fn from_settings(limits: &LimitSettings, sampling: &SamplingSettings) -> Self {
        Limits {
            default_max_tokens: limits.default_max_tokens,
            max_tokens_cap: limits.max_tokens_cap,
            default_timeout_ms: limits.default_timeout_ms,
            timeout_cap_ms: limits.timeout_cap_ms,
            max_body_bytes: limits.max_body_bytes,
            max_age_ms: limits.max_age_ms,
            max_stop_sequences: limits.max_stop_sequences,
            max_stop_bytes: limits.max_stop_bytes,
            default_top_k: sampling.default_top_k,
        }
    }
}

/// Checks the AMQP `content_type` and `content_encoding` of a task: JSON, uncompressed.
pub fn check_content_properties(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<(), TaskError> {
    if let Some(ct) = content_type.map(str::trim).filter(|ct| !ct.is_empty()) {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let is_json =
            media == "application/json" || media == "text/json" || media.ends_with("+json");
        if !is_json {
            return Err(TaskError::invalid(format!(
                "content_type `{ct}` is not supported: send application/json"
            )));
        }
    }
    if let Some(ce) = content_encoding.map(str::trim).filter(|ce| !ce.is_empty()) {
        let ce_lower = ce.to_ascii_lowercase();
        if !matches!(ce_lower.as_str(), "identity" | "utf-8" | "utf8") {
            return Err(TaskError::invalid(format!(
                "content_encoding `{ce}` is not supported: send uncompressed UTF-8 JSON"
            )));
        }
    }
    Ok(())
}

/// Parses and validates a task body. Every rejection is `invalid_request` with a message
/// naming the field; unknown fields are ignored.
pub fn parse_task(body: &[u8], limits: &Limits) -> Result<Task, TaskError> {
    if body.len() > limits.max_body_bytes {
        return Err(TaskError::invalid(format!(
            "body is {} bytes, more than the limit of {} bytes",
            body.len(),
            limits.max_body_bytes
        )));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| TaskError::invalid(format!("body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(TaskError::invalid(format!(
            "body must be a JSON object, not {}",
            json_kind(&value)
        )));
    };
    let fields = Fields(&map);

    if let Some(version) = fields.integer("version", 0, u64::from(u32::MAX))? {
        if version != u64::from(WIRE_VERSION) {
            return Err(TaskError::invalid(format!(
                "version {version} is not supported: this worker speaks version {WIRE_VERSION}"
            )));
        }
    }

    let input = match (map.get("prompt"), map.get("messages")) {
        (Some(_), Some(_)) => {
            return Err(TaskError::invalid(
                "give exactly one of `prompt` or `messages`, not both",
            ))
        }
        (None, None) => {
            return Err(TaskError::invalid(
                "give exactly one of `prompt` (a string) or `messages` (a list)",
            ))
        }
        (Some(prompt), None) => Input::Prompt(parse_prompt(prompt)?),
        (None, Some(messages)) => Input::Messages(parse_messages(messages)?),
    };

    let max_tokens = fields
        .integer("max_tokens", 1, u64::from(limits.max_tokens_cap))?
        .map_or(limits.default_max_tokens, |v| v as u32);
    let temperature = fields
        .number("temperature", 0.0, 100.0, true)?
        .unwrap_or(0.0) as f32;
    let top_p = fields.number("top_p", 0.0, 1.0, false)?.map(|v| v as f32);
    let top_k = fields
        .integer("top_k", 0, u64::from(u32::MAX))?
        .map(|v| v as u32)
        .or(Some(limits.default_top_k))
        .filter(|k| *k > 0);
    let min_p = fields.number("min_p", 0.0, 1.0, true)?.map(|v| v as f32);
    let repeat_penalty = fields
        .number("repeat_penalty", 0.0, 100.0, false)?
        .map(|v| v as f32);
    // u32::MAX is llama.cpp's "pick a random seed", so it is not a valid fixed seed.
    let seed = fields
        .integer("seed", 0, u64::from(u32::MAX - 1))?
        .map(|v| v as u32);
    let stop = parse_stop(map.get("stop"), limits)?;
    let timeout_ms = fields
        .integer("timeout_ms", 1, limits.timeout_cap_ms)?
        .unwrap_or(limits.default_timeout_ms);
    let deadline_ms = fields.integer("deadline_ms", 0, i64::MAX as u64)?;
    let stream = fields.boolean("stream")?.unwrap_or(false);

    Ok(Task {
        input,
        max_tokens,
        sampling: Sampling {
            temperature,
            top_p,
            top_k,
            min_p,
            repeat_penalty,
            seed,
        },
        stop,
        timeout: Duration::from_millis(timeout_ms),
        deadline_ms,
        stream,
    })
}

fn parse_prompt(value: &Value) -> Result<String, TaskError> {
    let Value::String(prompt) = value else {
        return Err(TaskError::invalid(format!(
            "`prompt` must be a string, not {}",
            json_kind(value)
        )));
    };
    if prompt.is_empty() {
        return Err(TaskError::invalid("`prompt` must not be empty"));
    }
    if prompt.contains('\0') {
        return Err(TaskError::invalid(
            "`prompt` must not contain NUL characters",
        ));
    }
    Ok(prompt.clone())
}

fn parse_messages(value: &Value) -> Result<Vec<ChatMessage>, TaskError> {
    let Value::Array(items) = value else {
        return Err(TaskError::invalid(format!(
            "`messages` must be a list of {{role, content}} objects, not {}",
            json_kind(value)
        )));
    };
    if items.is_empty() {
        return Err(TaskError::invalid("`messages` must not be empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(message) = item else {
                return Err(TaskError::invalid(format!(
                    "`messages[{i}]` must be an object with `role` and `content`, not {}",
                    json_kind(item)
                )));
            };
            let role = match message.get("role") {
                Some(Value::String(r)) if r == "system" => Role::System,
                Some(Value::String(r)) if r == "user" => Role::User,
                Some(Value::String(r)) if r == "assistant" => Role::Assistant,
                Some(other) => {
                    return Err(TaskError::invalid(format!(
                        "`messages[{i}].role` must be \"system\", \"user\" or \"assistant\", not {other}"
                    )))
                }
                None => {
                    return Err(TaskError::invalid(format!(
                        "`messages[{i}].role` is missing"
                    )))
                }
            };
            let content = match message.get("content") {
                Some(Value::String(c)) if c.contains('\0') => {
                    return Err(TaskError::invalid(format!(
                        "`messages[{i}].content` must not contain NUL characters"
                    )))
                }
                Some(Value::String(c)) => c.clone(),
                Some(other) => {
                    return Err(TaskError::invalid(format!(
                        "`messages[{i}].content` must be a string, not {}",
                        json_kind(other)
                    )))
                }
                None => {
                    return Err(TaskError::invalid(format!(
                        "`messages[{i}].content` is missing"
                    )))
                }
            };
            Ok(ChatMessage { role, content })
        })
        .collect()
}

fn parse_stop(value: Option<&Value>, limits: &Limits) -> Result<Vec<String>, TaskError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(TaskError::invalid(format!(
                "`stop` must be a list of strings, not {}",
                json_kind(other)
            )))
        }
    };
    if items.len() > limits.max_stop_sequences {
        return Err(TaskError::invalid(format!(
            "`stop` has {} entries, more than the limit of {}",
            items.len(),
            limits.max_stop_sequences
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) if s.is_empty() => {
                Err(TaskError::invalid(format!("`stop[{i}]` must not be empty")))
            }
            Value::String(s) if s.len() > limits.max_stop_bytes => {
                Err(TaskError::invalid(format!(
                    "`stop[{i}]` is {} bytes, more than the limit of {}",
                    s.len(),
                    limits.max_stop_bytes
                )))
            }
            Value::String(s) => Ok(s.clone()),
            other => Err(TaskError::invalid(format!(
                "`stop[{i}]` must be a string, not {}",
                json_kind(other)
            ))),
        })
        .collect()
}

/// Typed, range-checked access to the optional fields of a task object. `null` counts as absent.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn present(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn integer(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, TaskError> {
        let Some(value) = self.present(name) else {
            return Ok(None);
        };
        match value.as_u64() {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(TaskError::invalid(format!(
                "`{name}` must be an integer from {min} to {max}, not {}",
                short(value)
            ))),
        }
    }

    /// A finite number in `[min, max]`, or `(min, max]` when `min_inclusive` is false.
    fn number(
        &self,
        name: &str,
        min: f64,
        max: f64,
        min_inclusive: bool,
    ) -> Result<Option<f64>, TaskError> {
        let Some(value) = self.present(name) else {
            return Ok(None);
        };
        let in_range =
            |v: f64| v.is_finite() && v <= max && if min_inclusive { v >= min } else { v > min };
        match value.as_f64() {
            Some(v) if in_range(v) => Ok(Some(v)),
            _ => {
                let open = if min_inclusive { '[' } else { '(' };
                Err(TaskError::invalid(format!(
                    "`{name}` must be a number in {open}{min}, {max}], not {}",
                    short(value)
                )))
            }
        }
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, TaskError> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(TaskError::invalid(format!(
                "`{name}` must be true or false, not {}",
                short(other)
            ))),
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value quoted in an error message, cut short so a hostile 1 MB value does not echo back.
fn short(value: &Value) -> String {
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
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its text, or a stop sequence appeared.
    Stop,
    /// `max_tokens` was reached (or the context was full).
    Length,
}

/// Token counts of a completed task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the rendered prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// From the task's AMQP `timestamp` (else from its receipt by the worker) to the start of
    /// inference.
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
    use serde_json::json;

    fn limits() -> Limits {
        Limits {
            default_max_tokens: 128,
            max_tokens_cap: 1024,
            default_timeout_ms: 60_000,
            timeout_cap_ms: 600_000,
            max_body_bytes: 4096,
            max_age_ms: 0,
            max_stop_sequences: 4,
            max_stop_bytes: 16,
            default_top_k: 40,
        }
    }

    fn parse(value: Value) -> Result<Task, TaskError> {
        parse_task(value.to_string().as_bytes(), &limits())
    }

    fn rejection(value: Value) -> String {
        let err = parse(value).expect_err("should be rejected");
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        err.message
    }

    #[test]
    fn a_minimal_prompt_task_gets_the_defaults() {
        let task = parse(json!({"prompt": "The capital of France is"})).unwrap();
        assert_eq!(task.input, Input::Prompt("The capital of France is".into()));
        assert_eq!(task.max_tokens, 128);
        assert_eq!(task.sampling.temperature, 0.0);
        assert_eq!(task.sampling.top_k, Some(40));
        assert_eq!(task.timeout, Duration::from_millis(60_000));
        assert!(task.stop.is_empty());
    }

    #[test]
    fn every_optional_field_is_read() {
        let task = parse(json!({
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "max_tokens": 7, "temperature": 0.8, "top_p": 0.9, "top_k": 0, "min_p": 0.05,
            "repeat_penalty": 1.1, "seed": 42, "stop": ["\n"], "timeout_ms": 1000,
            "deadline_ms": 1_900_000_000_000u64, "stream": false, "version": 1,
            "some_future_field": {"ignored": true}
        }))
        .unwrap();
        let Input::Messages(messages) = &task.input else {
            panic!("expected messages")
        };
        assert_eq!(messages[0].role, Role::System);
        assert_eq!(messages[1].content, "Hi");
        assert_eq!(task.max_tokens, 7);
        assert_eq!(task.sampling.top_k, None, "top_k 0 turns it off");
        assert_eq!(task.sampling.seed, Some(42));
        assert_eq!(task.sampling.min_p, Some(0.05));
        assert_eq!(task.stop, vec!["\n".to_string()]);
        assert_eq!(task.deadline_ms, Some(1_900_000_000_000));
        assert!(!task.stream);
        assert!(
            parse(json!({"prompt": "a", "stream": true}))
                .unwrap()
                .stream
        );
    }

    #[test]
    fn bad_tasks_are_rejected_with_a_message_naming_the_problem() {
        let cases: Vec<(&[u8], &str)> = vec![
            (b"not json", "not valid JSON"),
            (b"[1,2]", "must be a JSON object, not a list"),
            (b"\"prompt\"", "must be a JSON object, not a string"),
            (b"{\"prompt\": NaN}", "not valid JSON"),
            (b"{\"prompt\": \"a\"", "not valid JSON"),
            (b"\xff\xfe{}", "not valid JSON"),
        ];
        for (body, expected) in cases {
            let err = parse_task(body, &limits()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRequest);
            assert!(err.message.contains(expected), "{body:?}: {}", err.message);
        }
    }

    #[test]
    fn field_rules() {
        let cases = vec![
            (json!({}), "exactly one of"),
            (json!({"prompt": "a", "messages": []}), "not both"),
            (json!({"prompt": 5}), "`prompt` must be a string"),
            (json!({"prompt": ""}), "must not be empty"),
            (json!({"prompt": "a\u{0}b"}), "NUL"),
            (json!({"messages": "hi"}), "`messages` must be a list"),
            (json!({"messages": []}), "must not be empty"),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user"}]}),
                "messages[0].content` is missing",
            ),
            (
                json!({"messages": [{"role": "user", "content": 3}]}),
                "must be a string",
            ),
            (
                json!({"prompt": "a", "max_tokens": 0}),
                "`max_tokens` must be an integer from 1 to 1024",
            ),
            (json!({"prompt": "a", "max_tokens": 1025}), "`max_tokens`"),
            (json!({"prompt": "a", "max_tokens": 2.5}), "`max_tokens`"),
            (json!({"prompt": "a", "max_tokens": "10"}), "`max_tokens`"),
            (json!({"prompt": "a", "temperature": -0.1}), "`temperature`"),
            (
                json!({"prompt": "a", "top_p": 0}),
                "`top_p` must be a number in (0, 1]",
            ),
            (json!({"prompt": "a", "top_p": 1.5}), "`top_p`"),
            (json!({"prompt": "a", "top_k": -1}), "`top_k`"),
            (json!({"prompt": "a", "min_p": 2}), "`min_p`"),
            (
                json!({"prompt": "a", "repeat_penalty": 0}),
                "`repeat_penalty`",
            ),
            (
                json!({"prompt": "a", "seed": 4_294_967_295u64}),
                "`seed` must be an integer from 0 to 4294967294",
            ),
            (json!({"prompt": "a", "stop": "x"}), "`stop` must be a list"),
            (
                json!({"prompt": "a", "stop": [1]}),
                "`stop[0]` must be a string",
            ),
            (
                json!({"prompt": "a", "stop": [""]}),
                "`stop[0]` must not be empty",
            ),
            (
                json!({"prompt": "a", "stop": ["this one is far too long"]}),
                "more than the limit",
            ),
            (
                json!({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}),
                "5 entries",
            ),
            (json!({"prompt": "a", "timeout_ms": 0}), "`timeout_ms`"),
            (
                json!({"prompt": "a", "timeout_ms": 600_001}),
                "`timeout_ms`",
            ),
            (
                json!({"prompt": "a", "stream": "yes"}),
                "`stream` must be true or false",
            ),
            (
                json!({"prompt": "a", "version": 2}),
                "version 2 is not supported",
            ),
        ];
        for (value, expected) in cases {
            let message = rejection(value.clone());
            assert!(message.contains(expected), "{value}: {message}");
        }
    }

    #[test]
    fn null_optional_fields_count_as_absent() {
        let task = parse(json!({"prompt": "a", "max_tokens": null, "stop": null})).unwrap();
        assert_eq!(task.max_tokens, 128);
    }

    #[test]
    fn an_oversized_body_is_rejected_before_parsing() {
        let body = format!("{{\"prompt\": \"{}\"}}", "x".repeat(5000));
        let err = parse_task(body.as_bytes(), &limits()).unwrap_err();
        assert!(err.message.contains("more than the limit of 4096 bytes"));
    }

    #[test]
    fn a_huge_value_is_not_echoed_back_in_full() {
        let message = rejection(json!({"prompt": "a", "max_tokens": "9".repeat(1000)}));
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn content_type_must_be_json_when_given() {
        assert!(check_content_properties(None, None).is_ok());
        assert!(check_content_properties(Some("application/json; charset=utf-8"), None).is_ok());
        assert!(
            check_content_properties(Some("application/vnd.warren+json"), Some("utf-8")).is_ok()
        );
        let err = check_content_properties(Some("text/plain"), None).unwrap_err();
        assert!(err.message.contains("text/plain"));
        let err = check_content_properties(Some("application/json"), Some("gzip")).unwrap_err();
        assert!(err.message.contains("gzip"));
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(ErrorCode::Timeout.retryable());
        assert!(ErrorCode::InferenceFailed.retryable());
        assert!(ErrorCode::Internal.retryable());
        assert!(!ErrorCode::InvalidRequest.retryable());
        assert!(!ErrorCode::PromptTooLong.retryable());
        assert!(!ErrorCode::Expired.retryable());
    }

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
