//! Configuration: typed settings loaded in layers and validated once at start.
//!
//! Owns the `Settings` tree, its layering (built-in `config/default.toml` → optional file →
//! `WARREN__SECTION__KEY` environment variables) and the checks that make a bad value fail
//! at start with the key's name. It must not connect to anything or load the model: other
//! modules receive already-valid settings.

use std::path::{Path, PathBuf};

mod broker;
mod engine;
mod gateway;
mod observability;
mod worker;

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use broker::{shard_queue, BrokerSettings, QueueType, TopologySettings, MAX_SHARDS};
pub use engine::{
    DeviceSampling, EngineBackend, EngineRole, EngineSettings, FlashAttention, KvCacheType,
    Pooling, SamplingSettings, SyntheticSettings,
};
pub use gateway::GatewaySettings;
pub use observability::{log_filter, LogFormat, LogSettings, MetricsSettings, TraceSettings};
pub use worker::{LimitSettings, RetrySettings, StreamSettings, WorkerSettings};

/// The defaults, compiled in so that the binary runs from any directory.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../config/default.toml");

/// Environment variable naming an optional configuration file.
pub const CONFIG_FILE_ENV: &str = "WARREN_CONFIG";

/// RabbitMQ closes a channel whose delivery stays unacked longer than its `consumer_timeout`
/// (30 minutes by default); every attempt must end well before that.
pub const RABBITMQ_CONSUMER_TIMEOUT_MS: u64 = 30 * 60 * 1000;

