//! Embedding tasks of wire contract v1: what a caller publishes to the embeddings queue
//! ([`EmbeddingBody`]) and the checked task a worker with `engine.role = "embed"` runs
//! ([`EmbeddingTask`]). Added in 0.3 of contract v1; the reply is a [`super::Reply`] whose
//! `embeddings` holds one vector per input. As with generation tasks, unknown fields are
//! ignored, `null` counts as absent, and errors name the field.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::task_body::{json_kind, read_object, wrong_type};
use super::validate::{integer, Limits};
use super::TaskError;

/// Most inputs one embedding task may carry (OpenAI's limit for one request).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// What to embed, as OpenAI's `input` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts, one vector each.
    Texts(Vec<String>),
    /// One text already tokenized (the model's token ids).
    Tokens(Vec<u32>),
    /// Several tokenized texts.
    TokenLists(Vec<Vec<u32>>),
}

/// An embedding task body as it travels. Only `input` is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingBody {
    /// The contract version the caller speaks (only 1 exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The text or texts (or token arrays) to embed.
    pub input: EmbeddingInput,
    /// Keep only the first this many dimensions of each vector (then normalized again when
    /// `normalize`); at most the model's width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u64>,
    /// Scale each vector to length 1 (default true, as OpenAI's are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    /// Bound on the inference, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Absolute Unix ms after which the task must not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// One input of a checked embedding task.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingItem {
    /// Text, tokenized by the worker.
    Text(String),
    /// Token ids, checked against the model's vocabulary by the worker.
    Tokens(Vec<u32>),
}

/// A checked embedding task.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingTask {
    /// At least one, at most [`MAX_EMBEDDING_INPUTS`], none empty.
    pub inputs: Vec<EmbeddingItem>,
    /// Dimensions to keep, when fewer than the model's.
    pub dimensions: Option<u32>,
    /// Scale each vector to length 1.
    pub normalize: bool,
    /// Bound on the inference.
    pub timeout: Duration,
    /// Absolute Unix ms after which the task must not start.
    pub deadline_ms: Option<u64>,
}

impl EmbeddingBody {
    /// The body in `bytes`, or why it is not one: errors name the field.
    pub fn from_json(bytes: &[u8], max_body_bytes: usize) -> Result<EmbeddingBody, TaskError> {
        let value = read_object(bytes, max_body_bytes)?;
        match value.get("input") {
            None | Some(Value::Null) => {
                return Err(TaskError::invalid(
                    "`input` is required: a string, a list of strings, a list of token ids or a list of such lists",
                ))
            }
            Some(input) => {
                if let Some(problem) = input_shape_problem(input) {
                    return Err(TaskError::invalid(problem));
                }
            }
        }
        serde_path_to_error::deserialize(&value).map_err(|e| wrong_type(&value, &e))
    }

    /// The body as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings, integers and booleans only: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// The task this body asks for, within `limits`, or why not.
    pub fn validate(&self, limits: &Limits) -> Result<EmbeddingTask, TaskError> {
        let inputs: Vec<EmbeddingItem> = match &self.input {
            EmbeddingInput::Text(text) => vec![EmbeddingItem::Text(text.clone())],
            EmbeddingInput::Texts(texts) => {
                texts.iter().cloned().map(EmbeddingItem::Text).collect()
            }
            EmbeddingInput::Tokens(tokens) => vec![EmbeddingItem::Tokens(tokens.clone())],
            EmbeddingInput::TokenLists(lists) => {
                lists.iter().cloned().map(EmbeddingItem::Tokens).collect()
            }
        };
        if inputs.is_empty() {
            return Err(TaskError::invalid("`input` must hold at least one input"));
        }
        if inputs.len() > MAX_EMBEDDING_INPUTS {
            return Err(TaskError::invalid(format!(
                "`input` holds {} inputs, more than the limit of {MAX_EMBEDDING_INPUTS}",
                inputs.len()
            )));
        }
        let empty = inputs.iter().position(|item| match item {
            EmbeddingItem::Text(text) => text.is_empty(),
            EmbeddingItem::Tokens(tokens) => tokens.is_empty(),
        });
        if let Some(index) = empty {
            return Err(TaskError::invalid(format!(
                "`input[{index}]` is empty: there is nothing to embed"
            )));
        }
        let timeout_ms = integer("timeout_ms", self.timeout_ms, 1, limits.timeout_cap_ms)?
            .unwrap_or(limits.default_timeout_ms);
        Ok(EmbeddingTask {
            inputs,
            dimensions: integer("dimensions", self.dimensions, 1, u64::from(u32::MAX))?
                .map(|d| d as u32),
            normalize: self.normalize.unwrap_or(true),
            timeout: Duration::from_millis(timeout_ms),
            deadline_ms: integer("deadline_ms", self.deadline_ms, 0, i64::MAX as u64)?,
        })
    }
}

