//! One step of the engine: build a batch of every generating sequence's next token plus as
//! much prompt as fits, decode it, pick each next token and hand it to its sequence.
//!
//! With `engine.batch_invariant` a step is one decode per sequence instead. llama.cpp picks
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
use super::Runner;
use crate::protocol::{ErrorCode, TaskError};

/// Which sequences a decode holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Members {
    /// Every active sequence (the default: one decode per step).
    All,
    /// Only the sequence in this slot (batch-invariant steps).
    Slot(usize),
}

impl Members {
    fn include(self, slot: usize) -> bool {
        match self {
            Members::All => true,
            Members::Slot(only) => only == slot,
        }
    }
}

impl Runner<'_> {
    /// Moves every active sequence one decode on: in one batch, or one batch each when
    /// `engine.batch_invariant` is on.
    pub(super) fn step(&mut self, lap: &mut Lap) {
        self.start_followers();
        if !self.batch_invariant {
            return self.decode(Members::All, lap);
        }
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
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
            if !members.include(slot) || sequence.is_reading_prompt() {
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
            if !members.include(slot) || !sequence.is_reading_prompt() || sequence.follow.is_some()
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
                    self.prefix
                        .keep(slot, sequence.tokens_in_cache(), sequence.prompt.len());
                    sequence.fail(e);
                    continue;
                }
            };
            match self.push(&mut sequence, token) {
                Step::Continue => self.slots[slot] = Some(sequence),
                Step::Finished(reason) => {
                    self.prefix
                        .keep(slot, sequence.tokens_in_cache(), sequence.prompt.len());
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
