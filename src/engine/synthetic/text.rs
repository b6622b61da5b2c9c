//! The synthetic engine's made-up text: one word per token at `[engine.synthetic]`'s pace,
//! seeded like a model's (same seed, same words), cut at stop sequences (an end that may
//! begin one held back from the stream), bounded by `max_tokens` and the context, and the
//! refusal of what only a model can answer.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::super::text_bytes::longest_suffix_prefix;
use super::super::{Delta, Generation};
use crate::config::SyntheticSettings;
use crate::protocol::{ErrorCode, FinishReason, Input, Task, TaskError};

/// The words made-up text is drawn from.
const WORDS: [&str; 16] = [
    "the", "warren", "rabbit", "queue", "runs", "under", "a", "quiet", "field", "and", "every",
    "burrow", "keeps", "its", "own", "path",
];

/// The made-up completion of `task`, at `pace`, its words sent to `stream` as they come.
pub(super) async fn generate(
    task: &Task,
    stream: Option<&mpsc::UnboundedSender<Delta>>,
    pace: &SyntheticSettings,
    context: u32,
) -> Result<Generation, TaskError> {
    refuse_what_needs_a_model(task)?;
    let prompt_tokens = prompt_tokens(&task.input);
    let room = context.saturating_sub(prompt_tokens);
    if room == 0 {
        return Err(TaskError::new(
            ErrorCode::PromptTooLong,
            format!("the prompt's {prompt_tokens} tokens fill the context of {context}"),
        ));
    }
    let (limit, limited) = match (task.max_tokens, task.default_max_tokens) {
        (Some(asked), _) if asked > room => {
            return Err(TaskError::new(
                ErrorCode::ContextLengthExceeded,
                format!("the prompt's {prompt_tokens} tokens and max_tokens {asked} do not fit in the context of {context}"),
            ))
        }
        (Some(asked), _) => (asked, true),
        (None, Some(default)) => (default.min(room), true),
        (None, None) if pace.tokens > room => (room, true),
        (None, None) => (pace.tokens, false),
    };
    let mut words = match task.sampling.seed {
        Some(seed) => fastrand::Rng::with_seed(u64::from(seed)),
        None if task.sampling.temperature == 0.0 => fastrand::Rng::with_seed(0),
        None => fastrand::Rng::new(),
    };
    let mut jitter = fastrand::Rng::new();
    let started = Instant::now();
    tokio::time::sleep(jittered(
        Duration::from_millis(pace.first_token_ms),
        pace.jitter,
        &mut jitter,
    ))
    .await;
    let prompt_time = started.elapsed();
    let per_token = Duration::from_secs_f64(1.0 / pace.tokens_per_second);
    let (mut text, mut completion_tokens, mut finish_reason) = (String::new(), 0, None);
    // Bytes of `text` streamed so far: an end that may begin a stop string is held back.
    let mut streamed = 0;
    while completion_tokens < limit {
        if completion_tokens > 0 {
            tokio::time::sleep(jittered(per_token, pace.jitter, &mut jitter)).await;
        }
        text.push(' ');
        text.push_str(WORDS[words.usize(..WORDS.len())]);
        completion_tokens += 1;
        let stop_at = task.stop.iter().filter_map(|s| text.find(s.as_str())).min();
        if let Some(at) = stop_at {
            text.truncate(at);
            finish_reason = Some(FinishReason::Stop);
        }
        let last = finish_reason.is_some() || completion_tokens == limit;
        let held = match last {
            true => 0,
            false => task
                .stop
                .iter()
                .map(|stop| longest_suffix_prefix(text.as_bytes(), stop.as_bytes()))
                .max()
                .unwrap_or(0),
        };
        // The words are ASCII: every byte is a character boundary.
        let ready = text.len() - held;
        if let (Some(stream), true) = (stream, ready > streamed) {
            let _ = stream.send(Delta {
                text: text[streamed..ready].to_owned(),
                logprobs: Vec::new(),
                tool_calls: Vec::new(),
            });
            streamed = ready;
        }
        if finish_reason.is_some() {
            break;
        }
    }
    let finish_reason = finish_reason.unwrap_or(if limited {
        FinishReason::Length
    } else {
        FinishReason::Stop
    });
    Ok(Generation {
        text,
        tool_calls: Vec::new(),
        finish_reason,
        prompt_tokens,
        cached_prompt_tokens: 0,
        completion_tokens,
        logprobs: None,
        slot_wait: Duration::ZERO,
        prompt_time,
        generation_time: started.elapsed().saturating_sub(prompt_time),
    })
}

/// Refuses the fields whose answer only a model can give.
fn refuse_what_needs_a_model(task: &Task) -> Result<(), TaskError> {
    let asked = [
        ("json_schema or grammar", task.constraint.is_some()),
        ("tools", !task.tools.is_empty()),
        ("logprobs", task.logprobs.is_some()),
        ("logit_bias", !task.sampling.logit_bias.is_empty()),
    ];
    match asked.iter().find(|(_, given)| *given) {
        Some((field, _)) => Err(TaskError::new(
            ErrorCode::InvalidRequest,
            format!("`{field}` needs a model: this worker runs the synthetic engine (engine.backend = \"synthetic\")"),
        )),
        None => Ok(()),
    }
}

/// A prompt's tokens as the synthetic engine counts them: a token per four bytes of text.
fn prompt_tokens(input: &Input) -> u32 {
    let bytes = match input {
        Input::Prompt(prompt) => prompt.len(),
        Input::Messages(messages) => messages.iter().map(|m| m.content.len() + 4).sum(),
    };
    u32::try_from(bytes.div_ceil(4).max(1)).unwrap_or(u32::MAX)
}

/// `base`, longer or shorter by up to `share` of it at random.
fn jittered(base: Duration, share: f64, rng: &mut fastrand::Rng) -> Duration {
    base.mul_f64(1.0 + share * (rng.f64() * 2.0 - 1.0))
}

#[cfg(test)]
#[path = "text_tests.rs"]
pub(super) mod tests;