/// A configuration that cannot be used. The message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layers could not be read or did not match the settings' types.
    #[error("configuration could not be loaded: {0}")]
    Load(#[from] config::ConfigError),
    /// A value has the right type but is not acceptable.
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid {
        /// Dotted key, e.g. `broker.prefetch`.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// All of warren's settings. See `config/default.toml` for what each one means.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Connection to RabbitMQ and consumption settings.
    pub broker: BrokerSettings,
    /// Names and arguments of the queues and exchanges warren declares.
    pub topology: TopologySettings,
    /// The llama.cpp engine and its model.
    pub engine: EngineSettings,
    /// Bounds on what a task may ask for.
    pub limits: LimitSettings,
    /// The retry policy.
    pub retry: RetrySettings,
    /// Shutdown and poison-task handling.
    pub worker: WorkerSettings,
    /// Streaming of chunks.
    pub stream: StreamSettings,
    /// Sampling defaults.
    pub sampling: SamplingSettings,
    /// The health and metrics listener.
    pub metrics: MetricsSettings,
    /// Logging.
    pub log: LogSettings,
    /// OpenTelemetry traces.
    pub trace: TraceSettings,
    /// The OpenAI-compatible HTTP gateway (`warren gateway`).
    pub gateway: GatewaySettings,
}

impl Settings {
    /// The bounds and defaults a task is validated against (`[limits]` and `[sampling]`).
    pub fn task_limits(&self) -> crate::protocol::Limits {
        let l = &self.limits;
        crate::protocol::Limits {
            max_body_bytes: l.max_body_bytes,
            default_max_tokens: l.default_max_tokens,
            max_tokens_cap: l.max_tokens_cap,
            default_timeout_ms: l.default_timeout_ms,
            timeout_cap_ms: l.timeout_cap_ms,
            max_stop_sequences: l.max_stop_sequences,
            max_stop_bytes: l.max_stop_bytes,
            default_top_k: self.sampling.default_top_k,
        }
    }

    /// Loads the layers: built-in defaults, then `file` (or the file named by `WARREN_CONFIG`),
    /// then `WARREN__SECTION__KEY` environment variables; then validates.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env_file = std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from);
        let file = file.map(Path::to_path_buf).or(env_file);
        Self::load_from(file.as_deref(), Environment::with_prefix("WARREN"))
    }

    /// Like [`Settings::load`] with an explicit environment source (tests use a fake one).
    pub fn load_from(file: Option<&Path>, env: Environment) -> Result<Settings, ConfigError> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_CONFIG_TOML, FileFormat::Toml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(invalid(
                    "--config",
                    format!("names {}, which is not a readable file", path.display()),
                ));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        // No `try_parsing`: it would read a numeric-looking string (an API key of digits)
        // as a number and write it back without its leading zeros; numbers and booleans
        // are read from the strings where the settings ask for them.
        let env = env.prefix_separator("__").separator("__");
        let mut settings: Settings = builder.add_source(env).build()?.try_deserialize()?;
        settings.resolve_url_file()?;
        settings.validate()?;
        settings.serve_role();
        settings.route_by_model();
        Ok(settings)
    }

    /// An embed worker consumes the embeddings queue, and retries through delay queues of
    /// its own (`<retry.queue_prefix>.embed.*`) whose TTL sends tasks back there.
    fn serve_role(&mut self) {
        if self.engine.role == EngineRole::Embed {
            self.topology.requests_queue = self.topology.embeddings_queue.clone();
            self.retry.queue_prefix = format!("{}.embed", self.retry.queue_prefix);
        }
    }

    /// With `topology.tasks_exchange` set and `engine.model_name` given, this process serves
    /// (or inspects) that model: its requests queue and its retry delay queues carry the
    /// model's name, so that each model's tasks and retries stay in their own queues.
    fn route_by_model(&mut self) {
        let Some(model) = self.routed_model().map(str::to_owned) else {
            return;
        };
        self.topology.requests_queue = self.topology.model_queue(&model);
        self.retry.queue_prefix = format!("{}.{model}", self.retry.queue_prefix);
    }

    /// The settings of the batch tier's queues: the requests queue's name and the retry
    /// delay queues' prefix carry [`crate::protocol::BATCH_SUFFIX`]. `None` for an embed
    /// worker: embedding tasks have one tier.
    pub fn batch_tier(&self) -> Option<Settings> {
        (self.engine.role == EngineRole::Generate).then(|| {
            let mut batch = self.clone();
            let suffix = crate::protocol::BATCH_SUFFIX;
            batch.topology.requests_queue.push_str(suffix);
            batch.retry.queue_prefix.push_str(suffix);
            batch
        })
    }

    /// The model a worker serves under routing by model, if routing is on.
    pub fn routed_model(&self) -> Option<&str> {
        (self.topology.routes_by_model() && !self.engine.model_name.is_empty())
            .then_some(self.engine.model_name.as_str())
    }

    fn resolve_url_file(&mut self) -> Result<(), ConfigError> {
        if self.broker.url_file.is_empty() {
            return Ok(());
        }
        let url = std::fs::read_to_string(&self.broker.url_file).map_err(|e| {
            invalid(
                "broker.url_file",
                format!("cannot be read ({}): {e}", self.broker.url_file),
            )
        })?;
        self.broker.url = SecretString::from(url.trim().to_owned());
        Ok(())
    }

    /// Checks every value that its type alone does not constrain: each section's own rules,
    /// then those that tie sections together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.broker.validate()?;
        self.topology.validate()?;
        self.engine.validate()?;
        self.limits.validate()?;
        self.retry.validate()?;
        self.worker.validate()?;
        self.stream.validate()?;
        self.metrics.validate()?;
        self.log.validate()?;
        self.trace.validate()?;
        self.gateway.validate()?;
        if self.engine.role == EngineRole::Embed && self.topology.routes_by_model() {
            return Err(invalid(
                "engine.role",
                "\"embed\" does not work with topology.tasks_exchange yet: embedding tasks are not routed by model (leave tasks_exchange empty for embed workers)",
            ));
        }
        if self.topology.embeddings_queue == self.topology.requests_queue {
            return Err(invalid(
                "topology.embeddings_queue",
                "must differ from topology.requests_queue: a generating worker would take embedding tasks",
            ));
        }
        let (t, w) = (&self.topology, &self.worker);
        if t.queue_type == QueueType::Quorum && w.max_redeliveries >= t.delivery_limit {
            return Err(invalid(
                "worker.max_redeliveries",
                format!(
                    "must be below topology.delivery_limit ({}), so that warren answers a poison task before the broker drops it into the dead-letter queue silently",
                    t.delivery_limit
                ),
            ));
        }
        if self.routed_model().is_some() {
            // The model's name is a routing key and part of queue names.
            check_amqp_name("engine.model_name", &self.engine.model_name)?;
            check_not_batch_named("engine.model_name", &self.engine.model_name)?;
        }
        if self.topology.routes_by_model() {
            for model in self.gateway.served_models() {
                check_not_batch_named("gateway.models", &model)?;
            }
        }
        if self.gateway.request_timeout_ms > self.limits.timeout_cap_ms {
            return Err(invalid(
                "gateway.request_timeout_ms",
                format!(
                    "must be at most limits.timeout_cap_ms ({}): a task must not run longer than its caller waits",
                    self.limits.timeout_cap_ms
                ),
            ));
        }
        Ok(())
    }

    /// The built-in defaults alone (no file, no environment), for unit tests.
    #[cfg(test)]
    pub(crate) fn defaults() -> Settings {
        Self::load_from(None, Environment::with_prefix("WARREN_UNIT_TEST_NO_ENV"))
            .expect("the built-in defaults are valid")
    }

    /// The prefetch the worker asks for: `broker.prefetch`, or when it is 0,
    /// `engine.slots + broker.prefetch_extra`.
    pub fn effective_prefetch(&self) -> u16 {
        if self.broker.prefetch > 0 {
            self.broker.prefetch
        } else {
            u16::try_from(self.engine.slots)
                .unwrap_or(u16::MAX)
                .saturating_add(self.broker.prefetch_extra)
        }
    }

    /// The prefetch of each of the worker's `consumers` (one per queue it consumes: more
    /// than one with shards): [`Settings::effective_prefetch`] shared out, rounded up, at
    /// least 1 each, so that the worker holds about what it would from one queue.
    pub fn consumer_prefetch(&self, consumers: usize) -> u16 {
        let consumers = u16::try_from(consumers.max(1)).unwrap_or(u16::MAX);
        self.effective_prefetch().div_ceil(consumers).max(1)
    }

    /// The broker URL with any password replaced by `***`, safe to log.
    pub fn redacted_broker_url(&self) -> String {
        broker_urls(self.broker.url.expose_secret())
            .into_iter()
            .map(redact_url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn check_redis_url(key: &'static str, raw: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(raw).map_err(|e| invalid(key, format!("is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(invalid(key, "must start with redis:// or rediss://"));
    }
    Ok(())
}

fn check_amqp_name(key: &'static str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 255 {
        return Err(invalid(key, "must be 1 to 255 bytes long"));
    }
    if name.starts_with("amq.") {
        return Err(invalid(
            key,
            "must not start with `amq.` (reserved by RabbitMQ)",
        ));
    }
    Ok(())
}

/// Under routing by model, a model's batch tier is routed with its name plus
/// [`crate::protocol::BATCH_SUFFIX`]: a model named so would take another's batch tasks.
fn check_not_batch_named(key: &'static str, model: &str) -> Result<(), ConfigError> {
    if format!(".{model}").ends_with(crate::protocol::BATCH_SUFFIX) {
        return Err(invalid(
            key,
            format!(
                "names the model `{model}`, whose name ends in `{}`: that is the routing key of another model's batch tier",
                crate::protocol::BATCH_SUFFIX
            ),
        ));
    }
    Ok(())
}

/// The URLs of `broker.url`: one, or the nodes of a cluster separated by commas (tried in
/// turn when connecting).
pub fn broker_urls(raw: &str) -> Vec<&str> {
    raw.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// Replaces the password of an AMQP URL with `***`. An unparsable URL is hidden whole.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // set_password only fails for URLs that cannot have one, which were checked above.
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests;
