//! One delivery from receipt to ack: read its properties once ([`TaskMeta`]), run it on the
//! engine ([`super::run`]), let [`super::fate`] decide what it comes to,
//! then publish what [`super::outbox`] says that owes and ack the delivery in one AMQP
//! transaction — or, when abandoned (shutdown grace over, channel lost), give it back.
//!
//! The invariant: a delivery is acked in the same commit that publishes everything it owes,
//! so a worker that dies at any moment leaves either both done (one reply) or neither (the
//! task is delivered again and runs again: still one reply). When the commit fails the
//! delivery is given back, so nothing is lost; when it ends without the broker's answer (the
//! connection lost under it), what the task owed is also kept in the results queue, marked
//! maybe delivered ([`super::unanswered`]).

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use super::fate::{self, BeforeRun, Fate, Redeliveries};
use super::kept::kept_copy;
use super::outbox::{Outbox, Outcome};
use super::run::run;
use super::task_meta::TaskMeta;
use super::{faults, spans, timings, Shared};
use crate::broker::{headers, BeforeCommit, BrokerError, Outgoing, Settlement};
use crate::protocol::{HEADER_REDELIVERIES, QUORUM_DELIVERY_COUNT};

/// Handles one delivery to the end, or gives it back when `abandon` is cancelled before its
/// fate is decided. Once it is, the commit and what follows it (keeping what the broker
/// could not deliver, the finished mark) run to the end: abandoning them could lose a reply
/// whose ack is already committed.
pub(crate) async fn handle(shared: Arc<Shared>, delivery: Delivery, abandon: CancellationToken) {
    let meta = TaskMeta::read(&delivery);
    let queue = shared.topology.requests_queue().to_owned();
    // The span that published the task, from its headers (read once).
    let publisher = crate::telemetry::traces::from_amqp(&delivery.properties);
    let span = spans::task_span(&publisher, &meta, &queue);
    async move {
        spans::queue_wait(&publisher, &meta, &queue);
        // Counted down when the handler ends, aborted (a lost channel) included.
        let _in_flight = shared.telemetry.metrics.delivery_taken();
        settle(&shared, &delivery, &meta, &abandon).await;
    }
    .instrument(span)
    .await
}

