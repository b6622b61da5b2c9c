//! What the tests ask the broker directly: the management API (queues, policies), exact
//! counts from a passive declare or `rabbitmqctl`, and `rabbitmqctl` itself.

use std::process::Command;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

use super::{broker_health, AMQP_URL, BROKER_CALL};

const MANAGEMENT: &str = "http://127.0.0.1:15672/api";
const GUEST_AUTH: &str = "Basic Z3Vlc3Q6Z3Vlc3Q=";

/// An HTTP agent that gives up on a silent management API instead of hanging the test.
static MANAGEMENT_AGENT: std::sync::LazyLock<ureq::Agent> = std::sync::LazyLock::new(|| {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
});

fn management(method: &str, path: &str) -> Result<Value, String> {
    let url = format!("{MANAGEMENT}/{path}");
    let agent = &*MANAGEMENT_AGENT;
    let response = match method {
        "GET" => agent.get(&url).header("Authorization", GUEST_AUTH).call(),
        _ => agent
            .delete(&url)
            .header("Authorization", GUEST_AUTH)
            .call(),
    };
    let mut response = response.map_err(|e| format!("{method} {url}: {e}"))?;
    if method == "GET" {
        response
            .body_mut()
            .read_json::<Value>()
            .map_err(|e| format!("{url}: {e}"))
    } else {
        Ok(Value::Null)
    }
}

/// `GET /api/<path>` of the management API.
pub fn management_get(path: &str) -> Result<Value, String> {
    management("GET", path)
}

pub fn management_delete(path: &str) -> Result<Value, String> {
    management("DELETE", path)
}

/// What the management API says of a queue in vhost `/`.
pub fn queue_info(queue: &str) -> Result<Value, String> {
    management_get(&format!("queues/%2F/{queue}"))
}

/// Ready + unacked messages of a queue (0 when it does not exist).
pub fn queue_depth(queue: &str) -> u64 {
    queue_info(queue)
        .ok()
        .and_then(|q| q["messages"].as_u64())
        .unwrap_or(0)
}

/// Consumers of `queue` right now (0 when it does not exist), from a passive declare: exact,
/// unlike the management API's statistics, which lag by seconds.
pub async fn consumer_count(queue: &str) -> u32 {
    consumer_count_at(AMQP_URL, queue).await
}

/// [`consumer_count`] on the broker at `url`.
pub async fn consumer_count_at(url: &str, queue: &str) -> u32 {
    passive_declare(url, queue)
        .await
        .map_or(0, |q| q.consumer_count())
}

/// Messages ready in `queue` right now (not counting unacked ones), from a passive declare.
pub async fn ready_count(queue: &str) -> u32 {
    ready_count_at(AMQP_URL, queue).await
}

/// [`ready_count`] on the broker at `url`.
pub async fn ready_count_at(url: &str, queue: &str) -> u32 {
    passive_declare(url, queue)
        .await
        .map_or(0, |q| q.message_count())
}

async fn passive_declare(url: &str, queue: &str) -> Option<lapin::Queue> {
    let connection = tokio::time::timeout(
        BROKER_CALL,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "connecting to RabbitMQ took over {BROKER_CALL:?}: {}",
            broker_health()
        )
    })
    .ok()?;
    let channel = connection.create_channel().await.ok()?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .ok();
    // Bounded: a close the broker never answers must not hold up the test.
    warren::broker::close(&connection, "test done").await;
    declared
}

/// `rabbitmqctl`, through `sudo -n` when not run as root (Debian's RabbitMQ commands refuse
/// anyone but root and the rabbitmq user).
pub fn rabbitmqctl() -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if is_root {
        Command::new("rabbitmqctl")
    } else {
        let mut command = Command::new("sudo");
        command.args(["-n", "rabbitmqctl"]);
        command
    }
}

/// Unacknowledged deliveries of `queue` right now, from `rabbitmqctl` (exact, unlike the
/// management API's statistics).
pub fn unacked_count(queue: &str) -> u64 {
    let output = rabbitmqctl()
        .args(["-q", "list_queues", "name", "messages_unacknowledged"])
        .output()
        .expect("run rabbitmqctl");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            (parts.next()? == queue).then(|| parts.next()?.parse().ok())?
        })
        .next()
        .unwrap_or(0)
}

/// Deletes a queue through the management API.
pub fn management_delete_queue(queue: &str) -> Result<Value, String> {
    management_delete(&format!("queues/%2F/{queue}"))
}
