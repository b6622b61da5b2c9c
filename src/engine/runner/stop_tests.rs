//! `Engine::stop` on the real model: the engine thread stops at its next round, ending the
//! tasks it runs, without waiting for a slot to free.

use crate::config::Settings;
use crate::engine::test_model::model_path;
use crate::engine::{Engine, GenerationRequest};
use crate::protocol::ErrorCode;

/// A task that runs until stopped: every end token is biased away.
fn endless(
    stream: Option<tokio::sync::mpsc::UnboundedSender<crate::engine::Delta>>,
) -> GenerationRequest {
    let body = serde_json::json!({
        "prompt": "Once upon a time, in a village by the sea,",
        "max_tokens": 400,
        "logit_bias": {"1": -100, "106": -100, "212": -100},
    });
    let limits = Settings::defaults().task_limits();
    GenerationRequest {
        task: crate::protocol::parse_task(body.to_string().as_bytes(), &limits).expect("a task"),
        stream,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn needs_model_a_stop_ends_the_running_task_and_drops_the_waiting_one() {
    let mut settings = Settings::defaults().engine;
    settings.model_path = model_path();
    settings.slots = 1;
    settings.context_size = 512;
    let engine = tokio::task::spawn_blocking(move || Engine::start(&settings))
        .await
        .expect("the start-up thread")
        .expect("the engine starts");
    let engine = std::sync::Arc::new(engine);

    let (pieces, mut stream) = tokio::sync::mpsc::unbounded_channel();
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { engine.generate(endless(Some(pieces))).await }
    });
    stream.recv().await.expect("the running task generates");
    // The only slot is taken: this one waits in the engine's queue.
    let waiting = tokio::spawn({
        let engine = engine.clone();
        async move { engine.generate(endless(None)).await }
    });
    while engine.occupancy().waiting() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }

    let stopping = engine.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .expect("the stop returns");
    let ended = running.await.expect("the running task's future");
    let error = ended.expect_err("stopped before its 400 tokens");
    assert_eq!(error.code, ErrorCode::Internal);
    assert_eq!(error.message, "the worker is stopping");
    let error = waiting
        .await
        .expect("the waiting task's future")
        .expect_err("never admitted");
    assert_eq!(error.code, ErrorCode::Internal);
}
