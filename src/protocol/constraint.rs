//! Structured output: a task's optional `json_schema` or `grammar` (GBNF), checked against
//! bounds that keep a hostile constraint from costing the engine more than a bad reply.
//!
//! llama.cpp compiles the constraint (in the engine); this module only decides whether the
//! value is the right shape and small enough to hand over. Its bounds exist because llama.cpp's
//! grammar parser recurses once per nesting level with no limit of its own, and because the
//! grammar is checked against the vocabulary at every token, so its size is paid per token.

use serde_json::Value;

use super::TaskError;

/// Largest `json_schema` (serialized) or `grammar`, in bytes.
pub const MAX_CONSTRAINT_BYTES: usize = 32 * 1024;
/// Deepest nesting of objects and lists in a `json_schema`.
pub const MAX_SCHEMA_DEPTH: usize = 32;
/// Most values in one `enum` of a `json_schema`.
pub const MAX_ENUM_VALUES: usize = 256;
/// Deepest nesting of parentheses in a `grammar`.
pub const MAX_GRAMMAR_DEPTH: usize = 32;

/// What a task's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputConstraint {
    /// A JSON Schema object; the output is JSON valid against it.
    JsonSchema(Value),
    /// A GBNF grammar (llama.cpp's format) whose `root` rule the output matches.
    Grammar(String),
}

/// The constraint of a task's `json_schema` and `grammar` (exclusive), checked.
pub(super) fn constraint(
    schema: Option<&Value>,
    grammar: Option<&str>,
) -> Result<Option<OutputConstraint>, TaskError> {
    match (schema.filter(|v| !v.is_null()), grammar) {
        (Some(_), Some(_)) => Err(TaskError::invalid(
            "give at most one of `json_schema` or `grammar`, not both",
        )),
        (Some(schema), None) => check_schema(schema, "json_schema")
            .map(|()| Some(OutputConstraint::JsonSchema(schema.clone()))),
        (None, Some(grammar)) => {
            check_grammar(grammar).map(|()| Some(OutputConstraint::Grammar(grammar.to_owned())))
        }
        (None, None) => Ok(None),
    }
}

/// Checks a JSON Schema against the bounds, naming it `field` in the error: a task's
/// `json_schema`, or a tool's `parameters` (which become part of the tool-call grammar).
pub(super) fn check_schema(schema: &Value, field: &str) -> Result<(), TaskError> {
    if !schema.is_object() {
        return Err(TaskError::invalid(format!(
            "`{field}` must be a JSON Schema object"
        )));
    }
    let size = schema.to_string().len();
    if size > MAX_CONSTRAINT_BYTES {
        return Err(TaskError::invalid(format!(
            "`{field}` is {size} bytes, more than the limit of {MAX_CONSTRAINT_BYTES}"
        )));
    }
    check_schema_node(schema, 1, field)
}

fn check_schema_node(node: &Value, depth: usize, field: &str) -> Result<(), TaskError> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(TaskError::invalid(format!(
            "`{field}` nests deeper than {MAX_SCHEMA_DEPTH} levels"
        )));
    }
    match node {
        Value::Object(fields) => {
            if let Some(Value::Array(values)) = fields.get("enum") {
                if values.len() > MAX_ENUM_VALUES {
                    return Err(TaskError::invalid(format!(
                        "`{field}` has an enum of {} values, more than the limit of {MAX_ENUM_VALUES}",
                        values.len()
                    )));
                }
            }
            fields
                .values()
                .try_for_each(|child| check_schema_node(child, depth + 1, field))
        }
        Value::Array(items) => items
            .iter()
            .try_for_each(|child| check_schema_node(child, depth + 1, field)),
        _ => Ok(()),
    }
}

fn check_grammar(grammar: &str) -> Result<(), TaskError> {
    if grammar.trim().is_empty() {
        return Err(TaskError::invalid("`grammar` must not be empty"));
    }
    if grammar.len() > MAX_CONSTRAINT_BYTES {
        return Err(TaskError::invalid(format!(
            "`grammar` is {} bytes, more than the limit of {MAX_CONSTRAINT_BYTES}",
            grammar.len()
        )));
    }
    if grammar.contains('\0') {
        return Err(TaskError::invalid(
            "`grammar` must not contain NUL characters",
        ));
    }
    if grammar_depth(grammar) > MAX_GRAMMAR_DEPTH {
        return Err(TaskError::invalid(format!(
            "`grammar` nests parentheses deeper than {MAX_GRAMMAR_DEPTH} levels"
        )));
    }
    Ok(())
}

