//! What bounds a worker: prefetch bounds the deliveries it holds, the context bounds a task
//! without `max_tokens`, and the KV cache settings (flash attention, a q8_0 cache) serve on the
//! CPU too.

use std::time::Duration;

use serde_json::json;

#[tokio::test]
async fn prefetch_bounds_the_deliveries_a_worker_holds() {
    let crate::common::Serving {
        mut upstream,
        worker: _worker,
        names,
    } = crate::common::serving("prefetch", &[("WARREN__BROKER__PREFETCH", "3")]).await;

    let mut ids = Vec::new();
    for i in 0..8 {
        let task = json!({"prompt": format!("Story number {i}:"), "max_tokens": 64});
        ids.push(upstream.send(&names.requests, &task).await);
    }
    // The broker's count lags by up to a second, so sample it while the tasks run.
    let queue = names.requests.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampling_done = done.clone();
    let sampler = tokio::task::spawn_blocking(move || {
        let mut samples = Vec::new();
        while !sampling_done.load(std::sync::atomic::Ordering::Relaxed) && samples.len() < 500 {
            samples.push(crate::common::unacked_count(&queue));
            std::thread::sleep(Duration::from_millis(500));
        }
        samples
    });
    for id in &ids {
        let reply = upstream.reply(id).await;
        assert_eq!(reply["status"], "ok", "{reply}");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let most_unacked = samples.iter().copied().max().unwrap_or(0);
    eprintln!("unacked samples: {samples:?}");

    assert!(
        most_unacked <= 3,
        "the broker handed out {most_unacked} deliveries with prefetch 3"
    );
    assert!(
        most_unacked >= 2,
        "with 8 tasks queued the worker should hold more than one (saw {most_unacked})"
    );
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
