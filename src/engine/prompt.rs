//! A task's input as tokens: a raw prompt as it is, chat messages (and tools) through the
//! model's Jinja chat template (from the GGUF, else the configured one) by llama.cpp's chat
//! code, which also gives a tool-using task its grammar and output parser. It does not
//! decide where the tokens go; the runner does.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::chat_template::ChatTemplate;
use super::tools::{render, ToolUse};
use crate::protocol::{ErrorCode, Input, Task, TaskError};

/// A task's prompt, and what its tools need while it generates.
pub(super) struct Prompt {
    /// The tokens to read (one BOS where the model wants one).
    pub tokens: Vec<LlamaToken>,
    /// For a task whose tools the model may call: what it needs while it generates.
    pub tools: Option<ToolUse>,
}

/// Tokens of `task`'s input for `model`, rendered with `template` when it is a chat.
pub(super) fn tokenize(
    model: &LlamaModel,
    template: &ChatTemplate,
    task: &Task,
) -> Result<Prompt, TaskError> {
    let vocab = model.vocab();
    let (tokens, tools) = match &task.input {
        Input::Prompt(prompt) => (vocab.tokenize(prompt.as_bytes(), true, false), None),
        Input::Messages(messages) => {
            let (prompt, tools) = render(template, task, messages, |text| {
                vocab.tokenize(text.as_bytes(), false, true)
            })?;
            (vocab.tokenize(prompt.as_bytes(), true, true), tools)
        }
    };
    if tokens.is_empty() {
        return Err(TaskError::new(
            ErrorCode::InvalidRequest,
            "the prompt has no tokens",
        ));
    }
    Ok(Prompt { tokens, tools })
}
