//! One task's state while it holds a slot: its prompt (read in chunks), its position in the
//! KV cache, the token to decode next, its sampler, its limits, and the text generated so
//! far ([`GeneratedText`]: stop strings, tool calls, streaming).
//!
//! It decides when a sequence is finished; it does not call llama.cpp's decode (the runner
//! does, for all sequences at once or, batch-invariant, alone).

use std::time::{Duration, Instant};

use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use super::generated_text::GeneratedText;
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
    text: GeneratedText,
    /// Alternatives per token when the task asked for log probabilities.
    logprobs: Option<usize>,
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
            text: GeneratedText::new(start.stream, start.stops, start.tools),
            logprobs: start.logprobs,
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
        self.text.keeps_special(token)
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
        if self.text.append(piece, logprob) {
            return Step::Finished(FinishReason::Stop);
        }
        if self.generated >= self.max_tokens || self.n_past + 1 >= self.context_limit {
            return Step::Finished(FinishReason::Length);
        }
        self.pending = token;
        self.text.stream_safe_text();
        Step::Continue
    }

    /// Sends the completion to the caller, after the last streamed text.
    pub(super) fn finish(self, reason: FinishReason) {
        let done = self.text.finish(reason);
        let generation = Generation {
            text: done.text,
            tool_calls: done.tool_calls,
            finish_reason: done.finish_reason,
            prompt_tokens: self.prompt.len() as u32,
            cached_prompt_tokens: self.reused as u32,
            completion_tokens: self.generated,
            logprobs: self.logprobs.map(|_| done.logprobs),
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
