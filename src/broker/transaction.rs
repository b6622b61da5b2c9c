//! Settling a delivery in one AMQP transaction: what it owes (its reply, its dead-lettered
//! copy, its delayed retry) is published and the delivery acked on the channel it came
//! from, in `tx` mode, and `tx.commit` makes the broker take all of it or none of it. A
//! process that dies before the commit leaves nothing published and the delivery unacked
//! (it is delivered again and runs again: one reply); one that dies after it leaves both
//! done (no redelivery: one reply). Publisher confirms cannot give that: a reply confirmed
//! and an ack not yet sent is the window in which at-least-once delivery answers twice.
//!
//! Owns the channel's transaction state; it does not decide what a delivery owes. A commit
//! takes everything staged on the channel, so one transaction runs at a time: the
//! settlements that arrive while a commit is under way go into the next one together (a
//! group commit: one `tx.commit` for several deliveries, each still committed with its
//! own ack). Every other command the worker sends on the channel (`basic.get`,
//! `basic.cancel`) waits for the same turn: RabbitMQ closes a channel that sends a command
//! while its `tx.commit` is being processed ("unexpected command while processing
//! 'tx.commit'").
//!
//! RabbitMQ's tx is not atomic across a broker failure, sends `basic.return` for an
//! unroutable mandatory message only at the commit (after the ack is taken), and delivers to
//! direct reply-to (`amq.rabbitmq.reply-to`) at once, outside the transaction. A publish to
//! a full classic queue with `x-overflow = reject-publish` fails the commit ("partial tx
//! completion") with the acks applied. The worker handles the last three; see
//! `worker::delivery`.

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
};
use lapin::Acker;
use lapin::{BasicProperties, Channel};
use tokio::sync::{oneshot, Mutex};

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

    /// Whether `returned` is this message, as the broker returns it (same destination and
    /// body).
    fn is(&self, returned: &Outgoing) -> bool {
        self.exchange == returned.exchange
            && self.routing_key == returned.routing_key
            && self.body == returned.body
    }
}

/// What one delivery comes to at its settlement: the messages it owes, published, and then
/// its ack (or, given back, its nack with requeue), all in one transaction.
pub struct Settlement {
    /// What to publish.
    pub owed: Vec<Outgoing>,
    /// The delivery's acker (a delivery of this channel).
    pub acker: Acker,
    /// Give the delivery back to its queue instead of acking it.
    pub requeue: bool,
    /// Run once everything is staged, just before the commit (fault injection).
    pub before_commit: Option<BeforeCommit>,
}

/// A fault-injection hook: what it returns is awaited just before the commit.
pub type BeforeCommit =
    Box<dyn FnOnce() -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// A settlement committed.
#[derive(Debug)]
pub struct Settled {
    /// Those of its messages the broker could not route (returned at the commit).
    pub returned: Vec<Outgoing>,
    /// How many settlements its commit held, itself included.
    pub group: usize,
}

/// A settlement waiting for a commit, and where its result goes.
struct Waiting {
    settlement: Settlement,
    done: oneshot::Sender<Result<Settled, BrokerError>>,
}

/// A channel in `tx` mode, shared by the deliveries it carries.
pub struct TxChannel {
    channel: Channel,
    /// The channel's turn, held while a transaction is staged and committed (or another
    /// command is sent); `true` while something is staged and neither committed nor rolled
    /// back (a commit abandoned half-way).
    staged: Mutex<bool>,
    /// Settlements waiting for the next commit.
    waiting: std::sync::Mutex<Vec<Waiting>>,
}

