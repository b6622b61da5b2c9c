//! How a task's tool choice is put to the chat template.

use serde_json::json;

use super::*;
use crate::protocol::Input;

#[test]
fn a_named_function_is_the_tools_list_cut_to_it_and_required() {
    let tool = |name: &str| {
        serde_json::from_value(json!({"type": "function", "function": {"name": name}})).unwrap()
    };
    let task = crate::protocol::TaskBody {
        messages: Some(vec![ChatMessage::new(crate::protocol::Role::User, "x")]),
        tools: Some(vec![tool("a"), tool("b")]),
        tool_choice: Some(json!({"type": "function", "function": {"name": "b"}})),
        ..Default::default()
    };
    let limits = crate::protocol::Limits {
        max_body_bytes: 1 << 20,
        default_max_tokens: 16,
        max_tokens_cap: 64,
        default_timeout_ms: 1000,
        timeout_cap_ms: 1000,
        max_stop_sequences: 4,
        max_stop_bytes: 16,
        default_top_k: 40,
    };
    let task = task.validate(&limits).unwrap();
    let Input::Messages(messages) = &task.input else {
        panic!("a chat task");
    };
    let request = chat_request(&task, messages);
    assert_eq!(request["tool_choice"], "required");
    assert_eq!(request["tools"].as_array().map(Vec::len), Some(1));
    assert_eq!(request["tools"][0]["function"]["name"], "b");
}
