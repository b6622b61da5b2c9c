//! Settling a delivery in one AMQP transaction: what it owes (its reply, its dead-lettered
//! copy, its delayed retry) is published and the delivery acked on the channel it came
//! from, in `tx` mode, and `tx.commit` makes the broker take all of it or none of it. A
//! process that dies before the commit leaves nothing published and the delivery unacked
//! (it is delivered again and runs again: one reply); one that dies after it leaves both
//! done (no redelivery: one reply). Publisher confirms cannot give that: a reply confirmed
//! and an ack not yet sent is the window in which at-least-once delivery answers twice.
//!
//! Owns the channel's transaction state; it does not decide what a delivery owes. One
//! transaction at a time per channel (a commit takes everything staged on the channel, so
//! two deliveries must not interleave): [`TxChannel::begin`] waits for the previous one, and
//! rolls back what a transaction dropped before its commit (a cancelled task) left staged.
//! Every other command the worker sends on the channel (`basic.get`, `basic.cancel`) waits
//! for the same turn: RabbitMQ closes a channel that sends a command while its `tx.commit`
//! is being processed ("unexpected command while processing 'tx.commit'").
//!
//! RabbitMQ's tx is not atomic across a broker failure, sends `basic.return` for an
//! unroutable mandatory message only at the commit (after the ack is taken), and delivers to
//! direct reply-to (`amq.rabbitmq.reply-to`) at once, outside the transaction. A publish to
//! a full classic queue with `x-overflow = reject-publish` fails the commit ("partial tx
//! completion") with the ack applied. The worker handles the last three; see
//! `worker::delivery`.

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
};
use lapin::Acker;
use lapin::{BasicProperties, Channel};
use tokio::sync::{Mutex, MutexGuard};

use super::BrokerError;

/// A message to publish (always `mandatory`: an unroutable one comes back).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The exchange (`""`: the default exchange).
    pub exchange: String,
    /// The routing key: a queue's name on the default exchange.
    pub routing_key: String,
    /// The body.
    pub body: Vec<u8>,
    /// The properties and headers.
    pub properties: BasicProperties,
}

impl Outgoing {
    /// Where it was going, as an operator would name it: the queue for the default exchange,
    /// `exchange/routing key` otherwise.
    pub fn destination(&self) -> String {
        if self.exchange.is_empty() {
            self.routing_key.clone()
        } else {
            format!("{}/{}", self.exchange, self.routing_key)
        }
    }
}

/// A channel in `tx` mode, shared by the deliveries it carries.
pub struct TxChannel {
    channel: Channel,
    /// Whether something was staged and neither committed nor rolled back.
    staged: Mutex<bool>,
}

impl TxChannel {
    /// Puts `channel` (the one deliveries are consumed on) in `tx` mode.
    pub async fn select(channel: Channel) -> Result<TxChannel, BrokerError> {
        channel.tx_select().await?;
        Ok(TxChannel {
            channel,
            staged: Mutex::new(false),
        })
    }

    /// Starts a transaction, once the previous one is over; rolls back what a transaction
    /// dropped before its commit left staged.
    pub async fn begin(&self) -> Result<Transaction<'_>, BrokerError> {
        let mut staged = self.staged.lock().await;
        if *staged {
            self.channel.tx_rollback().await?;
            *staged = false;
        }
        Ok(Transaction {
            channel: &self.channel,
            staged,
        })
    }
}

impl TxChannel {
    /// Takes one message from `queue` (`basic.get`, to be acked), between transactions.
    pub async fn get(&self, queue: &str) -> Result<Option<Delivery>, BrokerError> {
        let _turn = self.staged.lock().await;
        let options = BasicGetOptions { no_ack: false };
        let got = self.channel.basic_get(queue.into(), options).await?;
        Ok(got.map(|message| message.delivery))
    }

    /// Cancels the consumer `tag` of this channel, between transactions.
    pub async fn cancel_consumer(&self, tag: &str) -> Result<(), BrokerError> {
        let _turn = self.staged.lock().await;
        let options = BasicCancelOptions::default();
        self.channel.basic_cancel(tag.into(), options).await?;
        Ok(())
    }
}

/// One transaction: stage publishes and acks, then [`Transaction::commit`].
pub struct Transaction<'a> {
    channel: &'a Channel,
    staged: MutexGuard<'a, bool>,
}

impl Transaction<'_> {
    /// Stages `message`: the broker takes it at the commit.
    pub async fn publish(&mut self, message: &Outgoing) -> Result<(), BrokerError> {
        *self.staged = true;
        self.channel
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                message.properties.clone(),
            )
            .await?
            .await?;
        Ok(())
    }

    /// Stages the ack of the delivery `acker` belongs to (a delivery of this channel).
    pub async fn ack(&mut self, acker: &Acker) -> Result<(), BrokerError> {
        *self.staged = true;
        acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Stages giving the delivery back to its queue (nack with requeue).
    pub async fn requeue(&mut self, acker: &Acker) -> Result<(), BrokerError> {
        *self.staged = true;
        let options = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        acker.nack(options).await?;
        Ok(())
    }

    /// Commits everything staged. Returns the messages the broker could not route (sent
    /// back at the commit; everything else, acks included, took effect).
    pub async fn commit(mut self) -> Result<Vec<Outgoing>, BrokerError> {
        self.channel.tx_commit().await?;
        *self.staged = false;
        // Not in confirm mode, this waits for nothing: it hands over the messages returned
        // before the commit-ok, which are this transaction's (one at a time per channel).
        let returned = self.channel.wait_for_confirms().await?;
        Ok(returned
            .into_iter()
            .map(|message| Outgoing {
                exchange: message.delivery.exchange.to_string(),
                routing_key: message.delivery.routing_key.to_string(),
                body: message.delivery.data,
                properties: message.delivery.properties,
            })
            .collect())
    }
}
