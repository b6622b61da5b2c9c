//! How a task's next token is picked, on the real model where it matters.

use super::super::test_model::{context, follow_constrained_greedy, real_model};
use super::super::token_choice::test_sampling as sampling;
use super::*;

/// Continues `prompt` on the real model for `steps` tokens, each chosen by `pick` from the
/// logits of the last decode (given the context, the logits' batch index and the position).
fn continue_with(
    ctx: &mut LlamaContext,
    model: &LlamaModel,
    prompt: &str,
    steps: i32,
    mut pick: impl FnMut(&LlamaContext, i32, i32) -> LlamaToken,
) {
    use llama_cpp_2::llama_batch::LlamaBatch;

    ctx.clear_kv_cache();
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, false);
    let mut batch = LlamaBatch::new(64, 1);
    batch.add_sequence(&tokens, 0, false).expect("batch");
    let first = tokens.len() as i32;
    for position in first..first + steps {
        ctx.decode(&mut batch).expect("decode");
        let token = pick(ctx, batch.n_tokens() - 1, position);
        batch.clear();
        batch.add(token, position, &[0], true).expect("batch");
    }
}

/// Runs on the real model (`WARREN_TEST_MODEL`, which `make test` sets): over a greedy
/// continuation of several prompts, the in-place argmax picks exactly the token that
/// llama.cpp's own greedy sampler picks from the same logits.
#[test]
fn needs_model_the_argmax_picks_what_llama_cpp_greedy_sampler_picks_on_real_logits() {
    let (backend, model) = real_model();
    let mut ctx = context(backend, &model);
    let mut llama_greedy = LlamaSampler::greedy();
    let mut compared = 0;
    for prompt in [
        "The capital of France is",
        "Once upon a time",
        "1, 2, 3, 4,",
    ] {
        continue_with(&mut ctx, &model, prompt, 8, |ctx, last, position| {
            let ours = TokenPicker::new(&sampling(0.0, None), None, 1000)
                .pick(ctx, last)
                .expect("an unconstrained pick");
            let theirs = llama_greedy.sample(ctx, last);
            assert_eq!(ours, theirs, "prompt {prompt:?}, position {position}");
            compared += 1;
            ours
        });
    }
    assert_eq!(compared, 24);
}

/// On the real model, a seeded draw made from the k best tokens alone picks, token for token,
/// what llama.cpp's chain picks from the whole vocabulary with the same seed: top-k, top-p,
/// min-p, temperature and the draw see the same candidates in the same order.
#[test]
fn needs_model_a_draw_from_the_k_best_is_the_whole_vocabulary_draw() {
    let (backend, model) = real_model();
    let mut ctx = context(backend, &model);
    let n_vocab = model.n_vocab();
    let settings = Sampling {
        temperature: 1.0,
        top_p: Some(0.95),
        min_p: Some(0.01),
        ..sampling(1.0, None)
    };
    let (mut compared, mut off_argmax) = (0, 0);
    for prompt in ["Once upon a time", "The recipe calls for"] {
        let mut from_best = TokenPicker::new(&settings, None, n_vocab);
        let mut whole = TokenPicker::new(&settings, None, n_vocab);
        assert_eq!(from_best.scan_top_k, Some(40));
        whole.scan_top_k = None;
        continue_with(&mut ctx, &model, prompt, 24, |ctx, last, position| {
            let ours = from_best.pick(ctx, last).expect("a pick");
            let theirs = whole.pick(ctx, last).expect("a pick");
            assert_eq!(ours, theirs, "prompt {prompt:?}, position {position}");
            compared += 1;
            if ours.0 != argmax(ctx.get_logits_ith(last)) {
                off_argmax += 1;
            }
            ours
        });
    }
    assert_eq!(compared, 48);
    assert!(off_argmax > 0, "the draws must not all be the greedy pick");
}

/// Over a JSON-constrained greedy continuation on the real model, the scan of the most
/// likely tokens finds exactly the argmax of the grammar-masked vocabulary.
#[test]
fn needs_model_with_a_grammar_the_scanned_pick_is_the_argmax_of_the_masked_vocabulary() {
    let (backend, model) = real_model();
    let schema = r#"{"type": "object", "properties": {"name": {"type": "string"},
        "age": {"type": "integer"}}, "required": ["name", "age"]}"#;
    let gbnf = llama_cpp_2::json_schema_to_grammar(schema).expect("a grammar");
    let mut grammar = LlamaSampler::grammar(&model, &gbnf, "root").expect("it compiles");
    let mut ctx = context(backend, &model);
    let mut scanned_picks = 0;
    let prompt = "Tell me about a person.";
    follow_constrained_greedy(
        &model,
        &mut ctx,
        &mut grammar,
        prompt,
        32,
        |ctx, last, grammar, masked, position| {
            let logits = ctx.get_logits_ith(last);
            let scanned = grammar::best_allowed(grammar, logits, 1).map(|b| b[0].id());
            let masked = masked.clone().sample_token_greedy();
            if let Some(scanned) = scanned {
                assert_eq!(scanned, masked, "at position {position}");
                scanned_picks += 1;
            }
        },
    );
    assert!(scanned_picks >= 8, "only {scanned_picks} picks compared");
}

/// On the real model: a bias of -100 on the greedy token makes the runner-up the pick, +100
/// on any token makes it the pick; an id outside the vocabulary is refused.
#[test]
fn needs_model_a_logit_bias_shifts_the_pick_and_must_name_tokens_of_the_vocabulary() {
    use llama_cpp_2::llama_batch::LlamaBatch;

    let (backend, model) = real_model();
    let mut ctx = context(backend, &model);
    let tokens = model
        .vocab()
        .tokenize(b"The capital of France is", true, false);
    let mut batch = LlamaBatch::new(64, 1);
    batch.add_sequence(&tokens, 0, false).expect("batch");
    ctx.decode(&mut batch).expect("decode");
    let last = batch.n_tokens() - 1;
    let (_, ranked) = super::super::logprobs::log_softmax_at(ctx.get_logits_ith(last), 0, 2);
    let (best, runner_up) = (ranked[0].0 as u32, ranked[1].0 as u32);
    let pick = |logit_bias: Vec<(u32, f32)>, temperature: f32| {
        let biased = Sampling {
            logit_bias,
            ..sampling(temperature, None)
        };
        let mut picker =
            TokenPicker::for_task(&model, &biased, None, || unreachable!()).expect("a picker");
        picker.pick(&ctx, last).expect("a pick").0 as u32
    };
    assert_eq!(pick(Vec::new(), 0.0), best);
    assert_eq!(pick(vec![(best, -100.0)], 0.0), runner_up);
    let rare = 12_345;
    assert_eq!(pick(vec![(rare, 100.0)], 0.0), rare);
    assert_eq!(pick(vec![(rare, 100.0)], 0.8), rare, "sampled too");

    let n_vocab = model.n_vocab() as u32;
    let outside = Sampling {
        logit_bias: vec![(n_vocab, 1.0)],
        ..sampling(0.0, None)
    };
    let refused = TokenPicker::for_task(&model, &outside, None, || unreachable!())
        .err()
        .expect("refused");
    assert_eq!(refused.code, ErrorCode::InvalidRequest);
    assert!(
        refused.message.contains("logit_bias"),
        "{}",
        refused.message
    );
}
