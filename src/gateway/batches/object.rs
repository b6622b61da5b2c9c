//! OpenAI's Batch API shapes, as pure values: the create request, the ids of a batch's
//! requests, the batch and file objects (the input file's lines are [`super::input`]'s, the
//! lines of the output and error files [`super::outcome`]'s). No I/O: every rule is
//! unit-tested.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::gateway::batches::expiry::ExpiresAfter;
use crate::gateway::completions::Kind;
use crate::gateway::errors::ApiError;

/// The only completion window there is, as at OpenAI.
pub const COMPLETION_WINDOW: &str = "24h";
/// Its length in seconds.
pub const WINDOW_S: u64 = 24 * 3600;
/// Prefix of a batch's id.
pub const BATCH_PREFIX: &str = "batch_";
/// Prefix of a file's id.
pub const FILE_PREFIX: &str = "file-";
/// Prefix of one request's id (also its task's `message_id`).
pub const LINE_PREFIX: &str = "batch_req_";

/// The endpoint a batch's requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions` or `/v1/completions`: generation tasks.
    Completions(Kind),
    /// `/v1/embeddings`: embedding tasks, on the embeddings queue.
    Embeddings,
    /// `/v1/responses`: generation tasks answered as response objects.
    Responses,
}

/// The endpoint a batch names, if batches serve it.
pub fn endpoint_kind(endpoint: &str) -> Option<Endpoint> {
    match endpoint {
        "/v1/chat/completions" => Some(Endpoint::Completions(Kind::Chat)),
        "/v1/completions" => Some(Endpoint::Completions(Kind::Completion)),
        "/v1/embeddings" => Some(Endpoint::Embeddings),
        "/v1/responses" => Some(Endpoint::Responses),
        _ => None,
    }
}

/// The id of request `index` of batch `batch_id` (`batch_<hex>` → `batch_req_<hex>_<index>`).
pub fn line_id(batch_id: &str, index: usize) -> String {
    let hex = batch_id.strip_prefix(BATCH_PREFIX).unwrap_or(batch_id);
    format!("{LINE_PREFIX}{hex}_{index}")
}

/// The batch and index a request id names, if it is one.
pub fn parse_line_id(id: &str) -> Option<(String, usize)> {
    let rest = id.strip_prefix(LINE_PREFIX)?;
    let (hex, index) = rest.rsplit_once('_')?;
    Some((format!("{BATCH_PREFIX}{hex}"), index.parse().ok()?))
}

/// `POST /v1/batches`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    /// The uploaded JSONL file.
    pub input_file_id: String,
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` or `/v1/responses`.
    pub endpoint: String,
    /// `24h`.
    pub completion_window: String,
    /// Up to 16 string pairs, echoed.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// How long its output and error files are kept (from their creation).
    #[serde(default)]
    pub output_expires_after: Option<ExpiresAfter>,
}

/// Parses and checks a create request.
pub fn parse_create(body: &[u8]) -> Result<(CreateBatch, Endpoint), ApiError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let create: CreateBatch =
        serde_path_to_error::deserialize(&mut json).map_err(|e| ApiError::bad_shape(&e))?;
    let kind = endpoint_kind(&create.endpoint).ok_or_else(|| {
        ApiError::invalid(
            format!(
                "`endpoint` {:?} is not served in batches: use /v1/chat/completions, /v1/completions, /v1/embeddings or /v1/responses",
                create.endpoint
            ),
            Some("endpoint".into()),
        )
    })?;
    if create.completion_window != COMPLETION_WINDOW {
        return Err(ApiError::invalid(
            "`completion_window` must be \"24h\"",
            Some("completion_window".into()),
        ));
    }
    if let Some(policy) = &create.output_expires_after {
        policy.keep_s("output_expires_after")?;
    }
    if let Some(metadata) = &create.metadata {
        if metadata.len() > 16 || metadata.values().any(|v| !v.is_string()) {
            return Err(ApiError::invalid(
                "`metadata` takes at most 16 string values",
                Some("metadata".into()),
            ));
        }
    }
    Ok((create, kind))
}

/// The states of a batch that warren uses (OpenAI's, less `validating`: a file is checked
/// before the batch is created); the last four are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchStatus {
    /// Its requests are being published and answered.
    #[default]
    InProgress,
    /// Every request has its outcome; the files are being written.
    Finalizing,
    /// Cancel asked: nothing more is published; what is in flight is cancelled.
    Cancelling,
    /// Ended with its files.
    Completed,
    /// Its input file was refused (or vanished).
    Failed,
    /// Ended by the completion window, with what it had.
    Expired,
    /// Ended by a cancel, with what it had.
    Cancelled,
}

impl BatchStatus {
    const ALL: [BatchStatus; 7] = [
        BatchStatus::InProgress,
        BatchStatus::Finalizing,
        BatchStatus::Cancelling,
        BatchStatus::Completed,
        BatchStatus::Failed,
        BatchStatus::Expired,
        BatchStatus::Cancelled,
    ];

    /// The status as OpenAI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Finalizing => "finalizing",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Completed => "completed",
            BatchStatus::Failed => "failed",
            BatchStatus::Expired => "expired",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a stored status.
    pub fn parse(text: &str) -> Option<BatchStatus> {
        BatchStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the batch has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            BatchStatus::Completed
                | BatchStatus::Failed
                | BatchStatus::Expired
                | BatchStatus::Cancelled
        )
    }
}

/// A new batch's object in `status`, created at `now`.
pub fn batch(id: &str, create: &CreateBatch, status: BatchStatus, now: u64) -> Value {
    let mut object = json!({
        "id": id,
        "object": "batch",
        "endpoint": create.endpoint,
        "errors": null,
        "input_file_id": create.input_file_id,
        "completion_window": create.completion_window,
        "status": status.as_str(),
        "output_file_id": null,
        "error_file_id": null,
        "created_at": now,
        "in_progress_at": null,
        "expires_at": now + WINDOW_S,
        "finalizing_at": null,
        "completed_at": null,
        "failed_at": null,
        "expired_at": null,
        "cancelling_at": null,
        "cancelled_at": null,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": create.metadata.clone().unwrap_or_default(),
    });
    stamp(&mut object, status, now);
    object
}

/// `object` moved to `status` at `now` (its `<status>_at` set).
pub fn with_status(object: &Value, status: BatchStatus, now: u64) -> Value {
    let mut next = object.clone();
    next["status"] = json!(status.as_str());
    stamp(&mut next, status, now);
    next
}

fn stamp(object: &mut Value, status: BatchStatus, now: u64) {
    let field = format!("{}_at", status.as_str());
    if object.get(&field).is_some_and(Value::is_null) {
        object[field] = json!(now);
    }
}

/// A file object, created and expiring at the `lifetime`'s two Unix times.
pub fn file(id: &str, bytes: usize, lifetime: (u64, u64), filename: &str, purpose: &str) -> Value {
    let (created_at, expires_at) = lifetime;
    json!({
        "id": id,
        "object": "file",
        "bytes": bytes,
        "created_at": created_at,
        "expires_at": expires_at,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "status_details": null,
    })
}

#[cfg(test)]
#[path = "object_tests.rs"]
mod tests;
