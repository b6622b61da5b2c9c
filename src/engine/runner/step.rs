//! One step of the engine: build a batch of every generating sequence's next token plus as
//! much prompt as fits, decode it, pick each next token and hand it to its sequence.
//!
//! A task that asks for `batch_invariant` (or every task, with `engine.batch_invariant`) is
//! decoded alone instead: one decode per such sequence, the others batched. llama.cpp picks
//! a kernel for a matrix product by the batch's height (on a CPU a 4-row GEMM tile for whole
//! groups of rows, a 1-row GEMV for the rest, another tiling from 8 rows), and those kernels
//! round differently, so a row's logits depend on how many other rows share its decode. A
//! decode that holds one sequence has a height fixed by that sequence alone: its prompt
//! pieces (cut at fixed positions, see [`crate::engine::chunking`]) and then one token at a
//! time. With a KV stream per slot its attention spans only its own cells. Nothing a
//! neighbour does reaches its arithmetic, whatever kernels the backend has.

use llama_cpp_2::token::LlamaToken;

use super::super::sequence::{InBatch, Sequence, Step};
use super::super::step_times::{Lap, Phase};
use super::super::watchdog::Heartbeat;
use super::Runner;
use crate::config::EngineSettings;
use crate::protocol::{ErrorCode, TaskError};

/// Which tasks a worker decodes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Invariance {
    /// Every task (`engine.batch_invariant`).
    Every,
    /// Those that ask (`batch_invariant` in the task).
    Asked,
    /// None: in one shared KV cache (`engine.kv_unified`) a token's attention runs over a span
    /// of cells that depends on the other tasks, decoded alone or not.
    Unavailable,
}

impl Invariance {
    pub(super) fn of(settings: &EngineSettings) -> Invariance {
        match (settings.batch_invariant, settings.kv_unified) {
            (true, _) => Invariance::Every,
            (false, false) => Invariance::Asked,
            (false, true) => Invariance::Unavailable,
        }
    }

    /// Whether a task that did or did not ask is decoded alone, or why it cannot be.
    pub(super) fn decodes_alone(self, asked: bool) -> Result<bool, TaskError> {
        match (self, asked) {
            (Invariance::Every, _) => Ok(true),
            (_, false) => Ok(false),
            (Invariance::Asked, true) => Ok(true),
            (Invariance::Unavailable, true) => Err(TaskError::new(
                ErrorCode::InvalidRequest,
                "`batch_invariant` needs a worker with a KV stream per slot: this one shares one \
                 KV cache between its tasks (engine.kv_unified)",
            )),
        }
    }
}

/// Which sequences a decode holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Members {
    /// Every sequence that is not decoded alone.
    Batched,
    /// Only the sequence in this slot (a batch-invariant one).
    Slot(usize),
}

impl Members {
    fn include(self, slot: usize, sequence: &Sequence) -> bool {
        match self {
            Members::Batched => !sequence.alone,
            Members::Slot(only) => only == slot,
        }
    }
}

