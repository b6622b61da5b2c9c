//! A task's input as tokens: a raw prompt as it is, chat messages through the model's chat
//! template (from the GGUF, else the configured built-in one). It does not decide where the
//! tokens go; the runner does.

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use crate::protocol::{ErrorCode, Input, TaskError};

/// Tokens of `input` for `model`, rendered with `template` when it is a chat.
pub(super) fn tokenize(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    input: &Input,
) -> Result<Vec<LlamaToken>, TaskError> {
    let vocab = model.vocab();
    let tokens = match input {
        Input::Prompt(prompt) => vocab.tokenize(prompt.as_bytes(), true, false),
        Input::Messages(messages) => {
            let chat = messages
                .iter()
                .map(|m| LlamaChatMessage::new(m.role.as_str().to_owned(), m.content.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TaskError::new(ErrorCode::InvalidRequest, format!("messages: {e}")))?;
            let rendered = model
                .apply_chat_template(template, &chat, true)
                .map_err(|e| {
                    TaskError::new(
                        ErrorCode::Internal,
                        format!("the chat template could not be applied: {e}"),
                    )
                })?;
            vocab.tokenize(rendered.as_bytes(), true, true)
        }
    };
    if tokens.is_empty() {
        return Err(TaskError::new(
            ErrorCode::InvalidRequest,
            "the prompt has no tokens",
        ));
    }
    Ok(tokens)
}
