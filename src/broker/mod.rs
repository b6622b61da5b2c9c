//! The broker side: connecting to RabbitMQ under a name ops can read, declaring the topology,
//! publishing with publisher confirms, and settling a delivery in one transaction.
//!
//! Owns every AMQP detail below the worker's decisions: names, queue arguments, confirm mode,
//! returned (unroutable) messages and header encoding. It must not decide what happens to a
//! task (that is the worker's job) nor parse task bodies (the protocol's).

mod blocked;
pub mod declare;
pub mod headers;
pub mod management;
mod publisher;
pub mod shards;
mod topology;
mod transaction;

pub use blocked::BlockedWatch;
pub use publisher::{Published, Publisher};
pub use topology::{Route, Topology};
pub use transaction::{BeforeCommit, Outgoing, Settled, Settlement, TxChannel};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

/// AMQP `delivery_mode` of a persistent message (survives a broker restart in a durable queue).
pub const PERSISTENT: u8 = 2;
use secrecy::{ExposeSecret, SecretString};

/// A failure talking to RabbitMQ.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// `broker.url` holds no URL (configuration validation rules this out).
    #[error("broker.url holds no URL")]
    NoUrl,
    /// The connection could not be opened. The URL is redacted.
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect {
        /// The broker URL without its password.
        url: String,
        /// What lapin reported.
        source: lapin::Error,
    },
    /// A queue or exchange exists with arguments that differ from the configuration.
    #[error(
        "{kind} `{name}` already exists with other arguments than warren's configuration \
         ({source}); delete it or make the configuration match"
    )]
    TopologyMismatch {
        /// "queue" or "exchange".
        kind: &'static str,
        /// Its name.
        name: String,
        /// What the broker said.
        source: lapin::Error,
    },
    /// The broker holds a route that contradicts the configuration, or lacks what the
    /// configuration needs; the text says which and how to mend it.
    #[error("{0}")]
    TopologyConflict(String),
    /// The broker refused to take a published message (nack): e.g. a full queue with
    /// `x-overflow = reject-publish`.
    #[error("the broker refused the message published to `{0}` (nack)")]
    Nacked(String),
    /// A mandatory message matched no queue (the broker returned it).
    #[error("the broker could not route the message to `{0}`")]
    Unroutable(String),
    /// The broker ended a consumer (the queue was deleted, say).
    #[error("the broker ended the consumer of `{0}`")]
    ConsumerEnded(String),
    /// The commit a settlement waited for was dropped before it answered (its session is
    /// ending): whether it took effect is unknown. What it did not take the broker gives
    /// back when the channel closes.
    #[error("the commit this delivery waited for was abandoned")]
    CommitAbandoned,
    /// The channel failed while its `tx.commit` was under way (sent, or about to be): the
    /// broker may have taken all of the transaction, none of it, or, when a node failed, a
    /// part (RabbitMQ does not make a transaction atomic across its own failure).
    #[error("{0} (during the commit: whether the broker took it is unknown)")]
    CommitUnanswered(Box<BrokerError>),
    /// A commit of several deliveries failed ([`TxChannel::settle`]): the same failure for
    /// each of them.
    #[error("{source} (a commit of {members} deliveries)")]
    InGroup {
        /// How many deliveries the commit held.
        members: usize,
        /// Why it failed.
        source: Box<BrokerError>,
    },
    /// Any other AMQP failure.
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
}

impl BrokerError {
    /// Whether this is the failure of a commit that may have taken effect, in whole or in
    /// part: the settlement's messages may or may not have reached their queues.
    pub fn commit_outcome_unknown(&self) -> bool {
        match self {
            BrokerError::CommitAbandoned | BrokerError::CommitUnanswered(_) => true,
            BrokerError::InGroup { source, .. } => source.commit_outcome_unknown(),
            _ => false,
        }
    }
}

/// Declares a server-named, exclusive, auto-deleted queue (a client's replies, a worker's
/// control messages) and consumes it (no-ack) with `consumer_tag`. Returns the queue's name.
pub async fn consume_exclusive_queue(
    channel: &lapin::Channel,
    consumer_tag: &str,
) -> Result<(String, lapin::Consumer), BrokerError> {
    let queue = channel
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            consumer_tag.into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    Ok((queue.name().to_string(), consumer))
}

/// The name of this process for the management UI: `<base>@<host>:<pid>`.
pub fn process_name(base: &str) -> String {
    format!("{base}@{}", host_and_pid())
}

/// This process as `HOST:PID` (on Kubernetes the host is the pod's name).
pub fn host_and_pid() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("{host}:{}", std::process::id())
}

/// Opens a connection whose `connection_name` client property is `name`. `url` may list the
/// nodes of a cluster, separated by commas: each call starts with the node after the one the
/// previous call (in this process) started with, and tries them all in turn, so a process
/// that lost its node reconnects to another and a fleet spreads over the nodes.
pub async fn connect(url: &SecretString, name: &str) -> Result<Connection, BrokerError> {
    static NEXT_NODE: AtomicUsize = AtomicUsize::new(0);
    let urls = crate::config::broker_urls(url.expose_secret());
    let first = NEXT_NODE.fetch_add(1, Ordering::Relaxed);
    let mut failure = None;
    for i in 0..urls.len() {
        let url = urls[(first + i) % urls.len()];
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        match Connection::connect(url, properties).await {
            Ok(connection) => return Ok(connection),
            Err(source) => {
                let url = crate::config::redact_url(url);
                tracing::debug!(%url, error = %source, "broker node unreachable; trying the next");
                failure = Some(BrokerError::Connect { url, source });
            }
        }
    }
    Err(failure.unwrap_or(BrokerError::NoUrl))
}

/// How long a process that is done with a connection or channel waits for the broker's
/// close-ok.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Closes `connection` and its channels, waiting at most [`CLOSE_GRACE`] for the broker to
/// confirm; whether it did. The caller is done with it either way, and a close that never
/// completes (the broker gone, or lapin's close racing a channel that is closing) must not
/// keep a process from exiting. Nothing is lost by letting go: the socket stays open until
/// the connection is dropped or the process exits, and then the broker requeues whatever the
/// connection held unacked.
pub async fn close(connection: &Connection, reason: &str) -> bool {
    let closing = connection.close(200, reason.into());
    within_close_grace("the connection", closing).await
}

/// Closes `channel`, waiting at most [`CLOSE_GRACE`], for the reasons [`close`] gives.
pub async fn close_channel(channel: &lapin::Channel, reason: &str) -> bool {
    within_close_grace("a channel", channel.close(200, reason.into())).await
}

async fn within_close_grace(
    what: &str,
    closing: impl std::future::Future<Output = lapin::Result<()>>,
) -> bool {
    match tokio::time::timeout(CLOSE_GRACE, closing).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "closing {what} with the broker failed");
            false
        }
        Err(_) => {
            tracing::warn!(
                grace_s = CLOSE_GRACE.as_secs(),
                "the broker did not confirm the close of {what} in time; letting go"
            );
            false
        }
    }
}
