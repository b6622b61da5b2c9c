//! The gateway's link to RabbitMQ: one [`Client`] at a time, replaced whenever its
//! connection is lost (with the reconnect backoff of `[broker]`, forever), and the guard
//! that cancels a task whose HTTP caller went away.
//!
//! While no client is connected, requests get 503 at once rather than waiting; requests that
//! were waiting when the connection dropped end with 503 too (their reply queue went with it).

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::{self, BlockedWatch, Topology};
use crate::client::{Client, Pending};
use crate::config::Settings;
use crate::gateway::backlog::Backlog;
use crate::gateway::errors::{ApiError, QUEUE_FULL};
use crate::gateway::metrics::GatewayMetrics;
use crate::retry::ReconnectBackoff;

/// Most cancels kept for sending after a reconnection.
const UNSENT_CANCELS_AT_MOST: usize = 10_000;

/// The current client, if connected, and the cancels that could not be sent yet.
#[derive(Clone, Default)]
pub struct BrokerLink {
    current: Arc<RwLock<Option<Arc<Client>>>>,
    unsent_cancels: Arc<Mutex<Vec<String>>>,
    blocked: BlockedWatch,
    backlog: Backlog,
}

impl BrokerLink {
    /// Sends a cancel for task `id` in the background, on the current runtime (none: no
    /// cancel): the caller does not wait for the broker, which may be blocking publishers.
    pub fn cancel_later(&self, id: String) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let broker_link = self.clone();
            runtime.spawn(async move { broker_link.cancel(id).await });
        }
    }

    /// Sends a cancel for task `id` now, or as soon as the broker is back.
    pub async fn cancel(&self, id: String) {
        let sent = match self.client() {
            Some(client) => client.cancel(&id).await,
            None => Err(crate::client::ClientError::Disconnected),
        };
        match sent {
            Ok(()) => info!(id = %id, "task cancelled for its caller"),
            Err(e) => {
                warn!(id = %id, error = %e, "the cancel waits for the broker");
                if let Ok(mut unsent) = self.unsent_cancels.lock() {
                    if unsent.len() < UNSENT_CANCELS_AT_MOST {
                        unsent.push(id);
                    }
                }
            }
        }
    }

    async fn send_unsent_cancels(&self) {
        let unsent = self
            .unsent_cancels
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default();
        for id in unsent {
            self.cancel(id).await;
        }
    }

    /// The broker's reason while it blocks the connection (a resource alarm).
    pub fn blocked_reason(&self) -> Option<String> {
        self.blocked.reason()
    }

    /// The connected client to publish a caller's task with: 503 while (re)connecting or
    /// while the broker blocks publishers, instead of a request that hangs.
    pub fn publishing_client(&self) -> Result<Arc<Client>, ApiError> {
        if let Some(reason) = self.blocked.reason() {
            return Err(ApiError::broker_blocked(&reason));
        }
        self.client()
            .ok_or_else(|| ApiError::unavailable("not connected to RabbitMQ; try again"))
    }

    /// Runs `publish` unless the broker blocks the connection first: a blocked publish waits
    /// until the alarm clears, so its caller gets 503 now. A message already handed to the
    /// connection is then published when the alarm clears; its caller is gone, so the
    /// handler's [`CancelOnDrop`] cancels it.
    pub async fn unless_blocked<T>(
        &self,
        publish: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        tokio::select! {
            result = publish => result,
            reason = self.blocked.blocked() => Err(ApiError::broker_blocked(&reason)),
        }
    }

    /// Publishes task `id` with `publish` on the connected client, unless the broker blocks
    /// first, and returns its replies with the guard that cancels it if its caller stops
    /// waiting. A task refused or never sent needs no cancel: its guard is disarmed; one
    /// whose publish a blocked broker held may still go out, so its guard stays armed.
    pub async fn publish_guarded<F, Fut>(
        &self,
        id: &str,
        metrics: Arc<GatewayMetrics>,
        publish: F,
    ) -> Result<(Pending, CancelOnDrop), ApiError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<Pending, ApiError>>,
    {
        let client = self.publishing_client()?;
        let mut guard = CancelOnDrop::new(self.clone(), id, metrics);
        match self.unless_blocked(publish(client)).await {
            Ok(pending) => Ok((pending, guard)),
            Err(e) => {
                if !e.is_blocked() {
                    guard.disarm();
                }
                Err(self.with_drain_estimate(e))
            }
        }
    }

    /// `e`, and when a full queue refused the task, its `Retry-After` from how fast that
    /// queue drains (else the fallback stays).
    pub fn with_drain_estimate(&self, mut e: ApiError) -> ApiError {
        if e.code == QUEUE_FULL {
            e.retry_after = Some(self.backlog.retry_after_full(e.refused_key()));
        }
        e
    }

    /// What the task queues hold and how fast they drain, as last polled.
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// The connected client, or `None` while (re)connecting.
    pub fn client(&self) -> Option<Arc<Client>> {
        let client = self.current.read().ok()?.clone()?;
        (!client.is_closed()).then_some(client)
    }

    /// Keeps a client connected until `shutdown`: connects, declares the topology, and
    /// reconnects with backoff whenever the connection is lost.
    pub async fn maintain(self, settings: Settings, shutdown: CancellationToken) {
        let name = broker::process_name(&settings.gateway.connection_name);
        let topology = Topology::new(&settings);
        let mut backoff = ReconnectBackoff::new(&settings.broker);
        let mut tries = 0u32;
        loop {
            match connect(&settings, &name, &topology).await {
                Ok(client) => {
                    info!(connection_name = %name, reply_to = client.reply_to(), "connected to RabbitMQ");
                    let client = Arc::new(client);
                    self.blocked.follow(client.connection());
                    if let Ok(mut current) = self.current.write() {
                        *current = Some(client.clone());
                    }
                    self.send_unsent_cancels().await;
                    let connected = Instant::now();
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            client.close().await;
                            return;
                        }
                        _ = client.lost() => {}
                    }
                    if let Ok(mut current) = self.current.write() {
                        *current = None;
                    }
                    if connected.elapsed() > std::time::Duration::from_secs(30) {
                        backoff.reset();
                        tries = 0;
                    }
                    warn!("lost the broker; reconnecting");
                }
                Err(e) => {
                    tries += 1;
                    warn!(attempt = tries, error = %e, "cannot reach RabbitMQ; retrying");
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

async fn connect(
    settings: &Settings,
    name: &str,
    topology: &Topology,
) -> Result<Client, crate::client::ClientError> {
    let client = Client::connect(&settings.broker.url, name, topology.client_route()).await?;
    topology.declare(client.connection()).await?;
    Ok(client)
}

/// Cancels task `id` when dropped before [`CancelOnDrop::disarm`]: the HTTP caller went
/// away (its connection closed and the handler was dropped) or gave up, so no worker should
/// go on generating for nobody.
pub struct CancelOnDrop {
    broker_link: Option<BrokerLink>,
    id: String,
    metrics: Arc<GatewayMetrics>,
}

impl CancelOnDrop {
    /// Guards task `id`; counts the cancels it sends in `metrics`.
    pub fn new(broker_link: BrokerLink, id: &str, metrics: Arc<GatewayMetrics>) -> CancelOnDrop {
        CancelOnDrop {
            broker_link: Some(broker_link),
            id: id.to_owned(),
            metrics,
        }
    }

    /// The task ended: nothing to cancel.
    pub fn disarm(&mut self) {
        self.broker_link = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(broker_link) = self.broker_link.take() else {
            return;
        };
        self.metrics.cancelled();
        // Drop cannot await.
        broker_link.cancel_later(std::mem::take(&mut self.id));
    }
}