impl TxChannel {
    /// Puts `channel` (the one deliveries are consumed on) in `tx` mode.
    pub async fn select(channel: Channel) -> Result<TxChannel, BrokerError> {
        channel.tx_select().await?;
        Ok(TxChannel {
            channel,
            staged: Mutex::new(false),
            waiting: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The channel, for setting up its consumers (`basic.qos`, `basic.consume`) before any
    /// delivery is settled: later commands go through the channel's turn (the methods below).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Settles a delivery: publishes what it owes and acks (or requeues) it in one
    /// transaction.
    ///
    /// Settlements that arrive while a commit is under way wait for it to end; then the
    /// first of them to take the channel's turn stages them all and commits them together.
    /// A failed commit is the failure of every settlement in it.
    pub async fn settle(&self, settlement: Settlement) -> Result<Settled, BrokerError> {
        let (done, mut result) = oneshot::channel();
        self.waiting_list().push(Waiting { settlement, done });
        // Whoever holds the turn takes this settlement into its group and answers it before
        // giving the turn up; if it is still waiting when this caller gets the turn, it goes
        // in this caller's group. Answered first, the caller leaves the turn to the next
        // settlement's own caller instead of committing for it.
        let answered = tokio::select! {
            biased;
            answer = &mut result => Some(answer),
            mut staged = self.staged.lock() => match result.try_recv() {
                Ok(answer) => Some(Ok(answer)),
                Err(_) => {
                    let group = std::mem::take(&mut *self.waiting_list());
                    if !group.is_empty() {
                        self.commit_group(&mut staged, group).await;
                    }
                    None
                }
            },
        };
        let answer = match answered {
            Some(answer) => answer,
            None => result.await,
        };
        answer.unwrap_or_else(|_| Err(BrokerError::CommitAbandoned))
    }

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

    fn waiting_list(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stages every settlement of `group` and commits them in one transaction; answers each
    /// with the messages of its own the broker returned, or with the group's failure.
    async fn commit_group(&self, staged: &mut bool, group: Vec<Waiting>) {
        let (mut settlements, answers): (Vec<Settlement>, Vec<_>) = group
            .into_iter()
            .map(|waiting| (waiting.settlement, waiting.done))
            .unzip();
        let members = answers.len();
        match self.stage_and_commit(staged, &mut settlements).await {
            Ok(returned) => {
                let owed = settlements.iter().map(|s| s.owed.as_slice());
                let returned = attribute_returned(owed, returned);
                for (returned, done) in returned.into_iter().zip(answers) {
                    let _ = done.send(Ok(Settled {
                        returned,
                        group: members,
                    }));
                }
            }
            Err(e) => {
                for done in answers {
                    let error = match members {
                        1 => e.clone(),
                        _ => BrokerError::InGroup {
                            members,
                            source: Box::new(e.clone()),
                        },
                    };
                    let _ = done.send(Err(error));
                }
            }
        }
    }

    /// Publishes and acks what `settlements` hold, then commits. First rolls back what a
    /// commit abandoned half-way left staged.
    async fn stage_and_commit(
        &self,
        staged: &mut bool,
        settlements: &mut [Settlement],
    ) -> Result<Vec<Outgoing>, BrokerError> {
        if *staged {
            self.channel.tx_rollback().await?;
            *staged = false;
        }
        for settlement in settlements.iter() {
            *staged = true;
            for message in &settlement.owed {
                self.publish(message).await?;
            }
            if settlement.requeue {
                let options = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                settlement.acker.nack(options).await?;
            } else {
                settlement.acker.ack(BasicAckOptions::default()).await?;
            }
        }
        for settlement in settlements.iter_mut() {
            if let Some(hook) = settlement.before_commit.take() {
                hook().await;
            }
        }
        // An error now (the channel closed under the commit) leaves its outcome unknown.
        self.channel
            .tx_commit()
            .await
            .map_err(|e| BrokerError::CommitUnanswered(Box::new(e.into())))?;
        *staged = false;
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

    /// Stages `message` (mandatory: an unroutable one comes back at the commit).
    async fn publish(&self, message: &Outgoing) -> Result<(), BrokerError> {
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
}

/// Hands each settlement of a commit the messages the broker returned that it owed (`owed`,
/// one list per settlement, in order); a returned message goes to the first that owed it,
/// and one that none owed (it cannot happen, but nothing is dropped silently) to the first.
fn attribute_returned<'a>(
    owed: impl Iterator<Item = &'a [Outgoing]>,
    mut returned: Vec<Outgoing>,
) -> Vec<Vec<Outgoing>> {
    let mut attributed: Vec<Vec<Outgoing>> = owed
        .map(|owed| {
            let (own, others) = returned
                .drain(..)
                .partition(|message| owed.iter().any(|o| o.is(message)));
            returned = others;
            own
        })
        .collect();
    if let Some(first) = attributed.first_mut() {
        first.append(&mut returned);
    }
    attributed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(queue: &str, body: &str) -> Outgoing {
        Outgoing {
            exchange: String::new(),
            routing_key: queue.to_owned(),
            body: body.as_bytes().to_vec(),
            properties: BasicProperties::default(),
        }
    }

    #[test]
    fn each_settlement_gets_back_only_the_messages_it_owed() {
        let first = vec![message("replies-a", "1"), message("dead", "1")];
        let second = vec![message("replies-gone", "2")];
        let third = vec![message("replies-gone", "3")];
        let returned = vec![message("replies-gone", "3"), message("replies-gone", "2")];
        let owed = [first.as_slice(), second.as_slice(), third.as_slice()];

        let attributed = attribute_returned(owed.into_iter(), returned);

        let bodies: Vec<Vec<&[u8]>> = attributed
            .iter()
            .map(|own| own.iter().map(|m| m.body.as_slice()).collect())
            .collect();
        assert_eq!(bodies, vec![vec![], vec![&b"2"[..]], vec![&b"3"[..]]]);
    }

    #[test]
    fn a_message_to_another_destination_with_the_same_body_is_not_the_one_returned() {
        let first = [message("replies-a", "other")];
        let second = [message("replies-a", "same")];
        let returned = vec![message("replies-b", "same")];

        let owed = [first.as_slice(), second.as_slice()];
        let attributed = attribute_returned(owed.into_iter(), returned);

        assert!(attributed[1].is_empty(), "not the second's message");
        assert_eq!(attributed[0].len(), 1, "kept by the first, not dropped");
    }
}
