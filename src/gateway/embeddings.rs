//! `POST /v1/embeddings`: OpenAI's embeddings request becomes one embedding task (contract
//! v1's embedding body) published to `topology.embeddings_queue`, where workers with
//! `engine.role = "embed"` take it; the reply's vectors come back as OpenAI's list of
//! embedding objects, as floats or as base64 (little-endian float32, as OpenAI sends them).
//! Every path ends in a response: the vectors, an error reply, a full queue (429), no queue
//! (503: no embed worker has declared it), a lost broker (503) or the timeout (504).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::client::{Answer, ClientError};
use crate::gateway::errors::ApiError;
use crate::gateway::{admission, Shared};
use crate::protocol::{EmbeddingBody, Reply, ReplyStatus};

/// The fields of OpenAI's embeddings request; `user` is taken and not used.
const FIELDS: [&str; 5] = ["input", "model", "encoding_format", "dimensions", "user"];

/// How the vectors are sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JSON arrays of numbers.
    Float,
    /// Base64 of the little-endian float32 bytes.
    Base64,
}

/// A checked embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The task body to publish.
    pub body: EmbeddingBody,
    /// The model asked for.
    pub model: String,
    /// How to send the vectors.
    pub encoding: Encoding,
    /// Characters of text input (tokens count as one each), for the rate limit's estimate.
    pub input_chars: usize,
}

/// Reads OpenAI's request: unknown fields refused by name, `input` checked as a worker would.
pub fn parse_request(body: &[u8], limits: &crate::protocol::Limits) -> Result<Request, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}"), None))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid("the body must be a JSON object", None));
    };
    // `null` counts as absent, as for every other endpoint.
    let unknown = fields
        .iter()
        .find(|(k, v)| !v.is_null() && !FIELDS.contains(&k.as_str()));
    if let Some((unknown, _)) = unknown {
        return Err(ApiError::invalid(
            format!(
                "`{unknown}` is not supported: /v1/embeddings takes {}",
                FIELDS.join(", ")
            ),
            Some(unknown.clone()),
        ));
    }
    let model = match fields.get("model") {
        Some(Value::String(model)) => model.clone(),
        _ => {
            return Err(ApiError::invalid(
                "`model` is required (a string)",
                Some("model".into()),
            ))
        }
    };
    let encoding = match fields.get("encoding_format") {
        None | Some(Value::Null) => Encoding::Float,
        Some(Value::String(f)) if f == "float" => Encoding::Float,
        Some(Value::String(f)) if f == "base64" => Encoding::Base64,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("`encoding_format` must be \"float\" or \"base64\", not {other}"),
                Some("encoding_format".into()),
            ))
        }
    };
    let mut task = Map::new();
    task.insert("version".into(), json!(1));
    for name in ["input", "dimensions"] {
        if let Some(value) = fields.get(name) {
            task.insert(name.into(), value.clone());
        }
    }
    let bytes = Value::Object(task).to_string();
    let body = EmbeddingBody::from_json(bytes.as_bytes(), limits.max_body_bytes)
        .map_err(ApiError::refused_task)?;
    body.validate(limits).map_err(ApiError::refused_task)?;
    let input_chars = match &body.input {
        crate::protocol::EmbeddingInput::Text(t) => t.chars().count(),
        crate::protocol::EmbeddingInput::Texts(ts) => ts.iter().map(|t| t.chars().count()).sum(),
        crate::protocol::EmbeddingInput::Tokens(ids) => ids.len() * 4,
        crate::protocol::EmbeddingInput::TokenLists(l) => l.iter().map(|ids| ids.len() * 4).sum(),
    };
    Ok(Request {
        body,
        model,
        encoding,
        input_chars,
    })
}

