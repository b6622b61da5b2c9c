//! The health and metrics listener: `/metrics` (Prometheus), `/healthz` (the process is alive)
//! and `/readyz` (model loaded and consuming; 503 while loading, reconnecting or draining;
//! 200 with the reason in its body while RabbitMQ blocks publishers).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::Telemetry;

/// Content type of the OpenMetrics text format that prometheus-client writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `listen` and serves the endpoints in the background. Returns the bound address
/// (useful with port 0).
pub async fn serve(listen: &str, telemetry: Arc<Telemetry>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(telemetry);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(address)
}

async fn metrics(State(telemetry): State<Arc<Telemetry>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, OPENMETRICS)],
        telemetry.scrape(),
    )
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(telemetry): State<Arc<Telemetry>>) -> impl IntoResponse {
    if !telemetry.readiness.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned());
    }
    // A broker-wide alarm blocks every worker alike: stay ready, say why nothing moves.
    match telemetry.broker_blocked.reason() {
        Some(reason) => (
            StatusCode::OK,
            format!(
                "ready; RabbitMQ is blocking publishers ({reason}): replies wait to be committed\n"
            ),
        ),
        None => (StatusCode::OK, "ready\n".to_owned()),
    }
}