/// Settles a delivery: decides its fate (unless abandoned first), then publishes what it owes
/// and acks it in one transaction (or requeues it when that failed).
async fn settle(
    shared: &Shared,
    delivery: &Delivery,
    meta: &TaskMeta,
    abandon: &CancellationToken,
) {
    let counts = Redeliveries {
        classic_queue: shared.classic_queue,
        redelivered: delivery.redelivered,
        quorum_count: headers::integer(&delivery.properties, QUORUM_DELIVERY_COUNT).unwrap_or(0),
        warren_count: headers::integer(&delivery.properties, HEADER_REDELIVERIES).unwrap_or(0),
    };
    if meta.wake {
        // Left by a gateway while no worker served this queue; starting is what it asked.
        info!("a wake-up message: acked, nothing to run");
        ack_without_running(shared, delivery, "wake").await;
        return;
    }
    if already_finished(shared, meta).await {
        info!("the task was finished before (its id is recorded): acked without running it again");
        ack_without_running(shared, delivery, "duplicate").await;
        return;
    }
    let decided = tokio::select! {
        _ = abandon.cancelled() => None,
        decided = decide(shared, delivery, meta, counts) => Some(decided),
    };
    let Some((fate, outcome)) = decided else {
        give_back(shared, delivery).await;
        return;
    };
    trace_outcome(&fate);
    let now = Instant::now();
    let timings = timings::of(meta, outcome.as_ref(), now);
    // Recorded once the reply is committed: a task given back runs (and counts) again.
    let completion = match (&fate, &outcome) {
        (Fate::Reply, Some(outcome)) => Some(timings::completion(meta, outcome, timings, now)),
        _ => None,
    };
    let outbox = Outbox::new(shared, delivery, meta);
    if let Fate::Recount(earlier) = fate {
        if let Err(e) = outbox.recount(earlier).await {
            warn!(error = %e, "could not requeue the recounted copy; returning the task to the queue");
            give_back(shared, delivery).await;
            return;
        }
    }
    let owed = outbox.owed(&fate, outcome.as_ref(), timings);
    let fault = shared.fault_injection.then_some(counts);
    // Held until the broker answers: a commit cut off without an answer, or a handler
    // aborted while it waits, leaves them to be kept in the results queue.
    let results = shared.topology.results_queue();
    let held = owed.iter().map(|m| kept_copy(m.clone(), results, true));
    let ticket = shared.unanswered.hold(held.collect());
    let committing = tracing::info_span!("commit", messages = owed.len() as i64);
    let committed = commit_with_ack(shared, delivery, &owed, fault)
        .instrument(committing)
        .await;
    let end = CommitEnd::of(committed);
    if !matches!(end, CommitEnd::Unanswered(_)) {
        shared.unanswered.release(ticket);
    }
    if !matches!(end, CommitEnd::Failed(_)) {
        // Settled, as far as this worker can tell: an unanswered commit most likely took
        // effect (if it did not, the broker delivers the task again and it counts twice).
        count_outcome(shared, &fate);
        if let Some(completion) = &completion {
            shared.telemetry.metrics.completed(completion);
        }
    }
    match end {
        CommitEnd::Committed(returned) => {
            count_dead_letters(shared, &fate, &owed);
            outbox.keep_undeliverable(returned, false).await;
            if let Some(counts) = fault {
                faults::after_commit(&delivery.data, counts);
            }
            if fate.ends_task() {
                mark_finished(shared, meta).await;
            }
        }
        CommitEnd::RefusedByAFullQueue(e) => {
            // RabbitMQ applied the acks and what it could, and closed the channel (the tasks
            // it held go back to the queue); a reply's queue (the only one a caller owns)
            // refused the reply: keep it where ops can find it. In a commit of several
            // tasks' replies the broker does not say whose it refused.
            let maybe_delivered = matches!(e, BrokerError::InGroup { .. });
            error!(error = %e, maybe_delivered, "a full queue refused a message the task owed; the task is acked and its reply kept in the results queue");
            // The rest took effect with the ack: its dead letters, and the task's end.
            count_dead_letters(shared, &fate, &owed);
            let reply_to = meta.reply_to.as_deref();
            let refused = owed
                .into_iter()
                .filter(|m| m.exchange.is_empty() && Some(m.routing_key.as_str()) == reply_to)
                .collect();
            outbox.keep_undeliverable(refused, maybe_delivered).await;
            if fate.ends_task() {
                mark_finished(shared, meta).await;
            }
        }
        CommitEnd::Unanswered(e) => {
            // The commit may have taken effect, in whole or (a broker node failing) in part:
            // a requeue now could only disturb the channel, and the broker gives back what
            // it did not take, to run again. What the task owed may have been taken with its
            // ack or lost: its copies stay held, to be kept where ops can find them.
            warn!(error = %e, "the commit of this task ended without the broker's answer; what it owed is kept in the results queue, marked maybe delivered, once a publisher is up");
        }
        CommitEnd::Failed(e) => {
            warn!(error = %e, "could not publish what the task owes; returning it to the queue");
            give_back(shared, delivery).await;
        }
    }
}

/// How a commit ended, as far as the broker said.
#[derive(Debug)]
enum CommitEnd {
    /// Committed; what the broker could not route came back.
    Committed(Vec<Outgoing>),
    /// A queue with `x-overflow = reject-publish` was full: RabbitMQ applied the rest of the
    /// transaction and closed the channel ("partial tx completion").
    RefusedByAFullQueue(BrokerError),
    /// Ended without the broker's answer: it may have taken effect, in whole or in part.
    Unanswered(BrokerError),
    /// Failed before the commit could take effect.
    Failed(BrokerError),
}

