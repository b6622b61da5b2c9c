//! The Responses API's input and tools in the wire contract's terms: input items become chat
//! messages (`message` items a turn each, `function_call` items an assistant's calls,
//! `function_call_output` items tool results), and the API's flat function tools and
//! `tool_choice` become OpenAI's chat shapes the task carries. Every other item or tool type
//! is a 400 naming it. Pure values only, unit-tested in `object_tests.rs`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::gateway::completions::messages::{chat_role, text_of, Content};
use crate::gateway::errors::ApiError;
use crate::gateway::unsupported;
use crate::protocol::{ChatMessage, FunctionCall, FunctionKind, Role, Tool, ToolCall};

/// `input`: a string (one user turn) or a list of items.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Input {
    Text(String),
    Items(Vec<Map<String, Value>>),
}

/// A `message` item (`type` may be left out).
#[derive(Debug, Deserialize)]
struct MessageItem {
    role: String,
    content: Content,
    /// Every other field ([`unsupported::check_message`]).
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// A `function_call` item: a call the model made earlier.
#[derive(Debug, Deserialize)]
struct FunctionCallItem {
    call_id: String,
    name: String,
    arguments: String,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// A `function_call_output` item: what running a call gave.
#[derive(Debug, Deserialize)]
struct FunctionCallOutputItem {
    call_id: String,
    output: Content,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// The input items the API defines that this gateway does not serve.
const OTHER_ITEMS: &[&str] = &[
    "reasoning",
    "item_reference",
    "file_search_call",
    "web_search_call",
    "computer_call",
    "computer_call_output",
    "image_generation_call",
    "code_interpreter_call",
    "local_shell_call",
    "local_shell_call_output",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "mcp_call",
    "custom_tool_call",
    "custom_tool_call_output",
];

/// The chat turns of `input` (after any turns already in `turns`).
pub(super) fn turns_of(input: Input, turns: &mut Vec<ChatMessage>) -> Result<(), ApiError> {
    let items = match input {
        Input::Text(text) => {
            turns.push(ChatMessage::new(Role::User, text));
            return Ok(());
        }
        Input::Items(items) => items,
    };
    for (index, item) in items.into_iter().enumerate() {
        let field = format!("input[{index}]");
        let kind = match item.get("type") {
            // An item reference's `type` is optional: an `id` without a `role`.
            None if !item.contains_key("role") && item.contains_key("id") => "item_reference",
            None => "message",
            Some(kind) => kind.as_str().unwrap_or("?"),
        };
        match kind {
            "message" => turns.push(message_turn(&field, item)?),
            "function_call" => {
                let call: FunctionCallItem = item_of(&field, without_echo(item))?;
                unsupported::check_fields(&field, &call.rest)?;
                let call = ToolCall {
                    id: call.call_id,
                    kind: FunctionKind::Function,
                    function: FunctionCall {
                        name: call.name,
                        arguments: call.arguments,
                    },
                };
                // Calls after an assistant's message (or after other calls) are that turn's.
                match turns.last_mut() {
                    Some(last) if last.role == Role::Assistant => last.tool_calls.push(call),
                    _ => {
                        let mut turn = ChatMessage::new(Role::Assistant, "");
                        turn.tool_calls.push(call);
                        turns.push(turn);
                    }
                }
            }
            "function_call_output" => {
                let output: FunctionCallOutputItem = item_of(&field, without_echo(item))?;
                unsupported::check_fields(&field, &output.rest)?;
                let mut turn = ChatMessage::new(Role::Tool, text_of(output.output, &field)?);
                turn.tool_call_id = Some(output.call_id);
                turns.push(turn);
            }
            other => {
                let why = if OTHER_ITEMS.contains(&other) {
                    "this gateway serves `message`, `function_call` and `function_call_output` items"
                } else {
                    "it is not an input item type"
                };
                return Err(ApiError::invalid(
                    format!("`{field}.type` {other:?} is not supported: {why}"),
                    Some(format!("{field}.type")),
                ));
            }
        }
    }
    Ok(())
}

fn item_of<T: serde::de::DeserializeOwned>(
    field: &str,
    item: Map<String, Value>,
) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(item))
        .map_err(|e| ApiError::invalid(format!("`{field}` is not valid: {e}"), Some(field.into())))
}

/// An item without what the SDKs send back with an output item (its `type`, `id` and
/// `status`): they change nothing.
fn without_echo(mut item: Map<String, Value>) -> Map<String, Value> {
    for echoed in ["type", "id", "status"] {
        item.remove(echoed);
    }
    item
}

fn message_turn(field: &str, item: Map<String, Value>) -> Result<ChatMessage, ApiError> {
    let message: MessageItem = item_of(field, without_echo(item))?;
    // Tool results come as `function_call_output` items, not a role.
    let role = chat_role(&message.role)
        .filter(|role| *role != Role::Tool)
        .ok_or_else(|| {
            ApiError::invalid(
                format!("`{field}.role` must be system, developer, user or assistant"),
                Some("input".into()),
            )
        })?;
    unsupported::check_message(field, &message.rest)?;
    Ok(ChatMessage::new(role, text_of(message.content, field)?))
}

/// A function tool as the Responses API writes it (flat: `name` beside `type`).
#[derive(Debug, Deserialize)]
struct FlatFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// The task's tools for the API's `tools` (function tools only).
pub(super) fn tools_of(tools: &[Value]) -> Result<Vec<Tool>, ApiError> {
    let mut converted = Vec::new();
    for (index, tool) in tools.iter().enumerate() {
        let field = format!("tools[{index}]");
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("?");
        if kind != "function" {
            return Err(ApiError::invalid(
                format!(
                    "`{field}.type` {kind:?} is not supported: this gateway serves function tools"
                ),
                Some(format!("{field}.type")),
            ));
        }
        let function: FlatFunction = serde_json::from_value(tool.clone()).map_err(|e| {
            ApiError::invalid(format!("`{field}` is not valid: {e}"), Some(field.clone()))
        })?;
        let mut rest = function.rest;
        rest.remove("type");
        unsupported::check_fields(&field, &rest)?;
        converted.push(
            serde_json::from_value(json!({"type": "function", "function": {
                "name": function.name, "description": function.description,
                "parameters": function.parameters, "strict": function.strict}}))
            .map_err(|e| ApiError::invalid(format!("`{field}` is not valid: {e}"), Some(field)))?,
        );
    }
    Ok(converted)
}

/// The task's `tool_choice` for the API's: a named function is `{"type": "function",
/// "name"}` here and `{"type": "function", "function": {"name"}}` in chat's shape. Any other
/// object (`allowed_tools`, a hosted tool) is refused in this API's terms.
pub(super) fn tool_choice_of(choice: &Value) -> Result<Value, ApiError> {
    if choice.is_string() {
        return Ok(choice.clone());
    }
    // Only `type` and `name`: another key (a chat-shaped `function`) is not dropped unseen.
    let only_known = (choice.as_object())
        .is_some_and(|fields| fields.keys().all(|key| key == "type" || key == "name"));
    match (
        choice.get("type").and_then(Value::as_str),
        choice.get("name").filter(|name| name.is_string()),
    ) {
        (Some("function"), Some(name)) if only_known => {
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(ApiError::invalid(
            format!(
                "`tool_choice` {choice} is not supported: give \"none\", \"auto\", \"required\" \
                 or {{\"type\": \"function\", \"name\": ...}}"
            ),
            Some("tool_choice".into()),
        )),
    }
}
