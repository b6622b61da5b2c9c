//! A response by its id: `GET /v1/responses/{id}` (with an optional bounded
//! `?wait=SECONDS` long-poll), `POST /v1/responses/{id}/cancel` and
//! `DELETE /v1/responses/{id}`, each for the API key that made the response only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::object::{self, Status};
use super::store::{Record, Transition};
use crate::gateway::admission::owner_of;
use crate::gateway::errors::ApiError;
use crate::gateway::intake::ApiKey;
use crate::gateway::Shared;

/// The longest `?wait=` honoured, in seconds.
const MAX_WAIT_S: u64 = 60;

/// `?wait=SECONDS` of a retrieve; OpenAI's other parameters are refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    wait: Option<u64>,
    stream: Option<bool>,
}

/// `GET /v1/responses/{id}`.
pub async fn retrieve(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text(), None))?;
    if query.stream == Some(true) {
        return Err(ApiError::invalid(
            "`stream` is not supported on retrieve: long-poll with `?wait=SECONDS` (at most 60), \
             or stream the request itself (`stream: true` on create)",
            Some("stream".into()),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_S));
    loop {
        let record = owned(&app, &id, &key.0).await?;
        if record.status.is_final() || Instant::now() >= deadline {
            return Ok(Json(record.object).into_response());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST /v1/responses/{id}/cancel`: a queued or running response is cancelled (its task is
/// cancelled on the control exchange); a finished one is returned unchanged.
pub async fn cancel(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = &app.responses.store;
    for _ in 0..5 {
        let record = owned(&app, &id, &key.0).await?;
        if record.status.is_final() {
            return Ok(Json(record.object).into_response());
        }
        let next = object::with_status(&record.object, Status::Cancelled);
        if store
            .transition(&id, record.status, Status::Cancelled, &next)
            .await?
            == Transition::Done
        {
            // While the broker blocks publishers the cancel waits for the alarm; the caller
            // must not.
            app.broker_link.cancel_later(id.clone());
            let hooks = &app.responses.webhooks;
            let callback = record.meta.callback_url.as_deref();
            hooks.notify(store, &id, Status::Cancelled, callback);
            return Ok(Json(next).into_response());
        }
    }
    Err(ApiError::internal("the response kept changing; try again"))
}

/// The record of response `id` if `key` made it; 404 otherwise. Without API keys every
/// owner is empty. With keys, a record kept from a reply alone (Redis lost the one its
/// request made) has no owner, and no key sees it.
pub(super) async fn owned(app: &Shared, id: &str, key: &str) -> Result<Record, ApiError> {
    match app.responses.store.get(id).await? {
        Some(record) if record.meta.owner == owner_of(key) => Ok(record),
        _ => {
            let mut error = ApiError::not_found(format!("no response with id `{id}`"));
            error.code = "response_not_found".into();
            Err(error)
        }
    }
}

/// `DELETE /v1/responses/{id}`: the response is forgotten (neither retrieved nor continued
/// with `previous_response_id` again); one still queued or running is cancelled first, so
/// its task does not run for nobody.
pub async fn delete(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = owned(&app, &id, &key.0).await?;
    if !record.status.is_final() {
        app.broker_link.cancel_later(id.clone());
    }
    app.responses.store.delete(&id).await?;
    Ok(Json(json!({"id": id, "object": "response", "deleted": true})).into_response())
}
