//! The caller's side of wire contract v1, as a library: build a task body, publish it
//! persistent and publisher-confirmed with `reply_to` this client's reply queue, and await its
//! chunks and its final reply by `correlation_id`. `warren submit`, `warren bench`, the
//! gateway and the tests all use this one client.
//!
//! One [`Client`] owns one connection, one confirm channel and one exclusive reply queue
//! shared by every request it sends; a router task hands each arriving message to the waiter
//! of its correlation id. Dropping a [`Pending`] removes its waiter, so a caller that gives up
//! leaks nothing. When the connection is lost, every waiter ends (its stream yields `None`)
//! and [`Client::is_closed`] turns true: the owner decides whether to reconnect.
//! It must not decide what a worker does with a task, nor retry on its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::{BasicProperties, Connection};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::{self, headers, BrokerError, Published, Publisher, Route, PERSISTENT};
use crate::protocol::{
    Cancel, Chunk, Message, Reply, TaskBody, Tier, HEADER_PUBLISHED_US, HEADER_WORKER_MICROS,
};
use crate::telemetry::traces;

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker refused the task: the requests queue is full (`x-overflow = reject-publish`).
    #[error("the requests queue `{0}` is full: the broker refused the task")]
    QueueFull(String),
    /// No queue took the task (the requests queue does not exist).
    #[error("no queue `{0}` took the task: is the topology declared?")]
    Unroutable(String),
    /// The connection to the broker is gone.
    #[error("the connection to RabbitMQ is lost")]
    Disconnected,
    /// Any other broker failure.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A message that arrived for one request.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A worker took the task to its engine (the task asked for `progress`).
    Started,
    /// A streamed piece of text.
    Chunk(Chunk),
    /// The final reply (ok or error), when it arrived, and the worker's own time for the
    /// task (header `x-warren-worker-us`) when the worker sent it.
    Reply {
        /// The reply body.
        reply: Reply,
        /// When the client received it.
        arrived: Instant,
        /// The worker's own time.
        worker_time: Option<Duration>,
    },
}

type Waiters = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Incoming>>>>;

/// A connection to RabbitMQ that sends tasks and awaits their replies.
pub struct Client {
    connection: Connection,
    publisher: Publisher,
    reply_to: String,
    route: Route,
    waiters: Waiters,
    closed: CancellationToken,
}