impl CommitEnd {
    fn of(committed: Result<Vec<Outgoing>, BrokerError>) -> CommitEnd {
        match committed {
            Ok(returned) => CommitEnd::Committed(returned),
            // Checked first: the channel's close comes as an error during the commit.
            Err(e) if e.to_string().contains("partial tx completion") => {
                CommitEnd::RefusedByAFullQueue(e)
            }
            Err(e) if e.commit_outcome_unknown() => CommitEnd::Unanswered(e),
            Err(e) => CommitEnd::Failed(e),
        }
    }
}

/// Acks a delivery that is not to run (a wake-up, a copy of a finished task), counted as
/// `outcome`. A failed ack brings it back, to be acked again.
async fn ack_without_running(shared: &Shared, delivery: &Delivery, outcome: &'static str) {
    tracing::Span::current().record("outcome", outcome);
    match commit_with_ack(shared, delivery, &[], None).await {
        Ok(_) => shared.telemetry.metrics.task_settled(outcome, ""),
        Err(e) => {
            warn!(error = %e, outcome, "the ack failed; the message comes back and is acked again");
            shared.telemetry.metrics.task_settled("abandoned", "");
        }
    }
}

/// What the delivery comes to, running it when it is to run.
async fn decide(
    shared: &Shared,
    delivery: &Delivery,
    meta: &TaskMeta,
    counts: Redeliveries,
) -> (Fate, Option<Outcome>) {
    match fate::before_run(counts, shared.max_redeliveries) {
        BeforeRun::Settle(fate) => (fate, None),
        BeforeRun::Run => {
            let result = run(shared, delivery, meta).await;
            let fate = fate::after_run(&result, meta.attempt, &shared.retry);
            (fate, result.ok())
        }
    }
}

/// Publishes `owed` and acks `delivery` in one transaction. Returns what the broker could
/// not route. With fault injection on (`fault`), may abort before the commit.
async fn commit_with_ack(
    shared: &Shared,
    delivery: &Delivery,
    owed: &[Outgoing],
    fault: Option<Redeliveries>,
) -> Result<Vec<Outgoing>, BrokerError> {
    let before_commit = fault.map(|counts| {
        let body = delivery.data.clone();
        let channel = shared.settling.channel().clone();
        Box::new(move || -> BoxFuture<'static, ()> {
            Box::pin(faults::before_commit(body, counts, channel))
        }) as BeforeCommit
    });
    let settlement = Settlement {
        owed: owed.to_vec(),
        acker: delivery.acker.clone(),
        requeue: false,
        before_commit,
    };
    let settled = shared.settling.settle(settlement).await?;
    shared.telemetry.metrics.committed_with(settled.group);
    Ok(settled.returned)
}

/// Counts the dead letters among `owed`, once they are committed.
fn count_dead_letters(shared: &Shared, fate: &Fate, owed: &[Outgoing]) {
    let exchange = shared.topology.dead_letter_exchange();
    let code = fate.code().map_or("internal", |c| c.as_str());
    for _ in owed.iter().filter(|m| m.exchange == exchange) {
        shared.telemetry.metrics.dead_lettered(code);
    }
}

/// Whether the task's id is recorded as finished (off, or Redis not answering: no).
async fn already_finished(shared: &Shared, meta: &TaskMeta) -> bool {
    let (Some(finished), Some(key)) = (&shared.finished, meta.finished_key()) else {
        return false;
    };
    finished.contains(&key).await.unwrap_or_else(|e| {
        warn!(error = %e, "cannot tell whether the task was finished before; running it (at least once)");
        false
    })
}

/// Records the task's id as finished, after the commit: a copy of the task published again
/// by its caller (or redelivered by a broker that lost the ack in a failover) is then
/// acked without being run.
async fn mark_finished(shared: &Shared, meta: &TaskMeta) {
    if let (Some(finished), Some(key)) = (&shared.finished, meta.finished_key()) {
        if let Err(e) = finished.record(&key).await {
            warn!(error = %e, "the task could not be recorded as finished; a second copy of it would run again");
        }
    }
}

