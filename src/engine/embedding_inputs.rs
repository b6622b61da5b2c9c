//! An embedding task's inputs as token ids, and the refusals only the model can make: text
//! tokenized (with the model's BOS where it wants one), token ids checked against the
//! vocabulary, no input empty or longer than an input may be, `dimensions` no wider than the
//! model's vectors.

use super::embedding_model::EmbeddingModel;
use crate::protocol::{EmbeddingItem, EmbeddingTask, ErrorCode, TaskError};

/// Each input's tokens: text with the model's BOS where it wants one, token ids checked
/// against the vocabulary; none longer than one decode takes. Refuses `dimensions` wider
/// than the model's vectors.
pub(super) fn tokenized(
    task: &EmbeddingTask,
    model: &EmbeddingModel,
    longest_input: usize,
) -> Result<Vec<Vec<i32>>, TaskError> {
    let width = model.width();
    if let Some(dimensions) = task.dimensions {
        if dimensions as usize > width {
            return Err(TaskError::invalid(format!(
                "`dimensions` is {dimensions}, more than the model's {width}"
            )));
        }
    }
    let n_vocab = model.vocabulary_size();
    task.inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let tokens = match input {
                EmbeddingItem::Text(text) => model.tokenize(text).ok_or_else(|| {
                    TaskError::invalid(format!("`input[{index}]` is too long to tokenize"))
                })?,
                EmbeddingItem::Tokens(ids) => ids
                    .iter()
                    .map(|&id| match i32::try_from(id) {
                        Ok(id) if id < n_vocab => Ok(id),
                        _ => Err(TaskError::invalid(format!(
                            "`input[{index}]` holds token id {id}, beyond the model's vocabulary of {n_vocab} tokens"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            if tokens.is_empty() {
                return Err(TaskError::invalid(format!(
                    "`input[{index}]` has no tokens"
                )));
            }
            if tokens.len() > longest_input {
                return Err(TaskError::new(
                    ErrorCode::PromptTooLong,
                    format!(
                        "`input[{index}]` is {} tokens, more than the {} an input may have (engine.context_size)",
                        tokens.len(),
                        longest_input
                    ),
                ));
            }
            Ok(tokens)
        })
        .collect()
}
