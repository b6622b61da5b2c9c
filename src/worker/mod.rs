//! The worker: keeps a consuming session with RabbitMQ alive and hands each delivery to
//! [`delivery`], which decides its fate.
//!
//! Owns the session life cycle: connect (with backoff, forever), declare the topology,
//! consume with the configured prefetch, and on the way out either drain gracefully
//! (shutdown: cancel the consumer, let tasks in flight finish within the grace period, requeue
//! the rest) or drop what the lost channel held (connection lost: the broker redelivers those,
//! so running them on would only make duplicates). Interactive tasks arrive on a consumer;
//! batch tasks are taken when a slot is free ([`batch_tier`]). It must not decide what
//! happens to one task; that is [`delivery`]'s job.

mod batch_tier;
mod cancels;
mod consumers;
mod delivery;
mod fate;
mod faults;
mod finished;
mod kept;
mod outbox;
mod run;
mod service;
mod spans;
mod stream;
mod task_meta;
mod timings;
mod unanswered;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::types::FieldTable;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::broker::{self, BrokerError, Publisher, Topology, TxChannel};
use crate::config::Settings;
use crate::engine::Engine;
use crate::retry::{ReconnectBackoff, RetryPolicy};
use crate::telemetry::Telemetry;
use cancels::Cancellations;
use consumers::Consumers;
use finished::Finished;
pub use service::{Worker, WorkerError};
use unanswered::Unanswered;

/// How long handlers get to notice they were abandoned and return their delivery.
const ABANDON_GRACE: Duration = Duration::from_secs(5);

/// A session that lasted this long counts as healthy: the reconnect backoff starts over.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Everything a delivery handler needs, shared by all tasks in flight of a tier.
#[derive(Clone)]
pub(crate) struct Shared {
    pub engine: Arc<Engine>,
    /// Whether deliveries are generation tasks or embedding tasks.
    pub role: crate::config::EngineRole,
    /// The channel deliveries arrive on, in tx mode: what a delivery owes and its ack are
    /// committed together.
    pub settling: Arc<TxChannel>,
    /// A confirm channel for what is not part of a delivery's commit (chunks, recounts).
    pub publisher: Publisher,
    /// The queues of the tier its deliveries come from: where a retry waits, where a
    /// dead letter says it came from.
    pub topology: Topology,
    pub limits: crate::protocol::Limits,
    /// Oldest task (by AMQP timestamp) still run, in ms; 0 = no limit.
    pub max_age_ms: u64,
    /// The retry policy of the tier (its delay queues).
    pub retry: RetryPolicy,
    pub worker_name: String,
    pub max_redeliveries: u32,
    pub fault_injection: bool,
    pub classic_queue: bool,
    pub telemetry: Arc<Telemetry>,
    pub stream: crate::config::StreamSettings,
    pub cancels: Cancellations,
    pub finished: Option<Arc<Finished>>,
    /// Copies of what commits cut off without an answer owed, for the next publisher.
    pub unanswered: Unanswered,
}

/// What outlives a session: remembered cancels, the finished-task marks, the copies kept
/// for commits cut off without an answer.
struct Lasting {
    cancels: Cancellations,
    finished: Option<Arc<Finished>>,
    unanswered: Unanswered,
}

impl Lasting {
    /// Ends the worker with `result`, saying what it could not keep.
    fn stopping(&self, result: Result<(), BrokerError>) -> Result<(), BrokerError> {
        self.unanswered.report_lost();
        result
    }
}

/// How a session ended.
enum SessionEnd {
    /// The shutdown token was cancelled and the session drained.
    Shutdown,
    /// The broker went away (or could not be reached); try again.
    Lost(String),
    /// The broker's queues contradict the configuration: trying again cannot help.
    Misconfigured(BrokerError),
}

