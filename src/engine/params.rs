//! The llama.cpp context parameters `[engine]` asks for: one context holding every slot,
//! batch sizes, threads, the sliding-window cache, flash attention and the KV cache type.
//! Pure translation; the runner creates the context with them.

use std::num::NonZeroU32;

use llama_cpp_2::context::params::{KvCacheType as LlamaKvType, LlamaContextParams};

use crate::config::{EngineSettings, FlashAttention, KvCacheType};

/// Tokens of one llama.cpp batch: the configured (or default) batch size, and at least one
/// per slot.
pub(super) fn batch_capacity(settings: &EngineSettings) -> u32 {
    settings.effective_batch_size().max(settings.slots)
}

/// The context parameters for `settings`.
pub(super) fn context_params(settings: &EngineSettings) -> LlamaContextParams {
    let slots = settings.slots;
    let threads = settings.effective_threads();
    let batch_capacity = batch_capacity(settings);
    // Unified or not, the cache holds `context_size` cells per slot: llama.cpp gives each
    // stream an equal share, and in one shared cache the runner ends each sequence there.
    let n_ctx = settings.context_size.saturating_mul(slots);
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(batch_capacity)
        .with_n_ubatch(batch_capacity)
        .with_n_seq_max(slots)
        .with_kv_unified(settings.kv_unified)
        .with_swa_full(full_swa_cache(settings))
        .with_flash_attention_policy(flash_attention_policy(settings.flash_attention))
        .with_type_k(kv_type(settings.kv_cache_type))
        .with_type_v(kv_type(settings.kv_cache_type))
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
}

/// Sliding-window layers need only the window's KV cells to generate, but a reused prompt
/// prefix needs all of them: a prefix's older positions would be gone from those layers.
pub(super) fn full_swa_cache(settings: &EngineSettings) -> bool {
    settings.swa_full || settings.prefix_cache
}

/// llama.h's `llama_flash_attn_type`: -1 auto, 0 disabled, 1 enabled.
pub(super) fn flash_attention_policy(setting: FlashAttention) -> i32 {
    match setting {
        FlashAttention::Auto => -1,
        FlashAttention::Off => 0,
        FlashAttention::On => 1,
    }
}

pub(super) fn kv_type(setting: KvCacheType) -> LlamaKvType {
    match setting {
        KvCacheType::F16 => LlamaKvType::F16,
        KvCacheType::Bf16 => LlamaKvType::BF16,
        KvCacheType::F32 => LlamaKvType::F32,
        KvCacheType::Q8_0 => LlamaKvType::Q8_0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_reach_llama_cpp_as_its_own_values() {
        let mut engine = crate::config::Settings::defaults().engine;
        engine.slots = 4;
        engine.context_size = 512;
        engine.flash_attention = FlashAttention::On;
        let params = context_params(&engine);
        assert_eq!(
            params.n_ctx(),
            NonZeroU32::new(2048),
            "context per slot times slots"
        );
        assert_eq!(params.flash_attention_policy(), 1);
        assert!(!params.kv_unified(), "a KV stream per slot by default");
        engine.kv_unified = true;
        assert!(context_params(&engine).kv_unified());
        assert_eq!(flash_attention_policy(FlashAttention::Auto), -1);
        assert_eq!(flash_attention_policy(FlashAttention::Off), 0);
        engine.prefix_cache = false;
        engine.swa_full = false;
        assert!(
            !full_swa_cache(&engine),
            "only the window without the prefix cache"
        );
        engine.prefix_cache = true;
        assert!(full_swa_cache(&engine), "a reused prefix needs every cell");
        engine.batch_size = 2;
        assert_eq!(batch_capacity(&engine), 4, "at least one token per slot");
        engine.batch_size = 0;
        assert_eq!(batch_capacity(&engine), 128, "the CPU default");
        engine.n_gpu_layers = 99;
        assert_eq!(
            batch_capacity(&engine),
            512,
            "the default with layers on a GPU"
        );
    }
}
