//! OpenAI's request shapes and their translation to wire contract v1: a chat or completion
//! request becomes a [`TaskBody`] (its messages as [`super::messages`] says; the way back is
//! [`super::reply`]). Pure values only:
//! no I/O, no broker, so every rule is unit-tested.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::messages::{chat_turn, Message};
use super::{logprobs, Kind};
use crate::gateway::errors::ApiError;
use crate::gateway::format::ResponseFormat;
use crate::gateway::service_tier;
use crate::gateway::unsupported::{self, Endpoint};
use crate::protocol::{TaskBody, Tier, Tool};

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
    /// Every other field ([`unsupported::check_fields`]).
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// The fields of both request kinds; any other goes to `rest`, which
/// [`unsupported::check`] takes or refuses by name.
#[derive(Debug, Clone, Deserialize)]
struct RawRequest {
    model: String,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    prompt: Option<Value>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    response_format: Option<ResponseFormat>,
    /// A GBNF grammar (an extension, as llama.cpp's server takes it; the SDKs send it with
    /// `extra_body`).
    #[serde(default)]
    grammar: Option<String>,
    /// Sampling extensions llama.cpp's server takes too (`extra_body` in the SDKs).
    #[serde(default)]
    top_k: Option<u64>,
    #[serde(default)]
    min_p: Option<f64>,
    #[serde(default)]
    repeat_penalty: Option<f64>,
    /// warren's extension: decode the task alone, so that its text does not depend on the
    /// tasks beside it (the wire contract's `batch_invariant`).
    #[serde(default)]
    batch_invariant: Option<bool>,
    /// Token id to a bias (checked by the worker's rules).
    #[serde(default)]
    logit_bias: Option<serde_json::Map<String, Value>>,
    /// Chat: a boolean; completions: alternatives per token.
    #[serde(default)]
    logprobs: Option<Value>,
    /// Chat: alternatives per token.
    #[serde(default)]
    top_logprobs: Option<Value>,
    /// Chat: functions the model may call.
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    /// OpenAI's tier: `flex` is warren's batch tier ([`service_tier`]).
    #[serde(default)]
    service_tier: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// A request, checked and translated.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The endpoint.
    pub kind: Kind,
    /// The model, as every reply names it (see `Models::reply_name`).
    pub model: String,
    /// The task to publish.
    pub task: TaskBody,
    /// Stream the answer as server-sent events.
    pub stream: bool,
    /// Send a usage chunk before `[DONE]`.
    pub include_usage: bool,
    /// Characters of prompt text, for the token estimate of the rate limit.
    pub prompt_chars: usize,
    /// The priority tier its task goes to.
    pub tier: Tier,
}

