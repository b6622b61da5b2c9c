use super::*;
use crate::gateway::batches::input::LineKind;
use crate::gateway::batches::outcome::{result_line, unrun_line, Outcome};
use crate::gateway::embeddings::Encoding;
use crate::protocol::{ErrorBody, ErrorCode, FinishReason, Timings, Usage};
use crate::protocol::{Reply, ReplyStatus};

fn reply(status: ReplyStatus, error: Option<ErrorBody>) -> Reply {
    Reply {
        version: 1,
        id: Some("x".into()),
        status,
        text: error.is_none().then(|| "hello".to_owned()),
        finish_reason: error.is_none().then_some(FinishReason::Stop),
        usage: error.is_none().then_some(Usage {
            prompt_tokens: 3,
            cached_prompt_tokens: 0,
            completion_tokens: 1,
        }),
        timings_ms: Timings::default(),
        model: "m".into(),
        attempt: 1,
        logprobs: None,
        tool_calls: None,
        embeddings: None,
        error,
    }
}

#[test]
fn a_create_request_may_say_how_long_its_output_files_are_kept() {
    let kept =
        br#"{"input_file_id": "f", "endpoint": "/v1/completions", "completion_window": "24h",
                    "output_expires_after": {"anchor": "created_at", "seconds": 7200}}"#;
    let policy = parse_create(kept)
        .ok()
        .and_then(|(c, _)| c.output_expires_after);
    assert_eq!(policy.map(|p| p.seconds), Some(7200));
    let param = |body: &[u8]| parse_create(body).err().and_then(|e| e.param);
    let short =
        br#"{"input_file_id": "f", "endpoint": "/v1/completions", "completion_window": "24h",
                     "output_expires_after": {"anchor": "created_at", "seconds": 60}}"#;
    assert_eq!(param(short), Some("output_expires_after.seconds".into()));
    let anchor =
        br#"{"input_file_id": "f", "endpoint": "/v1/completions", "completion_window": "24h",
                      "output_expires_after": {"anchor": "completed_at", "seconds": 7200}}"#;
    assert_eq!(param(anchor), Some("output_expires_after.anchor".into()));
    let extra =
        br#"{"input_file_id": "f", "endpoint": "/v1/completions", "completion_window": "24h",
                     "output_expires_after": {"anchor": "created_at", "seconds": 7200, "x": 1}}"#;
    assert_eq!(param(extra), Some("output_expires_after.x".into()));
}

#[test]
fn request_ids_name_their_batch_and_line() {
    let id = line_id("batch_0123abc", 17);
    assert_eq!(id, "batch_req_0123abc_17");
    assert_eq!(parse_line_id(&id), Some(("batch_0123abc".into(), 17)));
    assert_eq!(parse_line_id("resp_0123"), None);
    assert_eq!(parse_line_id("batch_req_abc_notanumber"), None);
}

#[test]
fn a_create_request_names_a_served_endpoint_and_the_24h_window() {
    let ok = br#"{"input_file_id": "file-1", "endpoint": "/v1/completions", "completion_window": "24h"}"#;
    assert_eq!(
        parse_create(ok).map(|(_, kind)| kind).ok(),
        Some(Endpoint::Completions(Kind::Completion))
    );
    let embeddings =
        br#"{"input_file_id": "f", "endpoint": "/v1/embeddings", "completion_window": "24h"}"#;
    assert_eq!(
        parse_create(embeddings).map(|(_, kind)| kind).ok(),
        Some(Endpoint::Embeddings)
    );
    let responses =
        br#"{"input_file_id": "f", "endpoint": "/v1/responses", "completion_window": "24h"}"#;
    assert_eq!(
        parse_create(responses).map(|(_, kind)| kind).ok(),
        Some(Endpoint::Responses)
    );
    let moderations =
        br#"{"input_file_id": "f", "endpoint": "/v1/moderations", "completion_window": "24h"}"#;
    assert_eq!(
        parse_create(moderations).unwrap_err().param.as_deref(),
        Some("endpoint")
    );
    let window =
        br#"{"input_file_id": "f", "endpoint": "/v1/completions", "completion_window": "1h"}"#;
    assert_eq!(
        parse_create(window).unwrap_err().param.as_deref(),
        Some("completion_window")
    );
    let metadata = br#"{"input_file_id": "f", "endpoint": "/v1/completions", "completion_window": "24h", "metadata": {"a": 1}}"#;
    assert_eq!(
        parse_create(metadata).unwrap_err().param.as_deref(),
        Some("metadata")
    );
    assert_eq!(parse_create(b"[1, 2]").unwrap_err().status.as_u16(), 400);
}

#[test]
fn a_batch_object_has_openais_fields_and_stamps_each_status_once() {
    let (create, _) = parse_create(
        br#"{"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"job": "nightly"}}"#,
    )
    .expect("valid");
    let object = batch("batch_1", &create, BatchStatus::InProgress, 1000);
    assert_eq!(object["object"], "batch");
    assert_eq!(object["in_progress_at"], 1000);
    assert_eq!(object["expires_at"], 1000 + WINDOW_S);
    assert_eq!(object["metadata"]["job"], "nightly");
    let cancelling = with_status(&object, BatchStatus::Cancelling, 1005);
    let again = with_status(&cancelling, BatchStatus::Cancelling, 1009);
    assert_eq!(again["status"], "cancelling");
    assert_eq!(again["cancelling_at"], 1005);
    assert_eq!(again["in_progress_at"], 1000);
}