/// Records in the task's span how it is to settle, for the lines logged from here on (a
/// failed commit records `abandoned` over it).
fn trace_outcome(fate: &Fate) {
    let span = tracing::Span::current();
    span.record("outcome", fate.outcome());
    // A task that failed for good is an error in a trace's views and in tail sampling.
    if matches!(fate, Fate::GiveUp(_) | Fate::Poison(_)) {
        span.record("otel.status_code", "error");
    }
    if let Some(code) = fate.code() {
        span.record("code", code.as_str());
    }
}

/// Counts how the task settled in `warren_tasks_total`, once its commit is done.
fn count_outcome(shared: &Shared, fate: &Fate) {
    let code = fate.code().map_or("", |c| c.as_str());
    shared.telemetry.metrics.task_settled(fate.outcome(), code);
}

/// Gives a delivery whose fate was not carried out back to its queue, counted `abandoned`.
async fn give_back(shared: &Shared, delivery: &Delivery) {
    tracing::Span::current().record("outcome", "abandoned");
    shared.telemetry.metrics.task_settled("abandoned", "");
    requeue(shared, delivery).await;
}

/// Gives the delivery back to its queue (a nack with requeue, committed), best effort: a
/// channel that is gone gives back everything it held anyway.
async fn requeue(shared: &Shared, delivery: &Delivery) {
    let settlement = Settlement {
        owed: Vec::new(),
        acker: delivery.acker.clone(),
        requeue: true,
        before_commit: None,
    };
    if let Err(e) = shared.settling.settle(settlement).await {
        debug!(error = %e, "requeue failed; the broker requeues the task when the channel closes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};

    /// The channel close RabbitMQ sends when a full queue refused a publish of a transaction.
    fn partial_tx_completion() -> BrokerError {
        let closed = AMQPError::new(
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED),
            "PRECONDITION_FAILED - partial tx completion".into(),
        );
        BrokerError::Amqp(lapin::ErrorKind::ProtocolError(closed).into())
    }

    fn unanswered(source: BrokerError) -> BrokerError {
        BrokerError::CommitUnanswered(Box::new(source))
    }

    #[test]
    fn a_full_queue_s_refusal_during_the_commit_is_told_apart_from_an_unanswered_commit() {
        let refused = unanswered(partial_tx_completion());
        assert!(
            refused.commit_outcome_unknown(),
            "it came during the commit"
        );
        assert!(matches!(
            CommitEnd::of(Err(refused)),
            CommitEnd::RefusedByAFullQueue(_)
        ));
        let in_group = BrokerError::InGroup {
            members: 3,
            source: Box::new(unanswered(partial_tx_completion())),
        };
        assert!(matches!(
            CommitEnd::of(Err(in_group)),
            CommitEnd::RefusedByAFullQueue(_)
        ));
    }

    #[test]
    fn a_commit_without_the_broker_s_answer_is_unanswered_and_other_failures_failed() {
        let lost = unanswered(BrokerError::ConsumerEnded("requests".into()));
        assert!(matches!(CommitEnd::of(Err(lost)), CommitEnd::Unanswered(_)));
        assert!(matches!(
            CommitEnd::of(Err(BrokerError::CommitAbandoned)),
            CommitEnd::Unanswered(_)
        ));
        let grouped = BrokerError::InGroup {
            members: 2,
            source: Box::new(BrokerError::CommitAbandoned),
        };
        assert!(matches!(
            CommitEnd::of(Err(grouped)),
            CommitEnd::Unanswered(_)
        ));
        let nacked = BrokerError::Nacked("replies".into());
        assert!(matches!(CommitEnd::of(Err(nacked)), CommitEnd::Failed(_)));
        assert!(matches!(
            CommitEnd::of(Ok(Vec::new())),
            CommitEnd::Committed(returned) if returned.is_empty()
        ));
    }
}
