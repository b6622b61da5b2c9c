//! Registering every warren metric: its name, help text and buckets, all at zero.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::{CodeLabels, KeptLabels, KeptReason, Metrics};

impl Metrics {
    /// A registry with every warren metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        // From 5 ms, doubling: 18 buckets reach past limits.timeout_cap_ms (10 minutes), the
        // longest a task may run; a queue wait (the batch tier's may be hours) gets 24 (about
        // 12 hours).
        let latency = || Histogram::new(exponential_buckets(0.005, 2.0, 18));
        let m = Metrics {
            tasks: Family::default(),
            attempts: Counter::default(),
            dead_letters: Family::default(),
            kept: Family::default(),
            queue_wait: Histogram::new(exponential_buckets(0.005, 2.0, 24)),
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
            "Tasks settled, by outcome (ok, retried, error, poison, abandoned, recounted, \
             cancelled, duplicate, wake) and error code",
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
            "Time from publish (x-warren-published-us, else the AMQP timestamp, else receipt) \
             to the start of inference",
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
        // Every code and both reasons exist from the start at 0: an alert's increase() counts
        // the first one.
        for code in crate::protocol::ErrorCode::ALL {
            m.dead_letters
                .get_or_create(&CodeLabels {
                    code: code.as_str().to_owned(),
                })
                .inc_by(0);
        }
        for reason in KeptReason::ALL {
            m.kept
                .get_or_create(&KeptLabels {
                    reason: reason.as_str(),
                })
                .inc_by(0);
        }
        Metrics { registry, ..m }
    }
}
