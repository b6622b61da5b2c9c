//! Batch invariance on the real model: a task run alone and the same task run while other
//! tasks read their prompts and generate beside it give the same tokens and the same log
//! probabilities, bit for bit, with `engine.batch_invariant` or the task's own
//! `batch_invariant`; without either they differ.

use std::sync::Arc;
use std::time::Instant;

use super::Invariance;
use crate::config::Settings;
use crate::engine::test_model::model_path;
use crate::engine::{Engine, Generation, GenerationRequest};

#[test]
fn a_task_is_decoded_alone_when_it_or_the_worker_asks_and_the_kv_cache_allows() {
    let mut settings = Settings::defaults().engine;
    assert_eq!(Invariance::of(&settings), Invariance::Asked);
    assert_eq!(Invariance::Asked.decodes_alone(false), Ok(false));
    assert_eq!(Invariance::Asked.decodes_alone(true), Ok(true));
    settings.batch_invariant = true;
    assert_eq!(Invariance::of(&settings), Invariance::Every);
    assert_eq!(Invariance::Every.decodes_alone(false), Ok(true));
    settings.batch_invariant = false;
    settings.kv_unified = true;
    assert_eq!(Invariance::of(&settings), Invariance::Unavailable);
    assert_eq!(Invariance::Unavailable.decodes_alone(false), Ok(false));
    let refused = Invariance::Unavailable.decodes_alone(true).unwrap_err();
    assert_eq!(refused.code, crate::protocol::ErrorCode::InvalidRequest);
    assert!(
        refused.message.contains("engine.kv_unified"),
        "{}",
        refused.message
    );
}

/// The task whose output is compared: sampled, seeded, with its log probabilities; decoded
/// alone when it asks for `batch_invariant`.
fn subject(batch_invariant: bool) -> serde_json::Value {
    serde_json::json!({
        "batch_invariant": batch_invariant,
        "prompt": format!(
            "{}Invent a name for a rabbit and describe it in one sentence.",
            "A rabbit lives in the garden behind the old mill. ".repeat(8)
        ),
        "max_tokens": 24,
        "temperature": 0.7,
        "seed": 1234,
        "logprobs": 0,
    })
}

/// Gemma 3's end-of-generation tokens (`<eos>`, `<end_of_turn>`, and `</s>`, which llama.cpp
/// counts as one): a neighbour that cannot pick them runs to its `max_tokens`.
const NO_END: [(&str, i32); 3] = [("1", -100), ("106", -100), ("212", -100)];

/// Tasks that run beside the subject: long enough to outlive it, of several prompt lengths.
fn neighbour(n: usize) -> serde_json::Value {
    let story = "Once upon a time, in a village by the sea, there lived a baker who ".repeat(n + 1);
    let no_end: serde_json::Map<String, serde_json::Value> = NO_END
        .iter()
        .map(|(token, bias)| (token.to_string(), (*bias).into()))
        .collect();
    serde_json::json!({
        "prompt": story,
        "max_tokens": 96,
        "temperature": 0.9,
        "seed": n,
        "logit_bias": no_end,
    })
}

fn request(body: serde_json::Value) -> GenerationRequest {
    let limits = Settings::defaults().task_limits();
    GenerationRequest {
        task: crate::protocol::parse_task(body.to_string().as_bytes(), &limits).expect("a task"),
        stream: None,
    }
}

async fn engine(batch_invariant: bool) -> Arc<Engine> {
    let mut settings = Settings::defaults().engine;
    settings.model_path = model_path();
    settings.slots = 8;
    settings.context_size = 512;
    settings.batch_invariant = batch_invariant;
    let engine = tokio::task::spawn_blocking(move || Engine::start(&settings))
        .await
        .expect("the start-up thread")
        .expect("the engine starts");
    Arc::new(engine)
}

/// The subject run alone, then run again while six neighbours generate beside it and a
/// seventh reads its prompt after it starts. The neighbours must still be running when the
/// subject ends: its every decode had company. With all eight slots busy a batch has at
/// least eight rows, so a batched subject's rows take llama.cpp's tiled kernels, never the
/// one-row kernel of its run alone.
async fn alone_and_beside(engine: &Arc<Engine>, batch_invariant: bool) -> (Generation, Generation) {
    let subject = || request(subject(batch_invariant));
    let alone = engine.generate(subject()).await.expect("alone");
    let spawn = |n: usize| {
        let (pieces, stream) = tokio::sync::mpsc::unbounded_channel();
        let engine = engine.clone();
        let task = tokio::spawn(async move {
            let mut request = request(neighbour(n));
            request.stream = Some(pieces);
            let done = engine.generate(request).await;
            (done, Instant::now())
        });
        (task, stream)
    };
    let mut neighbours: Vec<_> = (0..6).map(spawn).collect();
    for (_, stream) in &mut neighbours {
        stream.recv().await.expect("a neighbour generates");
    }
    neighbours.push(spawn(6));
    let beside = engine.generate(subject()).await.expect("beside");
    let subject_done = Instant::now();
    // The neighbours have done their part: cancelled (their futures dropped), they free their
    // slots at the engine's next step instead of running to their `max_tokens`.
    for (neighbour, _) in &neighbours {
        neighbour.abort();
    }
    for (neighbour, _stream) in neighbours {
        let (done, at) = match neighbour.await {
            Ok(ended) => ended,
            // Cancelled: it was still running after the subject ended.
            Err(e) if e.is_cancelled() => continue,
            Err(e) => panic!("a neighbour's task: {e}"),
        };
        let done = done.expect("a neighbour's text");
        assert!(
            at > subject_done,
            "a neighbour ended ({:?}, {} tokens) before the subject: the test lost its company",
            done.finish_reason,
            done.completion_tokens
        );
    }
    (alone, beside)
}

fn logprob_bits(generation: &Generation) -> Vec<u32> {
    let logprobs = generation.logprobs.as_ref().expect("log probabilities");
    logprobs.iter().map(|l| l.logprob.to_bits()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn needs_model_batch_invariant_texts_do_not_depend_on_the_neighbours() {
    let invariant = engine(true).await;
    let (alone, beside) = alone_and_beside(&invariant, false).await;
    assert_eq!(alone.completion_tokens, 24);
    assert!(
        beside.cached_prompt_tokens > 0,
        "the second run reuses the first one's prompt cells"
    );
    assert_eq!(beside.text, alone.text);
    assert_eq!(logprob_bits(&beside), logprob_bits(&alone));
    let stop = invariant.clone();
    tokio::task::spawn_blocking(move || stop.stop())
        .await
        .unwrap();

    // The same comparison without the mode finds the neighbours in the last bits: the test
    // above can fail.
    let batched = engine(false).await;
    let (alone, beside) = alone_and_beside(&batched, false).await;
    assert_ne!(logprob_bits(&beside), logprob_bits(&alone));

    // A task that asks for it is decoded alone while its neighbours share their batches. Its
    // prompt's cells from the runs above were written without the mode: it reads them again,
    // then reuses its own.
    let (alone, beside) = alone_and_beside(&batched, true).await;
    assert_eq!(alone.cached_prompt_tokens, 0);
    assert!(beside.cached_prompt_tokens > 0);
    assert_eq!(beside.text, alone.text);
    assert_eq!(logprob_bits(&beside), logprob_bits(&alone));
    tokio::task::spawn_blocking(move || batched.stop())
        .await
        .unwrap();
}
