//! `POST /v1/chat/completions` and `POST /v1/completions`: check the caller and the request,
//! publish it as one contract-v1 task (confirmed; `message_id` = the response id;
//! `deadline_ms` = when the caller stops waiting), then answer with the reply or stream it as
//! server-sent events. Every path ends in a response: the reply, an error reply, a full queue
//! (429), a lost broker (503) or the request timeout (504, and the task is cancelled).
//!
//! [`request`] turns OpenAI's request shapes into a task ([`messages`] their chat messages)
//! and [`reply`] a worker's reply into OpenAI's objects (all pure); [`stream`] relays a
//! task's chunks as server-sent events; [`logprobs`] translates log probabilities both ways
//! (the Responses API uses it and [`messages`] too).

pub mod logprobs;
pub mod messages;
pub mod reply;
pub mod request;
pub mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::client::{Answer, Pending};
use crate::clock;
use crate::gateway::admission::Charge;
use crate::gateway::broker_link::CancelOnDrop;
use crate::gateway::errors::ApiError;
use crate::gateway::{admission, Shared};
use crate::protocol::{ReplyStatus, HEADER_WORKER_MICROS};
use request::Request;

/// Which OpenAI endpoint a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completion,
}

impl Kind {
    /// Prefix of the response `id`.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Kind::Chat => "chatcmpl-",
            Kind::Completion => "cmpl-",
        }
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat(
    State(app): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(app, Kind::Chat, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/completions`.
pub async fn completion(
    State(app): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(app, Kind::Completion, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// A published task, waiting for its answer.
pub struct Accepted {
    /// The checked request.
    pub request: Request,
    /// The response id (also the task's `message_id`).
    pub id: String,
    /// Unix seconds, the response's `created`.
    pub created: u64,
    /// Its chunks and reply.
    pub pending: Pending,
    /// Cancels the task unless disarmed.
    pub guard: CancelOnDrop,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// The tokens charged to the caller's limit, corrected once the reply says what it used.
    pub charge: Charge,
}

async fn serve(
    app: Arc<Shared>,
    kind: Kind,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = app.caller(&headers, body)?;
    let mut request = request::parse_request(kind, &caller.body)?;
    request.task.deadline_ms = Some(app.deadline_ms());
    let checked = app.check_task(&request.task, &request.model, request.prompt_chars)?;
    let mut charge = app.admit_task(&caller, &checked).await?;
    let rate_headers = charge.headers().to_vec();
    request.model.clone_from(&checked.model);

    let id = format!("{}{}", kind.id_prefix(), uuid::Uuid::new_v4().simple());
    let (task, routing_key) = (checked.bytes.as_slice(), checked.routing_key.as_deref());
    let (models, model, task_id) = (&app.models, request.model.as_str(), id.as_str());
    let tier = request.tier;
    let published = app
        .broker_link
        .publish_guarded(&id, app.metrics.clone(), |client| async move {
            client
                .submit_routed(task_id, task, routing_key, tier)
                .await
                .map_err(|e| models.publish_error(model, e))
        })
        .await;
    let (pending, guard) = charge.refund_unless(published).await?;
    let accepted = Accepted {
        charge,
        guard,
        request,
        id,
        created: clock::unix_seconds(),
        pending,
        deadline: Instant::now() + app.request_timeout,
    };
    let mut response = if accepted.request.stream {
        stream::respond(app, accepted)
    } else {
        answer(app.request_timeout, accepted).await?
    };
    admission::add_rate_headers(&mut response, &rate_headers);
    Ok(response)
}

async fn answer(waited: Duration, accepted: Accepted) -> Result<Response, ApiError> {
    let Accepted {
        request,
        id,
        created,
        pending,
        mut guard,
        deadline,
        mut charge,
    } = accepted;
    let Answer {
        reply, worker_time, ..
    } = tokio::time::timeout_at(deadline.into(), pending.reply())
        .await
        .map_err(|_| ApiError::timed_out(waited))??;
    guard.disarm();
    if let Some(usage) = reply.usage {
        charge
            .settle(usage.prompt_tokens.saturating_add(usage.completion_tokens))
            .await;
    }
    match reply.status {
        ReplyStatus::Error => Err(ApiError::of_failed_reply(&reply)),
        _ => {
            let mut response = Json(reply::response(
                request.kind,
                &id,
                created,
                &request.model,
                &reply,
            ))
            .into_response();
            // The worker's own time, so a client can tell the path's cost from the model's.
            if let Some(micros) = worker_time.map(|t| t.as_micros().to_string()) {
                if let Ok(value) = HeaderValue::from_str(&micros) {
                    response.headers_mut().insert(HEADER_WORKER_MICROS, value);
                }
            }
            Ok(response)
        }
    }
}
