//! OpenAI's Responses API: `POST /v1/responses` (answered at once with `background: true`,
//! else when done); a response by its id ([`by_id`]): retrieve, cancel, delete; the
//! conversation it answered ([`input_items`]).
//!
//! A background response is accepted only once it is both recorded in Redis ([`store`]) and
//! confirmed by the broker; its task names the shared results queue as `reply_to`, which
//! every replica consumes ([`crate::gateway::results`]), so any replica answers for any
//! response and a result that arrives while the gateways are down waits. [`request`] checks
//! a body into a task, [`object`] builds the response objects, [`webhooks`] tells callers
//! when a response ends. Redis down: these endpoints answer 503.

mod by_id;
mod events;
mod idempotency;
mod input;
mod input_items;
pub mod object;
pub mod request;
pub mod store;
mod stream;
pub mod webhooks;

pub use by_id::{cancel, delete, retrieve};
pub use input_items::list as list_input_items;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::Instrument;

use crate::clock;
use crate::gateway::admission::{owner_of, Charge};
use crate::gateway::broker_link::CancelOnDrop;
use crate::gateway::errors::ApiError;
use crate::gateway::intake::CheckedTask;
use crate::gateway::Shared;

use object::Status;
use request::ResponseRequest;
use store::{Meta, Record, Store, StoreError};
use webhooks::Webhooks;

/// What the background endpoints share.
pub struct Background {
    /// Response state.
    pub store: Arc<Store>,
    /// Webhook delivery.
    pub webhooks: Arc<Webhooks>,
    /// The shared results queue.
    pub results_queue: String,
}

impl From<StoreError> for ApiError {
    /// Redis down or slow is a 503, `state_unavailable`; a value it holds that this build
    /// cannot read is a 500 (a fault of the server, not of Redis' availability; another
    /// replica, of a newer build, may read it).
    fn from(error: StoreError) -> Self {
        if let StoreError::Corrupt(_) = error {
            return ApiError::internal(error.to_string());
        }
        let mut api = ApiError::unavailable(format!("the response state store is down: {error}"));
        api.code = "state_unavailable".into();
        api
    }
}

