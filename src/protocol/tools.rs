//! Tool calling on the wire, in OpenAI's shapes: the functions a task offers (`tools`),
//! whether and which one the model must call (`tool_choice`), the calls a reply carries and
//! the deltas a chunk streams. [`checked_tools`] validates a task's tools against each other
//! and its choice; the JSON Schemas of their parameters are llama.cpp's to judge (the
//! worker refuses one it cannot turn into a grammar with llama.cpp's own message).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::constraint::{check_schema, MAX_CONSTRAINT_BYTES};
use super::error::short;
use super::TaskError;

/// Longest function name OpenAI accepts.
const MAX_NAME_LEN: usize = 64;
/// Most tools a task may offer (OpenAI's own limit).
pub const MAX_TOOLS: usize = 128;
/// Largest total of a task's tools' `parameters` schemas (serialized), in bytes.
pub const MAX_TOOL_SCHEMAS_BYTES: usize = 4 * MAX_CONSTRAINT_BYTES;

/// A function the model may call: `{"type": "function", "function": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub kind: FunctionKind,
    /// The function.
    pub function: FunctionDef,
}

/// The only kind of tool: `"function"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionKind {
    /// A function call.
    Function,
}

/// A function's name, what it does, and the JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    /// `^[A-Za-z0-9_-]{1,64}$`, unique within the task.
    pub name: String,
    /// What the function does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments object; absent means no arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// OpenAI's strict mode. Arguments are always grammar-constrained once a call starts,
    /// so `true` and `false` behave the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Whether the model may, must, or must not call a tool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// No call (the default without tools).
    None,
    /// The model decides (the default with tools).
    #[default]
    Auto,
    /// At least one call, of any of the tools.
    Required,
    /// A call of this function.
    Function(String),
}

impl ToolChoice {
    /// Reads OpenAI's `tool_choice`: `"none"`, `"auto"`, `"required"` or
    /// `{"type": "function", "function": {"name": ...}}`.
    pub fn from_json(value: &Value) -> Result<ToolChoice, TaskError> {
        let named = || {
            let kind = value.get("type")?.as_str()?;
            let name = value.get("function")?.get("name")?.as_str()?;
            (kind == "function").then(|| ToolChoice::Function(name.to_owned()))
        };
        match value.as_str() {
            Some("none") => Ok(ToolChoice::None),
            Some("auto") => Ok(ToolChoice::Auto),
            Some("required") => Ok(ToolChoice::Required),
            _ => named().ok_or_else(|| {
                TaskError::invalid(format!(
                    "`tool_choice` must be \"none\", \"auto\", \"required\" or \
                     {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, not {}",
                    short(value)
                ))
            }),
        }
    }

    /// The value as OpenAI writes it.
    pub fn to_json(&self) -> Value {
        match self {
            ToolChoice::None => Value::from("none"),
            ToolChoice::Auto => Value::from("auto"),
            ToolChoice::Required => Value::from("required"),
            ToolChoice::Function(name) => {
                serde_json::json!({"type": "function", "function": {"name": name}})
            }
        }
    }
}

/// A call the model made: `{"id", "type": "function", "function": {"name", "arguments"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// `call_…`, unique; a `role: "tool"` message answers it by this id.
    pub id: String,
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub kind: FunctionKind,
    /// What was called.
    pub function: FunctionCall,
}

impl ToolCall {
    /// A function call with a fresh `call_…` id.
    pub fn new(name: String, arguments: String) -> ToolCall {
        ToolCall {
            id: new_call_id(),
            kind: FunctionKind::Function,
            function: FunctionCall { name, arguments },
        }
    }
}

/// The size of `tools` as a gateway's rate limit counts it, in bytes: their JSON (a chat
/// template renders every definition into the prompt).
pub fn counted_len(tools: &[Tool]) -> usize {
    serde_json::to_vec(tools).map_or(0, |json| json.len())
}

/// A fresh call id, `call_` and 32 hex digits.
pub fn new_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

/// The function of a [`ToolCall`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// Its arguments: a JSON object, as text.
    pub arguments: String,
}

