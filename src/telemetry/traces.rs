//! Traces: warren's `tracing` spans as OpenTelemetry spans, exported over OTLP/HTTP when
//! `trace.endpoint` is set, and the W3C trace context (`traceparent`, `tracestate`) read from
//! and written to HTTP and AMQP headers, so that one request is one trace across the
//! gateway, the queue and the worker.
//!
//! Only the spans of warren's own modules at info level or above are exported, whatever
//! `log.level` says (the log's filter is its own). A span whose times are known only once
//! it is over (the wait in a queue, prompt reading inside the engine's shared batches) is
//! recorded with [`timed_span`]. With traces off nothing is read or written: no layer turns
//! spans into OpenTelemetry spans, so they carry no context to inject.

use std::time::{Duration, Instant, SystemTime};

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::TraceSettings;

/// The name warren's spans are recorded under (the instrumentation scope).
const SCOPE: &str = "warren";

/// How long one export to the collector may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why traces could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// `trace.ca_file` is unusable.
    #[error("`trace.ca_file`: {0}")]
    Tls(String),
    /// The HTTP client or the exporter could not be built.
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
}

/// The span exporter, while traces are on. [`Traces::shutdown`] sends what is left.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Starts exporting when `settings` name an endpoint; `None` when traces are off. Must be
    /// called outside the async runtime: the exporter's blocking HTTP client runs its own.
    pub fn start(settings: &TraceSettings, service: &str) -> Result<Option<Traces>, TraceError> {
        if !settings.enabled() {
            return Ok(None);
        }
        let tls = crate::tls::client_config(&settings.ca_file).map_err(TraceError::Tls)?;
        // The batch processor exports from a thread of its own, outside any async runtime:
        // a blocking client is the one that works there.
        let client = reqwest::blocking::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TraceError::Exporter(e.to_string()))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.traces_url())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TraceError::Exporter(e.to_string()))?;
        let service = match settings.service_name.trim() {
            "" => service.to_owned(),
            named => named.to_owned(),
        };
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(
                Resource::builder()
                    .with_service_name(service)
                    .with_attributes(instance_attributes())
                    .build(),
            )
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(Some(Traces { provider }))
    }

    /// The layer that turns warren's spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        // Source locations, threads and busy/idle times say nothing about a request.
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(SCOPE))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target("warren", tracing::Level::INFO))
    }

    /// Exports the spans still buffered and stops, waiting at most one export's timeout (the
    /// SDK's own default would give up sooner). Must be called outside the async runtime.
    pub fn shutdown(self) {
        let bound = EXPORT_TIMEOUT + Duration::from_secs(1);
        if let Err(e) = self.provider.shutdown_with_timeout(bound) {
            eprintln!("warren: the last spans could not be exported: {e}");
        }
    }
}

/// Which process made a span (`service.instance.id`: its host, a pod's name, and process id)
/// and which build (`service.version`), so a slow attempt can be traced to its pod.
fn instance_attributes() -> [KeyValue; 2] {
    [
        KeyValue::new("service.instance.id", crate::broker::host_and_pid()),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ]
}

/// The trace context a caller sent in HTTP headers (empty when none or malformed).
pub fn from_http(headers: &axum::http::HeaderMap) -> Context {
    extract(&opentelemetry_http::HeaderExtractor(headers))
}

/// The trace context a task's AMQP headers carry (empty when none or malformed).
pub fn from_amqp(properties: &BasicProperties) -> Context {
    match properties.headers() {
        Some(table) => extract(&AmqpHeaders(table)),
        None => Context::new(),
    }
}

/// The trace context of a stored W3C `traceparent` (empty when blank or malformed).
pub fn from_traceparent(traceparent: &str) -> Context {
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    extract(&carrier)
}

/// What `carrier` holds, over an empty context: the propagator's own `extract` falls back
/// to the thread's current context, which inside a span is that span's (tracing-opentelemetry
/// makes an entered span current), so a task without a valid `traceparent` would be taken
/// for a child of whatever span is running.
fn extract(carrier: &dyn opentelemetry::propagation::Extractor) -> Context {
    TraceContextPropagator::new().extract_with_context(&Context::new(), carrier)
}

