//! The sections of the settings, one type each, and the checks that concern one section
//! alone (`validate`). Rules that tie sections together live in [`super::Settings::validate`].

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{check_amqp_name, invalid, ConfigError};

/// `[broker]`: how to reach RabbitMQ and how much work to take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// AMQP URL; may contain credentials, so it is kept secret (never logged).
    pub url: SecretString,
    /// Read the URL from this file when not empty.
    pub url_file: String,
    /// basic.qos prefetch count; 0 = engine.slots + prefetch_extra.
    pub prefetch: u16,
    /// Headroom over the slots when `prefetch` is 0.
    pub prefetch_extra: u16,
    /// Base of the connection name shown in the management UI.
    pub connection_name: String,
    /// First delay between reconnection tries, in ms.
    pub reconnect_initial_ms: u64,
    /// Longest delay between reconnection tries, in ms.
    pub reconnect_max_ms: u64,
}

/// Whether the requests queue is a quorum or a classic queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Replicated queue with a delivery limit (recommended).
    Quorum,
    /// Single-node queue; supports priorities.
    Classic,
}

impl QueueType {
    /// The value of the `x-queue-type` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

/// `[topology]`: names and arguments of what warren declares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySettings {
    /// Queue the workers consume tasks from.
    pub requests_queue: String,
    /// Type of the requests queue.
    pub queue_type: QueueType,
    /// Quorum only: deliveries before the broker dead-letters a task.
    pub delivery_limit: u32,
    /// Bound on the requests backlog; 0 = unbounded.
    pub max_length: u32,
    /// Classic only: highest priority honoured; 0 = none.
    pub max_priority: u8,
    /// Fanout exchange receiving dead letters.
    pub dead_letter_exchange: String,
    /// Queue bound to the dead-letter exchange.
    pub dead_letter_queue: String,
    /// Queue for replies to tasks without `reply_to`, and for unroutable replies.
    pub results_queue: String,
    /// Type of the queues that hold messages for later: dead letters, results, retry delays
    /// (and the gateway's results queue). Quorum in a cluster, so losing one node loses none.
    pub parking_queue_type: QueueType,
    /// Fanout exchange of control messages (cancel) that every worker listens on.
    pub control_exchange: String,
    /// Direct exchange routing tasks by model name; empty = one model, no routing.
    pub tasks_exchange: String,
}

/// `[engine]`: the model and llama.cpp's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// GGUF file to load.
    pub model_path: PathBuf,
    /// Model name reported in replies; empty = from the GGUF.
    pub model_name: String,
    /// Layers offloaded to a GPU.
    pub n_gpu_layers: u32,
    /// Context size per task, in tokens.
    pub context_size: u32,
    /// Decoding threads; 0 = number of cores.
    pub threads: u32,
    /// Tokens per llama.cpp batch; 0 = chosen by where the model runs (see
    /// [`EngineSettings::effective_batch_size`]).
    pub batch_size: u32,
    /// Tasks in inference at once.
    pub slots: u32,
    /// Full-context KV cache for sliding-window layers (always, when `prefix_cache` is on).
    pub swa_full: bool,
    /// Keep each slot's KV cells after its task and reuse the longest shared prompt prefix.
    pub prefix_cache: bool,
    /// Flash attention: auto, on or off.
    pub flash_attention: FlashAttention,
    /// Element type of the KV cache (keys and values).
    pub kv_cache_type: KvCacheType,
    /// Where next tokens are chosen: in the decode graph (on the GPU) or on the host.
    pub device_sampling: DeviceSampling,
    /// One KV cache shared by every slot (llama.cpp's `kv_unified`), instead of one stream
    /// per slot (the default).
    pub kv_unified: bool,
    /// llama.cpp built-in chat template used when the GGUF has none.
    pub chat_template: String,
}

impl EngineSettings {
    /// Threads to give llama.cpp: the configured number, or the number of cores.
    pub fn effective_threads(&self) -> i32 {
        let threads = if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
        } else {
            self.threads
        };
        i32::try_from(threads).unwrap_or(i32::MAX)
    }

    /// Batch size when `batch_size` is 0: 128 on a CPU (prompts read nearly as fast as with
    /// larger batches, and llama.cpp's per-token output buffers stay small), 512 with layers
    /// on a GPU, where a larger batch reads prompts faster at no cost to generation.
    pub fn effective_batch_size(&self) -> u32 {
        match self.batch_size {
            0 if self.n_gpu_layers > 0 => 512,
            0 => 128,
            configured => configured,
        }
    }

    /// Whether next tokens are chosen on the device (see `engine.device_sampling`): `auto`
    /// means where layers are offloaded to a GPU.
    pub fn samples_on_device(&self) -> bool {
        match self.device_sampling {
            DeviceSampling::Auto => self.n_gpu_layers > 0,
            DeviceSampling::On => true,
            DeviceSampling::Off => false,
        }
    }
}

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

