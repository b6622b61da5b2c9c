//! What commits that ended without the broker's answer owed, kept until the worker can
//! publish it again.
//!
//! A commit whose channel or connection fails under it may have been taken whole, not at
//! all, or (a broker node failing under it) in part: RabbitMQ can apply the ack and lose the
//! reply. The task's delivery comes back only if its ack was not taken, so a reply lost with
//! its ack taken would be lost silently. So before each commit the worker holds a copy of
//! everything it owes, addressed to the results queue and marked maybe delivered
//! (`kept::kept_copy`), and releases it once the broker has answered either way. What is
//! still held when a session ends (a commit that failed without an answer, or whose handler
//! was aborted while it waited) is published, confirmed, as soon as a publisher is up: ops
//! find in the results queue every message that may not have arrived. Owns only the
//! holding; not what is kept.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{error, info};

use crate::broker::{BrokerError, Outgoing, Publisher};
use crate::telemetry::{KeptReason, Metrics};

/// The held copies by ticket (in the order they were held), shared by every session.
#[derive(Clone, Default)]
pub(crate) struct Unanswered {
    held: Arc<Mutex<Held>>,
}

#[derive(Default)]
struct Held {
    next_ticket: u64,
    copies: BTreeMap<u64, Vec<Outgoing>>,
}

/// A commit's copies, held until [`Unanswered::release`] (the broker answered) or published.
#[must_use = "a ticket not released keeps its copies for publishing"]
pub(crate) struct Ticket(u64);

impl Unanswered {
    /// Holds `copies` while their commit is under way.
    pub(crate) fn hold(&self, copies: Vec<Outgoing>) -> Ticket {
        let mut held = self.held();
        let ticket = held.next_ticket;
        held.next_ticket += 1;
        if !copies.is_empty() {
            held.copies.insert(ticket, copies);
        }
        Ticket(ticket)
    }

    /// Drops the copies of a commit the broker answered (taken, or certainly not taken).
    pub(crate) fn release(&self, ticket: Ticket) {
        self.held().copies.remove(&ticket.0);
    }

    /// How many copies are held.
    pub(crate) fn len(&self) -> usize {
        self.held().copies.values().map(Vec::len).sum()
    }

    /// Publishes every held copy through `publisher` (confirmed), oldest first. Call it when
    /// no commit is under way (between sessions). Those it could not publish stay held, the
    /// one whose confirm failed included: it may then be kept twice, both marked.
    pub(crate) async fn publish(
        &self,
        publisher: &Publisher,
        metrics: &Metrics,
    ) -> Result<(), BrokerError> {
        let waiting = std::mem::take(&mut self.held().copies);
        let count: usize = waiting.values().map(Vec::len).sum();
        let mut entries = waiting.into_iter();
        while let Some((ticket, copies)) = entries.next() {
            for (sent, copy) in copies.iter().enumerate() {
                if let Err(e) = publisher.publish_routed(copy).await {
                    let mut held = self.held();
                    held.copies.insert(ticket, copies[sent..].to_vec());
                    held.copies.extend(entries);
                    return Err(e);
                }
                metrics.kept(KeptReason::UnansweredCommit);
            }
        }
        if count > 0 {
            info!(
                count,
                "kept what commits without the broker's answer owed in the results queue, marked maybe delivered"
            );
        }
        Ok(())
    }

    /// Logs what is still held as lost: the worker is stopping without a publisher.
    pub(crate) fn report_lost(&self) {
        let left = self.len();
        if left > 0 {
            error!(
                count = left,
                "the worker stops holding copies of messages commits without the broker's answer owed: they are lost"
            );
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
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
        let held = unanswered.held();
        held.copies
            .values()
            .flatten()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect()
    }

    #[test]
    fn a_released_commit_leaves_nothing_and_an_unreleased_one_stays_in_order() {
        let unanswered = Unanswered::default();
        let answered = unanswered.hold(vec![copy("answered")]);
        let _cut_off = unanswered.hold(vec![copy("first"), copy("second")]);
        let _later = unanswered.hold(vec![copy("later")]);
        unanswered.release(answered);
        assert_eq!(bodies(&unanswered), ["first", "second", "later"]);
        assert_eq!(unanswered.len(), 3);
    }

    #[test]
    fn clones_share_what_they_hold() {
        let unanswered = Unanswered::default();
        let _ticket = unanswered.clone().hold(vec![copy("a")]);
        assert_eq!(bodies(&unanswered), ["a"]);
    }
}
