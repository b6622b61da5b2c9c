//! `warren gateway`: the OpenAI HTTP API in front of the queue. Any OpenAI SDK can point its
//! `base_url` here; each request becomes one contract-v1 task that flows through
//! RabbitMQ to the workers, so many gateways and many workers can run side by side.
//!
//! Layout: [`openai`] translates requests and [`responses`] replies (pure), [`logprobs`]
//! both ways for log probabilities; [`errors`] is OpenAI's error
//! envelope; [`admission`] checks API keys and rate limits; [`models`] lists the models and routes by them; [`upstream`] keeps the
//! [`crate::client::Client`] connected and cancels tasks whose caller left; [`completions`]
//! and [`sse`] serve the two generation endpoints; [`metrics`] counts. This module composes
//! them into an [`App`] that the CLI runs and tests can start. It must not run inference nor
//! decide a task's fate: that is the worker's job.

pub mod admission;
pub mod background;
pub mod batch;
pub mod completions;
pub mod errors;
pub mod format;
pub mod logprobs;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod responses;
pub mod sse;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Settings};
use admission::Admission;
use errors::ApiError;
use metrics::GatewayMetrics;
use secrecy::ExposeSecret;
use upstream::Upstream;

/// Content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What every handler shares.
pub struct App {
    /// The broker link.
    pub upstream: Upstream,
    /// Keys and rate limits.
    pub admission: Admission,
    /// The worker's validation rules, applied before publishing.
    pub limits: crate::config::LimitSettings,
    /// The sampling defaults those rules apply.
    pub sampling: crate::config::SamplingSettings,
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
    /// Largest body.
    pub max_body_bytes: usize,
    /// The models served, and how a request's model is routed.
    pub models: models::Models,
    /// Metrics.
    pub metrics: Arc<GatewayMetrics>,
    /// Background responses: state, webhooks.
    pub background: background::Background,
    /// Files and batches.
    pub batches: batch::Batches,
}

/// A gateway bound to its address, ready to serve.
pub struct Gateway {
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    settings: Settings,
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
        let store = background::store::Store::new(g.redis_url.expose_secret(), g.state_ttl_s)
            .map_err(|e| ConfigError::Invalid {
                key: "gateway.redis_url",
                problem: e.to_string(),
            })?;
        let app = Arc::new(App {
            upstream: Upstream::default(),
            admission: Admission::new(g)?,
            limits: settings.limits.clone(),
            sampling: settings.sampling.clone(),
            request_timeout: Duration::from_millis(g.request_timeout_ms),
            max_body_bytes: g.max_body_bytes,
            models: models::Models::new(&settings),
            background: background::Background {
                store: Arc::new(store),
                webhooks: Arc::new(background::webhooks::Webhooks::new(g, metrics.clone())?),
                results_queue: g.results_queue.clone(),
            },
            batches: batch::Batches {
                store: Arc::new(
                    batch::store::BatchStore::new(
                        g.redis_url.expose_secret(),
                        g.state_ttl_s,
                        &g.results_queue,
                    )
                    .map_err(|e| ConfigError::Invalid {
                        key: "gateway.redis_url",
                        problem: e.to_string(),
                    })?,
                ),
                runners: batch::runner::Runners::default(),
                max_file_bytes: g.max_file_bytes,
                max_requests: g.batch_max_requests,
                in_flight: g.batch_in_flight,
                shutdown: CancellationToken::new(),
            },
            metrics,
        });
        Ok(Gateway {
            listener,
            app,
            settings,
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then stops taking connections and lets open
    /// requests finish.
    pub async fn run_until(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let upstream = self.app.upstream.clone();
        tokio::spawn(upstream.maintain(self.settings.clone(), shutdown.clone()));
        let b = &self.app.background;
        tokio::spawn(background::results::consume(
            self.settings.clone(),
            b.store.clone(),
            b.webhooks.clone(),
            self.app.batches.store.clone(),
            shutdown.clone(),
        ));
        let runners = self.app.batches.shutdown.clone();
        tokio::spawn(batch::runner::supervise(self.app.clone(), runners.clone()));
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            runners.cancel();
        });
        let router = router(self.app.clone(), &self.settings.gateway);
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    }
}

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

fn router(app: Arc<App>, settings: &crate::config::GatewaySettings) -> Router {
    // An upload's form holds the file and a few short fields besides.
    let upload_limit = DefaultBodyLimit::max(settings.max_file_bytes.saturating_add(64 * 1024));
    Router::new()
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::completion))
        .route("/v1/responses", post(background::create))
        .route("/v1/responses/{id}", get(background::retrieve))
        .route("/v1/responses/{id}/cancel", post(background::cancel))
        .route(
            "/v1/files",
            post(batch::files::upload)
                .layer(upload_limit)
                .get(batch::files::list),
        )
        .route(
            "/v1/files/{id}",
            get(batch::files::retrieve).delete(batch::files::delete),
        )
        .route("/v1/files/{id}/content", get(batch::files::content))
        .route("/v1/batches", post(batch::create).get(batch::list))
        .route("/v1/batches/{id}", get(batch::retrieve))
        .route("/v1/batches/{id}/cancel", post(batch::cancel))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{model}", get(models::one))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(app.clone(), measure))
        .with_state(app)
}

/// Counts each request by route and status, and times it to the start of its response.
async fn measure(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let started = Instant::now();
    app.metrics.in_flight(1);
    let response = next.run(request).await;
    app.metrics.in_flight(-1);
    app.metrics.answered(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.upstream.client() {
        Some(_) => (StatusCode::OK, "ready\n").into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to RabbitMQ\n",
        )
            .into_response(),
    }
}

async fn scrape(State(app): State<Arc<App>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, OPENMETRICS)],
        app.metrics.encode(),
    )
        .into_response()
}
