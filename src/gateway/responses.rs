//! OpenAI's response shapes for a worker's answer: a [`Reply`] becomes a `chat.completion` or
//! `text_completion` object, and streamed pieces become `chat.completion.chunk` events.
//! Pure values only, unit-tested.

use serde_json::{json, Value};

use super::openai::Kind;
use crate::protocol::{FinishReason, Reply};

fn finish_reason(reason: Option<FinishReason>) -> Value {
    match reason {
        Some(FinishReason::Stop) => json!("stop"),
        Some(FinishReason::Length) => json!("length"),
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
pub fn response(kind: Kind, id: &str, created: u64, reply: &Reply) -> Value {
    let text = reply.text.clone().unwrap_or_default();
    let finish = finish_reason(reply.finish_reason);
    match kind {
        Kind::Chat => json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": reply.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish,
            }],
            "usage": usage(reply),
        }),
        Kind::Completion => json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": reply.model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
            "usage": usage(reply),
        }),
    }
}

/// What a streamed event carries.
pub enum Piece<'a> {
    /// The opening chunk (chat: `delta.role`).
    Start,
    /// New text.
    Text(&'a str),
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
    let choice = |text: Option<&str>, role: bool, finish: Value| match kind {
        Kind::Chat => {
            let mut delta = serde_json::Map::new();
            if role {
                delta.insert("role".into(), json!("assistant"));
            }
            if let Some(text) = text {
                delta.insert("content".into(), json!(text));
            }
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
        }
        Kind::Completion => json!({
            "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish
        }),
    };
    let (choices, usage_value) = match piece {
        Piece::Start => (vec![choice(Some(""), true, Value::Null)], Value::Null),
        Piece::Text(text) => (vec![choice(Some(text), false, Value::Null)], Value::Null),
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
            error: None,
        }
    }

    #[test]
    fn a_reply_maps_to_openai_objects() {
        let chat = response(Kind::Chat, "chatcmpl-1", 7, &reply(" Paris"));
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["choices"][0]["message"]["content"], " Paris");
        assert_eq!(chat["choices"][0]["finish_reason"], "length");
        assert_eq!(chat["usage"]["total_tokens"], 8);
        assert_eq!(chat["model"], "Gemma 3 270m");
        let text = response(Kind::Completion, "cmpl-1", 7, &reply(" Paris"));
        assert_eq!(text["choices"][0]["text"], " Paris");
        assert_eq!(text["object"], "text_completion");
    }

    #[test]
    fn streamed_chunks_open_with_the_role_and_close_with_the_reason_then_usage() {
        let r = reply("ab");
        let start = chunk(Kind::Chat, "c", 1, "m", Piece::Start);
        assert_eq!(start["choices"][0]["delta"]["role"], "assistant");
        let text = chunk(Kind::Chat, "c", 1, "m", Piece::Text("ab"));
        assert_eq!(text["choices"][0]["delta"]["content"], "ab");
        assert!(text["choices"][0]["delta"].get("role").is_none());
        let finish = chunk(Kind::Chat, "c", 1, "m", Piece::Finish(&r));
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        let usage = chunk(Kind::Chat, "c", 1, "m", Piece::Usage(&r));
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 3);
        let text = chunk(Kind::Completion, "c", 1, "m", Piece::Text("ab"));
        assert_eq!(text["choices"][0]["text"], "ab");
    }
}
