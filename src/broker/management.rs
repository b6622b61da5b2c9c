//! RabbitMQ's management HTTP API, for what AMQP cannot do: the policy that bounds a task
//! queue, and how fast a queue drains.
//!
//! A bound set by a policy, unlike an `x-max-length` queue argument, applies to a queue that
//! already exists and changes without a redeclare being refused (queue arguments must match
//! on every declare). Each process that consumes a task queue puts the policy for that queue
//! (`warren-bound-<queue>`: `max-length`, `overflow = reject-publish`) when it starts, or
//! deletes it with `topology.queue_bound = 0`.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::config::Settings;

/// How long one call to the management API may take.
const CALL_LIMIT: Duration = Duration::from_secs(5);
/// Policies of warren rank above a deployment's own (the example in
/// deploy/rabbitmq/definitions.json) for the same queue: only one policy applies.
const POLICY_PRIORITY: i64 = 10;

/// A failed call to the management API.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    /// `broker.management_url` is not a usable URL.
    #[error("broker.management_url is not a usable URL: {0}")]
    Url(String),
    /// No TLS client could be set up.
    #[error("no TLS client for the management API: {0}")]
    Tls(String),
    /// The API could not be reached or did not answer in time.
    #[error("the management API did not answer: {0}")]
    Unreachable(#[from] reqwest::Error),
    /// The API answered with an error status.
    #[error("the management API answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The start of its body.
        body: String,
    },
}

/// The policy that bounds one task queue (and its batch tier's).
#[derive(Debug, Clone, PartialEq)]
pub struct BoundPolicy {
    /// The policy's name: `warren-bound-<queue>`.
    pub name: String,
    /// Its body as the API takes it (`PUT /api/policies/<vhost>/<name>`).
    pub body: Value,
}

impl BoundPolicy {
    /// At most `max_length` tasks ready in `queue`, and as many in its batch tier's queue
    /// when `with_batch_tier` (and in each of their shards when `sharded`); publishes beyond
    /// are nacked.
    pub fn new(queue: &str, with_batch_tier: bool, sharded: bool, max_length: u32) -> BoundPolicy {
        let mut tier = if with_batch_tier {
            format!("({})?", escape_pattern(crate::protocol::BATCH_SUFFIX))
        } else {
            String::new()
        };
        if sharded {
            tier.push_str(r"(\.shard-[0-9]+)?");
        }
        BoundPolicy {
            name: policy_name(queue),
            body: json!({
                "pattern": format!("^{}{tier}$", escape_pattern(queue)),
                "apply-to": "queues",
                "priority": POLICY_PRIORITY,
                "definition": {"max-length": max_length, "overflow": "reject-publish"},
            }),
        }
    }
}

/// The name of the policy that bounds `queue`.
pub fn policy_name(queue: &str) -> String {
    format!("warren-bound-{queue}")
}

/// `text` as a regular expression that matches it alone (RabbitMQ policies use PCRE).
fn escape_pattern(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// What the management API says of a queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    /// Messages ready and unacked.
    pub messages: u64,
    /// Acks per second over the API's last sample window: how fast workers finish its tasks.
    pub acks_per_second: f64,
}

impl QueueStats {
    /// Reads the API's answer for one queue; missing statistics read as 0.
    pub fn from_json(queue: &Value) -> QueueStats {
        QueueStats {
            messages: queue["messages"].as_u64().unwrap_or(0),
            acks_per_second: queue["message_stats"]["ack_details"]["rate"]
                .as_f64()
                .unwrap_or(0.0),
        }
    }
}

/// A client of one broker's management API, for one virtual host.
#[derive(Clone)]
pub struct Management {
    client: reqwest::Client,
    base: url::Url,
    vhost: String,
}

/// Without the base URL, which may hold credentials.
impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("vhost", &self.vhost)
            .finish_non_exhaustive()
    }
}

