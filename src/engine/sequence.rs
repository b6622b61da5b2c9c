//! One task's state while it holds a slot: its prompt (read in chunks), its position in the
//! KV cache, the token to decode next, its sampler, and the text generated so far with
//! stop-sequence, limit and streaming logic.
//!
//! It decides when a sequence is finished and what text may be streamed; it does not call
//! llama.cpp's decode (the runner does, for all sequences at once or, batch-invariant, alone).

use std::time::{Duration, Instant};

use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use super::generated_text::{find_bytes, longest_suffix_prefix, utf8_text};
use super::sampling::TokenPicker;
use super::tool_output::ToolOutput;
use crate::engine::{Delta, Generation};
use crate::protocol::{FinishReason, TaskError, TokenLogprob};

/// What a sequence contributes to the batch being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InBatch {
    /// Nothing (its prompt waits for room in a later batch).
    Nothing,
    /// Part of its prompt, not the last token.
    PromptPart,
    /// The end of its prompt: its first token is sampled after this decode.
    PromptEnd,
    /// Its pending token: its next token is sampled after this decode.
    NextToken,
}

/// A sequence waiting for another slot to write the prompt prefix it will start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Follow {
    /// The slot being read.
    pub slot: usize,
    /// Its sequence's admission number (the slot may hold another one by then).
    pub admission: u64,
    /// Prompt tokens to copy.
    pub prefix: usize,
}

/// A task in slot `seq_id`.
pub(super) struct Sequence {
    /// llama.cpp sequence id, equal to the slot index.
    pub seq_id: i32,
    /// Which admission this is (unique for the engine's life).
    pub admission: u64,
    /// Set while it waits for another slot's prompt prefix; it reads nothing meanwhile.
    pub follow: Option<Follow>,
    /// Prompt tokens.
    pub prompt: Vec<LlamaToken>,
    /// Prompt tokens already put in a batch (from the start: those whose cells were reused).
    pub prompt_done: usize,
    /// Leading prompt tokens whose KV cells came from the prefix cache.
    reused: usize,
    /// Generated tokens whose KV cells have been written (each after its decode).
    decoded: Vec<LlamaToken>,
    /// Next KV position to fill while generating.
    pub n_past: i32,
    /// Sampled token waiting to be decoded at `n_past`.
    pub pending: LlamaToken,
    /// Index of this sequence's logits in the batch being decoded.
    pub batch_index: i32,
    /// What this sequence has in the batch being decoded.
    pub in_batch: InBatch,
    /// How this task picks its tokens on the host.
    pub picker: TokenPicker,
    /// Whether its tokens are chosen on the device instead (its slot's attached chain).
    pub on_device: bool,
    /// Decoded in batches of its own (`batch_invariant`, the task's or the engine's).
    pub alone: bool,
    reply: oneshot::Sender<Result<Generation, TaskError>>,
    stream: Option<mpsc::UnboundedSender<Delta>>,
    streamed: usize,
    text: Vec<u8>,
    /// Alternatives per token when the task asked for log probabilities.
    logprobs: Option<usize>,
    /// One entry per generated token (end of generation aside), with `token_ends`: where
    /// each token's bytes end in `text` (before a stop string cut it).
    token_logprobs: Vec<TokenLogprob>,
    token_ends: Vec<usize>,
    /// Entries already sent with streamed text.
    logprobs_streamed: usize,
    stops: Vec<String>,
    tools: Option<ToolOutput>,
    max_tokens: u32,
    context_limit: i32,
    generated: u32,
    admitted: Instant,
    deadline: Instant,
    timeout: Duration,
    slot_wait: Duration,
    prompt_time: Duration,
    generation_started: Option<Instant>,
}

/// The outcome of appending one sampled token.
pub(super) enum Step {
    /// Keep generating; decode `pending` next.
    Continue,
    /// Done, for this reason.
    Finished(FinishReason),
}

/// Everything a sequence is created from.
pub(super) struct SequenceStart {
    pub seq_id: i32,
    pub admission: u64,
    pub prompt: Vec<LlamaToken>,
    /// Leading prompt tokens already in the slot's KV cells.
    pub reused: usize,
    pub follow: Option<Follow>,
    pub reply: oneshot::Sender<Result<Generation, TaskError>>,
    pub stream: Option<mpsc::UnboundedSender<Delta>>,
    pub logprobs: Option<usize>,
    pub picker: TokenPicker,
    pub on_device: bool,
    pub alone: bool,
    pub stops: Vec<String>,
    /// Reads the output into content and tool calls, for a task whose tools may be called.
    pub tools: Option<ToolOutput>,
    pub max_tokens: u32,
    pub context_limit: i32,
    pub timeout: Duration,
    pub slot_wait: Duration,
}

