//! The greedy pick over raw logits: the index of the largest logit, the first one on ties, as
//! llama.cpp's greedy sampler takes it.
//!
//! With a vocabulary of 262k tokens this is a scan of a megabyte per sequence per step, and
//! at 16 slots a plain compare-and-branch loop costs a few percent of a CPU step. So the scan
//! is written for the compiler to vectorise: the maximum of each block of logits is taken
//! lane by lane without branches, and only the block holding the overall maximum is scanned
//! again for its first index.

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
            }
        }
        let mut rising: Vec<f32> = (0..5000).map(|i| i as f32).collect();
        assert_eq!(argmax(&rising), 4999);
        rising[4999] = f32::INFINITY;
        rising[17] = f32::INFINITY;
        assert_eq!(argmax(&rising), 17);
    }
}
