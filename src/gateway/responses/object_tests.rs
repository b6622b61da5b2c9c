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
        embeddings: None,
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

#[test]
fn other_item_and_tool_types_are_refused_by_name() {
    for (body, says) in [
        (
            json!({"model": "m", "input": [{"type": "reasoning", "summary": []}]}),
            "\"reasoning\"",
        ),
        (
            json!({"model": "m", "input": [{"type": "banana"}]}),
            "not an input item type",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
            "\"web_search\"",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}),
            "call_id",
        ),
    ] {
        let err = parse_request(body.to_string().as_bytes()).unwrap_err();
        assert!(err.message.contains(says), "{body}: {}", err.message);
    }
}

#[test]
fn a_continued_response_puts_the_stored_conversation_after_the_new_instructions() {
    let body = json!({"model": "m", "instructions": "Be brief.", "input": "And in Rome?",
                      "previous_response_id": "resp_0"});
    let mut request = parse_request(body.to_string().as_bytes()).unwrap();
    assert_eq!(request.previous_response_id.as_deref(), Some("resp_0"));
    assert!(request.store);
    let earlier = vec![ChatMessage::new(Role::User, "Weather in Paris?")];
    let output = json!([
        {"type": "message", "id": "msg_0", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Sunny.", "annotations": []}]},
        {"type": "function_call", "id": "fc_0_0", "call_id": "call_9", "name": "f",
         "arguments": "{}", "status": "completed"}]);
    request.continue_from(earlier, &output).unwrap();
    let turns = request.task.messages.clone().unwrap();
    let roles: Vec<_> = turns.iter().map(|t| t.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(turns[2].content, "Sunny.");
    assert_eq!(turns[2].tool_calls[0].id, "call_9");
    // What is stored with this response leaves its instructions out.
    let kept = request.conversation();
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[2].content, "And in Rome?");
    let refused = json!({"model": "m", "input": "x", "background": true, "store": false});
    assert!(parse_request(refused.to_string().as_bytes()).is_err());
}
