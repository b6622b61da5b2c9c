//! The fate of a delivery, decided as a pure value: from what the redelivery counters say,
//! the generation's result and the retry policy to exactly one [`Fate`]. No broker, no
//! engine, no clock: [`super::outbox`] carries a fate out, and these rules are unit-tested
//! row by row against the outcome list in docs/src/operations/metrics.md.

use std::time::Duration;

use crate::protocol::{ErrorCode, TaskError};
use crate::retry::{Decision, RetryPolicy};

/// What the delivery's counters say about earlier deliveries that ended without an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Redeliveries {
    /// The requests queue is a classic queue (the broker does not count deliveries).
    pub classic_queue: bool,
    /// The broker's `redelivered` flag.
    pub redelivered: bool,
    /// Quorum queues: the broker's `x-delivery-count` header.
    pub quorum_count: i64,
    /// Classic queues: warren's own `x-warren-redeliveries` header.
    pub warren_count: i64,
}

/// What to do before running a task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BeforeRun {
    /// Run it.
    Run,
    /// Settle it without running it (poison, recount).
    Settle(Fate),
}

/// Everything a delivery can come to. Each ends in an ack once what it owes is confirmed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fate {
    /// The generation succeeded: publish the reply.
    Reply,
    /// The attempt failed and may pass: republish to `queue` with this `delay`.
    Retry {
        /// Why the attempt failed.
        error: TaskError,
        /// The delay queue of this level.
        queue: String,
        /// This message's delay.
        delay: Duration,
    },
    /// The task cannot succeed: one error reply and one dead-lettered copy.
    GiveUp(TaskError),
    /// Delivered too many times without an outcome: treated like [`Fate::GiveUp`].
    Poison(TaskError),
    /// Classic queue: republish the task with its delivery count instead of running it.
    Recount(u32),
    /// Its caller cancelled it: one error reply, neither a retry nor a dead letter.
    Cancelled(TaskError),
}

impl Fate {
    /// The `outcome` label of logs and `warren_tasks_total`.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Fate::Reply => "ok",
            Fate::Retry { .. } => "retried",
            Fate::GiveUp(_) => "error",
            Fate::Poison(_) => "poison",
            Fate::Recount(_) => "recounted",
            Fate::Cancelled(_) => "cancelled",
        }
    }

    /// Whether the task ends here (a retry or a recount sends it round again).
    pub(crate) fn ends_task(&self) -> bool {
        !matches!(self, Fate::Retry { .. } | Fate::Recount(_))
    }

    /// The error code that goes with the outcome, if any.
    pub(crate) fn code(&self) -> Option<ErrorCode> {
        match self {
            Fate::Retry { error, .. } | Fate::GiveUp(error) | Fate::Poison(error) => {
                Some(error.code)
            }
            Fate::Reply | Fate::Recount(_) | Fate::Cancelled(_) => None,
        }
    }
}

/// Decides, before running, whether a redelivered task is poison or must be recounted.
pub(crate) fn before_run(counts: Redeliveries, max_redeliveries: u32) -> BeforeRun {
    let earlier = if counts.classic_queue {
        counts.warren_count + i64::from(counts.redelivered)
    } else {
        counts.quorum_count
    };
    let earlier = u32::try_from(earlier.max(0)).unwrap_or(u32::MAX);
    if earlier >= max_redeliveries {
        let deliveries = earlier.saturating_add(1);
        BeforeRun::Settle(Fate::Poison(TaskError::new(
            ErrorCode::Internal,
            format!(
                "the task was delivered {deliveries} times without finishing (the worker \
                 crashed or was stopped while running it); it is not run again"
            ),
        )))
    } else if counts.classic_queue && counts.redelivered {
        BeforeRun::Settle(Fate::Recount(earlier))
    } else {
        BeforeRun::Run
    }
}

