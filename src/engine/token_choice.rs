//! What a task's sampling settings make in llama.cpp's terms: a plain argmax where nothing
//! but the most likely token counts, else a sampler chain (logit bias, penalties, then top-k,
//! top-p, min-p, temperature and a seeded draw, in that order). Pure translation: the host's
//! picker ([`super::sampling`]) runs the choice, the device's chains
//! ([`super::device_sampling`]) are built from the same [`Draw`].

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use crate::protocol::Sampling;

/// llama.cpp's "choose a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// How many recent tokens the penalties look at (llama.cpp's default).
const PENALTY_WINDOW: i32 = 64;

/// How a token is chosen among those allowed.
pub(super) enum Choice {
    /// Temperature 0 and no penalties: the most likely token, nothing else.
    Argmax,
    /// Any other settings: a llama.cpp sampler chain (it keeps the task's random state).
    Chain(LlamaSampler),
}

impl Choice {
    /// The choice `sampling` makes over a vocabulary of `n_vocab` tokens (a logit bias
    /// sampler needs its size).
    pub(super) fn for_sampling(sampling: &Sampling, n_vocab: i32) -> Choice {
        if sampling.temperature <= 0.0 && !reshapes_logits(sampling) {
            return Choice::Argmax;
        }
        let mut chain = Vec::with_capacity(7);
        if !sampling.logit_bias.is_empty() {
            let biases: Vec<LlamaLogitBias> = sampling
                .logit_bias
                .iter()
                .map(|&(id, bias)| LlamaLogitBias::new(LlamaToken(id as i32), bias))
                .collect();
            chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
        }
        if let Some(penalties) = penalties(sampling) {
            chain.push(LlamaSampler::penalties(
                0,
                PENALTY_WINDOW,
                penalties.repeat,
                penalties.frequency,
                penalties.presence,
            ));
        }
        if sampling.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
            return Choice::Chain(LlamaSampler::chain_simple(chain));
        }
        let draw = Draw::of(sampling);
        if let Some(k) = draw.top_k {
            chain.push(LlamaSampler::top_k(k));
        }
        if let Some(p) = draw.top_p {
            chain.push(LlamaSampler::top_p(p, 1));
        }
        if let Some(p) = draw.min_p {
            chain.push(LlamaSampler::min_p(p, 1));
        }
        chain.push(LlamaSampler::temp(draw.temperature));
        chain.push(LlamaSampler::dist(draw.seed));
        Choice::Chain(LlamaSampler::chain_simple(chain))
    }
}

/// A task's penalties on recent tokens, as llama.cpp's penalties sampler takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Penalties {
    /// Divides a recent token's positive logit (multiplies a negative one); 1 = off.
    pub repeat: f32,
    /// Subtracted from a recent token's logit per occurrence; 0 = off.
    pub frequency: f32,
    /// Subtracted from a recent token's logit once; 0 = off.
    pub presence: f32,
}

/// Whether the task changes the model's logits before the pick (a logit bias, a penalty):
/// then neither a plain argmax nor the device's chain nor a scan of the raw logits stands
/// for its pick.
pub(super) fn reshapes_logits(sampling: &Sampling) -> bool {
    !sampling.logit_bias.is_empty() || penalties(sampling).is_some()
}

/// A task's penalties, unless none of them changes anything.
pub(super) fn penalties(sampling: &Sampling) -> Option<Penalties> {
    let penalties = Penalties {
        repeat: sampling.repeat_penalty.unwrap_or(1.0),
        frequency: sampling.frequency_penalty.unwrap_or(0.0),
        presence: sampling.presence_penalty.unwrap_or(0.0),
    };
    let off = penalties.repeat == 1.0 && penalties.frequency == 0.0 && penalties.presence == 0.0;
    (!off).then_some(penalties)
}

/// A random pick's settings as llama.cpp's samplers take them, filters that keep every token
/// left out: top-k, top-p and min-p narrow the candidates in that order, then the temperature
/// scales them and a draw with the seed picks one. The host's chain and the device's
/// ([`super::device_sampling`]) are both built from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Draw {
    pub top_k: Option<i32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub temperature: f32,
    pub seed: u32,
}

