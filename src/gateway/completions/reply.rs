//! OpenAI's response shapes for a worker's answer: a [`Reply`] becomes a `chat.completion` or
//! `text_completion` object, and streamed pieces become `chat.completion.chunk` events.
//! Pure values only, unit-tested.

use serde_json::{json, Value};

use super::logprobs::choice_logprobs;
use super::Kind;
use crate::protocol::{FinishReason, Reply, TokenLogprob, ToolCallDelta};

fn finish_reason(reason: Option<FinishReason>) -> Value {
    match reason {
        Some(FinishReason::Stop) => json!("stop"),
        Some(FinishReason::Length) => json!("length"),
        Some(FinishReason::ToolCalls) => json!("tool_calls"),
        None => Value::Null,
    }
}

fn usage(reply: &Reply) -> Value {
    let (prompt, cached, completion) = reply.usage.map_or((0, 0, 0), |u| {
        (u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens)
    });
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// The response object for a successful reply.
pub fn response(kind: Kind, id: &str, created: u64, model: &str, reply: &Reply) -> Value {
    let text = reply.text.clone().unwrap_or_default();
    let finish = finish_reason(reply.finish_reason);
    let logprobs = reply
        .logprobs
        .as_deref()
        .map_or(Value::Null, |tokens| choice_logprobs(kind, tokens, 0));
    match kind {
        Kind::Chat => json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": chat_message(text, reply),
                "logprobs": logprobs,
                "finish_reason": finish,
            }],
            "usage": usage(reply),
        }),
        Kind::Completion => json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
            "usage": usage(reply),
        }),
    }
}

/// A chat reply's message: with tool calls, `content` is null when the model said nothing
/// besides them, as OpenAI sends it.
fn chat_message(text: String, reply: &Reply) -> Value {
    match &reply.tool_calls {
        Some(calls) if !calls.is_empty() => json!({
            "role": "assistant",
            "content": if text.is_empty() { Value::Null } else { Value::from(text) },
            "tool_calls": calls,
        }),
        _ => json!({"role": "assistant", "content": text}),
    }
}

