//! OpenAI's Responses API request: a `POST /v1/responses` body becomes a checked
//! [`ResponseRequest`] holding the [`TaskBody`] to publish, refused fields named; a stored
//! conversation can be put before it (`previous_response_id`). Pure values only,
//! unit-tested.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::input::{tool_choice_of, tools_of, turns_of, Input};
use crate::gateway::completions::logprobs;
use crate::gateway::errors::ApiError;
use crate::gateway::format::{TextFormat, TextParam};
use crate::gateway::service_tier;
use crate::gateway::unsupported::{self, Endpoint};
use crate::protocol::{ChatMessage, Role, TaskBody, Tier};

#[derive(Debug, Deserialize)]
struct RawRequest {
    model: String,
    input: Input,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    background: Option<bool>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    include: Option<Vec<String>>,
    #[serde(default)]
    top_logprobs: Option<Value>,
    /// Function tools, in this API's flat shape.
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    /// OpenAI's tier: `flex` is warren's batch tier ([`service_tier`]).
    #[serde(default)]
    service_tier: Option<String>,
    /// Every other field, taken or refused by name ([`unsupported::check`]).
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// A checked `POST /v1/responses` request.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseRequest {
    /// The task to publish.
    pub task: TaskBody,
    /// The model, as the response object names it (see `Models::reply_name`).
    pub model: String,
    /// Answer at once and work in the background.
    pub background: bool,
    /// Answer with typed server-sent events as the text is generated.
    pub stream: bool,
    /// Keep the response (in Redis, for `gateway.state_ttl_s`) for retrieval and for
    /// `previous_response_id`.
    pub store: bool,
    /// The stored response this one continues.
    pub previous_response_id: Option<String>,
    /// Whether the task's first turn is the request's `instructions` (never stored).
    pub has_instructions: bool,
    /// Up to 16 string pairs, returned as given.
    pub metadata: Map<String, Value>,
    /// `metadata.callback_url`: where this response's webhook goes.
    pub callback_url: Option<String>,
    /// The echoed settings of the response object.
    pub echo: Value,
    /// Characters of prompt text, for the rate limit's estimate.
    pub prompt_chars: usize,
    /// The priority tier its task goes to.
    pub tier: Tier,
}

/// Parses a request body; shape errors are 400s naming the field.
pub fn parse_request(body: &[u8]) -> Result<ResponseRequest, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let raw: RawRequest =
        serde_path_to_error::deserialize(&mut json).map_err(|e| ApiError::bad_shape(&e))?;
    unsupported::check(Endpoint::Responses, &raw.rest)?;
    let tier = service_tier::tier_of(raw.service_tier.as_deref())?;
    if raw.store == Some(false) && raw.background == Some(true) {
        return Err(ApiError::invalid(
            "`background` needs `store`: a background response is kept until retrieved",
            Some("store".into()),
        ));
    }
    if raw.stream == Some(true) && raw.background == Some(true) {
        return Err(ApiError::invalid(
            "`stream` together with `background` is not supported yet: retrieve the background \
             response, or stream without `background`",
            Some("stream".into()),
        ));
    }
    let metadata = raw.metadata.unwrap_or_default();
    if metadata.len() > 16 || metadata.values().any(|v| !v.is_string()) {
        return Err(ApiError::invalid(
            "`metadata` holds at most 16 keys, each with a string value",
            Some("metadata".into()),
        ));
    }
    let callback_url = metadata
        .get("callback_url")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut turns = Vec::new();
    if let Some(instructions) = &raw.instructions {
        turns.push(turn(Role::System, instructions.clone()));
    }
    turns_of(raw.input, &mut turns)?;
    let tools = raw.tools.as_deref().map(tools_of).transpose()?;
    let prompt_chars = turns.iter().map(ChatMessage::counted_len).sum::<usize>()
        + tools
            .as_deref()
            .map_or(0, crate::protocol::tools::counted_len);
    let format = raw.text.as_ref().and_then(|text| text.get("format"));
    let json_schema = match raw.text.clone() {
        Some(text) => {
            let text: TextParam = serde_json::from_value(text).map_err(|e| {
                ApiError::invalid(format!("`text` is not valid: {e}"), Some("text".into()))
            })?;
            unsupported::check_fields("text", &text.rest)?;
            match text.format {
                Some(format) => format.json_schema()?,
                None => None,
            }
        }
        None => None,
    };
    let echo = json!({
        "text": {"format": TextFormat::echo(format)},
        "instructions": raw.instructions,
        "max_output_tokens": raw.max_output_tokens,
        "temperature": raw.temperature,
        "top_p": raw.top_p,
        "top_logprobs": raw.top_logprobs,
        "tools": raw.tools.clone().unwrap_or_default(),
        "tool_choice": raw.tool_choice.clone().unwrap_or_else(|| {
            Value::from(if tools.as_ref().is_some_and(|t| !t.is_empty()) { "auto" } else { "none" })
        }),
        "parallel_tool_calls": raw.parallel_tool_calls.unwrap_or(true),
        "service_tier": service_tier::name_of(tier),
        "previous_response_id": raw.previous_response_id.clone(),
    });
    let logprobs = logprobs::asked_by_response(
        raw.include.as_deref().unwrap_or_default(),
        raw.top_logprobs.as_ref(),
    )?;
    Ok(ResponseRequest {
        task: TaskBody {
            messages: Some(turns),
            max_tokens: raw.max_output_tokens,
            temperature: raw.temperature,
            top_p: raw.top_p,
            json_schema,
            logprobs,
            tools,
            tool_choice: raw.tool_choice.as_ref().map(tool_choice_of).transpose()?,
            parallel_tool_calls: raw.parallel_tool_calls,
            stream: raw.stream.filter(|s| *s),
            ..TaskBody::default()
        },
        model: raw.model,
        background: raw.background.unwrap_or(false),
        stream: raw.stream.unwrap_or(false),
        store: raw.store.unwrap_or(true),
        previous_response_id: raw.previous_response_id,
        has_instructions: raw.instructions.is_some(),
        metadata,
        callback_url,
        echo,
        prompt_chars,
        tier,
    })
}

impl ResponseRequest {
    /// Puts the conversation of a stored response (its input, then its output as the
    /// assistant's turn) before this request's input, after its instructions.
    pub fn continue_from(
        &mut self,
        input: Vec<ChatMessage>,
        output: &Value,
    ) -> Result<(), ApiError> {
        let mut earlier = input;
        if let Some(items) = output.as_array() {
            let items = items
                .iter()
                .filter_map(|i| i.as_object().cloned())
                .collect();
            super::input::turns_of(super::input::Input::Items(items), &mut earlier)?;
        }
        // The stored conversation is read again: the rate limit counts it.
        self.prompt_chars += earlier.iter().map(ChatMessage::counted_len).sum::<usize>();
        let turns = self.task.messages.get_or_insert_with(Vec::new);
        let at = usize::from(self.has_instructions).min(turns.len());
        turns.splice(at..at, earlier);
        Ok(())
    }

    /// The conversation to store with the response: its turns without the instructions.
    pub fn conversation(&self) -> Vec<ChatMessage> {
        let turns = self.task.messages.clone().unwrap_or_default();
        turns
            .into_iter()
            .skip(usize::from(self.has_instructions))
            .collect()
    }
}

fn turn(role: Role, content: String) -> ChatMessage {
    ChatMessage::new(role, content)
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
