//! Prometheus metrics (prometheus-client): what the worker counts and times. Names follow
//! Prometheus conventions (`warren_..._seconds`, `_total`); docs/src/operations/metrics.md documents each one.
//! This module only records and encodes; it does not serve HTTP.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use crate::engine::{Phase, StepSnapshot};

/// Labels of `warren_tasks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    /// `ok`, `retried`, `error` (final failure), `poison`, `abandoned`.
    outcome: String,
    /// The error code; empty for `ok` and `abandoned`.
    code: String,
}

/// Labels carrying an error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

/// Labels of `warren_kept_messages_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeptLabels {
    /// `undeliverable` or `unanswered_commit` (see [`Metrics::kept`]).
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

/// Timings and counts of one completed task.
pub struct Completion {
    /// From publish (AMQP timestamp) or receipt to the start of inference, in seconds.
    pub queue_wait: f64,
    /// From receipt to the first generated token, in seconds.
    pub time_to_first_token: f64,
    /// From receipt to the reply being ready, in seconds.
    pub total: f64,
    /// Generating, in seconds.
    pub generation: f64,
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
    /// A registry with every warren metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let latency = || Histogram::new(exponential_buckets(0.005, 2.0, 16));
        let m = Metrics {
            tasks: Family::default(),
            attempts: Counter::default(),
            dead_letters: Family::default(),
            kept: Family::default(),
            queue_wait: latency(),
            time_to_first_token: latency(),
            task_duration: latency(),
            generation_duration: latency(),
            tokens_per_second: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_group_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            prompt_tokens: Counter::default(),
            cached_prompt_tokens: Counter::default(),
            completion_tokens: Counter::default(),
            slots_busy: Gauge::default(),
            slots_total: Gauge::default(),
            tasks_waiting: Gauge::default(),
            kv_cells_used: Gauge::default(),
            kv_cells: Gauge::default(),
            reconnects: Counter::default(),
            in_flight: Gauge::default(),
            ready: Gauge::default(),
            broker_blocked: Gauge::default(),
            engine_steps: Counter::default(),
            engine_batch_tokens: Counter::default(),
            engine_step_seconds: Family::default(),
            engine_info: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "warren_tasks",
            "Tasks settled, by outcome (ok, retried, error, poison, abandoned) and error code",
            m.tasks.clone(),
        );
        registry.register(
            "warren_attempts",
            "Attempts started (runs of a task)",
            m.attempts.clone(),
        );
        registry.register(
            "warren_dead_letters",
            "Tasks published to the dead-letter exchange, by error code",
            m.dead_letters.clone(),
        );
        registry.register(
            "warren_kept_messages",
            "Messages a task owed kept in the results queue instead: undeliverable (the broker \
             could not deliver them at the commit) or unanswered_commit (their commit ended \
             without the broker's answer)",
            m.kept.clone(),
        );
        registry.register_with_unit(
            "warren_queue_wait",
            "Time from publish (AMQP timestamp, else receipt) to the start of inference",
            Unit::Seconds,
            m.queue_wait.clone(),
        );
        registry.register_with_unit(
            "warren_time_to_first_token",
            "Time from receipt by the worker to the first generated token",
            Unit::Seconds,
            m.time_to_first_token.clone(),
        );
        registry.register_with_unit(
            "warren_task_duration",
            "Time from receipt by the worker to the reply being ready (completed tasks)",
            Unit::Seconds,
            m.task_duration.clone(),
        );
        registry.register_with_unit(
            "warren_generation_duration",
            "Time spent generating tokens (completed tasks)",
            Unit::Seconds,
            m.generation_duration.clone(),
        );
        registry.register(
            "warren_generation_tokens_per_second",
            "Generation speed of each completed task",
            m.tokens_per_second.clone(),
        );
        registry.register(
            "warren_commit_group_size",
            "Deliveries settled in the same transaction as each settled delivery (group commit)",
            m.commit_group_size.clone(),
        );
        registry.register(
            "warren_prompt_tokens",
            "Tokens in prompts (those reused from the prefix cache included)",
            m.prompt_tokens.clone(),
        );
        registry.register(
            "warren_prompt_cached_tokens",
            "Prompt tokens whose KV cells were reused from an earlier task (not read again)",
            m.cached_prompt_tokens.clone(),
        );
        registry.register(
            "warren_completion_tokens",
            "Tokens generated",
            m.completion_tokens.clone(),
        );
        registry.register(
            "warren_slots_busy",
            "Inference slots holding a task",
            m.slots_busy.clone(),
        );
        registry.register(
            "warren_slots",
            "Inference slots of the engine",
            m.slots_total.clone(),
        );
        registry.register(
            "warren_reconnects",
            "Times the worker lost the broker and reconnected",
            m.reconnects.clone(),
        );
        registry.register(
            "warren_messages_in_flight",
            "Deliveries the worker holds unacked",
            m.in_flight.clone(),
        );
        registry.register(
            "warren_ready",
            "1 when the model is loaded and the worker consumes",
            m.ready.clone(),
        );
        registry.register(
            "warren_tasks_waiting",
            "Tasks handed to the engine that no slot has taken yet (running: warren_slots_busy)",
            m.tasks_waiting.clone(),
        );
        registry.register(
            "warren_kv_cells_used",
            "KV cache cells holding a token: running tasks' and those the prefix cache keeps",
            m.kv_cells_used.clone(),
        );
        registry.register(
            "warren_kv_cells",
            "KV cache cells of the engine (engine.slots x engine.context_size)",
            m.kv_cells.clone(),
        );
        registry.register(
            "warren_engine_info",
            "1 for the engine serving this worker: its backend (llama, or synthetic: no model) and the model replies name",
            m.engine_info.clone(),
        );
        registry.register(
            "warren_broker_blocked",
            "1 while RabbitMQ blocks this process's connection (a memory or disk alarm)",
            m.broker_blocked.clone(),
        );
        registry.register(
            "warren_engine_steps",
            "Decodes made by the engine's step loop",
            m.engine_steps.clone(),
        );
        registry.register(
            "warren_engine_batch_tokens",
            "Tokens in the engine's decode batches (next tokens and prompt tokens)",
            m.engine_batch_tokens.clone(),
        );
        registry.register_with_unit(
            "warren_engine_step",
            "Engine step time by phase: schedule and emit are warren's host work, decode and \
             sample llama.cpp's (sample includes waiting for a GPU's results)",
            Unit::Seconds,
            m.engine_step_seconds.clone(),
        );
        // Both reasons exist from the start at 0: an alert's increase() counts the first one.
        for reason in ["undeliverable", "unanswered_commit"] {
            m.kept.get_or_create(&KeptLabels { reason }).inc_by(0);
        }
        Metrics { registry, ..m }
    }

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

    /// A message a task owed was kept in the results queue, for `reason`: `undeliverable`
    /// (the broker refused or returned it at the commit) or `unanswered_commit` (its commit
    /// ended without the broker's answer).
    pub fn kept(&self, reason: &'static str) {
        self.kept.get_or_create(&KeptLabels { reason }).inc();
    }

    /// A task completed.
    pub fn completed(&self, c: &Completion) {
        self.queue_wait.observe(c.queue_wait);
        self.time_to_first_token.observe(c.time_to_first_token);
        self.task_duration.observe(c.total);
        self.generation_duration.observe(c.generation);
        if c.generation > 0.0 && c.completion_tokens > 0 {
            self.tokens_per_second
                .observe(f64::from(c.completion_tokens) / c.generation);
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

    /// A delivery was taken (`+1`) or settled (`-1`).
    pub fn in_flight(&self, change: i64) {
        self.in_flight.inc_by(change);
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
