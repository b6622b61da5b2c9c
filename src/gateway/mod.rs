//! `warren gateway`: the OpenAI HTTP API in front of the queue. Any OpenAI SDK can point its
//! `base_url` here; each request becomes one contract-v1 task that flows through
//! RabbitMQ to the workers, so many gateways and many workers can run side by side.
//!
//! Layout, one module per endpoint: [`completions`] (`/v1/chat/completions`,
//! `/v1/completions`: request shapes, reply shapes, streaming, log probabilities),
//! [`embeddings`] (`/v1/embeddings`, served by embed workers from their own queue),
//! [`responses`] (`/v1/responses`: waiting and background responses, their state, webhooks),
//! [`batches`] (`/v1/batches`, and `/v1/files` for their input and output), and [`models`] (`/v1/models`,
//! and how a request's model is routed). Shared by them: [`results`] consumes the results
//! queue that background responses and batches share; [`errors`] is OpenAI's error envelope;
//! [`intake`] is what a request goes through before its task is published (caller, then for
//! chat/completions and responses the check and routing, then admission); [`admission`] checks API keys and rate limits; [`service_tier`] maps OpenAI's tiers to warren's; [`queue_depth`] watches the task queues; [`format`] translates output formats;
//! [`unsupported`] takes or refuses, by name, the fields no endpoint reads; `traced` gives each
//! request its span in the caller's trace;
//! [`broker_link`] keeps the [`crate::client::Client`] connected and cancels tasks whose
//! caller left; [`metrics`] counts. This module composes them into the [`Shared`] state of a
//! [`Gateway`] that the CLI runs and tests can start. It must not run inference nor decide a
//! task's fate: that is the worker's job.

pub mod admission;
pub mod backlog;
pub mod batches;
pub mod broker_link;
pub mod cold_start;
pub mod completions;
pub mod embeddings;
pub mod errors;
pub mod format;
pub mod intake;
pub mod metrics;
pub mod models;
pub mod paging;
pub mod queue_depth;
pub mod responses;
pub mod results;
pub mod service_tier;
pub mod shared_buckets;
mod traced;
pub mod unsupported;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::broker::management::Management;
use crate::config::{ConfigError, Settings};
use admission::Admission;
use broker_link::BrokerLink;
use errors::ApiError;
use metrics::GatewayMetrics;
use secrecy::ExposeSecret;

/// Content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What every handler shares.
pub struct Shared {
    /// The broker link.
    pub broker_link: BrokerLink,
    /// Keys and rate limits.
    pub admission: Admission,
    /// The worker's validation rules, applied before publishing.
    pub limits: crate::protocol::Limits,
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
    /// Largest body.
    pub max_body_bytes: usize,
    /// The models served, and how a request's model is routed.
    pub models: models::Models,
    /// Metrics.
    pub metrics: Arc<GatewayMetrics>,
    /// Responses: state, webhooks.
    pub responses: responses::Background,
    /// Files and batches.
    pub batches: batches::Batches,
    /// Where embedding tasks are published (`topology.embeddings_queue`).
    pub embeddings_queue: String,
    /// `Retry-After` of a 503 to a caller that refused to wait for a cold start.
    pub cold_start_retry_after: Duration,
}

/// A gateway bound to its address, ready to serve.
pub struct Gateway {
    listener: tokio::net::TcpListener,
    app: Arc<Shared>,
    settings: Settings,
    /// The management API, for the queues' drain rates (a full queue's Retry-After).
    management: Option<Management>,
}