/// What keeps `input` from having one of the four shapes, every element of a list like its
/// first (an empty list passes, to be refused as empty).
fn input_shape_problem(input: &Value) -> Option<String> {
    const SHAPES: &str = "a string, a list of strings, a list of token ids or a list of such lists";
    let Value::Array(items) = input else {
        return (!input.is_string())
            .then(|| format!("`input` must be {SHAPES}, not {}", json_kind(input)));
    };
    let unlike = |at: String, expected: &str, found: &Value| {
        let found = match found {
            Value::Number(n) => n.to_string(),
            other => json_kind(other).to_owned(),
        };
        Some(format!("`{at}` must be {expected}, not {found}"))
    };
    let is_token = |v: &Value| v.as_u64().is_some_and(|t| u32::try_from(t).is_ok());
    const TOKEN: &str = "a token id (an integer from 0 to 4294967295)";
    match items.first() {
        None => None,
        Some(Value::String(_)) => {
            let (at, item) = items.iter().enumerate().find(|(_, v)| !v.is_string())?;
            unlike(format!("input[{at}]"), "a string like `input[0]`", item)
        }
        Some(Value::Number(_)) => {
            let (at, item) = items.iter().enumerate().find(|(_, v)| !is_token(v))?;
            unlike(format!("input[{at}]"), TOKEN, item)
        }
        Some(Value::Array(_)) => items.iter().enumerate().find_map(|(at, list)| match list {
            Value::Array(tokens) => {
                let (index, token) = tokens.iter().enumerate().find(|(_, v)| !is_token(v))?;
                unlike(format!("input[{at}][{index}]"), TOKEN, token)
            }
            other => unlike(
                format!("input[{at}]"),
                "a list of token ids like `input[0]`",
                other,
            ),
        }),
        Some(first) => Some(format!(
            "`input` must be {SHAPES}, not a list of {}s",
            json_kind(first)
                .trim_start_matches("a ")
                .trim_start_matches("an ")
        )),
    }
}

/// Reads and checks an embedding task's bytes, as a worker does.
pub fn parse_embedding_task(body: &[u8], limits: &Limits) -> Result<EmbeddingTask, TaskError> {
    EmbeddingBody::from_json(body, limits.max_body_bytes)?.validate(limits)
}