impl Sequence {
    /// A sequence admitted now, its prompt not read yet.
    pub(super) fn new(start: SequenceStart) -> Sequence {
        let admitted = Instant::now();
        Sequence {
            seq_id: start.seq_id,
            admission: start.admission,
            follow: start.follow,
            prompt: start.prompt,
            prompt_done: start.reused,
            reused: start.reused,
            decoded: Vec::new(),
            n_past: 0,
            pending: LlamaToken(0),
            batch_index: -1,
            in_batch: InBatch::Nothing,
            picker: start.picker,
            on_device: start.on_device,
            alone: start.alone,
            reply: start.reply,
            stream: start.stream,
            streamed: 0,
            text: Vec::new(),
            logprobs: start.logprobs,
            token_logprobs: Vec::new(),
            token_ends: Vec::new(),
            logprobs_streamed: 0,
            stops: start.stops,
            tools: start.tools,
            max_tokens: start.max_tokens,
            context_limit: start.context_limit,
            generated: 0,
            admitted,
            deadline: admitted + start.timeout,
            timeout: start.timeout,
            slot_wait: start.slot_wait,
            prompt_time: Duration::ZERO,
            generation_started: None,
        }
    }

    /// Whether `token` is a special token to render as its text (a tool-call marker).
    pub(super) fn keeps_special(&self, token: LlamaToken) -> bool {
        self.tools
            .as_ref()
            .is_some_and(|tools| tools.preserves(token))
    }

    /// Whether part of the prompt is still to be read.
    pub(super) fn is_reading_prompt(&self) -> bool {
        self.prompt_done < self.prompt.len()
    }