impl Gateway {
    /// Binds `gateway.listen` and prepares the app (the broker is connected in
    /// [`Gateway::run_until`], so the gateway answers 503 rather than nothing meanwhile).
    pub async fn build(settings: Settings) -> Result<Gateway, GatewayError> {
        let listener = tokio::net::TcpListener::bind(&settings.gateway.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                address: settings.gateway.listen.clone(),
                source,
            })?;
        let g = &settings.gateway;
        let metrics: Arc<GatewayMetrics> = Arc::default();
        let store = responses::store::Store::new(g.redis_url.expose_secret(), g.state_ttl_s)
            .map_err(|e| ConfigError::Invalid {
                key: "gateway.redis_url",
                problem: e.to_string(),
            })?;
        let app = Arc::new(Shared {
            broker_link: BrokerLink::default(),
            admission: Admission::new(
                g,
                Some(Arc::new(
                    crate::redis_link::RedisLink::new(g.redis_url.expose_secret()).map_err(
                        |e| ConfigError::Invalid {
                            key: "gateway.redis_url",
                            problem: e.to_string(),
                        },
                    )?,
                )),
            )?
            .counting_fallbacks(metrics.rate_limit_fallbacks()),
            limits: settings.task_limits(),
            embeddings_queue: settings.topology.embeddings_queue.clone(),
            cold_start_retry_after: Duration::from_secs(g.cold_start_retry_after_s),
            request_timeout: Duration::from_millis(g.request_timeout_ms),
            max_body_bytes: g.max_body_bytes,
            models: models::Models::new(&settings),
            responses: responses::Background {
                store: Arc::new(store),
                webhooks: Arc::new(responses::webhooks::Webhooks::new(g, metrics.clone())?),
                results_queue: g.results_queue.clone(),
            },
            batches: batches::Batches {
                store: Arc::new(
                    batches::store::BatchStore::new(
                        g.redis_url.expose_secret(),
                        g.state_ttl_s,
                        &g.results_queue,
                    )
                    .map_err(|e| ConfigError::Invalid {
                        key: "gateway.redis_url",
                        problem: e.to_string(),
                    })?,
                ),
                runners: batches::runner::Runners::default(),
                max_file_bytes: g.max_file_bytes,
                max_requests: g.batch_max_requests,
                in_flight: g.batch_in_flight,
                lease_ms: g.batch_lease_ms,
                shutdown: CancellationToken::new(),
            },
            metrics,
        });
        let management =
            Management::from_settings(&settings).map_err(|e| ConfigError::Invalid {
                key: "broker.management_url",
                problem: e.to_string(),
            })?;
        Ok(Gateway {
            listener,
            app,
            settings,
            management,
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then stops taking connections and lets open
    /// requests finish. The broker link outlives the listener (the open requests' replies
    /// and their cancels travel on it) and is closed once they are done; the shared results
    /// consumer stops at once (other replicas take those results).
    pub async fn run_until(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let background = CancellationToken::new();
        let _stop_background = background.clone().drop_guard();
        let broker_link = self.app.broker_link.clone();
        let link = tokio::spawn(broker_link.maintain(self.settings.clone(), background.clone()));
        let b = &self.app.responses;
        tokio::spawn(results::consume(
            self.settings.clone(),
            b.store.clone(),
            b.webhooks.clone(),
            self.app.batches.store.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(queue_depth::watch(
            self.app.broker_link.clone(),
            queue_depth::watched_queues(&self.settings),
            self.management.clone(),
            self.app.metrics.clone(),
            background.clone(),
        ));
        let runners = self.app.batches.shutdown.clone();
        tokio::spawn(batches::runner::supervise(
            self.app.clone(),
            runners.clone(),
        ));
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            runners.cancel();
        });
        let router = router(self.app.clone(), &self.settings.gateway);
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        background.cancel();
        // The broker's close-ok, so the connection ends cleanly; bounded, as a broker that
        // does not answer must not keep the process.
        if tokio::time::timeout(LINK_CLOSE_BOUND, link).await.is_err() {
            tracing::warn!("the broker did not confirm the connection's close in time");
        }
        served
    }
}

/// How long a stopping gateway waits for its broker connection to close.
const LINK_CLOSE_BOUND: Duration = Duration::from_secs(5);

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The listen address cannot be bound.
    #[error("cannot listen on gateway.listen = {address}: {source}")]
    Bind {
        /// The configured address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The API keys file cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn router(app: Arc<Shared>, settings: &crate::config::GatewaySettings) -> Router {
    // An upload's form holds the file and a few short fields besides.
    let upload_limit = DefaultBodyLimit::max(settings.max_file_bytes.saturating_add(64 * 1024));
    Router::new()
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::completion))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        )
        .route("/v1/responses/{id}/cancel", post(responses::cancel))
        .route(
            "/v1/responses/{id}/input_items",
            get(responses::list_input_items),
        )
        .route(
            "/v1/files",
            post(batches::files::upload)
                .layer(upload_limit)
                .get(batches::files::list),
        )
        .route(
            "/v1/files/{id}",
            get(batches::files::retrieve).delete(batches::files::delete),
        )
        .route("/v1/files/{id}/content", get(batches::files::content))
        .route("/v1/batches", post(batches::create).get(batches::list))
        .route("/v1/batches/{id}", get(batches::retrieve))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route("/v1/models", get(models::list))
        // A wildcard: model names may hold `/` (`org/name`, as Hugging Face names them).
        .route("/v1/models/{*model}", get(models::one))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(app.clone(), measure))
        .layer(middleware::from_fn(traced::traced))
        .with_state(app)
}

/// Counts each request by route and status and by API key name, and times it to the start of
/// its response.
async fn measure(State(app): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let key = key_label(&app, request.headers());
    // Dropped with the handler when the caller leaves first: counted then as 499.
    let in_flight = app.metrics.request_started(route, key);
    let response = next.run(request).await;
    in_flight.answered(response.status().as_u16());
    response
}

/// The bounded, non-secret name metrics count a request under: `anonymous` without API
/// keys, `key-` and the first 8 hex digits of the key's hash for a configured key, `invalid`
/// for anything else.
fn key_label(app: &Shared, headers: &axum::http::HeaderMap) -> String {
    match app.admission.authenticate(headers) {
        Ok(key) if key.is_empty() => "anonymous".to_owned(),
        Ok(key) => format!("key-{}", &admission::owner_of(&key)[..8]),
        Err(_) => "invalid".to_owned(),
    }
}

async fn readyz(State(app): State<Arc<Shared>>) -> Response {
    match app.broker_link.client() {
        // A broker-wide alarm blocks every replica alike: stay in the Service, say why.
        Some(_) => match app.broker_link.blocked_reason() {
            Some(reason) => (
                StatusCode::OK,
                format!("ready; RabbitMQ is blocking publishers ({reason}): requests get 503\n"),
            )
                .into_response(),
            None => (StatusCode::OK, "ready\n").into_response(),
        },
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to RabbitMQ\n",
        )
            .into_response(),
    }
}

async fn scrape(State(app): State<Arc<Shared>>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], {
        app.metrics
            .broker_blocked(app.broker_link.blocked_reason().is_some());
        app.metrics.encode()
    })
        .into_response()
}
