//! Scans of raw logits for the best tokens: the greedy pick (the largest logit, the first one
//! on ties, as llama.cpp's greedy sampler takes it) and the k best, which are all a draw whose
//! sampler chain starts with top-k ever looks at.
//!
//! With a vocabulary of 262k tokens each is a scan of a megabyte per sequence per step, and at
//! 16 slots a plain compare-and-branch loop (or llama.cpp's chain, which first copies every
//! logit into a candidate array) costs a few percent of a CPU step. So the scans are written
//! for the compiler to vectorise: the maximum of each block of logits is taken lane by lane
//! without branches, and only what can still win is looked at again.

use std::cmp::Ordering;

/// Logits compared side by side: several SIMD registers' worth, whatever the target's width.
const LANES: usize = 16;

/// Logits per block; the winning block is scanned a second time.
const BLOCK: usize = 1024;

/// The index of the largest logit, the first one on ties. NaN never wins; where no logit is
/// above negative infinity (or there are none) the pick is token 0, as a scan that keeps the
/// first strictly larger logit would leave it.
pub(super) fn argmax(logits: &[f32]) -> i32 {
    let mut best_block = 0;
    let mut best = f32::NEG_INFINITY;
    for (index, block) in logits.chunks(BLOCK).enumerate() {
        let largest = largest(block);
        if largest > best {
            best = largest;
            best_block = index;
        }
    }
    if best == f32::NEG_INFINITY {
        return 0;
    }
    let start = best_block * BLOCK;
    let within = logits[start..]
        .iter()
        .position(|&logit| logit == best)
        .unwrap_or(0);
    i32::try_from(start + within).unwrap_or(0)
}

/// The `k` best tokens as (id, logit), most likely first, the lower id first on equal
/// logits; NaN never taken. Fewer when the logits hold fewer than `k` numbers.
pub(super) fn top_k(logits: &[f32], k: usize) -> Vec<(i32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    // The k-th largest block maximum: k blocks each hold a logit at least this large, so the
    // k best are all at or above it.
    let mut maxima: Vec<f32> = logits.chunks(BLOCK).map(largest).collect();
    let floor = if maxima.len() >= k {
        *maxima
            .select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a))
            .1
    } else {
        f32::NEG_INFINITY
    };
    let mut kept = Vec::with_capacity(2 * k);
    for (chunk_index, chunk) in logits.chunks(LANES).enumerate() {
        // Branch-free across the chunk, so most chunks cost one vector compare.
        if !chunk
            .iter()
            .fold(false, |hit, &logit| hit | (logit >= floor))
        {
            continue;
        }
        for (offset, &logit) in (chunk_index * LANES..).zip(chunk) {
            if logit >= floor {
                kept.push((i32::try_from(offset).unwrap_or(i32::MAX), logit));
            }
        }
    }
    // NaN is never kept, so the comparison is total; -0 and +0 are equal, as in `argmax`.
    let most_likely_first = |a: &(i32, f32), b: &(i32, f32)| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(Ordering::Equal)
            .then(a.0.cmp(&b.0))
    };
    // With fewer blocks than k the floor is no help and every number is kept: select the k
    // best first, so the sort is of k, not of the vocabulary.
    if kept.len() > k {
        kept.select_nth_unstable_by(k - 1, most_likely_first);
        kept.truncate(k);
    }
    kept.sort_unstable_by(most_likely_first);
    kept
}

/// The largest logit of a block, NaN ignored (negative infinity when nothing is larger).
fn largest(block: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = block.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &logit) in lanes.iter_mut().zip(chunk) {
            // A select, not `f32::max`: it maps onto one SIMD max instruction, and a NaN
            // logit leaves the lane as it was.
            *lane = if logit > *lane { logit } else { *lane };
        }
    }
    let mut largest = f32::NEG_INFINITY;
    for &logit in lanes.iter().chain(chunks.remainder()) {
        if logit > largest {
            largest = logit;
        }
    }
    largest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: the first logit strictly larger than everything before it.
    fn first_largest(logits: &[f32]) -> i32 {
        let mut best = 0;
        let mut best_logit = f32::NEG_INFINITY;
        for (index, &logit) in logits.iter().enumerate() {
            if logit > best_logit {
                best = index;
                best_logit = logit;
            }
        }
        best as i32
    }

    /// The definition of the k best: every number sorted, most likely first, lower id first.
    fn sorted_best(logits: &[f32], k: usize) -> Vec<(i32, f32)> {
        let mut all: Vec<(i32, f32)> = (0..)
            .zip(logits.iter().copied())
            .filter(|(_, logit)| !logit.is_nan())
            .collect();
        all.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    #[test]
    fn takes_the_largest_logit_and_the_first_on_ties() {
        assert_eq!(argmax(&[0.5, 2.0, -1.0, 2.0]), 1);
        assert_eq!(argmax(&[-3.0, -2.0, -7.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 0.0]), 1);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY, f32::NAN]), 0);
        assert_eq!(argmax(&[1.0, f32::INFINITY, f32::INFINITY]), 1);
    }

    #[test]
    fn agrees_with_the_plain_scan_across_blocks_lanes_and_remainders() {
        // A deterministic spread of values with many exact ties, NaNs and infinities, at
        // lengths around the lane and block sizes and a vocabulary's size.
        let mut state = 0x9e37_79b9_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for len in [1, 15, 16, 17, 1023, 1024, 1025, 3000, 262_144] {
            for _ in 0..20 {
                let logits: Vec<f32> = (0..len)
                    .map(|_| match next() % 100 {
                        0 => f32::NAN,
                        1 => f32::NEG_INFINITY,
                        _ => (next() % 64) as f32 - 32.0,
                    })
                    .collect();
                assert_eq!(argmax(&logits), first_largest(&logits), "length {len}");
                for k in [1, 2, 40, 300] {
                    assert_eq!(
                        top_k(&logits, k),
                        sorted_best(&logits, k),
                        "length {len}, k {k}"
                    );
                }
            }
        }
        let mut rising: Vec<f32> = (0..5000).map(|i| i as f32).collect();
        assert_eq!(argmax(&rising), 4999);
        rising[4999] = f32::INFINITY;
        rising[17] = f32::INFINITY;
        assert_eq!(argmax(&rising), 17);
        assert_eq!(
            top_k(&rising, 3),
            vec![(17, f32::INFINITY), (4999, f32::INFINITY), (4998, 4998.0)]
        );
        assert_eq!(top_k(&rising, 0), vec![]);
        assert_eq!(top_k(&[f32::NAN, 2.0], 5), vec![(1, 2.0)]);
        assert_eq!(top_k(&[f32::NAN; 3], 2), vec![]);
        assert_eq!(top_k(&[-0.0, 0.0], 1), vec![(0, -0.0)]);
        // More wanted than there are blocks: every number is a candidate.
        let long: Vec<f32> = (0..4096).map(|i| (i % 7) as f32).collect();
        assert_eq!(top_k(&long, 300), sorted_best(&long, 300));
    }
}
