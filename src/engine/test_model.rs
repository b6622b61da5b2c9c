//! The real model for the engine's unit tests (`WARREN_TEST_MODEL`, which `make test` sets).

/// The real model (`WARREN_TEST_MODEL`, which `make test` sets; else the one `make model`
/// fetches), with the llama.cpp backend.
pub(crate) fn real_model() -> (
    &'static llama_cpp_2::llama_backend::LlamaBackend,
    llama_cpp_2::model::LlamaModel,
) {
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::model::LlamaModel;
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
    let backend = super::runner::backend().expect("llama.cpp backend");
    let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
        .expect("the test model loads");
    (backend, model)
}
