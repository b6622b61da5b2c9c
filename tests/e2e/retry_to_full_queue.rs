//! A retry that comes back to a full requests queue is kept, not dropped: delay queues are
//! quorum queues that dead-letter at least once, so the broker holds a retry its bounded
//! requests queue refused and offers it again until there is room. Real broker, real model;
//! the fault-injection marker stands in for a transient failure.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{queue_info, rabbitmqctl, ready_count, Caller, Names, WorkerProcess};

/// RabbitMQ offers a refused dead letter again after `dead_letter_worker_publisher_confirm_timeout`
/// (3 min by default): a broker-wide setting, read by a delay queue's dead-letter process
/// when the queue starts. The guard shortens it while this test's queues start and puts the
/// old value back when dropped.
struct QuickRedelivery {
    old: String,
}

const REDELIVERY_SETTING: &str = "dead_letter_worker_publisher_confirm_timeout";

impl QuickRedelivery {
    fn set(ms: u64) -> QuickRedelivery {
        let old = broker_eval(&format!(
            "{{ok, V}} = application:get_env(rabbit, {REDELIVERY_SETTING}), V."
        ));
        assert!(
            old.parse::<u64>().is_ok(),
            "read {REDELIVERY_SETTING}: {old}"
        );
        set_redelivery(&ms.to_string()).expect("set the redelivery interval");
        QuickRedelivery { old }
    }
}

impl Drop for QuickRedelivery {
    /// Says so rather than panicking: a panic while the test already panics would abort the
    /// whole test binary.
    fn drop(&mut self) {
        if let Err(answer) = set_redelivery(&self.old) {
            eprintln!(
                "could not restore {REDELIVERY_SETTING} to {}: {answer}",
                self.old
            );
        }
    }
}

fn set_redelivery(ms: &str) -> Result<(), String> {
    let answer = broker_eval(&format!(
        "application:set_env(rabbit, {REDELIVERY_SETTING}, {ms})."
    ));
    (answer == "ok").then_some(()).ok_or(answer)
}

fn broker_eval(expression: &str) -> String {
    let output = rabbitmqctl()
        .args(["-q", "eval", expression])
        .output()
        .expect("run rabbitmqctl");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_retry_that_finds_its_queue_full_waits_in_its_delay_queue_until_there_is_room() {
    let names = Names::new("retry-full");
    let settings = [
        ("WARREN__WORKER__FAULT_INJECTION", "true"),
        ("WARREN__RETRY__MAX_ATTEMPTS", "3"),
        ("WARREN__RETRY__INITIAL_DELAY_MS", "6000"),
        ("WARREN__RETRY__JITTER", "0"),
        // A requests queue that two tasks fill (a queue argument: no management API needed).
        ("WARREN__TOPOLOGY__MAX_LENGTH", "2"),
        ("WARREN__TOPOLOGY__QUEUE_BOUND", "0"),
    ];
    let delay_queue = format!("{}.6s", names.retry_prefix);
    let quick = QuickRedelivery::set(2000);
    let mut upstream = Caller::connect().await;
    let mut worker = WorkerProcess::start(&names, &settings).await;
    assert_eq!(
        queue_info(&delay_queue).unwrap()["arguments"]["x-dead-letter-strategy"],
        "at-least-once"
    );

    // The first attempt fails (a transient failure); the task waits in the delay queue.
    let task = json!({
        "prompt": "[[warren-fault:fail-attempts=1]] The capital of France is",
        "max_tokens": 4
    });
    let correlation_id = upstream.send(&names.requests, &task).await;
    wait_for(
        "the retry in its delay queue",
        Duration::from_secs(60),
        async || ready_count(&delay_queue).await == 1,
    )
    .await;
    worker.terminate().await;

    // Meanwhile other callers fill the requests queue until it refuses a publish (a quorum
    // queue may take one past its bound before it starts refusing).
    let mut fillers = 0;
    loop {
        let body = format!("filler {fillers}");
        let confirm = upstream
            .publish(
                &names.requests,
                body.as_bytes(),
                upstream.properties("filler"),
            )
            .await;
        if confirm.is_nack() {
            break;
        }
        fillers += 1;
        assert!(fillers <= 10, "the requests queue never refused a publish");
    }
    assert!(
        fillers >= 2,
        "bounded at 2, it refused the filler {fillers}"
    );

    // The retry's delay ends while the queue is full: the broker keeps it in the delay queue
    // as a dead letter not yet delivered (at most once, it would be gone), and the requests
    // queue still holds only the fillers.
    wait_for(
        "the refused retry held by its delay queue",
        Duration::from_secs(60),
        async || {
            queue_info(&delay_queue).is_ok_and(|queue| queue["messages_dlx"].as_u64() == Some(1))
        },
    )
    .await;
    assert_eq!(ready_count(&names.requests).await, fillers);
    assert_eq!(ready_count(&delay_queue).await, 0, "its delay is over");

    // Room again: the broker delivers the retry, and a worker answers it.
    for filler in 0..fillers {
        let taken = upstream.get(&names.requests).await.expect("a filler");
        assert_eq!(taken.data, format!("filler {filler}").into_bytes());
    }
    let _worker = WorkerProcess::start(&names, &settings).await;
    let reply = upstream.reply(&correlation_id).await;
    drop(quick);
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["attempt"], 2, "{reply}");
    assert_eq!(ready_count(&names.dead).await, 0, "nothing dead-lettered");
}
