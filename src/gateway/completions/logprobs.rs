//! Log probabilities through OpenAI's interface: the request fields that ask for them (chat:
//! `logprobs: true` with `top_logprobs`; completions: `logprobs` N; responses: `include`
//! `message.output_text.logprobs` with `top_logprobs`) become the task's `logprobs`, and a
//! reply's entries take the endpoint's shape (chat: `{"content": [...]}`, responses: the
//! same list in `output_text`; completions: the legacy columns `tokens`, `token_logprobs`,
//! `top_logprobs`, `text_offset`). Pure values only.

use serde_json::{json, Map, Value};

use super::Kind;
use crate::gateway::errors::ApiError;
use crate::protocol::{TokenLogprob, MAX_TOP_LOGPROBS};

/// The task's `logprobs` (alternatives per token) for a request's `logprobs` and
/// `top_logprobs`; `None` when it asks for none.
pub fn asked(
    kind: Kind,
    logprobs: Option<&Value>,
    top_logprobs: Option<&Value>,
) -> Result<Option<u64>, ApiError> {
    let logprobs = logprobs.filter(|v| !v.is_null());
    let top_logprobs = top_logprobs.filter(|v| !v.is_null());
    match kind {
        Kind::Chat => {
            let wanted = match logprobs {
                None => false,
                Some(Value::Bool(wanted)) => *wanted,
                Some(other) => {
                    return Err(ApiError::invalid(
                        format!("`logprobs` must be a boolean, not {other}"),
                        Some("logprobs".into()),
                    ))
                }
            };
            let top = top_logprobs.map(|v| count("top_logprobs", v)).transpose()?;
            match (wanted, top) {
                (true, top) => Ok(Some(top.unwrap_or(0))),
                (false, None) => Ok(None),
                (false, Some(_)) => Err(ApiError::invalid(
                    "`top_logprobs` needs `logprobs`: true",
                    Some("top_logprobs".into()),
                )),
            }
        }
        Kind::Completion => {
            if top_logprobs.is_some() {
                return Err(ApiError::invalid(
                    "completions take `logprobs` (an integer), not `top_logprobs`",
                    Some("top_logprobs".into()),
                ));
            }
            logprobs.map(|v| count("logprobs", v)).transpose()
        }
    }
}

/// The task's `logprobs` for a Responses API request: asked by `include` holding
/// `message.output_text.logprobs`, or by `top_logprobs` (0 ..= 20 alternatives).
pub fn asked_by_response(
    include: &[String],
    top_logprobs: Option<&Value>,
) -> Result<Option<u64>, ApiError> {
    let top = top_logprobs
        .filter(|v| !v.is_null())
        .map(|v| count("top_logprobs", v))
        .transpose()?;
    let included = include.iter().any(|item| item == RESPONSE_LOGPROBS);
    Ok((included || top.is_some()).then(|| top.unwrap_or(0)))
}

/// A count of alternatives per token in `field`: an integer 0 ..= 20.
fn count(field: &str, value: &Value) -> Result<u64, ApiError> {
    match value.as_u64() {
        Some(n) if n <= MAX_TOP_LOGPROBS => Ok(n),
        _ => Err(ApiError::invalid(
            format!("`{field}` must be an integer from 0 to {MAX_TOP_LOGPROBS}, not {value}"),
            Some(field.into()),
        )),
    }
}

/// The `include` item of the Responses API that asks for log probabilities.
pub const RESPONSE_LOGPROBS: &str = "message.output_text.logprobs";

/// The `logprobs` of a choice for `tokens`; `first_offset` is the character offset of the
/// first token in the completion (completions' `text_offset`).
pub fn choice_logprobs(kind: Kind, tokens: &[TokenLogprob], first_offset: usize) -> Value {
    match kind {
        Kind::Chat => json!({"content": entries(tokens), "refusal": null}),
        Kind::Completion => {
            let mut offset = first_offset;
            let mut text_offset = Vec::with_capacity(tokens.len());
            for token in tokens {
                text_offset.push(offset);
                offset += token.token.chars().count();
            }
            json!({
                "tokens": tokens.iter().map(|t| &t.token).collect::<Vec<_>>(),
                "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                "top_logprobs": tokens.iter().map(legacy_top).collect::<Vec<_>>(),
                "text_offset": text_offset,
            })
        }
    }
}

/// The entries as chat and the Responses API's `output_text` list them.
pub fn entries(tokens: &[TokenLogprob]) -> Value {
    Value::Array(tokens.iter().map(chat_entry).collect())
}

/// Characters the tokens span (where the next chunk's `text_offset` starts).
pub fn chars(tokens: &[TokenLogprob]) -> usize {
    tokens.iter().map(|t| t.token.chars().count()).sum()
}

