//! A chat message as OpenAI shapes it and as the wire contract carries it: its role (one of
//! five, `developer` speaking as `system`), its content's text (a string or text parts; any
//! other part refused by name), an assistant's tool calls and the call a tool message
//! answers. The Responses API's input items reuse the role and the content. Pure values.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::gateway::errors::ApiError;
use crate::gateway::unsupported;
use crate::protocol::{ChatMessage, Role, ToolCall};

/// A message's `content`: a string, or a list of parts of which only text is served.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    /// Its other fields: refused by name, unless OpenAI's shape of the part holds them.
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// One chat message as OpenAI shapes it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    /// An assistant message's calls.
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    /// The call a tool message answers.
    #[serde(default)]
    tool_call_id: Option<String>,
    /// Every other field ([`unsupported::check_message`]).
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// The wire turn of `messages[index]`: its role, its text, and a tool call's fields.
pub(super) fn chat_turn(index: usize, message: Message) -> Result<ChatMessage, ApiError> {
    let field = format!("messages[{index}]");
    let role = chat_role(&message.role).ok_or_else(|| {
        ApiError::invalid(
            format!(
                "`{field}.role` {:?} is not supported: use system, developer, user, assistant or tool",
                short(&message.role)
            ),
            Some("messages".into()),
        )
    })?;
    unsupported::check_message(&field, &message.rest)?;
    let content = match message.content {
        Some(content) => text_of(content, &field)?,
        None => String::new(),
    };
    Ok(ChatMessage {
        role,
        content,
        tool_calls: message.tool_calls.unwrap_or_default(),
        tool_call_id: message.tool_call_id,
    })
}

/// The wire contract's role for an OpenAI role (`developer` speaks as `system`).
pub(crate) fn chat_role(role: &str) -> Option<Role> {
    match role {
        "system" | "developer" => Some(Role::System),
        "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        "tool" => Some(Role::Tool),
        _ => None,
    }
}

/// The text of a message's content: a string, or its text parts joined (`text`,
/// `input_text`, `output_text`); any other part is a 400 naming `field`.
pub(crate) fn text_of(content: Content, field: &str) -> Result<String, ApiError> {
    let parts = match content {
        Content::Text(text) => return Ok(text),
        Content::Parts(parts) => parts,
    };
    let mut text = String::new();
    for (index, part) in parts.into_iter().enumerate() {
        // An earlier answer's `output_text` comes back with its annotations and logprobs; a
        // part of another type is refused for its type below, not for its fields.
        let kept: &[&str] = match part.kind.as_str() {
            "output_text" => &["annotations", "logprobs"],
            _ => &[],
        };
        let is_text = matches!(part.kind.as_str(), "text" | "input_text" | "output_text");
        let other = (part.rest.iter())
            .filter(|_| is_text)
            .find(|(key, value)| !value.is_null() && !kept.contains(&key.as_str()));
        if let Some((key, _)) = other {
            let path = format!("{field}.content[{index}].{key}");
            return Err(ApiError::invalid(
                format!("`{path}` is not supported: a text part takes `type` and `text`"),
                Some(path),
            ));
        }
        match (part.kind.as_str(), part.text) {
            ("text" | "input_text" | "output_text", Some(piece)) => text.push_str(&piece),
            (kind, _) => {
                return Err(ApiError::invalid(
                    format!(
                        "`{field}.content` has a part of type {:?}: only text parts are supported",
                        short(kind)
                    ),
                    Some(field.split('[').next().unwrap_or(field).to_owned()),
                ))
            }
        }
    }
    Ok(text)
}

fn short(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn turn(message: Value) -> Result<ChatMessage, ApiError> {
        chat_turn(
            2,
            serde_json::from_value(message).expect("a message's shape"),
        )
    }

    #[test]
    fn roles_map_to_the_wire_and_developer_speaks_as_system() {
        for (given, role) in [
            ("system", Role::System),
            ("developer", Role::System),
            ("user", Role::User),
            ("assistant", Role::Assistant),
            ("tool", Role::Tool),
        ] {
            let message = turn(json!({"role": given, "content": "x"})).expect(given);
            assert_eq!(message.role, role, "{given}");
        }
        let err = turn(json!({"role": "function", "content": "x"})).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("messages"));
        assert!(
            err.message.contains("`messages[2].role` \"function\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn text_parts_are_joined_and_any_other_part_is_refused_by_name() {
        let message = turn(json!({"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "input_text", "text": "b"},
            {"type": "output_text", "text": "c"}]}))
        .expect("text parts");
        assert_eq!(message.content, "abc");
        let err = turn(json!({"role": "user", "content": [{"type": "image_url"}]})).unwrap_err();
        assert!(
            err.message
                .contains("`messages[2].content` has a part of type \"image_url\""),
            "{}",
            err.message
        );
        assert_eq!(err.param.as_deref(), Some("messages"));
    }

    #[test]
    fn a_tool_message_keeps_its_call_id_and_no_content_is_empty_text() {
        let message = turn(json!({"role": "tool", "tool_call_id": "call_1", "content": "42"}))
            .expect("a tool message");
        assert_eq!(message.tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(message.content, "42");
        let message = turn(json!({"role": "assistant"})).expect("no content");
        assert_eq!(message.content, "");
        assert!(message.tool_calls.is_empty());
    }
}
