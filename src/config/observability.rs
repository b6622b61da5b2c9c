//! `[metrics]`, `[log]` and `[trace]`: how warren reports on itself, and their checks.

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

/// The targets llama.cpp's and ggml's logs come under: llama-cpp-2's (ggml's log) and
/// warren's own for llama.cpp's (`engine::grammar`).
const LLAMA_TARGETS: [&str; 3] = ["llama-cpp-2", "llama_cpp_2", "llama.cpp"];

/// llama.cpp is chatty at info level (every tensor while loading): keep it to warnings
/// unless the filter names it.
const QUIET_LLAMA: &str = "llama-cpp-2=warn,llama_cpp_2=warn,llama.cpp=warn";

/// The tracing filter for the directives `level` (from `log.level` or `RUST_LOG`).
pub fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let directives = if LLAMA_TARGETS.iter().any(|target| level.contains(target)) {
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

/// `[trace]`: OpenTelemetry traces over OTLP/HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSettings {
    /// The collector's OTLP/HTTP base URL; empty = traces off.
    pub endpoint: String,
    /// Share of new traces recorded, 0.0 to 1.0.
    pub sample_ratio: f64,
    /// `service.name`; empty = chosen by command.
    pub service_name: String,
    /// Extra CA certificates (PEM) for an https endpoint; empty = none.
    pub ca_file: String,
}

impl TraceSettings {
    /// Whether traces are exported.
    pub fn enabled(&self) -> bool {
        !self.endpoint.trim().is_empty()
    }

    /// Where spans are posted: the OTLP/HTTP traces path under `endpoint`.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim().trim_end_matches('/'))
    }

    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(invalid("trace.sample_ratio", "must be between 0.0 and 1.0"));
        }
        if self.enabled() {
            let url = url::Url::parse(self.endpoint.trim()).map_err(|e| {
                invalid(
                    "trace.endpoint",
                    format!("is not a URL ({e}), e.g. http://otel-collector:4318"),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(
                    "trace.endpoint",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if !self.ca_file.is_empty() && !std::path::Path::new(&self.ca_file).is_file() {
            return Err(invalid("trace.ca_file", "names no readable file"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{log_filter, TraceSettings};
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    /// Whether `filter` lets an event of `target` at `level` through.
    fn lets_through(filter: &str, target_is_llama_cpp: bool, level: Level) -> bool {
        let subscriber = tracing_subscriber::registry().with(log_filter(filter).unwrap());
        tracing::subscriber::with_default(subscriber, || match (target_is_llama_cpp, level) {
            (true, Level::INFO) => tracing::enabled!(target: "llama.cpp", Level::INFO),
            (true, _) => tracing::enabled!(target: "llama.cpp", Level::WARN),
            (false, _) => tracing::enabled!(target: "warren", Level::INFO),
        })
    }

    #[test]
    fn llama_cpps_info_lines_stay_quiet_unless_the_filter_names_them() {
        assert!(lets_through("info", false, Level::INFO));
        assert!(!lets_through("info", true, Level::INFO));
        assert!(lets_through("info", true, Level::WARN));
        assert!(lets_through("info,llama.cpp=info", true, Level::INFO));
    }

    fn settings(endpoint: &str, sample_ratio: f64) -> TraceSettings {
        TraceSettings {
            endpoint: endpoint.into(),
            sample_ratio,
            service_name: String::new(),
            ca_file: String::new(),
        }
    }

    #[test]
    fn traces_are_off_without_an_endpoint() {
        assert!(!settings("", 1.0).enabled());
        assert!(settings("", 1.0).validate().is_ok());
    }

    #[test]
    fn spans_go_to_the_traces_path_of_the_endpoint() {
        assert_eq!(
            settings("http://collector:4318/", 1.0).traces_url(),
            "http://collector:4318/v1/traces"
        );
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let ratio = settings("", 1.5).validate().unwrap_err().to_string();
        assert!(ratio.contains("trace.sample_ratio"), "{ratio}");
        let url = settings("collector:4318", 1.0)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(url.contains("trace.endpoint"), "{url}");
        let scheme = settings("grpc://collector:4317", 1.0)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(scheme.contains("trace.endpoint"), "{scheme}");
    }
}
