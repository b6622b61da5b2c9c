//! Failure handling, end to end: every task ends with its reply published or in the
//! dead-letter queue with the reason; never lost, never looping. Real broker, real model; the
//! fault-injection markers (`worker.fault_injection`) only stand in for failures a real model
//! cannot produce on demand (a crash, a transient failure).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{
    header, queue_info, ready_count, serving, Caller, Names, Serving, WorkerProcess,
};
use lapin::types::AMQPValue;
use serde_json::{json, Value};

const FAST_RETRIES: [(&str, &str); 3] = [
    ("WARREN__RETRY__MAX_ATTEMPTS", "3"),
    ("WARREN__RETRY__INITIAL_DELAY_MS", "300"),
    ("WARREN__RETRY__MULTIPLIER", "2"),
];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Queues named in the `x-death` header of a message, with their reason and count.
fn deaths(properties: &lapin::BasicProperties) -> Vec<(String, String, i64)> {
    let Some(AMQPValue::FieldArray(entries)) = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death").cloned())
    else {
        return Vec::new();
    };
    entries
        .as_slice()
        .iter()
        .filter_map(|entry| {
            let AMQPValue::FieldTable(table) = entry else {
                return None;
            };
            let text = |key: &str| match table.inner().get(key) {
                Some(AMQPValue::LongString(s)) => {
                    String::from_utf8_lossy(s.as_bytes()).into_owned()
                }
                _ => String::new(),
            };
            let count = match table.inner().get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n,
                Some(AMQPValue::LongInt(n)) => i64::from(*n),
                _ => 0,
            };
            Some((text("queue"), text("reason"), count))
        })
        .collect()
}

#[tokio::test]
async fn a_task_that_keeps_timing_out_is_retried_through_the_delay_queues_then_dead_lettered_once()
{
    let Serving {
        mut upstream,
        worker: _worker,
        names,
    } = serving("timeout", &FAST_RETRIES).await;
    let first_delay = format!("{}.300ms", names.retry_prefix);
    let second_delay = format!("{}.600ms", names.retry_prefix);
    assert_eq!(
        queue_info(&first_delay).unwrap()["arguments"]["x-message-ttl"],
        330
    );
    assert_eq!(
        queue_info(&second_delay).unwrap()["arguments"]["x-message-ttl"],
        660
    );

    // A real timeout: 1 ms is too short for the real model to read the prompt and generate.
    let task = json!({"prompt": "Once upon a time", "max_tokens": 64, "timeout_ms": 1});
    let correlation_id = upstream.send(&names.requests, &task).await;
    let reply = upstream.reply(&correlation_id).await;

    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], "timeout");
    assert_eq!(reply["error"]["retryable"], true);
    assert_eq!(reply["attempt"], 3, "the reply ends the last attempt");
    let (properties, _) = upstream.take_from(&names.dead, &correlation_id).await;
    assert_eq!(
        header(&properties, "x-warren-attempts").as_deref(),
        Some("3")
    );
    assert_eq!(
        header(&properties, "x-warren-error-code").as_deref(),
        Some("timeout")
    );
    let waited_in: HashSet<_> = deaths(&properties)
        .into_iter()
        .filter(|(_, reason, _)| reason == "expired")
        .map(|(queue, _, count)| (queue, count))
        .collect();
    assert_eq!(
        waited_in,
        HashSet::from([(first_delay, 1), (second_delay, 1)]),
        "the task waited once in each delay level"
    );
    let extra = upstream.any_reply_within(Duration::from_secs(2)).await;
    assert!(
        extra.is_none(),
        "one reply per task, not one per attempt: {extra:?}"
    );
}

#[tokio::test]
async fn a_transient_failure_that_clears_on_attempt_two_gets_one_ok_reply() {
    let mut extra = FAST_RETRIES.to_vec();
    extra.push(("WARREN__WORKER__FAULT_INJECTION", "true"));
    let Serving {
        mut upstream,
        worker: _worker,
        names,
    } = serving("transient", &extra).await;

    let task = json!({
        "prompt": "[[warren-fault:fail-attempts=1]] The capital of France is",
        "max_tokens": 4
    });
    let correlation_id = upstream.send(&names.requests, &task).await;
    let reply = upstream.reply(&correlation_id).await;

    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["attempt"], 2);
    assert_eq!(reply["usage"]["completion_tokens"], 4);
    assert_eq!(
        ready_count(&names.dead).await,
        0,
        "nothing is dead-lettered"
    );
    assert!(upstream
        .any_reply_within(Duration::from_secs(1))
        .await
        .is_none());
}

