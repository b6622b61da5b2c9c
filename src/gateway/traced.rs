//! One span per API request, continued from the caller's W3C `traceparent` (and
//! `tracestate`) when it sends one: the parent of the spans that publish the request's tasks,
//! so that the workers' spans join the same trace. With traces on, the response names the
//! request's span in a `traceresponse` header (W3C Trace Context level 2), so a caller that
//! sent no `traceparent` can still find its trace. A server error (5xx) is logged at warn
//! inside the span. Health and metrics endpoints are not traced.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::gateway::errors::ErrorSummary;
use crate::telemetry::traces;

/// Endpoints probed often and of no interest in a trace.
const UNTRACED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Runs the request inside its span.
pub(super) async fn traced(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    if UNTRACED.contains(&route.as_str()) {
        return next.run(request).await;
    }
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    traces::continue_trace(&span, traces::from_http(request.headers()));
    let recorded = span.clone();
    async move {
        let mut response = next.run(request).await;
        let status = response.status().as_u16();
        recorded.record("http.response.status_code", i64::from(status));
        if status >= 500 {
            recorded.record("otel.status_code", "error");
            // A server's failure is the operator's to see in the logs too, with the request's
            // span (its trace id) on the line; a client's 4xx is not.
            let summary = response.extensions().get::<ErrorSummary>();
            tracing::warn!(
                route = %route,
                status,
                code = summary.map_or("", |s| s.code.as_str()),
                message = summary.map_or("", |s| s.message.as_str()),
                "request failed"
            );
        }
        if let Some(value) =
            traces::current_traceparent().and_then(|v| HeaderValue::from_str(&v).ok())
        {
            response.headers_mut().insert("traceresponse", value);
        }
        response
    }
    .instrument(span)
    .await
}
