//! OpenAI's Batch API on the queue: upload a JSONL file of requests ([`files`]), then
//! `POST /v1/batches` runs each line as one task through the same queue, workers and results
//! queue as background responses; `GET /v1/batches/{id}` shows its counts, and its output
//! and error files (JSONL, one line per request, in file order) are files to download.
//! `POST /v1/batches/{id}/cancel` stops it; `GET /v1/batches` lists them.
//!
//! [`object`] holds the shapes and [`input`] reads an input file (both pure), [`outcome`] how
//! each request ended and its result line, [`store`] the state in Redis, [`runner`] the
//! publishing loop that any replica may carry on. Redis down: these endpoints answer 503.

pub mod expiry;
pub mod file_store;
pub mod files;
pub mod input;
pub mod object;
pub mod outcome;
pub mod record;
pub mod runner;
pub mod store;
mod store_scripts;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::clock::unix_seconds;
use crate::gateway::errors::ApiError;
use crate::gateway::intake::ApiKey;
use crate::gateway::Shared;
use crate::telemetry::traces;
use object::BatchStatus;
use outcome::Outcome;
use runner::Runners;
use store::{BatchRecord, BatchStore};

/// What the batch endpoints share.
pub struct Batches {
    /// Files and batches.
    pub store: Arc<BatchStore>,
    /// The runners of this replica.
    pub runners: Runners,
    /// Largest file, in bytes.
    pub max_file_bytes: usize,
    /// Most requests in one batch.
    pub max_requests: usize,
    /// Most tasks of one batch published and not yet answered.
    pub in_flight: usize,
    /// How long a runner's lease lasts without renewal (`gateway.batch_lease_ms`).
    pub lease_ms: u64,
    /// Stops the runners when the gateway stops.
    pub shutdown: CancellationToken,
}

/// `POST /v1/batches`.
pub async fn create(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = ApiError::read_body(body, app.max_body_bytes)?;
    let (create, _kind) = object::parse_create(&body)?;
    // Checked by `parse_create`.
    let output_ttl_s = match &create.output_expires_after {
        Some(policy) => policy.seconds,
        None => app.batches.store.ttl_s(),
    };
    let file = files::owned(&app, &create.input_file_id, &key)
        .await
        .map_err(|mut e| {
            e.param = Some("input_file_id".into());
            e
        })?;
    if file.object["purpose"] != "batch" {
        return Err(ApiError::invalid(
            "the input file's purpose is not `batch`",
            Some("input_file_id".into()),
        ));
    }
    app.admission.admit(&key.0, 0).await?;
    let store = &app.batches.store;
    let content = store
        .file_content(&create.input_file_id)
        .await?
        .unwrap_or_default();
    let id = format!("{}{}", object::BATCH_PREFIX, uuid::Uuid::new_v4().simple());
    let now = unix_seconds();
    let checked = input::parse_input(
        &content,
        &create.endpoint,
        app.batches.max_requests,
        &app.limits,
    );
    let (record, refused) = match checked {
        Ok(lines) => {
            let refused: Vec<(usize, Outcome)> = lines
                .iter()
                .enumerate()
                .filter_map(|(index, line)| {
                    let refusal = line.task_for(&app.models).err();
                    refusal.map(|error| (index, Outcome::refused(&error)))
                })
                .collect();
            let record = BatchRecord {
                status: BatchStatus::InProgress,
                object: object::batch(&id, &create, BatchStatus::InProgress, now),
                owner: file.owner,
                total: lines.len(),
                refused: refused.len(),
                failed: refused.len(),
                traceparent: traces::current_traceparent().unwrap_or_default(),
                output_ttl_s,
                ..BatchRecord::default()
            };
            (record, refused)
        }
        Err(problems) => {
            let mut failed = object::batch(&id, &create, BatchStatus::Failed, now);
            failed["errors"] = input::errors_object(&problems);
            let record = BatchRecord {
                status: BatchStatus::Failed,
                object: failed,
                owner: file.owner,
                output_ttl_s,
                ..BatchRecord::default()
            };
            (record, Vec::new())
        }
    };
    store.create_batch(&id, &record, &refused, &content).await?;
    if record.status == BatchStatus::InProgress {
        runner::start(&app, &id, &app.batches.shutdown);
    } else {
        app.metrics.batch_ended(record.status.as_str());
    }
    Ok(Json(record.current()).into_response())
}

/// Batch `id` if `key` may see it; 404 otherwise.
async fn owned(app: &Shared, id: &str, key: &ApiKey) -> Result<BatchRecord, ApiError> {
    match app.batches.store.batch(id).await? {
        Some(record) if record.owner == key.owner() => Ok(record),
        _ => Err(ApiError::no_such("batch", id)),
    }
}

/// `GET /v1/batches/{id}`.
pub async fn retrieve(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(owned(&app, &id, &key).await?.current()).into_response())
}

/// `POST /v1/batches/{id}/cancel`: an unfinished batch becomes `cancelling`; its runner
/// cancels what is in flight and ends it as `cancelled`. A final batch is returned as it is.
pub async fn cancel(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    for _ in 0..5 {
        let record = owned(&app, &id, &key).await?;
        if record.status != BatchStatus::InProgress {
            return Ok(Json(record.current()).into_response());
        }
        let next = object::with_status(&record.object, BatchStatus::Cancelling, unix_seconds());
        let store = &app.batches.store;
        if store
            .transition(&id, BatchStatus::InProgress, BatchStatus::Cancelling, &next)
            .await?
        {
            let record = BatchRecord {
                status: BatchStatus::Cancelling,
                object: next,
                ..record
            };
            return Ok(Json(record.current()).into_response());
        }
    }
    Err(ApiError::internal("the batch kept changing; try again"))
}

/// `?limit=&after=` of a list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /v1/batches`, newest first.
pub async fn list(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(page) = page.map_err(|e| ApiError::invalid(e.body_text(), None))?;
    let ids = app.batches.store.ids_of(&key.owner(), true).await?;
    // An `after` that names no batch of the caller's is refused, as for files: starting over
    // from the first page would hand a pager the same batches again.
    let start = match &page.after {
        None => 0,
        Some(after) => match ids.iter().position(|id| id == after) {
            Some(at) => at + 1,
            None => return Err(ApiError::no_such("batch", after)),
        },
    };
    let limit = page.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(
            "`limit` must be 1 to 100",
            Some("limit".into()),
        ));
    }
    let mut data = Vec::new();
    for id in ids.iter().skip(start).take(limit) {
        match app.batches.store.batch(id).await? {
            Some(record) => data.push(record.current()),
            None => app.batches.store.forget_id(&key.owner(), true, id).await?,
        }
    }
    let has_more = ids.len() > start + limit;
    Ok(Json(crate::gateway::paging::list_page(data, has_more)).into_response())
}
