//! The real model for the engine's unit tests (`WARREN_TEST_MODEL`, which `make test` sets), a
//! context on it, and a grammar-constrained greedy walk that tests inspect step by step. Tests
//! that load it are named `needs_model_…`, so that `make test-unit` can leave them out.

/// The real model (`WARREN_TEST_MODEL`, which `make test` sets; else the one `make model`
/// fetches), with the llama.cpp backend.
/// The test model's file (`WARREN_TEST_MODEL`, else the default model), which must exist.
pub(crate) fn model_path() -> std::path::PathBuf {
    let path = std::env::var_os("WARREN_TEST_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/gemma3-270m-q4_k_m.gguf")
        });
    assert!(
        path.is_file(),
        "model {} is missing: run `make model` (or `make test`)",
        path.display()
    );
    path
}

pub(crate) fn real_model() -> (
    &'static llama_cpp_2::llama_backend::LlamaBackend,
    llama_cpp_2::model::LlamaModel,
) {
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::model::LlamaModel;
    let path = model_path();
    let backend = super::runner::backend().expect("llama.cpp backend");
    let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
        .expect("the test model loads");
    (backend, model)
}

/// A one-sequence context on `model` for the unit tests: 512 cells, batches of 64.
pub(crate) fn context<'m>(
    backend: &llama_cpp_2::llama_backend::LlamaBackend,
    model: &'m llama_cpp_2::model::LlamaModel,
) -> llama_cpp_2::context::LlamaContext<'m> {
    let params = llama_cpp_2::context::params::LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(512))
        .with_n_batch(64);
    model.new_context(backend, params).expect("a context")
}

/// Follows the greedy continuation of `prompt` within `grammar` (the argmax of the
/// grammar-masked vocabulary) for at most `steps` tokens, or to an end token. Before each pick
/// `inspect` gets the context, the batch index of the last decoded token, the grammar, the
/// whole vocabulary with the grammar's mask applied, and the position being picked for.
pub(crate) fn follow_constrained_greedy(
    model: &llama_cpp_2::model::LlamaModel,
    ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
    grammar: &mut llama_cpp_2::sampling::LlamaSampler,
    prompt: &str,
    steps: i32,
    mut inspect: impl FnMut(
        &llama_cpp_2::context::LlamaContext<'_>,
        i32,
        &mut llama_cpp_2::sampling::LlamaSampler,
        &llama_cpp_2::token::data_array::LlamaTokenDataArray,
        i32,
    ),
) {
    ctx.clear_kv_cache();
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, false);
    let mut batch = llama_cpp_2::llama_batch::LlamaBatch::new(64, 1);
    batch.add_sequence(&tokens, 0, false).expect("batch");
    let first = tokens.len() as i32;
    for position in first..first + steps {
        ctx.decode(&mut batch).expect("decode");
        let last = batch.n_tokens() - 1;
        let mut masked = ctx.token_data_array_ith(last);
        masked.apply_sampler(grammar);
        inspect(ctx, last, grammar, &masked, position);
        let chosen = masked.sample_token_greedy();
        let logit = masked.selected.map(|i| masked.data[i].logit());
        assert!(logit.is_some_and(f32::is_finite), "some token fits");
        if model.vocab().is_eog(chosen) {
            break;
        }
        grammar.accept(chosen);
        batch.clear();
        batch.add(chosen, position, &[0], true).expect("batch");
    }
}
