//! `[limits]`, `[retry]`, `[stream]` and `[worker]`: what a task may ask for, how failures
//! are retried, how text is streamed, and how the worker runs. Each section checks its own
//! values (`validate`); rules that tie sections together live in [`super::Settings::validate`].

use serde::Deserialize;

use super::{check_amqp_name, invalid, ConfigError};

/// `[limits]`: what a single task may ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// `max_tokens` when the task gives none.
    pub default_max_tokens: u32,
    /// Highest `max_tokens` accepted.
    pub max_tokens_cap: u32,
    /// `timeout_ms` when the task gives none.
    pub default_timeout_ms: u64,
    /// Highest `timeout_ms` accepted.
    pub timeout_cap_ms: u64,
    /// Largest body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Oldest task (by AMQP timestamp) still run, in ms; 0 = no limit.
    pub max_age_ms: u64,
    /// Most stop sequences per task.
    pub max_stop_sequences: usize,
    /// Longest stop sequence, in bytes.
    pub max_stop_bytes: usize,
}

/// `[retry]`: how failed attempts are retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry, in ms.
    pub initial_delay_ms: u64,
    /// Growth of the delay from one retry to the next.
    pub multiplier: f64,
    /// Longest delay, in ms.
    pub max_delay_ms: u64,
    /// Random spread of each delay, as a fraction.
    pub jitter: f64,
    /// Whether timeouts are retried.
    pub retry_timeouts: bool,
    /// Prefix of the delay queues' names.
    pub queue_prefix: String,
}

/// `[stream]`: how streamed text is grouped into chunk messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// Pieces (about one per token) that fill a chunk.
    pub max_pieces_per_chunk: u32,
    /// Age of a chunk's first piece that sends it, in ms.
    pub max_chunk_delay_ms: u64,
}

/// `[worker]`: shutdown and poison-task handling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// How long tasks in flight may finish after a shutdown signal, in ms.
    pub shutdown_grace_ms: u64,
    /// Deliveries without an outcome before a task is dead-lettered as poison.
    pub max_redeliveries: u32,
    /// Testing only: honour fault-injection markers in prompts.
    pub fault_injection: bool,
    /// Redis recording finished task ids, so a redelivered finished task is not run or
    /// answered again; empty = off (at least once, as without it).
    pub redis_url: String,
    /// How long a finished mark is kept, in seconds.
    pub finished_ttl_s: u64,
}

impl LimitSettings {
    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_tokens_cap > 0 && self.default_max_tokens > self.max_tokens_cap {
            return Err(invalid(
                "limits.default_max_tokens",
                format!(
                    "must be at most limits.max_tokens_cap ({})",
                    self.max_tokens_cap
                ),
            ));
        }
        if self.timeout_cap_ms == 0 || self.timeout_cap_ms >= super::RABBITMQ_CONSUMER_TIMEOUT_MS {
            return Err(invalid(
                "limits.timeout_cap_ms",
                format!(
                    "must be between 1 and {} (below RabbitMQ's default consumer_timeout of 30 min)",
                    super::RABBITMQ_CONSUMER_TIMEOUT_MS - 1
                ),
            ));
        }
        if self.default_timeout_ms == 0 || self.default_timeout_ms > self.timeout_cap_ms {
            return Err(invalid(
                "limits.default_timeout_ms",
                format!(
                    "must be between 1 and limits.timeout_cap_ms ({})",
                    self.timeout_cap_ms
                ),
            ));
        }
        if self.max_body_bytes < 64 {
            return Err(invalid("limits.max_body_bytes", "must be at least 64"));
        }
        if self.max_stop_bytes == 0 {
            return Err(invalid("limits.max_stop_bytes", "must be at least 1"));
        }
        Ok(())
    }
}

impl RetrySettings {
    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 || self.max_attempts > 20 {
            return Err(invalid("retry.max_attempts", "must be between 1 and 20"));
        }
        if self.initial_delay_ms == 0 {
            return Err(invalid("retry.initial_delay_ms", "must be at least 1"));
        }
        if !(1.0..=100.0).contains(&self.multiplier) {
            return Err(invalid("retry.multiplier", "must be between 1.0 and 100.0"));
        }
        if self.max_delay_ms < self.initial_delay_ms {
            return Err(invalid(
                "retry.max_delay_ms",
                "must be at least retry.initial_delay_ms",
            ));
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            return Err(invalid("retry.jitter", "must be between 0.0 and 0.5"));
        }
        check_amqp_name("retry.queue_prefix", &self.queue_prefix)
    }
}

impl WorkerSettings {
    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_redeliveries == 0 {
            return Err(invalid("worker.max_redeliveries", "must be at least 1"));
        }
        if self.shutdown_grace_ms > 3_600_000 {
            return Err(invalid(
                "worker.shutdown_grace_ms",
                "must be at most one hour",
            ));
        }
        if !self.redis_url.is_empty() {
            super::check_redis_url("worker.redis_url", &self.redis_url)?;
        }
        if self.finished_ttl_s == 0 {
            return Err(invalid("worker.finished_ttl_s", "must be at least 1"));
        }
        Ok(())
    }
}

impl StreamSettings {
    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_pieces_per_chunk == 0 {
            return Err(invalid("stream.max_pieces_per_chunk", "must be at least 1"));
        }
        Ok(())
    }
}
