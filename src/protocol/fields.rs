//! Reading one field of a task body: typed, range-checked access to optional fields, and the
//! fields with a shape of their own (`prompt`, `messages`, `stop`, `logit_bias`). Each error
//! names the field and quotes the offending value, cut short. [`super::parse`] assembles a
//! task from these.

use serde_json::{Map, Value};

use super::task::{ChatMessage, Role};
use super::TaskError;
use crate::config::LimitSettings;

/// Most tokens a task's `logit_bias` may name.
pub const MAX_LOGIT_BIAS: usize = 1024;

/// `logit_bias`: an object from token ids (decimal strings, as OpenAI's JSON has them) to a
/// bias in -100 ..= 100; sorted by id. Whether an id is in the vocabulary is the engine's
/// to say.
pub(super) fn parse_logit_bias(value: Option<&Value>) -> Result<Vec<(u32, f32)>, TaskError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Value::Object(entries) = value else {
        return Err(TaskError::invalid(format!(
            "`logit_bias` must be an object from token ids to biases, not {}",
            json_kind(value)
        )));
    };
    if entries.len() > MAX_LOGIT_BIAS {
        return Err(TaskError::invalid(format!(
            "`logit_bias` names {} tokens, more than the limit of {MAX_LOGIT_BIAS}",
            entries.len()
        )));
    }
    let mut biases = Vec::with_capacity(entries.len());
    for (key, bias) in entries {
        let id = key
            .parse::<u32>()
            .ok()
            .filter(|id| *id <= i32::MAX as u32)
            .ok_or_else(|| {
                TaskError::invalid(format!(
                    "`logit_bias` keys must be token ids (decimal integers), not {:?}",
                    key.chars().take(40).collect::<String>()
                ))
            })?;
        let bias = bias
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| {
                TaskError::invalid(format!(
                    "`logit_bias[{id}]` must be a number from -100 to 100, not {}",
                    short(bias)
                ))
            })?;
        biases.push((id, bias as f32));
    }
    biases.sort_by_key(|(id, _)| *id);
    if let Some(pair) = biases.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(TaskError::invalid(format!(
            "`logit_bias` names token {} twice",
            pair[0].0
        )));
    }
    Ok(biases)
}

pub(super) fn parse_prompt(value: &Value) -> Result<String, TaskError> {
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

pub(super) fn parse_messages(value: &Value) -> Result<Vec<ChatMessage>, TaskError> {
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

pub(super) fn parse_stop(
    value: Option<&Value>,
    limits: &LimitSettings,
) -> Result<Vec<String>, TaskError> {
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
pub(super) struct Fields<'a>(pub(super) &'a Map<String, Value>);

impl Fields<'_> {
    pub(super) fn present(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub(super) fn integer(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, TaskError> {
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
    pub(super) fn number(
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

    pub(super) fn boolean(&self, name: &str) -> Result<Option<bool>, TaskError> {
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

/// A value quoted in an error message, cut short so a hostile 1 MB value does not echo back.
pub(super) fn short(value: &Value) -> String {
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
