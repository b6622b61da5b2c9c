//! The broker's floor, measured during a warren run as the baseline for its broker path.
//!
//! A probe message makes the same two hops as a task and its reply, with nothing of warren in
//! between: a persistent, confirmed publish to a durable queue of the requests queue's type,
//! taken by a bare consumer that publishes it on (persistent, confirmed) to the client's reply
//! queue and then acks it, as the worker does with a reply. One probe is in flight at a time,
//! about four times a second, while the real load runs, so it meets the same CPU contention.
//! Warren's broker path minus this floor is what the worker and its client code add.
//!
//! This module only measures; it must not touch the warren topology beyond its own queue.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, headers, BrokerError, Publisher, PERSISTENT};
use crate::config::Settings;

/// Pause between two probes: rare enough that the probes' own broker work (each is two
/// persistent, confirmed messages) stays small next to the load being measured.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// A probe not back within this long is dropped from the sample (it is not a floor).
const PROBE_PATIENCE: Duration = Duration::from_secs(5);
/// How long the echo may take to close its channels once stopped (each close is bounded by
/// `broker::close_channel`'s grace; the two run at once).
const ECHO_STOP: Duration = Duration::from_secs(10);

/// A running probe; [`FloorProbe::finish`] stops it and returns its round trips.
pub(super) struct FloorProbe {
    stop: CancellationToken,
    pinger: JoinHandle<Vec<Duration>>,
    echo: JoinHandle<()>,
    connection: Connection,
    queue: String,
}

impl FloorProbe {
    /// Declares the probe's queue (named after `client_name`) and starts probing.
    pub(super) async fn start(
        settings: &Settings,
        client_name: &str,
    ) -> Result<FloorProbe, BrokerError> {
        let connection =
            broker::connect(&settings.broker.url, &format!("{client_name}#floor")).await?;
        let queue = format!("{client_name}.floor");
        let setup = connection.create_channel().await?;
        setup
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                headers::table([(
                    "x-queue-type",
                    headers::text(settings.topology.queue_type.as_str()),
                )]),
            )
            .await?;
        crate::broker::close_channel(&setup, "OK").await;
        let stop = CancellationToken::new();
        let echo = tokio::spawn(echo(
            connection.create_channel().await?,
            Publisher::open(&connection).await?,
            queue.clone(),
            stop.clone(),
        ));
        let replies_channel = connection.create_channel().await?;
        let (reply_to, replies) =
            broker::consume_exclusive_queue(&replies_channel, "floor-replies").await?;
        let pinger = Pinger {
            publisher: Publisher::open(&connection).await?,
            queue: queue.clone(),
            reply_to,
            replies_channel,
            replies,
        };
        let pinger = tokio::spawn(pinger.run(stop.clone()));
        Ok(FloorProbe {
            stop,
            pinger,
            echo,
            connection,
            queue,
        })
    }

    /// Stops probing, deletes the probe's queue, and returns the round trips measured.
    pub(super) async fn finish(self) -> Vec<Duration> {
        self.stop.cancel();
        let round_trips = self.pinger.await.unwrap_or_default();
        // The echo closes its channels itself: one left to close with the connection can
        // keep lapin's close from finishing.
        let mut echo = self.echo;
        if tokio::time::timeout(ECHO_STOP, &mut echo).await.is_err() {
            echo.abort();
        }
        if let Ok(channel) = self.connection.create_channel().await {
            let _ = channel
                .queue_delete(self.queue.as_str().into(), Default::default())
                .await;
            // Left open, lapin logs an error when the connection closes under it.
            crate::broker::close_channel(&channel, "OK").await;
        }
        crate::broker::close(&self.connection, "floor probe done").await;
        round_trips
    }
}

/// The bare consumer: every probe goes straight on to its `reply_to`, then is acked; until
/// `stop`, then its channels are closed.
async fn echo(
    channel: lapin::Channel,
    publisher: Publisher,
    queue: String,
    stop: CancellationToken,
) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = echo_probes(&channel, &publisher, &queue) => {}
    }
    tokio::join!(publisher.close("OK"), broker::close_channel(&channel, "OK"));
}

async fn echo_probes(channel: &lapin::Channel, publisher: &Publisher, queue: &str) {
    let Ok(()) = channel.basic_qos(1, BasicQosOptions::default()).await else {
        return;
    };
    let Ok(mut deliveries) = channel
        .basic_consume(
            queue.into(),
            "floor-echo".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    else {
        return;
    };
    while let Some(Ok(delivery)) = deliveries.next().await {
        let Some(reply_to) = delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|r| r.to_string())
        else {
            continue;
        };
        let mut properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
        if let Some(probe_id) = delivery.properties.correlation_id() {
            properties = properties.with_correlation_id(probe_id.clone());
        }
        if publisher
            .publish("", &reply_to, false, &delivery.data, properties)
            .await
            .is_err()
        {
            return;
        }
        let _ = delivery.ack(BasicAckOptions::default()).await;
    }
}

/// The probe's sending side: publishes probes to `queue` and reads their echoes from its own
/// exclusive reply queue.
struct Pinger {
    publisher: Publisher,
    queue: String,
    /// The reply queue's name.
    reply_to: String,
    replies_channel: lapin::Channel,
    replies: lapin::Consumer,
}

impl Pinger {
    /// Sends one probe at a time until `stop`, timing each until its echo arrives; then closes
    /// its channels.
    async fn run(self, stop: CancellationToken) -> Vec<Duration> {
        let Pinger {
            publisher,
            queue,
            reply_to,
            replies_channel,
            mut replies,
        } = self;
        let mut round_trips = Vec::new();
        let body = [b'.'; 256];
        let mut sequence = 0_u64;
        while !stop.is_cancelled() {
            sequence += 1;
            let probe_id = sequence.to_string();
            let properties = BasicProperties::default()
                .with_delivery_mode(PERSISTENT)
                .with_correlation_id(probe_id.as_str().into())
                .with_reply_to(reply_to.as_str().into());
            let sent = Instant::now();
            // The echo can arrive before the publish's confirm (a confirm waits for the disk): time
            // the echo alone, as the bench times a task's reply.
            let echoed = async {
                while let Some(Ok(reply)) = replies.next().await {
                    // A late echo of an earlier, timed-out probe is skipped.
                    if reply
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|c| c.as_str())
                        == Some(probe_id.as_str())
                    {
                        return Some(Instant::now());
                    }
                }
                None
            };
            let published = publisher.publish("", &queue, true, &body, properties);
            let (published, echoed) =
                tokio::join!(published, tokio::time::timeout(PROBE_PATIENCE, echoed));
            if published.is_err() {
                break;
            }
            match echoed {
                Ok(Some(arrived)) => round_trips.push(arrived - sent),
                Ok(None) => break,
                Err(_) => {}
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
        publisher.close("OK").await;
        broker::close_channel(&replies_channel, "OK").await;
        round_trips
    }
}