/// Whether llama.cpp uses its flash-attention kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttention {
    /// llama.cpp decides (on where the backend supports it).
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// Where a task's next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceSampling {
    /// On the device where layers are offloaded to a GPU, else on the host.
    Auto,
    /// In llama.cpp's decode graph, whatever the backend (on a CPU too).
    On,
    /// On the host, from the logits llama.cpp copies back.
    Off,
}

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvCacheType {
    /// 16-bit floats (llama.cpp's default).
    F16,
    /// bfloat16.
    Bf16,
    /// 32-bit floats (twice the memory).
    F32,
    /// 8-bit quantized: half the memory of f16, a small quality cost.
    Q8_0,
}

/// `[sampling]`: defaults for sampling parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSettings {
    /// top_k used when sampling and the task gives none; 0 = off.
    pub default_top_k: u32,
}

impl BrokerSettings {
    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let urls = super::broker_urls(self.url.expose_secret());
        if urls.is_empty() {
            return Err(invalid("broker.url", "must hold at least one URL"));
        }
        for raw in urls {
            let url = url::Url::parse(raw)
                .map_err(|e| invalid("broker.url", format!("is not a valid URL: {e}")))?;
            if !matches!(url.scheme(), "amqp" | "amqps") {
                return Err(invalid("broker.url", "must start with amqp:// or amqps://"));
            }
        }
        if self.connection_name.trim().is_empty() {
            return Err(invalid("broker.connection_name", "must not be empty"));
        }
        if self.reconnect_initial_ms == 0 {
            return Err(invalid("broker.reconnect_initial_ms", "must be at least 1"));
        }
        if self.reconnect_max_ms < self.reconnect_initial_ms {
            return Err(invalid(
                "broker.reconnect_max_ms",
                "must be at least broker.reconnect_initial_ms",
            ));
        }
        Ok(())
    }
}

impl TopologySettings {
    /// Whether tasks are routed by model through `tasks_exchange`.
    pub fn routes_by_model(&self) -> bool {
        !self.tasks_exchange.is_empty()
    }

    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (key, name) in [
            ("topology.requests_queue", &self.requests_queue),
            ("topology.dead_letter_exchange", &self.dead_letter_exchange),
            ("topology.dead_letter_queue", &self.dead_letter_queue),
            ("topology.results_queue", &self.results_queue),
            ("topology.control_exchange", &self.control_exchange),
        ] {
            check_amqp_name(key, name)?;
        }
        if self.routes_by_model() {
            check_amqp_name("topology.tasks_exchange", &self.tasks_exchange)?;
        }
        if self.queue_type == QueueType::Quorum && self.max_priority > 0 {
            return Err(invalid(
                "topology.max_priority",
                "needs queue_type = \"classic\": quorum queues on RabbitMQ 3.10 have no priorities",
            ));
        }
        if self.queue_type == QueueType::Quorum && self.delivery_limit == 0 {
            return Err(invalid(
                "topology.delivery_limit",
                "must be at least 1 for a quorum queue (it stops poison tasks from looping)",
            ));
        }
        Ok(())
    }
}

impl EngineSettings {
    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.model_path.as_os_str().is_empty() {
            return Err(invalid("engine.model_path", "must not be empty"));
        }
        if self.context_size < 16 {
            return Err(invalid("engine.context_size", "must be at least 16 tokens"));
        }
        if self.slots == 0 || self.slots > 64 {
            return Err(invalid("engine.slots", "must be between 1 and 64"));
        }
        if self.threads > 1024 {
            return Err(invalid("engine.threads", "must be at most 1024"));
        }
        if self.kv_cache_type == KvCacheType::Q8_0 && self.flash_attention == FlashAttention::Off {
            return Err(invalid(
                "engine.kv_cache_type",
                "q8_0 needs flash attention (engine.flash_attention = \"auto\" or \"on\"): llama.cpp quantizes the V cache only with it",
            ));
        }
        Ok(())
    }
}

impl LimitSettings {
    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_tokens_cap == 0 {
            return Err(invalid("limits.max_tokens_cap", "must be at least 1"));
        }
        if self.default_max_tokens == 0 || self.default_max_tokens > self.max_tokens_cap {
            return Err(invalid(
                "limits.default_max_tokens",
                format!(
                    "must be between 1 and limits.max_tokens_cap ({})",
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
