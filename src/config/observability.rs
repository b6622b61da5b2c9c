//! `[metrics]` and `[log]`: how warren reports on itself, and their checks.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[metrics]`: the HTTP listener for metrics and health.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Address to bind, e.g. `127.0.0.1:9090`; empty = no listener.
    pub listen: String,
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
    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.level.trim().is_empty() {
            return Err(invalid("log.level", "must not be empty"));
        }
        self.filter()
            .map(|_| ())
            .map_err(|e| invalid("log.level", format!("is not a valid tracing filter: {e}")))
    }

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

impl MetricsSettings {
    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "metrics.listen",
                "must be an address with a port, e.g. 127.0.0.1:9090, or empty",
            ));
        }
        Ok(())
    }
}
