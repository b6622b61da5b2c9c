//! No field silently ignored: the fields of OpenAI's request schemas that the endpoint
//! modules do not read either change nothing here (advisory fields, and values that ask for
//! what the gateway does anyway, such as `tools: []`) or are refused with a 400 that names
//! them. A field OpenAI does not define is refused too: it is a typo or an extension this
//! gateway does not have, and a caller is better told than ignored. Pure values only.

use serde_json::{Map, Value};

use crate::gateway::errors::ApiError;

/// Which endpoint a request came to: their schemas differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completion,
    /// `POST /v1/responses`.
    Responses,
}

/// Fields OpenAI documents as not changing the output (identifiers, tags, hints): taken and
/// ignored on every endpoint. (`service_tier` chooses a priority tier: the endpoints read it.)
pub const ADVISORY: &[&str] = &[
    "user",
    "metadata",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
];

/// Checks the fields the endpoint's own parser left over (`rest`): each is advisory, holds a
/// value that asks for nothing the gateway does not do, or is refused by name.
pub fn check(endpoint: Endpoint, rest: &Map<String, Value>) -> Result<(), ApiError> {
    // `tools` first: beside it `tool_choice` and the rest only follow from it.
    let mut fields: Vec<_> = rest.iter().collect();
    fields.sort_by_key(|(field, _)| field.as_str() != "tools");
    for (field, value) in fields {
        if ADVISORY.contains(&field.as_str()) || value.is_null() || harmless(endpoint, field, value)
        {
            continue;
        }
        return Err(refused(field));
    }
    Ok(())
}

/// Checks the fields of a chat message (or a Responses input item) at `path` (`messages[2]`)
/// that the endpoint does not read: a participant `name` is not carried (the task's messages
/// have no name; llama.cpp would hand it to templates, and few render it), `type: "message"` says what the item is, an empty `tool_calls` list asks
/// for nothing, nor do an empty `annotations` list or a null `refusal` (OpenAI's own
/// assistant messages carry them, so a history begun there can be sent here); anything else
/// is refused by its path.
pub fn check_message(path: &str, rest: &Map<String, Value>) -> Result<(), ApiError> {
    for (field, value) in rest {
        let harmless = value.is_null()
            || field == "name"
            || (field == "type" && value == "message")
            || (matches!(field.as_str(), "tool_calls" | "annotations")
                && value.as_array().is_some_and(Vec::is_empty));
        if !harmless {
            let why = match field.as_str() {
                "tool_calls" | "tool_call_id" => {
                    "on the Responses API, calls and their results are `function_call` and \
                     `function_call_output` items"
                }
                "function_call" => {
                    "the deprecated functions API is not supported: use `tool_calls`"
                }
                _ => "it is not a field this endpoint reads in a message",
            };
            return Err(ApiError::invalid(
                format!("`{path}.{field}` is not supported: {why}"),
                Some(format!("{path}.{field}")),
            ));
        }
    }
    Ok(())
}

/// Checks the fields of an object at `path` (`text`, `tools[0].function`) that the
/// endpoint does not read: each is `null`, holds a value that asks for nothing the gateway
/// does not do, or is refused by its path.
pub fn check_fields(path: &str, rest: &Map<String, Value>) -> Result<(), ApiError> {
    let refused = rest
        .iter()
        .find(|(field, value)| !value.is_null() && !harmless_inside(path, field, value));
    let Some((field, _)) = refused else {
        return Ok(());
    };
    let why = match (path, field.as_str()) {
        ("stream_options", "include_obfuscation") => {
            "events carry no obfuscation padding (`false` is accepted)"
        }
        ("text", "verbosity") => {
            "this gateway serves a local model that does not support it (`\"medium\"`, \
             OpenAI's default, is accepted)"
        }
        _ => "it is not a field this endpoint reads there",
    };
    Err(ApiError::invalid(
        format!("`{path}.{field}` is not supported: {why}"),
        Some(format!("{path}.{field}")),
    ))
}

/// Whether `field` = `value` inside the object at `path` asks for what the gateway does
/// anyway.
fn harmless_inside(path: &str, field: &str, value: &Value) -> bool {
    match (path, field) {
        ("stream_options", "include_obfuscation") => *value == Value::Bool(false),
        ("text", "verbosity") => value == "medium",
        _ => false,
    }
}