/// Cuts `vector` to `dimensions` (when fewer) and scales it to length 1 when `normalize`:
/// what the task asked of each vector the model gave. A zero vector stays zero.
pub fn shape_vector(mut vector: Vec<f32>, dimensions: Option<u32>, normalize: bool) -> Vec<f32> {
    if let Some(dimensions) = dimensions {
        vector.truncate(dimensions as usize);
    }
    if normalize {
        let norm = vector
            .iter()
            .map(|x| f64::from(*x) * f64::from(*x))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            for x in &mut vector {
                *x = (f64::from(*x) / norm) as f32;
            }
        }
    }
    vector
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn limits() -> Limits {
        Limits {
            max_body_bytes: 1 << 20,
            ..crate::protocol::parse::tests::limits()
        }
    }

    fn parse(json: &str) -> Result<EmbeddingTask, TaskError> {
        parse_embedding_task(json.as_bytes(), &limits())
    }

    fn refusal(json: &str) -> String {
        let error = parse(json).expect_err(json);
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{json}");
        error.message
    }

    #[test]
    fn each_input_shape_gives_its_inputs() {
        let one = parse(r#"{"input": "a rabbit"}"#).unwrap();
        assert_eq!(one.inputs, vec![EmbeddingItem::Text("a rabbit".into())]);
        assert!(one.normalize, "normalized by default");
        let texts = parse(r#"{"input": ["a", "b"], "normalize": false}"#).unwrap();
        assert_eq!(texts.inputs.len(), 2);
        assert!(!texts.normalize);
        let tokens = parse(r#"{"input": [2, 17, 4]}"#).unwrap();
        assert_eq!(tokens.inputs, vec![EmbeddingItem::Tokens(vec![2, 17, 4])]);
        let lists = parse(r#"{"input": [[2], [3, 4]], "dimensions": 64}"#).unwrap();
        assert_eq!(lists.inputs.len(), 2);
        assert_eq!(lists.dimensions, Some(64));
    }

    #[test]
    fn hostile_inputs_are_refused_by_name() {
        assert!(refusal(r#"{"prompt": "x"}"#).contains("`input` is required"));
        assert!(refusal(r#"{"input": 7}"#).contains("not a number"));
        assert!(refusal(r#"{"input": {"a": 1}}"#).contains("not an object"));
        assert!(refusal(r#"{"input": []}"#).contains("at least one"));
        assert!(refusal(r#"{"input": ["a", ""]}"#).contains("`input[1]` is empty"));
        assert!(refusal(r#"{"input": [[1], []]}"#).contains("`input[1]` is empty"));
        assert_eq!(
            refusal(r#"{"input": ["a", 2]}"#),
            "`input[1]` must be a string like `input[0]`, not 2"
        );
        assert_eq!(
            refusal(r#"{"input": [-1]}"#),
            "`input[0]` must be a token id (an integer from 0 to 4294967295), not -1"
        );
        assert!(refusal(r#"{"input": [[1], [2, 1.5]]}"#)
            .starts_with("`input[1][1]` must be a token id"));
        assert!(refusal(r#"{"input": [[1], "a"]}"#)
            .starts_with("`input[1]` must be a list of token ids"));
        assert!(refusal(r#"{"input": [4294967296]}"#).contains("not 4294967296"));
        assert!(refusal(r#"{"input": [true]}"#).ends_with("not a list of booleans"));
        assert!(refusal(r#"{"input": "a", "dimensions": 0}"#).contains("`dimensions`"));
        assert!(refusal(r#"{"input": "a", "version": 2}"#).contains("version 2"));
        let many = serde_json::json!({"input": vec!["x"; MAX_EMBEDDING_INPUTS + 1]});
        assert!(refusal(&many.to_string()).contains("more than the limit of 2048"));
    }

    #[test]
    fn a_body_travels_as_it_was_built() {
        let body = EmbeddingBody {
            version: Some(1),
            input: EmbeddingInput::Texts(vec!["a".into(), "b".into()]),
            dimensions: Some(8),
            normalize: None,
            timeout_ms: None,
            deadline_ms: None,
        };
        let read = EmbeddingBody::from_json(&body.to_bytes(), 1 << 20).unwrap();
        assert_eq!(read, body);
    }

    #[test]
    fn vectors_are_cut_then_scaled_to_length_one() {
        let shaped = shape_vector(vec![3.0, 4.0, 12.0], Some(2), true);
        assert_eq!(shaped, vec![0.6, 0.8]);
        assert_eq!(shape_vector(vec![3.0, 4.0], None, false), vec![3.0, 4.0]);
        assert_eq!(shape_vector(vec![0.0, 0.0], None, true), vec![0.0, 0.0]);
    }
}