impl Client {
    /// Connects as `name` (shown in the management UI), opens a confirm channel and an
    /// exclusive reply queue, and starts routing replies.
    pub async fn connect(
        url: &secrecy::SecretString,
        name: &str,
        route: Route,
    ) -> Result<Client, ClientError> {
        let connection = broker::connect(url, name).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::from)?;
        let (reply_to, replies) =
            broker::consume_exclusive_queue(&channel, &format!("{name}#replies")).await?;
        let publisher = Publisher::open(&connection).await?;
        let waiters: Waiters = Arc::default();
        let closed = CancellationToken::new();
        tokio::spawn(route_replies(replies, waiters.clone(), closed.clone()));
        Ok(Client {
            connection,
            publisher,
            reply_to,
            route,
            waiters,
            closed,
        })
    }

    /// The reply queue this client's tasks name in `reply_to`.
    pub fn reply_to(&self) -> &str {
        &self.reply_to
    }

    /// Whether the connection is gone (the client cannot be used again).
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled() || !self.connection.status().connected()
    }

    /// Resolves when the connection is lost (the reply consumer ended).
    pub async fn lost(&self) {
        self.closed.cancelled().await
    }

    /// The underlying connection (to declare the topology, say).
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Publishes `body` as task `id` (its `message_id` and `correlation_id`), persistent and
    /// confirmed, and returns the handle its chunks and reply arrive on. A full queue is
    /// [`ClientError::QueueFull`]; nothing is left waiting when publishing fails.
    pub async fn submit(&self, id: &str, body: &TaskBody) -> Result<Pending, ClientError> {
        self.submit_bytes(id, &body.to_bytes()).await
    }

    /// Like [`Client::submit`] with a body given as bytes (which may be anything: the worker
    /// validates it).
    pub async fn submit_bytes(&self, id: &str, body: &[u8]) -> Result<Pending, ClientError> {
        self.submit_routed(id, body, None, Tier::Interactive).await
    }

    /// Like [`Client::submit_bytes`], published with `routing_key` instead of the route's own
    /// (under routing by model: the task's model), to the queue of `tier`. A key no queue is
    /// bound to is [`ClientError::Unroutable`].
    pub async fn submit_routed(
        &self,
        id: &str,
        body: &[u8],
        routing_key: Option<&str>,
        tier: Tier,
    ) -> Result<Pending, ClientError> {
        if self.is_closed() {
            return Err(ClientError::Disconnected);
        }
        let pending = self.wait_for(id);
        self.send_to(id, body, &self.reply_to, routing_key, tier)
            .await?;
        Ok(pending)
    }

    /// Like [`Client::submit_bytes`], to `queue` through the default exchange whatever this
    /// client's route (embedding tasks have their own queue). A queue that does not exist is
    /// [`ClientError::Unroutable`].
    pub async fn submit_to_queue(
        &self,
        id: &str,
        body: &[u8],
        queue: &str,
    ) -> Result<Pending, ClientError> {
        if self.is_closed() {
            return Err(ClientError::Disconnected);
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(id.to_owned(), sender);
        }
        let pending = Pending {
            id: id.to_owned(),
            receiver,
            waiters: self.waiters.clone(),
        };
        self.publish_task(id, body, &self.reply_to, "", queue)
            .await?;
        Ok(pending)
    }

    /// Publishes task `id` with another `reply_to` (a durable queue someone else consumes):
    /// this client waits for nothing. Confirmed like [`Client::submit`]; `routing_key` and
    /// `tier` as in [`Client::submit_routed`].
    pub async fn send_to(
        &self,
        id: &str,
        body: &[u8],
        reply_to: &str,
        routing_key: Option<&str>,
        tier: Tier,
    ) -> Result<(), ClientError> {
        let route = &self.route;
        let key = tier.key(routing_key.unwrap_or(&route.routing_key));
        self.publish_task(id, body, reply_to, &route.exchange, &key)
            .await
    }

    /// Like [`Client::send_to`], to `queue` through the default exchange whatever this
    /// client's route (embedding tasks have their own queue).
    pub async fn send_to_queue(
        &self,
        id: &str,
        body: &[u8],
        reply_to: &str,
        queue: &str,
    ) -> Result<(), ClientError> {
        self.publish_task(id, body, reply_to, "", queue).await
    }

    /// Registers a waiter for task `id`'s messages; from here on the returned guard removes it
    /// whatever happens.
    fn wait_for(&self, id: &str) -> Pending {
        let (sender, receiver) = mpsc::unbounded_channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(id.to_owned(), sender);
        }
        Pending {
            id: id.to_owned(),
            receiver,
            waiters: self.waiters.clone(),
        }
    }

    /// Publishes task `id` to `exchange` with `key`, persistent, mandatory and confirmed.
    async fn publish_task(
        &self,
        id: &str,
        body: &[u8],
        reply_to: &str,
        exchange: &str,
        key: &str,
    ) -> Result<(), ClientError> {
        if self.is_closed() {
            return Err(ClientError::Disconnected);
        }
        let destination = if exchange.is_empty() { key } else { exchange };
        let span = tracing::info_span!(
            "publish",
            otel.name = %format!("publish {destination}"),
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.destination.name = destination,
            messaging.message.id = id,
        );
        // Read after the span starts, so that the worker's queue wait starts inside it.
        let published_us = i64::try_from(crate::clock::unix_micros()).unwrap_or(i64::MAX);
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_correlation_id(id.into())
            .with_message_id(id.into())
            .with_reply_to(reply_to.into())
            .with_timestamp(crate::clock::unix_seconds())
            .with_headers(headers::table([(
                HEADER_PUBLISHED_US,
                headers::int(published_us),
            )]));
        // The task's headers name this span: the worker's span of the task is its child.
        let properties = span.in_scope(|| traces::with_current_context(properties));
        let published = self
            .publisher
            .publish(exchange, key, true, body, properties)
            .instrument(span)
            .await;
        match published {
            Ok(Published::Delivered) => Ok(()),
            Ok(Published::Returned) => Err(ClientError::Unroutable(key.to_owned())),
            Err(BrokerError::Nacked(_)) => Err(ClientError::QueueFull(key.to_owned())),
            Err(e) if self.is_closed() => {
                tracing::debug!(error = %e, "publish failed on a closed connection");
                Err(ClientError::Disconnected)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Asks every worker to cancel task `id` (control exchange, fanout, confirmed). A worker
    /// holding it stops it and replies `cancelled`; one that gets it later skips it.
    pub async fn cancel(&self, id: &str) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&Cancel::new(id)).unwrap_or_default();
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_type(Cancel::TYPE.into());
        self.publisher
            .publish(&self.route.control_exchange, "", false, &body, properties)
            .await?;
        Ok(())
    }

    /// Closes the connection (the reply queue goes with it).
    pub async fn close(&self) {
        crate::broker::close(&self.connection, "client done").await;
    }
}

