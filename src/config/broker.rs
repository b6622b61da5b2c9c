//! `[broker]` and `[topology]`: how to reach RabbitMQ, how much work to take, and the names
//! and arguments of what warren declares there. Each section checks its own values
//! (`validate`); rules that tie sections together live in [`super::Settings::validate`].

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{check_amqp_name, invalid, ConfigError};

/// The most queues one model's traffic may be spread over.
pub const MAX_SHARDS: u16 = 64;

/// The name of shard `index` of `queue`.
pub fn shard_queue(queue: &str, index: u16) -> String {
    format!("{queue}.shard-{index}")
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
    /// RabbitMQ's management API (queue bound policies, drain rates): a URL, `auto` (beside
    /// the first broker URL, same credentials) or empty (unused).
    pub management_url: SecretString,
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
    /// Bound on the requests backlog as a queue argument; 0 = none.
    pub max_length: u32,
    /// Bound on each task queue's backlog, set by a policy through the management API;
    /// 0 = none (the policy is removed). With `max_length` too, RabbitMQ applies the smaller.
    pub queue_bound: u32,
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
    /// Queue of embedding tasks: what `engine.role = "embed"` workers consume.
    pub embeddings_queue: String,
    /// Under routing by model: how many queues each model's traffic is spread over (through
    /// a consistent-hash exchange per model); 1 = one queue per model.
    pub shards: u16,
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
        let management = self.management_url.expose_secret();
        if !management.is_empty() && management != "auto" {
            let url = url::Url::parse(management).map_err(|e| {
                invalid("broker.management_url", format!("is not a valid URL: {e}"))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(
                    "broker.management_url",
                    "must be `auto`, empty, or a URL starting with http:// or https://",
                ));
            }
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

    /// Under routing by model, the requests queue of `model`: `<requests_queue>.<model>`.
    pub fn model_queue(&self, model: &str) -> String {
        format!("{}.{model}", self.requests_queue)
    }

    /// Whether each model's traffic is spread over several queues ([`crate::broker::shards`]).
    pub fn is_sharded(&self) -> bool {
        self.shards > 1 && self.routes_by_model()
    }

    /// The queues workers consume for the queue `queue` of a model (or of its batch tier):
    /// the queue itself, or when sharded its shards `<queue>.shard-<i>`.
    pub fn consumed_queues(&self, queue: &str) -> Vec<String> {
        if self.is_sharded() {
            (0..self.shards).map(|i| shard_queue(queue, i)).collect()
        } else {
            vec![queue.to_owned()]
        }
    }

    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (key, name) in [
            ("topology.requests_queue", &self.requests_queue),
            ("topology.dead_letter_exchange", &self.dead_letter_exchange),
            ("topology.dead_letter_queue", &self.dead_letter_queue),
            ("topology.results_queue", &self.results_queue),
            ("topology.control_exchange", &self.control_exchange),
            ("topology.embeddings_queue", &self.embeddings_queue),
        ] {
            check_amqp_name(key, name)?;
        }
        if self.routes_by_model() {
            check_amqp_name("topology.tasks_exchange", &self.tasks_exchange)?;
        }
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(invalid(
                "topology.shards",
                format!("must be 1 to {MAX_SHARDS}"),
            ));
        }
        if self.shards > 1 && !self.routes_by_model() {
            return Err(invalid(
                "topology.shards",
                "needs topology.tasks_exchange (routing by model): publishers reach the shards through it",
            ));
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
