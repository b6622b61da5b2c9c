//! Prompt-prefix reuse: what each slot's KV cells still hold after its last task, and where a
//! new prompt should go so that as little of it as possible is read again.
//!
//! A finished task leaves its cells in its slot (its prompt and the tokens it generated). A
//! new task goes to the free slot whose cells share the longest prefix with its prompt, or,
//! when a busy slot's prompt shares a clearly longer one, to the least valuable free slot,
//! where it starts from a copy of that slot's cells: at once if they are written, else as
//! soon as the busy slot has read that far (tasks that arrive together with one long common
//! prefix read it once, not once each). Either way only the rest of the prompt is decoded.
//! The memory is the slots' own context (nothing is allocated for the cache), so it is
//! bounded by `engine.slots × engine.context_size` cells; which slot's cells are given up
//! first is least-recently-used.
//!
//! Pure bookkeeping, tested without llama.cpp; the runner applies a [`Placement`] to the
//! context (remove cells past the reused prefix, copy a sequence) and reports back.

use llama_cpp_2::token::LlamaToken;

use super::chunking::Chunking;

/// A copy between slots moves a whole slot's KV buffer; below this gain in reused tokens,
/// reading them again costs less.
pub(super) const MIN_COPY_GAIN: usize = 32;

/// Where a new prompt goes and how much of it is (or will be) in the KV cache there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placement {
    /// The free slot the task takes.
    pub slot: usize,
    /// Copy this slot's cells into `slot` first (once it has written `reused` of them).
    pub copy_from: Option<usize>,
    /// Leading prompt tokens whose cells are reused; decoding starts at this position.
    pub reused: usize,
}

/// What one slot's cells hold, or will hold.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held<'a> {
    /// The tokens: a free slot's kept tokens, a busy slot's prompt.
    pub tokens: &'a [LlamaToken],
    /// How many of them have their cells written already.
    pub written: usize,
    /// How many leading ones were computed in whole chunks of the prompt they came with:
    /// only those are computed as a cold read of another prompt would (the rest of that
    /// prompt and any generated tokens were decoded in other pieces).
    pub whole: usize,
}

impl<'a> Held<'a> {
    /// Cells all written and all reusable (tests; the cache's own come from `held`).
    #[cfg(test)]
    pub(super) fn kept(tokens: &'a [LlamaToken]) -> Held<'a> {
        Held {
            tokens,
            written: tokens.len(),
            whole: tokens.len(),
        }
    }
}

/// What each slot's cells hold while it has no task, and when it was last used.
pub(super) struct PrefixCache {
    enabled: bool,
    chunking: Chunking,
    kept: Vec<Vec<LlamaToken>>,
    /// Of each slot's kept tokens, those computed in whole chunks ([`Held::whole`]).
    whole: Vec<usize>,
    /// Whether each slot's kept cells were written by decodes of their own task alone.
    written_alone: Vec<bool>,
    last_used: Vec<u64>,
    clock: u64,
}

impl PrefixCache {
    /// Bookkeeping for `slots` slots whose prompts are cut by `chunking`; `enabled: false`
    /// never reuses anything.
    pub(super) fn new(slots: usize, enabled: bool, chunking: Chunking) -> PrefixCache {
        PrefixCache {
            enabled,
            chunking,
            kept: vec![Vec::new(); slots],
            whole: vec![0; slots],
            written_alone: vec![false; slots],
            last_used: vec![0; slots],
            clock: 0,
        }
    }

