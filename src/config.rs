//! Configuration: typed settings loaded in layers and validated once at start.
//!
//! Owns the `Settings` tree, its layering (built-in `config/default.toml` → optional file →
//! `WARREN__SECTION__KEY` environment variables) and the checks that make a bad value fail
//! at start with the key's name. It must not connect to anything or load the model: other
//! modules receive already-valid settings.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The defaults, compiled in so that the binary runs from any directory.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/default.toml");

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
    /// The OpenAI-compatible HTTP gateway (`warren gateway`).
    pub gateway: GatewaySettings,
}

/// `[gateway]`: the OpenAI-compatible HTTP API in front of the queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Address to bind, e.g. `127.0.0.1:8080`; port 0 = any free port.
    pub listen: String,
    /// Model name listed in `/v1/models`.
    pub model_name: String,
    /// Accepted API keys, comma-separated; empty (and no file) = no authentication.
    pub api_keys: SecretString,
    /// File with one accepted API key per line (a mounted secret); empty = unused.
    pub api_keys_file: String,
    /// How long a request waits for its reply before a 504, in ms.
    pub request_timeout_ms: u64,
    /// Largest request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Requests per minute per API key; 0 = unlimited.
    pub requests_per_minute: u32,
    /// Tokens (prompt estimate + max_tokens) per minute per API key; 0 = unlimited.
    pub tokens_per_minute: u32,
    /// Base of the connection name shown in the management UI.
    pub connection_name: String,
}

impl GatewaySettings {
    /// The accepted API keys, from `api_keys` and `api_keys_file`. Empty: no authentication.
    pub fn keys(&self) -> Result<Vec<String>, ConfigError> {
        let mut keys: Vec<String> = split_keys(self.api_keys.expose_secret(), ',');
        if !self.api_keys_file.is_empty() {
            let text = std::fs::read_to_string(&self.api_keys_file).map_err(|e| {
                invalid(
                    "gateway.api_keys_file",
                    format!("cannot be read ({}): {e}", self.api_keys_file),
                )
            })?;
            keys.extend(split_keys(&text, '\n'));
        }
        Ok(keys)
    }

    /// Checks the section's own values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "gateway.listen",
                "must be an address with a port, e.g. 127.0.0.1:8080",
            ));
        }
        if self.model_name.trim().is_empty() {
            return Err(invalid("gateway.model_name", "must not be empty"));
        }
        if self.request_timeout_ms == 0 {
            return Err(invalid("gateway.request_timeout_ms", "must be at least 1"));
        }
        if self.max_body_bytes < 64 {
            return Err(invalid("gateway.max_body_bytes", "must be at least 64"));
        }
        if self.connection_name.trim().is_empty() {
            return Err(invalid("gateway.connection_name", "must not be empty"));
        }
        self.keys().map(|_| ())
    }
}

fn split_keys(text: &str, separator: char) -> Vec<String> {
    text.split(separator)
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `[metrics]`: the HTTP listener for metrics and health.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Address to bind, e.g. `127.0.0.1:9090`; empty = no listener.
    pub listen: String,
}

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
    /// Fanout exchange of control messages (cancel) that every worker listens on.
    pub control_exchange: String,
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
    /// Prompt tokens per llama.cpp batch.
    pub batch_size: u32,
    /// Tasks in inference at once.
    pub slots: u32,
    /// Full-context KV cache for sliding-window layers.
    pub swa_full: bool,
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
}