impl Management {
    /// The API of `settings.broker.management_url` (`auto`: beside the first AMQP URL's
    /// broker) for the virtual host of the first AMQP URL; `None` when it is empty.
    pub fn from_settings(settings: &Settings) -> Result<Option<Management>, ManagementError> {
        let raw = settings.broker.management_url.expose_secret();
        let amqp = crate::config::broker_urls(settings.broker.url.expose_secret())
            .first()
            .and_then(|u| url::Url::parse(u).ok())
            .ok_or_else(|| ManagementError::Url("broker.url holds no usable URL".into()))?;
        let base = match raw {
            "" => return Ok(None),
            "auto" => beside(&amqp)?,
            url => url::Url::parse(url).map_err(|e| ManagementError::Url(e.to_string()))?,
        };
        let vhost = vhost_of(&amqp);
        let tls = crate::tls::client_config("").map_err(ManagementError::Tls)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(CALL_LIMIT)
            .build()?;
        Ok(Some(Management {
            client,
            base,
            vhost,
        }))
    }

    /// Puts `policy` (creating or replacing it).
    pub async fn put_policy(&self, policy: &BoundPolicy) -> Result<(), ManagementError> {
        let url = self.url(&["api", "policies", &self.vhost, &policy.name])?;
        let response = self
            .authorized(self.client.put(url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(policy.body.to_string())
            .send()
            .await?;
        check(response).await.map(|_| ())
    }

    /// Deletes policy `name`; one that does not exist is no error.
    pub async fn delete_policy(&self, name: &str) -> Result<(), ManagementError> {
        let url = self.url(&["api", "policies", &self.vhost, name])?;
        let response = self.authorized(self.client.delete(url)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        check(response).await.map(|_| ())
    }

    /// The depth and drain rate of `queue`; `None` when it does not exist.
    pub async fn queue_stats(&self, queue: &str) -> Result<Option<QueueStats>, ManagementError> {
        let url = self.url(&["api", "queues", &self.vhost, queue])?;
        let response = self.authorized(self.client.get(url)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = check(response).await?;
        let value: Value = serde_json::from_str(&body).map_err(|e| ManagementError::Status {
            status: 200,
            body: format!("not JSON: {e}"),
        })?;
        Ok(Some(QueueStats::from_json(&value)))
    }

    /// Whether the exchange `name` exists.
    pub async fn exchange_exists(&self, name: &str) -> Result<bool, ManagementError> {
        let url = self.url(&["api", "exchanges", &self.vhost, name])?;
        let response = self.authorized(self.client.get(url)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check(response).await.map(|_| true)
    }

    /// The names of `queue` and of its shards (`<queue>.shard-<i>`) that exist.
    pub async fn queue_and_shards(&self, queue: &str) -> Result<Vec<String>, ManagementError> {
        let mut url = self.url(&["api", "queues", &self.vhost])?;
        let pattern = format!(r"^{}(\.shard-[0-9]+)?$", escape_pattern(queue));
        url.query_pairs_mut()
            .append_pair("page", "1")
            .append_pair("page_size", "500")
            .append_pair("name", &pattern)
            .append_pair("use_regex", "true")
            .append_pair("columns", "name");
        let response = self.authorized(self.client.get(url)).send().await?;
        let body = check(response).await?;
        let value: Value = serde_json::from_str(&body).map_err(|e| ManagementError::Status {
            status: 200,
            body: format!("not JSON: {e}"),
        })?;
        let items = value["items"].as_array().cloned().unwrap_or_default();
        Ok(items
            .iter()
            .filter_map(|q| q["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// `base` with `segments` appended, each percent-encoded (a vhost `/` is `%2F`).
    fn url(&self, segments: &[&str]) -> Result<url::Url, ManagementError> {
        let mut url = self.base.clone();
        url.set_username("").ok();
        url.set_password(None).ok();
        url.path_segments_mut()
            .map_err(|()| ManagementError::Url("cannot be a base".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let user = percent_decode(self.base.username());
        let password = self.base.password().map(percent_decode);
        request.basic_auth(user, password)
    }
}

/// The management API RabbitMQ serves beside an AMQP listener by default: the same host and
/// credentials, port 15672 over http (15671 over https for amqps).
fn beside(amqp: &url::Url) -> Result<url::Url, ManagementError> {
    let (scheme, port) = if amqp.scheme() == "amqps" {
        ("https", 15671)
    } else {
        ("http", 15672)
    };
    let host = amqp
        .host_str()
        .ok_or_else(|| ManagementError::Url("broker.url has no host".into()))?;
    let mut url = url::Url::parse(&format!("{scheme}://{host}:{port}/"))
        .map_err(|e| ManagementError::Url(e.to_string()))?;
    url.set_username(amqp.username()).ok();
    url.set_password(amqp.password()).ok();
    Ok(url)
}

/// The virtual host an AMQP URL names: its path without the leading `/`, decoded; `/` when
/// the path is empty.
fn vhost_of(amqp: &url::Url) -> String {
    let path = amqp.path().trim_start_matches('/');
    if path.is_empty() {
        "/".to_owned()
    } else {
        percent_decode(path)
    }
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// The body of a successful answer, or the error status with the start of its body.
async fn check(response: reqwest::Response) -> Result<String, ManagementError> {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err(ManagementError::Status {
            status: status.as_u16(),
            body: body.chars().take(200).collect(),
        })
    }
}

/// Puts the bound policy of the queue this process consumes, or deletes it when
/// `topology.queue_bound` is 0. Without a management URL, does nothing.
pub async fn apply_queue_bound(settings: &Settings) -> Result<Option<String>, ManagementError> {
    let Some(api) = Management::from_settings(settings)? else {
        return Ok(None);
    };
    let queue = &settings.topology.requests_queue;
    let with_batch_tier = settings.batch_tier().is_some();
    match settings.topology.queue_bound {
        0 => api.delete_policy(&policy_name(queue)).await?,
        bound => {
            let sharded = settings.topology.is_sharded();
            let policy = BoundPolicy::new(queue, with_batch_tier, sharded, bound);
            api.put_policy(&policy).await?;
        }
    }
    Ok(Some(policy_name(queue)))
}

/// [`apply_queue_bound`], logged: a broker without the management API (or a user without
/// the `policymaker` tag) leaves the queue with the bound it had, which is said at warn.
pub async fn apply_queue_bound_logged(settings: &Settings) {
    match apply_queue_bound(settings).await {
        Ok(Some(policy)) => tracing::info!(
            policy,
            bound = settings.topology.queue_bound,
            "queue bound set by policy (0: removed)"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(
            error = %e,
            queue = %settings.topology.requests_queue,
            "the queue bound policy could not be set: the queue keeps the bound it had (none when new)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_policy_matches_its_queue_alone_and_rejects_publishes_beyond_the_bound() {
        let policy = BoundPolicy::new("warren.requests.llama-3.1", false, false, 256);
        assert_eq!(policy.name, "warren-bound-warren.requests.llama-3.1");
        assert_eq!(policy.body["pattern"], r"^warren\.requests\.llama-3\.1$");
        let tiers = BoundPolicy::new("warren.requests", true, false, 256);
        assert_eq!(tiers.body["pattern"], r"^warren\.requests(\.batch)?$");
        let shards = BoundPolicy::new("warren.requests.m", true, true, 256);
        let pattern = r"^warren\.requests\.m(\.batch)?(\.shard-[0-9]+)?$";
        assert_eq!(shards.body["pattern"], pattern);
        assert_eq!(policy.body["apply-to"], "queues");
        assert_eq!(policy.body["definition"]["max-length"], 256);
        assert_eq!(policy.body["definition"]["overflow"], "reject-publish");
    }

    #[test]
    fn auto_finds_the_management_api_beside_the_broker_with_the_same_credentials() {
        let at = |u: &str| beside(&url::Url::parse(u).unwrap()).unwrap().to_string();
        assert_eq!(
            at("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "http://guest:guest@127.0.0.1:15672/"
        );
        assert_eq!(
            at("amqps://app:p%40ss@rabbit.example:5671/prod"),
            "https://app:p%40ss@rabbit.example:15671/"
        );
    }

    #[test]
    fn the_vhost_comes_from_the_amqp_urls_path() {
        let vhost = |u: &str| vhost_of(&url::Url::parse(u).unwrap());
        assert_eq!(vhost("amqp://g:g@host:5672/%2f"), "/");
        assert_eq!(vhost("amqp://g:g@host:5672"), "/");
        assert_eq!(vhost("amqp://g:g@host:5672/prod"), "prod");
    }

    #[test]
    fn queue_statistics_read_depth_and_ack_rate_and_default_to_zero() {
        let busy = json!({"messages": 12, "message_stats": {"ack_details": {"rate": 2.5}}});
        assert_eq!(
            QueueStats::from_json(&busy),
            QueueStats {
                messages: 12,
                acks_per_second: 2.5
            }
        );
        let idle = json!({"messages": 0});
        assert_eq!(QueueStats::from_json(&idle).acks_per_second, 0.0);
    }
}