    /// Whether the task's caller stopped waiting (the delivery was cancelled).
    pub(super) fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    /// Whether the task's time is up.
    pub(super) fn is_past_deadline(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// The task's `timeout_ms`.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Its slot's cells now hold the first `reused` prompt tokens (copied from another slot):
    /// reading goes on from there.
    pub(super) fn start_from(&mut self, reused: usize) {
        self.follow = None;
        self.reused = reused;
        self.prompt_done = reused;
    }

    /// KV cells this sequence holds: its prompt read so far (reused included) and the
    /// generated tokens decoded.
    pub(super) fn cells_in_cache(&self) -> usize {
        self.prompt_done + self.decoded.len()
    }

    /// The prompt tokens whose KV cells have been written (the batch being built aside).
    pub(super) fn prompt_in_cache(&self) -> &[LlamaToken] {
        &self.prompt[..self.prompt_done]
    }

    /// The pending token's cells have been written: it moves one position on.
    pub(super) fn next_token_decoded(&mut self) {
        self.decoded.push(self.pending);
        self.n_past += 1;
    }

    /// Every token whose KV cells this sequence wrote or reused, in position order: what its
    /// slot holds once it ends.
    pub(super) fn tokens_in_cache(&self) -> Vec<LlamaToken> {
        // Tokens are generated only after the whole prompt is read, so this is contiguous.
        let mut tokens = self.prompt_in_cache().to_vec();
        tokens.extend_from_slice(&self.decoded);
        tokens
    }

    /// The prompt has been read: generation starts with the token sampled from its end.
    pub(super) fn prompt_read(&mut self) {
        self.n_past = self.prompt.len() as i32;
        self.prompt_time = self.admitted.elapsed();
        self.generation_started = Some(Instant::now());
    }

    /// How many alternatives per token the task wants with its log probabilities, if any.
    pub(super) fn logprobs_wanted(&self) -> Option<usize> {
        self.logprobs
    }

    /// Appends a sampled token (already turned into bytes by the caller, with its log
    /// probability when the task asked for it). `is_end` tells whether the token ends the
    /// text (end of generation).
    pub(super) fn push(
        &mut self,
        token: LlamaToken,
        piece: &[u8],
        is_end: bool,
        logprob: Option<TokenLogprob>,
    ) -> Step {
        if is_end {
            return Step::Finished(FinishReason::Stop);
        }
        self.generated += 1;
        let before = self.text.len();
        self.text.extend_from_slice(piece);
        if let Some(logprob) = logprob {
            self.token_logprobs.push(logprob);
            self.token_ends.push(self.text.len());
        }
        if let Some(cut) = self.find_stop(before) {
            self.text.truncate(cut);
            return Step::Finished(FinishReason::Stop);
        }
        if let Some(tools) = &self.tools {
            if tools.ends_at(&String::from_utf8_lossy(&self.text)) {
                return Step::Finished(FinishReason::Stop);
            }
        }
        if self.generated >= self.max_tokens || self.n_past + 1 >= self.context_limit {
            return Step::Finished(FinishReason::Length);
        }
        self.pending = token;
        self.stream_safe_text();
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

    /// Streams the text that can no longer change: not the tail that might still begin a
    /// stop sequence, and never half a UTF-8 character.
    fn stream_safe_text(&mut self) {
        let Some(stream) = &self.stream else {
            return;
        };
        let held_back = self
            .stops
            .iter()
            .map(|stop| longest_suffix_prefix(&self.text, stop.as_bytes()))
            .max()
            .unwrap_or(0);
        let safe_end = self.text.len() - held_back;
        if safe_end <= self.streamed {
            return;
        }
        let fresh = &self.text[self.streamed..safe_end];
        let valid = match std::str::from_utf8(fresh) {
            Ok(text) => text,
            // Stop at the first incomplete or invalid character; the rest goes out at the end.
            Err(e) => std::str::from_utf8(&fresh[..e.valid_up_to()]).unwrap_or_default(),
        };
        if let Some(tools) = &mut self.tools {
            // The parser re-reads all the text so far and says what is new.
            self.streamed += valid.len();
            let so_far = std::str::from_utf8(&self.text[..self.streamed]).unwrap_or_default();
            if let Some(delta) = tools.advance(so_far) {
                let _ = stream.send(delta);
            }
            return;
        }
        if !valid.is_empty() {
            self.streamed += valid.len();
            let completed = self.token_ends[self.logprobs_streamed..]
                .iter()
                .take_while(|&&end| end <= self.streamed)
                .count();
            let from = self.logprobs_streamed;
            self.logprobs_streamed += completed;
            let _ = stream.send(Delta {
                text: valid.to_owned(),
                logprobs: self.token_logprobs[from..from + completed].to_vec(),
                tool_calls: Vec::new(),
            });
        }
    }

    /// How many tokens the final text of `len` bytes holds: those starting inside it (the
    /// last may reach past it when a stop string begins inside that token) and any empty
    /// ones at its end.
    fn tokens_in_text(&self, len: usize) -> usize {
        let mut start = 0;
        self.token_ends
            .iter()
            .take_while(|&&end| {
                let kept = start < len || end <= len;
                start = end;
                kept
            })
            .count()
    }

    /// Sends the completion to the caller, after the last streamed text.
    pub(super) fn finish(mut self, reason: FinishReason) {
        let mut text = utf8_text(std::mem::take(&mut self.text));
        let mut reason = reason;
        let mut tool_calls = Vec::new();
        if let Some(mut tools) = self.tools.take() {
            let (answer, delta) = tools.finish(&text, reason);
            if let Some(stream) = self.stream.take() {
                if !delta.text.is_empty() || !delta.tool_calls.is_empty() {
                    let _ = stream.send(delta);
                }
            }
            text = answer.content;
            reason = answer.finish_reason;
            tool_calls = answer.calls;
        }
        let mut logprobs = std::mem::take(&mut self.token_logprobs);
        logprobs.truncate(self.tokens_in_text(text.len()));
        if let Some(stream) = self.stream.take() {
            let rest = text.get(self.streamed..).unwrap_or_default();
            let unsent = logprobs.get(self.logprobs_streamed..).unwrap_or_default();
            if !rest.is_empty() || !unsent.is_empty() {
                let _ = stream.send(Delta {
                    text: rest.to_owned(),
                    logprobs: unsent.to_vec(),
                    tool_calls: Vec::new(),
                });
            }
        }
        let generation = Generation {
            text,
            tool_calls,
            finish_reason: reason,
            prompt_tokens: self.prompt.len() as u32,
            cached_prompt_tokens: self.reused as u32,
            completion_tokens: self.generated,
            logprobs: self.logprobs.map(|_| logprobs),
            slot_wait: self.slot_wait,
            prompt_time: self.prompt_time,
            generation_time: self
                .generation_started
                .map_or(Duration::ZERO, |started| started.elapsed()),
        };
        // The caller may have stopped waiting; then nobody needs the result.
        let _ = self.reply.send(Ok(generation));
    }

    /// Sends a failure to the caller.
    pub(super) fn fail(self, error: TaskError) {
        let _ = self.reply.send(Err(error));
    }
}