/// OpenAI's response for `reply`'s vectors.
pub fn response(model: &str, encoding: Encoding, reply: &Reply) -> Result<Value, ApiError> {
    let vectors = reply
        .embeddings
        .as_ref()
        .ok_or_else(|| ApiError::internal("the worker's reply holds no embeddings"))?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = match encoding {
                Encoding::Float => json!(vector.iter().map(|x| shortest(*x)).collect::<Vec<_>>()),
                Encoding::Base64 => {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens = reply.usage.map_or(0, |u| u.prompt_tokens);
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

/// `x` as the f64 of its shortest decimal: a JSON number holds an f64, and an f32 widened as
/// it is prints with 17 digits (`0.1` as `0.10000000149011612`), twice the text for nothing;
/// the shortest decimal reads back as the same f32.
fn shortest(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// `POST /v1/embeddings`.
pub async fn create(
    State(app): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(app, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn serve(
    app: Arc<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = app.caller(&headers, body)?;
    let mut request = parse_request(&caller.body, &app.limits)?;
    request.body.deadline_ms = Some(app.deadline_ms());
    // The task as published, read as the worker reads it: the deadline adds a few bytes,
    // which a body just under `limits.max_body_bytes` cannot take.
    let bytes = request.body.to_bytes();
    EmbeddingBody::from_json(&bytes, app.limits.max_body_bytes).map_err(ApiError::refused_task)?;
    let model = app.models.reply_name(&request.model).to_owned();
    let queue = app.embeddings_queue.as_str();
    let tokens = admission::token_estimate(request.input_chars, Some(0));
    let mut charge = app
        .admit(&caller, queue, &model, tokens)
        .await
        .map_err(|e| match e.param.as_deref() {
            // The limit's own words name a completion's `max_tokens`; here it is the input.
            Some("max_tokens") => ApiError::invalid(
                format!(
                    "the input counts {tokens} tokens (its characters / 4), more than the tokens \
                     per minute allowed: send fewer or shorter inputs"
                ),
                Some("input".into()),
            ),
            _ => e,
        })?;
    let rate_headers = charge.headers().to_vec();
    let id = format!("emb-{}", uuid::Uuid::new_v4().simple());
    let (task_id, bytes) = (id.as_str(), bytes.as_slice());
    let published = app
        .broker_link
        .publish_guarded(&id, app.metrics.clone(), |client| async move {
            client
                .submit_to_queue(task_id, bytes, queue)
                .await
                .map_err(|e| publish_error(queue, e))
        })
        .await;
    let (pending, mut guard) = charge.refund_unless(published).await?;
    let deadline = Instant::now() + app.request_timeout;
    let Answer { reply, .. } = tokio::time::timeout_at(deadline.into(), pending.reply())
        .await
        .map_err(|_| ApiError::timed_out(app.request_timeout))??;
    guard.disarm();
    if let Some(usage) = reply.usage {
        charge.settle(usage.prompt_tokens).await;
    }
    if reply.status == ReplyStatus::Error {
        return Err(ApiError::of_failed_reply(&reply));
    }
    let body = response(&model, request.encoding, &reply)?;
    let mut response = Json(body).into_response();
    admission::add_rate_headers(&mut response, &rate_headers);
    Ok(response)
}

/// A publish to an embeddings queue nobody declared means no embed worker ever ran.
pub fn publish_error(queue: &str, error: ClientError) -> ApiError {
    match error {
        ClientError::Unroutable(_) => ApiError::unavailable(format!(
            "no worker embeds: the queue `{queue}` does not exist (start a worker with engine.role = \"embed\")"
        )),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{EmbeddingInput, Timings, Usage};

    fn limits() -> crate::protocol::Limits {
        crate::config::Settings::defaults().task_limits()
    }

    fn refused(body: &str) -> Value {
        parse_request(body.as_bytes(), &limits())
            .unwrap_err()
            .body()
    }

    #[test]
    fn openai_requests_become_embedding_bodies() {
        let request = parse_request(
            br#"{"input": ["a", "bc"], "model": "m", "encoding_format": "base64", "dimensions": 8, "user": "u"}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(
            request.body.input,
            EmbeddingInput::Texts(vec!["a".into(), "bc".into()])
        );
        assert_eq!(request.body.dimensions, Some(8));
        assert_eq!(request.encoding, Encoding::Base64);
        assert_eq!(request.input_chars, 3);
    }

    #[test]
    fn bad_requests_are_refused_by_name() {
        let unknown = refused(r#"{"input": "a", "model": "m", "truncate": true}"#);
        assert_eq!(unknown["error"]["param"], "truncate");
        // `null` counts as absent, as everywhere.
        let nulls = br#"{"input": "a", "model": "m", "truncate": null, "dimensions": null}"#;
        assert!(parse_request(nulls, &limits()).is_ok());
        let format = refused(r#"{"input": "a", "model": "m", "encoding_format": "int8"}"#);
        assert_eq!(format["error"]["param"], "encoding_format");
        let empty = refused(r#"{"input": "", "model": "m"}"#);
        assert!(empty["error"]["message"]
            .as_str()
            .unwrap()
            .contains("empty"));
        let no_model = refused(r#"{"input": "a"}"#);
        assert_eq!(no_model["error"]["param"], "model");
    }

    #[test]
    fn base64_carries_the_same_floats() {
        let reply = Reply {
            version: 1,
            id: None,
            status: ReplyStatus::Ok,
            text: None,
            finish_reason: None,
            usage: Some(Usage {
                prompt_tokens: 5,
                cached_prompt_tokens: 0,
                completion_tokens: 0,
            }),
            timings_ms: Timings::default(),
            model: "m".into(),
            attempt: 1,
            logprobs: None,
            tool_calls: None,
            embeddings: Some(vec![vec![0.5, -1.25]]),
            error: None,
        };
        let floats = response("m", Encoding::Float, &reply).unwrap();
        assert_eq!(floats["data"][0]["embedding"], json!([0.5, -1.25]));
        let tenth = json!([shortest(0.1)]).to_string();
        assert_eq!(
            tenth, "[0.1]",
            "an f32 is written with its shortest decimal"
        );
        assert_eq!(floats["usage"]["total_tokens"], 5);
        let encoded = response("m", Encoding::Base64, &reply).unwrap();
        let text = encoded["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        let back: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(back, vec![0.5, -1.25]);
    }
}
