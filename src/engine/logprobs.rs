//! A generated token's log probability and its most likely alternatives, read from the raw
//! logits of the step that chose it: the model's own distribution, before temperature,
//! penalties, top-k/top-p or a grammar shaped the choice (as llama.cpp's server reports by
//! default). Only tasks that ask for `logprobs` pay for it: one pass over the vocabulary.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::protocol::{TokenLogprob, TopLogprob};

/// Log-softmax of `logits` at `chosen`, and the `top` highest entries as (token id, log
/// probability), most likely first (ties: the lower id first).
pub(super) fn log_softmax_at(
    logits: &[f32],
    chosen: usize,
    top: usize,
) -> (f32, Vec<(usize, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return (f32::NEG_INFINITY, Vec::new());
    }
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let log_norm = max + sum.ln() as f32;
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (id, &logit) in logits.iter().enumerate() {
            if best.len() == top && logit <= best[top - 1].1 {
                continue;
            }
            let at = best.partition_point(|&(_, l)| l >= logit);
            best.insert(at, (id, logit));
            best.truncate(top);
        }
    }
    let chosen_logprob = logits
        .get(chosen)
        .map_or(f32::NEG_INFINITY, |l| l - log_norm);
    let top = best.into_iter().map(|(id, l)| (id, l - log_norm)).collect();
    (chosen_logprob, top)
}

/// The entry for `chosen`, with `top` alternatives, from its step's logits.
pub(super) fn entry(
    model: &LlamaModel,
    logits: &[f32],
    chosen: LlamaToken,
    top: usize,
) -> TokenLogprob {
    let chosen_index = usize::try_from(chosen.0).unwrap_or(usize::MAX);
    let (logprob, alternatives) = log_softmax_at(logits, chosen_index, top);
    let (token, bytes) = text_of(model, chosen);
    TokenLogprob {
        token,
        bytes,
        logprob,
        top_logprobs: alternatives
            .into_iter()
            .map(|(id, logprob)| {
                let (token, bytes) = text_of(model, LlamaToken(id as i32));
                TopLogprob {
                    token,
                    bytes,
                    logprob,
                }
            })
            .collect(),
    }
}

/// A token's bytes as generated text holds them (an end-of-generation token, which may be
/// among the alternatives, has none).
fn piece(model: &LlamaModel, token: LlamaToken) -> Vec<u8> {
    let vocab = model.vocab();
    if vocab.is_eog(token) {
        return Vec::new();
    }
    vocab.token_to_piece(token, false, None)
}

fn text_of(model: &LlamaModel, token: LlamaToken) -> (String, Vec<u8>) {
    let bytes = piece(model, token);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_probabilities_are_a_normalised_log_softmax() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let (chosen, top) = log_softmax_at(&logits, 2, 4);
        let total: f32 = top.iter().map(|(_, lp)| lp.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "probabilities sum to {total}");
        let expected = 2.0 - (1f32.exp() + 2.0 * 3f32.exp() + 2f32.exp()).ln();
        assert!((chosen - expected).abs() < 1e-5);
        let ids: Vec<usize> = top.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 3, 2, 0], "most likely first, ties by lower id");
    }

    #[test]
    fn only_as_many_alternatives_as_asked_and_none_for_zero() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 1000) as f32 / 100.0)
            .collect();
        let (_, top) = log_softmax_at(&logits, 0, 5);
        assert_eq!(top.len(), 5);
        let mut sorted = logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let max = sorted[0];
        for (rank, (id, _)) in top.iter().enumerate() {
            assert_eq!(logits[*id], sorted[rank], "rank {rank}");
        }
        assert_eq!(logits[top[0].0], max);
        let (chosen, none) = log_softmax_at(&logits, 3, 0);
        assert!(none.is_empty());
        assert!(chosen < 0.0 && chosen.is_finite());
    }

    #[test]
    fn a_token_outside_the_logits_has_no_probability() {
        let (chosen, _) = log_softmax_at(&[0.0, 1.0], 7, 1);
        assert_eq!(chosen, f32::NEG_INFINITY);
    }
}
