//! Chooses each next token of one task from its [`Sampling`] parameters and, where the task
//! constrains its output, its grammar.
//!
//! The vocabulary of small modern models is large (262k tokens for Gemma 3), so the choice is
//! made to do little work per token. Plain greedy decoding (temperature 0, no penalties)
//! is an argmax over the logits where llama.cpp left them: no copy into a candidate array, no
//! sort, no softmax. Everything else goes through a llama.cpp sampler chain in which top-k
//! runs first, so that top-p, min-p and the softmax see k tokens, not all; with nothing
//! reshaping the logits before it (and k at most 512), the chain is handed those k tokens
//! alone, found by a vectorised scan ([`super::best_logits`]), instead of an array of the
//! whole vocabulary.
//!
//! With a grammar, masking the whole vocabulary at every token (what llama.cpp's server does
//! when its first pick does not fit) costs ~100 ms a token here. A greedy task instead tries
//! its argmax, then the most likely tokens in order until one fits, which is the masked
//! argmax exactly; a sampled task with top-k takes the k best tokens that fit, which is what
//! masking then top-k keeps. Only where neither applies (or nothing fits among the best few
//! hundred, as when a schema needs a literal key) is the vocabulary masked, and then only the
//! groups of tokens whose first byte the grammar can take are asked ([`FirstBytes`]). No task
//! skips its constraint, greedy ones included.
//!
//! This module owns no llama.cpp context; it must not decode or touch the KV cache.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

use std::rc::Rc;

use super::best_logits::{argmax, top_k};
use super::first_bytes::FirstBytes;
use super::grammar::{self, Constrained, GrammarSource};
use super::token_choice::{reshapes_logits, Choice};
use crate::protocol::{ErrorCode, Sampling, TaskError};

/// How one task picks its next token.
pub(super) struct TokenPicker {
    choice: Choice,
    /// The task's grammar sampler, when it constrains its output.
    grammar: Option<LlamaSampler>,
    /// Narrows a whole-vocabulary mask to the tokens the grammar may allow (see
    /// [`FirstBytes`]); `None` where every token must be asked.
    search: Option<Rc<FirstBytes>>,
    /// The sampler chain's top-k when the k best tokens (the k best allowed, with a grammar)
    /// can stand for the whole vocabulary: top-k on, nothing reshaping the logits before it.
    scan_top_k: Option<usize>,
}

impl TokenPicker {
    /// The picker of a task: its sampling, within its constraint's grammar if it has one.
    /// `first_bytes` gives the model's [`FirstBytes`] index, asked for only when the grammar
    /// reads text alone (see [`grammar::sampler`]).
    pub(super) fn for_task(
        model: &LlamaModel,
        sampling: &Sampling,
        constraint: Option<GrammarSource<'_>>,
        first_bytes: impl FnOnce() -> Rc<FirstBytes>,
    ) -> Result<TokenPicker, TaskError> {
        let n_vocab = model.n_vocab();
        if let Some(&(id, _)) = sampling
            .logit_bias
            .iter()
            .find(|(id, _)| *id as i64 >= i64::from(n_vocab))
        {
            return Err(TaskError::invalid(format!(
                "`logit_bias` names token {id}, but the model's vocabulary has {n_vocab} tokens (ids 0 to {})",
                n_vocab - 1
            )));
        }
        let Some(constraint) = constraint else {
            return Ok(TokenPicker::new(sampling, None, n_vocab));
        };
        let (grammar, reads_text) = grammar::sampler(model, constraint)?;
        let search = reads_text.then(first_bytes);
        Ok(TokenPicker::new(
            sampling,
            Some(Constrained { grammar, search }),
            n_vocab,
        ))
    }

    /// The picker for `sampling` over a vocabulary of `n_vocab` tokens, constrained by a
    /// grammar when given.
    pub(super) fn new(
        sampling: &Sampling,
        constrained: Option<Constrained>,
        n_vocab: i32,
    ) -> TokenPicker {
        let reshaped = reshapes_logits(sampling);
        let scan_top_k = sampling
            .top_k
            .map(|k| k as usize)
            .filter(|k| (1..=grammar::SCANNED).contains(k) && !reshaped);
        let (grammar, search) = match constrained {
            Some(Constrained { grammar, search }) => (Some(grammar), search),
            None => (None, None),
        };
        TokenPicker {
            choice: Choice::for_sampling(sampling, n_vocab),
            grammar,
            search,
            scan_top_k,
        }
    }

