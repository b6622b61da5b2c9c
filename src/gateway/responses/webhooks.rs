//! Webhooks: when a background response ends, POST an event
//! `{id, object: "event", type: "response.completed" | …, created_at, data: {id}}` to its
//! `metadata.callback_url` (or `gateway.webhook_url`), signed per the Standard Webhooks spec
//! (the `standardwebhooks` crate: `webhook-id`, `webhook-timestamp`, `webhook-signature`),
//! retried with exponential backoff and jitter up to `gateway.webhook_max_attempts`. Every
//! attempt and its outcome go into the response's state and into the metrics.
//!
//! Only http(s) URLs whose host is in `gateway.webhook_allowed_hosts` (loopback by default)
//! are accepted, so a caller cannot turn the gateway into a request forwarder. https://
//! receivers are verified by rustls against Mozilla's roots and `gateway.webhook_ca_file`;
//! a certificate that does not verify is a failed attempt like any other.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::json;
use tracing::{info, warn};

use crate::clock::unix_seconds;
use crate::config::{ConfigError, GatewaySettings};
use crate::gateway::metrics::GatewayMetrics;
use crate::gateway::responses::object::Status;
use crate::gateway::responses::store::{Attempt, Store};
use crate::retry::ReconnectBackoff;

/// Signs and delivers webhook events.
pub struct Webhooks {
    signer: Option<standardwebhooks::Webhook>,
    default_url: Option<String>,
    allowed_hosts: Vec<String>,
    max_attempts: u32,
    initial_delay: Duration,
    client: reqwest::Client,
    metrics: Arc<GatewayMetrics>,
}

