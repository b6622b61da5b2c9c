//! OpenAI's output formats, translated to the wire contract's `json_schema`: Chat
//! Completions' `response_format` and the Responses API's `text.format`. Pure values only.
//!
//! Whether a schema can be compiled is the worker's call (llama.cpp compiles it there); its
//! refusal comes back as an `invalid_request`, which the gateway answers with a 400.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::gateway::errors::ApiError;

/// Chat Completions' `response_format`. A field OpenAI does not define is refused (a schema
/// beside `json_object` would otherwise be dropped while its caller counts on it).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ResponseFormat {
    /// Plain text (no constraint). (Variants without fields are empty structs: serde lets
    /// a unit variant of a tagged enum take any field.)
    Text {},
    /// Any JSON object.
    JsonObject {},
    /// JSON valid against a schema.
    JsonSchema {
        /// The schema, its name and strictness.
        json_schema: NamedSchema,
    },
}

/// `response_format.json_schema`. Its `description` is accepted and not shown to the model
/// (the schema constrains the output whatever it says), its `strict` likewise (the output
/// always follows the schema).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct NamedSchema {
    name: String,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    strict: Option<bool>,
}

/// The Responses API's `text.format`: the same choices, the schema's fields inline, as
/// strict about unknown fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) enum TextFormat {
    /// Plain text (no constraint). (Variants without fields are empty structs: serde lets
    /// a unit variant of a tagged enum take any field.)
    Text {},
    /// Any JSON object.
    JsonObject {},
    /// JSON valid against `schema`.
    JsonSchema {
        name: String,
        #[serde(default)]
        schema: Option<Value>,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        strict: Option<bool>,
    },
}

/// The Responses API's `text` parameter.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TextParam {
    #[serde(default)]
    pub format: Option<TextFormat>,
    /// Every other field (`verbosity`): [`crate::gateway::unsupported::check_fields`].
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// What "any JSON object" is as a schema.
fn any_object() -> Value {
    json!({"type": "object"})
}

impl ResponseFormat {
    /// The task's `json_schema` for this format; `field` names it in errors.
    pub(crate) fn json_schema(self, field: &str) -> Result<Option<Value>, ApiError> {
        match self {
            ResponseFormat::Text {} => Ok(None),
            ResponseFormat::JsonObject {} => Ok(Some(any_object())),
            ResponseFormat::JsonSchema { json_schema } => {
                required_schema(json_schema.schema, &format!("{field}.json_schema.schema"))
            }
        }
    }
}

impl TextFormat {
    /// The task's `json_schema` for this format.
    pub(crate) fn json_schema(self) -> Result<Option<Value>, ApiError> {
        match self {
            TextFormat::Text {} => Ok(None),
            TextFormat::JsonObject {} => Ok(Some(any_object())),
            TextFormat::JsonSchema { schema, .. } => required_schema(schema, "text.format.schema"),
        }
    }

    /// The format as the response object echoes it.
    pub(crate) fn echo(format: Option<&Value>) -> Value {
        format.cloned().unwrap_or_else(|| json!({"type": "text"}))
    }
}

fn required_schema(schema: Option<Value>, field: &str) -> Result<Option<Value>, ApiError> {
    match schema {
        Some(schema @ Value::Object(_)) => Ok(Some(schema)),
        Some(_) => Err(ApiError::invalid(
            format!("`{field}` must be a JSON Schema object"),
            Some(field.to_owned()),
        )),
        None => Err(ApiError::invalid(
            format!("`{field}` is required"),
            Some(field.to_owned()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_format(value: Value) -> Result<Option<Value>, ApiError> {
        serde_json::from_value::<ResponseFormat>(value)
            .expect("a known format")
            .json_schema("response_format")
    }

    fn text_format(value: Value) -> Result<Option<Value>, ApiError> {
        serde_json::from_value::<TextFormat>(value)
            .expect("a known format")
            .json_schema()
    }

    #[test]
    fn each_chat_format_becomes_a_schema_or_none() {
        assert_eq!(response_format(json!({"type": "text"})).unwrap(), None);
        assert_eq!(
            response_format(json!({"type": "json_object"})).unwrap(),
            Some(json!({"type": "object"}))
        );
        let schema = json!({"type": "object", "required": ["a"]});
        let named = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}});
        assert_eq!(response_format(named).unwrap(), Some(schema));
    }

    #[test]
    fn each_responses_format_becomes_a_schema_or_none() {
        assert_eq!(text_format(json!({"type": "text"})).unwrap(), None);
        assert_eq!(
            text_format(json!({"type": "json_object"})).unwrap(),
            Some(json!({"type": "object"}))
        );
        let schema = json!({"type": "array"});
        let named = json!({"type": "json_schema", "name": "x", "schema": schema});
        assert_eq!(text_format(named).unwrap(), Some(schema));
    }

    #[test]
    fn a_json_schema_format_needs_an_object_schema() {
        let missing = response_format(json!({"type": "json_schema", "json_schema": {"name": "x"}}));
        let error = missing.unwrap_err();
        assert_eq!(error.status.as_u16(), 400);
        assert!(error.message.contains("response_format.json_schema.schema"));
        let string = text_format(json!({"type": "json_schema", "name": "x", "schema": "{}"}));
        assert!(string.unwrap_err().message.contains("text.format.schema"));
    }

    #[test]
    fn a_field_openai_does_not_define_is_refused_inside_each_format() {
        let parses = |value: Value| serde_json::from_value::<ResponseFormat>(value).is_ok();
        let schema = json!({"type": "object"});
        assert!(!parses(json!({"type": "json_object", "schema": schema})));
        assert!(!parses(json!({"type": "text", "foo": 1})));
        assert!(!parses(
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strictly": true}})
        ));
        let described = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema,
                               "description": "an answer", "strict": false}});
        assert!(parses(described));
        let parses = |value: Value| serde_json::from_value::<TextFormat>(value).is_ok();
        assert!(!parses(json!({"type": "json_object", "schema": schema})));
        assert!(!parses(json!({"type": "text", "foo": 1})));
        assert!(!parses(
            json!({"type": "json_schema", "name": "x", "schema": schema, "x": 1})
        ));
        assert!(parses(
            json!({"type": "json_schema", "name": "x", "schema": schema, "description": "d", "strict": true})
        ));
    }

    #[test]
    fn unknown_format_types_do_not_parse() {
        assert!(serde_json::from_value::<ResponseFormat>(json!({"type": "xml"})).is_err());
        assert!(serde_json::from_value::<TextFormat>(json!({"type": "yaml"})).is_err());
    }
}
