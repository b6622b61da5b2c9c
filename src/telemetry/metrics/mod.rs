//! Prometheus metrics (prometheus-client): what the worker counts and times. Names follow
//! Prometheus conventions (`warren_..._seconds`, `_total`); docs/src/operations/metrics.md documents each one.
//! This module only records and encodes; it does not serve HTTP. `register` names each metric.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::engine::{Phase, StepSnapshot};

mod register;

/// Labels of `warren_tasks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    /// `ok`, `retried`, `error` (final failure), `poison`, `abandoned`, `recounted`,
    /// `cancelled`, `duplicate`, `wake` (docs: operations/metrics.md).
    outcome: String,
    /// The error code; empty where there is none (`ok`, `abandoned`, ...).
    code: String,
}

/// Labels carrying an error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

/// Why a message a task owed was kept in the results queue (`warren_kept_messages_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeptReason {
    /// The broker refused or returned it at the commit (a reply whose `reply_to` queue is gone).
    Undeliverable,
    /// Its commit ended without the broker's answer.
    UnansweredCommit,
}

impl KeptReason {
    const ALL: [KeptReason; 2] = [KeptReason::Undeliverable, KeptReason::UnansweredCommit];

    /// The `reason` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            KeptReason::Undeliverable => "undeliverable",
            KeptReason::UnansweredCommit => "unanswered_commit",
        }
    }
}

/// Labels of `warren_kept_messages_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeptLabels {
    /// [`KeptReason::as_str`].
    reason: &'static str,
}

/// Labels of `warren_engine_step_seconds_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    /// `schedule`, `decode`, `sample`, `emit` (see [`crate::engine::Phase`]).
    phase: &'static str,
}

/// Labels of `warren_engine_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    /// `llama` or `synthetic`.
    backend: &'static str,
    /// The model replies name.
    model: String,
}

/// The engine's occupancy at a scrape (all zero before it is loaded).
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineState {
    /// Slots holding a task.
    pub slots_busy: usize,
    /// Slots in all.
    pub slots: usize,
    /// Tasks waiting for a slot inside the worker.
    pub tasks_waiting: usize,
    /// KV cells holding a token.
    pub kv_cells_used: usize,
    /// KV cells in all.
    pub kv_cells: usize,
}

/// Everything warren measures.
pub struct Metrics {
    registry: Registry,
    tasks: Family<TaskLabels, Counter>,
    attempts: Counter,
    dead_letters: Family<CodeLabels, Counter>,
    kept: Family<KeptLabels, Counter>,
    queue_wait: Histogram,
    time_to_first_token: Histogram,
    task_duration: Histogram,
    generation_duration: Histogram,
    tokens_per_second: Histogram,
    commit_group_size: Histogram,
    prompt_tokens: Counter,
    cached_prompt_tokens: Counter,
    completion_tokens: Counter,
    slots_busy: Gauge,
    slots_total: Gauge,
    tasks_waiting: Gauge,
    kv_cells_used: Gauge,
    kv_cells: Gauge,
    reconnects: Counter,
    in_flight: Gauge,
    ready: Gauge,
    broker_blocked: Gauge,
    engine_steps: Counter,
    engine_batch_tokens: Counter,
    engine_step_seconds: Family<PhaseLabels, Counter<f64, AtomicU64>>,
    engine_info: Family<EngineLabels, Gauge>,
}

/// A delivery being handled, counted in `warren_messages_in_flight` until dropped (a
/// handler aborted mid-task drops it too).
pub struct DeliveryInFlight<'a>(&'a Gauge);