impl Runner<'_> {
    /// Moves every active sequence one decode on: those decoded alone one batch each, the
    /// others in one batch. Each decode is a round of its own for the `heartbeat`.
    pub(super) fn step(&mut self, lap: &mut Lap, heartbeat: &Heartbeat) {
        self.start_followers();
        if self.slots.iter().flatten().any(|s| !s.alone) {
            heartbeat.round();
            self.decode(Members::Batched, lap);
        }
        for slot in 0..self.slots.len() {
            if self.slots[slot].as_ref().is_some_and(|s| s.alone) {
                heartbeat.round();
                self.decode(Members::Slot(slot), lap);
            }
        }
    }

    /// One decode: the pending token of every generating member, then as much of the members'
    /// prompts as fits, then a sample for every member that has logits in this batch.
    fn decode(&mut self, members: Members, lap: &mut Lap) {
        self.batch.clear();
        for (slot, sequence) in self.slots.iter_mut().enumerate() {
            let Some(sequence) = sequence else {
                continue;
            };
            sequence.in_batch = InBatch::Nothing;
            if !members.include(slot, sequence) || sequence.is_reading_prompt() {
                continue;
            }
            sequence.batch_index = self.batch.n_tokens();
            sequence.in_batch = InBatch::NextToken;
            // The batch holds at least `slots` tokens, so one token per sequence always fits.
            let _ = self
                .batch
                .add(sequence.pending, sequence.n_past, &[sequence.seq_id], true);
        }
        for (slot, sequence) in self.slots.iter_mut().enumerate() {
            let Some(sequence) = sequence else {
                continue;
            };
            let room = self.batch_capacity - self.batch.n_tokens() as usize;
            if room == 0 {
                break;
            }
            if !members.include(slot, sequence)
                || !sequence.is_reading_prompt()
                || sequence.follow.is_some()
            {
                continue;
            }
            let start = sequence.prompt_done;
            let end = self.chunking.piece_end(start, sequence.prompt.len(), room);
            for pos in start..end {
                let is_last = pos + 1 == sequence.prompt.len();
                if is_last {
                    sequence.batch_index = self.batch.n_tokens();
                }
                let _ = self.batch.add(
                    sequence.prompt[pos],
                    pos as i32,
                    &[sequence.seq_id],
                    is_last,
                );
            }
            sequence.prompt_done = end;
            sequence.in_batch = if end == sequence.prompt.len() {
                InBatch::PromptEnd
            } else {
                InBatch::PromptPart
            };
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        lap.to(&self.times, Phase::Schedule);
        let decoded = self.ctx.decode(&mut self.batch);
        lap.to(&self.times, Phase::Decode);
        self.times.stepped(self.batch.n_tokens() as usize);
        if let Err(e) = decoded {
            tracing::error!(error = %e, "llama.cpp decode failed; failing the tasks in the batch");
            for slot in 0..self.slots.len() {
                let in_batch = self.slots[slot]
                    .as_ref()
                    .is_some_and(|s| s.in_batch != InBatch::Nothing);
                if in_batch {
                    if let Some(sequence) = self.release(slot) {
                        // What the failed decode left in these cells is unknown.
                        self.clear_slot(slot as i32);
                        sequence.fail(TaskError::new(
                            ErrorCode::InferenceFailed,
                            format!("llama.cpp decode failed: {e}"),
                        ));
                    }
                }
            }
            return;
        }
        // Every next token first: on a device, the first read waits for the decode's results.
        let mut picked = std::mem::take(&mut self.picked);
        for slot in 0..self.slots.len() {
            let Some(mut sequence) = self.slots[slot].take() else {
                continue;
            };
            match sequence.in_batch {
                InBatch::Nothing | InBatch::PromptPart => {
                    self.slots[slot] = Some(sequence);
                    continue;
                }
                InBatch::PromptEnd => sequence.prompt_read(),
                InBatch::NextToken => sequence.next_token_decoded(),
            }
            let token = self.pick(slot, &mut sequence);
            picked.push((slot, sequence, token));
        }
        lap.to(&self.times, Phase::Sample);
        for (slot, mut sequence, token) in picked.drain(..) {
            let token = match token {
                Ok(token) => token,
                Err(e) => {
                    self.keep_cells(slot, &sequence);
                    sequence.fail(e);
                    continue;
                }
            };
            match self.push(&mut sequence, token) {
                Step::Continue => self.slots[slot] = Some(sequence),
                Step::Finished(reason) => {
                    self.keep_cells(slot, &sequence);
                    sequence.finish(reason);
                }
            }
        }
        self.picked = picked;
        lap.to(&self.times, Phase::Emit);
    }

    /// The sequence's next token, from the last decode: chosen on the device, or by its picker
    /// from the logits.
    fn pick(&mut self, slot: usize, sequence: &mut Sequence) -> Result<LlamaToken, TaskError> {
        if !sequence.on_device {
            return sequence.picker.pick(&self.ctx, sequence.batch_index);
        }
        self.device
            .as_mut()
            .and_then(|device| device.take(&self.ctx, slot, sequence.batch_index))
            .ok_or_else(|| {
                TaskError::new(
                    ErrorCode::InferenceFailed,
                    "llama.cpp's device sampler chose no token",
                )
            })
    }

    /// Appends a sampled token to its sequence, with its log probability if it asked.
    fn push(&self, sequence: &mut Sequence, token: LlamaToken) -> Step {
        let vocab = self.model.vocab();
        if vocab.is_eog(token) {
            return sequence.push(token, &[], true, None);
        }
        let piece = vocab.token_to_piece(token, sequence.keeps_special(token), None);
        // Sequences that want log probabilities are picked on the host: their logits exist.
        let logprob = sequence.logprobs_wanted().map(|top| {
            let logits = self.ctx.get_logits_ith(sequence.batch_index);
            super::super::logprobs::entry(self.model, logits, token, top)
        });
        sequence.push(token, &piece, false, logprob)
    }
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
