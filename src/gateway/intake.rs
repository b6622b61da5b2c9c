//! What a request goes through before its task is published, in the order its errors take
//! precedence: the caller (401 for its key, 400 for its cold-start header, 413 for its
//! body); for a generation task (chat/completions, responses), the task checked as the worker
//! will check it (400) and routed to its model's queue (404 for a model not served); then
//! admission (503 for a cold queue the caller will not wait for, 429 for a spent rate limit),
//! embeddings' too. The endpoints keep what is theirs: parsing their own request shape, and
//! what happens once a task is in.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::admission::{self, Charge};
use super::cold_start::{self, ColdStart};
use super::errors::ApiError;
use super::Shared;
use crate::protocol::TaskBody;

/// The API key a request authenticated with, for the endpoints that only read what it owns
/// (files, batches, stored responses, models). A request without a valid key is answered 401
/// before its handler runs.
pub struct ApiKey(pub String);

impl ApiKey {
    /// Who owns what this key creates ([`admission::owner_of`]).
    pub fn owner(&self) -> String {
        admission::owner_of(&self.0)
    }
}

impl FromRequestParts<Arc<Shared>> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<Shared>) -> Result<Self, ApiError> {
        app.admission.authenticate(&parts.headers).map(ApiKey)
    }
}

/// What a request that publishes a task brings before its body is parsed.
pub struct Caller {
    /// The API key it authenticated with.
    pub key: String,
    /// Whether it waits for a cold start.
    pub cold_start: ColdStart,
    /// Its body, within `gateway.max_body_bytes`.
    pub body: Bytes,
}

/// A task the worker will take, and where it goes.
pub struct CheckedTask {
    /// The task, as published.
    pub bytes: Vec<u8>,
    /// The model every reply names ([`super::models::Models::reply_name`]).
    pub model: String,
    /// The routing key it is published with (`None`: the configured route).
    pub routing_key: Option<String>,
    /// The queue it lands in.
    pub queue: String,
    /// What it counts for in the caller's rate limit: its prompt's characters and the tokens
    /// it may generate, its own bound or the worker's default.
    pub tokens: u32,
}

impl Shared {
    /// The caller of a request that publishes a task.
    pub fn caller(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Caller, ApiError> {
        Ok(Caller {
            key: self.admission.authenticate(headers)?,
            cold_start: ColdStart::from_headers(headers)?,
            body: ApiError::read_body(body, self.max_body_bytes)?,
        })
    }

    /// `task`, asked of `model` with a prompt of `prompt_chars` characters, checked by the
    /// worker's own rules (it checks every task again; checking here answers a bad request
    /// at once) and routed, before any rate limit or record is spent on it.
    pub fn check_task(
        &self,
        task: &TaskBody,
        model: &str,
        prompt_chars: usize,
    ) -> Result<CheckedTask, ApiError> {
        let (bytes, checked) = task
            .checked_bytes(&self.limits)
            .map_err(ApiError::refused_task)?;
        let routing_key = self.models.routing_key(model)?;
        let max_tokens = checked.max_tokens.or(checked.default_max_tokens);
        Ok(CheckedTask {
            bytes,
            model: self.models.reply_name(model).to_owned(),
            routing_key: routing_key.map(str::to_owned),
            queue: self.models.task_queue(routing_key),
            tokens: admission::token_estimate(prompt_chars, max_tokens),
        })
    }

    /// Lets `caller`'s checked task in, before it is published.
    pub async fn admit_task(
        &self,
        caller: &Caller,
        task: &CheckedTask,
    ) -> Result<Charge, ApiError> {
        self.admit(caller, &task.queue, &task.model, task.tokens)
            .await
    }

    /// Lets `caller`'s work for `model` in, before it is published to `queue`: 503 when no
    /// worker consumes the queue and the caller refused to wait ([`cold_start`]), then the
    /// caller's rate limit charged `tokens` (429 when spent).
    pub async fn admit(
        &self,
        caller: &Caller,
        queue: &str,
        model: &str,
        tokens: u32,
    ) -> Result<Charge, ApiError> {
        cold_start::refuse_if_cold(
            &self.broker_link,
            caller.cold_start,
            queue,
            model,
            self.cold_start_retry_after,
        )
        .await?;
        self.admission.admit(&caller.key, tokens).await
    }

    /// `deadline_ms` of a task whose caller waits for it: when the request times out.
    pub fn deadline_ms(&self) -> u64 {
        u64::try_from((crate::clock::since_epoch() + self.request_timeout).as_millis())
            .unwrap_or(u64::MAX)
    }
}