/// `[sampling]`: defaults for sampling parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSettings {
    /// top_k used when sampling and the task gives none; 0 = off.
    pub default_top_k: u32,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[log]`: logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
    /// tracing filter directive; `RUST_LOG` overrides it.
    pub level: String,
}

impl LogSettings {
    /// The tracing filter for `level`, or an error naming what tracing could not parse.
    pub fn filter(&self) -> Result<tracing_subscriber::EnvFilter, String> {
        log_filter(&self.level)
    }
}

/// llama.cpp is chatty at info level (every tensor while loading): keep it to warnings
/// unless the filter names it.
const QUIET_LLAMA: &str = "llama-cpp-2=warn,llama_cpp_2=warn";

/// The tracing filter for the directives `level` (from `log.level` or `RUST_LOG`).
pub fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let directives = if level.contains("llama_cpp_2") || level.contains("llama-cpp-2") {
        level.to_owned()
    } else {
        format!("{level},{QUIET_LLAMA}")
    };
    tracing_subscriber::EnvFilter::try_new(directives).map_err(|e| e.to_string())
}

impl Settings {
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
        let env = env.prefix_separator("__").separator("__").try_parsing(true);
        let mut settings: Settings = builder.add_source(env).build()?.try_deserialize()?;
        settings.resolve_url_file()?;
        settings.validate()?;
        Ok(settings)
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

    /// Checks every value that its type alone does not constrain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(self.broker.url.expose_secret())
            .map_err(|e| invalid("broker.url", format!("is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "amqp" | "amqps") {
            return Err(invalid("broker.url", "must start with amqp:// or amqps://"));
        }
        if self.stream.max_pieces_per_chunk == 0 {
            return Err(invalid("stream.max_pieces_per_chunk", "must be at least 1"));
        }
        if self.broker.connection_name.trim().is_empty() {
            return Err(invalid("broker.connection_name", "must not be empty"));
        }
        if self.broker.reconnect_initial_ms == 0 {
            return Err(invalid("broker.reconnect_initial_ms", "must be at least 1"));
        }
        if self.broker.reconnect_max_ms < self.broker.reconnect_initial_ms {
            return Err(invalid(
                "broker.reconnect_max_ms",
                "must be at least broker.reconnect_initial_ms",
            ));
        }
        let t = &self.topology;
        for (key, name) in [
            ("topology.requests_queue", &t.requests_queue),
            ("topology.dead_letter_exchange", &t.dead_letter_exchange),
            ("topology.dead_letter_queue", &t.dead_letter_queue),
            ("topology.results_queue", &t.results_queue),
            ("topology.control_exchange", &t.control_exchange),
        ] {
            check_amqp_name(key, name)?;
        }
        if t.queue_type == QueueType::Quorum && t.max_priority > 0 {
            return Err(invalid(
                "topology.max_priority",
                "needs queue_type = \"classic\": quorum queues on RabbitMQ 3.10 have no priorities",
            ));
        }
        if t.queue_type == QueueType::Quorum && t.delivery_limit == 0 {
            return Err(invalid(
                "topology.delivery_limit",
                "must be at least 1 for a quorum queue (it stops poison tasks from looping)",
            ));
        }
        let e = &self.engine;
        if e.model_path.as_os_str().is_empty() {
            return Err(invalid("engine.model_path", "must not be empty"));
        }
        if e.context_size < 16 {
            return Err(invalid("engine.context_size", "must be at least 16 tokens"));
        }
        if e.batch_size == 0 {
            return Err(invalid("engine.batch_size", "must be at least 1"));
        }
        if e.slots == 0 || e.slots > 64 {
            return Err(invalid("engine.slots", "must be between 1 and 64"));
        }
        if e.threads > 1024 {
            return Err(invalid("engine.threads", "must be at most 1024"));
        }
        let l = &self.limits;
        if l.max_tokens_cap == 0 {
            return Err(invalid("limits.max_tokens_cap", "must be at least 1"));
        }
        if l.default_max_tokens == 0 || l.default_max_tokens > l.max_tokens_cap {
            return Err(invalid(
                "limits.default_max_tokens",
                format!(
                    "must be between 1 and limits.max_tokens_cap ({})",
                    l.max_tokens_cap
                ),
            ));
        }
        if l.timeout_cap_ms == 0 || l.timeout_cap_ms >= RABBITMQ_CONSUMER_TIMEOUT_MS {
            return Err(invalid(
                "limits.timeout_cap_ms",
                format!(
                    "must be between 1 and {} (below RabbitMQ's default consumer_timeout of 30 min)",
                    RABBITMQ_CONSUMER_TIMEOUT_MS - 1
                ),
            ));
        }
        if l.default_timeout_ms == 0 || l.default_timeout_ms > l.timeout_cap_ms {
            return Err(invalid(
                "limits.default_timeout_ms",
                format!(
                    "must be between 1 and limits.timeout_cap_ms ({})",
                    l.timeout_cap_ms
                ),
            ));
        }
        if l.max_body_bytes < 64 {
            return Err(invalid("limits.max_body_bytes", "must be at least 64"));
        }
        if l.max_stop_bytes == 0 {
            return Err(invalid("limits.max_stop_bytes", "must be at least 1"));
        }
        let r = &self.retry;
        if r.max_attempts == 0 || r.max_attempts > 20 {
            return Err(invalid("retry.max_attempts", "must be between 1 and 20"));
        }
        if r.initial_delay_ms == 0 {
            return Err(invalid("retry.initial_delay_ms", "must be at least 1"));
        }
        if !(1.0..=100.0).contains(&r.multiplier) {
            return Err(invalid("retry.multiplier", "must be between 1.0 and 100.0"));
        }
        if r.max_delay_ms < r.initial_delay_ms {
            return Err(invalid(
                "retry.max_delay_ms",
                "must be at least retry.initial_delay_ms",
            ));
        }
        if !(0.0..=0.5).contains(&r.jitter) {
            return Err(invalid("retry.jitter", "must be between 0.0 and 0.5"));
        }
        check_amqp_name("retry.queue_prefix", &r.queue_prefix)?;
        let w = &self.worker;
        if w.max_redeliveries == 0 {
            return Err(invalid("worker.max_redeliveries", "must be at least 1"));
        }
        if t.queue_type == QueueType::Quorum && w.max_redeliveries >= t.delivery_limit {
            return Err(invalid(
                "worker.max_redeliveries",
                format!(
                    "must be below topology.delivery_limit ({}), so that warren answers a poison task before the broker drops it into the dead-letter queue silently",
                    t.delivery_limit
                ),
            ));
        }
        if w.shutdown_grace_ms > 3_600_000 {
            return Err(invalid(
                "worker.shutdown_grace_ms",
                "must be at most one hour",
            ));
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "metrics.listen",
                "must be an address with a port, e.g. 127.0.0.1:9090, or empty",
            ));
        }
        if self.log.level.trim().is_empty() {
            return Err(invalid("log.level", "must not be empty"));
        }
        self.log
            .filter()
            .map_err(|e| invalid("log.level", format!("is not a valid tracing filter: {e}")))?;
        self.gateway.validate()?;
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

    /// The broker URL with any password replaced by `***`, safe to log.
    pub fn redacted_broker_url(&self) -> String {
        redact_url(self.broker.url.expose_secret())
    }
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
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Environment {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Environment::with_prefix("WARREN").source(Some(map))
    }

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(None, env(vars))
    }

    #[test]
    fn defaults_load_and_validate() {
        let s = load(&[]).expect("defaults are valid");
        assert_eq!(s.topology.requests_queue, "warren.requests");
        assert_eq!(s.topology.queue_type, QueueType::Quorum);
        assert_eq!(s.topology.dead_letter_exchange, "warren.dlx");
        assert_eq!(s.topology.dead_letter_queue, "warren.dead");
        assert_eq!(s.topology.results_queue, "warren.results");
        assert_eq!(s.engine.chat_template, "gemma");
        assert_eq!(
            s.effective_prefetch(),
            1,
            "prefetch follows the single slot"
        );
    }

    #[test]
    fn prefetch_follows_the_slots_plus_headroom_unless_set() {
        let s = load(&[
            ("WARREN__ENGINE__SLOTS", "4"),
            ("WARREN__BROKER__PREFETCH_EXTRA", "2"),
        ])
        .unwrap();
        assert_eq!(s.effective_prefetch(), 6);
        let s = load(&[
            ("WARREN__ENGINE__SLOTS", "4"),
            ("WARREN__BROKER__PREFETCH", "3"),
        ])
        .unwrap();
        assert_eq!(s.effective_prefetch(), 3);
    }

    #[test]
    fn environment_overrides_nested_keys_with_double_underscores() {
        let s = load(&[
            ("WARREN__BROKER__PREFETCH", "7"),
            ("WARREN__TOPOLOGY__QUEUE_TYPE", "classic"),
            ("WARREN__TOPOLOGY__MAX_PRIORITY", "5"),
            ("WARREN__ENGINE__MODEL_PATH", "/tmp/x.gguf"),
        ])
        .expect("valid overrides");
        assert_eq!(s.broker.prefetch, 7);
        assert_eq!(s.topology.queue_type, QueueType::Classic);
        assert_eq!(s.topology.max_priority, 5);
        assert_eq!(s.engine.model_path, PathBuf::from("/tmp/x.gguf"));
    }

    #[test]
    fn a_file_layer_overrides_the_defaults_and_env_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("warren-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.toml");
        std::fs::write(&path, "[broker]\nprefetch = 3\n[engine]\nslots = 2\n").unwrap();
        let s = Settings::load_from(Some(&path), env(&[("WARREN__ENGINE__SLOTS", "4")])).unwrap();
        assert_eq!(s.broker.prefetch, 3);
        assert_eq!(s.engine.slots, 4);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn error_text(vars: &[(&str, &str)]) -> String {
        load(vars).expect_err("should be rejected").to_string()
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("WARREN__BROKER__PREFETCH", "lots")], "prefetch"),
            (&[("WARREN__BROKER__URL", "http://x")], "broker.url"),
            (&[("WARREN__TOPOLOGY__QUEUE_TYPE", "stream")], "queue_type"),
            (
                &[("WARREN__TOPOLOGY__MAX_PRIORITY", "3")],
                "topology.max_priority",
            ),
            (
                &[("WARREN__TOPOLOGY__REQUESTS_QUEUE", "amq.x")],
                "topology.requests_queue",
            ),
            (&[("WARREN__ENGINE__SLOTS", "0")], "engine.slots"),
            (
                &[("WARREN__LIMITS__DEFAULT_MAX_TOKENS", "5000")],
                "limits.default_max_tokens",
            ),
            (
                &[("WARREN__LIMITS__TIMEOUT_CAP_MS", "1800000")],
                "limits.timeout_cap_ms",
            ),
            (&[("WARREN__LOG__FORMAT", "xml")], "format"),
            (&[("WARREN__BROKER__PREFETCHH", "2")], "prefetchh"),
            (
                &[("WARREN__RETRY__MAX_ATTEMPTS", "0")],
                "retry.max_attempts",
            ),
            (&[("WARREN__RETRY__JITTER", "0.9")], "retry.jitter"),
            (&[("WARREN__RETRY__MULTIPLIER", "0.5")], "retry.multiplier"),
            (
                &[("WARREN__WORKER__MAX_REDELIVERIES", "5")],
                "worker.max_redeliveries",
            ),
        ];
        for (vars, key) in cases {
            let text = error_text(vars);
            assert!(
                text.contains(key),
                "error for {vars:?} should name {key}: {text}"
            );
        }
    }

    #[test]
    fn the_password_never_appears_in_the_redacted_url_or_debug_output() {
        let s = load(&[(
            "WARREN__BROKER__URL",
            "amqp://app:s3cr3t@mq.example:5672/%2f",
        )])
        .unwrap();
        let redacted = s.redacted_broker_url();
        assert!(!redacted.contains("s3cr3t"), "{redacted}");
        assert!(redacted.contains("app:***@mq.example"), "{redacted}");
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn the_url_can_come_from_a_file() {
        let path = std::env::temp_dir().join(format!("warren-url-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "amqp://u:p@h:5672/%2f\n").unwrap();
        let s = load(&[("WARREN__BROKER__URL_FILE", path.to_str().unwrap())]).unwrap();
        assert_eq!(s.broker.url.expose_secret(), "amqp://u:p@h:5672/%2f");
        std::fs::remove_file(path).unwrap();
    }
}