impl Webhooks {
    /// From `[gateway]`: `webhook_secret`, `webhook_url`, `webhook_allowed_hosts`,
    /// `webhook_max_attempts`, `webhook_initial_delay_ms`, `webhook_timeout_ms`,
    /// `webhook_ca_file`.
    pub fn new(
        settings: &GatewaySettings,
        metrics: Arc<GatewayMetrics>,
    ) -> Result<Webhooks, ConfigError> {
        let secret = settings.webhook_secret.expose_secret();
        let signer = if secret.is_empty() {
            None
        } else {
            Some(
                standardwebhooks::Webhook::new(secret).map_err(|e| ConfigError::Invalid {
                    key: "gateway.webhook_secret",
                    problem: format!("must be whsec_ followed by base64 ({e})"),
                })?,
            )
        };
        let tls = crate::tls::client_config(&settings.webhook_ca_file).map_err(|problem| {
            ConfigError::Invalid {
                key: "gateway.webhook_ca_file",
                problem,
            }
        })?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_millis(settings.webhook_timeout_ms))
            // A receiver's redirect is its answer, not somewhere else to send the event.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError::Invalid {
                key: "gateway.webhook_ca_file",
                problem: format!("cannot build the HTTPS client: {e}"),
            })?;
        let webhooks = Webhooks {
            signer,
            default_url: Some(settings.webhook_url.clone()).filter(|u| !u.is_empty()),
            allowed_hosts: settings
                .webhook_allowed_hosts
                .split(',')
                .map(|h| h.trim().trim_matches(['[', ']']).to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            max_attempts: settings.webhook_max_attempts,
            initial_delay: Duration::from_millis(settings.webhook_initial_delay_ms),
            client,
            metrics,
        };
        if let Some(url) = &webhooks.default_url {
            webhooks
                .check_url(url)
                .map_err(|problem| ConfigError::Invalid {
                    key: "gateway.webhook_url",
                    problem,
                })?;
        }
        Ok(webhooks)
    }

    /// Whether events can be sent to `url`: a secret is set, the URL is http(s) and its host
    /// is allowed. The reason when not.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        if self.signer.is_none() {
            return Err("webhooks need gateway.webhook_secret to be set".into());
        }
        let parsed = url::Url::parse(url).map_err(|e| format!("is not a valid URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("must be an http:// or https:// URL".into());
        }
        let host = parsed
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        if !self.allowed_hosts.contains(&host) {
            return Err(format!(
                "host `{host}` is not in gateway.webhook_allowed_hosts"
            ));
        }
        Ok(())
    }

    /// Where the webhook of a response goes: its own callback URL, else the configured one.
    pub fn target(&self, callback_url: Option<&str>) -> Option<String> {
        callback_url
            .map(str::to_owned)
            .or_else(|| self.default_url.clone())
    }

    /// Sends the webhook of response `id` in the background, if it has somewhere to go.
    pub fn notify(
        self: &Arc<Self>,
        store: &Arc<Store>,
        id: &str,
        status: Status,
        callback_url: Option<&str>,
    ) {
        if let Some(url) = self.target(callback_url) {
            let delivery = self
                .clone()
                .deliver(store.clone(), id.to_owned(), status, url);
            tokio::spawn(delivery);
        }
    }

    /// Delivers the event for response `id` ending in `status` to `url`, retrying, and
    /// records every attempt in the store. Meant to run in a background task.
    pub async fn deliver(
        self: Arc<Self>,
        store: Arc<Store>,
        id: String,
        status: Status,
        url: String,
    ) {
        let (Some(kind), Some(signer)) = (status.event_type(), &self.signer) else {
            return;
        };
        let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        let body = json!({
            "id": event_id,
            "object": "event",
            "type": kind,
            "created_at": unix_seconds(),
            "data": {"id": id},
        })
        .to_string();
        let mut backoff = ReconnectBackoff::between(self.initial_delay, self.initial_delay * 64);
        for attempt in 1..=self.max_attempts {
            let timestamp = unix_seconds();
            let signature = signer
                .sign(&event_id, timestamp as i64, body.as_bytes())
                .unwrap_or_default();
            let sent = self
                .client
                .post(&url)
                .header("content-type", "application/json")
                .header("webhook-id", &event_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body.clone())
                .send()
                .await;
            let (delivered, outcome) = match sent {
                Ok(response) if response.status().is_success() => {
                    (true, response.status().as_u16().to_string())
                }
                Ok(response) => (false, response.status().as_u16().to_string()),
                Err(e) => (false, error_chain(&e)),
            };
            self.metrics.webhook_attempt(delivered);
            self.record(&store, &id, &outcome, delivered).await;
            if delivered {
                info!(id = %id, event = kind, attempt, "webhook delivered");
                return;
            }
            warn!(id = %id, event = kind, attempt, outcome = %outcome, "webhook not delivered");
            if attempt < self.max_attempts {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        warn!(id = %id, attempts = self.max_attempts, "webhook given up");
    }

    async fn record(&self, store: &Store, id: &str, outcome: &str, delivered: bool) {
        let result = async {
            let Some(mut record) = store.get(id).await? else {
                return Ok(());
            };
            record.meta.webhook_attempts.push(Attempt {
                at: unix_seconds(),
                outcome: outcome.to_owned(),
            });
            record.meta.webhook_delivered |= delivered;
            store.put_meta(id, &record.meta).await
        };
        if let Err(e) = result.await {
            warn!(id = %id, error = %e, "webhook attempt not recorded");
        }
    }
}

/// An HTTP failure with its causes (reqwest's own message hides, say, which certificate
/// check failed).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhooks(secret: &str, hosts: &str) -> Webhooks {
        let mut settings = crate::config::Settings::defaults().gateway;
        settings.webhook_secret = secret.to_owned().into();
        settings.webhook_allowed_hosts = hosts.to_owned();
        Webhooks::new(&settings, Arc::default()).unwrap()
    }

    #[test]
    fn only_http_urls_to_allowed_hosts_are_accepted() {
        let hooks = webhooks(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "127.0.0.1,localhost,::1",
        );
        assert!(hooks.check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(hooks.check_url("https://localhost/hook").is_ok());
        assert!(hooks.check_url("http://[::1]:80/").is_ok());
        assert!(hooks
            .check_url("http://10.0.0.5/hook")
            .unwrap_err()
            .contains("not in"));
        assert!(hooks.check_url("http://example.com/").is_err());
        assert!(hooks
            .check_url("file:///etc/passwd")
            .unwrap_err()
            .contains("http"));
        assert!(hooks.check_url("not a url").is_err());
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_a_configuration_error() {
        let mut settings = crate::config::Settings::defaults().gateway;
        settings.webhook_ca_file = "/nonexistent/ca.pem".to_owned();
        let error = Webhooks::new(&settings, Arc::default()).err().unwrap();
        assert!(error.to_string().contains("webhook_ca_file"), "{error}");
        let empty = std::env::temp_dir().join(format!("warren-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        settings.webhook_ca_file = empty.display().to_string();
        let error = Webhooks::new(&settings, Arc::default()).err().unwrap();
        assert!(error.to_string().contains("no certificate"), "{error}");
        std::fs::remove_file(empty).ok();
    }

    #[test]
    fn without_a_secret_no_webhook_is_accepted() {
        let hooks = webhooks("", "127.0.0.1");
        assert!(hooks
            .check_url("http://127.0.0.1/")
            .unwrap_err()
            .contains("webhook_secret"));
    }

    #[test]
    fn a_callback_url_wins_over_the_configured_one() {
        let hooks = webhooks("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "127.0.0.1");
        assert_eq!(
            hooks.target(Some("http://127.0.0.1/a")).as_deref(),
            Some("http://127.0.0.1/a")
        );
        assert_eq!(hooks.target(None), None);
    }
}