    /// The next token, from the logits of batch position `batch_index` of the last decode.
    /// Fails only when the task's grammar allows no token at all.
    pub(super) fn pick(
        &mut self,
        ctx: &LlamaContext<'_>,
        batch_index: i32,
    ) -> Result<LlamaToken, TaskError> {
        let Some(grammar) = &mut self.grammar else {
            return Ok(match (&mut self.choice, self.scan_top_k) {
                (Choice::Argmax, _) => LlamaToken(argmax(ctx.get_logits_ith(batch_index))),
                (Choice::Chain(chain), Some(k)) => {
                    let best = top_k(ctx.get_logits_ith(batch_index), k)
                        .into_iter()
                        .map(|(id, logit)| LlamaTokenData::new(LlamaToken(id), logit, 0.0))
                        .collect();
                    match draw_among(chain, best) {
                        Some(token) => {
                            chain.accept(token);
                            token
                        }
                        // Nothing but NaN: the whole-vocabulary draw decides.
                        None => chain.sample(ctx, batch_index),
                    }
                }
                (Choice::Chain(chain), None) => chain.sample(ctx, batch_index),
            });
        };
        let logits = ctx.get_logits_ith(batch_index);
        let token = match &mut self.choice {
            Choice::Argmax => {
                let first = LlamaToken(argmax(logits));
                if grammar::allows(grammar, first) {
                    Some(first)
                } else {
                    grammar::best_allowed(grammar, logits, 1).map(|best| best[0].id())
                }
            }
            Choice::Chain(chain) => match self.scan_top_k {
                // The k best tokens the grammar allows are what masking, then top-k, keeps.
                Some(k) => grammar::best_allowed(grammar, logits, k)
                    .and_then(|best| draw_among(chain, best)),
                None => None,
            },
        };
        let token = match token {
            Some(token) => token,
            None => self.pick_from_masked_vocabulary(ctx, batch_index)?,
        };
        let Some(grammar) = &mut self.grammar else {
            return Err(grammar_dead_end());
        };
        grammar.try_accept(token).map_err(|_| grammar_dead_end())?;
        if let Choice::Chain(chain) = &mut self.choice {
            chain.accept(token);
        }
        Ok(token)
    }
}

impl TokenPicker {
    /// The pick with every token the grammar refuses masked out of the whole vocabulary:
    /// exact in every case, and what the cheaper searches fall back to. Only the tokens the
    /// [`FirstBytes`] index leaves are asked (it leaves out only refused ones); they keep id
    /// order, so the pick is the one a mask of the whole vocabulary gives.
    fn pick_from_masked_vocabulary(
        &mut self,
        ctx: &LlamaContext<'_>,
        batch_index: i32,
    ) -> Result<LlamaToken, TaskError> {
        let Some(grammar) = &mut self.grammar else {
            return Err(grammar_dead_end());
        };
        let mut all = match &self.search {
            Some(index) => LlamaTokenDataArray::new(
                index.candidates(grammar, ctx.get_logits_ith(batch_index)),
                false,
            ),
            None => ctx.token_data_array_ith(batch_index),
        };
        all.apply_sampler(grammar);
        match &mut self.choice {
            Choice::Argmax => all.apply_sampler(&mut LlamaSampler::greedy()),
            Choice::Chain(chain) => all.apply_sampler(chain),
        }
        let chosen = all.selected.and_then(|i| all.data.get(i).copied());
        // A token the grammar masked has logit -inf; accepting it would abort.
        chosen
            .filter(|data| data.logit().is_finite())
            .map(|data| data.id())
            .ok_or_else(grammar_dead_end)
    }
}

/// A draw by a chain that starts with top-k `k`, among the k best candidates alone (the k
/// best tokens, or the k best a grammar allows), most likely first: the chain's top-k keeps
/// exactly those, so the filters after it and the seeded draw see what they would have seen
/// over the whole vocabulary, without a candidate array of it. (Where two of the k best logits
/// are exactly equal, llama.cpp's sort may order them either way; here the lower id comes
/// first.) `None` when there is nothing to draw from (llama.cpp's top-p would abort on an
/// empty array) or the chain selects nothing. The caller accepts the token.
fn draw_among(chain: &mut LlamaSampler, best: Vec<LlamaTokenData>) -> Option<LlamaToken> {
    if best.is_empty() {
        return None;
    }
    let mut kept = LlamaTokenDataArray::new(best, true);
    kept.apply_sampler(chain);
    kept.selected_token()
}

fn grammar_dead_end() -> TaskError {
    TaskError::new(
        ErrorCode::InvalidRequest,
        "the task's grammar allows no further token here (the model cannot continue within it)",
    )
}

#[cfg(test)]
#[path = "sampling_tests.rs"]
mod tests;
