//! A task body as it travels: the fields of wire contract v1, each left out when `None` so
//! that the worker applies its own default. Callers build one and send [`TaskBody::to_bytes`];
//! the worker reads one with [`TaskBody::from_json`], whose errors name the field, then
//! validates it ([`TaskBody::validate`], in `validate.rs`). Unknown fields are ignored and
//! `null` counts as absent, so older workers accept newer callers' optional fields.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::short;
use super::task::ChatMessage;
use super::tools::Tool;
use super::{TaskError, WIRE_VERSION};

/// A v1 task body. Every field is optional on the wire; [`TaskBody::validate`] says which
/// combinations and values make a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskBody {
    /// The contract version the caller speaks (only 1 exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Text to continue (exclusive with `messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Conversation to answer (exclusive with `prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// Most tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// 0 = greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    /// Drop tokens less likely than this share of the most likely one's probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    /// Penalty on tokens already in the recent text (1 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f64>,
    /// OpenAI's frequency penalty, -2 ..= 2 (0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// OpenAI's presence penalty, -2 ..= 2 (0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Seed of the sampler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Token id (a decimal string) to a bias added to its logit, -100 ..= 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Map<String, Value>>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// A JSON Schema the output must match (exclusive with `grammar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<Value>,
    /// A GBNF grammar the output must match (exclusive with `json_schema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
    /// Bound on the inference, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Absolute Unix ms after which the task must not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Ask for chunk messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Ask for a `started` message when a worker takes the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<bool>,
    /// Decode this task alone, so that its text does not depend on the tasks beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_invariant: Option<bool>,
    /// Ask for each token's log probability, with this many alternatives (0 ..= 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u64>,
    /// Functions the model may call, in OpenAI's shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `"none"`, `"auto"`, `"required"` or `{"type": "function", "function": {"name"}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Whether a reply may hold several calls (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
}

impl TaskBody {
    /// A task continuing `prompt`.
    pub fn prompt(prompt: impl Into<String>) -> TaskBody {
        TaskBody {
            prompt: Some(prompt.into()),
            ..TaskBody::default()
        }
    }

    /// The body as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings, numbers, lists and JSON values only: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a body of at most `max_body_bytes`. Every refusal is `invalid_request`: the
    /// size, JSON that does not parse, or a field of the wrong type, named with its path
    /// (`messages[2].role`) and its value, cut short.
    pub fn from_json(body: &[u8], max_body_bytes: usize) -> Result<TaskBody, TaskError> {
        let value = read_object(body, max_body_bytes)?;
        serde_path_to_error::deserialize(&value).map_err(|e| wrong_type(&value, &e))
    }
}

/// A body's JSON object, refused as `invalid_request` when too large, not JSON, not an object
/// or written for another version of the contract (whose fields may have other types: its
/// version is what to refuse).
pub(super) fn read_object(body: &[u8], max_body_bytes: usize) -> Result<Value, TaskError> {
    if body.len() > max_body_bytes {
        return Err(TaskError::invalid(format!(
            "body is {} bytes, more than the limit of {max_body_bytes} bytes",
            body.len(),
        )));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| TaskError::invalid(format!("body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(TaskError::invalid(format!(
            "body must be a JSON object, not {}",
            json_kind(&value)
        )));
    }
    if let Some(version) = value.get("version").and_then(Value::as_u64) {
        if version != u64::from(WIRE_VERSION) {
            return Err(unsupported_version(version));
        }
    }
    Ok(value)
}

/// The refusal of a body written for another version of the contract.
pub(super) fn unsupported_version(version: u64) -> TaskError {
    TaskError::invalid(format!(
        "version {version} is not supported: this worker speaks version {WIRE_VERSION}"
    ))
}

/// The refusal of a field whose value serde could not take: the field's path, what it must
/// be, and what it is.
pub(super) fn wrong_type(
    body: &Value,
    error: &serde_path_to_error::Error<serde_json::Error>,
) -> TaskError {
    let path = error.path().to_string();
    let found = value_at(body, error.path());
    let why = error.inner().to_string();
    if let Some(field) = why
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return TaskError::invalid(format!("`{path}.{field}` is missing"));
    }
    let expected = why
        .split_once(", expected ")
        .map_or(why.as_str(), |(_, expected)| expected);
    let expected = match expected {
        "u64" => "a non-negative integer",
        "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "a list",
        "a map" => "an object",
        other if other.starts_with("struct ") => "an object",
        other => other,
    };
    let expected = expected.replace('`', "\"");
    match found {
        Some(found) => {
            TaskError::invalid(format!("`{path}` must be {expected}, not {}", short(found)))
        }
        None => TaskError::invalid(format!("`{path}` must be {expected}")),
    }
}

