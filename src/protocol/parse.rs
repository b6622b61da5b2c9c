//! What a worker does with a delivery's body and properties before anything else: checks its
//! AMQP content properties, then reads and validates the body into a [`Task`] or an
//! `invalid_request` naming the field.

use super::{Limits, Task, TaskBody, TaskError};

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

/// Reads and validates a task body: [`TaskBody::from_json`], then [`TaskBody::validate`].
/// Every refusal is `invalid_request` with a message naming the field; unknown fields are
/// ignored.
pub fn parse_task(body: &[u8], limits: &Limits) -> Result<Task, TaskError> {
    TaskBody::from_json(body, limits.max_body_bytes)?.validate(limits)
}

#[cfg(test)]
#[path = "parse_tests.rs"]
pub(super) mod tests;
