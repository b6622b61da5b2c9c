//! Telemetry: logs, metrics, health, traces.
//!
//! Logs: tracing-subscriber set up from `[log]` (pretty or JSON, on stderr so that stdout
//! stays free for command output), with `RUST_LOG` taking precedence over `log.level`. Task
//! text (prompts, completions) is never logged at info or above: it may be private.
//! [`metrics`] records; [`http`] serves `/metrics`, `/healthz` and `/readyz`; [`traces`]
//! exports spans and carries trace context across HTTP and AMQP.

pub mod http;
pub mod metrics;
pub mod traces;

use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::EnvFilter;

pub use metrics::{Completion, EngineState, KeptReason, Metrics};

/// What the worker reports about itself, shared with the health/metrics listener.
#[derive(Default)]
pub struct Telemetry {
    /// Ready to serve?
    pub readiness: Readiness,
    /// The metrics.
    pub metrics: Metrics,
    /// Whether RabbitMQ blocks the worker's connection (replies then wait to be committed).
    pub broker_blocked: BlockedWatch,
    engine: OnceLock<Watched>,
    steps: OnceLock<Arc<StepTimes>>,
    /// The step totals the metrics counted up to, at the last scrape.
    steps_counted: Mutex<StepSnapshot>,
}

impl Telemetry {
    /// Watches the engine once it is loaded: its live occupancy, how many slots and KV cells
    /// it has. Scrapes read them.
    pub fn watch_engine(&self, occupancy: Arc<Occupancy>, slots: usize, kv_cells: usize) {
        let _ = self.engine.set(Watched {
            occupancy,
            slots,
            kv_cells,
        });
    }

    /// Watches where the engine's steps spend their time.
    pub fn watch_steps(&self, times: Arc<StepTimes>) {
        let _ = self.steps.set(times);
    }

    /// The metrics text, with the engine's slots, steps and readiness read now.
    pub fn scrape(&self) -> String {
        let engine = self
            .engine
            .get()
            .map_or_else(EngineState::default, |watched| EngineState {
                slots_busy: watched.occupancy.busy(),
                slots: watched.slots,
                tasks_waiting: watched.occupancy.waiting(),
                kv_cells_used: watched.occupancy.kv_cells_used(),
                kv_cells: watched.kv_cells,
            });
        self.metrics
            .observe_state(&engine, self.readiness.is_ready());
        self.metrics
            .broker_blocked(self.broker_blocked.reason().is_some());
        if let Some(times) = self.steps.get() {
            // One scrape at a time adds what the engine did since the last one.
            let mut counted = self
                .steps_counted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = times.snapshot();
            self.metrics.engine_stepped(&now.since(&counted));
            *counted = now;
        }
        self.metrics.encode()
    }
}

use crate::broker::BlockedWatch;
use crate::config::{LogFormat, LogSettings};
use crate::engine::{Occupancy, StepSnapshot, StepTimes};

/// The engine as telemetry watches it.
struct Watched {
    occupancy: Arc<Occupancy>,
    slots: usize,
    kv_cells: usize,
}

/// Installs the global subscriber: the log, filtered by `[log]` or `RUST_LOG`, and the span
/// exporter of `traces` (filtered on its own). Safe to call more than once (later calls do
/// nothing).
pub fn init_logging(settings: &LogSettings, traces: Option<&traces::Traces>) {
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => crate::config::log_filter(&env),
        _ => settings.filter(),
    }
    .unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match settings.format {
        LogFormat::Json => log
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
    };
    // warren's own spans pass whatever the level: a warn line above `info` must still carry
    // its task's span (id, correlation id, attempt).
    let spans = tracing_subscriber::filter::filter_fn(|meta| {
        meta.is_span() && meta.target().starts_with("warren")
    });
    let _ = tracing_subscriber::registry()
        .with(log.with_filter(filter.or(spans)))
        .with(traces.map(traces::Traces::layer))
        .try_init();
}

/// Whether the worker is ready to serve: model loaded and consuming. Not ready while it
/// starts, reconnects or drains. Shared between the worker and whatever reports health.
#[derive(Debug, Default)]
pub struct Readiness(std::sync::atomic::AtomicBool);

impl Readiness {
    /// Marks the worker ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the worker is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}