/// A piece of a streamed tool call, as OpenAI streams them: the first piece of call `index`
/// carries its `id`, `type` and name; the following ones carry more of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of the reply this continues, from 0.
    pub index: u32,
    /// The call's id (first piece only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `"function"` (first piece only).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<FunctionKind>,
    /// The name (first piece only) and more of the arguments.
    pub function: FunctionDelta,
}

impl ToolCallDelta {
    /// Call `index` in one piece: its id, type, name and all its arguments.
    pub fn whole(index: u32, call: &ToolCall) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: Some(call.id.clone()),
            kind: Some(FunctionKind::Function),
            function: FunctionDelta {
                name: Some(call.function.name.clone()),
                arguments: call.function.arguments.clone(),
            },
        }
    }
}

/// The function part of a [`ToolCallDelta`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDelta {
    /// The function's name (first piece only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// More of the arguments' text.
    #[serde(default)]
    pub arguments: String,
}

/// The tools a task may call, and its choice among them, once checked: names well formed
/// and unique, parameters an object, a named choice naming one of them. A task without
/// tools can only choose `none` (or `auto`, which then means the same).
pub fn checked_tools(
    tools: &[Tool],
    choice: Option<&Value>,
) -> Result<(Vec<Tool>, ToolChoice), TaskError> {
    let choice = match choice {
        Some(value) => ToolChoice::from_json(value)?,
        None if tools.is_empty() => ToolChoice::None,
        None => ToolChoice::Auto,
    };
    if tools.len() > MAX_TOOLS {
        return Err(TaskError::invalid(format!(
            "`tools` holds {} tools, more than the limit of {MAX_TOOLS}",
            tools.len()
        )));
    }
    for (i, tool) in tools.iter().enumerate() {
        let name = &tool.function.name;
        let well_formed = (1..=MAX_NAME_LEN).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !well_formed {
            return Err(TaskError::invalid(format!(
                "`tools[{i}].function.name` must be 1 to {MAX_NAME_LEN} letters, digits, \
                 underscores or dashes, not {:?}",
                name
            )));
        }
        if tools[..i].iter().any(|t| t.function.name == *name) {
            return Err(TaskError::invalid(format!(
                "`tools[{i}].function.name` repeats the name {name:?}"
            )));
        }
        if let Some(parameters) = &tool.function.parameters {
            if !parameters.is_object() {
                return Err(TaskError::invalid(format!(
                    "`tools[{i}].function.parameters` must be a JSON Schema object, not {}",
                    short(parameters)
                )));
            }
            // Arguments are an object: llama.cpp's call parsers keep only text that begins
            // with `{`, so a call to a function taking an array or a string would lose what
            // the model wrote.
            if let Some(kind) = parameters.get("type").filter(|kind| *kind != "object") {
                return Err(TaskError::invalid(format!(
                    "`tools[{i}].function.parameters` must describe an object (its arguments), \
                     not `\"type\": {}`",
                    short(kind)
                )));
            }
            // The schemas become one grammar, checked against the vocabulary at every
            // token: each is held to `json_schema`'s bounds, and all together to a total.
            check_schema(parameters, &format!("tools[{i}].function.parameters"))?;
        }
    }
    let total: usize = tools
        .iter()
        .filter_map(|tool| tool.function.parameters.as_ref())
        .map(|parameters| parameters.to_string().len())
        .sum();
    if total > MAX_TOOL_SCHEMAS_BYTES {
        return Err(TaskError::invalid(format!(
            "the `parameters` of `tools` are {total} bytes together, more than the limit of \
             {MAX_TOOL_SCHEMAS_BYTES}"
        )));
    }
    match &choice {
        ToolChoice::Required if tools.is_empty() => Err(TaskError::invalid(
            "`tool_choice` is \"required\" but `tools` is empty",
        )),
        ToolChoice::Function(name) if !tools.iter().any(|t| t.function.name == *name) => {
            Err(TaskError::invalid(format!(
                "`tool_choice` names the function {name:?}, which is not in `tools`"
            )))
        }
        ToolChoice::Auto if tools.is_empty() => Ok((Vec::new(), ToolChoice::None)),
        _ => Ok((tools.to_vec(), choice)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tool(name: &str) -> Tool {
        serde_json::from_value(json!({"type": "function", "function": {"name": name,
            "parameters": {"type": "object"}}}))
        .unwrap()
    }

    #[test]
    fn choices_read_as_openai_writes_them() {
        for value in [json!("none"), json!("auto"), json!("required")] {
            assert_eq!(ToolChoice::from_json(&value).unwrap().to_json(), value);
        }
        let named = json!({"type": "function", "function": {"name": "f"}});
        assert_eq!(
            ToolChoice::from_json(&named).unwrap(),
            ToolChoice::Function("f".into())
        );
        let error = ToolChoice::from_json(&json!("sometimes")).unwrap_err();
        assert!(error.message.contains("\"sometimes\""), "{}", error.message);
    }

    #[test]
    fn defaults_follow_openai() {
        assert_eq!(checked_tools(&[], None).unwrap().1, ToolChoice::None);
        assert_eq!(
            checked_tools(&[tool("f")], None).unwrap().1,
            ToolChoice::Auto
        );
    }

    #[test]
    fn bad_tools_are_refused_by_path() {
        let message = |tools: &[Tool], choice: Option<Value>| {
            checked_tools(tools, choice.as_ref()).unwrap_err().message
        };
        assert!(message(&[tool("a b")], None).contains("`tools[0].function.name`"));
        assert!(message(&[tool("f"), tool("f")], None).contains("`tools[1].function.name`"));
        assert!(message(&[], Some(json!("required"))).contains("`tools` is empty"));
        let other = json!({"type": "function", "function": {"name": "g"}});
        assert!(message(&[tool("f")], Some(other)).contains("\"g\""));
        let mut odd = tool("f");
        odd.function.parameters = Some(json!("object"));
        assert!(message(&[odd], None).contains("`tools[0].function.parameters`"));
        let mut listing = tool("f");
        listing.function.parameters = Some(json!({"type": "array", "items": {}}));
        let refused = message(&[tool("g"), listing], None);
        assert!(refused.contains("`tools[1].function.parameters` must describe an object"));
        assert!(refused.contains("\"array\""), "{refused}");
        let mut untyped = tool("f");
        untyped.function.parameters = Some(json!({"properties": {"a": {"type": "string"}}}));
        assert!(
            checked_tools(&[untyped], None).is_ok(),
            "no `type`: an object's schema"
        );
    }

    #[test]
    fn tool_schemas_are_held_to_the_bounds_of_json_schema_and_to_a_total() {
        let with = |name: &str, parameters: Value| {
            let mut tool = tool(name);
            tool.function.parameters = Some(parameters);
            tool
        };
        let words: Vec<String> = (0..300).map(|n| format!("w{n}")).collect();
        let wide = with(
            "g",
            json!({"type": "object", "properties": {"w": {"type": "string", "enum": words}}}),
        );
        let refused = checked_tools(&[tool("f"), wide], None).unwrap_err().message;
        assert!(
            refused.contains("`tools[1].function.parameters` has an enum of 300 values"),
            "{refused}"
        );
        let text = "x".repeat(MAX_CONSTRAINT_BYTES / 2);
        let half = |name: &str| with(name, json!({"type": "object", "description": text}));
        let many: Vec<Tool> = (0..9).map(|n| half(&format!("f{n}"))).collect();
        let refused = checked_tools(&many, None).unwrap_err().message;
        assert!(
            refused.contains("more than the limit of 131072"),
            "{refused}"
        );
        assert!(
            checked_tools(&many[..7], None).is_ok(),
            "each within bounds, and the sum"
        );
        let crowd: Vec<Tool> = (0..=MAX_TOOLS).map(|n| tool(&format!("t{n}"))).collect();
        let refused = checked_tools(&crowd, None).unwrap_err().message;
        assert!(refused.contains("`tools` holds 129 tools"), "{refused}");
        assert!(checked_tools(&crowd[..MAX_TOOLS], None).is_ok());
    }

    #[test]
    fn a_call_id_is_fresh() {
        let a = ToolCall::new("f".into(), "{}".into());
        let b = ToolCall::new("f".into(), "{}".into());
        assert!(a.id.starts_with("call_"));
        assert_ne!(a.id, b.id);
    }
}