    /// Where `prompt` should go, given the `free` slots and what every slot's cells hold.
    /// `None` when no slot is free.
    pub(super) fn place(
        &self,
        prompt: &[LlamaToken],
        free: &[usize],
        held: &[Held<'_>],
    ) -> Option<Placement> {
        // Whole chunks only, never the last prompt token (its logits give the first token):
        // the rest is then read as a cold read would (see `chunking`).
        let shared: Vec<usize> = held
            .iter()
            .map(|h| {
                if self.enabled {
                    let shared = common_prefix(h.tokens, prompt).min(h.whole);
                    self.chunking.reusable(shared, prompt.len())
                } else {
                    0
                }
            })
            .collect();
        let shared = |slot: usize| shared.get(slot).copied().unwrap_or(0);
        // Of equal prefixes, the one with the most cells written is ready soonest.
        let written = |slot: usize| held.get(slot).map_or(0, |h| h.written.min(shared(slot)));
        // Most reuse first; among equals the least recently used, so recent prefixes last.
        let own = free
            .iter()
            .copied()
            .max_by_key(|&slot| (shared(slot), std::cmp::Reverse(self.last_used[slot])))?;
        let own_reused = shared(own);
        let best_elsewhere = (0..held.len())
            .filter(|&slot| slot != own)
            .max_by_key(|&slot| (shared(slot), written(slot)))
            .map(|slot| (slot, shared(slot)));
        if let Some((source, reused)) = best_elsewhere {
            if reused >= own_reused + MIN_COPY_GAIN {
                let target = free
                    .iter()
                    .copied()
                    .filter(|&slot| slot != source)
                    .min_by_key(|&slot| (shared(slot), self.last_used[slot]))?;
                return Some(Placement {
                    slot: target,
                    copy_from: Some(source),
                    reused,
                });
            }
        }
        Some(Placement {
            slot: own,
            copy_from: None,
            reused: own_reused,
        })
    }

    /// The slot's task ended; its cells hold `tokens` (positions 0..len), of which the
    /// first `prompt_len` were its prompt, written by decodes of that task alone or not.
    pub(super) fn keep(
        &mut self,
        slot: usize,
        tokens: Vec<LlamaToken>,
        prompt_len: usize,
        alone: bool,
    ) {
        self.clock += 1;
        let whole = self.whole_chunks(prompt_len).min(tokens.len());
        if let (Some(kept), Some(kept_whole)) = (self.kept.get_mut(slot), self.whole.get_mut(slot))
        {
            *kept = if self.enabled { tokens } else { Vec::new() };
            *kept_whole = whole;
            self.written_alone[slot] = alone;
            self.last_used[slot] = self.clock;
        }
    }

    /// Of a prompt of `len` tokens, the leading ones read in whole chunks.
    pub(super) fn whole_chunks(&self, len: usize) -> usize {
        self.chunking.reusable(len, len)
    }

    /// What a free slot's cells hold, as a task decoded `alone` or not may reuse them.
    pub(super) fn held(&self, slot: usize, alone: bool) -> Held<'_> {
        let tokens = self.kept(slot);
        let whole = self.whole.get(slot).copied().unwrap_or(0);
        let written_alone = self.written_alone.get(slot).copied().unwrap_or(false);
        Held {
            tokens,
            written: tokens.len(),
            whole: reusable_whole(whole, written_alone, alone),
        }
    }

    /// The slot's cells were cleared (or can no longer be trusted).
    pub(super) fn forget(&mut self, slot: usize) {
        if let Some(kept) = self.kept.get_mut(slot) {
            kept.clear();
        }
    }