#[test]
fn an_answer_goes_to_the_output_file_and_a_failure_to_the_error_file() {
    let ok = Outcome::Answered {
        reply: Box::new(reply(ReplyStatus::Ok, None)),
        at: 7,
    };
    let (line, in_output) = result_line(
        Endpoint::Completions(Kind::Chat),
        "gemma3-270m",
        None,
        ("batch_req_1_0", "a"),
        &ok,
    );
    assert!(in_output && ok.is_completed());
    assert_eq!(line["custom_id"], "a");
    assert_eq!(line["response"]["status_code"], 200);
    assert_eq!(line["response"]["body"]["object"], "chat.completion");
    assert_eq!(
        line["response"]["body"]["choices"][0]["message"]["content"],
        "hello"
    );
    assert_eq!(line["error"], Value::Null);

    let timeout = ErrorBody {
        code: ErrorCode::Timeout,
        message: "too slow".into(),
        retryable: false,
    };
    let failed = Outcome::Answered {
        reply: Box::new(reply(ReplyStatus::Error, Some(timeout))),
        at: 7,
    };
    let (line, in_output) = result_line(
        Endpoint::Completions(Kind::Completion),
        "gemma3-270m",
        None,
        ("batch_req_1_1", "b"),
        &failed,
    );
    assert!(!in_output && !failed.is_completed());
    assert_eq!(line["response"]["status_code"], 504);
    assert_eq!(line["response"]["body"]["error"]["code"], "timeout");

    let refused = Outcome::refused(&ApiError::invalid("bad", Some("n".into())));
    let (line, in_output) = result_line(
        Endpoint::Completions(Kind::Chat),
        "gemma3-270m",
        None,
        ("batch_req_1_2", "c"),
        &refused,
    );
    assert!(!in_output);
    assert_eq!(line["response"]["status_code"], 400);
    assert_eq!(line["response"]["body"]["error"]["param"], "n");

    let unrun = unrun_line("batch_req_1_3", "d", "batch_expired");
    assert_eq!(unrun["response"], Value::Null);
    assert_eq!(unrun["error"]["code"], "batch_expired");
}

#[test]
fn an_outcome_survives_its_round_trip_through_redis_text() {
    let ok = Outcome::Answered {
        reply: Box::new(reply(ReplyStatus::Ok, None)),
        at: 7,
    };
    let text = serde_json::to_string(&ok).expect("serializes");
    assert_eq!(serde_json::from_str::<Outcome>(&text).ok(), Some(ok));
}

#[test]
fn every_batch_status_is_stored_and_read_back_as_openai_spells_it() {
    for status in BatchStatus::ALL {
        assert_eq!(BatchStatus::parse(status.as_str()), Some(status));
    }
    assert_eq!(BatchStatus::parse("validating"), None);
    let finals: Vec<_> = BatchStatus::ALL
        .into_iter()
        .filter(|s| s.is_final())
        .map(BatchStatus::as_str)
        .collect();
    assert_eq!(finals, ["completed", "failed", "expired", "cancelled"]);
}

#[test]
fn an_embedding_answer_is_openais_list_in_the_output_file() {
    let mut answered = reply(ReplyStatus::Ok, None);
    answered.text = None;
    answered.embeddings = Some(vec![vec![0.25, 0.5]]);
    let ok = Outcome::Answered {
        reply: Box::new(answered),
        at: 7,
    };
    let (line, in_output) =
        result_line(Endpoint::Embeddings, "m", None, ("batch_req_1_0", "e"), &ok);
    assert!(in_output);
    let body = &line["response"]["body"];
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["embedding"], serde_json::json!([0.25, 0.5]));
    // Asked for as base64: the float32 bytes, little-endian, as the endpoint sends them.
    let (line, _) = result_line(
        Endpoint::Embeddings,
        "m",
        Some(&LineKind::Embedding(Encoding::Base64)),
        ("batch_req_1_0", "e"),
        &ok,
    );
    assert_eq!(
        line["response"]["body"]["data"][0]["embedding"],
        "AACAPgAAAD8="
    );
    let lost = Outcome::Answered {
        reply: Box::new(reply(ReplyStatus::Ok, None)),
        at: 7,
    };
    let (line, in_output) = result_line(
        Endpoint::Embeddings,
        "m",
        None,
        ("batch_req_1_1", "f"),
        &lost,
    );
    assert!(!in_output, "a reply without vectors is an error line");
    assert_eq!(line["response"]["status_code"], 500);
}

#[test]
fn a_response_answer_is_its_response_object_named_after_the_line() {
    let created = serde_json::json!({"id": "", "object": "response", "created_at": 0,
        "status": "queued", "model": "asked", "output": [], "tools": [], "tool_choice": "none",
        "service_tier": "default",
        "text": {"format": {"type": "text"}}});
    let ok = Outcome::Answered {
        reply: Box::new(reply(ReplyStatus::Ok, None)),
        at: 7,
    };
    let kind = LineKind::Response(created);
    let ids = ("batch_req_ab_3", "r");
    let (line, in_output) = result_line(Endpoint::Responses, "m", Some(&kind), ids, &ok);
    assert!(in_output);
    let body = &line["response"]["body"];
    assert_eq!(body["id"], "resp_ab_3");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["created_at"], 7);
    assert_eq!(body["model"], "m");
    assert_eq!(
        body["service_tier"], "flex",
        "the batch tier, whatever the line asked"
    );
    assert_eq!(body["output"][0]["content"][0]["text"], "hello");
}
