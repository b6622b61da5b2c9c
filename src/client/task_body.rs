//! A v1 task body as an upstream service writes it: the fields of wire contract v1, each
//! left out when `None` so the worker applies its own default. It only builds JSON; the
//! worker validates every value.

use serde::Serialize;

/// A chat message of a task body (`messages`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTurn {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// What is said.
    pub content: String,
}

/// A v1 task body as an upstream service writes it. Fields left `None` are not sent, so the
/// worker applies its own defaults; the worker validates every value.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaskBody {
    /// Text to continue (exclusive with `messages`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Conversation to answer (exclusive with `prompt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatTurn>>,
    /// Most tokens to generate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// 0 = greedy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    /// Drop tokens less likely than this share of the most likely one's probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    /// Penalty on tokens already in the recent text (1 = none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_penalty: Option<f64>,
    /// OpenAI's frequency penalty, -2 ..= 2 (0 = none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// OpenAI's presence penalty, -2 ..= 2 (0 = none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Seed of the sampler.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Token id (a decimal string) to a bias added to its logit, -100 ..= 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    /// Stop sequences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// A JSON Schema the output must match (exclusive with `grammar`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<serde_json::Value>,
    /// A GBNF grammar the output must match (exclusive with `json_schema`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
    /// Bound on the inference, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Absolute Unix ms after which the task must not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Ask for chunk messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Ask for a `started` message when a worker takes the task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<bool>,
    /// Ask for each token's log probability, with this many alternatives (0 ..= 20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u64>,
}

impl TaskBody {
    /// A task continuing `prompt`.
    pub fn prompt(prompt: impl Into<String>) -> TaskBody {
        TaskBody {
            prompt: Some(prompt.into()),
            ..TaskBody::default()
        }
    }

    /// The body as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings, numbers and lists only: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