#[tokio::test]
async fn a_task_past_its_deadline_or_too_old_is_not_run() {
    let Serving {
        mut upstream,
        worker: _worker,
        names,
    } = serving("expired", &[("WARREN__LIMITS__MAX_AGE_MS", "30000")]).await;

    let late = json!({"prompt": "Hello", "deadline_ms": now_ms() - 1_000});
    let reply = upstream.request(&names.requests, &late).await;
    assert_eq!(reply["error"]["code"], "expired", "{reply}");
    assert_eq!(reply["error"]["retryable"], false);
    assert_eq!(reply["usage"], Value::Null, "it never reached the model");

    let old_id = uuid::Uuid::new_v4().to_string();
    let old = upstream
        .properties(&old_id)
        .with_timestamp(now_ms() / 1000 - 120);
    let body = json!({"prompt": "Hello", "max_tokens": 4}).to_string();
    assert!(upstream
        .publish(&names.requests, body.as_bytes(), old)
        .await
        .is_ack());
    let reply = upstream.reply(&old_id).await;
    assert_eq!(reply["error"]["code"], "expired", "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("30000"));

    let fresh = json!({"prompt": "Hello", "max_tokens": 2, "deadline_ms": now_ms() + 60_000});
    assert_eq!(
        upstream.request(&names.requests, &fresh).await["status"],
        "ok"
    );
}

/// Sends `task`, which ends every worker that runs it, and restarts workers (as a process
/// supervisor would) until the task is answered. Returns the reply, the log of each worker
/// that ended, and the worker that saw the reply.
pub(crate) async fn run_poison_task(
    names: &Names,
    settings: &[(&str, &str)],
    task: &Value,
) -> (Value, Vec<String>, WorkerProcess) {
    let mut upstream = Caller::connect().await;
    let mut worker = WorkerProcess::start(names, settings).await;
    let correlation_id = upstream.send(&names.requests, task).await;
    let mut ended = Vec::new();
    loop {
        if let Some((cid, reply)) = upstream.any_reply_within(Duration::from_millis(300)).await {
            assert_eq!(cid, correlation_id);
            return (reply, ended, worker);
        }
        if !worker.is_running() {
            ended.push(worker.log());
            assert!(ended.len() <= 10, "the poison task keeps crashing workers");
            worker = WorkerProcess::spawn(names, settings);
        }
    }
}

/// Fault injection on: the marker in [`crash_task`] aborts the worker that runs it.
const CRASHES: (&str, &str) = ("WARREN__WORKER__FAULT_INJECTION", "true");

fn crash_task() -> Value {
    json!({"prompt": "[[warren-fault:crash]] Hello", "max_tokens": 4})
}

#[tokio::test]
async fn a_task_that_crashes_the_worker_every_time_is_dead_lettered_on_a_quorum_queue() {
    let names = Names::new("poisonq");
    let (reply, crashed, mut worker) = run_poison_task(&names, &[CRASHES], &crash_task()).await;

    assert_eq!(
        crashed.len(),
        3,
        "worker.max_redeliveries (3) crashes, then the task is parked"
    );
    assert_eq!(reply["status"], "error");
    assert_eq!(reply["error"]["code"], "internal");
    assert_eq!(
        reply["error"]["retryable"], false,
        "sending it again would crash a worker again"
    );
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("delivered 4 times"));
    let upstream = Caller::connect().await;
    let parked = upstream
        .get(&names.dead)
        .await
        .expect("the poison task is in the dead-letter queue");
    assert_eq!(
        header(&parked.delivery.properties, "x-warren-error-code").as_deref(),
        Some("internal")
    );
    assert!(worker.is_running(), "the last worker survived");
}

#[tokio::test]
async fn a_task_that_crashes_the_worker_every_time_is_dead_lettered_on_a_classic_queue() {
    let names = Names::new("poisonc");
    let classic = [CRASHES, ("WARREN__TOPOLOGY__QUEUE_TYPE", "classic")];
    let (reply, crashed, mut worker) = run_poison_task(&names, &classic, &crash_task()).await;

    assert_eq!(crashed.len(), 3);
    assert_eq!(reply["error"]["code"], "internal", "{reply}");
    assert_eq!(ready_count(&names.dead).await, 1);
    assert!(worker.is_running());
}

