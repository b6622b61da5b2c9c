//! Every kind of bad task published the way a careless upstream service would: each gets an
//! error reply naming what is wrong and a dead-lettered copy, and the worker keeps serving.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{header, Caller};
use lapin::options::BasicGetOptions;
use lapin::BasicProperties;
use serde_json::{json, Value};

/// A hostile or malformed task, what it should be answered with, and how it is sent.
struct BadTask {
    what: &'static str,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    code: &'static str,
}

fn bad(what: &'static str, body: impl Into<Vec<u8>>, code: &'static str) -> BadTask {
    BadTask {
        what,
        body: body.into(),
        content_type: Some("application/json"),
        code,
    }
}

fn bad_tasks() -> Vec<BadTask> {
    let long_prompt = "word ".repeat(300);
    vec![
        bad("not JSON", "hello there", "invalid_request"),
        bad("an empty body", "", "invalid_request"),
        bad("a JSON list", "[1, 2, 3]", "invalid_request"),
        bad(
            "a JSON string",
            "\"The capital of France is\"",
            "invalid_request",
        ),
        bad(
            "neither prompt nor messages",
            r#"{"max_tokens": 5}"#,
            "invalid_request",
        ),
        bad(
            "both prompt and messages",
            r#"{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}"#,
            "invalid_request",
        ),
        bad(
            "a prompt that is a number",
            r#"{"prompt": 42}"#,
            "invalid_request",
        ),
        bad(
            "an unknown role",
            r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
            "invalid_request",
        ),
        bad(
            "max_tokens beyond what the context holds",
            r#"{"prompt": "a", "max_tokens": 100000}"#,
            "context_length_exceeded",
        ),
        bad(
            "max_tokens zero",
            r#"{"prompt": "a", "max_tokens": 0}"#,
            "invalid_request",
        ),
        bad(
            "a negative temperature",
            r#"{"prompt": "a", "temperature": -1}"#,
            "invalid_request",
        ),
        bad(
            "a negative top_p",
            r#"{"prompt": "a", "top_p": -0.5}"#,
            "invalid_request",
        ),
        bad(
            "a seed that is a string",
            r#"{"prompt": "a", "seed": "42"}"#,
            "invalid_request",
        ),
        bad(
            "stop that is not a list",
            r#"{"prompt": "a", "stop": "\n"}"#,
            "invalid_request",
        ),
        bad(
            "a NaN literal",
            r#"{"prompt": "a", "temperature": NaN}"#,
            "invalid_request",
        ),
        bad(
            "truncated JSON",
            r#"{"prompt": "The capital"#,
            "invalid_request",
        ),
        bad("deeply nested JSON", "[".repeat(5000), "invalid_request"),
        bad(
            "invalid UTF-8",
            b"{\"prompt\": \"\xff\xfe\"}".to_vec(),
            "invalid_request",
        ),
        bad(
            "stream that is a string",
            r#"{"prompt": "a", "stream": "yes"}"#,
            "invalid_request",
        ),
        bad(
            "a body over the size limit",
            format!(r#"{{"prompt": "{}"}}"#, "x".repeat(5000)),
            "invalid_request",
        ),
        BadTask {
            what: "a text/plain content type",
            body: br#"{"prompt": "a"}"#.to_vec(),
            content_type: Some("text/plain"),
            code: "invalid_request",
        },
        bad(
            "a prompt longer than the context",
            json!({"prompt": long_prompt}).to_string(),
            "prompt_too_long",
        ),
    ]
}

#[tokio::test]
async fn every_bad_task_gets_an_error_reply_and_a_dead_lettered_copy_and_the_worker_keeps_serving()
{
    let crate::common::Serving {
        mut upstream,
        mut worker,
        names,
    } = crate::common::serving(
        "badinput",
        &[
            ("WARREN__ENGINE__CONTEXT_SIZE", "128"),
            ("WARREN__LIMITS__MAX_BODY_BYTES", "4096"),
        ],
    )
    .await;
    let cases = bad_tasks();

    let mut sent = Vec::new();
    for case in &cases {
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let mut properties = upstream
            .properties(&correlation_id)
            .with_message_id(format!("msg-{correlation_id}").as_str().into())
            .with_timestamp(1_700_000_000)
            .with_headers(common_headers());
        if let Some(content_type) = case.content_type {
            properties = properties.with_content_type(content_type.into());
        }
        let confirm = upstream
            .publish(&names.requests, &case.body, properties)
            .await;
        assert!(confirm.is_ack(), "{}: not confirmed", case.what);
        sent.push(correlation_id);
    }

    for (case, correlation_id) in cases.iter().zip(&sent) {
        let reply = upstream.reply(correlation_id).await;
        assert_eq!(reply["status"], "error", "{}: {reply}", case.what);
        assert_eq!(reply["error"]["code"], case.code, "{}: {reply}", case.what);
        assert_eq!(reply["error"]["retryable"], false, "{}", case.what);
        assert!(
            !reply["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{}: the error says why",
            case.what
        );
        assert_eq!(
            reply["id"],
            format!("msg-{correlation_id}"),
            "id is the message_id"
        );
        assert_eq!(reply["attempt"], 1);
        assert_eq!(reply["text"], Value::Null);
    }

    let dead = drain(&upstream, &names.dead, cases.len()).await;
    for (case, correlation_id) in cases.iter().zip(&sent) {
        let (properties, body) = dead
            .get(correlation_id)
            .unwrap_or_else(|| panic!("{}: no dead-lettered copy", case.what));
        assert_eq!(
            body, &case.body,
            "{}: the copy keeps the original body",
            case.what
        );
        assert_eq!(
            header(properties, "x-warren-error-code").as_deref(),
            Some(case.code)
        );
        assert!(header(properties, "x-warren-error").is_some_and(|e| !e.is_empty()));
        assert_eq!(
            header(properties, "x-warren-attempts").as_deref(),
            Some("1")
        );
        assert_eq!(header(properties, "x-client-tag").as_deref(), Some("kept"));
        assert_eq!(
            properties.reply_to().as_ref().map(|r| r.to_string()),
            Some(upstream.reply_queue.clone()),
            "{}: the copy keeps reply_to",
            case.what
        );
        assert_eq!(
            properties.message_id().as_ref().map(|m| m.to_string()),
            Some(format!("msg-{correlation_id}"))
        );
        assert_eq!(*properties.timestamp(), Some(1_700_000_000));
    }

    assert!(
        worker.is_running(),
        "the worker survived:\n{}",
        worker.log()
    );
    let next = upstream
        .request(
            &names.requests,
            &json!({"prompt": "Hello", "max_tokens": 3}),
        )
        .await;
    assert_eq!(next["status"], "ok", "{next}");
}

fn common_headers() -> lapin::types::FieldTable {
    let mut table = lapin::types::FieldTable::default();
    table.insert(
        "x-client-tag".into(),
        lapin::types::AMQPValue::LongString("kept".into()),
    );
    table
}

/// Takes `count` messages from `queue`, by correlation id.
async fn drain(
    upstream: &Caller,
    queue: &str,
    count: usize,
) -> HashMap<String, (BasicProperties, Vec<u8>)> {
    let mut found = HashMap::new();
    let deadline = std::time::Instant::now() + crate::common::PATIENCE;
    while found.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count} messages arrived in {queue}",
            found.len()
        );
        match upstream
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            Some(message) => {
                let cid = crate::common::correlation_id_of(&message.delivery.properties);
                found.insert(cid, (message.delivery.properties, message.delivery.data));
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    found
}