/// The value at `path` in `body`, if the path leads to one.
fn value_at<'v>(body: &'v Value, path: &serde_path_to_error::Path) -> Option<&'v Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(body, |value, segment| match segment {
        Segment::Seq { index } => value.get(*index),
        Segment::Map { key } => value.get(key.as_str()),
        Segment::Enum { .. } | Segment::Unknown => Some(value),
    })
}

/// What kind of JSON value this is, in words.
pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Role;
    use serde_json::json;

    fn read(value: Value) -> Result<TaskBody, String> {
        TaskBody::from_json(value.to_string().as_bytes(), 1 << 20).map_err(|e| e.message)
    }

    #[test]
    fn a_body_round_trips_and_leaves_out_what_is_unset() {
        let body = TaskBody {
            max_tokens: Some(8),
            stop: Some(vec!["\n".into()]),
            ..TaskBody::prompt("Hello")
        };
        let value: Value = serde_json::from_slice(&body.to_bytes()).unwrap();
        assert_eq!(
            value,
            json!({"prompt": "Hello", "max_tokens": 8, "stop": ["\n"]})
        );
        assert_eq!(TaskBody::from_json(&body.to_bytes(), 1024).unwrap(), body);
    }

    #[test]
    fn messages_travel_as_role_and_content() {
        let body = TaskBody {
            messages: Some(vec![ChatMessage::new(Role::User, "Hi")]),
            ..TaskBody::default()
        };
        let value: Value = serde_json::from_slice(&body.to_bytes()).unwrap();
        assert_eq!(
            value,
            json!({"messages": [{"role": "user", "content": "Hi"}]})
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_null_is_absent() {
        let body = read(json!({"prompt": "a", "future": {"x": 1}, "max_tokens": null})).unwrap();
        assert_eq!(body, TaskBody::prompt("a"));
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_with_its_path_and_value() {
        let cases = [
            (json!({"prompt": 5}), "`prompt` must be a string, not 5"),
            (json!({"max_tokens": "10"}), "`max_tokens` must be a non-negative integer, not \"10\""),
            (json!({"top_k": -1}), "`top_k` must be a non-negative integer, not -1"),
            (json!({"temperature": "hot"}), "`temperature` must be a number, not \"hot\""),
            (json!({"stream": "yes"}), "`stream` must be true or false, not \"yes\""),
            (
                json!({"batch_invariant": 1}),
                "`batch_invariant` must be true or false, not 1",
            ),
            (json!({"stop": "x"}), "`stop` must be a list, not \"x\""),
            (json!({"stop": [1]}), "`stop[0]` must be a string, not 1"),
            (json!({"messages": "hi"}), "`messages` must be a list, not \"hi\""),
            (json!({"messages": [3]}), "`messages[0]` must be an object, not 3"),
            (json!({"messages": [{"role": "user"}]}), "`messages[0].content` is missing"),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "`messages[0].role` must be one of \"system\", \"user\", \"assistant\", \"tool\", not \"robot\"",
            ),
            (json!({"logit_bias": [1]}), "`logit_bias` must be an object, not [1]"),
            (
                json!({"messages": [{"role": 5, "content": "x"}]}),
                "`messages[0].role` must be one of \"system\", \"user\", \"assistant\", \"tool\", not 5",
            ),
            (
                json!({"messages": [{"role": {"user": null}, "content": "x"}]}),
                "`messages[0].role` must be one of \"system\", \"user\", \"assistant\", \"tool\", not {\"user\":null}",
            ),
            (json!({"version": 2, "stop": 3}), "version 2 is not supported: this worker speaks version 1"),
        ];
        for (value, expected) in cases {
            assert_eq!(read(value.clone()).unwrap_err(), expected, "{value}");
        }
    }
}
