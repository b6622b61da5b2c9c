//! Test harness shared by the integration tests: worker processes started from the real
//! `warren` binary on queues named for one test, an upstream client speaking AMQP with lapin
//! as any service would, and the RabbitMQ management API to look at what the broker holds.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

mod broker;
mod caller;
mod health;
mod private_broker;
mod redis_marks;
mod workers;
// Each test binary uses its own share of the harness.
#[allow(unused_imports)]
pub use broker::*;
#[allow(unused_imports)]
pub use caller::{correlation_id_of, header, Caller};
pub use health::broker_health;
#[allow(unused_imports)]
pub use private_broker::PrivateBroker;
#[allow(unused_imports)]
pub use redis_marks::{wait_for_mark, REDIS};
pub use workers::*;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How long a test waits for something the broker or a worker should do soon.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// How long one call to the broker (a connection, a declare) may take before the test
/// fails saying what the broker reports instead of hanging.
pub const BROKER_CALL: Duration = Duration::from_secs(30);

/// The real model the end-to-end tests run.
pub fn model_path() -> PathBuf {
    let path = std::env::var_os("WARREN_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/gemma3-270m-q4_k_m.gguf")
        });
    assert!(
        path.is_file(),
        "model {} is missing: run `make model` (or `make test`)",
        path.display()
    );
    path
}

/// A path inside the repository.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Queue and exchange names that belong to one test, deleted when dropped.
pub struct Names {
    /// What every name below starts with (`test.<test>.<id>`).
    pub base: String,
    pub requests: String,
    pub dlx: String,
    pub dead: String,
    pub results: String,
    /// Control exchange (cancel messages).
    pub control: String,
    /// Prefix of the delay queues, e.g. `<prefix>.1s`.
    pub retry_prefix: String,
    /// The broker they live on: the shared one, or a test's own ([`Names::on`]).
    pub broker_url: String,
}

impl Names {
    pub fn new(test: &str) -> Names {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let base = format!("test.{test}.{id}");
        Names {
            base: base.clone(),
            requests: format!("{base}.requests"),
            dlx: format!("{base}.dlx"),
            dead: format!("{base}.dead"),
            results: format!("{base}.results"),
            control: format!("{base}.control"),
            retry_prefix: format!("{base}.retry"),
            broker_url: AMQP_URL.to_owned(),
        }
    }

    /// Names on `broker`, a node of the test's own (nothing to delete afterwards: the node
    /// goes with the test).
    pub fn on(test: &str, broker: &PrivateBroker) -> Names {
        let mut names = Names::new(test);
        names.broker_url = broker.url.clone();
        names
    }

    fn on_shared_broker(&self) -> bool {
        self.broker_url == AMQP_URL
    }

    /// warren's own client, sending to these queues over a connection named `name`.
    pub async fn client(&self, name: &str) -> warren::client::Client {
        let route = warren::broker::Route {
            exchange: String::new(),
            routing_key: self.requests.clone(),
            control_exchange: self.control.clone(),
        };
        warren::client::Client::connect(&self.broker_url.clone().into(), name, route)
            .await
            .expect("connect")
    }

    /// Environment that points a warren process at these names and the local broker.
    pub fn env(&self) -> Vec<(String, String)> {
        // A test's own node runs no management plugin; "auto" would find the shared broker's
        // API and put the queue bound policy there.
        let management = (!self.on_shared_broker())
            .then(|| ("WARREN__BROKER__MANAGEMENT_URL".into(), String::new()));
        let names = vec![
            ("WARREN__BROKER__URL".into(), self.broker_url.clone()),
            (
                "WARREN__TOPOLOGY__REQUESTS_QUEUE".into(),
                self.requests.clone(),
            ),
            (
                "WARREN__TOPOLOGY__DEAD_LETTER_EXCHANGE".into(),
                self.dlx.clone(),
            ),
            (
                "WARREN__TOPOLOGY__DEAD_LETTER_QUEUE".into(),
                self.dead.clone(),
            ),
            (
                "WARREN__TOPOLOGY__RESULTS_QUEUE".into(),
                self.results.clone(),
            ),
            (
                "WARREN__TOPOLOGY__CONTROL_EXCHANGE".into(),
                self.control.clone(),
            ),
            (
                "WARREN__RETRY__QUEUE_PREFIX".into(),
                self.retry_prefix.clone(),
            ),
        ];
        names.into_iter().chain(management).collect()
    }
}

impl Drop for Names {
    /// Deletes every queue, exchange and bound policy under this test's base name (its batch
    /// tier and delay queues too): a queue left behind is a quorum queue the broker keeps
    /// running, and they add up over many runs.
    fn drop(&mut self) {
        if !self.on_shared_broker() {
            return;
        }
        let prefix = format!("{}.", self.base);
        let queues = management_get("queues/%2F?columns=name").unwrap_or(Value::Null);
        for queue in queues.as_array().into_iter().flatten() {
            if let Some(name) = queue["name"].as_str() {
                if name.starts_with(&prefix) {
                    let _ = management_delete(&format!("queues/%2F/{name}"));
                }
            }
        }
        let _ = management_delete(&format!("exchanges/%2F/{}", self.dlx));
        let _ = management_delete(&format!("exchanges/%2F/{}", self.control));
        let policies = management_get("policies/%2F").unwrap_or(Value::Null);
        for policy in policies.as_array().into_iter().flatten() {
            if let Some(name) = policy["name"].as_str() {
                if name.starts_with(&format!("warren-bound-{prefix}")) {
                    let _ = management_delete(&format!("policies/%2F/{name}"));
                }
            }
        }
    }
}
