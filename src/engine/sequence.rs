//! One task's state while it holds a slot: its position in the KV cache, the token to decode
//! next, its sampler, and the text generated so far with stop-sequence and limit checks.
//!
//! It decides when a sequence is finished; it does not call llama.cpp's decode (the runner
//! does, for all sequences at once).

use std::time::{Duration, Instant};

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::oneshot;

use crate::engine::Generation;
use crate::protocol::{FinishReason, TaskError};

/// A task being generated in slot `seq_id`.
pub struct Sequence {
    /// llama.cpp sequence id, equal to the slot index.
    pub seq_id: i32,
    /// Next KV position to fill.
    pub n_past: i32,
    /// Sampled token waiting to be decoded at `n_past`.
    pub pending: LlamaToken,
    /// Index of this sequence's logits in the last decoded batch.
    pub batch_index: i32,
    /// This task's sampler chain.
    pub sampler: LlamaSampler,
    reply: oneshot::Sender<Result<Generation, TaskError>>,
    text: Vec<u8>,
    stops: Vec<String>,
    max_tokens: u32,
    context_limit: i32,
    generated: u32,
    prompt_tokens: u32,
    deadline: Instant,
    timeout: Duration,
    slot_wait: Duration,
    prompt_time: Duration,
    generation_started: Instant,
}

/// The outcome of appending one sampled token.
pub enum Step {
    /// Keep generating; decode `pending` next.
    Continue,
    /// Done, for this reason.
    Finished(FinishReason),
}

/// Everything a sequence is created from.
pub struct SequenceStart {
    pub seq_id: i32,
    pub reply: oneshot::Sender<Result<Generation, TaskError>>,
    pub sampler: LlamaSampler,
    pub stops: Vec<String>,
    pub max_tokens: u32,
    pub context_limit: i32,
    pub prompt_tokens: u32,
    pub deadline: Instant,
    pub timeout: Duration,
    pub slot_wait: Duration,
    pub prompt_time: Duration,
}

impl Sequence {
    /// A sequence whose prompt has been decoded.
    pub fn new(start: SequenceStart) -> Sequence {
        Sequence {
            seq_id: start.seq_id,
            n_past: start.prompt_tokens as i32,
            pending: LlamaToken(0),
            batch_index: -1,
            sampler: start.sampler,
            reply: start.reply,
            text: Vec::new(),
            stops: start.stops,
            max_tokens: start.max_tokens,
            context_limit: start.context_limit,
            generated: 0,
            prompt_tokens: start.prompt_tokens,
            deadline: start.deadline,
            timeout: start.timeout,
            slot_wait: start.slot_wait,
            prompt_time: start.prompt_time,
            generation_started: Instant::now(),
        }
    }

    /// Whether the task's caller stopped waiting (the delivery was cancelled).
    pub fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    /// Whether the task's time is up.
    pub fn is_past_deadline(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// Appends a sampled token (already turned into bytes by the caller). `is_end` tells
    /// whether the token ends the text (end of generation).
    pub fn push(&mut self, token: LlamaToken, piece: &[u8], is_end: bool) -> Step {
        if is_end {
            return Step::Finished(FinishReason::Stop);
        }
        self.generated += 1;
        let before = self.text.len();
        self.text.extend_from_slice(piece);
        if let Some(cut) = self.find_stop(before) {
            self.text.truncate(cut);
            return Step::Finished(FinishReason::Stop);
        }
        if self.generated >= self.max_tokens || self.n_past + 1 >= self.context_limit {
            return Step::Finished(FinishReason::Length);
        }
        self.pending = token;
        Step::Continue
    }

    /// Earliest start of a stop sequence that ends in the bytes appended after `before`.
    fn find_stop(&self, before: usize) -> Option<usize> {
        let longest = self.stops.iter().map(String::len).max()?;
        let from = before.saturating_sub(longest.saturating_sub(1));
        let window = &self.text[from..];
        self.stops
            .iter()
            .filter_map(|stop| find_bytes(window, stop.as_bytes()))
            .min()
            .map(|at| from + at)
    }

    /// Sends the completion to the caller.
    pub fn finish(self, reason: FinishReason) {
        let generation = Generation {
            text: utf8_text(self.text),
            finish_reason: reason,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.generated,
            slot_wait: self.slot_wait,
            prompt_time: self.prompt_time,
            generation_time: self.generation_started.elapsed(),
        };
        // The caller may have stopped waiting; then nobody needs the result.
        let _ = self.reply.send(Ok(generation));
    }

    /// The task's `timeout_ms`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a failure to the caller.
    pub fn fail(self, error: TaskError) {
        let _ = self.reply.send(Err(error));
    }
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Turns generated bytes into text. A character cut in half by the token limit is dropped
/// rather than replaced; invalid bytes elsewhere become U+FFFD.
pub fn utf8_text(mut bytes: Vec<u8>) -> String {
    if let Err(e) = std::str::from_utf8(&bytes) {
        if e.error_len().is_none() {
            bytes.truncate(e.valid_up_to());
        }
    }
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_at_the_end_is_dropped() {
        let mut bytes = "héllo ".as_bytes().to_vec();
        bytes.extend_from_slice(&"€".as_bytes()[..2]);
        assert_eq!(utf8_text(bytes), "héllo ");
    }

    #[test]
    fn invalid_bytes_in_the_middle_are_replaced() {
        assert_eq!(utf8_text(vec![b'a', 0xff, b'b']), "a\u{fffd}b");
    }

    #[test]
    fn byte_search_finds_the_first_occurrence() {
        assert_eq!(find_bytes(b"abcabc", b"ca"), Some(2));
        assert_eq!(find_bytes(b"ab", b"abc"), None);
    }
}
