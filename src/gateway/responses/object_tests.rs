//! The response object's rules: requests in, states and outputs out.

use super::*;
use crate::protocol::{ErrorBody, Timings, Usage};

fn reply(status: ReplyStatus, finish: Option<FinishReason>, code: Option<ErrorCode>) -> Reply {
    Reply {
        version: 1,
        id: Some("resp_1".into()),
        status,
        text: (status == ReplyStatus::Ok).then(|| "Paris".to_owned()),
        finish_reason: finish,
        usage: (status == ReplyStatus::Ok).then_some(Usage {
            prompt_tokens: 4,
            cached_prompt_tokens: 0,
            completion_tokens: 2,
        }),
        timings_ms: Timings::default(),
        model: "Gemma".into(),
        attempt: 1,
        logprobs: None,
        tool_calls: None,
        error: code.map(|code| ErrorBody {
            code,
            message: "m".into(),
            retryable: false,
        }),
    }
}

#[test]
fn a_request_becomes_a_chat_task_with_instructions_first() {
    let body = json!({
        "model": "m", "instructions": "Be brief.", "max_output_tokens": 9,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
        "metadata": {"callback_url": "http://127.0.0.1:9/hook", "k": "v"}, "background": true
    });
    let request = parse_request(body.to_string().as_bytes()).unwrap();
    let turns = request.task.messages.clone().unwrap();
    assert_eq!(
        (turns[0].role.as_str(), turns[0].content.as_str()),
        ("system", "Be brief.")
    );
    assert_eq!(
        (turns[1].role.as_str(), turns[1].content.as_str()),
        ("user", "Hi")
    );
    assert_eq!(request.task.max_tokens, Some(9));
    assert!(request.background);
    assert_eq!(
        request.callback_url.as_deref(),
        Some("http://127.0.0.1:9/hook")
    );
    let object = queued("resp_1", 5, &request);
    assert_eq!(object["status"], "queued");
    assert_eq!(object["metadata"]["k"], "v");
    assert_eq!(object["max_output_tokens"], 9);
}

#[test]
fn bad_requests_name_the_field() {
    for (body, field) in [
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": 3}), "input"),
        (
            json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}),
            "role",
        ),
        (
            json!({"model": "m", "input": "x", "metadata": {"a": 1}}),
            "metadata",
        ),
    ] {
        let err = parse_request(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.status.as_u16(), 400);
        assert!(err.message.contains(field), "{body}: {}", err.message);
    }
}

#[test]
fn replies_lead_to_the_documented_final_states() {
    let base = json!({"id": "resp_1", "status": "in_progress", "output": []});
    let done = finished(
        &base,
        &reply(ReplyStatus::Ok, Some(FinishReason::Stop), None),
    );
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Paris");
    assert_eq!(done["usage"]["total_tokens"], 6);
    let cut = finished(
        &base,
        &reply(ReplyStatus::Ok, Some(FinishReason::Length), None),
    );
    assert_eq!(cut["status"], "incomplete");
    assert_eq!(cut["incomplete_details"]["reason"], "max_output_tokens");
    let failed = reply(ReplyStatus::Error, None, Some(ErrorCode::Timeout));
    let failed = finished(&base, &failed);
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "timeout");
    let cancelled = reply(ReplyStatus::Error, None, Some(ErrorCode::Cancelled));
    assert_eq!(finished(&base, &cancelled)["status"], "cancelled");
}

#[test]
fn only_final_states_have_a_webhook_event() {
    assert_eq!(Status::Queued.event_type(), None);
    assert_eq!(Status::Completed.event_type(), Some("response.completed"));
    assert!(Status::Cancelled.is_final() && !Status::InProgress.is_final());
    assert_eq!(Status::parse("in_progress"), Some(Status::InProgress));
}

#[test]
fn logprobs_asked_by_include_come_back_in_the_output_text() {
    let body = json!({"model": "m", "input": "Hi", "top_logprobs": 2,
                      "include": ["message.output_text.logprobs"]});
    let request = parse_request(body.to_string().as_bytes()).unwrap();
    assert_eq!(request.task.logprobs, Some(2));
    let object = queued("resp_1", 5, &request);
    assert_eq!(object["top_logprobs"], 2);
    let plain = parse_request(json!({"model": "m", "input": "Hi"}).to_string().as_bytes());
    assert_eq!(plain.unwrap().task.logprobs, None);

    let mut answered = reply(ReplyStatus::Ok, Some(FinishReason::Stop), None);
    answered.logprobs = Some(vec![crate::protocol::TokenLogprob {
        token: "Paris".into(),
        bytes: b"Paris".to_vec(),
        logprob: -0.5,
        top_logprobs: Vec::new(),
    }]);
    let done = finished(&object, &answered);
    let part = &done["output"][0]["content"][0];
    assert_eq!(part["logprobs"][0]["token"], "Paris");
    assert_eq!(part["logprobs"][0]["logprob"], -0.5);
    let without = finished(
        &object,
        &reply(ReplyStatus::Ok, Some(FinishReason::Stop), None),
    );
    assert!(without["output"][0]["content"][0].get("logprobs").is_none());
}