/// The deepest parenthesis nesting of a GBNF text, not counting parentheses inside string
/// literals, character classes or comments. Over-estimates rather than under-estimates on
/// malformed text (which llama.cpp rejects anyway).
fn grammar_depth(grammar: &str) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut chars = grammar.chars();
    while let Some(c) = chars.next() {
        match c {
            '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' => depth = depth.saturating_sub(1),
            '"' => skip_until(&mut chars, '"'),
            '[' => skip_until(&mut chars, ']'),
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' || c == '\r' {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

/// Skips to just past the unescaped `end`.
fn skip_until(chars: &mut std::str::Chars<'_>, end: char) {
    while let Some(c) = chars.next() {
        if c == '\\' {
            chars.next();
        } else if c == end {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The constraint of a task body holding `body`'s fields, read as the worker reads them.
    fn constraint(body: Value) -> Result<Option<OutputConstraint>, TaskError> {
        let body = crate::protocol::TaskBody::from_json(body.to_string().as_bytes(), 1 << 20)?;
        super::constraint(body.json_schema.as_ref(), body.grammar.as_deref())
    }

    fn nested_schema(levels: usize) -> Value {
        let mut schema = json!({"type": "string"});
        for _ in 0..levels {
            schema = json!({"type": "object", "properties": {"a": schema}});
        }
        schema
    }

    #[test]
    fn a_schema_or_a_grammar_is_taken_as_given() {
        let schema = json!({"type": "object", "properties": {"x": {"type": "integer"}}});
        assert_eq!(
            constraint(json!({"json_schema": schema.clone()})).unwrap(),
            Some(OutputConstraint::JsonSchema(schema))
        );
        assert_eq!(
            constraint(json!({"grammar": "root ::= \"yes\" | \"no\""})).unwrap(),
            Some(OutputConstraint::Grammar(
                "root ::= \"yes\" | \"no\"".into()
            ))
        );
        assert_eq!(constraint(json!({"json_schema": null})).unwrap(), None);
        assert_eq!(constraint(json!({})).unwrap(), None);
    }

    #[test]
    fn both_or_the_wrong_type_is_rejected_by_name() {
        let both = constraint(json!({"json_schema": {}, "grammar": "root ::= \"a\""}));
        assert!(both.unwrap_err().message.contains("not both"));
        let list = constraint(json!({"json_schema": [1, 2]}));
        assert!(list.unwrap_err().message.contains("`json_schema`"));
        let number = constraint(json!({"grammar": 7}));
        assert!(number.unwrap_err().message.contains("`grammar`"));
        let empty = constraint(json!({"grammar": "  "}));
        assert!(empty.unwrap_err().message.contains("empty"));
    }

    #[test]
    fn hostile_schemas_are_bounded() {
        assert!(constraint(json!({"json_schema": nested_schema(10)})).is_ok());
        let deep = constraint(json!({"json_schema": nested_schema(40)}));
        assert!(deep.unwrap_err().message.contains("deeper than 32"));
        let values: Vec<String> = (0..1000).map(|i| format!("v{i}")).collect();
        let huge_enum = constraint(json!({"json_schema": {"enum": values}}));
        assert!(huge_enum
            .unwrap_err()
            .message
            .contains("enum of 1000 values"));
        let description = "x".repeat(MAX_CONSTRAINT_BYTES);
        let big = constraint(json!({"json_schema": {"description": description}}));
        assert!(big.unwrap_err().message.contains("more than the limit"));
    }

    #[test]
    fn hostile_grammars_are_bounded() {
        let deep = format!("root ::= {}\"a\"{}", "(".repeat(40), ")".repeat(40));
        let rejected = constraint(json!({"grammar": deep}));
        assert!(rejected.unwrap_err().message.contains("deeper than 32"));
        let big = format!("root ::= \"{}\"", "a".repeat(MAX_CONSTRAINT_BYTES));
        assert!(constraint(json!({"grammar": big})).is_err());
    }

    #[test]
    fn parentheses_in_literals_classes_and_comments_do_not_count() {
        assert_eq!(grammar_depth(r#"root ::= ("a" ("b"))"#), 2);
        assert_eq!(grammar_depth(r#"root ::= "((((\"((" [(((] # ((((("#), 0);
        assert_eq!(grammar_depth("# (((\nroot ::= (\"x\")"), 1);
        assert_eq!(grammar_depth(r#"root ::= [\]((] ("a")"#), 1);
    }
}
