//! The engine's settings: sampling on the device, batch sizes, the KV cache's type, batch
//! invariance.

use super::load;
use crate::config::{DeviceSampling, FlashAttention};

#[test]
fn tokens_are_chosen_on_the_device_only_when_asked_and_batches_are_larger_with_a_gpu() {
    let cpu = load(&[]).unwrap();
    assert_eq!(cpu.engine.device_sampling, DeviceSampling::Off);
    assert!(!cpu.engine.samples_on_device());
    assert_eq!(cpu.engine.effective_batch_size(), 128);
    let gpu = load(&[("WARREN__ENGINE__N_GPU_LAYERS", "99")]).unwrap();
    assert!(!gpu.engine.samples_on_device(), "an opt-in, even on a GPU");
    assert_eq!(gpu.engine.effective_batch_size(), 512);
    let gpu_auto = load(&[
        ("WARREN__ENGINE__N_GPU_LAYERS", "99"),
        ("WARREN__ENGINE__DEVICE_SAMPLING", "auto"),
    ])
    .unwrap();
    assert!(gpu_auto.engine.samples_on_device());
    let forced = load(&[("WARREN__ENGINE__DEVICE_SAMPLING", "on")]).unwrap();
    assert!(forced.engine.samples_on_device(), "on: the CPU backend too");
    let off = load(&[
        ("WARREN__ENGINE__N_GPU_LAYERS", "99"),
        ("WARREN__ENGINE__DEVICE_SAMPLING", "off"),
        ("WARREN__ENGINE__BATCH_SIZE", "64"),
    ])
    .unwrap();
    assert!(!off.engine.samples_on_device());
    assert_eq!(off.engine.effective_batch_size(), 64, "a set size is kept");
    assert!(load(&[("WARREN__ENGINE__DEVICE_SAMPLING", "gpu")]).is_err());
}

#[test]
fn a_quantized_kv_cache_needs_flash_attention() {
    let err = load(&[
        ("WARREN__ENGINE__KV_CACHE_TYPE", "q8_0"),
        ("WARREN__ENGINE__FLASH_ATTENTION", "off"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("engine.kv_cache_type"), "{err}");
    let s = load(&[("WARREN__ENGINE__KV_CACHE_TYPE", "q8_0")]).unwrap();
    assert_eq!(s.engine.flash_attention, FlashAttention::Auto);
    assert!(load(&[("WARREN__ENGINE__FLASH_ATTENTION", "sometimes")]).is_err());
}

#[test]
fn batch_invariance_needs_a_kv_stream_per_slot() {
    let err = load(&[
        ("WARREN__ENGINE__BATCH_INVARIANT", "true"),
        ("WARREN__ENGINE__KV_UNIFIED", "true"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("engine.batch_invariant"), "{err}");
    assert!(!load(&[]).unwrap().engine.batch_invariant, "off by default");
    let on = load(&[("WARREN__ENGINE__BATCH_INVARIANT", "true")]).unwrap();
    assert!(on.engine.batch_invariant && !on.engine.kv_unified);
}