fn chat_entry(token: &TokenLogprob) -> Value {
    json!({
        "token": token.token,
        "logprob": token.logprob,
        "bytes": token.bytes,
        "top_logprobs": token.top_logprobs.iter().map(|top| json!({
            "token": top.token, "logprob": top.logprob, "bytes": top.bytes,
        })).collect::<Vec<_>>(),
    })
}

/// Completions' map of alternative text to log probability (texts that repeat keep the
/// likelier, as they come most likely first).
fn legacy_top(token: &TokenLogprob) -> Value {
    let mut map = Map::new();
    for top in &token.top_logprobs {
        map.entry(top.token.clone()).or_insert(json!(top.logprob));
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TopLogprob;

    fn token(text: &str, logprob: f32, tops: &[(&str, f32)]) -> TokenLogprob {
        TokenLogprob {
            token: text.into(),
            bytes: text.as_bytes().to_vec(),
            logprob,
            top_logprobs: tops
                .iter()
                .map(|(t, lp)| TopLogprob {
                    token: (*t).into(),
                    bytes: t.as_bytes().to_vec(),
                    logprob: *lp,
                })
                .collect(),
        }
    }

    #[test]
    fn chat_asks_with_a_boolean_and_a_count_of_alternatives() {
        let asked_chat = |l: Value, t: Value| asked(Kind::Chat, Some(&l), Some(&t));
        assert_eq!(asked_chat(json!(true), json!(3)).unwrap(), Some(3));
        assert_eq!(asked_chat(json!(true), Value::Null).unwrap(), Some(0));
        assert_eq!(asked_chat(json!(false), Value::Null).unwrap(), None);
        assert_eq!(asked(Kind::Chat, None, None).unwrap(), None);
        let err = asked_chat(json!(false), json!(2)).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("top_logprobs"));
        let err = asked_chat(json!(true), json!(21)).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("top_logprobs"));
        let err = asked_chat(json!(3), Value::Null).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("logprobs"));
    }

    #[test]
    fn completions_ask_with_a_count() {
        let asked_text = |l: Value| asked(Kind::Completion, Some(&l), None);
        assert_eq!(asked_text(json!(0)).unwrap(), Some(0));
        assert_eq!(asked_text(json!(5)).unwrap(), Some(5));
        assert_eq!(asked_text(Value::Null).unwrap(), None);
        for bad in [json!(true), json!(-1), json!(21), json!("2")] {
            let err = asked_text(bad).unwrap_err();
            assert_eq!(err.param.as_deref(), Some("logprobs"));
        }
        let err = asked(Kind::Completion, Some(&json!(1)), Some(&json!(1))).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("top_logprobs"));
    }

    #[test]
    fn responses_ask_with_include_or_top_logprobs() {
        let include = [RESPONSE_LOGPROBS.to_owned()];
        assert_eq!(asked_by_response(&include, None).unwrap(), Some(0));
        assert_eq!(
            asked_by_response(&include, Some(&json!(4))).unwrap(),
            Some(4)
        );
        assert_eq!(asked_by_response(&[], Some(&json!(2))).unwrap(), Some(2));
        assert_eq!(
            asked_by_response(&["reasoning.encrypted_content".into()], None).unwrap(),
            None
        );
        let err = asked_by_response(&include, Some(&json!(21))).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("top_logprobs"));
    }

    #[test]
    fn chat_entries_carry_token_logprob_bytes_and_alternatives() {
        let tokens = [token(" Pa", -0.5, &[(" Pa", -0.5), (" Lo", -1.5)])];
        let value = choice_logprobs(Kind::Chat, &tokens, 0);
        let entry = &value["content"][0];
        assert_eq!(entry["token"], " Pa");
        assert_eq!(entry["logprob"], -0.5);
        assert_eq!(entry["bytes"], json!([32, 80, 97]));
        assert_eq!(entry["top_logprobs"][1]["token"], " Lo");
        assert_eq!(value["refusal"], Value::Null);
    }

    #[test]
    fn completion_columns_line_up_with_character_offsets() {
        let tokens = [
            token("né", -0.25, &[("né", -0.25), ("ne", -2.0), ("né", -3.0)]),
            token("e", -1.0, &[]),
        ];
        let value = choice_logprobs(Kind::Completion, &tokens, 10);
        assert_eq!(value["tokens"], json!(["né", "e"]));
        assert_eq!(value["token_logprobs"], json!([-0.25, -1.0]));
        assert_eq!(value["text_offset"], json!([10, 12]));
        assert_eq!(value["top_logprobs"][0], json!({"né": -0.25, "ne": -2.0}));
        assert_eq!(chars(&tokens), 3);
    }
}
