//! End-to-end behaviour of `warren worker`: a real RabbitMQ, the real model, tasks published
//! with lapin the way an upstream service publishes them.

use crate::common::{header, Caller};
use lapin::BasicProperties;
use serde_json::{json, Value};

const MODEL_NAME: &str = "Gemma 3 270m";

fn text(reply: &Value) -> &str {
    reply["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {reply}"))
}

#[tokio::test]
async fn a_prompt_task_gets_a_real_completion_with_the_documented_fields() {
    let crate::common::Serving {
        mut upstream,
        worker: _worker,
        names,
    } = crate::common::serving("prompt", &[]).await;

    let correlation_id = upstream
        .send(
            &names.requests,
            &json!({"prompt": "The capital of France is", "max_tokens": 12}),
        )
        .await;
    let (properties, reply) = upstream.reply_with_properties(&correlation_id).await;

    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["version"], 1);
    assert_eq!(reply["id"], correlation_id.as_str());
    assert!(!text(&reply).trim().is_empty(), "{reply}");
    assert!(["stop", "length"].contains(&reply["finish_reason"].as_str().unwrap()));
    assert!(reply["usage"]["prompt_tokens"].as_u64().unwrap() >= 5);
    let completion_tokens = reply["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&completion_tokens), "{reply}");
    assert_eq!(reply["model"], MODEL_NAME);
    assert_eq!(reply["attempt"], 1);
    assert!(
        reply.get("error").is_none(),
        "an ok reply has no error: {reply}"
    );
    for field in ["queued", "prompt", "generation", "total"] {
        assert!(
            reply["timings_ms"][field].is_u64(),
            "timings_ms.{field}: {reply}"
        );
    }
    assert_eq!(
        properties.correlation_id().as_ref().map(|c| c.as_str()),
        Some(correlation_id.as_str())
    );
    assert_eq!(
        properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(
        *properties.delivery_mode(),
        Some(2),
        "replies are persistent"
    );
    let worker_us: u64 = crate::common::header(&properties, "x-warren-worker-us")
        .and_then(|v| v.parse().ok())
        .expect("a reply says how long the worker took, in microseconds");
    let total_ms = reply["timings_ms"]["total"].as_u64().unwrap();
    assert!(
        worker_us >= total_ms * 1000,
        "the worker's time until publication ({worker_us} us) includes timings_ms.total ({total_ms} ms)"
    );
}

#[tokio::test]
async fn a_chat_task_is_rendered_with_the_chat_template() {
    let crate::common::Serving {
        mut upstream,
        worker: _worker,
        names,
    } = crate::common::serving("chat", &[]).await;
    let question = "What is the capital of France?";

    let chat = upstream
        .request(
            &names.requests,
            &json!({
                "messages": [
                    {"role": "system", "content": "Answer in one word."},
                    {"role": "user", "content": question}
                ],
                "max_tokens": 16
            }),
        )
        .await;
    let raw = upstream
        .request(
            &names.requests,
            &json!({"prompt": question, "max_tokens": 1}),
        )
        .await;

    assert_eq!(chat["status"], "ok", "{chat}");
    assert!(chat["text"].is_string());
    // The template wraps the turns in <start_of_turn>user ... <start_of_turn>model markers.
    let chat_prompt = chat["usage"]["prompt_tokens"].as_u64().unwrap();
    let raw_prompt = raw["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        chat_prompt >= raw_prompt + 8,
        "chat prompt ({chat_prompt} tokens) should carry the template's markers beyond the raw text ({raw_prompt})"
    );
}

#[tokio::test]
async fn the_same_seed_and_settings_give_the_same_text() {
    let crate::common::Serving {
        mut upstream,
        worker: _worker,
        names,
    } = crate::common::serving("seed", &[]).await;
    let sampled = json!({
        "prompt": "Once upon a time", "max_tokens": 24,
        "temperature": 0.9, "top_p": 0.95, "top_k": 50, "seed": 1234
    });
    let greedy = json!({"prompt": "Once upon a time", "max_tokens": 24});

    let first = upstream.request(&names.requests, &sampled).await;
    let second = upstream.request(&names.requests, &sampled).await;
    let greedy_first = upstream.request(&names.requests, &greedy).await;
    let greedy_second = upstream.request(&names.requests, &greedy).await;

    assert_eq!(first["status"], "ok", "{first}");
    assert_eq!(text(&first), text(&second));
    assert_eq!(text(&greedy_first), text(&greedy_second));
}

#[tokio::test]
async fn max_tokens_ends_generation_with_length_after_exactly_that_many_tokens() {
    let crate::common::Serving {
        mut upstream,
        worker: _worker,
        names,
    } = crate::common::serving("maxtok", &[]).await;

    let reply = upstream
        .request(
            &names.requests,
            &json!({"prompt": "Once upon a time, in a land far away,", "max_tokens": 5}),
        )
        .await;

    assert_eq!(reply["finish_reason"], "length", "{reply}");
    assert_eq!(reply["usage"]["completion_tokens"], 5, "{reply}");
}

#[tokio::test]
async fn a_stop_sequence_ends_the_text_before_it() {
    let crate::common::Serving {
        mut upstream,
        worker: _worker,
        names,
    } = crate::common::serving("stop", &[]).await;
    let prompt = "1, 2, 3, 4, 5,";

    let free = upstream
        .request(
            &names.requests,
            &json!({"prompt": prompt, "max_tokens": 16}),
        )
        .await;
    let free_text = text(&free).to_owned();
    let stop = " 8";
    let cut = free_text.find(stop).unwrap_or_else(|| {
        panic!("precondition: greedy text {free_text:?} should contain {stop:?}")
    });

    let stopped = upstream
        .request(
            &names.requests,
            &json!({"prompt": prompt, "max_tokens": 16, "stop": [stop]}),
        )
        .await;

    assert_eq!(stopped["finish_reason"], "stop", "{stopped}");
    assert_eq!(text(&stopped), &free_text[..cut]);
}

#[tokio::test]
async fn a_task_without_reply_to_gets_its_reply_in_the_results_queue() {
    let crate::common::Serving {
        upstream,
        worker: _worker,
        names,
    } = crate::common::serving("noreply", &[]).await;
    let correlation_id = uuid::Uuid::new_v4().to_string();

    let confirm = upstream
        .publish(
            &names.requests,
            json!({"prompt": "Hello", "max_tokens": 3})
                .to_string()
                .as_bytes(),
            BasicProperties::default().with_correlation_id(correlation_id.as_str().into()),
        )
        .await;
    assert!(confirm.is_ack());

    let (_, body) = upstream.take_from(&names.results, &correlation_id).await;
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["id"], correlation_id.as_str());
}