/// Serves tasks until `shutdown` is cancelled. Reconnects with exponential backoff whenever
/// the broker is lost or unreachable. Ends early only when an existing queue or exchange has
/// other arguments than the configuration (an operator's error, not a passing fault).
pub(crate) async fn run(
    settings: &Settings,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    telemetry: Arc<Telemetry>,
) -> Result<(), BrokerError> {
    let worker_name = broker::process_name(&settings.broker.connection_name);
    let mut backoff = ReconnectBackoff::new(&settings.broker);
    let mut tries = 0u32;
    // Outlives sessions: a cancel remembered before a reconnection still applies after it.
    let lasting = Lasting {
        cancels: Cancellations::default(),
        finished: Finished::configured(settings),
        unanswered: Unanswered::default(),
    };
    loop {
        let started = Instant::now();
        let session = session(
            settings,
            &engine,
            &worker_name,
            &shutdown,
            &telemetry,
            &lasting,
        );
        match session.await {
            SessionEnd::Shutdown => return lasting.stopping(Ok(())),
            SessionEnd::Misconfigured(error) => return lasting.stopping(Err(error)),
            SessionEnd::Lost(reason) => {
                telemetry.readiness.set(false);
                telemetry.metrics.reconnected();
                if started.elapsed() > HEALTHY_SESSION {
                    backoff.reset();
                    tries = 0;
                }
                tries += 1;
                let delay = backoff.next_delay();
                warn!(
                    attempt = tries,
                    delay_ms = delay.as_millis() as u64,
                    reason = %reason,
                    "lost the broker; reconnecting"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return lasting.stopping(Ok(())),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn session(
    settings: &Settings,
    engine: &Arc<Engine>,
    worker_name: &str,
    shutdown: &CancellationToken,
    telemetry: &Arc<Telemetry>,
    lasting: &Lasting,
) -> SessionEnd {
    let consuming = start_consuming(settings, engine, worker_name, telemetry, lasting);
    let consuming = match consuming.await {
        Ok(consuming) => consuming,
        Err(e @ (BrokerError::TopologyMismatch { .. } | BrokerError::TopologyConflict(_))) => {
            return SessionEnd::Misconfigured(e)
        }
        Err(e) => return SessionEnd::Lost(e.to_string()),
    };
    let Consuming {
        connection,
        mut consumers,
        mut batch,
    } = consuming;
    telemetry.readiness.set(true);

    // Cancelled when the tasks in flight must give their deliveries back.
    let abandon = CancellationToken::new();
    let mut in_flight = JoinSet::new();
    let end = loop {
        // Whether to look at the batch queue: a slot may have been freed, or it is time.
        // Interactive deliveries already here are taken first (biased), so that the batch
        // queue is only looked at with every one of them counted as held.
        let look = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break SessionEnd::Shutdown,
            next = consumers.next() => match next {
                Ok((shared, delivery)) => {
                    in_flight.spawn(delivery::handle(shared, delivery, abandon.clone()));
                    false
                }
                Err(reason) => break SessionEnd::Lost(reason),
            },
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                // A panic while running a task fails its attempt (see `delivery`); one while
                // settling it leaves the delivery unacked until the channel goes: say so loudly.
                if let Some(e) = joined.err().filter(|e| e.is_panic()) {
                    error!(error = %e, "a task's handler panicked while settling; its delivery is held until the channel closes");
                }
                true
            }
            _ = batch_tier::next_look(&mut batch) => true,
        };
        if let (true, Some(batch)) = (look, &batch) {
            match batch.take(in_flight.len()).await {
                Ok(taken) => {
                    for (shared, delivery) in taken {
                        in_flight.spawn(delivery::handle(shared, delivery, abandon.clone()));
                    }
                }
                Err(e) => break SessionEnd::Lost(e.to_string()),
            }
        }
    };
    telemetry.readiness.set(false);

    match &end {
        SessionEnd::Shutdown => {
            info!(
                in_flight = in_flight.len(),
                "shutting down: no new tasks are taken"
            );
            // Bounded: a broker that blocks the connection must not hold up the drain.
            let publisher = consumers.shared().first().map(|s| s.publisher.clone());
            let cancel = consumers.cancel();
            let _ = tokio::time::timeout(ABANDON_GRACE, cancel).await;
            let grace = Duration::from_millis(settings.worker.shutdown_grace_ms);
            if !drain(&mut in_flight, grace).await {
                warn!(
                    left = in_flight.len(),
                    "shutdown grace is over: returning unfinished tasks to the queue"
                );
                abandon.cancel();
                if !drain(&mut in_flight, ABANDON_GRACE).await {
                    in_flight.abort_all();
                }
            }
            // The publisher's channel outlives a commit cut off during the drain.
            if let Some(publisher) = publisher {
                let kept = lasting.unanswered.publish(&publisher, &telemetry.metrics);
                if let Err(e) = kept.await {
                    warn!(error = %e, "could not keep what commits without an answer owed");
                }
            }
            // Closing the connection closes its channels; unacked deliveries return to the queue.
            if crate::broker::close(&connection, "worker stopping").await {
                info!("disconnected cleanly");
            } else {
                warn!("disconnected without the broker's close-ok; it requeues what was unacked as the socket closes");
            }
        }
        SessionEnd::Lost(reason) => {
            warn!(
                in_flight = in_flight.len(),
                reason = %reason,
                "channel lost: cancelling the tasks it held (the broker redelivers them)"
            );
            abandon.cancel();
            if !drain(&mut in_flight, ABANDON_GRACE).await {
                in_flight.abort_all();
            }
        }
        // Found while declaring the topology, before any task was taken: nothing to drain.
        SessionEnd::Misconfigured(_) => {}
    }
    end
}

/// Waits for every task in flight, at most `limit`. Whether all finished.
async fn drain(in_flight: &mut JoinSet<()>, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await
    .is_ok()
}

struct Consuming {
    connection: lapin::Connection,
    consumers: Consumers,
    batch: Option<batch_tier::BatchTier>,
}

async fn start_consuming(
    settings: &Settings,
    engine: &Arc<Engine>,
    worker_name: &str,
    telemetry: &Arc<Telemetry>,
    lasting: &Lasting,
) -> Result<Consuming, BrokerError> {
    let connection = broker::connect(&settings.broker.url, worker_name).await?;
    telemetry.broker_blocked.follow(&connection);
    info!(
        broker = %settings.redacted_broker_url(),
        connection_name = %worker_name,
        "connected to RabbitMQ"
    );
    let topology = Topology::new(settings);
    topology.declare(&connection).await?;
    broker::management::apply_queue_bound_logged(settings).await;

    listen_for_cancels(&connection, &topology, worker_name, lasting.cancels.clone()).await?;
    let publisher = Publisher::open(&connection).await?;
    lasting
        .unanswered
        .publish(&publisher, &telemetry.metrics)
        .await?;
    let settling = Arc::new(TxChannel::select(connection.create_channel().await?).await?);
    let queues = topology.consumed_queues();
    let prefetch = settings.consumer_prefetch(queues.len());
    let shared = Shared {
        engine: engine.clone(),
        role: settings.engine.role,
        settling,
        publisher,
        topology,
        limits: settings.task_limits(),
        max_age_ms: settings.limits.max_age_ms,
        retry: RetryPolicy::new(&settings.retry),
        worker_name: worker_name.to_owned(),
        max_redeliveries: settings.worker.max_redeliveries,
        fault_injection: settings.worker.fault_injection,
        classic_queue: settings.topology.queue_type == crate::config::QueueType::Classic,
        telemetry: telemetry.clone(),
        stream: settings.stream.clone(),
        cancels: lasting.cancels.clone(),
        finished: lasting.finished.clone(),
        unanswered: lasting.unanswered.clone(),
    };
    if queues.len() > usize::from(settings.effective_prefetch()) {
        warn!(
            shards = queues.len(),
            prefetch = settings.effective_prefetch(),
            "more shards than prefetch: each shard's consumer takes one task, so this worker \
             may hold one task per shard, more than it can start at once"
        );
    }
    let consumers = Consumers::start(&connection, &shared, worker_name, prefetch).await?;
    info!(
        queues = ?queues,
        consumer_tags = ?consumers.tags(),
        prefetch,
        model = %engine.info().name,
        role = ?settings.engine.role,
        "consuming"
    );
    let batch = batch_tier::BatchTier::for_worker(settings, &shared, consumers.shared());
    Ok(Consuming {
        connection,
        consumers,
        batch,
    })
}

/// Binds an exclusive queue of this worker to the control exchange and feeds the cancels it
/// receives to `cancels`, for as long as the connection lives.
async fn listen_for_cancels(
    connection: &lapin::Connection,
    topology: &Topology,
    worker_name: &str,
    cancels: Cancellations,
) -> Result<(), BrokerError> {
    let channel = connection.create_channel().await?;
    let (queue, mut control) =
        broker::consume_exclusive_queue(&channel, &format!("{worker_name}#control")).await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            topology.control_exchange().into(),
            "".into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tokio::spawn(async move {
        while let Some(Ok(message)) = control.next().await {
            match crate::protocol::Cancel::parse(&message.data) {
                Some(cancel) => {
                    info!(id = %cancel.id, "cancel received");
                    cancels.cancel(&cancel.id, Instant::now());
                }
                None => warn!("ignored a control message that is not a cancel"),
            }
        }
    });
    Ok(())
}
