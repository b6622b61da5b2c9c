//! The synthetic engine's text: lengths, seeds, stops, refusals, the context, streaming.

use super::*;
use crate::config::Settings;

pub(in crate::engine::synthetic) fn task(body: serde_json::Value) -> Task {
    let limits = Settings::defaults().task_limits();
    crate::protocol::parse_task(body.to_string().as_bytes(), &limits).unwrap()
}

/// A pace fast enough for tests, or slow enough to time out.
pub(in crate::engine::synthetic) fn pace(tokens_per_second: f64) -> SyntheticSettings {
    SyntheticSettings {
        first_token_ms: 0,
        tokens_per_second,
        jitter: 0.5,
        tokens: 5,
    }
}

async fn made_up(body: serde_json::Value) -> Result<Generation, TaskError> {
    generate(&task(body), None, &pace(1e6), 64).await
}

#[tokio::test]
async fn max_tokens_ends_with_length_and_no_limit_ends_with_stop_after_the_configured_length() {
    let limited = made_up(serde_json::json!({"prompt": "Hi", "max_tokens": 7}))
        .await
        .unwrap();
    assert_eq!(
        (limited.completion_tokens, limited.finish_reason),
        (7, FinishReason::Length)
    );
    assert_eq!(limited.text.split_whitespace().count(), 7);
    let free = made_up(serde_json::json!({"prompt": "Hi"})).await.unwrap();
    assert_eq!(
        (free.completion_tokens, free.finish_reason),
        (5, FinishReason::Stop)
    );
    assert_eq!(free.prompt_tokens, 1);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_words_and_greedy_tasks_agree() {
    let seeded =
        serde_json::json!({"prompt": "Hi", "max_tokens": 12, "temperature": 0.8, "seed": 7});
    let (a, b) = (
        made_up(seeded.clone()).await.unwrap(),
        made_up(seeded).await.unwrap(),
    );
    assert_eq!(a.text, b.text);
    let greedy = serde_json::json!({"prompt": "Hi", "max_tokens": 12});
    assert_eq!(
        made_up(greedy.clone()).await.unwrap().text,
        made_up(greedy).await.unwrap().text
    );
}

#[tokio::test]
async fn a_stop_sequence_cuts_the_text_before_it() {
    let all = made_up(serde_json::json!({"prompt": "Hi", "max_tokens": 12}))
        .await
        .unwrap();
    let stop = all.text.split_whitespace().nth(3).unwrap().to_owned();
    let cut = made_up(serde_json::json!({"prompt": "Hi", "max_tokens": 12, "stop": [stop]}))
        .await
        .unwrap();
    assert_eq!(cut.finish_reason, FinishReason::Stop);
    assert!(all.text.starts_with(&cut.text) && cut.text.len() < all.text.len());
    assert!(
        !cut.text.contains(&stop),
        "{:?} still holds {stop:?}",
        cut.text
    );
}

#[tokio::test]
async fn what_needs_a_model_is_refused_by_name_and_the_context_bounds_a_task() {
    for (field, value) in [
        ("json_schema", serde_json::json!({"type": "object"})),
        ("logprobs", serde_json::json!(2)),
    ] {
        let mut body = serde_json::json!({"prompt": "Hi", "max_tokens": 2});
        body[field] = value;
        let refused = made_up(body).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidRequest);
        assert!(
            refused.message.contains("synthetic engine"),
            "{}",
            refused.message
        );
    }
    let long = made_up(serde_json::json!({"prompt": "Hi", "max_tokens": 64})).await;
    assert_eq!(long.unwrap_err().code, ErrorCode::ContextLengthExceeded);
}

/// A streamed task's completion and the text its pieces add up to.
async fn streamed(body: serde_json::Value) -> (Generation, String) {
    let (sender, mut received) = mpsc::unbounded_channel();
    let done = generate(&task(body), Some(&sender), &pace(1e6), 64)
        .await
        .unwrap();
    drop(sender);
    let mut text = String::new();
    while let Some(delta) = received.recv().await {
        text.push_str(&delta.text);
    }
    (done, text)
}

#[tokio::test]
async fn streamed_words_add_up_to_the_text() {
    let (done, text) =
        streamed(serde_json::json!({"prompt": "Hi", "max_tokens": 6, "stream": true})).await;
    assert_eq!(text, done.text);
}

#[tokio::test]
async fn a_stop_string_across_words_is_never_streamed() {
    let all = made_up(serde_json::json!({"prompt": "Hi", "max_tokens": 12}))
        .await
        .unwrap();
    let words: Vec<&str> = all.text.split_whitespace().collect();
    let stop = format!("{} {}", words[4], words[5]);
    let body =
        serde_json::json!({"prompt": "Hi", "max_tokens": 12, "stream": true, "stop": [stop]});
    let (done, text) = streamed(body).await;
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert_eq!(text, done.text);
}
