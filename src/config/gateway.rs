//! `[gateway]`: the OpenAI-compatible HTTP API's settings and their checks.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[gateway]`: the OpenAI-compatible HTTP API in front of the queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Address to bind, e.g. `127.0.0.1:8080`; port 0 = any free port.
    pub listen: String,
    /// Model name listed in `/v1/models`.
    pub model_name: String,
    /// With `topology.tasks_exchange`: the models routed by name, comma-separated.
    pub models: String,
    /// Accepted API keys, comma-separated; empty (and no file) = no authentication.
    pub api_keys: SecretString,
    /// File with one accepted API key per line (a mounted secret); empty = unused.
    pub api_keys_file: String,
    /// How long a request waits for its reply before a 504, in ms.
    pub request_timeout_ms: u64,
    /// `Retry-After` of a 503 to a caller that asked not to wait while no worker serves its
    /// model (header `X-Warren-Cold-Start: refuse`), in seconds.
    pub cold_start_retry_after_s: u64,
    /// Largest request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Requests per minute per API key; 0 = unlimited.
    pub requests_per_minute: u32,
    /// Tokens (prompt estimate + max_tokens) per minute per API key; 0 = unlimited.
    pub tokens_per_minute: u32,
    /// Base of the connection name shown in the management UI.
    pub connection_name: String,
    /// Redis holding background responses' state.
    pub redis_url: SecretString,
    /// How long a background response's state is kept, in seconds.
    pub state_ttl_s: u64,
    /// Shared durable queue of background results, consumed by every gateway replica.
    pub results_queue: String,
    /// Webhook URL for every background response without its own `metadata.callback_url`.
    pub webhook_url: String,
    /// Standard Webhooks signing secret, `whsec_<base64>`; empty = no webhooks.
    pub webhook_secret: SecretString,
    /// Hosts webhooks may be sent to, comma-separated.
    pub webhook_allowed_hosts: String,
    /// Delivery attempts per event.
    pub webhook_max_attempts: u32,
    /// Delay before the second attempt, in ms (doubling, ±20%).
    pub webhook_initial_delay_ms: u64,
    /// Bound on one delivery attempt, in ms.
    pub webhook_timeout_ms: u64,
    /// PEM file of CA certificates trusted for https:// webhooks beside the public roots;
    /// empty = the public roots only.
    pub webhook_ca_file: String,
    /// Largest uploaded file (`POST /v1/files`), in bytes.
    pub max_file_bytes: usize,
    /// Most requests in one batch.
    pub batch_max_requests: usize,
    /// Most tasks of one batch published and not yet answered.
    pub batch_in_flight: usize,
    /// How long a replica's claim on a batch it runs lasts without renewal, in ms.
    pub batch_lease_ms: u64,
}

/// The shortest batch lease. A runner renews it once a round: a 250 ms wait, its publishes
/// (up to `gateway.batch_in_flight` confirms) and a second more while the queue is full, so a
/// lease a few rounds long keeps a running batch from being taken by another replica.
const MIN_BATCH_LEASE_MS: u64 = 5000;

impl GatewaySettings {
    /// The models served under routing by model: `models`, else `model_name` alone.
    pub fn served_models(&self) -> Vec<String> {
        let models = split_keys(&self.models, ',');
        if models.is_empty() {
            vec![self.model_name.clone()]
        } else {
            models
        }
    }

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
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
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
        if !(1..=3600).contains(&self.cold_start_retry_after_s) {
            return Err(invalid(
                "gateway.cold_start_retry_after_s",
                "must be between 1 and 3600",
            ));
        }
        if self.max_body_bytes < 64 {
            return Err(invalid("gateway.max_body_bytes", "must be at least 64"));
        }
        if self.connection_name.trim().is_empty() {
            return Err(invalid("gateway.connection_name", "must not be empty"));
        }
        super::check_redis_url("gateway.redis_url", self.redis_url.expose_secret())?;
        if self.state_ttl_s == 0 {
            return Err(invalid("gateway.state_ttl_s", "must be at least 1"));
        }
        super::check_amqp_name("gateway.results_queue", &self.results_queue)?;
        if self.webhook_max_attempts == 0 || self.webhook_max_attempts > 50 {
            return Err(invalid(
                "gateway.webhook_max_attempts",
                "must be between 1 and 50",
            ));
        }
        if self.webhook_initial_delay_ms == 0 || self.webhook_timeout_ms == 0 {
            return Err(invalid(
                "gateway.webhook_initial_delay_ms",
                "and gateway.webhook_timeout_ms must be at least 1",
            ));
        }
        if self.max_file_bytes == 0 || self.batch_max_requests == 0 || self.batch_in_flight == 0 {
            return Err(invalid(
                "gateway.max_file_bytes",
                "gateway.batch_max_requests and gateway.batch_in_flight must be at least 1",
            ));
        }
        if self.batch_lease_ms < MIN_BATCH_LEASE_MS {
            return Err(invalid(
                "gateway.batch_lease_ms",
                "must be at least 5000: a runner renews its lease once a round of publishing",
            ));
        }
        if !self.webhook_url.is_empty() && self.webhook_secret.expose_secret().is_empty() {
            return Err(invalid(
                "gateway.webhook_url",
                "needs gateway.webhook_secret (whsec_...) to sign the events",
            ));
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