/// `POST /v1/responses`.
pub async fn create(
    State(app): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    create_response(app, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn create_response(
    app: Arc<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = app.caller(&headers, body)?;
    let key = caller.key.as_str();
    let mut request = request::parse_request(&caller.body)?;
    if let Some(url) = &request.callback_url {
        app.responses.webhooks.check_url(url).map_err(|problem| {
            ApiError::invalid(
                format!("`metadata.callback_url` {problem}"),
                Some("metadata".into()),
            )
        })?;
    }
    if let Some(previous) = request.previous_response_id.clone() {
        let record = by_id::owned(&app, &previous, key)
            .await
            .map_err(|mut error| {
                error.param = Some("previous_response_id".into());
                error
            })?;
        if !record.status.is_final() {
            return Err(ApiError::invalid(
                format!(
                    "`previous_response_id` names a response that is still {}: wait for it",
                    record.status.as_str()
                ),
                Some("previous_response_id".into()),
            ));
        }
        request.continue_from(record.input, &record.object["output"])?;
    }
    request.task.progress = request.background.then_some(true);
    if !request.background {
        request.task.deadline_ms = Some(app.deadline_ms());
    }
    let checked = app.check_task(&request.task, &request.model, request.prompt_chars)?;
    request.model.clone_from(&checked.model);
    let id = format!("resp_{}", uuid::Uuid::new_v4().simple());
    let created_at = clock::unix_seconds();
    if !request.background {
        let charge = app.admit_task(&caller, &checked).await?;
        let keeper = request.store.then(|| Keeper {
            store: app.responses.store.clone(),
            id: id.clone(),
            owner: owner_of(key),
            input: request.conversation(),
        });
        return wait_for_answer(&app, &id, created_at, &request, &checked, keeper, charge).await;
    }
    let owner = owner_of(key);
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(idempotency_key) = &idempotency_key {
        if let Some(earlier) = idempotency::first_of(&app, &owner, idempotency_key, &id).await? {
            return Ok(Json(earlier).into_response());
        }
    }
    // Accepting runs to its end even when the caller hangs up: stopped between its record
    // and its publish, it would leave a response that never runs, claimed by its key.
    let key = key.to_owned();
    let accepting = tokio::spawn(
        async move {
            let accepted = match app.admission.admit(&key, checked.tokens).await {
                Ok(mut charge) => {
                    let accepted = accept(&app, &id, created_at, &request, &checked, &owner).await;
                    charge.refund_unless(accepted).await
                }
                Err(e) => Err(e),
            };
            if accepted.is_err() {
                if let Some(idempotency_key) = &idempotency_key {
                    let _ = app
                        .responses
                        .store
                        .release(&owner, idempotency_key, &id)
                        .await;
                }
            }
            accepted
        }
        // Its publish joins the request's trace.
        .instrument(tracing::Span::current()),
    );
    let object = accepting
        .await
        .map_err(|e| ApiError::internal(format!("accepting the response failed: {e}")))??;
    Ok(Json(object).into_response())
}

/// Records a background response, then publishes its task; undoes the record when the
/// broker does not take the task.
async fn accept(
    app: &Shared,
    id: &str,
    created_at: u64,
    request: &ResponseRequest,
    task: &CheckedTask,
    owner: &str,
) -> Result<serde_json::Value, ApiError> {
    let client = app.broker_link.publishing_client()?;
    let object = object::queued(id, created_at, request);
    let record = Record {
        status: Status::Queued,
        object: object.clone(),
        meta: Meta {
            owner: owner.to_owned(),
            callback_url: request.callback_url.clone(),
            ..Meta::default()
        },
        input: request.conversation(),
    };
    let store = &app.responses.store;
    store.create_pending(id, &record).await?;
    let publish = app.broker_link.unless_blocked(async {
        client
            .send_to(
                id,
                &task.bytes,
                &app.responses.results_queue,
                task.routing_key.as_deref(),
                request.tier,
            )
            .await
            .map_err(|e| app.models.publish_error(&request.model, e))
    });
    let (sent, unconfirmed) = match tokio::time::timeout(idempotency::PUBLISH_BOUND, publish).await
    {
        Ok(sent) => (sent, false),
        Err(_) => (
            Err(ApiError::unavailable(
                "the broker did not confirm the task in time; send it again",
            )),
            true,
        ),
    };
    if let Err(e) = sent {
        let e = app.broker_link.with_drain_estimate(e);
        let _ = store.delete(id).await;
        if unconfirmed || e.is_blocked() {
            // The message may still go out: it must not run for nobody. The cancel waits
            // for the broker too, so it is sent in the background.
            app.broker_link.cancel_later(id.to_owned());
        }
        return Err(e);
    }
    // A repeat of its Idempotency-Key answers with it from now on. Unmarked, it could be
    // taken over later as abandoned: then it is not answered either.
    let mut marked = store.accept(id).await;
    for _ in 0..2 {
        if marked.is_ok() {
            break;
        }
        marked = store.accept(id).await;
    }
    let refusal = match marked {
        Ok(true) => return Ok(object),
        Ok(false) => ApiError::internal(
            "accepting this response took so long that a repeat of its Idempotency-Key took \
             the key over; send it again to get that repeat's response",
        ),
        Err(e) => {
            let _ = store.delete(id).await;
            e.into()
        }
    };
    app.broker_link.cancel_later(id.to_owned());
    Err(refusal)
}

/// Without `background`: publish, then wait like a chat completion and answer the finished
/// object, or stream its events.
async fn wait_for_answer(
    app: &Shared,
    id: &str,
    created_at: u64,
    request: &ResponseRequest,
    task: &CheckedTask,
    keeper: Option<Keeper>,
    mut charge: Charge,
) -> Result<Response, ApiError> {
    let published = publish(app, id, request, task).await;
    let (pending, mut guard) = charge.refund_unless(published).await?;
    let object = object::queued(id, created_at, request);
    if request.stream {
        return Ok(stream::respond(
            object,
            pending,
            guard,
            app.request_timeout,
            keeper,
            app.metrics.stream_opened(),
        ));
    }
    let reply = tokio::time::timeout(app.request_timeout, pending.reply())
        .await
        .map_err(|_| ApiError::timed_out(app.request_timeout))??
        .reply;
    guard.disarm();
    if let Some(usage) = reply.usage {
        charge
            .settle(usage.prompt_tokens.saturating_add(usage.completion_tokens))
            .await;
    }
    // As a chat completion's: a prompt too long is a 400, a failed generation a 500; no
    // response is made (OpenAI makes none for a request it refuses).
    if reply.status == crate::protocol::ReplyStatus::Error {
        return Err(ApiError::of_failed_reply(&reply));
    }
    let finished = object::finished(&object, &reply);
    if let Some(keeper) = keeper {
        keeper.keep(&finished).await;
    }
    Ok(Json(finished).into_response())
}

/// Stores a finished response someone waited for (`store`, the default), so that it can be
/// retrieved and continued with `previous_response_id`.
pub(crate) struct Keeper {
    store: Arc<Store>,
    id: String,
    owner: String,
    input: Vec<crate::protocol::ChatMessage>,
}

impl Keeper {
    /// Records `object` (final). A Redis failure is logged: the answer still goes out, but
    /// it cannot be retrieved or continued.
    pub(crate) async fn keep(self, object: &serde_json::Value) {
        let status = object["status"]
            .as_str()
            .and_then(Status::parse)
            .unwrap_or(Status::Failed);
        let record = Record {
            status,
            object: object.clone(),
            meta: Meta {
                owner: self.owner,
                ..Meta::default()
            },
            input: self.input,
        };
        if let Err(error) = self.store.create(&self.id, &record).await {
            tracing::warn!(id = %self.id, %error, "a response could not be stored");
        }
    }
}

/// Publishes the task of a response someone waits for: its replies, and the guard that
/// cancels it if they stop waiting.
async fn publish(
    app: &Shared,
    id: &str,
    request: &ResponseRequest,
    task: &CheckedTask,
) -> Result<(crate::client::Pending, CancelOnDrop), ApiError> {
    let (routing_key, task) = (task.routing_key.as_deref(), task.bytes.as_slice());
    app.broker_link
        .publish_guarded(id, app.metrics.clone(), |client| async move {
            client
                .submit_routed(id, task, routing_key, request.tier)
                .await
                .map_err(|e| app.models.publish_error(&request.model, e))
        })
        .await
}
