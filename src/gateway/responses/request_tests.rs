//! The request's rules: what a body becomes, what is refused by name, how a stored
//! conversation is continued.

use super::super::object::queued;
use super::*;

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
    let missing = parse_request(br#"{"model": "m"}"#).unwrap_err();
    assert_eq!(missing.message, "`input` is required");
    assert_eq!(missing.param.as_deref(), Some("input"));
    let not_an_object = parse_request(b"[1]").unwrap_err();
    assert_eq!(not_an_object.param, None, "{}", not_an_object.message);
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
    assert_eq!(
        request.echo["previous_response_id"], "resp_0",
        "the object says it"
    );
    assert!(request.store);
    let earlier = vec![ChatMessage::new(Role::User, "Weather in Paris?")];
    let output = json!([
        {"type": "message", "id": "msg_0", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Sunny.", "annotations": []}]},
        {"type": "function_call", "id": "fc_0_0", "call_id": "call_9", "name": "f",
         "arguments": "{}", "status": "completed"}]);
    let new_input = request.prompt_chars;
    request.continue_from(earlier, &output).unwrap();
    // The rate limit counts the conversation read again: its texts, the call's name and
    // arguments.
    let read_again = "Weather in Paris?".len() + "Sunny.".len() + "f".len() + "{}".len();
    assert_eq!(request.prompt_chars, new_input + read_again);
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

#[test]
fn nested_fields_openai_does_not_define_are_refused_by_their_path() {
    let call = json!({"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"});
    let output = json!({"type": "function_call_output", "call_id": "c1", "output": "ok"});
    let tool = json!({"type": "function", "name": "f", "parameters": {"type": "object"}});
    let with = |base: &Value, key: &str, value: Value| {
        let mut changed = base.clone();
        changed[key] = value;
        changed
    };
    for (body, param) in [
        (
            json!({"model": "m", "input": "Hi", "text": {"verbosity": "low"}}),
            "text.verbosity",
        ),
        (
            json!({"model": "m", "input": [with(&call, "signature", json!("s"))]}),
            "input[0].signature",
        ),
        (
            json!({"model": "m", "input": [call.clone(), with(&output, "images", json!([]))]}),
            "input[1].images",
        ),
        (
            json!({"model": "m", "input": "Hi", "tools": [with(&tool, "examples", json!([]))]}),
            "tools[0].examples",
        ),
    ] {
        let err = parse_request(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.param.as_deref(), Some(param), "{body}: {}", err.message);
        assert!(err.message.contains("is not supported"), "{}", err.message);
    }
    // Items sent back as the API returned them (with `id` and `status`) pass.
    let echoed = with(
        &with(&call, "id", json!("fc_1")),
        "status",
        json!("completed"),
    );
    let body = json!({"model": "m", "input": [echoed, output], "tools": [tool],
        "text": {"format": {"type": "text"}, "verbosity": "medium"}});
    assert!(parse_request(body.to_string().as_bytes()).is_ok());
}

#[test]
fn a_named_tool_choice_takes_its_type_and_name_only() {
    let tool = json!({"type": "function", "name": "f", "parameters": {"type": "object"}});
    let body = |choice: Value| json!({"model": "m", "input": "Hi", "tools": [tool], "tool_choice": choice});
    let named = json!({"type": "function", "name": "f"});
    assert!(parse_request(body(named).to_string().as_bytes()).is_ok());
    let chat_shaped = json!({"type": "function", "name": "f", "function": {"name": "g"}});
    let refused = parse_request(body(chat_shaped).to_string().as_bytes()).unwrap_err();
    assert_eq!(refused.param.as_deref(), Some("tool_choice"));
}
