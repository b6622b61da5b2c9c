//! The gateway's Prometheus metrics: requests by route and status, latency by route, requests
//! in flight, server-sent-event streams open, webhooks, and the batches this replica runs.
//! Records and encodes only.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// What the gateway measures.
pub struct GatewayMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
    in_flight: Gauge,
    streams_open: Gauge,
    cancels: Counter,
    webhook_attempts: Family<ResultLabels, Counter>,
    batches_running: Gauge,
    batch_tasks: Counter,
    batches_ended: Family<StatusLabels, Counter>,
    broker_blocked: Gauge,
    queue_messages: Family<QueueLabels, Gauge>,
    queue_consumers: Family<QueueLabels, Gauge>,
    key_requests: Family<KeyLabels, Counter>,
    rate_limit_fallbacks: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 1 ms doubling to about 524 s: above a 300 s request timeout.
            Histogram::new(exponential_buckets(0.001, 2.0, 20))
        });
        let in_flight = Gauge::default();
        let streams_open = Gauge::default();
        let cancels = Counter::default();
        let webhook_attempts = Family::<ResultLabels, Counter>::default();
        // Both series exist from the start: increase() over a series misses its first sample,
        // so an alert on failures would miss the first one.
        for result in ["delivered", "failed"] {
            webhook_attempts
                .get_or_create(&ResultLabels {
                    result: result.into(),
                })
                .inc_by(0);
        }
        registry.register(
            "warren_gateway_webhook_attempts",
            "Webhook delivery attempts, by result (delivered, failed)",
            webhook_attempts.clone(),
        );
        registry.register(
            "warren_gateway_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "warren_gateway_request_duration",
            "Time from request to the start of its response (for a stream: its first byte), by route",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "warren_gateway_requests_in_flight",
            "Requests being served now",
            in_flight.clone(),
        );
        registry.register(
            "warren_gateway_sse_streams_open",
            "Server-sent-event streams open now",
            streams_open.clone(),
        );
        registry.register(
            "warren_gateway_cancels",
            "Tasks cancelled because their caller left or timed out",
            cancels.clone(),
        );
        let batches_running = Gauge::default();
        let batch_tasks = Counter::default();
        let batches_ended = Family::<StatusLabels, Counter>::default();
        registry.register(
            "warren_gateway_batches_running",
            "Batches this replica is running now",
            batches_running.clone(),
        );
        registry.register(
            "warren_gateway_batch_tasks_published",
            "Tasks published for batch requests by this replica",
            batch_tasks.clone(),
        );
        registry.register(
            "warren_gateway_batches_ended",
            "Batches this replica ended, by final status",
            batches_ended.clone(),
        );
        let queue_messages = Family::<QueueLabels, Gauge>::default();
        let queue_consumers = Family::<QueueLabels, Gauge>::default();
        let key_requests = Family::<KeyLabels, Counter>::default();
        registry.register(
            "warren_queue_messages",
            "Tasks ready in a task queue (requests, per model, embeddings), as a passive declare saw it",
            queue_messages.clone(),
        );
        registry.register(
            "warren_queue_consumers",
            "Consumers (workers) of a task queue, as a passive declare saw it",
            queue_consumers.clone(),
        );
        registry.register(
            "warren_gateway_key_requests",
            "HTTP requests answered, by API key name (key-<hash prefix>, never the key; anonymous, invalid) and status",
            key_requests.clone(),
        );
        let rate_limit_fallbacks = Counter::default();
        registry.register(
            "warren_gateway_rate_limit_fallbacks",
            "Requests this replica's own rate-limit buckets decided because Redis (the fleet's buckets) was unavailable",
            rate_limit_fallbacks.clone(),
        );
        let broker_blocked = Gauge::default();
        registry.register(
            "warren_broker_blocked",
            "1 while RabbitMQ blocks this process's connection (a memory or disk alarm)",
            broker_blocked.clone(),
        );
        GatewayMetrics {
            rate_limit_fallbacks,
            queue_messages,
            queue_consumers,
            key_requests,
            broker_blocked,
            batches_running,
            batch_tasks,
            batches_ended,
            registry,
            requests,
            duration,
            in_flight,
            streams_open,
            cancels,
            webhook_attempts,
        }
    }
}

