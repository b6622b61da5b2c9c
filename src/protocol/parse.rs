//! Parsing and validating a task body: bytes in, a [`Task`] or an `invalid_request` naming
//! the field out. Bounds come from `[limits]` and `[sampling]` as configured.

use std::time::Duration;

use serde_json::Value;

use super::constraint::parse_constraint;
use super::fields::{
    json_kind, parse_logit_bias, parse_messages, parse_prompt, parse_stop, Fields,
};
use super::task::{Input, Sampling, Task};
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

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