/// The messages of one request: chunks (when it streams), then its final reply. Dropping it
/// stops listening for them.
pub struct Pending {
    id: String,
    receiver: mpsc::UnboundedReceiver<Incoming>,
    waiters: Waiters,
}

impl Pending {
    /// The task's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next message, or `None` when the connection was lost (or the reply came already).
    pub async fn next(&mut self) -> Option<Incoming> {
        self.receiver.recv().await
    }

    /// The final reply, skipping chunks and `started`; `Disconnected` when the connection
    /// was lost.
    pub async fn reply(mut self) -> Result<Answer, ClientError> {
        while let Some(incoming) = self.next().await {
            if let Incoming::Reply {
                reply,
                arrived,
                worker_time,
            } = incoming
            {
                return Ok(Answer {
                    reply,
                    arrived,
                    worker_time,
                });
            }
        }
        Err(ClientError::Disconnected)
    }
}

/// The final reply of a request, as [`Pending::reply`] returns it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The reply body.
    pub reply: Reply,
    /// When the client received it.
    pub arrived: Instant,
    /// The worker's own time for the task (header `x-warren-worker-us`), when sent.
    pub worker_time: Option<Duration>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&self.id);
        }
    }
}

/// Hands each message of the reply queue to its waiter. A final reply ends the waiter; when
/// the consumer ends (connection lost) every waiter is dropped, which ends their streams.
async fn route_replies(mut replies: lapin::Consumer, waiters: Waiters, closed: CancellationToken) {
    while let Some(Ok(delivery)) = replies.next().await {
        let arrived = Instant::now();
        let Some(id) = delivery.properties.correlation_id().as_ref() else {
            continue;
        };
        let Some(incoming) = decode(&delivery, arrived) else {
            tracing::warn!(correlation_id = %id, "a reply that is not contract v1 JSON was ignored");
            continue;
        };
        let Ok(mut waiters) = waiters.lock() else {
            break;
        };
        let is_final = matches!(incoming, Incoming::Reply { .. });
        if let Some(sender) = waiters.get(id.as_str()) {
            let _ = sender.send(incoming);
            if is_final {
                waiters.remove(id.as_str());
            }
        }
    }
    closed.cancel();
    if let Ok(mut waiters) = waiters.lock() {
        waiters.clear();
    }
}

fn decode(delivery: &lapin::message::Delivery, arrived: Instant) -> Option<Incoming> {
    Some(match Message::decode(&delivery.data)? {
        Message::Started(_) => Incoming::Started,
        Message::Chunk(chunk) => Incoming::Chunk(chunk),
        Message::Reply(reply) => Incoming::Reply {
            reply,
            arrived,
            worker_time: headers::integer(&delivery.properties, HEADER_WORKER_MICROS)
                .and_then(|us| u64::try_from(us).ok())
                .map(Duration::from_micros),
        },
    })
}
