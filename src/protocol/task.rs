//! A validated task: what the model continues, how it samples, and its bounds. Produced by
//! [`super::TaskBody::validate`], read by the engine.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::tools::{Tool, ToolCall, ToolChoice};
use super::OutputConstraint;

/// Who speaks in a chat message; on the wire `"system"`, `"user"`, `"assistant"` or `"tool"`
/// (a string and nothing else: serde's own enum reading would also take `{"user": null}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "serde_json::Value")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user's turn.
    User,
    /// The model's earlier turn.
    Assistant,
    /// The result of a tool call the model made.
    Tool,
}

impl Role {
    /// The role's name as the chat template expects it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl TryFrom<serde_json::Value> for Role {
    type Error = &'static str;

    fn try_from(value: serde_json::Value) -> Result<Role, Self::Error> {
        match value.as_str() {
            Some("system") => Ok(Role::System),
            Some("user") => Ok(Role::User),
            Some("assistant") => Ok(Role::Assistant),
            Some("tool") => Ok(Role::Tool),
            _ => Err(r#"one of "system", "user", "assistant", "tool""#),
        }
    }
}

/// One message of a chat task, as on the wire and as validated: `{"role", "content"}`, an
/// assistant's may carry `tool_calls` (its `content` may then be `null`, never absent), a
/// tool's names the call it answers in `tool_call_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What they say (`null` reads as empty).
    #[serde(deserialize_with = "null_as_default")]
    pub content: String,
    /// The calls an assistant message made (`null` reads as none).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message of `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// Its size as a gateway's rate limit counts it, in bytes: its content and its calls'
    /// names and arguments (the model reads them all).
    pub fn counted_len(&self) -> usize {
        let calls: usize = (self.tool_calls.iter())
            .map(|call| call.function.name.len() + call.function.arguments.len())
            .sum();
        self.content.len() + calls
    }
}

/// A value where `null` means empty: OpenAI's assistant messages with tool calls have
/// `content: null`, and SDKs that dump a message whole write `tool_calls: null`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// What the model continues: raw text or a chat rendered with a template.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Raw text, continued as is.
    Prompt(String),
    /// A conversation, rendered with the model's chat template.
    Messages(Vec<ChatMessage>),
}

/// Sampling parameters of a task. `None` means "off" (or the configured default for top_k).
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus sampling in [0, 1] (0 keeps only the most likely token).
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: Option<u32>,
    /// Drop tokens less likely than min_p times the most likely one.
    pub min_p: Option<f32>,
    /// Penalty on repeated tokens; 1.0 = off.
    pub repeat_penalty: Option<f32>,
    /// OpenAI's: lowers a recent token's logit by this much per time it occurred; 0 = off.
    pub frequency_penalty: Option<f32>,
    /// OpenAI's: lowers a recent token's logit by this much once; 0 = off.
    pub presence_penalty: Option<f32>,
    /// Seed of the random sampler; random when absent.
    pub seed: Option<u32>,
    /// OpenAI's: added to a token's logit before anything else (token id, bias), by id.
    pub logit_bias: Vec<(u32, f32)>,
}

/// A validated task, ready for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// What to complete.
    pub input: Input,
    /// Most tokens to generate, as the task asked; `None`: it did not say.
    pub max_tokens: Option<u32>,
    /// The operator's limit for a task that did not say (`limits.default_max_tokens`, else
    /// `limits.max_tokens_cap`); `None`: until the model stops or the context is full. Unlike
    /// an asked `max_tokens`, it is cut to what the context holds, never refused.
    pub default_max_tokens: Option<u32>,
    /// How to pick tokens.
    pub sampling: Sampling,
    /// Stop sequences: generation ends before the first one that appears.
    pub stop: Vec<String>,
    /// What the output must match (`json_schema` or `grammar`), if anything.
    pub constraint: Option<OutputConstraint>,
    /// Bound on one attempt's inference.
    pub timeout: Duration,
    /// Absolute deadline (Unix time, ms) after which the task must not start.
    pub deadline_ms: Option<u64>,
    /// Send the text in chunk messages as it is generated.
    pub stream: bool,
    /// Send a `started` message to `reply_to` when a worker takes the task to its engine.
    pub progress: bool,
    /// Decode it alone: its text does not depend on the tasks sharing the worker (see
    /// `engine.batch_invariant`, which does this for every task).
    pub batch_invariant: bool,
    /// Report each token's log probability, with this many most likely alternatives.
    pub logprobs: Option<u32>,
    /// Functions the model may call (empty: none).
    pub tools: Vec<Tool>,
    /// Whether it may, must or must not call one (`None` when `tools` is empty).
    pub tool_choice: ToolChoice,
    /// Whether one reply may hold several calls.
    pub parallel_tool_calls: bool,
}
