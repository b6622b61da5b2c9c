//! Unit tests of [`super`]: which tasks the device serves, and on the real model, that its
//! choices are the host's.

use std::num::NonZeroU32;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;

use super::super::test_model::real_model;
use super::*;

/// The default model's vocabulary.
const VOCAB: i32 = 262_144;

fn sampling(temperature: f32, seed: Option<u32>) -> Sampling {
    Sampling {
        temperature,
        top_p: Some(0.9),
        top_k: Some(40),
        min_p: None,
        repeat_penalty: None,
        frequency_penalty: None,
        presence_penalty: None,
        seed,
        logit_bias: Vec::new(),
    }
}

#[test]
fn greedy_and_plain_draws_run_on_the_device_grammars_logprobs_penalties_and_biases_on_the_host() {
    assert_eq!(
        DeviceChoice::for_task(&sampling(0.0, None), false, VOCAB),
        Some(DeviceChoice::Greedy)
    );
    assert_eq!(
        DeviceChoice::for_task(&sampling(0.7, Some(3)), false, VOCAB),
        Some(DeviceChoice::Draw(Draw {
            top_k: Some(40),
            top_p: Some(0.9),
            min_p: None,
            temperature: 0.7,
            seed: 3
        }))
    );
    assert_eq!(
        DeviceChoice::for_task(&sampling(0.0, None), true, VOCAB),
        None
    );
    let penalised = Sampling {
        repeat_penalty: Some(1.2),
        ..sampling(0.7, None)
    };
    assert_eq!(DeviceChoice::for_task(&penalised, false, VOCAB), None);
    let biased = Sampling {
        logit_bias: vec![(5, 1.0)],
        ..sampling(0.0, None)
    };
    assert_eq!(DeviceChoice::for_task(&biased, false, VOCAB), None);
    let off_filters = Sampling {
        top_k: Some(0),
        top_p: Some(1.0),
        min_p: Some(0.0),
        ..sampling(0.5, None)
    };
    assert_eq!(
        DeviceChoice::for_task(&off_filters, false, VOCAB),
        Some(DeviceChoice::Draw(Draw {
            top_k: None,
            top_p: None,
            min_p: None,
            temperature: 0.5,
            seed: u32::MAX // llama.cpp's "random seed"
        })),
        "filters that keep everything are left out"
    );
}

#[test]
fn a_top_k_past_what_the_device_takes_is_no_filter_or_the_hosts() {
    let top_k = |k| {
        let task = Sampling {
            top_k: Some(k),
            ..sampling(0.7, Some(1))
        };
        DeviceChoice::for_task(&task, false, VOCAB).map(|choice| match choice {
            DeviceChoice::Draw(draw) => draw.top_k,
            DeviceChoice::Greedy => panic!("a draw"),
        })
    };
    assert_eq!(top_k(40), Some(Some(40)));
    assert_eq!(
        top_k(VOCAB as u32),
        Some(None),
        "the whole vocabulary: no filter"
    );
    assert_eq!(top_k(u32::MAX), Some(None));
    assert_eq!(top_k(200_000), None, "past the probe graph: on the host");
    assert_eq!(top_k(DEVICE_TOP_K_MAX as u32), Some(Some(DEVICE_TOP_K_MAX)));
}

/// `count` tokens continuing `prompt` in sequence 0 of a fresh context: chosen on the
/// device by `choice` when given, else the host's argmax of the logits.
fn continue_prompt(
    model: &LlamaModel,
    backend: &'static llama_cpp_2::llama_backend::LlamaBackend,
    prompt: &str,
    choice: Option<DeviceChoice>,
    count: usize,
) -> Vec<LlamaToken> {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(256))
        .with_n_batch(64);
    let mut ctx = model.new_context(backend, params).expect("a context");
    let mut device = DeviceSamplers::new(&ctx, 1).expect("the context's handle");
    if let Some(choice) = choice {
        assert!(
            device.prepare(0, Some(choice)),
            "the CPU backend runs {choice:?}"
        );
    }
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, false);
    let mut batch = LlamaBatch::new(64, 1);
    batch.add_sequence(&tokens, 0, false).expect("batch");
    let mut out = Vec::new();
    for position in tokens.len()..tokens.len() + count {
        ctx.decode(&mut batch).expect("decode");
        let last = batch.n_tokens() - 1;
        let token = match choice {
            Some(_) => device
                .take(&ctx, 0, last)
                .expect("a token chosen on the device"),
            None => llama_cpp_2::sampling::LlamaSampler::greedy().sample(&ctx, last),
        };
        out.push(token);
        batch.clear();
        batch
            .add(token, position as i32, &[0], true)
            .expect("batch");
    }
    drop(ctx);
    drop(device);
    out
}

/// On the real model (the CPU backend runs the same graph a GPU would): the device's
/// greedy choice is the host's argmax, token for token; a seeded draw repeats with its
/// seed, on a fresh chain as on a slot's reused one.
#[test]
fn needs_model_on_the_real_model_the_device_picks_what_the_host_would() {
    let (backend, model) = real_model();
    for prompt in ["The capital of France is", "1, 2, 3, 4,"] {
        let host = continue_prompt(&model, backend, prompt, None, 12);
        let device = continue_prompt(&model, backend, prompt, Some(DeviceChoice::Greedy), 12);
        assert_eq!(device, host, "{prompt:?}");
    }
    let seeded = DeviceChoice::for_task(&sampling(1.0, Some(11)), false, VOCAB);
    let first = continue_prompt(&model, backend, "Once upon a time", seeded, 16);
    let again = continue_prompt(&model, backend, "Once upon a time", seeded, 16);
    assert_eq!(first, again, "the same seed draws the same tokens");
}

#[test]
fn needs_model_a_slot_reuses_its_chain_for_equal_settings_and_detaches_for_the_host() {
    let (backend, model) = real_model();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(256))
        .with_n_seq_max(2);
    let ctx = model.new_context(backend, params).expect("a context");
    let mut device = DeviceSamplers::new(&ctx, 2).expect("the context's handle");
    assert!(device.prepare(
        1,
        DeviceChoice::for_task(&sampling(0.8, None), false, VOCAB)
    ));
    let chain = device.attached[1].as_ref().map(|a| a.chain.0);
    assert!(device.prepare(
        1,
        DeviceChoice::for_task(&sampling(0.8, Some(5)), false, VOCAB)
    ));
    assert_eq!(
        device.attached[1].as_ref().map(|a| a.chain.0),
        chain,
        "the same filters and temperature keep the slot's chain, whatever the seed"
    );
    assert!(device.prepare(
        1,
        DeviceChoice::for_task(&sampling(0.9, Some(5)), false, VOCAB)
    ));
    assert_ne!(
        device.attached[1].as_ref().map(|a| a.chain.0),
        chain,
        "another temperature is another chain"
    );
    let chain = device.attached[1].as_ref().map(|a| a.chain.0);
    assert!(device.prepare(1, Some(DeviceChoice::Greedy)));
    assert_ne!(device.attached[1].as_ref().map(|a| a.chain.0), chain);
    assert!(
        !device.prepare(1, None),
        "a grammar task samples on the host"
    );
    assert!(device.attached[1].is_none());
    assert!(
        !device.prepare(5, Some(DeviceChoice::Greedy)),
        "no such slot"
    );
    drop(ctx);
}
