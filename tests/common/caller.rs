//! A calling service as the tests play it: lapin, publisher confirms, an exclusive reply
//! queue, and the replies (and chunks) read from it by correlation id.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};
use serde_json::Value;

use super::{broker_health, AMQP_URL, BROKER_CALL, PATIENCE};

/// A calling service: publishes tasks with publisher confirms and reads its replies from
/// its own exclusive reply queue.
pub struct Caller {
    connection: Connection,
    pub channel: Channel,
    pub reply_queue: String,
    replies: Consumer,
    early: HashMap<String, (BasicProperties, Value)>,
}

impl Caller {
    pub async fn connect() -> Caller {
        Self::connect_with_reply_queue(None).await
    }

    /// An upstream whose replies go to the durable queue `name` (declared here, never
    /// exclusive), which outlives this client's connection and a broker restart.
    pub async fn connect_with_reply_queue(durable: Option<&str>) -> Caller {
        Self::connect_to(AMQP_URL, durable).await
    }

    /// [`Caller::connect_with_reply_queue`] on the broker at `url`.
    pub async fn connect_to(url: &str, durable: Option<&str>) -> Caller {
        let connection = tokio::time::timeout(
            BROKER_CALL,
            Connection::connect(
                url,
                ConnectionProperties::default().with_connection_name("warren-test-upstream".into()),
            ),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "connecting to RabbitMQ took over {BROKER_CALL:?}: {}",
                broker_health()
            )
        })
        .expect("connect to RabbitMQ (is it running? `make broker-up`)");
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let options = match durable {
            Some(_) => QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            None => QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
        };
        let queue = channel
            .queue_declare(durable.unwrap_or("").into(), options, FieldTable::default())
            .await
            .unwrap();
        let replies = channel
            .basic_consume(
                queue.name().clone(),
                "test-replies".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        Caller {
            connection,
            channel,
            reply_queue: queue.name().to_string(),
            replies,
            early: HashMap::new(),
        }
    }

    /// Publishes raw bytes to `queue` through the default exchange and waits for the confirm.
    pub async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Confirmation {
        let published = async {
            self.channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await
                .expect("publish")
                .await
                .expect("confirm")
        };
        tokio::time::timeout(PATIENCE, published)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no publisher confirm from RabbitMQ within {PATIENCE:?}: {}",
                    broker_health()
                )
            })
    }

    /// The properties a well-behaved client sets: JSON, persistent, reply_to, correlation_id.
    pub fn properties(&self, correlation_id: &str) -> BasicProperties {
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_correlation_id(correlation_id.into())
            .with_reply_to(self.reply_queue.as_str().into())
    }

    /// Sends `body` bytes with the usual properties; returns the correlation id.
    pub async fn send_bytes(&self, queue: &str, body: &[u8]) -> String {
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let confirm = self
            .publish(queue, body, self.properties(&correlation_id))
            .await;
        assert!(confirm.is_ack(), "publish not confirmed: {confirm:?}");
        correlation_id
    }

    /// Sends a JSON task; returns the correlation id.
    pub async fn send(&self, queue: &str, task: &Value) -> String {
        self.send_bytes(queue, task.to_string().as_bytes()).await
    }

    /// Waits for the reply with `correlation_id`.
    pub async fn reply_with_properties(
        &mut self,
        correlation_id: &str,
    ) -> (BasicProperties, Value) {
        if let Some(reply) = self.early.remove(correlation_id) {
            return reply;
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let next = tokio::time::timeout_at(deadline, self.replies.next())
                .await
                .unwrap_or_else(|_| panic!("no reply for {correlation_id} in time"))
                .expect("reply consumer ended")
                .expect("reply delivery");
            let body: Value = serde_json::from_slice(&next.data).expect("reply is JSON");
            let cid = correlation_id_of(&next.properties);
            if cid == correlation_id {
                return (next.properties, body);
            }
            self.early.insert(cid, (next.properties, body));
        }
    }

    /// The correlation ids of the next `count` replies, in the order they arrive.
    pub async fn next_replies(&mut self, count: usize) -> Vec<String> {
        assert!(self.early.is_empty(), "replies were already buffered");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut ids = Vec::with_capacity(count);
        while ids.len() < count {
            let next = tokio::time::timeout_at(deadline, self.replies.next())
                .await
                .expect("replies in time")
                .expect("reply consumer ended")
                .expect("reply delivery");
            let cid = correlation_id_of(&next.properties);
            ids.push(cid);
        }
        ids
    }

    /// The next reply to arrive within `wait`, if any (buffered ones first).
    pub async fn any_reply_within(&mut self, wait: Duration) -> Option<(String, Value)> {
        if let Some(cid) = self.early.keys().next().cloned() {
            let (_, body) = self.early.remove(&cid)?;
            return Some((cid, body));
        }
        let next = tokio::time::timeout(wait, self.replies.next())
            .await
            .ok()??
            .ok()?;
        let cid = correlation_id_of(&next.properties);
        Some((
            cid,
            serde_json::from_slice(&next.data).expect("reply is JSON"),
        ))
    }

    pub async fn reply(&mut self, correlation_id: &str) -> Value {
        self.reply_with_properties(correlation_id).await.1
    }

    /// Sends a task and waits for its reply.
    pub async fn request(&mut self, queue: &str, task: &Value) -> Value {
        let correlation_id = self.send(queue, task).await;
        let reply = self.reply(&correlation_id).await;
        assert_eq!(
            reply["id"],
            Value::String(correlation_id.clone()),
            "{reply}"
        );
        reply
    }

    /// Takes messages from `queue` (acking them) until one has `correlation_id`.
    pub async fn take_from(&self, queue: &str, correlation_id: &str) -> (BasicProperties, Vec<u8>) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            match got {
                Some(message) => {
                    let matches = message
                        .delivery
                        .properties
                        .correlation_id()
                        .as_ref()
                        .is_some_and(|c| c.as_str() == correlation_id);
                    if matches {
                        return (message.delivery.properties, message.delivery.data);
                    }
                }
                None => {
                    assert!(
                        Instant::now() < deadline,
                        "nothing with correlation id {correlation_id} arrived in {queue}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Takes the next message of `queue` (acked), if any.
    pub async fn get(&self, queue: &str) -> Option<lapin::message::BasicGetMessage> {
        self.channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
    }

    pub async fn close(self) {
        // Bounded: a close the broker never answers must not hold up the test.
        warren::broker::close(&self.connection, "test done").await;
    }
}

/// A header of a message as text (strings) or number (integers).
pub fn header(properties: &BasicProperties, name: &str) -> Option<String> {
    use lapin::types::AMQPValue;
    let value = properties.headers().as_ref()?.inner().get(name)?.clone();
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::LongLongInt(v) => v.to_string(),
        AMQPValue::LongInt(v) => v.to_string(),
        other => format!("{other:?}"),
    })
}

/// A message's correlation id (empty when it has none).
pub fn correlation_id_of(properties: &BasicProperties) -> String {
    properties
        .correlation_id()
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default()
}
