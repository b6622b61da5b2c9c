//! How a task's tool choice is put to the chat template.

use serde_json::json;

use super::*;
use crate::protocol::Input;

#[test]
fn a_named_function_is_the_tools_list_cut_to_it_and_required() {
    let task = chat_task(json!({
        "tools": [{"type": "function", "function": {"name": "a"}},
                  {"type": "function", "function": {"name": "b"}}],
        "tool_choice": {"type": "function", "function": {"name": "b"}},
    }));
    let Input::Messages(messages) = &task.input else {
        panic!("a chat task");
    };
    let request = chat_request(&task, messages, None);
    assert_eq!(request["tool_choice"], "required");
    assert_eq!(request["tools"].as_array().map(Vec::len), Some(1));
    assert_eq!(request["tools"][0]["function"]["name"], "b");
}

/// A chat task from `body`'s fields, validated.
fn chat_task(body: serde_json::Value) -> Task {
    let mut body = body;
    body["messages"] = json!([{"role": "user", "content": "x"}]);
    let body: crate::protocol::TaskBody = serde_json::from_value(body).unwrap();
    body.validate(&crate::protocol::Limits {
        max_body_bytes: 1 << 20,
        default_max_tokens: 16,
        max_tokens_cap: 64,
        default_timeout_ms: 1000,
        timeout_cap_ms: 1000,
        max_stop_sequences: 4,
        max_stop_bytes: 16,
        default_top_k: 40,
    })
    .unwrap()
}

#[test]
fn beside_auto_an_answer_format_is_one_more_function_and_a_call_is_required() {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    let tools = json!([{"type": "function", "function": {"name": "final_answer"}},
                       {"type": "function", "function": {"name": "final_answer_2"}}]);
    let task = chat_task(json!({"tools": tools, "json_schema": schema}));
    let answer = answer_tool(&task).expect("an answer function");
    // Its name is free among the task's own.
    assert_eq!(answer.function.name, "final_answer_3");
    assert_eq!(answer.function.parameters.as_ref(), Some(&schema));
    let Input::Messages(messages) = &task.input else {
        panic!("a chat task");
    };
    let request = chat_request(&task, messages, Some(&answer));
    assert_eq!(request["tool_choice"], "required");
    assert_eq!(request["tools"].as_array().map(Vec::len), Some(3));
    assert_eq!(request["tools"][2]["function"]["name"], "final_answer_3");

    // A forced call has no text for the format to shape; without a format nothing changes.
    for body in [
        json!({"tools": tools, "json_schema": schema, "tool_choice": "required"}),
        json!({"tools": tools}),
    ] {
        assert!(answer_tool(&chat_task(body.clone())).is_none(), "{body}");
    }
}
