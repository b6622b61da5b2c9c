//! Builds one task's llama.cpp sampler chain from its [`Sampling`] parameters.
//!
//! The vocabulary of small modern models is large (262k tokens for Gemma 3), so the chain is
//! ordered to do little work per token: greedy is a plain argmax (no sort, no softmax), and
//! when sampling, top-k runs first so that top-p, min-p and the softmax see k tokens, not all.

use llama_cpp_2::sampling::LlamaSampler;

use crate::protocol::Sampling;

/// llama.cpp's "choose a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// How many recent tokens the repeat penalty looks at (llama.cpp's default).
const REPEAT_PENALTY_WINDOW: i32 = 64;

/// The sampler chain for `sampling`.
pub fn sampler_for(sampling: &Sampling) -> LlamaSampler {
    let mut chain = Vec::with_capacity(6);
    if let Some(penalty) = sampling.repeat_penalty.filter(|p| *p != 1.0) {
        chain.push(LlamaSampler::penalties(
            0,
            REPEAT_PENALTY_WINDOW,
            penalty,
            0.0,
            0.0,
        ));
    }
    if sampling.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(chain);
    }
    if let Some(k) = sampling.top_k {
        chain.push(LlamaSampler::top_k(i32::try_from(k).unwrap_or(i32::MAX)));
    }
    if let Some(p) = sampling.top_p.filter(|p| *p < 1.0) {
        chain.push(LlamaSampler::top_p(p, 1));
    }
    if let Some(p) = sampling.min_p.filter(|p| *p > 0.0) {
        chain.push(LlamaSampler::min_p(p, 1));
    }
    chain.push(LlamaSampler::temp(sampling.temperature));
    chain.push(LlamaSampler::dist(sampling.seed.unwrap_or(RANDOM_SEED)));
    LlamaSampler::chain_simple(chain)
}
