//! OpenAI's Files API, as far as batches need it: `POST /v1/files` (multipart, `purpose`
//! `batch`), `GET /v1/files`, `GET /v1/files/{id}`, `GET /v1/files/{id}/content` and
//! `DELETE /v1/files/{id}`. Files live in Redis ([`crate::gateway::batches::store`]) and belong to the API key
//! that uploaded them; a batch's output and error files are files too.

use std::sync::Arc;

use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock::unix_seconds;
use crate::gateway::batches::expiry::{self, ExpiresAfter};
use crate::gateway::batches::object::{self, FILE_PREFIX};
use crate::gateway::batches::store::StoredFile;
use crate::gateway::errors::ApiError;
use crate::gateway::intake::ApiKey;
use crate::gateway::Shared;

/// `POST /v1/files`.
pub async fn upload(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let form = form.map_err(|e| {
        ApiError::invalid(format!("the upload must be multipart/form-data: {e}"), None)
    })?;
    let upload = read_form(form, app.batches.max_file_bytes).await?;
    if upload.purpose.as_deref() != Some("batch") {
        return Err(ApiError::invalid(
            "`purpose` must be \"batch\": this gateway keeps files for batches only",
            Some("purpose".into()),
        ));
    }
    let keep_s = match upload.expires_after {
        Some(policy) => policy.keep_s("expires_after")?,
        None => app.batches.store.ttl_s(),
    };
    let Some((filename, content)) = upload.filename.zip(upload.content) else {
        return Err(ApiError::invalid(
            "the form has no `file` part",
            Some("file".into()),
        ));
    };
    let id = format!("{FILE_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let now = unix_seconds();
    let file = StoredFile {
        object: object::file(&id, content.len(), (now, now + keep_s), &filename, "batch"),
        owner: key.owner(),
    };
    app.batches
        .store
        .put_file(&id, &file, &content, keep_s)
        .await?;
    Ok(Json(file.object).into_response())
}

/// What an upload form holds.
struct Upload {
    purpose: Option<String>,
    filename: Option<String>,
    content: Option<Vec<u8>>,
    expires_after: Option<ExpiresAfter>,
}

/// The `purpose`, the `file`'s name and content, and the `expires_after` policy of an
/// upload form.
async fn read_form(mut form: Multipart, max_bytes: usize) -> Result<Upload, ApiError> {
    let (mut purpose, mut filename, mut content) = (None, None, None);
    let (mut anchor, mut seconds) = (None, None);
    let malformed = |e: axum::extract::multipart::MultipartError| {
        if e.status().as_u16() == 413 {
            ApiError::too_large(max_bytes)
        } else {
            ApiError::invalid(format!("the upload form is not valid: {e}"), None)
        }
    };
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        match field.name() {
            Some("purpose") => purpose = Some(field.text().await.map_err(malformed)?),
            Some("file") => {
                filename = Some(field.file_name().unwrap_or("upload.jsonl").to_owned());
                let bytes = field.bytes().await.map_err(malformed)?;
                if bytes.len() > max_bytes {
                    return Err(ApiError::too_large(max_bytes));
                }
                content = Some(bytes.to_vec());
            }
            Some("expires_after[anchor]") => anchor = Some(field.text().await.map_err(malformed)?),
            Some("expires_after[seconds]") => {
                seconds = Some(field.text().await.map_err(malformed)?)
            }
            // Refused by name, not ignored.
            other => {
                let field = other.unwrap_or("(unnamed)");
                return Err(ApiError::invalid(
                    format!(
                        "`{field}` is not supported: an upload takes `purpose`, `file` and \
                         `expires_after`"
                    ),
                    Some(field.to_owned()),
                ));
            }
        }
    }
    Ok(Upload {
        purpose,
        filename,
        content,
        expires_after: expiry::from_form(anchor, seconds)?,
    })
}

/// File `id` if `key` may see it; 404 otherwise.
pub async fn owned(app: &Shared, id: &str, key: &ApiKey) -> Result<StoredFile, ApiError> {
    match app.batches.store.file(id).await? {
        Some(file) if file.owner == key.owner() => Ok(file),
        _ => Err(ApiError::no_such("file", id)),
    }
}

/// `?purpose=&order=&limit=&after=` of `GET /v1/files`, as OpenAI's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    purpose: Option<String>,
    #[serde(default)]
    order: Order,
    limit: Option<usize>,
    after: Option<String>,
}

/// By `created_at`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Order {
    Asc,
    #[default]
    Desc,
}

/// Most files a page holds (OpenAI's bound).
const MAX_PAGE: usize = 10_000;

/// `GET /v1/files`.
pub async fn list(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    query: Result<Query<FileQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text(), None))?;
    let limit = query.limit.unwrap_or(MAX_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            format!("`limit` must be 1 to {MAX_PAGE}"),
            Some("limit".into()),
        ));
    }
    let store = &app.batches.store;
    // Newest first as stored; a file whose key expired is left out, and off the list.
    let mut files = Vec::new();
    for id in store.ids_of(&key.owner(), false).await? {
        let Some(file) = store.file(&id).await? else {
            store.forget_id(&key.owner(), false, &id).await?;
            continue;
        };
        if query
            .purpose
            .as_deref()
            .is_none_or(|p| file.object["purpose"] == p)
        {
            files.push(file.object);
        }
    }
    if query.order == Order::Asc {
        files.reverse();
    }
    let start = match &query.after {
        None => 0,
        Some(after) => match files.iter().position(|f| f["id"] == after.as_str()) {
            Some(i) => i + 1,
            None => return Err(ApiError::no_such("file", after)),
        },
    };
    let has_more = files.len() > start + limit;
    let data: Vec<Value> = files.into_iter().skip(start).take(limit).collect();
    Ok(Json(crate::gateway::paging::list_page(data, has_more)).into_response())
}

/// `GET /v1/files/{id}`.
pub async fn retrieve(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(owned(&app, &id, &key).await?.object).into_response())
}

/// `GET /v1/files/{id}/content`.
pub async fn content(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    owned(&app, &id, &key).await?;
    let content = app
        .batches
        .store
        .file_content(&id)
        .await?
        .unwrap_or_default();
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        content,
    )
        .into_response())
}

/// `DELETE /v1/files/{id}`.
pub async fn delete(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let file = owned(&app, &id, &key).await?;
    app.batches.store.delete_file(&id, &file.owner).await?;
    Ok(Json(json!({"id": id, "object": "file", "deleted": true})).into_response())
}
