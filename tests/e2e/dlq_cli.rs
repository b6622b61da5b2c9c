//! `warren dlq` end to end: dead letters listed, replayed to their queue and answered, and
//! purged.

use std::time::Duration;

use crate::common::{
    header, ready_count, wait_for_mark, warren, Caller, Names, WorkerProcess, PATIENCE, REDIS,
};
use serde_json::{json, Value};

/// Runs `warren dlq ARGS` on `names`' queues: its exit code, stdout and stderr.
async fn dlq(names: &Names, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = tokio::process::Command::from(warren(names));
    command.arg("dlq").args(args).kill_on_drop(true);
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .unwrap_or_else(|_| panic!("dlq {args:?} did not exit in time"))
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // A channel dropped just before the connection's close made lapin log a connection
    // error on most runs, and on some never finish the close.
    assert!(
        !stderr.contains(" ERROR "),
        "dlq {args:?} logs no error: {stderr}"
    );
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    )
}

/// Waits until `queue` holds `count` ready messages.
async fn wait_for_ready(queue: &str, count: u32) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while ready_count(queue).await < count {
        assert!(
            std::time::Instant::now() < deadline,
            "{queue}: {count} messages missing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn dlq_list_replay_and_purge_round_trip() {
    let names = Names::new("dlq");
    let mut upstream = Caller::connect().await;
    let worker = WorkerProcess::start(&names, &[]).await;
    let mut ids = Vec::new();
    for body in [
        json!({"prompt": 1}),
        json!({"prompt": "Hello", "deadline_ms": 1}),
        json!({"messages": "nope"}),
    ] {
        let id = upstream.send(&names.requests, &body).await;
        assert_eq!(upstream.reply(&id).await["status"], "error");
        ids.push(id);
    }
    // Each dead letter is published with its error reply.
    wait_for_ready(&names.dead, 3).await;
    drop(worker);
    let dlq = async |args: &[&str]| dlq(&names, args).await;
    let (code, listed, _) = dlq(&["list", "--json"]).await;
    assert_eq!(code, Some(0));
    let letters: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<_> = letters
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ids, "listed oldest first");
    let codes: Vec<_> = letters
        .iter()
        .map(|l| l["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["invalid_request", "expired", "invalid_request"]);
    assert!(letters
        .iter()
        .all(|l| l["attempts"] == 1 && l["size"].as_u64() > Some(0)));
    let (_, listed_again, _) = dlq(&["list", "--json"]).await;
    let seen_again: Vec<_> = listed_again
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(seen_again, ids, "listing neither consumes nor reorders");

    // A task whose deadline has passed would expire again at once: it stays.
    // A script told "replayed" by exit 0 would be wrong: --id that replays nothing exits 1.
    let (code, out, err) = dlq(&["replay", "--id", &ids[1]]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(out.contains("replayed 0"), "{out}");
    assert!(out.contains("1 chosen but past their deadline_ms"), "{out}");
    assert!(err.contains("no dead letter with id"), "{err}");
    let (code, out, err) = dlq(&["replay", "--id", "no-such-task"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(out.contains("replayed 0"), "{out}");
    let (code, out, err) = dlq(&["replay", "--id", &ids[2]]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("replayed 1"), "{out}");
    let replayed = upstream
        .get(&names.requests)
        .await
        .expect("the replayed task is back in the requests queue");
    let properties = &replayed.delivery.properties;
    assert_eq!(
        properties.correlation_id().as_ref().map(|c| c.to_string()),
        Some(ids[2].clone())
    );
    assert_eq!(
        header(properties, "x-warren-attempts"),
        None,
        "attempts start over"
    );
    assert_eq!(header(properties, "x-warren-error-code"), None);
    let (_, remaining, _) = dlq(&["list", "--json"]).await;
    assert_eq!(remaining.lines().count(), 2);

    let (code, _, err) = dlq(&["purge"]).await;
    assert_ne!(code, Some(0), "purge asks for --yes");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(ready_count(&names.dead).await, 2);
    let (code, out, _) = dlq(&["purge", "--yes"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("purged 2"), "{out}");
    assert_eq!(ready_count(&names.dead).await, 0);
}

#[tokio::test]
async fn a_replayed_task_runs_as_a_fresh_task_even_with_finished_marks() {
    let names = Names::new("dlqmarks");
    let mut upstream = Caller::connect().await;
    let _worker = WorkerProcess::start(
        &names,
        &[
            ("WARREN__WORKER__REDIS_URL", REDIS),
            ("WARREN__LIMITS__MAX_AGE_MS", "60000"),
        ],
    )
    .await;
    // Published two minutes ago as far as the worker can tell: it expires unrun.
    let id = uuid::Uuid::new_v4().to_string();
    let sent_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let old = upstream.properties(&id).with_timestamp(sent_s - 120);
    let task = json!({"prompt": "Hello", "max_tokens": 2}).to_string();
    assert!(upstream
        .publish(&names.requests, task.as_bytes(), old)
        .await
        .is_ack());
    let first = upstream.reply(&id).await;
    assert_eq!(first["error"]["code"], "expired", "{first}");
    // Its id is recorded as finished: a second copy of that run would not run again.
    wait_for_mark(&format!("warren:finished:{}:{id}", names.requests)).await;
    wait_for_ready(&names.dead, 1).await;

    let (code, out, err) = dlq(&names, &["replay", "--id", &id]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("replayed 1"), "{out}");
    // The replay is a new run, published now: it runs, and its reply reaches the caller.
    let second = upstream.reply(&id).await;
    assert_eq!(second["status"], "ok", "{second}");
    assert_eq!(second["id"], id.as_str(), "{second}");
    wait_for_mark(&format!("warren:finished:{}:{id}:replay:1", names.requests)).await;
    assert_eq!(ready_count(&names.dead).await, 0);
}

#[tokio::test]
async fn a_replay_makes_one_pass_and_sends_each_kind_to_its_queue() {
    let names = Names::new("dlqpass");
    let embeddings = format!("{}.embeddings", names.base);
    let mut embed_queue = Caller::connect_with_reply_queue(Some(&embeddings)).await;
    let mut upstream = Caller::connect().await;
    let _worker = WorkerProcess::start(&names, &[]).await;
    const BAD: usize = 30;
    for _ in 0..BAD {
        let id = upstream.send(&names.requests, &json!({"prompt": 1})).await;
        assert_eq!(upstream.reply(&id).await["status"], "error");
    }
    // An embedding task's dead letter, as an embed worker parks one.
    let embedding = upstream
        .send(&names.dead, &json!({"input": ["a", "b"]}))
        .await;
    wait_for_ready(&names.dead, BAD as u32 + 1).await;

    // The worker is running: each replayed bad task fails again and comes back during the
    // pass. The pass looks at what the queue held when it began, once.
    let mut command = tokio::process::Command::from(warren(&names));
    command
        .env("WARREN__TOPOLOGY__EMBEDDINGS_QUEUE", &embeddings)
        .args(["dlq", "replay", "--all"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("the replay ends")
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}");
    let expected = format!(
        "replayed {} to {} (1 of them embedding tasks",
        BAD + 1,
        names.requests
    );
    assert!(out.contains(&expected), "{out}");
    let replayed = embed_queue.reply(&embedding).await;
    assert_eq!(replayed, json!({"input": ["a", "b"]}));
    // Every bad task is back, dead-lettered once more.
    wait_for_ready(&names.dead, BAD as u32).await;
}

#[tokio::test]
async fn a_replay_under_routing_by_model_needs_the_model_whose_queue_takes_it() {
    let names = Names::new("dlq-routed");
    let output = tokio::process::Command::from(warren(&names))
        .args(["dlq", "replay", "--all"])
        .env("WARREN__TOPOLOGY__TASKS_EXCHANGE", "warren.test.tasks")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(PATIENCE, output)
        .await
        .expect("the refusal comes at once")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("engine.model_name"), "{stderr}");
}
