//! `[engine]` and `[sampling]`: the model, its context and slots, and the sampling defaults.
//! Each section checks its own values (`validate`); rules that tie sections together live in
//! [`super::Settings::validate`].

use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[engine]`: the model and llama.cpp's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// GGUF file to load.
    pub model_path: PathBuf,
    /// Model name reported in replies; empty = from the GGUF.
    pub model_name: String,
    /// Layers offloaded to a GPU.
    pub n_gpu_layers: u32,
    /// Context size per task, in tokens.
    pub context_size: u32,
    /// Decoding threads; 0 = number of cores.
    pub threads: u32,
    /// Tokens per llama.cpp batch; 0 = chosen by where the model runs (see
    /// [`EngineSettings::effective_batch_size`]).
    pub batch_size: u32,
    /// Tasks in inference at once.
    pub slots: u32,
    /// Full-context KV cache for sliding-window layers (always, when `prefix_cache` is on).
    pub swa_full: bool,
    /// Keep each slot's KV cells after its task and reuse the longest shared prompt prefix.
    pub prefix_cache: bool,
    /// Prompts are read in pieces that end on multiples of this many tokens (at most the
    /// batch), and only whole pieces are reused: see `engine::chunking`.
    pub prompt_chunk: u32,
    /// Flash attention: auto, on or off.
    pub flash_attention: FlashAttention,
    /// Element type of the KV cache (keys and values).
    pub kv_cache_type: KvCacheType,
    /// Where next tokens are chosen: in the decode graph (on the GPU) or on the host.
    pub device_sampling: DeviceSampling,
    /// One KV cache shared by every slot (llama.cpp's `kv_unified`), instead of one stream
    /// per slot (the default).
    pub kv_unified: bool,
    /// Decode each task's tokens alone, so that its text does not depend on which other tasks
    /// run beside it (see `engine::runner::step`).
    pub batch_invariant: bool,
    /// Chat template used when the GGUF has none: `gemma` (warren's own) or a Jinja file.
    pub chat_template: String,
    /// Generate text, or embed inputs.
    pub role: EngineRole,
    /// How an embed worker pools token states into one vector.
    pub pooling: Pooling,
    /// What serves tasks: llama.cpp on the model, or the synthetic engine (no model).
    pub backend: EngineBackend,
    /// The synthetic engine's pace (`engine.backend = "synthetic"` only).
    pub synthetic: SyntheticSettings,
    /// The longest one round of the engine thread's work may take before the worker aborts
    /// itself (see `engine::watchdog`); 0: never.
    pub stall_timeout_ms: u64,
}

/// What serves a worker's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineBackend {
    /// llama.cpp on `engine.model_path`.
    Llama,
    /// No model: made-up words at the pace of `[engine.synthetic]`, to measure the queue.
    Synthetic,
}

/// `[engine.synthetic]`: how fast the synthetic engine answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSettings {
    /// Time to a task's first token, in ms.
    pub first_token_ms: u64,
    /// Tokens per second of one task after its first.
    pub tokens_per_second: f64,
    /// Random share of each wait, either way (0.1 = +/-10%).
    pub jitter: f64,
    /// Length of a task that gives no `max_tokens` (and has no operator default).
    pub tokens: u32,
}

impl EngineSettings {
    /// Threads to give llama.cpp: the configured number, or the number of cores.
    pub fn effective_threads(&self) -> i32 {
        let threads = if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
        } else {
            self.threads
        };
        i32::try_from(threads).unwrap_or(i32::MAX)
    }

    /// Batch size when `batch_size` is 0: 128 on a CPU (prompts read nearly as fast as with
    /// larger batches, and llama.cpp's per-token output buffers stay small), 512 with layers
    /// on a GPU, where a larger batch reads prompts faster at no cost to generation.
    pub fn effective_batch_size(&self) -> u32 {
        match self.batch_size {
            0 if self.n_gpu_layers > 0 => 512,
            0 => 128,
            configured => configured,
        }
    }

    /// Whether next tokens are chosen on the device (see `engine.device_sampling`): `auto`
    /// means where layers are offloaded to a GPU.
    pub fn samples_on_device(&self) -> bool {
        match self.device_sampling {
            DeviceSampling::Auto => self.n_gpu_layers > 0,
            DeviceSampling::On => true,
            DeviceSampling::Off => false,
        }
    }
}

/// Whether llama.cpp uses its flash-attention kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashAttention {
    /// llama.cpp decides (on where the backend supports it).
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// What a worker does with its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineRole {
    /// Generation tasks from `topology.requests_queue`.
    Generate,
    /// Embedding tasks from `topology.embeddings_queue`.
    Embed,
}

/// How token states become one vector per input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean of every token's state.
    Mean,
    /// The last token's state.
    Last,
    /// The first token's state.
    Cls,
}

/// Where a task's next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceSampling {
    /// On the device where layers are offloaded to a GPU, else on the host.
    Auto,
    /// In llama.cpp's decode graph, whatever the backend (on a CPU too).
    On,
    /// On the host, from the logits llama.cpp copies back (the default: the device path
    /// relies on llama-cpp-2's Debug output for llama.cpp's context pointer).
    Off,
}

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvCacheType {
    /// 16-bit floats (llama.cpp's default).
    F16,
    /// bfloat16.
    Bf16,
    /// 32-bit floats (twice the memory).
    F32,
    /// 8-bit quantized: half the memory of f16, a small quality cost.
    Q8_0,
}

/// `[sampling]`: defaults for sampling parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSettings {
    /// top_k used when sampling and the task gives none; 0 = off.
    pub default_top_k: u32,
}

impl EngineSettings {
    /// Checks the section's own values.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.backend == EngineBackend::Synthetic {
            let pace = &self.synthetic;
            if !(0.001..=1e9).contains(&pace.tokens_per_second) {
                return Err(invalid(
                    "engine.synthetic.tokens_per_second",
                    "must be between 0.001 and 1e9",
                ));
            }
            if !(0.0..1.0).contains(&pace.jitter) {
                return Err(invalid(
                    "engine.synthetic.jitter",
                    "must be at least 0 and below 1",
                ));
            }
            if pace.tokens == 0 {
                return Err(invalid("engine.synthetic.tokens", "must be at least 1"));
            }
            if self.role == EngineRole::Embed {
                return Err(invalid(
                    "engine.backend",
                    "\"synthetic\" generates text; an embed worker needs a model",
                ));
            }
        }
        if self.model_path.as_os_str().is_empty() {
            return Err(invalid("engine.model_path", "must not be empty"));
        }
        if self.context_size < 16 {
            return Err(invalid("engine.context_size", "must be at least 16 tokens"));
        }
        if self.slots == 0 || self.slots > 256 {
            return Err(invalid(
                "engine.slots",
                "must be between 1 and 256 (llama.cpp's limit of sequences in one context)",
            ));
        }
        if self.role == EngineRole::Embed && self.slots > 255 {
            return Err(invalid(
                "engine.slots",
                "must be at most 255 for an embed worker (it asks llama.cpp for one sequence more than its slots, and llama.cpp allows 256)",
            ));
        }
        if self.prompt_chunk == 0 {
            return Err(invalid("engine.prompt_chunk", "must be at least 1 token"));
        }
        if self.batch_invariant && self.kv_unified {
            return Err(invalid(
                "engine.batch_invariant",
                "needs a KV stream per slot (engine.kv_unified = false): in one shared cache a token's attention runs over a span of cells that depends on the other tasks",
            ));
        }
        if (1..100).contains(&self.stall_timeout_ms) {
            return Err(invalid(
                "engine.stall_timeout_ms",
                "must be 0 (never) or at least 100",
            ));
        }
        if self.threads > 1024 {
            return Err(invalid("engine.threads", "must be at most 1024"));
        }
        if self.kv_cache_type == KvCacheType::Q8_0 && self.flash_attention == FlashAttention::Off {
            return Err(invalid(
                "engine.kv_cache_type",
                "q8_0 needs flash attention (engine.flash_attention = \"auto\" or \"on\"): llama.cpp quantizes the V cache only with it",
            ));
        }
        Ok(())
    }
}
