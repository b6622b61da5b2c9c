//! How each request of a batch ended, and its line in the output file (answered ok) or the
//! error file (an error reply, a refusal, or never run). Pure values, unit-tested with the
//! other shapes in `object_tests.rs`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::input::LineKind;
use super::object::{Endpoint, LINE_PREFIX};
use crate::gateway::completions::reply;
use crate::gateway::embeddings::{self, Encoding};
use crate::gateway::errors::ApiError;
use crate::gateway::responses;
use crate::gateway::service_tier;
use crate::protocol::{Reply, ReplyStatus, Tier};

/// How one request of a batch ended, as kept until the batch is finalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A worker's reply (ok or error), received at `at` (Unix seconds).
    Answered {
        /// The reply.
        reply: Box<Reply>,
        /// When.
        at: u64,
    },
    /// Refused without running, as the HTTP answer `status_code` with OpenAI's envelope.
    Refused {
        /// HTTP status.
        status_code: u16,
        /// `{"error": {...}}`.
        body: Value,
    },
}

impl Outcome {
    /// A request refused with `error`.
    pub fn refused(error: &ApiError) -> Outcome {
        Outcome::Refused {
            status_code: error.status.as_u16(),
            body: error.body(),
        }
    }

    /// Whether it counts as completed (else failed).
    pub fn is_completed(&self) -> bool {
        matches!(self, Outcome::Answered { reply, .. } if reply.status == ReplyStatus::Ok)
    }
}

/// One request's line in the output file (`true`) or the error file (`false`); `ids` are
/// the line's id and its `custom_id`, `kind` what the line asked for (an embedding
/// request's encoding, floats when not said; a response's object as created).
pub fn result_line(
    endpoint: Endpoint,
    model: &str,
    kind: Option<&LineKind>,
    (id, custom_id): (&str, &str),
    outcome: &Outcome,
) -> (Value, bool) {
    match outcome {
        Outcome::Answered { reply, at } if reply.status == ReplyStatus::Ok => {
            let body = match endpoint {
                Endpoint::Completions(kind) => Ok(reply::response(kind, id, *at, model, reply)),
                Endpoint::Embeddings => {
                    let encoding = match kind {
                        Some(LineKind::Embedding(encoding)) => *encoding,
                        _ => Encoding::Float,
                    };
                    embeddings::response(model, encoding, reply)
                }
                Endpoint::Responses => match kind {
                    Some(LineKind::Response(created)) => {
                        Ok(response_object(created, id, *at, model, reply))
                    }
                    _ => Err(ApiError::internal(
                        "the request's response object is missing",
                    )),
                },
            };
            match body {
                Ok(body) => (response_line(id, custom_id, 200, body), true),
                Err(error) => {
                    let line = response_line(id, custom_id, error.status.as_u16(), error.body());
                    (line, false)
                }
            }
        }
        Outcome::Answered { reply, .. } => {
            let error = ApiError::of_failed_reply(reply);
            let line = response_line(id, custom_id, error.status.as_u16(), error.body());
            (line, false)
        }
        Outcome::Refused { status_code, body } => (
            response_line(id, custom_id, *status_code, body.clone()),
            false,
        ),
    }
}

/// The response object of a `/v1/responses` line answered by `reply` at `at`: its id is
/// the line's (`batch_req_<hex>_<n>` → `resp_<hex>_<n>`), its time the answer's.
fn response_object(created: &Value, id: &str, at: u64, model: &str, reply: &Reply) -> Value {
    let mut object = created.clone();
    let suffix = id.strip_prefix(LINE_PREFIX).unwrap_or(id);
    object["id"] = json!(format!("resp_{suffix}"));
    object["created_at"] = json!(at);
    object["model"] = json!(model);
    // Every request of a batch runs on the batch tier, whatever its line asked for.
    object["service_tier"] = json!(service_tier::name_of(Tier::Batch));
    responses::object::finished(&object, reply)
}

fn response_line(id: &str, custom_id: &str, status_code: u16, body: Value) -> Value {
    json!({
        "id": id,
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": id, "body": body},
        "error": null,
    })
}

/// The error-file line of a request the batch ended before running (`batch_cancelled`,
/// `batch_expired`).
pub fn unrun_line(id: &str, custom_id: &str, code: &str) -> Value {
    let message = match code {
        "batch_expired" => "the request was not run before the batch's completion window ended",
        _ => "the request was not run: its batch was cancelled",
    };
    json!({
        "id": id,
        "custom_id": custom_id,
        "response": null,
        "error": {"code": code, "message": message},
    })
}
