//! The KV-cell side of prefix reuse: turns a [`Placement`] into llama.cpp calls (copy a
//! sequence's cells, remove those past the reused prefix), starts waiting sequences once the
//! prefix they follow is written, and clears a slot. What to reuse is decided by
//! [`PrefixCache`](crate::engine::prefix::PrefixCache); this only applies it.

use super::Runner;
use crate::engine::prefix::{reusable_whole, Held, Placement};
use crate::engine::sequence::Follow;
use llama_cpp_2::token::LlamaToken;

impl Runner<'_> {
    /// Where `prompt` goes (see [`crate::engine::prefix`]) for a task decoded `alone` or
    /// not; `None` when no slot is free.
    pub(super) fn place(&self, prompt: &[LlamaToken], alone: bool) -> Option<Placement> {
        let free: Vec<usize> = (0..self.slots.len())
            .filter(|&slot| self.slots[slot].is_none())
            .collect();
        let held: Vec<Held<'_>> = (0..self.slots.len())
            .map(|slot| match &self.slots[slot] {
                Some(sequence) => Held {
                    tokens: &sequence.prompt,
                    written: sequence.prompt_in_cache().len(),
                    whole: reusable_whole(
                        self.prefix.whole_chunks(sequence.prompt.len()),
                        sequence.alone,
                        alone,
                    ),
                },
                None => self.prefix.held(slot, alone),
            })
            .collect();
        self.prefix.place(prompt, &free, &held)
    }

    /// Prepares the placement's slot: returns the prompt tokens reused now, or the slot to
    /// follow when the prefix to copy is not written yet.
    pub(super) fn settle(&mut self, placement: Placement) -> (usize, Option<Follow>) {
        let slot = placement.slot;
        let Some(source) = placement.copy_from else {
            self.prefix.forget(slot);
            return (self.trim(slot, placement.reused), None);
        };
        let waiting = self.slots[source]
            .as_ref()
            .filter(|busy| busy.prompt_in_cache().len() < placement.reused)
            .map(|busy| Follow {
                slot: source,
                admission: busy.admission,
                prefix: placement.reused,
            });
        match waiting {
            Some(follow) => {
                self.clear_slot(slot as i32);
                (0, Some(follow))
            }
            None => (self.copy(source, slot, placement.reused), None),
        }
    }

    /// Starts every waiting sequence whose prefix is written now; one whose source ended
    /// first reads its whole prompt.
    pub(super) fn start_followers(&mut self) {
        for slot in 0..self.slots.len() {
            let Some(follow) = self.slots[slot].as_ref().and_then(|s| s.follow) else {
                continue;
            };
            let source = self.slots[follow.slot]
                .as_ref()
                .filter(|s| s.admission == follow.admission);
            let reused = match source {
                Some(source) if source.prompt_in_cache().len() >= follow.prefix => {
                    self.copy(follow.slot, slot, follow.prefix)
                }
                Some(_) => continue,
                None => 0,
            };
            if let Some(sequence) = self.slots[slot].as_mut() {
                sequence.start_from(reused);
            }
        }
    }

    /// Copies `source`'s cells into `target` and keeps the first `prefix` positions; returns
    /// how many are kept (0 if llama.cpp could not).
    fn copy(&mut self, source: usize, target: usize, prefix: usize) -> usize {
        self.clear_slot(target as i32);
        // In one KV cache the cells become shared; with a stream per slot (engine.kv_unified
        // false) llama.cpp copies the whole stream, on the next decode.
        if let Err(e) = self
            .ctx
            .copy_kv_cache_seq(source as i32, target as i32, None, None)
        {
            tracing::warn!(error = %e, "could not copy a sequence's KV cells");
            return 0;
        }
        self.trim(target, prefix)
    }

    /// Removes `slot`'s cells from position `keep` on; returns `keep`, or 0 when the first
    /// `keep` positions are not all there (then the slot is cleared).
    fn trim(&mut self, slot: usize, keep: usize) -> usize {
        let seq_id = slot as i32;
        let trimmed = self
            .ctx
            .clear_kv_cache_seq(Some(slot as u32), Some(keep as u32), None)
            .unwrap_or(false);
        // A sliding-window cache that keeps only the window would have dropped the oldest.
        let complete = keep == 0 || self.ctx.kv_cache_seq_pos_min(seq_id) == 0;
        if trimmed && complete {
            return keep;
        }
        self.clear_slot(seq_id);
        0
    }

    /// Frees every KV cell of `seq_id`; the prefix cache forgets what the slot held.
    pub(super) fn clear_slot(&mut self, seq_id: i32) {
        self.prefix.forget(seq_id as usize);
        if let Err(e) = self.ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None) {
            tracing::warn!(seq_id, error = %e, "could not clear a sequence's KV cache");
        }
    }
}