/// What a streamed event carries.
pub enum Piece<'a> {
    /// The opening chunk (chat: `delta.role`, and `delta.content` empty, or null when the
    /// turn may be tool calls, as OpenAI's).
    Start {
        /// Whether the model may call tools.
        calls_possible: bool,
    },
    /// New text, and the log probabilities of its tokens when the request asked for them
    /// (with the character offset of the first one in the completion).
    Text(&'a str, Option<(&'a [TokenLogprob], usize)>),
    /// Pieces of tool calls (chat only), with any new text before them.
    ToolCalls(&'a str, &'a [ToolCallDelta]),
    /// The closing chunk with `finish_reason`.
    Finish(&'a Reply),
    /// The usage chunk (`choices` empty).
    Usage(&'a Reply),
}

/// One streamed chunk object.
pub fn chunk(kind: Kind, id: &str, created: u64, model: &str, piece: Piece<'_>) -> Value {
    let object = match kind {
        Kind::Chat => "chat.completion.chunk",
        Kind::Completion => "text_completion",
    };
    let choice = |text: Option<&str>, role: bool, finish: Value| {
        let logprobs = match &piece {
            Piece::Text(_, Some((tokens, offset))) => choice_logprobs(kind, tokens, *offset),
            _ => Value::Null,
        };
        choice_object(kind, text, role, finish, logprobs)
    };
    let (choices, usage_value) = match piece {
        Piece::Start { calls_possible } => {
            let mut start = choice(Some(""), true, Value::Null);
            if calls_possible && kind == Kind::Chat {
                // A client that takes any non-null content for text would see an empty
                // answer before the calls.
                start["delta"]["content"] = Value::Null;
            }
            (vec![start], Value::Null)
        }
        Piece::Text(text, _) => (vec![choice(Some(text), false, Value::Null)], Value::Null),
        Piece::ToolCalls(text, calls) => {
            let mut delta = serde_json::Map::new();
            if !text.is_empty() {
                delta.insert("content".into(), json!(text));
            }
            delta.insert("tool_calls".into(), json!(calls));
            let choice =
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": null});
            (vec![choice], Value::Null)
        }
        Piece::Finish(reply) => (
            vec![choice(None, false, finish_reason(reply.finish_reason))],
            Value::Null,
        ),
        Piece::Usage(reply) => (Vec::new(), usage(reply)),
    };
    let mut value = json!({
        "id": id, "object": object, "created": created, "model": model, "choices": choices,
    });
    if !usage_value.is_null() {
        value["usage"] = usage_value;
    }
    value
}

/// A streamed chunk's choice.
fn choice_object(
    kind: Kind,
    text: Option<&str>,
    role: bool,
    finish: Value,
    logprobs: Value,
) -> Value {
    match kind {
        Kind::Chat => {
            let mut delta = serde_json::Map::new();
            if role {
                delta.insert("role".into(), json!("assistant"));
            }
            if let Some(text) = text {
                delta.insert("content".into(), json!(text));
            }
            json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
        }
        Kind::Completion => json!({
            "index": 0, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": finish
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ReplyStatus, Timings, Usage};

    fn reply(text: &str) -> Reply {
        Reply {
            version: 1,
            id: Some("x".into()),
            status: ReplyStatus::Ok,
            text: Some(text.into()),
            finish_reason: Some(FinishReason::Length),
            usage: Some(Usage {
                prompt_tokens: 5,
                cached_prompt_tokens: 0,
                completion_tokens: 3,
            }),
            timings_ms: Timings::default(),
            model: "Gemma 3 270m".into(),
            attempt: 1,
            logprobs: None,
            tool_calls: None,
            embeddings: None,
            error: None,
        }
    }

    #[test]
    fn a_reply_maps_to_openai_objects() {
        let chat = response(Kind::Chat, "chatcmpl-1", 7, "gemma3-270m", &reply(" Paris"));
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["choices"][0]["message"]["content"], " Paris");
        assert_eq!(chat["choices"][0]["finish_reason"], "length");
        assert_eq!(chat["usage"]["total_tokens"], 8);
        assert_eq!(
            chat["model"], "gemma3-270m",
            "the served name, not the worker's"
        );
        let text = response(
            Kind::Completion,
            "cmpl-1",
            7,
            "gemma3-270m",
            &reply(" Paris"),
        );
        assert_eq!(text["choices"][0]["text"], " Paris");
        assert_eq!(text["object"], "text_completion");
    }

    #[test]
    fn streamed_chunks_open_with_the_role_and_close_with_the_reason_then_usage() {
        let r = reply("ab");
        let start = chunk(
            Kind::Chat,
            "c",
            1,
            "m",
            Piece::Start {
                calls_possible: false,
            },
        );
        assert_eq!(start["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(start["choices"][0]["delta"]["content"], "");
        let calls = chunk(
            Kind::Chat,
            "c",
            1,
            "m",
            Piece::Start {
                calls_possible: true,
            },
        );
        assert_eq!(
            calls["choices"][0]["delta"],
            json!({"role": "assistant", "content": null})
        );
        let text = chunk(Kind::Chat, "c", 1, "m", Piece::Text("ab", None));
        assert_eq!(text["choices"][0]["delta"]["content"], "ab");
        assert!(text["choices"][0]["delta"].get("role").is_none());
        let finish = chunk(Kind::Chat, "c", 1, "m", Piece::Finish(&r));
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        let usage = chunk(Kind::Chat, "c", 1, "m", Piece::Usage(&r));
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 3);
        let text = chunk(Kind::Completion, "c", 1, "m", Piece::Text("ab", None));
        assert_eq!(text["choices"][0]["text"], "ab");
    }

    #[test]
    fn log_probabilities_appear_in_the_choice_only_when_the_reply_has_them() {
        let plain = response(Kind::Chat, "c", 1, "gemma3-270m", &reply("a"));
        assert_eq!(plain["choices"][0]["logprobs"], Value::Null);
        let mut with = reply("a");
        with.logprobs = Some(vec![TokenLogprob {
            token: "a".into(),
            bytes: vec![97],
            logprob: -0.25,
            top_logprobs: Vec::new(),
        }]);
        let chat = response(Kind::Chat, "c", 1, "gemma3-270m", &with);
        assert_eq!(
            chat["choices"][0]["logprobs"]["content"][0]["logprob"],
            -0.25
        );
        let text = response(Kind::Completion, "c", 1, "gemma3-270m", &with);
        assert_eq!(text["choices"][0]["logprobs"]["tokens"], json!(["a"]));
        let tokens = with.logprobs.as_deref().unwrap_or_default();
        let piece = chunk(
            Kind::Completion,
            "c",
            1,
            "m",
            Piece::Text("a", Some((tokens, 4))),
        );
        assert_eq!(piece["choices"][0]["logprobs"]["text_offset"], json!([4]));
        let piece = chunk(Kind::Chat, "c", 1, "m", Piece::Text("a", Some((tokens, 4))));
        assert_eq!(piece["choices"][0]["logprobs"]["content"][0]["token"], "a");
    }
}
