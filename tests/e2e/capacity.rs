//! What bounds a worker: prefetch bounds the deliveries it holds, the context bounds a task
//! without `max_tokens`, and the KV cache settings (flash attention, a q8_0 cache) serve on the
//! CPU too.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{ready_count, Caller, PATIENCE};

#[tokio::test]
async fn prefetch_bounds_the_deliveries_a_worker_holds() {
    let crate::common::Serving {
        upstream,
        worker: _worker,
        names,
    } = crate::common::serving("prefetch", &[("WARREN__BROKER__PREFETCH", "3")]).await;
    // The replies wait in a durable queue nobody reads until the end: the broker counts them.
    let replies = format!("{}.replies", names.requests);
    Caller::connect_with_reply_queue(Some(&replies))
        .await
        .close()
        .await;

    const TASKS: u32 = 8;
    for i in 0..TASKS {
        let task = json!({"prompt": format!("Story number {i}:"), "max_tokens": 32});
        let properties = upstream
            .properties(&format!("story-{i}"))
            .with_reply_to(replies.as_str().into());
        let body = task.to_string();
        let confirm = upstream
            .publish(&names.requests, body.as_bytes(), properties)
            .await;
        assert!(confirm.is_ack(), "task {i} published");
    }
    // What the worker holds is what is neither ready nor answered, both counted by the broker
    // (passive declares: exact, unlike the management API's statistics). The ready count is
    // read first, so a task answered between the two reads counts as answered: the number
    // is never above what the worker held at the first read.
    let deadline = Instant::now() + PATIENCE;
    let mut held_seen = Vec::new();
    loop {
        let ready = ready_count(&names.requests).await;
        let answered = ready_count(&replies).await;
        held_seen.push(TASKS.saturating_sub(ready + answered));
        if answered >= TASKS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{answered} of {TASKS} tasks answered in time (held: {held_seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("deliveries held, sampled: {held_seen:?}");
    let most_held = held_seen.iter().copied().max().unwrap_or(0);
    assert!(
        most_held <= 3,
        "the broker handed out {most_held} deliveries with prefetch 3"
    );
    assert_eq!(
        most_held, 3,
        "with {TASKS} tasks queued the worker holds its whole prefetch (seen: {held_seen:?})"
    );
    let mut reader = Caller::connect_with_reply_queue(Some(&replies)).await;
    for _ in 0..TASKS {
        let (_, reply) = reader.any_reply_within(PATIENCE).await.expect("a reply");
        assert_eq!(reply["status"], "ok", "{reply}");
    }
    reader.close().await;
}

#[tokio::test]
async fn flash_attention_and_a_q8_0_kv_cache_serve_on_the_cpu_too() {
    let crate::common::Serving {
        mut upstream,
        worker: _worker,
        names,
    } = crate::common::serving(
        "flash",
        &[
            ("WARREN__ENGINE__FLASH_ATTENTION", "on"),
            ("WARREN__ENGINE__KV_CACHE_TYPE", "q8_0"),
        ],
    )
    .await;
    let reply = upstream
        .request(
            &names.requests,
            &json!({"prompt": "The capital of France is", "max_tokens": 8}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["usage"]["completion_tokens"], 8, "{reply}");
}

#[tokio::test]
async fn without_max_tokens_a_task_generates_until_the_context_is_full_and_one_that_cannot_fit_is_refused(
) {
    let crate::common::Serving {
        mut upstream,
        worker: _worker,
        names,
    } = crate::common::serving("open_length", &[("WARREN__ENGINE__CONTEXT_SIZE", "64")]).await;

    let counting = json!({"prompt": "1, 2, 3, 4, 5, 6,"});
    let id = upstream.send(&names.requests, &counting).await;
    let reply = upstream.reply(&id).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["finish_reason"], "length", "{reply}");
    let prompt = reply["usage"]["prompt_tokens"].as_u64().unwrap();
    let completion = reply["usage"]["completion_tokens"].as_u64().unwrap();
    // The context (64 cells) ended it, not a default limit.
    assert!((60..=64).contains(&(prompt + completion)), "{reply}");

    let too_many = json!({"prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 60});
    let id = upstream.send(&names.requests, &too_many).await;
    let reply = upstream.reply(&id).await;
    assert_eq!(reply["error"]["code"], "context_length_exceeded", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("`max_tokens` may be at most"), "{reply}");
    assert_eq!(reply["error"]["retryable"], false);
}
