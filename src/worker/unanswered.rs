//! What commits cut off without the broker's answer owed, kept until the worker can publish
//! it again.
//!
//! A commit whose connection fails after `tx.commit` was sent may have been taken whole,
//! not at all, or (a broker node failing under it) in part: RabbitMQ can apply the ack and
//! lose the reply. The task's delivery comes back only if its ack was not taken, so a reply
//! lost with its ack taken would be lost silently. The worker therefore keeps a copy of
//! everything such a commit owed, addressed to the results queue and marked maybe delivered
//! (`outbox::kept_copy`), and publishes those copies, confirmed, as soon as its next session
//! has a publisher: ops find in the results queue every message that may not have arrived,
//! and callers never get one twice from it. Owns only the holding; not what is kept.

use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{error, info};

use crate::broker::{BrokerError, Outgoing, Publisher};

/// The kept copies waiting for a publisher, shared by every session of the worker.
#[derive(Clone, Default)]
pub(crate) struct Unanswered {
    kept: Arc<Mutex<Vec<Outgoing>>>,
}

impl Unanswered {
    /// Holds `copies` until the next [`Unanswered::publish`].
    pub(crate) fn hold(&self, copies: Vec<Outgoing>) {
        self.kept().extend(copies);
    }

    /// How many copies are waiting.
    pub(crate) fn len(&self) -> usize {
        self.kept().len()
    }

    /// Publishes every waiting copy through `publisher` (confirmed), oldest first. Those it
    /// could not publish wait for the next call.
    pub(crate) async fn publish(&self, publisher: &Publisher) -> Result<(), BrokerError> {
        let waiting = std::mem::take(&mut *self.kept());
        let count = waiting.len();
        for (sent, copy) in waiting.iter().enumerate() {
            if let Err(e) = publisher.publish_routed(copy).await {
                self.put_back(waiting[sent..].to_vec());
                return Err(e);
            }
        }
        if count > 0 {
            info!(
                count,
                "kept what commits cut off without an answer owed in the results queue, marked maybe delivered"
            );
        }
        Ok(())
    }

    /// Logs what is still waiting as lost: the worker is stopping without a publisher.
    pub(crate) fn report_lost(&self) {
        let left = self.len();
        if left > 0 {
            error!(
                count = left,
                "the worker stops holding copies of messages commits cut off without an answer owed: they are lost"
            );
        }
    }

    /// Puts `copies` back in front of what arrived meanwhile.
    fn put_back(&self, mut copies: Vec<Outgoing>) {
        let mut kept = self.kept();
        copies.append(&mut kept);
        *kept = copies;
    }

    fn kept(&self) -> MutexGuard<'_, Vec<Outgoing>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(body: &str) -> Outgoing {
        Outgoing {
            exchange: String::new(),
            routing_key: "results".to_owned(),
            body: body.as_bytes().to_vec(),
            properties: lapin::BasicProperties::default(),
        }
    }

    fn bodies(unanswered: &Unanswered) -> Vec<String> {
        let kept = unanswered.kept();
        kept.iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect()
    }

    #[test]
    fn copies_put_back_after_a_failed_publish_go_before_those_held_since() {
        let unanswered = Unanswered::default();
        unanswered.hold(vec![copy("late")]);
        unanswered.put_back(vec![copy("first"), copy("second")]);
        assert_eq!(bodies(&unanswered), ["first", "second", "late"]);
        assert_eq!(unanswered.len(), 3);
    }

    #[test]
    fn clones_share_what_they_hold() {
        let unanswered = Unanswered::default();
        unanswered.clone().hold(vec![copy("a")]);
        assert_eq!(bodies(&unanswered), ["a"]);
    }
}
