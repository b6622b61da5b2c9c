//! Parsing and validating a task body: bytes in, a [`Task`] or an `invalid_request` naming
//! the field out. Bounds come from `[limits]` and `[sampling]` as configured.

use std::time::Duration;

use serde_json::{Map, Value};

use super::constraint::parse_constraint;
use super::task::{ChatMessage, Input, Role, Sampling, Task};
use super::{TaskError, MAX_TOP_LOGPROBS, WIRE_VERSION};
use crate::config::{LimitSettings, SamplingSettings};

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
pub fn parse_task(
    body: &[u8],
    limits: &LimitSettings,
    sampling: &SamplingSettings,
) -> Result<Task, TaskError> {
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
        .or(Some(sampling.default_top_k))
        .filter(|k| *k > 0);
    let min_p = fields.number("min_p", 0.0, 1.0, true)?.map(|v| v as f32);
    let repeat_penalty = fields
        .number("repeat_penalty", 0.0, 100.0, false)?
        .map(|v| v as f32);
    let frequency_penalty = fields
        .number("frequency_penalty", -2.0, 2.0, true)?
        .map(|v| v as f32);
    let presence_penalty = fields
        .number("presence_penalty", -2.0, 2.0, true)?
        .map(|v| v as f32);
    // u32::MAX is llama.cpp's "pick a random seed", so it is not a valid fixed seed.
    let seed = fields
        .integer("seed", 0, u64::from(u32::MAX - 1))?
        .map(|v| v as u32);
    let logit_bias = parse_logit_bias(fields.present("logit_bias"))?;
    let stop = parse_stop(map.get("stop"), limits)?;
    let constraint = parse_constraint(&map)?;
    let timeout_ms = fields
        .integer("timeout_ms", 1, limits.timeout_cap_ms)?
        .unwrap_or(limits.default_timeout_ms);
    let deadline_ms = fields.integer("deadline_ms", 0, i64::MAX as u64)?;
    let stream = fields.boolean("stream")?.unwrap_or(false);
    let progress = fields.boolean("progress")?.unwrap_or(false);
    let logprobs = fields
        .integer("logprobs", 0, MAX_TOP_LOGPROBS)?
        .map(|v| v as u32);

    Ok(Task {
        input,
        max_tokens,
        sampling: Sampling {
            temperature,
            top_p,
            top_k,
            min_p,
            repeat_penalty,
            frequency_penalty,
            presence_penalty,
            seed,
            logit_bias,
        },
        stop,
        constraint,
        timeout: Duration::from_millis(timeout_ms),
        deadline_ms,
        stream,
        progress,
        logprobs,
    })
}

/// Most tokens a task's `logit_bias` may name.
pub const MAX_LOGIT_BIAS: usize = 1024;

/// `logit_bias`: an object from token ids (decimal strings, as OpenAI's JSON has them) to a
/// bias in -100 ..= 100; sorted by id. Whether an id is in the vocabulary is the engine's
/// to say.
fn parse_logit_bias(value: Option<&Value>) -> Result<Vec<(u32, f32)>, TaskError> {
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

fn parse_stop(value: Option<&Value>, limits: &LimitSettings) -> Result<Vec<String>, TaskError> {
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

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
