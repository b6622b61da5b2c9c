//! Continuous batching and streaming, end to end: several tasks decode together in one
//! worker, each finishes on its own schedule, and streamed chunks rebuild the final text.
//! No test here asserts a speed: speed lives in `make bench`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{management_get, serving, Serving};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// The worker's `warren_slots_busy`, read from its metrics.
fn slots_busy(base: &str) -> u64 {
    let Ok(mut response) = ureq::get(&format!("{base}/metrics")).call() else {
        return 0;
    };
    let text = response.body_mut().read_to_string().unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("warren_slots_busy ")?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn four_slots_decode_four_long_tasks_at_once() {
    let Serving {
        mut upstream,
        worker,
        names,
    } = serving("slots", &[("WARREN__ENGINE__SLOTS", "4")]).await;
    let base = worker.health_url().await;
    let done = Arc::new(AtomicBool::new(false));
    let sampling_done = done.clone();
    let sampler = tokio::task::spawn_blocking(move || {
        let mut most = 0;
        while !sampling_done.load(Ordering::Relaxed) {
            most = most.max(slots_busy(&base));
            std::thread::sleep(Duration::from_millis(20));
        }
        most
    });
    let mut ids = Vec::new();
    for i in 0..4 {
        let task = json!({"prompt": format!("Long story {i}:"), "max_tokens": 96});
        ids.push(upstream.send(&names.requests, &task).await);
    }
    for id in &ids {
        let reply = upstream.reply(id).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        assert_eq!(reply["usage"]["completion_tokens"], 96, "{reply}");
    }
    done.store(true, Ordering::Relaxed);
    assert_eq!(
        sampler.await.unwrap(),
        4,
        "all four slots were busy together"
    );
}

#[tokio::test]
async fn a_short_task_admitted_while_a_long_one_runs_finishes_first() {
    let Serving {
        mut upstream,
        worker: _worker,
        names,
    } = serving("shortfirst", &[("WARREN__ENGINE__SLOTS", "2")]).await;
    let long = upstream
        .send(
            &names.requests,
            &json!({"prompt": "Once upon a time", "max_tokens": 160}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let short = upstream
        .send(
            &names.requests,
            &json!({"prompt": "Hello", "max_tokens": 4}),
        )
        .await;

    let arrival = upstream.next_replies(2).await;

    assert_eq!(
        arrival,
        vec![short, long],
        "the short task does not wait for the long one"
    );
}

#[tokio::test]
async fn a_task_that_times_out_frees_its_slot_while_the_others_go_on() {
    let Serving {
        mut upstream,
        worker: _worker,
        names,
    } = serving(
        "slotfree",
        &[
            ("WARREN__ENGINE__SLOTS", "2"),
            ("WARREN__RETRY__MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let long = upstream
        .send(
            &names.requests,
            &json!({"prompt": "Chapter one:", "max_tokens": 200}),
        )
        .await;
    let doomed = upstream
        .send(
            &names.requests,
            &json!({"prompt": "Chapter two:", "max_tokens": 400, "timeout_ms": 400}),
        )
        .await;
    let timed_out = upstream.reply(&doomed).await;
    assert_eq!(timed_out["error"]["code"], "timeout", "{timed_out}");
    // The freed slot takes the next task, which finishes while the long one still runs.
    let next = upstream
        .send(&names.requests, &json!({"prompt": "Hi", "max_tokens": 3}))
        .await;

    let (first, _) = upstream
        .any_reply_within(crate::common::PATIENCE)
        .await
        .unwrap();
    let (second, finished) = upstream
        .any_reply_within(crate::common::PATIENCE)
        .await
        .unwrap();

    assert_eq!((first, second), (next, long));
    assert_eq!(finished["status"], "ok");
    assert_eq!(finished["usage"]["completion_tokens"], 200);
}

#[tokio::test]
async fn the_same_request_with_the_same_seed_gives_the_same_text_with_several_slots() {
    let Serving {
        mut upstream,
        worker: _worker,
        names,
    } = serving("seedslots", &[("WARREN__ENGINE__SLOTS", "4")]).await;
    let task =
        json!({"prompt": "The lighthouse", "max_tokens": 32, "temperature": 0.8, "seed": 99});
    let first = upstream.request(&names.requests, &task).await;
    let second = upstream.request(&names.requests, &task).await;
    assert_eq!(first["text"], second["text"]);
}

/// Sends a streamed task and collects its chunks and final reply, in arrival order.
async fn stream(queue: &str, task: Value) -> (Vec<Value>, Value) {
    let upstream = crate::common::Caller::connect().await;
    let channel = &upstream.channel;
    let (reply_queue, mut consumer) =
        warren::broker::consume_exclusive_queue(channel, "stream-test")
            .await
            .unwrap();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let properties = upstream
        .properties(&correlation_id)
        .with_reply_to(reply_queue.as_str().into());
    assert!(upstream
        .publish(queue, task.to_string().as_bytes(), properties)
        .await
        .is_ack());
    let mut chunks = Vec::new();
    loop {
        let delivery = tokio::time::timeout(crate::common::PATIENCE, consumer.next())
            .await
            .expect("stream in time")
            .unwrap()
            .unwrap();
        let message: Value = serde_json::from_slice(&delivery.data).unwrap();
        if message["status"] == "chunk" {
            chunks.push(message);
        } else {
            return (chunks, message);
        }
    }
}

#[tokio::test]
async fn streamed_chunks_concatenate_to_the_final_text_even_across_multibyte_characters() {
    let Serving {
        upstream: _upstream,
        worker: _worker,
        names,
    } = serving(
        "stream",
        &[
            ("WARREN__ENGINE__SLOTS", "2"),
            ("WARREN__STREAM__MAX_PIECES_PER_CHUNK", "2"),
        ],
    )
    .await;
    let mut saw_multibyte = false;
    for (prompt, stop) in [
        ("日本の首都は", None),
        ("Emoji story: 🐇🐇", None),
        ("Les élèves du lycée", None),
        ("1, 2, 3, 4, 5,", Some(" 9")),
    ] {
        let mut task = json!({"prompt": prompt, "max_tokens": 40, "stream": true});
        if let Some(stop) = stop {
            task["stop"] = json!([stop]);
        }
        let (chunks, reply) = stream(&names.requests, task).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        let text = reply["text"].as_str().unwrap();
        let indices: Vec<_> = chunks
            .iter()
            .map(|c| c["index"].as_u64().unwrap())
            .collect();
        assert_eq!(
            indices,
            (0..chunks.len() as u64).collect::<Vec<_>>(),
            "{prompt}"
        );
        assert!(chunks.len() > 1, "{prompt}: text came in several chunks");
        let joined: String = chunks
            .iter()
            .map(|c| c["delta"].as_str().unwrap())
            .collect();
        assert_eq!(joined, text, "{prompt}");
        assert!(chunks
            .iter()
            .all(|c| c["id"] == reply["id"] && c["attempt"] == 1));
        saw_multibyte |= text.chars().any(|c| c.len_utf8() > 1);
        if let Some(stop) = stop {
            assert!(!joined.contains(stop), "the stop string is never streamed");
        }
    }
    assert!(
        saw_multibyte,
        "precondition: some text had multi-byte characters"
    );
}

#[tokio::test]
async fn prefetch_equals_the_slots_plus_headroom() {
    let Serving {
        upstream: _upstream,
        worker: _worker,
        names,
    } = serving(
        "prefetchslots",
        &[
            ("WARREN__ENGINE__SLOTS", "3"),
            ("WARREN__BROKER__PREFETCH_EXTRA", "1"),
        ],
    )
    .await;
    let deadline = std::time::Instant::now() + crate::common::PATIENCE;
    let prefetch = loop {
        let consumers = management_get("consumers/%2F").unwrap_or(Value::Null);
        let found = consumers.as_array().into_iter().flatten().find_map(|c| {
            (c["queue"]["name"] == names.requests.as_str()).then(|| c["prefetch_count"].as_u64())?
        });
        if let Some(prefetch) = found {
            break prefetch;
        }
        assert!(std::time::Instant::now() < deadline, "consumer not listed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(prefetch, 4);
}

#[tokio::test]
async fn warren_bench_reports_every_task_the_broker_path_and_the_broker_floor() {
    let Serving {
        upstream: _upstream,
        worker: _worker,
        names,
    } = serving("bench", &[("WARREN__ENGINE__SLOTS", "2")]).await;

    let bench = tokio::task::spawn_blocking(move || {
        let child = crate::common::warren(&names)
            .args(["bench", "--tasks", "6", "--concurrency", "2"])
            .args(["--max-tokens", "8", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("warren bench starts");
        let pid = child.id();
        let output = child.wait_with_output().expect("warren bench runs");
        (pid, output, names)
    });
    let (pid, output, _names) = bench.await.unwrap();

    assert!(
        output.status.success(),
        "warren bench exit: {:?}",
        output.status
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("--json prints JSON");
    assert_eq!(report["tasks"], 6, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let tokens = report["completion_tokens"].as_u64().unwrap();
    assert!(
        (6..=48).contains(&tokens),
        "6 tasks of 1 to 8 tokens: {report}"
    );
    assert!(report["tokens_per_s"].as_f64().unwrap() > 0.0, "{report}");
    for measure in ["latency_ms", "overhead_ms", "broker_floor_ms"] {
        let p50 = report[measure]["p50"].as_f64().unwrap_or(0.0);
        let p99 = report[measure]["p99"].as_f64().unwrap_or(0.0);
        assert!(p50 > 0.0 && p50 <= p99, "{measure}: {report}");
    }
    assert!(
        report["overhead_ms"]["p50"].as_f64() < report["latency_ms"]["p50"].as_f64(),
        "the broker path is a part of the latency: {report}"
    );
    let queues = management_get("queues").expect("queue list");
    let leftover: Vec<_> = queues
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| q["name"].as_str())
        .filter(|name| name.ends_with(&format!(":{pid}.floor")))
        .collect();
    assert!(
        leftover.is_empty(),
        "the probe queue is deleted: {leftover:?}"
    );
}