/// `properties` with the current span's trace context in its headers; unchanged when the
/// current span is not traced.
pub fn with_current_context(properties: BasicProperties) -> BasicProperties {
    let mut fields = AmqpFields::default();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut fields);
    if fields.0.is_empty() {
        return properties;
    }
    let mut table = properties.headers().clone().unwrap_or_default();
    for (key, value) in fields.0 {
        table.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    properties.with_headers(table)
}

/// The current span's `traceparent`, for an HTTP response; `None` when it is not traced.
pub fn current_traceparent() -> Option<String> {
    let mut fields = AmqpFields::default();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut fields);
    fields
        .0
        .into_iter()
        .find(|(key, _)| key == "traceparent")
        .map(|(_, value)| value)
}

/// Makes `span` a child of `parent` when `parent` holds a remote span context. Must be
/// called before `span` is first entered.
pub fn continue_trace(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        // Fails only when traces are off (no layer), and then there is nothing to continue.
        let _ = span.set_parent(parent);
    }
}

/// Records a span whose times are known only now, as a child of `parent` (a context, e.g.
/// the current span's): `name`, from `start` to `end` (instants of this process).
pub fn timed_span(
    name: &'static str,
    parent: &Context,
    start: Instant,
    end: Instant,
    attributes: Vec<KeyValue>,
) {
    if !parent.span().span_context().is_valid() {
        return;
    }
    let tracer = opentelemetry::global::tracer(SCOPE);
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(wall_clock(start))
        .with_attributes(attributes)
        .start_with_context(&tracer, parent);
    span.end_with_timestamp(wall_clock(end));
}

/// The wall-clock time of `instant`, a moment of this process.
fn wall_clock(instant: Instant) -> SystemTime {
    let now = Instant::now();
    if instant <= now {
        SystemTime::now() - now.duration_since(instant)
    } else {
        SystemTime::now() + instant.duration_since(now)
    }
}

/// The current span's context, to parent [`timed_span`]s.
pub fn current_context() -> Context {
    tracing::Span::current().context()
}

/// AMQP headers read as a propagation carrier: string values only.
struct AmqpHeaders<'a>(&'a FieldTable);

impl Extractor for AmqpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

/// The fields a propagator writes, in order.
#[derive(Default)]
struct AmqpFields(Vec<(String, String)>);

impl Injector for AmqpFields {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceId;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_task_s_traceparent_header_is_its_parent() {
        let properties =
            BasicProperties::default().with_headers(crate::broker::headers::table([(
                "traceparent",
                crate::broker::headers::text(PARENT),
            )]));
        let context = from_amqp(&properties);
        let span = context.span();
        let parent = span.span_context();
        assert!(parent.is_remote());
        assert_eq!(
            parent.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert!(parent.is_sampled());
    }

    #[test]
    fn a_malformed_or_absent_traceparent_starts_no_trace() {
        let malformed = BasicProperties::default().with_headers(crate::broker::headers::table([(
            "traceparent",
            crate::broker::headers::text("00-nothex-00f067aa0ba902b7-01"),
        )]));
        assert!(!from_amqp(&malformed).span().span_context().is_valid());
        assert!(!from_amqp(&BasicProperties::default())
            .span()
            .span_context()
            .is_valid());
    }

    #[test]
    fn an_http_traceparent_is_read() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("traceparent", PARENT.parse().unwrap());
        let context = from_http(&headers);
        assert_eq!(
            context.span().span_context().span_id().to_string(),
            "00f067aa0ba902b7"
        );
    }

    #[test]
    fn nothing_is_written_outside_a_traced_span() {
        let properties = with_current_context(BasicProperties::default());
        assert!(properties.headers().is_none());
        assert_eq!(current_traceparent(), None);
    }

    #[test]
    fn instants_map_to_wall_clock_times_in_order() {
        let start = Instant::now();
        let end = start + Duration::from_millis(250);
        let elapsed = wall_clock(end).duration_since(wall_clock(start)).unwrap();
        assert!(elapsed >= Duration::from_millis(240) && elapsed <= Duration::from_millis(260));
    }
}