impl Draw {
    pub(super) fn of(sampling: &Sampling) -> Draw {
        // Top-p 0 keeps only the most likely token (llama.cpp's top-p keeps at least one),
        // which top-k 1 says directly.
        let only_the_likeliest = sampling.top_p.is_some_and(|p| p <= 0.0);
        Draw {
            top_k: if only_the_likeliest {
                Some(1)
            } else {
                sampling
                    .top_k
                    .filter(|k| *k > 0)
                    .map(|k| i32::try_from(k).unwrap_or(i32::MAX))
            },
            top_p: sampling.top_p.filter(|p| *p > 0.0 && *p < 1.0),
            min_p: sampling.min_p.filter(|p| *p > 0.0),
            temperature: sampling.temperature,
            seed: sampling.seed.unwrap_or(RANDOM_SEED),
        }
    }
}

/// Test settings: top-k 40, seed 7, `temperature` and `repeat_penalty`, nothing else.
#[cfg(test)]
pub(super) fn test_sampling(temperature: f32, repeat_penalty: Option<f32>) -> Sampling {
    Sampling {
        temperature,
        top_p: None,
        top_k: Some(40),
        min_p: None,
        repeat_penalty,
        frequency_penalty: None,
        presence_penalty: None,
        seed: Some(7),
        logit_bias: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::test_sampling as sampling;
    use super::*;

    fn is_argmax(sampling: &Sampling) -> bool {
        matches!(Choice::for_sampling(sampling, 1000), Choice::Argmax)
    }

    #[test]
    fn plain_greedy_is_an_argmax_and_anything_else_a_sampler_chain() {
        assert!(is_argmax(&sampling(0.0, None)));
        assert!(is_argmax(&sampling(0.0, Some(1.0))));
        assert!(!is_argmax(&sampling(0.0, Some(1.3))));
        assert!(!is_argmax(&sampling(0.8, None)));
        let frequency = Sampling {
            frequency_penalty: Some(0.5),
            ..sampling(0.0, None)
        };
        assert!(!is_argmax(&frequency));
        let presence_off = Sampling {
            presence_penalty: Some(0.0),
            ..sampling(0.0, None)
        };
        assert!(is_argmax(&presence_off));
        let biased = Sampling {
            logit_bias: vec![(3, -100.0)],
            ..sampling(0.0, None)
        };
        assert!(!is_argmax(&biased));
    }

    #[test]
    fn penalties_that_change_nothing_are_none() {
        assert_eq!(penalties(&sampling(0.7, None)), None);
        assert_eq!(penalties(&sampling(0.7, Some(1.0))), None);
        let openai = Sampling {
            frequency_penalty: Some(-0.5),
            presence_penalty: Some(1.5),
            ..sampling(0.7, None)
        };
        assert_eq!(
            penalties(&openai),
            Some(Penalties {
                repeat: 1.0,
                frequency: -0.5,
                presence: 1.5
            })
        );
    }

    #[test]
    fn a_draw_leaves_out_filters_that_keep_every_token() {
        let open = Sampling {
            top_k: Some(0),
            top_p: Some(1.0),
            min_p: Some(0.0),
            seed: None,
            ..sampling(0.7, None)
        };
        let draw = Draw::of(&open);
        assert_eq!((draw.top_k, draw.top_p, draw.min_p), (None, None, None));
        assert_eq!(draw.seed, RANDOM_SEED);
        let narrow = Sampling {
            top_p: Some(0.9),
            min_p: Some(0.05),
            ..sampling(0.7, None)
        };
        let draw = Draw::of(&narrow);
        assert_eq!(
            (draw.top_k, draw.top_p, draw.min_p, draw.seed),
            (Some(40), Some(0.9), Some(0.05), 7)
        );
    }

    #[test]
    fn top_p_zero_keeps_only_the_likeliest_token() {
        for top_k in [None, Some(0), Some(40)] {
            let zero = Sampling {
                top_p: Some(0.0),
                top_k,
                ..sampling(0.7, None)
            };
            let draw = Draw::of(&zero);
            assert_eq!((draw.top_k, draw.top_p), (Some(1), None), "top_k {top_k:?}");
        }
    }
}