/// Decides after attempt `attempt` (from 1) ran with `result`.
pub(crate) fn after_run<T>(
    result: &Result<T, TaskError>,
    attempt: u32,
    policy: &RetryPolicy,
) -> Fate {
    let error = match result {
        Ok(_) => return Fate::Reply,
        Err(error) => error.clone(),
    };
    if error.code == ErrorCode::Cancelled {
        return Fate::Cancelled(error);
    }
    match policy.decide(error.code, attempt) {
        Decision::Retry { queue, delay } => Fate::Retry {
            error,
            queue,
            delay,
        },
        Decision::GiveUp => Fate::GiveUp(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn policy() -> RetryPolicy {
        let settings = Settings::defaults();
        RetryPolicy::new(&settings.retry)
    }

    fn quorum(count: i64) -> Redeliveries {
        Redeliveries {
            classic_queue: false,
            redelivered: count > 0,
            quorum_count: count,
            warren_count: 0,
        }
    }

    fn failure(code: ErrorCode) -> Result<(), TaskError> {
        Err(TaskError::new(code, "m"))
    }

    #[test]
    fn a_first_delivery_runs() {
        assert_eq!(before_run(quorum(0), 3), BeforeRun::Run);
        assert_eq!(before_run(quorum(2), 3), BeforeRun::Run);
    }

    #[test]
    fn a_task_delivered_max_redeliveries_times_more_is_poison() {
        let BeforeRun::Settle(fate) = before_run(quorum(3), 3) else {
            panic!("should not run")
        };
        assert_eq!(fate.outcome(), "poison");
        assert_eq!(fate.code(), Some(ErrorCode::Internal));
        let Fate::Poison(error) = fate else { panic!() };
        assert!(error.message.contains("delivered 4 times"));
    }

    #[test]
    fn a_classic_redelivery_is_recounted_until_it_is_poison() {
        let classic = |redelivered, counted| Redeliveries {
            classic_queue: true,
            redelivered,
            quorum_count: 0,
            warren_count: counted,
        };
        assert_eq!(before_run(classic(false, 0), 3), BeforeRun::Run);
        assert_eq!(before_run(classic(false, 2), 3), BeforeRun::Run);
        assert_eq!(
            before_run(classic(true, 1), 3),
            BeforeRun::Settle(Fate::Recount(2))
        );
        assert!(matches!(
            before_run(classic(true, 2), 3),
            BeforeRun::Settle(Fate::Poison(_))
        ));
    }

    #[test]
    fn a_success_is_replied() {
        assert_eq!(
            after_run(&Ok::<(), TaskError>(()), 1, &policy()),
            Fate::Reply
        );
    }

    #[test]
    fn only_retries_and_recounts_leave_a_task_unfinished() {
        assert!(Fate::Reply.ends_task());
        assert!(Fate::GiveUp(TaskError::new(ErrorCode::Internal, "m")).ends_task());
        assert!(Fate::Cancelled(TaskError::new(ErrorCode::Cancelled, "m")).ends_task());
        assert!(!Fate::Recount(1).ends_task());
        assert!(!after_run(&failure(ErrorCode::Timeout), 1, &policy()).ends_task());
    }

    #[test]
    fn transient_failures_are_retried_while_attempts_are_left() {
        for code in [
            ErrorCode::Timeout,
            ErrorCode::InferenceFailed,
            ErrorCode::Internal,
        ] {
            let fate = after_run(&failure(code), 1, &policy());
            assert_eq!(fate.outcome(), "retried", "{code}");
            let Fate::Retry { queue, delay, .. } = fate else {
                panic!()
            };
            assert!(queue.starts_with("warren.delay."));
            assert!(delay > Duration::ZERO);
            let last = after_run(&failure(code), 3, &policy());
            assert_eq!(last, Fate::GiveUp(TaskError::new(code, "m")), "{code}");
        }
    }

    #[test]
    fn bad_input_gives_up_at_once() {
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::PromptTooLong,
            ErrorCode::Expired,
        ] {
            let fate = after_run(&failure(code), 1, &policy());
            assert_eq!(fate.outcome(), "error");
            assert_eq!(fate.code(), Some(code));
        }
    }

    #[test]
    fn a_cancelled_task_is_answered_but_neither_retried_nor_dead_lettered() {
        let fate = after_run(&failure(ErrorCode::Cancelled), 1, &policy());
        assert!(matches!(fate, Fate::Cancelled(_)));
        assert_eq!(fate.outcome(), "cancelled");
    }
}
