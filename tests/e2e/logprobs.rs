//! Log probabilities over AMQP, on the real model: a task with `logprobs` gets one entry per
//! token of its text (in its reply and, streamed, spread over its chunks); a task without it
//! gets no such field at all.

use crate::common::{Names, PATIENCE};
use serde_json::{json, Value};
use warren::client::Incoming;
use warren::protocol::TaskBody;
use warren::protocol::{ReplyStatus, TokenLogprob};

fn entries(reply: &Value) -> &Vec<Value> {
    reply["logprobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no logprobs in {reply}"))
}

fn token_text(entries: &[Value]) -> String {
    entries
        .iter()
        .map(|e| e["token"].as_str().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_task_asking_for_logprobs_gets_one_entry_per_token_of_its_text() {
    let crate::common::Serving {
        mut upstream,
        worker: _worker,
        names,
    } = crate::common::serving("logprobs", &[]).await;
    let task = json!({"prompt": "The capital of France is", "max_tokens": 10, "logprobs": 2});
    let reply = upstream.request(&names.requests, &task).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let tokens = entries(&reply);
    assert_eq!(
        tokens.len() as u64,
        reply["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(token_text(tokens), reply["text"].as_str().unwrap());
    for entry in tokens {
        let logprob = entry["logprob"].as_f64().unwrap();
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2, "{entry}");
        // Greedy picks the likeliest token: it heads its own alternatives.
        assert_eq!(top[0]["token"], entry["token"], "{entry}");
        assert_eq!(top[0]["logprob"].as_f64().unwrap(), logprob);
        assert!(top[1]["logprob"].as_f64().unwrap() <= logprob && logprob <= 0.0);
        let bytes: Vec<u8> = serde_json::from_value(entry["bytes"].clone()).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            entry["token"].as_str().unwrap()
        );
    }

    let plain = upstream
        .request(
            &names.requests,
            &json!({"prompt": "The capital of France is", "max_tokens": 10}),
        )
        .await;
    assert_eq!(plain["text"], reply["text"], "asking changes nothing else");
    assert!(plain.get("logprobs").is_none(), "{plain}");

    // A stop string keeps the tokens that start before it.
    let text = reply["text"].as_str().unwrap();
    let stop = &text[text.len() / 2..text.len() / 2 + 2];
    let stopped = upstream
        .request(
            &names.requests,
            &json!({"prompt": "The capital of France is", "max_tokens": 10, "logprobs": 0,
                    "stop": [stop]}),
        )
        .await;
    let cut = stopped["text"].as_str().unwrap();
    assert_eq!(cut, &text[..text.find(stop).unwrap()], "{stopped}");
    let kept = entries(&stopped);
    let tokens = token_text(kept);
    assert!(tokens.starts_with(cut), "{tokens:?} covers {cut:?}");
    let all_but_last = token_text(&kept[..kept.len() - 1]);
    assert!(
        all_but_last.len() < cut.len(),
        "every kept token starts in the text"
    );
    assert!(kept.iter().all(|e| e["top_logprobs"] == json!([])));

    let wrong = upstream
        .request(&names.requests, &json!({"prompt": "x", "logprobs": 21}))
        .await;
    assert_eq!(wrong["error"]["code"], "invalid_request", "{wrong}");
}

#[tokio::test]
async fn streamed_chunks_carry_the_logprobs_of_the_tokens_they_complete() {
    let names = Names::new("logprobs-stream");
    let _worker = crate::common::WorkerProcess::start(
        &names,
        &[("WARREN__STREAM__MAX_PIECES_PER_CHUNK", "2")],
    )
    .await;
    let client = names.client("warren-test-logprobs").await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"]});
    for body in [
        TaskBody {
            max_tokens: Some(24),
            stream: Some(true),
            logprobs: Some(1),
            ..TaskBody::prompt("Write a short story about a lighthouse.")
        },
        TaskBody {
            max_tokens: Some(40),
            stream: Some(true),
            logprobs: Some(3),
            temperature: Some(0.8),
            seed: Some(5),
            json_schema: Some(schema.clone()),
            ..TaskBody::prompt("The capital of France as JSON:")
        },
    ] {
        let id = uuid::Uuid::new_v4().to_string();
        let mut pending = client.submit(&id, &body).await.expect("submitted");
        let (mut deltas, mut streamed) = (String::new(), Vec::<TokenLogprob>::new());
        let reply = loop {
            let incoming = tokio::time::timeout(PATIENCE, pending.next())
                .await
                .expect("in time")
                .expect("connected");
            match incoming {
                Incoming::Chunk(chunk) => {
                    deltas.push_str(&chunk.delta);
                    streamed.extend(chunk.logprobs.expect("every chunk has logprobs"));
                    let tokens: Vec<u8> = streamed.iter().flat_map(|t| t.bytes.clone()).collect();
                    assert!(
                        deltas.as_bytes().starts_with(&tokens),
                        "tokens within {deltas:?}"
                    );
                }
                Incoming::Reply { reply, .. } => break reply,
                Incoming::Started => {}
            }
        };
        assert_eq!(reply.status, ReplyStatus::Ok, "{reply:?}");
        let logprobs = reply.logprobs.expect("the reply has logprobs");
        assert_eq!(streamed, logprobs, "the chunks carry the reply's entries");
        let usage = reply.usage.expect("usage");
        assert_eq!(logprobs.len() as u32, usage.completion_tokens);
        assert_eq!(deltas, reply.text.clone().unwrap_or_default());
        for entry in &logprobs {
            assert!(
                entry.logprob.is_finite() && entry.logprob <= 0.0,
                "{entry:?}"
            );
            assert_eq!(
                entry.top_logprobs.len(),
                body.logprobs.unwrap_or(0) as usize
            );
        }
        if body.json_schema.is_some() {
            let value: Value = serde_json::from_str(&reply.text.unwrap_or_default())
                .expect("the constrained text is JSON");
            assert!(value["city"].is_string(), "{value}");
        }
    }
}
