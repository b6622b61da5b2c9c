//! The vocabulary grouped by the first byte of each token's text, so that a grammar's answer
//! for one byte answers for every token that starts with it.
//!
//! llama.cpp's grammar reads a token's text (its piece, special tokens rendered) character by
//! character and refuses it at the first character the grammar cannot take. Its answer for a
//! token whose whole text is the single byte `b` therefore tells whether any text starting
//! with `b` can be taken now: a refused `b` refuses its whole group. Where a JSON Schema
//! needs a literal (a key such as `"year"`), the grammar allows a handful of tokens that
//! rank far below the few hundred most likely; masking the whole vocabulary to find them
//! cost ~30 ms a token here, asking the groups' single-byte tokens first and masking only the
//! groups they open costs a fraction of that. Exact, never an approximation: a group without
//! a single-byte token is always kept, and grammars that name tokens by id (`<[id]>`, which
//! llama.cpp matches by id, not text) must not use this index (see [`names_no_tokens`]).
//!
//! Built once per model on the engine thread. It decides which tokens to ask the grammar
//! about; the grammar decides which are allowed. It must not sample.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

/// Where a token goes: the first byte of its text, or one of these.
type Group = u16;
/// End-of-generation tokens: the grammar allows them when it can end, whatever their text.
const END: Group = 256;
/// Tokens with no text: llama.cpp's grammar refuses them always.
const NEVER: Group = 257;

/// Each token's group and each byte's single-byte token.
pub(super) struct FirstBytes {
    /// Indexed by token id.
    group: Vec<Group>,
    /// For each byte, a token whose whole text is that byte, when the vocabulary has one.
    probes: Vec<(u8, LlamaToken)>,
}

impl FirstBytes {
    /// The index of `model`'s vocabulary (one pass over its 262k token texts for Gemma 3).
    pub(super) fn new(model: &LlamaModel) -> FirstBytes {
        let vocab = model.vocab();
        let mut group = Vec::with_capacity(usize::try_from(vocab.n_tokens()).unwrap_or(0));
        let mut probes: Vec<Option<LlamaToken>> = vec![None; 256];
        let mut text = Vec::new();
        for token in vocab.tokens() {
            text.clear();
            // Special tokens rendered: the text llama.cpp's grammar reads.
            vocab.token_to_piece_into(token, &mut text, true, None);
            let first = match text.first() {
                _ if vocab.is_eog(token) => END,
                None | Some(0) => NEVER,
                Some(&byte) => {
                    if text.len() == 1 && probes[usize::from(byte)].is_none() {
                        probes[usize::from(byte)] = Some(token);
                    }
                    Group::from(byte)
                }
            };
            group.push(first);
        }
        let probes = (0..=u8::MAX)
            .zip(probes)
            .filter_map(|(byte, token)| Some((byte, token?)))
            .collect();
        FirstBytes { group, probes }
    }

    /// Every token `grammar` might allow now, with its logit, in id order: end tokens, and the
    /// tokens of each group whose single-byte token the grammar allows or that has none.
    /// Every token left out is one the grammar refuses.
    pub(super) fn candidates(
        &self,
        grammar: &mut LlamaSampler,
        logits: &[f32],
    ) -> Vec<LlamaTokenData> {
        let mut open = [true; 256];
        for (byte, _) in &self.probes {
            open[usize::from(*byte)] = false;
        }
        let mut asked = LlamaTokenDataArray::new(
            self.probes
                .iter()
                .map(|(_, token)| LlamaTokenData::new(*token, 0.0, 0.0))
                .collect(),
            false,
        );
        asked.apply_sampler(grammar);
        for ((byte, _), answer) in self.probes.iter().zip(&asked.data) {
            if answer.logit().is_finite() {
                open[usize::from(*byte)] = true;
            }
        }
        (0_i32..)
            .zip(&self.group)
            .zip(logits)
            .filter(|((_, group), _)| match **group {
                END => true,
                NEVER => false,
                byte => open[usize::from(byte)],
            })
            .map(|((id, _), &logit)| LlamaTokenData::new(LlamaToken(id), logit, 0.0))
            .collect()
    }

    /// How many bytes have a single-byte token (255 for a vocabulary with byte tokens).
    #[cfg(test)]
    pub(super) fn probed_bytes(&self) -> usize {
        self.probes.len()
    }
}

