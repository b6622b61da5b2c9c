//! A thousand generated hostile payloads (bad JSON, wrong types, huge values, odd encodings):
//! each gets an error reply or a completion, and the worker survives them all.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::{serving, Serving};
use serde_json::json;

/// A small deterministic generator, so that a failing hostile payload can be reproduced.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A hostile payload: its body and content type.
fn hostile(rng: &mut Xorshift, i: usize) -> (Vec<u8>, Option<&'static str>) {
    let odd_unicode = [
        "\u{202e}evil\u{202c}",
        "zero\u{200b}width",
        "\u{1F980}\u{1F980}\u{1F980}",
        "e\u{301}\u{301}\u{301}",
        "\u{FEFF}bom",
        "\u{10FFFF}",
        "日本語のテキスト",
        "\t\r\n\u{7}",
    ];
    let json = Some("application/json");
    match i % 12 {
        0 => {
            let len = 1 + rng.below(200) as usize;
            (rng.bytes(len), json)
        }
        1 => {
            let full = json!({"prompt": "The capital of France is", "max_tokens": 3}).to_string();
            let cut = rng.below(full.len() as u64) as usize;
            (full.as_bytes()[..cut].to_vec(), json)
        }
        2 => {
            let depth = 100 + rng.below(5000) as usize;
            (
                format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
                json,
            )
        }
        3 => (
            format!(
                r#"{{"prompt": "a", "temperature": {}}}"#,
                ["NaN", "Infinity", "-Infinity", "1e999"][rng.below(4) as usize]
            )
            .into_bytes(),
            json,
        ),
        4 => {
            let field = [
                "max_tokens",
                "temperature",
                "top_p",
                "top_k",
                "seed",
                "stop",
                "timeout_ms",
                "stream",
                "messages",
            ][rng.below(9) as usize];
            let value = [
                "\"x\"",
                "[]",
                "{}",
                "-5",
                "1.5",
                "true",
                "null",
                "99999999999999999999",
            ][rng.below(8) as usize];
            (
                format!(r#"{{"prompt": "a", "{field}": {value}}}"#).into_bytes(),
                json,
            )
        }
        5 => {
            let text = odd_unicode[rng.below(odd_unicode.len() as u64) as usize];
            (
                json!({"prompt": text, "max_tokens": 1})
                    .to_string()
                    .into_bytes(),
                json,
            )
        }
        6 => (
            r#"{"prompt": "\ud800 lone surrogate"}"#.as_bytes().to_vec(),
            json,
        ),
        7 => {
            let ct = [
                "text/plain",
                "application/xml",
                "application/octet-stream",
                "image/png",
            ][rng.below(4) as usize];
            (
                json!({"prompt": "a", "max_tokens": 2})
                    .to_string()
                    .into_bytes(),
                Some(ct),
            )
        }
        8 => (
            json!({"messages": [{"role": "user", "content": {"nested": [1, 2]}}]})
                .to_string()
                .into_bytes(),
            json,
        ),
        9 => (
            json!({"prompt": "a", "max_tokens": 2, "stop": vec!["x"; 1 + rng.below(50) as usize]})
                .to_string()
                .into_bytes(),
            json,
        ),
        10 => (
            json!([null, true, {"prompt": "a"}])
                .to_string()
                .into_bytes(),
            None,
        ),
        _ => {
            // A 1 MB string (now and then; 10 kB otherwise) in a field warren ignores, or as
            // the prompt itself.
            let big = if i % 120 < 24 {
                "ab".repeat(500_000)
            } else {
                "ab".repeat(5_000)
            };
            if i % 24 == 11 {
                (
                    json!({"prompt": "Hello", "max_tokens": 1, "padding": big})
                        .to_string()
                        .into_bytes(),
                    json,
                )
            } else {
                (
                    json!({"prompt": big, "max_tokens": 1})
                        .to_string()
                        .into_bytes(),
                    json,
                )
            }
        }
    }
}

#[tokio::test]
async fn a_thousand_hostile_payloads_are_each_answered_and_the_worker_survives() {
    let Serving {
        mut upstream,
        mut worker,
        names,
    } = serving(
        "hostile",
        &[
            ("WARREN__BROKER__PREFETCH", "8"),
            ("WARREN__LIMITS__DEFAULT_MAX_TOKENS", "1"),
            // The burst is four times the default queue bound: this test is about bad
            // input, not backpressure (tests/python/test_queue_bound.py is).
            ("WARREN__TOPOLOGY__QUEUE_BOUND", "0"),
        ],
    )
    .await;
    let mut rng = Xorshift(0x5eed_1234_abcd_ef01);
    let count = 1_008;
    let mut sent = HashSet::new();
    for i in 0..count {
        let (body, content_type) = hostile(&mut rng, i);
        let correlation_id = format!("hostile-{i}");
        let mut properties = upstream.properties(&correlation_id);
        if let Some(ct) = content_type {
            properties = properties.with_content_type(ct.into());
        } else {
            properties = properties.with_content_type("".into());
        }
        assert!(upstream
            .publish(&names.requests, &body, properties)
            .await
            .is_ack());
        sent.insert(correlation_id);
    }

    let mut errors = HashSet::new();
    let mut oks = 0;
    let mut answered = HashSet::new();
    while answered.len() < count {
        let (cid, reply) = upstream
            .any_reply_within(crate::common::PATIENCE)
            .await
            .unwrap_or_else(|| panic!("only {} of {count} answered", answered.len()));
        if reply["status"] == "chunk" {
            // `"stream": true` is a valid field: its chunks come before the final reply.
            continue;
        }
        assert!(
            sent.contains(&cid) && answered.insert(cid.clone()),
            "one reply each: {cid}"
        );
        match reply["status"].as_str() {
            Some("ok") => oks += 1,
            Some("error") => {
                errors.insert(cid);
            }
            other => panic!("bad status {other:?}: {reply}"),
        }
    }
    let mut dead = HashSet::new();
    let deadline = std::time::Instant::now() + crate::common::PATIENCE;
    while dead.len() < errors.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} error replies but {} dead letters",
            errors.len(),
            dead.len()
        );
        let got = upstream.get(&names.dead).await;
        match got {
            Some(message) => {
                let cid = crate::common::correlation_id_of(&message.delivery.properties);
                assert!(
                    errors.contains(&cid),
                    "dead-lettered without an error reply: {cid}"
                );
                assert!(dead.insert(cid), "one dead letter each");
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    eprintln!(
        "hostile payloads: {count} sent, {oks} ok, {} errors, {} dead letters",
        errors.len(),
        dead.len()
    );
    assert!(
        errors.len() > count / 2,
        "most hostile payloads are rejected"
    );
    assert!(worker.is_running(), "{}", worker.log());
    let normal = upstream
        .request(
            &names.requests,
            &json!({"prompt": "The capital of France is", "max_tokens": 3}),
        )
        .await;
    assert_eq!(normal["status"], "ok", "{normal}");
}