    /// The tokens a free slot's cells hold.
    pub(super) fn kept(&self, slot: usize) -> &[LlamaToken] {
        self.kept.get(slot).map_or(&[], Vec::as_slice)
    }
}

/// Of `whole` cells computed in whole chunks, those a task may reuse: all of them, unless it
/// is decoded alone (batch-invariant) and they were written beside other tasks, whose
/// presence is in their last bits; a cold read of its own would compute them otherwise.
pub(super) fn reusable_whole(whole: usize, written_alone: bool, alone: bool) -> usize {
    if alone && !written_alone {
        0
    } else {
        whole
    }
}

/// Length of the common prefix of `a` and `b`.
pub(super) fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().copied().map(LlamaToken).collect()
    }

    fn long(prefix: i32, len: usize, tail: &[i32]) -> Vec<LlamaToken> {
        let mut ids: Vec<i32> = (0..len as i32).map(|i| prefix * 1000 + i).collect();
        ids.extend_from_slice(tail);
        tokens(&ids)
    }

    fn held(cache: &PrefixCache, slots: usize) -> Vec<Held<'_>> {
        (0..slots).map(|s| cache.held(s, false)).collect()
    }

    #[test]
    fn a_prompt_goes_to_the_free_slot_that_holds_its_longest_prefix() {
        let mut cache = PrefixCache::new(3, true, Chunking::new(1));
        cache.keep(0, tokens(&[1, 2, 9]), usize::MAX, false);
        cache.keep(1, tokens(&[1, 2, 3, 4, 8]), usize::MAX, false);
        let prompt = tokens(&[1, 2, 3, 4, 5, 6]);
        let placement = cache.place(&prompt, &[0, 1, 2], &held(&cache, 3));
        assert_eq!(
            placement,
            Some(Placement {
                slot: 1,
                copy_from: None,
                reused: 4
            })
        );
    }

    #[test]
    fn the_last_prompt_token_is_always_decoded_again() {
        let mut cache = PrefixCache::new(1, true, Chunking::new(1));
        cache.keep(0, tokens(&[1, 2, 3, 4]), usize::MAX, false);
        let placement = cache.place(&tokens(&[1, 2, 3]), &[0], &held(&cache, 1));
        assert_eq!(placement.map(|p| p.reused), Some(2));
    }

    #[test]
    fn a_continuation_reuses_only_the_whole_chunks_of_the_prompt_before_it() {
        // A 10-token prompt read in chunks of 4 ([0,4), [4,8), [8,9), [9]) and 6 generated
        // tokens: a follow-up that starts with all 16 reuses the 8 read in whole chunks.
        let mut cache = PrefixCache::new(1, true, Chunking::new(4));
        let earlier: Vec<i32> = (1..=16).collect();
        cache.keep(0, tokens(&earlier), 10, false);
        let mut follow_up = earlier.clone();
        follow_up.extend([40, 41, 42]);
        let placement = cache.place(&tokens(&follow_up), &[0], &held(&cache, 1));
        assert_eq!(placement.map(|p| p.reused), Some(8));
    }

    #[test]
    fn only_whole_chunks_are_reused() {
        let mut cache = PrefixCache::new(1, true, Chunking::new(4));
        cache.keep(
            0,
            tokens(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
            usize::MAX,
            false,
        );
        let prompt = tokens(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 99]);
        let placement = cache.place(&prompt, &[0], &held(&cache, 1));
        assert_eq!(placement.map(|p| p.reused), Some(8));
        let placement = cache.place(&tokens(&[1, 2, 3, 9]), &[0], &held(&cache, 1));
        assert_eq!(placement.map(|p| p.reused), Some(0));
    }

    #[test]
    fn without_a_match_the_least_recently_used_slot_is_given_up() {
        let mut cache = PrefixCache::new(3, true, Chunking::new(1));
        cache.keep(2, tokens(&[7]), usize::MAX, false);
        cache.keep(0, tokens(&[8]), usize::MAX, false);
        cache.keep(1, tokens(&[9]), usize::MAX, false);
        let placement = cache.place(&tokens(&[5, 6]), &[0, 1, 2], &held(&cache, 3));
        assert_eq!(placement.map(|p| (p.slot, p.reused)), Some((2, 0)));
    }

    #[test]
    fn a_clearly_longer_prefix_in_another_slot_is_copied_into_a_free_one() {
        let mut cache = PrefixCache::new(3, true, Chunking::new(1));
        cache.keep(1, tokens(&[1]), usize::MAX, false);
        cache.keep(2, tokens(&[2]), usize::MAX, false);
        let busy_prompt = long(4, 100, &[]);
        let mut holding = held(&cache, 3);
        holding[0] = Held::kept(&busy_prompt);
        let prompt = long(4, 100, &[55, 56]);
        let placement = cache.place(&prompt, &[1, 2], &holding);
        assert_eq!(
            placement,
            Some(Placement {
                slot: 1,
                copy_from: Some(0),
                reused: 100
            }),
            "slot 1 is the least recently used free slot"
        );
    }

    #[test]
    fn a_small_gain_is_read_again_rather_than_copied() {
        let mut cache = PrefixCache::new(2, true, Chunking::new(1));
        cache.keep(1, long(4, 10, &[]), usize::MAX, false);
        let busy = long(4, 10 + MIN_COPY_GAIN - 1, &[]);
        let mut holding = held(&cache, 2);
        holding[0] = Held::kept(&busy);
        let prompt = long(4, 100, &[]);
        let placement = cache.place(&prompt, &[1], &holding);
        assert_eq!(placement.map(|p| (p.copy_from, p.reused)), Some((None, 10)));
    }

    #[test]
    fn of_two_busy_slots_with_the_prefix_the_one_further_in_its_prompt_is_copied() {
        let cache = PrefixCache::new(3, true, Chunking::new(1));
        let prompt = long(4, 100, &[1]);
        let (reading, waiting) = (long(4, 100, &[2]), long(4, 100, &[3]));
        let holding = vec![
            Held {
                tokens: &waiting,
                written: 0,
                whole: waiting.len(),
            },
            Held {
                tokens: &reading,
                written: 64,
                whole: reading.len(),
            },
            Held::kept(&[]),
        ];
        let placement = cache.place(&prompt, &[2], &holding);
        assert_eq!(
            placement,
            Some(Placement {
                slot: 2,
                copy_from: Some(1),
                reused: 100
            }),
            "tasks that arrive together read their common prefix once"
        );
    }

    #[test]
    fn a_disabled_cache_reuses_nothing_and_keeps_nothing() {
        let mut cache = PrefixCache::new(2, false, Chunking::new(1));
        cache.keep(0, tokens(&[1, 2, 3]), usize::MAX, false);
        assert!(cache.kept(0).is_empty());
        let placement = cache.place(&tokens(&[1, 2, 3, 4]), &[0, 1], &held(&cache, 2));
        assert_eq!(placement.map(|p| (p.copy_from, p.reused)), Some((None, 0)));
    }

    #[test]
    fn no_free_slot_means_no_placement() {
        let cache = PrefixCache::new(1, true, Chunking::new(1));
        assert_eq!(cache.place(&tokens(&[1]), &[], &held(&cache, 1)), None);
    }

    #[test]
    fn a_forgotten_slot_offers_nothing() {
        let mut cache = PrefixCache::new(1, true, Chunking::new(1));
        cache.keep(0, tokens(&[1, 2, 3]), usize::MAX, false);
        cache.forget(0);
        let placement = cache.place(&tokens(&[1, 2, 3, 4]), &[0], &held(&cache, 1));
        assert_eq!(placement.map(|p| p.reused), Some(0));
    }

    #[test]
    fn a_task_decoded_alone_reuses_only_cells_written_alone() {
        let mut cache = PrefixCache::new(2, true, Chunking::new(1));
        cache.keep(0, tokens(&[1, 2, 3]), usize::MAX, false);
        cache.keep(1, tokens(&[1, 2]), usize::MAX, true);
        let prompt = tokens(&[1, 2, 3, 4]);
        let batched = |s| cache.held(s, false);
        let alone = |s| cache.held(s, true);
        let held: Vec<Held<'_>> = (0..2).map(batched).collect();
        let placement = cache.place(&prompt, &[0, 1], &held).unwrap();
        assert_eq!((placement.slot, placement.reused), (0, 3));
        let held: Vec<Held<'_>> = (0..2).map(alone).collect();
        let placement = cache.place(&prompt, &[0, 1], &held).unwrap();
        assert_eq!((placement.slot, placement.reused), (1, 2));
        assert_eq!(reusable_whole(64, true, true), 64);
        assert_eq!(reusable_whole(64, false, false), 64);
    }
}