/// Refuses by name a field of a tool definition that OpenAI's chat tools do not have: the
/// wire type reads tools leniently (the wire contract tolerates unknown fields).
fn check_tool_fields(body: &Value) -> Result<(), ApiError> {
    let Some(tools) = body.get("tools").and_then(Value::as_array) else {
        return Ok(());
    };
    let unknown = |object: &Map<String, Value>, known: &[&str]| -> Map<String, Value> {
        let unknown = object.iter().filter(|(k, _)| !known.contains(&k.as_str()));
        unknown.map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    for (index, tool) in tools.iter().enumerate() {
        // Anything but a function tool's object is refused, with its type, when the tools are
        // read.
        let Some(tool) = tool.as_object() else {
            continue;
        };
        if tool.get("type").is_some_and(|kind| kind != "function") {
            continue;
        }
        let path = format!("tools[{index}]");
        unsupported::check_fields(&path, &unknown(tool, &["type", "function"]))?;
        if let Some(function) = tool.get("function").and_then(Value::as_object) {
            let fields = unknown(function, &["name", "description", "parameters", "strict"]);
            unsupported::check_fields(&format!("{path}.function"), &fields)?;
        }
    }
    Ok(())
}

/// Parses a request body of `kind`. Any shape error is a 400 naming the field.
pub fn parse_request(kind: Kind, body: &[u8]) -> Result<Request, ApiError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid: {e}"), None))?;
    check_tool_fields(&body)?;
    let raw: RawRequest =
        serde_path_to_error::deserialize(body).map_err(|e| ApiError::bad_shape(&e))?;
    let endpoint = match kind {
        Kind::Chat => Endpoint::Chat,
        Kind::Completion => Endpoint::Completion,
    };
    unsupported::check(endpoint, &raw.rest)?;
    if let Some(options) = &raw.stream_options {
        unsupported::check_fields("stream_options", &options.rest)?;
    }
    let tier = service_tier::tier_of(raw.service_tier.as_deref())?;
    if raw.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(
            "only `n` = 1 is supported",
            Some("n".into()),
        ));
    }
    let json_schema = match raw.response_format {
        Some(format) => format.json_schema("response_format")?,
        None => None,
    };
    if json_schema.is_some() && raw.grammar.is_some() {
        return Err(ApiError::invalid(
            "give at most one of `response_format` (a JSON format) or `grammar`",
            Some("grammar".into()),
        ));
    }
    let logprobs = logprobs::asked(kind, raw.logprobs.as_ref(), raw.top_logprobs.as_ref())?;
    let mut task = TaskBody {
        logprobs,
        json_schema,
        grammar: raw.grammar,
        max_tokens: raw.max_completion_tokens.or(raw.max_tokens),
        temperature: raw.temperature,
        top_p: raw.top_p,
        top_k: raw.top_k,
        min_p: raw.min_p,
        repeat_penalty: raw.repeat_penalty,
        frequency_penalty: raw.frequency_penalty,
        presence_penalty: raw.presence_penalty,
        seed: raw.seed,
        batch_invariant: raw.batch_invariant,
        logit_bias: raw.logit_bias,
        stop: raw.stop.map(|stop| match stop {
            Stop::One(s) => vec![s],
            Stop::Many(list) => list,
        }),
        ..TaskBody::default()
    };
    let prompt_chars;
    match kind {
        Kind::Chat => {
            if raw.prompt.is_some() {
                return Err(ApiError::invalid(
                    "chat completions take `messages`, not `prompt`",
                    Some("prompt".into()),
                ));
            }
            let messages = raw.messages.ok_or_else(|| {
                ApiError::invalid("`messages` is required", Some("messages".into()))
            })?;
            let turns = messages
                .into_iter()
                .enumerate()
                .map(|(i, m)| chat_turn(i, m))
                .collect::<Result<Vec<_>, _>>()?;
            prompt_chars = turns
                .iter()
                .map(crate::protocol::ChatMessage::counted_len)
                .sum::<usize>()
                + raw
                    .tools
                    .as_deref()
                    .map_or(0, crate::protocol::tools::counted_len);
            task.messages = Some(turns);
            task.tools = raw.tools;
            task.tool_choice = raw.tool_choice;
            task.parallel_tool_calls = raw.parallel_tool_calls;
        }
        Kind::Completion => {
            for (field, given) in [
                ("tools", raw.tools.as_ref().is_some_and(|t| !t.is_empty())),
                (
                    "tool_choice",
                    raw.tool_choice.as_ref().is_some_and(|c| c != "none"),
                ),
                ("parallel_tool_calls", raw.parallel_tool_calls.is_some()),
            ] {
                if given {
                    return Err(ApiError::invalid(
                        format!("`{field}` is not supported: tools need chat messages (use /v1/chat/completions)"),
                        Some(field.into()),
                    ));
                }
            }
            if raw.messages.is_some() {
                return Err(ApiError::invalid(
                    "text completions take `prompt`, not `messages`",
                    Some("messages".into()),
                ));
            }
            let prompt = match raw.prompt {
                Some(Value::String(prompt)) => prompt,
                Some(Value::Array(items)) if items.len() == 1 && items[0].is_string() => {
                    items[0].as_str().unwrap_or_default().to_owned()
                }
                Some(_) => return Err(ApiError::invalid(
                    "`prompt` must be a string (lists of prompts and token ids are not supported)",
                    Some("prompt".into()),
                )),
                None => {
                    return Err(ApiError::invalid(
                        "`prompt` is required",
                        Some("prompt".into()),
                    ))
                }
            };
            prompt_chars = prompt.len();
            task.prompt = Some(prompt);
        }
    }
    let stream = raw.stream.unwrap_or(false);
    task.stream = stream.then_some(true);
    Ok(Request {
        kind,
        model: raw.model,
        task,
        stream,
        include_usage: raw.stream_options.is_some_and(|o| o.include_usage),
        prompt_chars,
        tier,
    })
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