#[tokio::test]
async fn killing_a_worker_mid_task_loses_nothing_another_worker_finishes_the_work() {
    let names = Names::new("kill9");
    let mut upstream = Caller::connect().await;
    let prefetch = [("WARREN__BROKER__PREFETCH", "4")];
    let mut first = WorkerProcess::start(&names, &prefetch).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let task = json!({"prompt": format!("Tale {i}:"), "max_tokens": 32});
        ids.push(upstream.send(&names.requests, &task).await);
    }
    let (early, _) = upstream
        .any_reply_within(crate::common::PATIENCE)
        .await
        .expect("a first reply");
    crate::common::signal(first.pid(), "KILL");
    while first.is_running() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _second = WorkerProcess::start(&names, &prefetch).await;

    let mut replies: HashMap<String, u32> = HashMap::from([(early, 1)]);
    while ids.iter().any(|id| !replies.contains_key(id)) {
        let (cid, reply) = upstream
            .any_reply_within(crate::common::PATIENCE)
            .await
            .expect("every task is answered");
        assert_eq!(reply["status"], "ok", "{reply}");
        *replies.entry(cid).or_default() += 1;
    }
    while let Some((cid, _)) = upstream.any_reply_within(Duration::from_secs(2)).await {
        *replies.entry(cid).or_default() += 1;
    }
    let duplicates: u32 = replies.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9: {} tasks, {duplicates} duplicate replies",
        ids.len()
    );
    assert_eq!(replies.len(), ids.len());
    assert_eq!(
        duplicates, 0,
        "a reply is committed with its task's ack: a killed worker answers nothing twice"
    );
}

#[tokio::test]
async fn sigterm_drains_then_exits_0_and_every_task_is_answered_or_back_in_the_queue() {
    let names = Names::new("sigterm");
    let mut upstream = Caller::connect().await;
    let mut worker = WorkerProcess::start(
        &names,
        &[
            ("WARREN__BROKER__PREFETCH", "3"),
            ("WARREN__WORKER__SHUTDOWN_GRACE_MS", "300"),
        ],
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let task = json!({"prompt": format!("Chapter {i}:"), "max_tokens": 120});
        ids.push(upstream.send(&names.requests, &task).await);
    }
    let first = upstream.any_reply_within(crate::common::PATIENCE).await;
    assert!(first.is_some());

    let status = worker.terminate().await;

    assert_eq!(status.code(), Some(0), "{}", worker.log());
    let mut answered = HashSet::from([first.unwrap().0]);
    while let Some((cid, _)) = upstream.any_reply_within(Duration::from_secs(1)).await {
        answered.insert(cid);
    }
    let mut waiting = HashSet::new();
    while let Some(message) = upstream.get(&names.requests).await {
        let cid = crate::common::correlation_id_of(&message.delivery.properties);
        waiting.insert(cid);
    }
    let accounted: HashSet<_> = answered.union(&waiting).cloned().collect();
    assert_eq!(
        accounted,
        ids.iter().cloned().collect::<HashSet<_>>(),
        "answered {answered:?}, back in the queue {waiting:?}"
    );
    assert!(
        !waiting.is_empty(),
        "with a 300 ms grace, long tasks go back to the queue"
    );
    assert!(worker.log().contains("disconnected cleanly"));
}

#[tokio::test]
async fn a_worker_started_without_a_reachable_broker_keeps_trying_instead_of_exiting() {
    let names = Names::new("nobroker");
    let mut worker = WorkerProcess::spawn(
        &names,
        &[
            ("WARREN__BROKER__URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
            ("WARREN__BROKER__RECONNECT_INITIAL_MS", "100"),
            ("WARREN__BROKER__RECONNECT_MAX_MS", "400"),
        ],
    );
    let deadline = std::time::Instant::now() + crate::common::PATIENCE;
    while worker.log().matches("reconnecting").count() < 3 {
        assert!(worker.is_running(), "the worker gave up:\n{}", worker.log());
        assert!(
            std::time::Instant::now() < deadline,
            "no reconnection tries:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(worker.is_running());
    let status = worker.terminate().await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM while reconnecting exits cleanly"
    );
}
