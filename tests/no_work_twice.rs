//! No work done twice: a worker that dies after its reply is confirmed but before its ack
//! leaves the task to be delivered again. With `worker.redis_url` the task's id was recorded
//! as finished before the ack, so the next worker acks it without running or answering it:
//! the caller gets exactly one reply. Without it, delivery is at least once: two replies.
//! The crash is injected (`[[warren-fault:crash-before-ack]]`): a real process abort at the
//! one point no real fault can be aimed at.

mod common;

use std::time::{Duration, Instant};

use common::{Names, Upstream, WorkerProcess, PATIENCE};
use serde_json::json;

const REDIS: &str = "redis://127.0.0.1:6379";

/// Sends one task whose first worker dies before its ack, lets a second worker take the
/// redelivery, and returns the replies the caller got, with the second worker.
async fn replies_when_the_worker_dies_before_its_ack(
    names: &Names,
    settings: &[(&str, &str)],
) -> (usize, WorkerProcess) {
    let mut upstream = Upstream::connect().await;
    let mut first = WorkerProcess::start(names, settings).await;
    let task = json!({"prompt": "Hello [[warren-fault:crash-before-ack]]", "max_tokens": 3});
    let id = upstream.send(&names.requests, &task).await;
    let died = first.exit_within(PATIENCE).await;
    assert!(died.is_some(), "the worker did not crash:\n{}", first.log());
    assert!(first.log().contains("before the ack"), "{}", first.log());

    let second = WorkerProcess::start(names, settings).await;
    let mut replies = 0;
    let deadline = Instant::now() + PATIENCE;
    // Keep listening until the redelivery was handled one way or the other, then a while more.
    loop {
        let quiet = if replies >= 2 {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(5)
        };
        match upstream.any_reply_within(quiet).await {
            Some((cid, reply)) if cid == id => {
                assert_eq!(reply["status"], "ok", "{reply}");
                replies += 1;
            }
            Some(_) => {}
            None => {
                let log = second.log();
                let handled = log.contains("was finished before") || log.contains("task completed");
                if handled || Instant::now() > deadline {
                    break;
                }
            }
        }
    }
    (replies, second)
}

#[tokio::test]
async fn with_finished_marks_a_task_whose_worker_died_before_its_ack_is_answered_once() {
    let names = Names::new("once");
    let settings = [
        ("WARREN__WORKER__FAULT_INJECTION", "true"),
        ("WARREN__WORKER__REDIS_URL", REDIS),
    ];
    let (replies, second) = replies_when_the_worker_dies_before_its_ack(&names, &settings).await;
    assert_eq!(replies, 1, "exactly one reply:\n{}", second.log());
    assert!(
        second.log().contains("was finished before"),
        "the redelivery was recognised and skipped:\n{}",
        second.log()
    );
}

#[tokio::test]
async fn without_them_the_same_crash_runs_the_task_twice() {
    let names = Names::new("twice");
    let settings = [("WARREN__WORKER__FAULT_INJECTION", "true")];
    let (replies, second) = replies_when_the_worker_dies_before_its_ack(&names, &settings).await;
    assert_eq!(
        replies,
        2,
        "at least once: the redelivery runs again:\n{}",
        second.log()
    );
}