/// Whether `field` = `value` asks for what the gateway does anyway.
fn harmless(endpoint: Endpoint, field: &str, value: &Value) -> bool {
    let empty_list = value.as_array().is_some_and(Vec::is_empty);
    match (endpoint, field) {
        (_, "tools" | "functions") => empty_list,
        (_, "tool_choice") => value == "none",
        (_, "parallel_tool_calls") => value.is_boolean(),
        (Endpoint::Chat, "modalities") => *value == serde_json::json!(["text"]),
        (Endpoint::Chat, "store") => *value == Value::Bool(false),
        (Endpoint::Completion, "echo") => *value == Value::Bool(false),
        (Endpoint::Completion, "best_of") => value.as_u64() == Some(1),
        (Endpoint::Responses, "truncation") => value == "disabled",
        // Chat reads its own `stream_options`; here it can only ask for no padding.
        (Endpoint::Responses, "stream_options") => value.as_object().is_some_and(|options| {
            options
                .iter()
                .all(|(k, v)| v.is_null() || harmless_inside("stream_options", k, v))
        }),
        _ => false,
    }
}

/// The 400 for a field this gateway does not serve, saying what it does instead where that
/// helps.
fn refused(field: &str) -> ApiError {
    let why = match field {
        "tools" | "tool_choice" => "this endpoint takes no tools",
        "functions" | "function_call" => {
            "the deprecated functions API is not supported: use `tools` and `tool_choice`"
        }
        "conversation" => {
            "conversations are not kept: continue a stored response with `previous_response_id`, or send the whole conversation in `input`"
        }
        "store" => "this gateway does not store chat completions (`store: false` is accepted)",
        "echo" | "best_of" => "only the defaults (`echo: false`, `best_of: 1`) are supported",
        "truncation" => "only `truncation: \"disabled\"` is supported",
        "stream_options" => {
            "events carry no obfuscation padding: only `{\"include_obfuscation\": false}` is accepted"
        }
        "modalities" => "only text output is supported",
        "audio" | "prediction" | "web_search_options" | "reasoning" | "reasoning_effort"
        | "verbosity" | "suffix" | "prompt" | "max_tool_calls" => {
            "this gateway serves a local model that does not support it"
        }
        _ => "it is not a field this endpoint takes",
    };
    ApiError::invalid(
        format!("`{field}` is not supported: {why}"),
        Some(field.to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rest(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn advisory_fields_and_values_that_ask_for_nothing_new_pass() {
        let passing = rest(json!({
            "user": "u-1", "metadata": {"k": "v"}, "safety_identifier": "s",
            "prompt_cache_key": "p", "tools": [],
            "tool_choice": "none", "parallel_tool_calls": true, "modalities": ["text"],
            "store": false, "audio": null
        }));
        assert!(check(Endpoint::Chat, &passing).is_ok());
        let completion = rest(json!({"echo": false, "best_of": 1, "suffix": null}));
        assert!(check(Endpoint::Completion, &completion).is_ok());
        let responses = rest(json!({"truncation": "disabled"}));
        assert!(check(Endpoint::Responses, &responses).is_ok());
    }

    #[test]
    fn a_message_field_no_endpoint_reads_is_refused_by_its_path() {
        let fine =
            rest(json!({"name": "ann", "type": "message", "tool_calls": [], "refusal": null}));
        assert!(check_message("messages[0]", &fine).is_ok());
        let calls = rest(json!({"tool_calls": [{"id": "call_1"}]}));
        let error = check_message("messages[2]", &calls).expect_err("tool calls");
        assert_eq!(error.param.as_deref(), Some("messages[2].tool_calls"));
        assert!(error.message.contains("`function_call_output` items"));
        let odd = rest(json!({"weight": 2}));
        assert!(check_message("input[0]", &odd).is_err());
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        for (endpoint, body, field) in [
            (
                Endpoint::Chat,
                json!({"tools": [{"type": "function"}]}),
                "tools",
            ),
            (
                Endpoint::Chat,
                json!({"tool_choice": "required"}),
                "tool_choice",
            ),
            (
                Endpoint::Chat,
                json!({"functions": [{"name": "f"}]}),
                "functions",
            ),
            (Endpoint::Chat, json!({"store": true}), "store"),
            (
                Endpoint::Chat,
                json!({"reasoning_effort": "low"}),
                "reasoning_effort",
            ),
            (Endpoint::Chat, json!({"temprature": 0.2}), "temprature"),
            (Endpoint::Completion, json!({"echo": true}), "echo"),
            (Endpoint::Completion, json!({"suffix": "x"}), "suffix"),
            (
                Endpoint::Responses,
                json!({"conversation": "conv_1"}),
                "conversation",
            ),
            (
                Endpoint::Responses,
                json!({"tools": [{"type": "function"}]}),
                "tools",
            ),
        ] {
            let error = check(endpoint, &rest(body)).expect_err(field);
            assert_eq!(error.param.as_deref(), Some(field));
            assert!(
                error
                    .message
                    .starts_with(&format!("`{field}` is not supported")),
                "{}",
                error.message
            );
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
        }
    }
}
