//! The response object's rules: states and outputs out of requests and replies.

use super::super::request::parse_request;
use super::*;
use crate::protocol::{ErrorBody, Role, Timings, Usage};

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
        embeddings: None,
        error: code.map(|code| ErrorBody {
            code,
            message: "m".into(),
            retryable: false,
        }),
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
    assert_eq!(done["output"][0]["status"], "completed");
    assert_eq!(
        cut["output"][0]["status"], "incomplete",
        "its message is cut short too"
    );
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

#[test]
fn function_tools_calls_and_their_outputs_become_the_chat_shapes() {
    let body = json!({
        "model": "m",
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": false,
        "input": [
            {"role": "user", "content": "Weather?"},
            {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Let me look."}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
             "arguments": "{}", "status": "completed"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]
    });
    let request = parse_request(body.to_string().as_bytes()).unwrap();
    let task = &request.task;
    assert_eq!(task.tools.as_ref().unwrap()[0].function.name, "get_weather");
    assert_eq!(
        task.tool_choice,
        Some(json!({"type": "function", "function": {"name": "get_weather"}}))
    );
    assert_eq!(task.parallel_tool_calls, Some(false));
    let turns = task.messages.as_ref().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[1].content, "Let me look.");
    assert_eq!(turns[1].tool_calls[0].id, "call_1");
    assert_eq!(turns[2].role, Role::Tool);
    assert_eq!(turns[2].tool_call_id.as_deref(), Some("call_1"));
    let object = queued("resp_1", 5, &request);
    assert_eq!(object["tools"][0]["name"], "get_weather");
    assert_eq!(object["parallel_tool_calls"], false);

    let mut called = reply(ReplyStatus::Ok, Some(FinishReason::ToolCalls), None);
    called.text = Some(String::new());
    called.tool_calls = Some(vec![crate::protocol::ToolCall::new(
        "get_weather".into(),
        "{\"city\": \"Paris\"}".into(),
    )]);
    let done = finished(&object, &called);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"].as_array().map(Vec::len), Some(1));
    assert_eq!(done["output"][0]["type"], "function_call");
    assert_eq!(done["output"][0]["name"], "get_weather");
    assert!(done["output"][0]["call_id"]
        .as_str()
        .unwrap()
        .starts_with("call_"));
}
