//! The embed role on the real model: vectors independent of what shares their decode, and
//! the refusals only a worker can make.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::super::test_model::{model_path, real_model};
use super::super::{EmbedJob, Embeddings};
use super::*;
use crate::protocol::{EmbeddingItem, EmbeddingTask};

fn task(inputs: &[&str]) -> EmbeddingTask {
    EmbeddingTask {
        inputs: inputs
            .iter()
            .map(|t| EmbeddingItem::Text((*t).to_owned()))
            .collect(),
        dimensions: None,
        normalize: true,
        timeout: Duration::from_secs(60),
        deadline_ms: None,
    }
}

/// Runs `tasks` as jobs waiting together, and their results in order.
fn run(embedder: &mut Embedder, tasks: Vec<EmbeddingTask>) -> Vec<Result<Embeddings, TaskError>> {
    let mut results = Vec::new();
    let jobs = tasks
        .into_iter()
        .map(|task| {
            let (reply, result) = oneshot::channel();
            results.push(result);
            EmbedJob {
                task,
                submitted: Instant::now(),
                reply,
            }
        })
        .collect();
    embedder.run(jobs, &Heartbeat::new());
    results
        .into_iter()
        .map(|mut r| r.try_recv().expect("every job is answered"))
        .collect()
}

/// An embedder of `slots` inputs per decode and `context_size` tokens per input.
fn embedder(context_size: u32, slots: u32) -> Embedder {
    let mut settings = crate::config::Settings::defaults().engine;
    settings.model_path = model_path();
    settings.context_size = context_size;
    settings.slots = slots;
    super::super::runner::backend().expect("llama.cpp backend");
    Embedder::new(&settings).expect("an embedding context")
}

#[test]
fn needs_model_an_input_gets_the_same_bits_alone_beside_others_and_in_another_task() {
    let mut embedder = embedder(256, 3);
    let texts = [
        "A rabbit.",
        "Snow fell on the quiet harbour all night long.",
        "x = 1",
    ];
    let alone: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| {
            run(&mut embedder, vec![task(&[t])])
                .remove(0)
                .unwrap()
                .vectors
                .remove(0)
        })
        .collect();
    let together = run(&mut embedder, vec![task(&texts)]).remove(0).unwrap();
    assert_eq!(together.vectors, alone);
    let split = run(&mut embedder, vec![task(&texts[2..]), task(&texts[..2])]);
    assert_eq!(split[0].as_ref().unwrap().vectors, alone[2..]);
    assert_eq!(split[1].as_ref().unwrap().vectors, alone[..2]);
    let width = embedder.llama.width();
    assert!(width > 0 && alone.iter().all(|v| v.len() == width));
    assert_ne!(alone[0], alone[1]);
}

#[test]
fn needs_model_what_the_model_decides_is_refused_with_its_code() {
    let mut embedder = embedder(64, 2);
    let long = "rabbit ".repeat(200);
    let mut wide = task(&["a"]);
    wide.dimensions = Some(100_000);
    let mut unknown = task(&["a"]);
    unknown.inputs = vec![EmbeddingItem::Tokens(vec![u32::MAX])];
    let results = run(
        &mut embedder,
        vec![task(&[&long]), wide, unknown, task(&["fine"])],
    );
    let code = |i: usize| results[i].as_ref().unwrap_err().code;
    assert_eq!(code(0), ErrorCode::PromptTooLong);
    assert_eq!(code(1), ErrorCode::InvalidRequest);
    assert_eq!(code(2), ErrorCode::InvalidRequest);
    assert!(results[3].is_ok(), "a good job beside bad ones is served");
}

/// The early stop skips only what an embedding never reads: a vector is llama.cpp's own
/// mean-pooled one, from a context that computes the whole graph, pools and does not pad.
#[test]
fn needs_model_decodes_stop_after_the_embeddings_and_pool_as_llama_cpp_does() {
    use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
    use llama_cpp_2::llama_batch::LlamaBatch;

    let text = "Snow fell on the quiet harbour all night long.";
    let mut embedder = embedder(256, 2);
    let mut plain = task(&[text]);
    plain.normalize = false;
    let ours = run(&mut embedder, vec![plain])
        .remove(0)
        .unwrap()
        .vectors
        .remove(0);
    assert!(
        embedder.llama.early_stops() >= 1,
        "the decode computed the output layer: llama.cpp no longer names its embeddings tensor `result_embd_pooled`"
    );

    let (backend, model) = real_model();
    let params = LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(256))
        .with_n_batch(256)
        .with_n_ubatch(256)
        .with_embeddings(true)
        .with_pooling_type(LlamaPoolingType::Mean);
    let mut ctx = model.new_context(backend, params).unwrap();
    let tokens = model.vocab().tokenize(text.as_bytes(), true, false);
    assert_eq!(
        embedder.llama.tokenize(text).unwrap(),
        tokens.iter().map(|t| t.0).collect::<Vec<_>>()
    );
    let mut batch = LlamaBatch::new(256, 1);
    batch.add_sequence(&tokens, 0, false).unwrap();
    ctx.decode(&mut batch).unwrap();
    let theirs = ctx.embeddings_seq_ith(0).unwrap();

    assert_eq!(ours.len(), theirs.len());
    let dot: f32 = ours.iter().zip(theirs).map(|(a, b)| a * b).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let cosine = dot / (norm(&ours) * norm(theirs));
    assert!(
        cosine > 0.9999,
        "cosine {cosine} to llama.cpp's own pooling"
    );
}