impl Drop for DeliveryInFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Timings and counts of one completed task.
pub struct Completion {
    /// From publish (AMQP timestamp) or receipt to the start of inference, in seconds.
    pub queue_wait: f64,
    /// From receipt to the first generated token, in seconds (none for an embedding).
    pub time_to_first_token: Option<f64>,
    /// From receipt to the reply being ready, in seconds.
    pub total: f64,
    /// Generating, in seconds (none for an embedding).
    pub generation: Option<f64>,
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Of those, tokens reused from the prefix cache.
    pub cached_prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// A task settled with `outcome` (and `code` for failures).
    pub fn task_settled(&self, outcome: &str, code: &str) {
        self.tasks
            .get_or_create(&TaskLabels {
                outcome: outcome.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }

    /// A delivery was settled in a commit of `group` deliveries.
    pub fn committed_with(&self, group: usize) {
        self.commit_group_size.observe(group as f64);
    }

    /// An attempt started running.
    pub fn attempt_started(&self) {
        self.attempts.inc();
    }

    /// A task was dead-lettered with `code`.
    pub fn dead_lettered(&self, code: &str) {
        self.dead_letters
            .get_or_create(&CodeLabels {
                code: code.to_owned(),
            })
            .inc();
    }

    /// A message a task owed was kept in the results queue, for `reason`.
    pub fn kept(&self, reason: KeptReason) {
        self.kept
            .get_or_create(&KeptLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A task completed.
    pub fn completed(&self, c: &Completion) {
        self.queue_wait.observe(c.queue_wait);
        self.task_duration.observe(c.total);
        if let Some(seconds) = c.time_to_first_token {
            self.time_to_first_token.observe(seconds);
        }
        if let Some(generation) = c.generation {
            self.generation_duration.observe(generation);
            if generation > 0.0 && c.completion_tokens > 0 {
                self.tokens_per_second
                    .observe(f64::from(c.completion_tokens) / generation);
            }
        }
        self.prompt_tokens.inc_by(u64::from(c.prompt_tokens));
        self.cached_prompt_tokens
            .inc_by(u64::from(c.cached_prompt_tokens));
        self.completion_tokens
            .inc_by(u64::from(c.completion_tokens));
    }

    /// The worker reconnected to the broker.
    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// A delivery was taken: `warren_messages_in_flight` counts it until the guard drops.
    pub fn delivery_taken(&self) -> DeliveryInFlight<'_> {
        self.in_flight.inc();
        DeliveryInFlight(&self.in_flight)
    }

    /// Which engine serves the worker (`warren_engine_info`).
    pub fn engine_loaded(&self, backend: &'static str, model: &str) {
        let labels = EngineLabels {
            backend,
            model: model.to_owned(),
        };
        self.engine_info.get_or_create(&labels).set(1);
    }

    /// Whether RabbitMQ blocks the connection now.
    pub fn broker_blocked(&self, blocked: bool) {
        self.broker_blocked.set(i64::from(blocked));
    }

    /// What the engine's steps did since the last call.
    pub fn engine_stepped(&self, delta: &StepSnapshot) {
        self.engine_steps.inc_by(delta.steps);
        self.engine_batch_tokens.inc_by(delta.batch_tokens);
        for phase in Phase::ALL {
            self.engine_step_seconds
                .get_or_create(&PhaseLabels {
                    phase: phase.name(),
                })
                .inc_by(delta.time(phase).as_secs_f64());
        }
    }

    /// The engine's occupancy and readiness, read when metrics are scraped.
    pub fn observe_state(&self, engine: &EngineState, ready: bool) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.slots_busy.set(gauge(engine.slots_busy));
        self.slots_total.set(gauge(engine.slots));
        self.tasks_waiting.set(gauge(engine.tasks_waiting));
        self.kv_cells_used.set(gauge(engine.kv_cells_used));
        self.kv_cells.set(gauge(engine.kv_cells));
        self.ready.set(i64::from(ready));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kept_reasons_exist_at_zero_and_count_apart() {
        let metrics = Metrics::new();
        for reason in KeptReason::ALL {
            let series = format!(
                "warren_kept_messages_total{{reason=\"{}\"}} 0\n",
                reason.as_str()
            );
            assert!(metrics.encode().contains(&series), "{series}");
        }
        metrics.kept(KeptReason::Undeliverable);
        let text = metrics.encode();
        assert!(text.contains("warren_kept_messages_total{reason=\"undeliverable\"} 1\n"));
        assert!(text.contains("warren_kept_messages_total{reason=\"unanswered_commit\"} 0\n"));
    }

    #[test]
    fn every_dead_letter_code_exists_at_zero_before_the_first_letter() {
        let metrics = Metrics::new();
        metrics.dead_lettered("invalid_request");
        let text = metrics.encode();
        assert!(text.contains("warren_dead_letters_total{code=\"invalid_request\"} 1\n"));
        assert!(text.contains("warren_dead_letters_total{code=\"prompt_too_long\"} 0\n"));
        assert!(text.contains("warren_dead_letters_total{code=\"cancelled\"} 0\n"));
    }
}