/// Sends a task whose reply `reply_to` cannot take; checks that the reply is kept in the
/// results queue, marked with that queue, and that the worker then serves the next task.
async fn reply_is_kept_in_the_results_queue(
    upstream: &mut Caller,
    names: &crate::common::Names,
    reply_to: &str,
) {
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let confirm = upstream
        .publish(
            &names.requests,
            json!({"prompt": "Hello", "max_tokens": 3})
                .to_string()
                .as_bytes(),
            BasicProperties::default()
                .with_correlation_id(correlation_id.as_str().into())
                .with_reply_to(reply_to.into()),
        )
        .await;
    assert!(confirm.is_ack());

    let (properties, body) = upstream.take_from(&names.results, &correlation_id).await;
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(
        header(&properties, "x-warren-undeliverable-reply-to").as_deref(),
        Some(reply_to)
    );
    let next = upstream
        .request(&names.requests, &json!({"prompt": "Hi", "max_tokens": 2}))
        .await;
    assert_eq!(next["status"], "ok");
}

#[tokio::test]
async fn a_reply_to_a_queue_that_does_not_exist_is_kept_in_the_results_queue() {
    let crate::common::Serving {
        mut upstream,
        mut worker,
        names,
    } = crate::common::serving("lostreply", &[]).await;
    let missing = format!("{}.nobody-listens", names.requests);
    reply_is_kept_in_the_results_queue(&mut upstream, &names, &missing).await;
    assert!(worker.is_running());
}

#[tokio::test]
async fn a_reply_refused_by_a_full_reply_queue_is_kept_in_the_results_queue() {
    let crate::common::Serving {
        mut upstream,
        mut worker,
        names,
    } = crate::common::serving("fullreply", &[]).await;
    // A caller's reply queue bounded with reject-publish, and already full: the broker
    // refuses the reply at the commit (and closes the worker's channel; it reconnects).
    let full = format!("{}.full-replies", names.requests);
    let mut arguments = lapin::types::FieldTable::default();
    arguments.insert("x-max-length".into(), lapin::types::AMQPValue::LongInt(1));
    arguments.insert(
        "x-overflow".into(),
        lapin::types::AMQPValue::LongString("reject-publish".into()),
    );
    upstream
        .channel
        .queue_declare(
            full.as_str().into(),
            lapin::options::QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("declare the full reply queue");
    let filler = upstream
        .publish(&full, b"already here", BasicProperties::default())
        .await;
    assert!(filler.is_ack());

    reply_is_kept_in_the_results_queue(&mut upstream, &names, &full).await;
    assert!(worker.is_running());
    // The refused reply's task was acked with the commit, not run again.
    let runs = worker.log().matches("task completed").count();
    assert_eq!(runs, 2, "{}", worker.log());
    assert_eq!(crate::common::ready_count(&names.requests).await, 0);

    // A bad task whose error reply the full queue refuses: its dead letter took effect
    // with the ack, and counts.
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let confirm = upstream
        .publish(
            &names.requests,
            json!({"prompt": 1}).to_string().as_bytes(),
            BasicProperties::default()
                .with_correlation_id(correlation_id.as_str().into())
                .with_reply_to(full.as_str().into()),
        )
        .await;
    assert!(confirm.is_ack());
    let (_, body) = upstream.take_from(&names.results, &correlation_id).await;
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["status"], "error", "{reply}");
    let metrics = worker.metrics_text().await;
    assert!(
        metrics.contains(r#"warren_dead_letters_total{code="invalid_request"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_using_direct_reply_to_gets_its_reply() {
    let crate::common::Serving {
        upstream: _upstream,
        worker: _worker,
        names,
    } = crate::common::serving("directreply", &[]).await;
    let connection = lapin::Connection::connect(
        crate::common::AMQP_URL,
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    // Direct reply-to: consume the pseudo-queue no-ack, then publish on the same channel.
    let channel = connection.create_channel().await.unwrap();
    let mut replies = channel
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "direct".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    channel
        .basic_publish(
            "".into(),
            names.requests.as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            json!({"prompt": "Hello", "max_tokens": 3})
                .to_string()
                .as_bytes(),
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_correlation_id(correlation_id.as_str().into())
                .with_reply_to("amq.rabbitmq.reply-to".into()),
        )
        .await
        .unwrap();

    let delivery = tokio::time::timeout(
        crate::common::PATIENCE,
        futures_util::StreamExt::next(&mut replies),
    )
    .await
    .expect("a reply in time")
    .unwrap()
    .unwrap();
    let reply: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(
        delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str()),
        Some(correlation_id.as_str())
    );
    warren::broker::close(&connection, "done").await;
}