impl GatewayMetrics {
    /// The counter of requests the replica's own rate-limit buckets decided (Redis down),
    /// for [`crate::gateway::admission::Admission::counting_fallbacks`].
    pub fn rate_limit_fallbacks(&self) -> Counter {
        self.rate_limit_fallbacks.clone()
    }

    /// What a passive declare of `queue` saw; `None` when the queue does not exist (its series
    /// then reads 0 messages and 0 consumers).
    pub fn queue_depth(&self, queue: &str, seen: Option<(u32, u32)>) {
        let labels = QueueLabels {
            queue: queue.to_owned(),
        };
        let (messages, consumers) = seen.unwrap_or((0, 0));
        self.queue_messages
            .get_or_create(&labels)
            .set(i64::from(messages));
        self.queue_consumers
            .get_or_create(&labels)
            .set(i64::from(consumers));
    }

    /// A request by the key named `key` ended with `status`.
    pub fn answered_for(&self, key: &str, status: u16) {
        self.key_requests
            .get_or_create(&KeyLabels {
                key: key.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    /// A request on `route` ended with `status` after `seconds`.
    pub fn answered(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// A request on `route` by the key named `key` began: counted in flight until the guard
    /// drops, and answered with the status given to [`RequestInFlight::answered`].
    pub fn request_started(self: &Arc<Self>, route: String, key: String) -> RequestInFlight {
        self.in_flight.inc();
        RequestInFlight {
            metrics: self.clone(),
            route,
            key,
            started: Instant::now(),
            status: None,
        }
    }

    /// A server-sent-event stream opened: counted open until the guard drops.
    pub fn stream_opened(self: &Arc<Self>) -> StreamOpen {
        self.streams_open.inc();
        StreamOpen(self.clone())
    }

    /// A task was cancelled for its caller.
    pub fn cancelled(&self) {
        self.cancels.inc();
    }

    /// A webhook delivery attempt ended.
    pub fn webhook_attempt(&self, delivered: bool) {
        let result = if delivered { "delivered" } else { "failed" };
        self.webhook_attempts
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Batches run by this replica go up (1) or down (-1).
    pub fn batches_running(&self, delta: i64) {
        self.batches_running.inc_by(delta);
    }

    /// A batch request was published as a task.
    pub fn batch_task_published(&self) {
        self.batch_tasks.inc();
    }

    /// A batch ended in `status`.
    pub fn batch_ended(&self, status: &str) {
        self.batches_ended
            .get_or_create(&StatusLabels {
                status: status.to_owned(),
            })
            .inc();
    }

    /// Whether RabbitMQ blocks the gateway's connection now (read when scraped).
    pub fn broker_blocked(&self, blocked: bool) {
        self.broker_blocked.set(i64::from(blocked));
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The status a request counts with when its handler was dropped before answering: its
/// caller left (nginx's "client closed request").
pub const CALLER_LEFT: u16 = 499;

/// A request being handled (`warren_gateway_requests_in_flight`). Dropped without an answer
/// (its caller left, so its handler was dropped), it counts as [`CALLER_LEFT`].
pub struct RequestInFlight {
    metrics: Arc<GatewayMetrics>,
    route: String,
    key: String,
    started: Instant,
    status: Option<u16>,
}

impl RequestInFlight {
    /// The response began with `status`.
    pub fn answered(mut self, status: u16) {
        self.status = Some(status);
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let metrics = &self.metrics;
        let status = self.status.unwrap_or(CALLER_LEFT);
        metrics.in_flight.dec();
        metrics.answered_for(&self.key, status);
        metrics.answered(&self.route, status, self.started.elapsed().as_secs_f64());
    }
}

/// An open server-sent-event stream (`warren_gateway_sse_streams_open`).
pub struct StreamOpen(Arc<GatewayMetrics>);

impl Drop for StreamOpen {
    fn drop(&mut self) {
        self.0.streams_open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_results_are_exported_before_the_first_attempt() {
        let text = GatewayMetrics::default().encode();
        for result in ["delivered", "failed"] {
            let series = format!("warren_gateway_webhook_attempts_total{{result=\"{result}\"}} 0");
            assert!(text.contains(&series), "{series} missing from:\n{text}");
        }
    }
}