/// Whether a GBNF grammar reads text only: it names no token (llama.cpp's `<[id]>`, `<name>`
/// and `!<...>` all begin with a `<` outside quoted literals and character classes). A `<`
/// inside a literal (`"<tool_call>"`) or a class (`[^<]`) is text. Comments (`#` to the end
/// of the line) are skipped too. An unterminated literal or class answers `false`, which
/// only costs speed.
pub(super) fn names_no_tokens(gbnf: &str) -> bool {
    let mut chars = gbnf.chars();
    while let Some(c) = chars.next() {
        let end = match c {
            '<' => return false,
            '"' => '"',
            '[' => ']',
            '#' => '\n',
            _ => continue,
        };
        loop {
            match chars.next() {
                None => return end == '\n',
                Some('\\') if end != '\n' => {
                    chars.next();
                }
                Some(c) if c == end => break,
                Some(_) => {}
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_model::{context, follow_constrained_greedy, real_model};
    use llama_cpp_2::context::LlamaContext;

    #[test]
    fn a_grammar_with_a_token_reference_is_not_read_as_text() {
        assert!(names_no_tokens(r#"root ::= "{" [a-z]+ "}""#));
        assert!(!names_no_tokens(r#"root ::= <[1234]> "x""#));
        assert!(!names_no_tokens(r#"root ::= !<think> "x""#));
        // A `<` in a literal, a class or a comment is text.
        assert!(names_no_tokens(
            "root ::= \"<tool_call>\\n\" [^<\\]] x # <b>\nx ::= \"\\\"<\""
        ));
        assert!(!names_no_tokens("root ::= \"a\" <[12]>"));
        assert!(!names_no_tokens("root ::= \"unterminated <"));
    }

    /// On the real model, along constrained greedy continuations (a JSON Schema with literal
    /// keys, and a grammar of multi-byte characters), the tokens the grammar allows among the
    /// candidates are exactly those it allows in the whole vocabulary, at every step.
    #[test]
    fn needs_model_the_candidates_hold_every_token_the_grammar_allows() {
        let (backend, model) = real_model();
        let index = FirstBytes::new(&model);
        assert_eq!(
            index.probed_bytes(),
            255,
            "Gemma 3 has a token for every byte but NUL (a text llama.cpp's grammar never takes)"
        );
        let schema = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/structured/schema.json"),
        )
        .expect("the bench schema");
        let json = llama_cpp_2::json_schema_to_grammar(&schema).expect("a grammar");
        let multibyte = r#"root ::= "«" [a-zé日本]+ "» " ("été" | "日本語") "\n""#;
        // A tool call's shape: literals that hold `<` are text too.
        let call = r#"root ::= "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"n\": " [0-9]{1,3} "}}\n</tool_call>""#;
        let mut ctx = context(backend, &model);
        let mut compared = 0;
        let mut narrowed = 0;
        for (gbnf, prompt) in [
            (json.as_str(), "Describe a book as JSON."),
            (multibyte, "Write a French word."),
            (call, "Call f with a number."),
        ] {
            assert!(names_no_tokens(gbnf));
            let mut grammar = LlamaSampler::grammar(&model, gbnf, "root").expect("it compiles");
            let mut each_step = |ctx: &LlamaContext<'_>,
                                 last: i32,
                                 grammar: &mut LlamaSampler,
                                 all: &LlamaTokenDataArray,
                                 position: i32| {
                let candidates = index.candidates(grammar, ctx.get_logits_ith(last));
                let mut asked = LlamaTokenDataArray::new(candidates.clone(), false);
                asked.apply_sampler(grammar);
                let allowed = |array: &LlamaTokenDataArray| -> Vec<i32> {
                    let mut ids: Vec<i32> = array
                        .data
                        .iter()
                        .filter(|d| d.logit().is_finite())
                        .map(|d| d.id().0)
                        .collect();
                    ids.sort_unstable();
                    ids
                };
                let expected = allowed(all);
                assert!(!expected.is_empty(), "the grammar allows something");
                assert_eq!(allowed(&asked), expected, "at position {position}");
                compared += 1;
                if candidates.len() < all.data.len() / 2 {
                    narrowed += 1;
                }
            };
            follow_constrained_greedy(&model, &mut ctx, &mut grammar, prompt, 48, &mut each_step);
        }
        assert!(compared >= 30, "only {compared} steps compared");
        assert!(narrowed >= 10, "the index narrowed only {narrowed} steps");
    }
}
