//! Starting the engine thread's runner: llama.cpp's backend (once per process), the model,
//! the context with its slots (or, in the embed role, the embedding context), the chat
//! template, and what is reported about them. It must
//! not decode: the step loop is [`super`]'s.

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use std::sync::OnceLock;

use super::super::chat_template::ChatTemplate;
use super::super::chunking::Chunking;
use super::super::device_sampling::DeviceSamplers;
use super::super::embedder::Embedder;
use super::super::grammar;
use super::super::params;
use super::super::prefix::PrefixCache;
use super::super::step_times::StepTimes;
use super::super::{EngineStartError, ModelInfo};
use super::Runner;
use crate::config::EngineSettings;

/// llama.cpp's backend may be initialised only once per process.
pub(in crate::engine) fn backend() -> Result<&'static LlamaBackend, EngineStartError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            grammar::capture_logs();
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineStartError::Llama(e.clone()))
}

pub(super) fn load(
    settings: &EngineSettings,
) -> Result<(LlamaModel, &'static LlamaBackend), EngineStartError> {
    let backend = backend()?;
    let params = LlamaModelParams::default().with_n_gpu_layers(settings.n_gpu_layers);
    let model =
        LlamaModel::load_from_file(backend, &settings.model_path, &params).map_err(|e| {
            EngineStartError::Llama(format!("loading {}: {e}", settings.model_path.display()))
        })?;
    Ok((model, backend))
}

impl<'m> Runner<'m> {
    pub(super) fn new(
        settings: &EngineSettings,
        model: &'m LlamaModel,
        backend: &LlamaBackend,
        times: std::sync::Arc<StepTimes>,
    ) -> Result<Self, EngineStartError> {
        let slots = settings.slots;
        let batch_capacity = params::batch_capacity(settings);
        let chunking = Chunking::new(settings.prompt_chunk.min(batch_capacity) as usize);
        let params = params::context_params(settings);
        let ctx = model
            .new_context(backend, params)
            .map_err(|e| EngineStartError::Llama(format!("creating the context: {e}")))?;
        let (template, template_source) = chat_template(settings, model)?;
        let device = if settings.samples_on_device() {
            DeviceSamplers::new(&ctx, slots as usize)
        } else {
            None
        };
        Ok(Runner {
            model,
            device,
            ctx,
            batch: LlamaBatch::new(batch_capacity as usize, 1),
            batch_capacity: batch_capacity as usize,
            template,
            template_source,
            context_per_slot: settings.context_size,
            slots: (0..slots).map(|_| None).collect(),
            prefix: PrefixCache::new(slots as usize, settings.prefix_cache, chunking),
            chunking,
            admissions: 0,
            first_bytes: std::cell::OnceCell::new(),
            times,
            picked: Vec::with_capacity(slots as usize),
            invariance: super::step::Invariance::of(settings),
        })
    }

    pub(super) fn info(&self, settings: &EngineSettings) -> ModelInfo {
        ModelInfo {
            name: model_name(settings, self.model),
            context_per_slot: self.context_per_slot,
            slots: self.slots.len() as u32,
            gpu_layers: settings.n_gpu_layers,
            chat_template_source: self.template_source.clone(),
        }
    }
}

/// The embed role's engine: its own model and embedding context instead of the generation
/// ones, and what is reported about them.
pub(super) fn embedder(
    settings: &EngineSettings,
) -> Result<(Embedder, ModelInfo), EngineStartError> {
    backend()?;
    let embedder = Embedder::new(settings)?;
    let info = ModelInfo {
        name: name_or_file(settings, embedder.model_name()),
        context_per_slot: settings.context_size,
        slots: settings.slots,
        gpu_layers: settings.n_gpu_layers,
        chat_template_source: "none (embed role)".to_owned(),
    };
    Ok((embedder, info))
}

/// The name replies report: `engine.model_name`, else the GGUF's, else the file's.
pub(super) fn model_name(settings: &EngineSettings, model: &LlamaModel) -> String {
    name_or_file(settings, model.meta_val_str("general.name").ok())
}

/// `engine.model_name`, else `gguf_name`, else the file's.
fn name_or_file(settings: &EngineSettings, gguf_name: Option<String>) -> String {
    if !settings.model_name.is_empty() {
        return settings.model_name.clone();
    }
    gguf_name
        .filter(|n| !n.trim().is_empty())
        .or_else(|| {
            settings
                .model_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// warren's Jinja template for Gemma models, `engine.chat_template = "gemma"`.
const GEMMA_TEMPLATE: &str = include_str!("../../../config/templates/gemma.jinja");

/// The model's chat template: the GGUF's own, else `engine.chat_template` (`gemma`, the
/// template warren ships, or the path of a Jinja file), with where it came from.
fn chat_template(
    settings: &EngineSettings,
    model: &LlamaModel,
) -> Result<(ChatTemplate, String), EngineStartError> {
    let (source, origin) = match model.chat_template(None).map(|t| t.to_string()) {
        Ok(Ok(source)) => (source, "gguf".to_owned()),
        _ if settings.chat_template == "gemma" => {
            (GEMMA_TEMPLATE.to_owned(), "warren:gemma".to_owned())
        }
        _ => {
            let path = &settings.chat_template;
            let source = std::fs::read_to_string(path).map_err(|e| {
                EngineStartError::Llama(format!("engine.chat_template {path:?}: {e}"))
            })?;
            (source, format!("file:{path}"))
        }
    };
    // llama.cpp asserts (aborting the process) on an empty template without a model.
    if source.trim().is_empty() {
        return Err(EngineStartError::Llama(format!(
            "the chat template ({origin}) is empty"
        )));
    }
    let vocab = model.vocab();
    let text_of =
        |token| String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)).into_owned();
    let template = ChatTemplate::new(
        &source,
        &text_of(vocab.bos()),
        &text_of(vocab.eos()),
        vocab.should_add_bos(),
    )
    .map_err(|why| {
        EngineStartError::Llama(format!(
            "the chat template ({origin}) does not parse: {why}"
        ))
    })?;
    let tools = template
        .caps()
        .map(|caps| caps["supports_tool_calls"] == serde_json::Value::Bool(true))
        .unwrap_or(false);
    tracing::info!(origin, tools, "chat template loaded");
    Ok((template, origin))
}
